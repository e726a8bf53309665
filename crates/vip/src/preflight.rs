//! The checks made before a master starts: capabilities, the interface, the subnet. Each
//! failure stops the master with an error saying what to fix.

use crate::config::VipConfig;
use crate::error::VipError;
use crate::netlink::{Failure, Link, Netlink};
use caps::{CapSet, Capability};

/// Checks `config` against this thread and host; the interface found on success.
pub(crate) async fn check(config: &VipConfig, netlink: &Netlink) -> Result<Link, VipError> {
    need(config, Capability::CAP_NET_ADMIN, "CAP_NET_ADMIN", "add and remove the address")?;
    need(config, Capability::CAP_NET_RAW, "CAP_NET_RAW", "send gratuitous ARP")?;
    let link = match netlink.link(&config.interface).await {
        Ok(link) => link,
        Err(Failure::NoSuchLink) => {
            return Err(VipError::NoInterface {
                vip: config.address,
                interface: config.interface.clone(),
            })
        }
        Err(Failure::Other(cause)) => {
            return Err(netlink_error(config, "looking the interface up", cause))
        }
    };
    if link.mac == [0; 6] {
        return Err(VipError::NotEthernet {
            vip: config.address,
            interface: config.interface.clone(),
        });
    }
    let addresses = netlink
        .addresses(link.index)
        .await
        .map_err(|e| netlink_error(config, "listing the interface's addresses", e.to_string()))?;
    // The VIP itself (left from an earlier run) proves nothing about the subnet.
    let others = addresses.iter().filter(|a| a.ip != config.address.ip);
    if !others.clone().any(|a| a.contains(config.address.ip)) {
        let listed: Vec<String> = others.map(|a| a.to_string()).collect();
        let addresses = if listed.is_empty() { "none".to_string() } else { listed.join(", ") };
        return Err(VipError::OutsideSubnet {
            vip: config.address,
            interface: config.interface.clone(),
            addresses,
        });
    }
    Ok(link)
}

/// Fails unless this thread's effective set has `capability`.
fn need(
    config: &VipConfig,
    capability: Capability,
    name: &'static str,
    purpose: &'static str,
) -> Result<(), VipError> {
    // `None`: the calling thread; capabilities are per thread on Linux.
    let held = caps::has_cap(None, CapSet::Effective, capability).unwrap_or(false);
    match held {
        true => Ok(()),
        false => Err(VipError::MissingCapability {
            vip: config.address,
            interface: config.interface.clone(),
            capability: name,
            purpose,
        }),
    }
}

fn netlink_error(config: &VipConfig, what: &'static str, cause: String) -> VipError {
    VipError::Netlink { vip: config.address, interface: config.interface.clone(), what, cause }
}
