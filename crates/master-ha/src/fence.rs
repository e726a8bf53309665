//! VIP fencing: this master holds the cluster's virtual IP only while it leads with a valid
//! lease, and claims it only once no earlier leader can still hold it.
//!
//! Every [`CHECK`] the fence looks at the Raft node from its own task: `is_leader()` is
//! checked against the clock (the lease), not against what the Raft thread last said, so a
//! stalled Raft thread or a lost quorum releases the VIP within one check of the lease
//! running out; and each hold is only until the lease's end ([`Vip::hold_until`]), so the VIP
//! task releases by itself at that moment even if this task stalls. The rules ([`decide`]):
//!
//! - not leading, or the lease lapsed, or handing leadership over: **release**, at once;
//! - leading in term T after an ordinary election: **hold** from `elected_at(T) +`
//!   [`CLAIM_MARGIN`]. The previous leader's lease ended before this node could be elected (a
//!   quorum member heard that leader's last acknowledged round and refused votes for an
//!   election timeout, which the lease is shorter than, drift included), and its VIP task
//!   releases at the lease's end by itself, its fence at the next check; the margin covers
//!   that check and the netlink call. (`docs/architecture.md`, "The VIP".)
//! - leading in term T because another master handed over (`transfer-leader`): **hold** at
//!   once: the old leader released and confirmed the address gone before it asked for the
//!   transfer ([`VipFence::hand_over`]). A handover from the witness does not count: the
//!   witness never held the VIP, but the master before it might still, so the ordinary wait
//!   applies. The masters are those the configuration names and those the replicated address
//!   book adds with a client address (a master joined with `mfsha member add`).

use crate::node::MetaHandle;
use crate::server::leadership::{AddressBook, Leadership};
use crate::server::Shutdown;
use mfsha_raft::Role;
use mfsha_vip::{Desired, Vip, VipError, VipStatus};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the fence looks at the lease.
pub const CHECK: Duration = Duration::from_millis(20);
/// How long a newly elected leader waits before it claims: the previous leader's lease has
/// ended by the election, and this covers its last fence check (20 ms) and release.
pub const CLAIM_MARGIN: Duration = Duration::from_millis(60);
/// How long a handover may take before this master, if it still leads, holds again.
const HANDOVER_LIMIT: Duration = Duration::from_secs(2);

/// What the fence sees of the Raft node at one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// `is_leader()`: leads, is caught up, and the lease is valid now.
    pub serving: bool,
    /// The role and term Raft last published.
    pub role: Role,
    pub term: u64,
    /// The member whose `MsgTimeoutNow` started this term's campaign, if one did.
    pub handed_over_by: Option<u64>,
    /// This master is handing leadership over.
    pub handing_over: bool,
}

/// When this master may first hold in a term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub term: u64,
    pub at: Instant,
}

/// The fence's inputs besides what it observes.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The masters of the group (a handover from one of them released the VIP first).
    pub masters: BTreeSet<u64>,
}

impl Rules {
    /// Counts `id` as a master if the address book gives it a client address (a master
    /// added since the configuration was written; the witness serves no client).
    pub fn learn(&mut self, id: u64, book: &AddressBook) {
        if book.get(id).is_some_and(|addrs| addrs.client.is_some()) {
            self.masters.insert(id);
        }
    }
}

/// The rules of the module documentation. `claim` remembers, across checks, when this node
/// first saw itself leader in its current term.
pub fn decide(now: Instant, seen: &Observed, claim: &mut Option<Claim>, rules: &Rules) -> Desired {
    if seen.role == Role::Leader && claim.is_none_or(|c| c.term != seen.term) {
        let handover = seen.handed_over_by.is_some_and(|from| rules.masters.contains(&from));
        let at = if handover { now } else { now + CLAIM_MARGIN };
        *claim = Some(Claim { term: seen.term, at });
    }
    if !seen.serving || seen.role != Role::Leader || seen.handing_over {
        return Desired::Release;
    }
    match claim {
        Some(c) if c.term == seen.term && now >= c.at => Desired::Hold,
        _ => Desired::Release,
    }
}

/// The VIP of this master and what the fence needs to run it. Cheap to share.
pub struct VipFence {
    vip: Vip,
    /// Since when a handover is under way, if one is.
    handing_over: Mutex<Option<Instant>>,
}

impl VipFence {
    pub fn new(vip: Vip) -> Arc<VipFence> {
        Arc::new(VipFence { vip, handing_over: Mutex::new(None) })
    }

    pub fn status(&self) -> VipStatus {
        self.vip.status()
    }

    /// Before asking for a leadership transfer: release the VIP and wait until it is off the
    /// interface, so the transferee may claim it the moment it leads.
    pub async fn hand_over(&self) -> Result<(), VipError> {
        *self.handing_over.lock() = Some(Instant::now());
        self.vip.release_confirmed().await
    }

    fn handing_over(&self, now: Instant) -> bool {
        let mut since = self.handing_over.lock();
        match *since {
            Some(started) if now.duration_since(started) < HANDOVER_LIMIT => true,
            Some(_) => {
                *since = None; // the transfer did not happen: lead (and hold) as before
                false
            }
            None => false,
        }
    }

