//! Snapshots in the Ready loop: step 3 installs the leader's, step 8 takes our own and
//! compacts the log behind it.

use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use crate::handle::{Applied, SnapshotBlob};
use crate::node::Node;
use crate::state_machine::StateMachine;
use crate::store::{LogStore, RecordVisit, SnapshotJob};

impl<S: StateMachine, L: LogStore> Node<S, L> {
    /// Step 3 on a follower: the leader's snapshot replaces the state and the tables.
    pub(crate) fn install_snapshot(&mut self, snapshot: &raft::eraftpb::Snapshot) {
        let metadata = snapshot.get_metadata();
        let (index, term) = (metadata.index, metadata.term);
        // Checked before anything is stored: a snapshot that does not load is never installed.
        let state = S::from_snapshot(&snapshot.data).unwrap_or_else(|error| {
            crate::halt(&format!(
                "the leader's snapshot at index {index} (term {term}) does not load: {error}; \
                 nothing of it was installed. Check that every member runs the same mfsha \
                 version (`mfsha status`); if they do, the leader's store may be damaged: \
                 start this node again once another member leads"
            ))
        });
        assert_eq!(state.applied_index(), index, "snapshot data and metadata disagree");
        let records = |visit: &mut RecordVisit<'_>| state.visit_records(visit);
        let result = self.raw.mut_store().install_snapshot(snapshot, &records);
        result.unwrap_or_else(|error| crate::fatal(&error.to_string()));
        let mut state = state;
        state.take_changes();
        *self.shared.applied.write() = Applied { state, term };
        self.applied_term = term;
        let stored = self.raw.store().latest_snapshot().expect("snapshot just installed");
        let cached = (index, term, stored.data.clone());
        *self.shared.snapshot.lock() = Some(cached.clone());
        self.answer_snapshot_waiters(&cached);
        self.shared.stats.snapshots_installed.fetch_add(1, Ordering::Relaxed);
        self.after_membership(Some(metadata.get_conf_state()));
        tracing::info!(node = self.config.node_id, index, term, "installed the leader's snapshot");
    }

    /// Step 8: record a snapshot whose build has ended, and start one when enough has been
    /// applied since the last, or when raft asked for a newer one than we have. The blob is
    /// built and written on a thread of the store's (see [`LogStore::start_snapshot`]): for a
    /// big namespace that takes seconds, which would otherwise stall heartbeats and the
    /// state lock. Until it is recorded raft-rs keeps getting the previous snapshot, or
    /// `SnapshotTemporarilyUnavailable` if that one is too old.
    pub(crate) fn maybe_snapshot(&mut self) {
        if self.snapshot_job.as_ref().is_some_and(|(_, job)| job.is_finished()) {
            let (index, job) = self.snapshot_job.take().expect("a finished job");
            self.record_snapshot(index, job);
        }
        let store = self.raw.store();
        let (applied, _) = store.applied();
        let latest = store.latest_snapshot();
        let last = latest.map_or(0, |snapshot| snapshot.index);
        // A request raft makes while a build runs is answered by that build or the next one.
        let wanted = self.snapshot_job.is_none()
            && (store.take_snapshot_wanted() || !self.snapshot_waiters.is_empty());
        if self.snapshot_job.is_some()
            || applied <= last
            || (applied - last < self.config.snapshot_every_entries && !wanted)
        {
            return;
        }
        // Room for the blob up front: growing it by doubling would briefly hold twice its size.
        let guess = latest.map_or(0, |snapshot| snapshot.data.len() + snapshot.data.len() / 8);
        let encoder = S::snapshot_encoder(applied, guess);
        let job = self.raw.mut_store().start_snapshot(encoder);
        let job = job.unwrap_or_else(|error| crate::fatal(&error.to_string()));
        self.snapshot_job = Some((applied, job));
    }

    /// Records the snapshot built at `index` and compacts the log behind it.
    fn record_snapshot(&mut self, index: u64, job: SnapshotJob) {
        let built = match job.wait() {
            Ok(built) => built,
            // A leader's snapshot installed meanwhile may have removed the half-written file.
            Err(error) if self.installed_since(index) => {
                tracing::info!(node = self.config.node_id, index, %error,
                    "snapshot build overtaken by an installed snapshot");
                return;
            }
            Err(error) => crate::fatal(&format!("building the snapshot at {index}: {error}")),
        };
        let keep = self.config.log_tail_entries;
        let recorded = self.raw.mut_store().finish_snapshot(built, keep);
        if !recorded.unwrap_or_else(|error| crate::fatal(&error.to_string())) {
            tracing::info!(
                node = self.config.node_id,
                index,
                "snapshot built after a newer one was installed; dropped"
            );
            return;
        }
        // Raft's requests made during the build are for any snapshot newer than a follower's
        // log: this one. A request for a newer one comes again when raft retries the send.
        self.raw.store().take_snapshot_wanted();
        let snapshot = self.raw.store().latest_snapshot().expect("snapshot just saved");
        let cached = (snapshot.index, snapshot.term, snapshot.data.clone());
        *self.shared.snapshot.lock() = Some(cached.clone());
        self.answer_snapshot_waiters(&cached);
        self.shared.stats.snapshots.fetch_add(1, Ordering::Relaxed);
        tracing::info!(node = self.config.node_id, index, "snapshot taken, log compacted");
    }

    /// Waits for a snapshot build to end and records it (the node is stopping: the builder
    /// must let go of the store before it is closed and perhaps opened again).
    pub(crate) fn finish_snapshot_job(&mut self) {
        if let Some((index, job)) = self.snapshot_job.take() {
            self.record_snapshot(index, job);
        }
    }

    /// [`crate::Handle::snapshot`]: answered now if the latest snapshot is recent enough,
    /// otherwise once one is (a build is started after this Ready if none runs).
    pub(crate) fn want_snapshot(&mut self, index: u64, reply: oneshot::Sender<SnapshotBlob>) {
        let latest = self.shared.snapshot.lock().clone();
        match latest.filter(|snapshot| snapshot.0 >= index) {
            // Err: the caller stopped waiting; nothing to tell.
            Some(snapshot) => drop(reply.send(snapshot)),
            None => self.snapshot_waiters.push((index, reply)),
        }
    }

    fn answer_snapshot_waiters(&mut self, snapshot: &SnapshotBlob) {
        for (index, reply) in std::mem::take(&mut self.snapshot_waiters) {
            match index <= snapshot.0 {
                true => drop(reply.send(snapshot.clone())), // Err: the caller stopped waiting
                false => self.snapshot_waiters.push((index, reply)),
            }
        }
    }

    fn installed_since(&self, index: u64) -> bool {
        self.raw.store().latest_snapshot().is_some_and(|latest| latest.index >= index)
    }
}
