//! Session expiry: the leader ends sessions that no connection has carried for the session
//! sustain time (`client.session_sustain_secs`, a day by default, as MooseFS's
//! `SESSION_SUSTAIN_TIME`).
//!
//! A session outlives its connection so that a mount that comes back (a network cut, a
//! suspended laptop, a failover) finds its open files and locks. Past the sustain time the
//! session ends as if it had said goodbye: its open files are released, so an unlinked file
//! that nobody else holds is freed (what an operator expects once nobody can read it), and
//! its locks are dropped.
//!
//! Whether the time has come needs a clock, and apply must not read one: the leader decides
//! and proposes `Op::ExpireSession`, which apply carries out without looking at any time.
//! Idle time is leader memory (see [`super::session`]): a connected session is never
//! expired; a detached one counts from when its last connection closed here, and one this
//! leader has not seen from the start of its leadership, so after a failover no live session
//! is expired for activity only the old leader saw. It is measured on the monotonic clock:
//! it is an interval on this one machine, and a step of the wall clock must not expire every
//! detached session at once.

use super::leadership::Epoch;
use super::{Service, Shutdown};
use mfsha_meta::{Entry, Op};
use mfsha_proto::types::{SessionId, Status};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Looks for expired sessions every `sustain / 10`, at least every 10 s and at most every
/// 100 ms, until `shutdown`. Every master runs it; only a leader's rounds propose.
pub async fn run(service: Arc<Service>, sustain: Duration, shutdown: Shutdown) {
    let period = (sustain / 10).clamp(Duration::from_millis(100), Duration::from_secs(10));
    super::every(period, shutdown, || {
        let service = service.clone();
        async move {
            expire_round(&service, sustain).await;
        }
    })
    .await
}

/// Ends every session idle for `sustain` as this leader saw it; returns how many ended.
/// Proposes nothing unless this master leads.
pub async fn expire_round(service: &Service, sustain: Duration) -> usize {
    let live: HashSet<SessionId> = service.meta.read(|s| s.sessions().map(|(id, ..)| id).collect());
    service.sessions.keep_only(|id| live.contains(&id));
    let Some(epoch) = service.leadership.epoch() else { return 0 };
    let mut expired = 0;
    for session in idle_sessions(service, epoch, sustain, Instant::now()) {
        // A mount may have come back since the list was made.
        if service.sessions.is_connected(session) {
            continue;
        }
        let entry = Entry {
            now: service.meta.cluster_now(),
            client: None,
            op: Op::ExpireSession { session },
        };
        match service.meta.propose(entry).await {
            Ok(_) => {
                tracing::info!(
                    session,
                    sustain_secs = sustain.as_secs(),
                    "session expired: no connection for the session sustain time; its open \
                     files are released and its locks dropped"
                );
                expired += 1;
            }
            Err(Status::BadSession) => {} // it said goodbye meanwhile
            Err(status) => {
                tracing::debug!(session, %status, "session expiry not committed; retrying later");
                break; // most likely leadership went; the next round looks again
            }
        }
        service.locks.release_session(session);
        service.opens.end_session(session);
        service.sessions.forget(session);
    }
    expired
}

/// Sessions of the applied state that no connection carries and that have been idle for
/// `sustain` at `now`, counting at the earliest from the start of `epoch`.
fn idle_sessions(
    service: &Service,
    epoch: Epoch,
    sustain: Duration,
    now: Instant,
) -> Vec<SessionId> {
    let ids: Vec<SessionId> = service.meta.read(|s| s.sessions().map(|(id, ..)| id).collect());
    let idle = |id: &SessionId| {
        if service.sessions.is_connected(*id) {
            return false;
        }
        let since =
            service.sessions.detached_since(*id).map_or(epoch.since, |t| t.max(epoch.since));
        now.saturating_duration_since(since) >= sustain
    };
    ids.into_iter().filter(idle).collect()
}
