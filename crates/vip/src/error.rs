//! [`VipError`]: what went wrong, on which interface, and what the operator can do.

use crate::config::VipAddr;

/// Why the VIP could not be checked, claimed, announced or released.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VipError {
    #[error("vip {vip} on {interface}: this process lacks {capability} (needed to {purpose}); \
             run the master as root or give it the capability (systemd: AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW)")]
    MissingCapability {
        vip: VipAddr,
        interface: String,
        capability: &'static str,
        purpose: &'static str,
    },
    #[error("vip {vip}: there is no interface {interface:?} on this host (check vip.interface in the config; `ip link` lists the interfaces)")]
    NoInterface { vip: VipAddr, interface: String },
    #[error("vip {vip} is outside every subnet of {interface} (its addresses: {addresses}); \
             the announcements would reach nobody: put the VIP in the interface's subnet or name the right vip.interface")]
    OutsideSubnet { vip: VipAddr, interface: String, addresses: String },
    #[error("vip {vip} on {interface}: {reason}")]
    Config { vip: VipAddr, interface: String, reason: String },
    #[error("vip {vip}: interface {interface} has no Ethernet address, so the VIP cannot be announced (gratuitous ARP needs one); name an Ethernet interface in vip.interface")]
    NotEthernet { vip: VipAddr, interface: String },
    #[error("vip {vip} on {interface}: {what} failed: {cause}")]
    Netlink { vip: VipAddr, interface: String, what: &'static str, cause: String },
    #[error("vip {vip} on {interface}: {what} failed: {cause}")]
    Socket { vip: VipAddr, interface: String, what: &'static str, cause: std::io::Error },
    #[error("vip {vip} on {interface}: the VIP task stopped")]
    Stopped { vip: VipAddr, interface: String },
}
