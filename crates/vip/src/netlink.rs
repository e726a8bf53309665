//! The interface's addresses through rtnetlink: look the link up, list, add (idempotent),
//! remove, and watch address changes.
//!
//! Sockets are opened in the network namespace of the thread that calls [`Netlink::open`]
//! (tests run the crate on a thread that entered a namespace).

use crate::config::VipAddr;
use futures_util::{StreamExt, TryStreamExt};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, CacheInfo};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::{Error, MulticastGroup};
use std::net::IpAddr;
use tokio::sync::mpsc;

/// The kernel's errno values this module treats as answers, not failures.
const EEXIST: i32 = libc::EEXIST;
const EADDRNOTAVAIL: i32 = libc::EADDRNOTAVAIL;
const ENODEV: i32 = libc::ENODEV;

/// The interface as the kernel knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) index: u32,
    /// Its hardware address (6 bytes on Ethernet).
    pub(crate) mac: [u8; 6],
}

/// What a netlink call answered when it did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No interface of that name.
    NoSuchLink,
    /// Anything else, as text for the operator.
    Other(String),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        match errno(&error) {
            Some(ENODEV) => Failure::NoSuchLink,
            _ => Failure::Other(error.to_string()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoSuchLink => f.write_str("no such interface"),
            Failure::Other(text) => f.write_str(text),
        }
    }
}

/// The positive errno of a kernel refusal, if that is what `error` is.
fn errno(error: &Error) -> Option<i32> {
    match error {
        Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}

/// A route-netlink connection (its driver runs as a task on the current runtime).
pub(crate) struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    pub(crate) fn open() -> std::io::Result<Netlink> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The interface called `name`.
    pub(crate) async fn link(&self, name: &str) -> Result<Link, Failure> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        let message = match links.try_next().await? {
            Some(message) => message,
            None => return Err(Failure::NoSuchLink),
        };
        let mut mac = [0u8; 6];
        for attribute in &message.attributes {
            if let LinkAttribute::Address(bytes) = attribute {
                if bytes.len() == 6 {
                    mac.copy_from_slice(bytes);
                }
            }
        }
        Ok(Link { index: message.header.index, mac })
    }

    /// Every address (with prefix) on interface `index`.
    pub(crate) async fn addresses(&self, index: u32) -> Result<Vec<VipAddr>, Failure> {
        let request = self.handle.address().get().set_link_index_filter(index);
        let messages: Vec<AddressMessage> = request.execute().try_collect().await?;
        Ok(messages.iter().filter_map(address_of).collect())
    }

    /// Puts `vip` on interface `index`, valid for `lifetime_s` seconds from now (the kernel
    /// removes it then unless it is put again); already there is success, and renews it.
    pub(crate) async fn add(
        &self,
        index: u32,
        vip: VipAddr,
        lifetime_s: u32,
    ) -> Result<(), Failure> {
        let mut request = self.handle.address().add(index, vip.ip, vip.prefix_len).replace();
        let mut lifetime = CacheInfo::default();
        lifetime.ifa_preferred = lifetime_s;
        lifetime.ifa_valid = lifetime_s;
        request.message_mut().attributes.push(AddressAttribute::CacheInfo(lifetime));
        if vip.ip.is_ipv6() {
            // Duplicate address detection would keep it tentative (unusable) for a second or
            // more; fencing, not DAD, is what keeps the VIP on one node.
            request.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(error) if errno(&error) == Some(EEXIST) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Takes `vip` off interface `index`; not there is success.
    pub(crate) async fn remove(&self, index: u32, vip: VipAddr) -> Result<(), Failure> {
        let mut request = self.handle.address().get().set_link_index_filter(index);
        request = request.set_address_filter(vip.ip);
        let messages: Vec<AddressMessage> = request.execute().try_collect().await?;
        for message in messages {
            match self.handle.address().del(message).execute().await {
                Ok(()) => {}
                Err(error) if errno(&error) == Some(EADDRNOTAVAIL) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
}

/// The address (and prefix) an address message describes.
fn address_of(message: &AddressMessage) -> Option<VipAddr> {
    // IPv4 point-to-point links carry the peer in Address and our own in Local.
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    let ip: IpAddr = local.or(address)?;
    Some(VipAddr { ip, prefix_len: message.header.prefix_len })
}

/// Starts watching address changes (IPv4 and IPv6) on interface `index`: each change on it
/// sends `()` to the returned channel. The watch runs as tasks on the current runtime and
/// ends when the receiver is dropped.
pub(crate) fn watch(index: u32) -> std::io::Result<mpsc::Receiver<()>> {
    let groups = [MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr];
    let (connection, _handle, mut messages) = rtnetlink::new_multicast_connection(&groups)?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(connection);
    tokio::spawn(async move {
        while let Some((message, _)) = messages.next().await {
            let on_our_link = match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m))
                | NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) => {
                    m.header.index == index
                }
                _ => false,
            };
            // A full channel already holds a wake-up: the reconciler looks at everything.
            if on_our_link && tx.try_send(()).is_err() && tx.is_closed() {
                return;
            }
        }
    });
    Ok(rx)
}
