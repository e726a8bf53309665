//! Changing who is in the group, one member at a time: the proposal, what applying it means
//! for the node, and where the transport learns the members' addresses.
//!
//! A change is a raft-rs `ConfChange` whose context is a state-machine command (for the
//! metadata, the address book update), so the membership and what the state machine records
//! about it change at the same index. Single changes only: raft-rs refuses a second one while
//! the first is not applied, and so do we, at once, instead of letting raft-rs turn it into an
//! empty entry that nobody answers.

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfState, Entry};
use raft::StateRole;

use crate::node::{answer, proposal_context, Node, Reply};
use crate::state_machine::StateMachine;
use crate::store::LogStore;
use crate::Status;

/// One membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// A voting member (a new node gets the leader's snapshot, then the log).
    AddVoter(u64),
    /// A non-voting member: it replicates and applies but never votes or leads.
    AddLearner(u64),
    Remove(u64),
}

impl MemberChange {
    pub fn node_id(self) -> u64 {
        match self {
            MemberChange::AddVoter(id)
            | MemberChange::AddLearner(id)
            | MemberChange::Remove(id) => id,
        }
    }

    fn conf_change(self, command: Vec<u8>) -> ConfChange {
        let change_type = match self {
            MemberChange::AddVoter(_) => ConfChangeType::AddNode,
            MemberChange::AddLearner(_) => ConfChangeType::AddLearnerNode,
            MemberChange::Remove(_) => ConfChangeType::RemoveNode,
        };
        let mut change = ConfChange::default();
        change.set_change_type(change_type);
        change.node_id = self.node_id();
        change.context = command.into();
        change
    }
}

/// The state-machine command carried by a committed `ConfChange` entry (its context), or
/// `None` when it carries none (then the entry applies as the empty command).
pub(crate) fn conf_change_command(entry: &Entry) -> Option<Vec<u8>> {
    let change = ConfChange::parse_from_bytes(&entry.data).ok()?;
    (!change.context.is_empty()).then(|| change.context.to_vec())
}

/// True if `conf_state` (not empty: a member that has not received its first snapshot has an
/// empty one) no longer names `node_id`.
pub(crate) fn removes(conf_state: &ConfState, node_id: u64) -> bool {
    let named = |ids: &[u64]| ids.contains(&node_id);
    let any = !conf_state.voters.is_empty() || !conf_state.learners.is_empty();
    any && !named(&conf_state.voters)
        && !named(&conf_state.learners)
        && !named(&conf_state.voters_outgoing)
        && !named(&conf_state.learners_next)
}

impl<S: StateMachine, L: LogStore> Node<S, L> {
    /// Proposes `change` with `command` for the state machine; `reply` hears back once it is
    /// applied. `Busy` while another change is not yet applied (or, for an addition, not yet
    /// in every member's log: [`Node::members_hold_last_change`]); `NotLeader` on a follower;
    /// `Invalid` for what raft-rs refuses (removing the last voter, say).
    pub fn change_members(
        &mut self,
        change: MemberChange,
        command: Vec<u8>,
        reply: Reply<S::Output>,
    ) {
        if self.raw.raft.state != StateRole::Leader {
            return answer(reply, Err(Status::NotLeader));
        }
        let adds = !matches!(change, MemberChange::Remove(_));
        if self.raw.raft.has_pending_conf() || (adds && !self.members_hold_last_change()) {
            tracing::info!(
                node = self.config.node_id,
                ?change,
                "membership change refused: the previous one is not applied yet"
            );
            return answer(reply, Err(Status::Busy));
        }
        let id = self.take_proposal_id();
        let context = proposal_context(self.config.node_id, id);
        let last_index = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose_conf_change(context, change.conf_change(command));
        if let Err(error) = proposed {
            tracing::warn!(node = self.config.node_id, ?change, %error, "membership change refused");
            return answer(reply, Err(Status::Invalid));
        }
        if self.raw.raft.raft_log.last_index() == last_index {
            return answer(reply, Err(Status::Busy)); // dropped (a leadership transfer runs)
        }
        tracing::info!(node = self.config.node_id, ?change, "membership change proposed");
        self.add_pending(id, reply);
    }