    /// Looks at `meta` every [`CHECK`] and holds or releases, until `shutdown`; then releases
    /// and waits for the address to go (a clean stop leaves no VIP behind).
    pub async fn run(
        self: Arc<Self>,
        meta: MetaHandle,
        mut rules: Rules,
        book: Leadership,
        shutdown: Shutdown,
    ) {
        let mut tick = tokio::time::interval(CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leadership = meta.leadership();
        let mut watching = true;
        let mut claim: Option<Claim> = None;
        loop {
            // A new role is seen when Raft publishes it (not up to a check later), and a
            // claim is made at its moment: both only make the wait exact, never shorter.
            let claim_at = claim.map(|c| c.at).filter(|at| *at > Instant::now());
            tokio::select! {
                _ = tick.tick() => {}
                changed = leadership.changed(), if watching => watching = changed.is_ok(),
                () = sleep_until(claim_at) => {}
                () = shutdown.triggered() => break,
            }
            let now = Instant::now();
            let lead = *leadership.borrow_and_update();
            let handed_over_by = meta.raft().handed_over_by(lead.term);
            if let Some(from) = handed_over_by.filter(|from| !rules.masters.contains(from)) {
                rules.learn(from, &book.book());
            }
            let seen = Observed {
                serving: meta.is_leader(),
                role: lead.role,
                term: lead.term,
                handed_over_by,
                handing_over: self.handing_over(now),
            };
            if lead.role != Role::Leader {
                *self.handing_over.lock() = None; // handed over (or never led): done
            }
            // Held only until the lease's end: should this task stall (or the process be
            // frozen), the VIP task releases at that moment by itself.
            let lease = meta.raft().lease_remaining();
            match (decide(now, &seen, &mut claim, &rules), lease) {
                (Desired::Hold, Some(remaining)) => self.vip.hold_until(now + remaining),
                _ => self.vip.release(),
            }
        }
        if let Err(e) = self.vip.release_confirmed().await {
            tracing::error!(error = %e, "cannot release the VIP while stopping; remove it by hand");
        }
    }
}

/// Sleeps until `at`, forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules { masters: [1, 2].into() }
    }

    fn leading(term: u64) -> Observed {
        Observed {
            serving: true,
            role: Role::Leader,
            term,
            handed_over_by: None,
            handing_over: false,
        }
    }

    #[test]
    fn an_elected_leader_holds_only_the_claim_margin_after_it_was_elected() {
        let start = Instant::now();
        let mut claim = None;
        let not_yet = Observed { serving: false, ..leading(4) };
        assert_eq!(decide(start, &not_yet, &mut claim, &rules()), Desired::Release);
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(decide(at(20), &leading(4), &mut claim, &rules()), Desired::Release);
        assert_eq!(decide(at(59), &leading(4), &mut claim, &rules()), Desired::Release);
        assert_eq!(decide(at(60), &leading(4), &mut claim, &rules()), Desired::Hold);
        let lapsed = Observed { serving: false, ..leading(4) };
        assert_eq!(
            decide(at(200), &lapsed, &mut claim, &rules()),
            Desired::Release,
            "lease lapsed"
        );
        assert_eq!(decide(at(220), &leading(4), &mut claim, &rules()), Desired::Hold, "lease back");
        // A new term starts the wait again.
        assert_eq!(decide(at(300), &leading(6), &mut claim, &rules()), Desired::Release);
        assert_eq!(decide(at(360), &leading(6), &mut claim, &rules()), Desired::Hold);
    }

    #[test]
    fn a_follower_or_a_leader_handing_over_never_holds() {
        let now = Instant::now();
        let mut claim = Some(Claim { term: 4, at: now - Duration::from_secs(1) });
        let follower = Observed { role: Role::Follower, ..leading(4) };
        assert_eq!(decide(now, &follower, &mut claim, &rules()), Desired::Release);
        let handing = Observed { handing_over: true, ..leading(4) };
        assert_eq!(decide(now, &handing, &mut claim, &rules()), Desired::Release);
    }

    #[test]
    fn a_handover_from_a_master_claims_at_once_from_the_witness_it_waits() {
        let now = Instant::now();
        let mut claim = None;
        let from_master = Observed { handed_over_by: Some(1), ..leading(7) };
        assert_eq!(decide(now, &from_master, &mut claim, &rules()), Desired::Hold);
        let mut claim = None;
        let from_witness = Observed { handed_over_by: Some(3), ..leading(7) };
        assert_eq!(decide(now, &from_witness, &mut claim, &rules()), Desired::Release);
    }

    #[test]
    fn a_master_the_address_book_added_counts_for_a_handover_the_witness_still_not() {
        use crate::server::leadership::{AddressBook, MasterAddrs};
        let master = MasterAddrs { client: Some("127.0.0.1:9421".into()), ..Default::default() };
        let witness = MasterAddrs::default();
        let book = AddressBook::of([(1, master.clone()), (4, master), (3, witness)]);
        let mut rules = rules();
        rules.learn(3, &book);
        rules.learn(4, &book);
        rules.learn(5, &book); // not in the book at all
        assert_eq!(rules.masters, [1, 2, 4].into());
        let now = Instant::now();
        let mut claim = None;
        let from_added = Observed { handed_over_by: Some(4), ..leading(9) };
        assert_eq!(decide(now, &from_added, &mut claim, &rules), Desired::Hold);
    }
}
