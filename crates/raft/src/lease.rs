//! The leader's lease: how long it may serve reads and command others without asking.
//!
//! Every tick the leader starts a ReadIndex round whose context is (term, local time t0).
//! raft-rs answers it (a `ReadState`) once a quorum acknowledged the heartbeat it sent at or
//! after t0; every one of those followers then refuses votes for an election timeout from
//! when it heard us, which was after t0. So until `t0 + lease_ms` no other node can have been
//! elected (see [`RaftConfig::lease_ms`](crate::RaftConfig::lease_ms) for the clock drift). The
//! lease is only ever extended by a confirmed round, so a stalled Raft thread or a lost quorum
//! lets it run out on its own.

use raft::{RawNode, ReadState};

use crate::store::LogStore;

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    lease_ms: u64,
    /// Local time the lease runs out; 0 when there is none.
    until_ms: u64,
}

impl Lease {
    pub(crate) fn new(lease_ms: u64) -> Lease {
        Lease { lease_ms, until_ms: 0 }
    }

    /// Starts a round at local time `now_ms` (a heartbeat carrying the context).
    pub(crate) fn start_round<L: LogStore>(&self, raw: &mut RawNode<L>, now_ms: u64) {
        raw.read_index(encode(raw.raft.term, now_ms));
    }

    /// Extends the lease by the rounds a quorum confirmed in `term`, at local time `now_ms`.
    /// True if the lease had run out in this term before (a lapse: a stalled thread or a slow
    /// quorum; counted, since every lapse makes clients wait).
    pub(crate) fn confirm(&mut self, read_states: &[ReadState], term: u64, now_ms: u64) -> bool {
        let before = self.until_ms;
        for state in read_states {
            match decode(&state.request_ctx) {
                Some((round_term, t0)) if round_term == term => {
                    self.until_ms = self.until_ms.max(t0 + self.lease_ms);
                }
                _ => {}
            }
        }
        before != 0 && before <= now_ms && self.until_ms > before
    }

    pub(crate) fn valid(&self, now_ms: u64) -> bool {
        now_ms < self.until_ms
    }

    pub(crate) fn until_ms(&self) -> u64 {
        self.until_ms
    }

    /// No lease from now on (step-down, leadership transfer, stop).
    pub(crate) fn end(&mut self) {
        self.until_ms = 0;
    }
}

fn encode(term: u64, now_ms: u64) -> Vec<u8> {
    let mut context = Vec::with_capacity(17);
    context.push(b'L');
    context.extend_from_slice(&term.to_le_bytes());
    context.extend_from_slice(&now_ms.to_le_bytes());
    context
}

fn decode(context: &[u8]) -> Option<(u64, u64)> {
    if context.len() != 17 || context[0] != b'L' {
        return None;
    }
    let term = u64::from_le_bytes(context[1..9].try_into().ok()?);
    let t0 = u64::from_le_bytes(context[9..17].try_into().ok()?);
    Some((term, t0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_state(term: u64, t0: u64) -> ReadState {
        ReadState { index: 1, request_ctx: encode(term, t0) }
    }

    #[test]
    fn a_confirmed_round_extends_the_lease_from_its_start() {
        let mut lease = Lease::new(200);
        assert!(!lease.valid(0));
        assert!(!lease.confirm(&[read_state(3, 1000)], 3, 1010), "a first lease is no lapse");
        assert!(lease.valid(1199));
        assert!(!lease.valid(1200));
        // An older round confirmed later never shortens it.
        assert!(!lease.confirm(&[read_state(3, 900)], 3, 1020));
        assert_eq!(lease.until_ms(), 1200);
        // Renewed in time: no lapse. Renewed after it ran out: a lapse.
        assert!(!lease.confirm(&[read_state(3, 1100)], 3, 1150));
        assert!(lease.confirm(&[read_state(3, 1400)], 3, 1410));
        assert!(lease.valid(1599));
    }

    #[test]
    fn rounds_of_another_term_or_foreign_contexts_do_not_count() {
        let mut lease = Lease::new(200);
        lease.confirm(&[read_state(2, 1000)], 3, 1000);
        let foreign = ReadState { index: 1, request_ctx: b"client read".to_vec() };
        lease.confirm(&[foreign], 3, 1000);
        assert!(!lease.valid(1000));
        lease.confirm(&[read_state(3, 1000)], 3, 1000);
        lease.end();
        assert!(!lease.valid(1000));
        // A lease ended on purpose (a step-down) and begun again is no lapse.
        assert!(!lease.confirm(&[read_state(3, 2000)], 3, 2000));
    }
}
