//! [`VipConfig`]: which address, on which interface, announced how often.

use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// An address with its prefix length, written `192.168.10.100/24` or `fd00::64/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VipAddr {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

impl VipAddr {
    /// True if `other` lies in this address's network.
    pub fn contains(&self, other: IpAddr) -> bool {
        network_contains(self.ip, self.prefix_len, other)
    }
}

/// True if `other` lies in the network `ip/prefix_len` (different families never do).
pub(crate) fn network_contains(ip: IpAddr, prefix_len: u8, other: IpAddr) -> bool {
    match (ip, other) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix_len.min(128))).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

impl fmt::Display for VipAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix_len)
    }
}

/// Why a `VipAddr` did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an address with its prefix length (like 192.168.10.100/24 or fd00::64/64): {reason}")]
pub struct VipAddrError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for VipAddr {
    type Err = VipAddrError;

    fn from_str(input: &str) -> Result<VipAddr, VipAddrError> {
        let error = |reason| VipAddrError { input: input.to_string(), reason };
        let (ip, prefix) = input.split_once('/').ok_or_else(|| error("no /prefix"))?;
        let ip: IpAddr = ip.trim().parse().map_err(|_| error("not an IP address"))?;
        let prefix_len: u8 = prefix.trim().parse().map_err(|_| error("prefix is not a number"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if prefix_len == 0 || prefix_len > max {
            return Err(error("prefix length out of range (1-32 for IPv4, 1-128 for IPv6)"));
        }
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            return Err(error("a VIP must be a unicast, non-loopback address"));
        }
        Ok(VipAddr { ip, prefix_len })
    }
}

impl<'de> Deserialize<'de> for VipAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<VipAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The `vip:` section of a master's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    /// The virtual IP with its prefix, e.g. `192.168.10.100/24`. It must lie in the subnet of
    /// an address the interface already has (else the announcements would reach nobody).
    pub address: VipAddr,
    /// The interface to put it on, e.g. `eth0`.
    pub interface: String,
    /// Announcements sent when the VIP is claimed (each: gratuitous ARP request and reply, or
    /// an unsolicited NA for IPv6). Default 5.
    #[serde(default = "default_burst_count")]
    pub burst_count: u32,
    /// The time the burst is spread over, in ms. Default 1000 (5 within 1 s, as `arping -c5
    /// -w1` does in the uRaft scripts).
    #[serde(default = "default_burst_window_ms")]
    pub burst_window_ms: u64,
    /// One more announcement this often while held, in ms, so switches and neighbours that
    /// aged the entry out (commonly 300 s) or missed the burst learn it again. Default 60000.
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
}

fn default_burst_count() -> u32 {
    5
}

fn default_burst_window_ms() -> u64 {
    1000
}

fn default_refresh_ms() -> u64 {
    60_000
}

impl VipConfig {
    /// `address` on `interface` with the default announcement timing.
    pub fn new(address: VipAddr, interface: &str) -> VipConfig {
        VipConfig {
            address,
            interface: interface.to_string(),
            burst_count: default_burst_count(),
            burst_window_ms: default_burst_window_ms(),
            refresh_ms: default_refresh_ms(),
        }
    }

    /// The gap between two announcements of a burst.
    pub(crate) fn burst_gap(&self) -> Duration {
        let gaps = u64::from(self.burst_count.max(1));
        Duration::from_millis(self.burst_window_ms / gaps)
    }

    /// Checks the values that parse but make no sense; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.interface.is_empty() || self.interface.len() > 15 {
            return Err(format!(
                "vip.interface {:?} is not an interface name (1-15 characters)",
                self.interface
            ));
        }
        if self.burst_count == 0 || self.burst_count > 100 {
            return Err(format!("vip.burst_count {} must be 1-100", self.burst_count));
        }
        if self.burst_window_ms > 60_000 {
            return Err(format!(
                "vip.burst_window_ms {} must be at most 60000",
                self.burst_window_ms
            ));
        }
        if self.refresh_ms < 1000 {
            return Err(format!("vip.refresh_ms {} must be at least 1000", self.refresh_ms));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_their_prefix_and_bad_ones_say_why() {
        let vip: VipAddr = "10.1.2.3/24".parse().unwrap();
        assert_eq!(vip.to_string(), "10.1.2.3/24");
        assert!(vip.contains("10.1.2.200".parse().unwrap()));
        assert!(!vip.contains("10.1.3.1".parse().unwrap()));
        assert!(!vip.contains("fd00::1".parse().unwrap()));
        let v6: VipAddr = "fd00::64/64".parse().unwrap();
        assert!(v6.contains("fd00::1".parse().unwrap()));
        assert!(!v6.contains("fd01::1".parse().unwrap()));
        for bad in ["10.1.2.3", "10.1.2.3/33", "10.1.2.3/0", "x/24", "127.0.0.1/8", "0.0.0.0/8"] {
            let error = bad.parse::<VipAddr>().unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn defaults_burst_five_within_a_second_and_refresh_every_minute() {
        let config = VipConfig::new("10.0.0.9/24".parse().unwrap(), "eth0");
        assert_eq!(
            (config.burst_count, config.burst_window_ms, config.refresh_ms),
            (5, 1000, 60_000)
        );
        assert_eq!(config.burst_gap(), Duration::from_millis(200));
        assert!(config.validate().is_ok());
        let long = VipConfig { interface: "a-very-long-interface".into(), ..config.clone() };
        assert!(long.validate().unwrap_err().contains("vip.interface"));
        let none = VipConfig { burst_count: 0, ..config };
        assert!(none.validate().unwrap_err().contains("vip.burst_count"));
    }
}
