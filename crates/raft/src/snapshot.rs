//! Snapshots in the Ready loop: step 3 installs the leader's, step 8 takes our own and
//! compacts the log behind it.

use std::sync::atomic::Ordering;

use crate::handle::Applied;
use crate::node::Node;
use crate::state_machine::StateMachine;
use crate::store::LogStore;

impl<S: StateMachine, L: LogStore> Node<S, L> {
    /// Step 3 on a follower: the leader's snapshot replaces the state and the tables.
    pub(crate) fn install_snapshot(&mut self, snapshot: &raft::eraftpb::Snapshot) {
        let metadata = snapshot.get_metadata();
        let (index, term) = (metadata.index, metadata.term);
        let state = S::from_snapshot(&snapshot.data).unwrap_or_else(|error| {
            crate::fatal(&format!("the leader's snapshot at index {index} does not load: {error}"))
        });
        assert_eq!(state.applied_index(), index, "snapshot data and metadata disagree");
        let result = self.raw.mut_store().install_snapshot(snapshot, state.records());
        result.unwrap_or_else(|error| crate::fatal(&error.to_string()));
        let mut state = state;
        state.take_changes();
        *self.shared.applied.write() = Applied { state, term };
        self.applied_term = term;
        let stored = self.raw.store().latest_snapshot().expect("snapshot just installed");
        *self.shared.snapshot.lock() = Some((index, term, stored.data.clone()));
        self.shared.stats.snapshots_installed.fetch_add(1, Ordering::Relaxed);
        self.after_membership(Some(metadata.get_conf_state()));
        tracing::info!(node = self.config.node_id, index, term, "installed the leader's snapshot");
    }

    /// Step 8: snapshot the applied state and compact the log when enough has been applied
    /// since the last snapshot, or when raft asked for a newer snapshot than we have.
    pub(crate) fn maybe_snapshot(&mut self) {
        let store = self.raw.store();
        let (applied, _) = store.applied();
        let last = store.latest_snapshot().map_or(0, |snapshot| snapshot.index);
        let wanted = store.take_snapshot_wanted();
        if applied <= last || (applied - last < self.config.snapshot_every_entries && !wanted) {
            return;
        }
        let data = {
            let guard = self.shared.applied.read();
            assert_eq!(guard.state.applied_index(), applied, "stored and in-memory applied differ");
            guard.state.to_snapshot()
        };
        let keep = self.config.log_tail_entries;
        let result = self.raw.mut_store().save_snapshot_and_compact(data, keep);
        result.unwrap_or_else(|error| crate::fatal(&error.to_string()));
        let snapshot = self.raw.store().latest_snapshot().expect("snapshot just saved");
        let cached = (snapshot.index, snapshot.term, snapshot.data.clone());
        *self.shared.snapshot.lock() = Some(cached);
        self.shared.stats.snapshots.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            node = self.config.node_id,
            index = applied,
            "snapshot taken, log compacted"
        );
    }
}