    /// True if every member's log holds the last membership change. Only then may a node be
    /// added, which may be a removed one again with a wiped store: a member still on the older
    /// membership (it has not got the removal) counts the removed node as a voter, and that
    /// node's fresh, empty vote could elect it without the entries the group committed since.
    /// (The simulator found this.) Once every member holds the removal, a candidate lacking
    /// newer entries cannot gather a majority even with that vote.
    pub(crate) fn members_hold_last_change(&self) -> bool {
        let raft = &self.raw.raft;
        raft.prs().iter().all(|(_, progress)| progress.matched >= raft.pending_conf_index)
    }

    /// The serving leader `from` said its membership as of its applied index `their_applied`
    /// leaves this node out. A serving leader has applied every committed entry, so its
    /// membership is the group's. A node re-added with a wiped store got its first state
    /// from a leader that had applied (so committed) the re-addition, which every later
    /// serving leader has applied too: it is never told. Believed only when that index is
    /// past this node's own applied index and this node's membership still names it (a new
    /// node holds no membership until its first snapshot).
    pub fn heard_not_member(&mut self, from: u64, their_applied: u64) {
        let me = self.config.node_id;
        let store = self.raw.store();
        let (conf, applied) = (store.conf_state(), store.applied().0);
        let named = *conf != ConfState::default() && !removes(conf, me);
        if their_applied <= applied || !named {
            tracing::debug!(node = me, from, their_applied, applied, "not-a-member notice ignored");
            return;
        }
        tracing::warn!(
            node = me,
            from,
            their_applied,
            applied,
            "this node was removed from the group while it was down (member {from}'s \
            membership at index {their_applied} leaves it out; this node applied up to \
            {applied}); stopping for good: move its data directory aside and run `mfsha \
            member add` on the leader to make it a member again"
        );
        let recorded = self.raw.mut_store().set_removed_at(their_applied);
        recorded.unwrap_or_else(|error| crate::fatal(&error.to_string()));
        self.shared.mark_removed();
    }

    /// What [`crate::Handle::removal_notice_for`] answers, read from this node's store: only
    /// a serving leader tells (see there).
    pub fn removal_notice_for(&self, from: u64) -> Option<u64> {
        let store = self.raw.store();
        let serving = self.serving(self.now_ms);
        (serving && removes(store.conf_state(), from)).then(|| store.applied().0)
    }

    /// The applied membership, for the peer port's not-a-member notices.
    pub(crate) fn publish_members(&self) {
        let store = self.raw.store();
        let conf = store.conf_state();
        let members = (conf.voters.iter().chain(&conf.learners))
            .chain(conf.voters_outgoing.iter().chain(&conf.learners_next))
            .copied()
            .collect();
        let applied_index = store.applied().0;
        self.shared.publish_members(crate::handle::AppliedMembers { applied_index, members });
    }

    /// After a membership change or a snapshot: the transport learns the addresses the state
    /// machine's address book holds, and a node that is no longer a member stops.
    pub(crate) fn after_membership(&mut self, conf_state: Option<&ConfState>) {
        let peers = self.shared.applied.read().state.peer_addresses();
        let me = self.config.node_id;
        let others: Vec<(u64, String)> = peers.into_iter().filter(|(id, _)| *id != me).collect();
        self.transport_learn_peers(&others);
        if conf_state.is_some_and(|conf| removes(conf, me)) {
            tracing::warn!(
                node = me,
                "this node was removed from the group; stopping (wipe \
                its data directory before it joins again)"
            );
            self.shared.mark_removed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_is_seen_only_in_a_real_conf_state() {
        let conf = |voters: Vec<u64>, learners: Vec<u64>| ConfState {
            voters,
            learners,
            ..ConfState::default()
        };
        assert!(!removes(&ConfState::default(), 1), "an empty conf state is a new member");
        assert!(!removes(&conf(vec![1, 2, 3], vec![]), 1));
        assert!(!removes(&conf(vec![2, 3, 4], vec![1]), 1));
        assert!(removes(&conf(vec![2, 3, 4], vec![]), 1));
    }

    #[test]
    fn the_command_rides_in_the_conf_change_context() {
        let change = MemberChange::AddVoter(4).conf_change(b"book".to_vec());
        let entry = Entry { data: change.write_to_bytes().unwrap().into(), ..Entry::default() };
        assert_eq!(conf_change_command(&entry), Some(b"book".to_vec()));
        let bare = MemberChange::Remove(4).conf_change(Vec::new());
        let entry = Entry { data: bare.write_to_bytes().unwrap().into(), ..Entry::default() };
        assert_eq!(conf_change_command(&entry), None);
    }
}
