//! Emptying the trash: the leader purges files whose trash time has passed.
//!
//! A deleted file stays in the trash until `deleted_at + trash_seconds`. Whether that moment
//! has come depends on a clock, and `State::apply` must never read one (every replica has to
//! reach the same state from the same log). So the *leader* decides with its clock, never
//! before the cluster time ([`MetaHandle::cluster_now`]; `deleted_at` is cluster time too), and
//! proposes one `Op::Purge { ino }` per expired file; apply removes exactly the file the entry
//! names and checks nothing time-dependent. A file undeleted (or purged by an operator) between
//! the decision and the commit answers `NotFound`, which is harmless.
//!
//! What happens next is the state machine's and the registry's business: a purged file that a
//! session still holds open becomes *sustained* and is freed when the last session releases
//! it; a freed file's chunks leave the chunk table, and the replication engine deletes every
//! copy of a chunk the table no longer has.
//!
//! Followers propose nothing (each round starts by asking [`MetaHandle::is_leader`]); after a
//! leader change the new leader finds the same trash, because the trash is replicated.

use crate::config::TrashConfig;
use crate::node::MetaHandle;
use crate::server::Shutdown;
use mfsha_meta::{Entry, Op};
use mfsha_proto::types::{Ino, Status, Timestamp};
use std::time::Duration;
use tokio::task::JoinSet;

/// Purge proposals in flight at once: enough for group commit to share fsyncs, few enough
/// that a large round leaves proposal slots for clients.
const IN_FLIGHT: usize = 256;

/// What one purge round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Files removed from the trash (freed, or sustained if still open).
    pub purged: u64,
    /// Files that had already left the trash when their purge applied (undeleted meanwhile).
    pub gone: u64,
    /// Proposals that failed otherwise (leadership lost, shutting down, …); retried next round.
    pub failed: u64,
}

/// Runs purge rounds every `config.purge_interval_ms` until `shutdown`.
pub async fn run(meta: MetaHandle, config: TrashConfig, shutdown: Shutdown) {
    let period = Duration::from_millis(config.purge_interval_ms.max(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.triggered() => return,
        }
        if !meta.is_leader() {
            continue;
        }
        tokio::select! {
            round = purge_round(&meta, config.purge_batch, meta.cluster_now()) => log_round(round),
            _ = shutdown.triggered() => return,
        }
    }
}

/// Proposes `Op::Purge` for up to `batch` trashed files expired at `now` (the longest
/// expired first) and waits until each is applied. Does nothing unless this node leads.
pub async fn purge_round(meta: &MetaHandle, batch: usize, now: Timestamp) -> Round {
    let mut round = Round::default();
    if !meta.is_leader() {
        return round;
    }
    let expired = meta.read(|state| state.trash_expired(now, batch));
    for window in expired.chunks(IN_FLIGHT) {
        let mut proposals = JoinSet::new();
        for &ino in window {
            let meta = meta.clone();
            proposals.spawn(async move { (ino, propose_purge(&meta, ino, now).await) });
        }
        while let Some(joined) = proposals.join_next().await {
            match joined {
                Ok((ino, result)) => count(&mut round, ino, result),
                Err(error) => {
                    tracing::error!(%error, "a trash purge task failed; retrying next round");
                    round.failed += 1;
                }
            }
        }
        if round.failed > 0 {
            break; // most likely leadership went; the next round starts from the state again
        }
    }
    round
}

async fn propose_purge(meta: &MetaHandle, ino: Ino, now: Timestamp) -> Result<(), Status> {
    meta.propose(Entry { now, client: None, op: Op::Purge { ino } }).await.map(|_| ())
}

fn count(round: &mut Round, ino: Ino, result: Result<(), Status>) {
    match result {
        Ok(()) => round.purged += 1,
        Err(Status::NotFound) => round.gone += 1,
        Err(status @ (Status::NotLeader | Status::Unavailable)) => {
            tracing::debug!(ino, %status, "trash purge not committed; retrying later");
            round.failed += 1;
        }
        Err(status) => {
            tracing::warn!(ino, %status, "cannot purge a file from the trash; retrying next round");
            round.failed += 1;
        }
    }
}

fn log_round(round: Round) {
    if round.purged > 0 || round.failed > 0 {
        tracing::info!(
            purged = round.purged,
            already_gone = round.gone,
            failed = round.failed,
            "purged expired files from the trash"
        );
    }
}
