//! Telling the segment where the VIP now lives: gratuitous ARP (request and reply form) for
//! IPv4, an unsolicited neighbour advertisement for IPv6, sent as whole Ethernet frames from
//! an AF_PACKET socket bound to the interface.
//!
//! Both ARP forms go out because neighbours differ in which they accept: Linux updates an
//! existing entry from either, some switches and older stacks only from one. The request
//! form has target MAC zero (RFC 5227 "ARP announcement"); the reply form names our own MAC.

use crate::netlink::Link;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const BROADCAST: [u8; 6] = [0xff; 6];
/// All-nodes multicast ff02::1 and its Ethernet group address.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
/// Ethernet's minimum frame without its checksum; shorter frames get zero padding.
const MIN_FRAME: usize = 60;

/// ARP operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArpOp {
    Request = 1,
    Reply = 2,
}

/// A gratuitous ARP frame announcing that `ip` is at `mac`.
pub(crate) fn gratuitous_arp(op: ArpOp, mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let target_mac = match op {
        ArpOp::Request => [0u8; 6],
        ArpOp::Reply => mac,
    };
    let mut frame = Vec::with_capacity(MIN_FRAME);
    frame.extend_from_slice(&BROADCAST);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    frame.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    frame.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
    frame.extend_from_slice(&[6, 4]);
    frame.extend_from_slice(&(op as u16).to_be_bytes());
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ip.octets());
    frame.extend_from_slice(&target_mac);
    frame.extend_from_slice(&ip.octets());
    frame.resize(MIN_FRAME, 0);
    frame
}

/// An unsolicited neighbour advertisement (RFC 4861 7.2.6) to all nodes: `ip` is at `mac`,
/// with the override flag so neighbours replace what they had.
pub(crate) fn unsolicited_na(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]); // type NA, code, checksum (filled below)
    icmp.extend_from_slice(&[0x20, 0, 0, 0]); // flags: Override
    icmp.extend_from_slice(&ip.octets());
    icmp.extend_from_slice(&[2, 1]); // option: target link-layer address, 8 bytes
    icmp.extend_from_slice(&mac);
    let checksum = icmpv6_checksum(ip, ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = Vec::with_capacity(14 + 40 + icmp.len());
    frame.extend_from_slice(&ALL_NODES_MAC);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no class, no flow
    frame.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[58, 255]); // next header ICMPv6, hop limit 255 (required)
    frame.extend_from_slice(&ip.octets());
    frame.extend_from_slice(&ALL_NODES.octets());
    frame.extend_from_slice(&icmp);
    frame
}

/// The ICMPv6 checksum over the IPv6 pseudo-header and `message`.
fn icmpv6_checksum(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + message.len());
    pseudo.extend_from_slice(&source.octets());
    pseudo.extend_from_slice(&destination.octets());
    pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(message);
    let mut sum: u32 = 0;
    for pair in pseudo.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The frames of one announcement of `ip` from `link`.
pub(crate) fn frames(link: &Link, ip: IpAddr) -> Vec<Vec<u8>> {
    match ip {
        IpAddr::V4(ip) => vec![
            gratuitous_arp(ArpOp::Request, link.mac, ip),
            gratuitous_arp(ArpOp::Reply, link.mac, ip),
        ],
        IpAddr::V6(ip) => vec![unsolicited_na(link.mac, ip)],
    }
}

/// An AF_PACKET socket that sends whole frames out of one interface.
pub(crate) struct Sender {
    fd: OwnedFd,
    ifindex: u32,
}

impl Sender {
    /// Opens the socket (needs CAP_NET_RAW) in this thread's network namespace.
    pub(crate) fn open(ifindex: u32) -> io::Result<Sender> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Sender { fd, ifindex })
    }

    /// Sends `frame` (Ethernet header included) out of the interface.
    pub(crate) fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = self.ifindex as i32;
        address.sll_halen = 6;
        address.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and address outlive the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        match sent {
            n if n < 0 => Err(io::Error::last_os_error()),
            n if n as usize != frame.len() => {
                Err(io::Error::other(format!("sent {n} of {} bytes", frame.len())))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_forms_name_the_vip_as_sender_and_target() {
        let mac = [2, 0, 0, 0, 0, 7];
        let ip = Ipv4Addr::new(10, 9, 8, 7);
        let request = gratuitous_arp(ArpOp::Request, mac, ip);
        assert_eq!(request.len(), MIN_FRAME);
        assert_eq!(&request[0..6], &BROADCAST);
        assert_eq!(&request[6..12], &mac);
        assert_eq!(&request[12..14], &[0x08, 0x06]);
        assert_eq!(&request[20..22], &[0, 1], "request");
        assert_eq!(&request[22..28], &mac, "sender MAC");
        assert_eq!(&request[28..32], &ip.octets(), "sender IP");
        assert_eq!(&request[32..38], &[0; 6], "target MAC");
        assert_eq!(&request[38..42], &ip.octets(), "target IP");
        let reply = gratuitous_arp(ArpOp::Reply, mac, ip);
        assert_eq!(&reply[20..22], &[0, 2], "reply");
        assert_eq!(&reply[32..38], &mac, "target MAC of the reply form");
    }

    #[test]
    fn the_na_checksum_verifies() {
        let mac = [2, 0, 0, 0, 0, 7];
        let ip: Ipv6Addr = "fd00::64".parse().unwrap();
        let frame = unsolicited_na(mac, ip);
        assert_eq!(frame.len(), 14 + 40 + 32);
        let icmp = &frame[54..];
        assert_eq!(icmp[0], 136);
        assert_eq!(&icmp[8..24], &ip.octets());
        // Summing a message with its checksum in place gives zero (RFC 1071).
        assert_eq!(icmpv6_checksum(ip, ALL_NODES, icmp), 0);
    }
}
