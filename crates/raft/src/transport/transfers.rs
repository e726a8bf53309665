//! Snapshot streams under way on the peer port, both ways, with their progress: a snapshot
//! of a big namespace takes minutes to stream, and an operator waiting for a re-seeded
//! follower wants to see it move. Status views read [`Transfers::list`]; each stream logs a
//! progress line every [`LOG_EVERY`].

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a stream logs its progress.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// Which way a snapshot goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// This node streams its snapshot to the peer.
    Sending,
    /// The peer streams its snapshot here.
    Receiving,
}

/// One stream as status views show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub peer: u64,
    pub direction: Direction,
    pub total_bytes: u64,
    pub done_bytes: u64,
    pub elapsed: Duration,
    /// At the rate so far; `None` before the first byte.
    pub eta: Option<Duration>,
}

impl Transfer {
    /// "snapshot to node 3" / "snapshot from node 1".
    pub fn what(&self) -> String {
        match self.direction {
            Direction::Sending => format!("snapshot to node {}", self.peer),
            Direction::Receiving => format!("snapshot from node {}", self.peer),
        }
    }
}

struct Stream {
    total: u64,
    done: u64,
    started: Instant,
    logged: Instant,
}

/// The streams under way; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Transfers(Arc<Mutex<BTreeMap<(u64, Direction), Stream>>>);

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {} bytes", self.done, self.total)
    }
}

impl Transfers {
    /// Starts tracking a stream of `total` bytes; it ends when the guard drops.
    pub fn begin(&self, peer: u64, direction: Direction, total: u64) -> TransferGuard {
        let now = Instant::now();
        let stream = Stream { total, done: 0, started: now, logged: now };
        self.0.lock().insert((peer, direction), stream);
        TransferGuard { transfers: self.clone(), key: (peer, direction) }
    }

    /// Every stream under way, by peer.
    pub fn list(&self) -> Vec<Transfer> {
        let streams = self.0.lock();
        streams.iter().map(|(&(peer, direction), s)| view(peer, direction, s)).collect()
    }
}

fn view(peer: u64, direction: Direction, s: &Stream) -> Transfer {
    let elapsed = s.started.elapsed();
    Transfer {
        peer,
        direction,
        total_bytes: s.total,
        done_bytes: s.done,
        elapsed,
        eta: eta(elapsed, s.done, s.total),
    }
}

/// The time left for `total - done` at the rate of `done` in `elapsed`.
pub fn eta(elapsed: Duration, done: u64, total: u64) -> Option<Duration> {
    if done == 0 {
        return None;
    }
    let left = total.saturating_sub(done) as f64;
    Some(Duration::from_secs_f64(elapsed.as_secs_f64() * left / done as f64))
}

/// Ends its stream's tracking when dropped (delivered, failed or cancelled alike).
pub struct TransferGuard {
    transfers: Transfers,
    key: (u64, Direction),
}

impl TransferGuard {
    /// `done` bytes have gone; logs a progress line every [`LOG_EVERY`].
    pub fn advance(&self, done: u64) {
        let mut streams = self.transfers.0.lock();
        let Some(s) = streams.get_mut(&self.key) else { return };
        s.done = done;
        if s.logged.elapsed() < LOG_EVERY {
            return;
        }
        s.logged = Instant::now();
        let t = view(self.key.0, self.key.1, s);
        tracing::info!(
            done_mib = t.done_bytes >> 20,
            total_mib = t.total_bytes >> 20,
            percent = t.done_bytes * 100 / t.total_bytes.max(1),
            eta_s = t.eta.map(|d| d.as_secs()),
            "{} under way",
            t.what()
        );
    }
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        self.transfers.0.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_listed_with_its_progress_until_its_guard_drops() {
        let transfers = Transfers::default();
        let guard = transfers.begin(3, Direction::Sending, 1000);
        assert_eq!(transfers.list()[0].eta, None, "no rate before the first byte");
        guard.advance(250);
        let listed = transfers.list();
        assert_eq!((listed[0].peer, listed[0].done_bytes, listed[0].total_bytes), (3, 250, 1000));
        assert_eq!(listed[0].what(), "snapshot to node 3");
        drop(guard);
        assert!(transfers.list().is_empty());
    }

    #[test]
    fn the_time_left_follows_the_rate_so_far() {
        let eta = eta(Duration::from_secs(10), 250, 1000).unwrap();
        assert_eq!(eta, Duration::from_secs(30));
        assert_eq!(super::eta(Duration::from_secs(1), 0, 10), None);
    }
}
