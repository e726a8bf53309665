//! Steps 4 and 7 of the Ready loop: committed entries go through the state machine, what it
//! changed is written with the applied index in one batch, then subscribers and proposers
//! hear about it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType};

use crate::membership::conf_change_command;
use crate::node::{own_proposal, Node};
use crate::state_machine::StateMachine;
use crate::store::{ApplyBatch, LogStore};

/// A committed entry ready for the state machine.
struct Decoded {
    index: u64,
    term: u64,
    command: Arc<Vec<u8>>,
    proposal: Option<u64>,
    conf_state: Option<ConfState>,
}

impl<S: StateMachine, L: LogStore> Node<S, L> {
    pub(crate) fn apply_committed(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last() else {
            return;
        };
        let (last_index, last_term) = (last.index, last.term);
        let decoded: Vec<Decoded> = entries.into_iter().map(|entry| self.decode(entry)).collect();
        let mut results = Vec::new();
        let changes = {
            let mut applied = self.shared.applied.write();
            for item in &decoded {
                // Also catches a gap after restart: the first entry must be applied + 1.
                assert_eq!(
                    item.index,
                    applied.state.applied_index() + 1,
                    "committed entry out of order"
                );
                let output = applied.state.apply(item.index, &item.command);
                let output = output.unwrap_or_else(|reason| crate::halt(&reason));
                if let Some(id) = item.proposal {
                    results.push((id, item.term, output));
                }
            }
            assert_eq!(applied.state.applied_index(), last_index, "apply did not reach the end");
            applied.term = last_term;
            applied.state.take_changes()
        };
        self.applied_term = last_term;
        let conf_state = decoded.iter().rev().find_map(|item| item.conf_state.clone());
        let batch = ApplyBatch {
            changes,
            applied_index: last_index,
            applied_term: last_term,
            conf_state: conf_state.clone(),
        };
        let written = self.raw.mut_store().write_apply(batch);
        written.unwrap_or_else(|error| crate::fatal(&error.to_string()));
        if conf_state.is_some() {
            self.after_membership(conf_state.as_ref());
        }
        let stats = &self.shared.stats;
        stats.entries_applied.fetch_add(decoded.len() as u64, Ordering::Relaxed);
        self.publish_applied(decoded);
        for (id, term, output) in results {
            self.resolve(id, term, output);
        }
    }

    /// Raft's own empty entries apply as the state machine's empty command, so that every
    /// index passes through `apply`; a conf change applies the command its context carries.
    fn decode(&mut self, entry: Entry) -> Decoded {
        let (index, term) = (entry.index, entry.term);
        let proposal = own_proposal(&entry.context, self.config.node_id);
        let kind = entry.get_entry_type();
        if kind == EntryType::EntryNormal && !entry.data.is_empty() {
            let command = Arc::new(Vec::from(entry.data));
            return Decoded { index, term, command, proposal, conf_state: None };
        }
        let (conf_state, command) = match kind {
            EntryType::EntryNormal => (None, None),
            EntryType::EntryConfChange => {
                (Some(self.apply_conf_change(&entry)), conf_change_command(&entry))
            }
            EntryType::EntryConfChangeV2 => (Some(self.apply_conf_change(&entry)), None),
        };
        let command = Arc::new(command.unwrap_or_else(S::empty_command));
        Decoded { index, term, command, proposal, conf_state }
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> ConfState {
        let index = entry.index;
        let result = if entry.get_entry_type() == EntryType::EntryConfChange {
            let change =
                ConfChange::parse_from_bytes(&entry.data).unwrap_or_else(|e| conf_fatal(index, e));
            if let Some(conf_state) = self.own_removal(&change) {
                return conf_state;
            }
            self.raw.apply_conf_change(&change)
        } else {
            let change = ConfChangeV2::parse_from_bytes(&entry.data)
                .unwrap_or_else(|e| conf_fatal(index, e));
            self.raw.apply_conf_change(&change)
        };
        let conf_state = result.unwrap_or_else(|e| conf_fatal(index, e));
        tracing::info!(node = self.config.node_id, index, voters = ?conf_state.voters,
            learners = ?conf_state.learners, "membership changed");
        conf_state
    }

    /// The membership without this node, if `change` removes it. raft-rs is not told: a
    /// leader that removes itself loses its own progress and panics at the next advance (the
    /// leader may have changed between proposal and commit), and the node stops after this
    /// Ready anyway; only the stored membership must say it is gone.
    fn own_removal(&self, change: &ConfChange) -> Option<ConfState> {
        let me = self.config.node_id;
        if change.get_change_type() != ConfChangeType::RemoveNode || change.node_id != me {
            return None;
        }
        let mut conf_state = self.raw.raft.prs().conf().to_conf_state();
        conf_state.voters.retain(|id| *id != me);
        conf_state.learners.retain(|id| *id != me);
        tracing::info!(node = me, voters = ?conf_state.voters, "this node's removal applied");
        Some(conf_state)
    }

    fn publish_applied(&self, decoded: Vec<Decoded>) {
        let events = &self.shared.applied_events;
        if events.receiver_count() == 0 {
            return;
        }
        for item in decoded {
            // Err only means every receiver has gone since the check.
            if events.send((item.index, item.term, item.command)).is_err() {
                return;
            }
        }
    }
}

fn conf_fatal(index: u64, error: impl std::fmt::Display) -> ! {
    crate::halt(&format!(
        "the membership change committed at index {index} cannot be applied: {error}; \
         check that every member runs the same mfsha version (`mfsha status`)"
    ))
}
