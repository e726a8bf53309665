//! Who may hold a connection open: a cap per source address and one for the whole port.
//!
//! Every listening port of every daemon admits a connection through a [`Gate`] before it reads
//! a byte. Without it, one host opening a few thousand idle connections took every file
//! descriptor a daemon had, and a chunkserver that could no longer open its chunk files marked
//! its disks failed. The caps keep each port well below the daemon's descriptor limit (see
//! [`raise_fd_limit`]), and the per-address cap keeps one host from starving the others.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The caps of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    /// Connections open at once from one source address.
    pub per_address: usize,
    /// Connections open at once on the port.
    pub total: usize,
}

/// Admits connections to one port (see the module docs).
pub struct Gate {
    port: &'static str,
    limits: GateLimits,
    open: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
    refused: AtomicU64,
    last_warning_secs: AtomicU64,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{ip} already holds {limit} connections to this port (the per-address cap)")]
    Address { ip: IpAddr, limit: usize },
    #[error("the port already holds {limit} connections (its cap)")]
    Port { limit: usize },
}

/// One admitted connection; dropping it frees its place.
pub struct Admitted {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Gate {
    /// A gate for the port named `port` in log lines ("client", "chunkserver data", ...).
    pub fn new(port: &'static str, limits: GateLimits) -> Arc<Gate> {
        assert!(limits.per_address > 0 && limits.total >= limits.per_address, "{limits:?}");
        Arc::new(Gate {
            port,
            limits,
            open: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            last_warning_secs: AtomicU64::new(0),
        })
    }

    /// Admits a connection from `peer`, or says why not (and logs it, at most once a second).
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Admitted, Refused> {
        let ip = peer.ip();
        let result = self.try_admit(ip);
        if let Err(refused) = &result {
            self.warn_refused(refused);
        }
        result
    }

    fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.total.load(Ordering::Acquire) >= self.limits.total {
            return Err(Refused::Port { limit: self.limits.total });
        }
        let from_ip = open.entry(ip).or_insert(0);
        if *from_ip >= self.limits.per_address {
            return Err(Refused::Address { ip, limit: self.limits.per_address });
        }
        *from_ip += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        Ok(Admitted { gate: self.clone(), ip })
    }

    /// A flood is refused thousands of times a second; one line a second says so, with a count.
    fn warn_refused(&self, refused: &Refused) {
        let count = self.refused.fetch_add(1, Ordering::AcqRel) + 1;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let last = self.last_warning_secs.load(Ordering::Acquire);
        if now > last
            && self
                .last_warning_secs
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tracing::warn!(port = self.port, refused_so_far = count, "refused a connection: {refused}; \
                if this host is legitimate, raise the port's connection caps in the daemon's config");
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Acquire)
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(from_ip) = open.get_mut(&ip) {
            *from_ip -= 1;
            if *from_ip == 0 {
                open.remove(&ip);
            }
        }
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gate.release(self.ip);
    }
}

/// Raises this process's open-file limit to its hard limit and returns the new soft limit.
///
/// systemd gives services a soft limit of 1,024 (and a hard one of 524,288); a daemon that
/// holds chunk files, peer links and client connections needs more than the soft one. Called
/// once at daemon start; a failure is returned for the caller to log, never fatal.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// This process's open-file soft limit (1,024 if it cannot be read).
pub fn fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: as in `raise_fd_limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// `wanted`, but at most `share` of the descriptors this process may open (at least one
/// address's worth), so that several ports together still leave room for files.
pub fn within_fd_limit(wanted: GateLimits, share: f64) -> GateLimits {
    let room = ((fd_limit() as f64) * share) as usize;
    let total = wanted.total.min(room.max(wanted.per_address.min(16)));
    GateLimits { per_address: wanted.per_address.min(total), total }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 4000))
    }

    #[test]
    fn one_address_cannot_take_the_port_and_places_come_back_when_dropped() {
        let gate = Gate::new("test", GateLimits { per_address: 2, total: 3 });
        let a1 = gate.admit(addr(1)).unwrap();
        let _a2 = gate.admit(addr(1)).unwrap();
        assert_eq!(
            gate.admit(addr(1)).err(),
            Some(Refused::Address { ip: addr(1).ip(), limit: 2 })
        );
        let _b1 = gate.admit(addr(2)).unwrap();
        assert_eq!(gate.admit(addr(3)).err(), Some(Refused::Port { limit: 3 }));
        assert_eq!((gate.open(), gate.refused()), (3, 2));
        drop(a1);
        assert!(gate.admit(addr(3)).is_ok(), "a dropped connection frees its place");
        assert_eq!(gate.open(), 2, "the one just admitted was dropped with its result");
    }

    #[test]
    fn the_limits_shrink_to_the_descriptor_limit() {
        let wanted = GateLimits { per_address: 10_000_000, total: 100_000_000 };
        let got = within_fd_limit(wanted, 0.25);
        assert!(got.total as u64 <= fd_limit() / 4 + 16, "{got:?}");
        assert!(got.per_address <= got.total);
    }
}
