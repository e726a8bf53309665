//! The chunk-copy registry and the replication engine.
//!
//! Which chunkserver holds which copy of which chunk at which version is *not* replicated
//! metadata (as in MooseFS): chunkservers report their copies to every master when they
//! register, and every change after that, and each master keeps them here, in memory. So a
//! follower elected leader already knows where every copy is; only the leader sends
//! commands and runs the engine. Chunkservers also name the chunks clients are writing in
//! their heartbeats, so a new leader does not replicate or delete a chunk a client is
//! writing under a grant of the old leader.
//!
//! * [`registry`] — connected servers, copies, commands in flight (plain data + queries).
//! * [`listener`] — the chunkserver port: registration, heartbeats, reports, `Done` answers.
//! * [`plan`] — the pure replication planner (endangered → undergoal → deletions →
//!   rebalancing, paced per server).
//! * this module — [`ChunkRegistry`]: the engine's periodic pass, the write preparation
//!   (create / version bump / duplicate / truncate on the chosen chunkservers) and the
//!   [`ChunkService`] the client service calls.
//!
//! After this master becomes leader it still waits `replication_delay_init_ms` before deleting
//! or replicating anything (reads and writes are served at once), so that a chunkserver that
//! was cut off from it has re-registered: a copy not yet reported is not a missing copy.

pub mod listener;
pub mod plan;
pub mod progress;
pub mod registry;
mod write;

#[cfg(test)]
mod tests;

use crate::config::ChunksConfig;
use crate::node::MetaHandle;
use crate::server::{BoxFuture, ChunkService, CommandCounts, CopyHealth};
use crate::server::{Leadership, Shutdown};
use mfsha_meta::{ChunkInfo, Entry, Op, Outcome};
use mfsha_proto::client::{ChunkserverStatus, CopyInfo};
use mfsha_proto::cs::MasterToCs;
use mfsha_proto::types::{ChunkId, ServerAddr, Status};
use parking_lot::Mutex;
use plan::{Action, Limits, Moment, Plan};
use registry::{Inner, PendingKind, ServerKey};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// What the registry needs from the metadata. Implemented by [`MetaHandle`]; tests use a fake.
pub trait ChunkMeta: Send + Sync + 'static {
    fn is_leader(&self) -> bool;
    /// This master's node id (sent in `Welcome`).
    fn node_id(&self) -> u64;
    fn chunk(&self, id: ChunkId) -> Option<ChunkInfo>;
    /// Every chunk of the metadata.
    fn chunk_table(&self) -> Vec<(ChunkId, ChunkInfo)>;
    /// Proposes `Op::SetChunkVersion` and waits until it is applied.
    fn accept_version(&self, id: ChunkId, version: u32) -> BoxFuture<'static, Result<(), Status>>;
}

impl ChunkMeta for MetaHandle {
    fn is_leader(&self) -> bool {
        MetaHandle::is_leader(self)
    }

    fn node_id(&self) -> u64 {
        self.raft_status().node_id
    }

    fn chunk(&self, id: ChunkId) -> Option<ChunkInfo> {
        self.read(|s| s.chunk(id))
    }

    fn chunk_table(&self) -> Vec<(ChunkId, ChunkInfo)> {
        self.read(|s| s.chunks().collect())
    }

    fn accept_version(&self, id: ChunkId, version: u32) -> BoxFuture<'static, Result<(), Status>> {
        let meta = self.clone();
        Box::pin(async move {
            let op = Op::SetChunkVersion { chunk_id: id, version };
            meta.propose(Entry { now: meta.cluster_now(), client: None, op }).await.map(|_| ())
        })
    }
}

/// The registry and engine of one master.
pub struct ChunkRegistry {
    pub(crate) inner: Mutex<Inner>,
    pub(crate) meta: Arc<dyn ChunkMeta>,
    pub(crate) config: ChunksConfig,
    /// Results of the last planning pass, for status.
    last: Mutex<(CopyHealth, HashSet<ServerKey>)>,
    /// When this master last became leader (`None` while it is not).
    leader_since: Mutex<Option<Instant>>,
    /// Replications and deletions sent since start, for metrics.
    started: (AtomicU64, AtomicU64),
    /// Re-replication and drain episodes, for status.
    progress: Mutex<Progress>,
}

/// The engine's long work (see [`progress`]).
#[derive(Debug)]
struct Progress {
    recovery: progress::Episode,
    drain: progress::Episode,
}

impl Progress {
    const fn new() -> Progress {
        Progress {
            recovery: progress::Episode::new("re-replication"),
            drain: progress::Episode::new("drain of disks marked for removal"),
        }
    }

    fn observe(&mut self, health: &CopyHealth) {
        // A chunk with no copy left cannot be re-replicated: it waits for a server to return.
        let lost = health.undergoal.saturating_sub(health.draining);
        self.recovery.observe(lost);
        self.drain.observe(health.draining);
    }
}

/// How long `prepare_write` waits for chunkservers to answer.
const COMMAND_WAIT: Duration = Duration::from_secs(10);

impl ChunkRegistry {
    pub fn new(meta: Arc<dyn ChunkMeta>, config: ChunksConfig) -> Arc<ChunkRegistry> {
        Arc::new(ChunkRegistry {
            inner: Mutex::new(Inner::default()),
            meta,
            config,
            last: Mutex::new((CopyHealth::default(), HashSet::new())),
            leader_since: Mutex::new(None),
            started: (AtomicU64::new(0), AtomicU64::new(0)),
            progress: Mutex::new(Progress::new()),
        })
    }

    fn limits(&self) -> Limits {
        Limits {
            replications_per_server: self.config.replications_per_server_max.max(1),
            deletions_per_server: self.config.deletions_per_server_max.max(1),
            rebalance_threshold: self.config.rebalance_threshold_percent as f64 / 100.0,
            write_lock: Duration::from_millis(self.config.write_lock_timeout_ms),
        }
    }

    /// Runs the engine until `shutdown`: one pass every `replication_loop_ms`.
    pub async fn run_engine(self: Arc<Self>, shutdown: crate::server::Shutdown) {
        let period = Duration::from_millis(self.config.replication_loop_ms.max(10));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.pass(),
                _ = shutdown.triggered() => return,
            }
        }
    }

    /// One engine pass: track leadership, expire stale commands, plan and dispatch.
    pub fn pass(self: &Arc<Self>) {
        let Some(ready) = self.leadership() else { return };
        self.expire_commands();
        let table_taken = Instant::now();
        let table = self.meta.chunk_table();
        let moment = Moment { table_taken, ready, now: Instant::now() };
        let mut inner = self.inner.lock();
        let plan = inner.plan(&table, moment, &self.limits());
        let Plan { actions, health, safe_to_remove } = plan;
        let recoveries = self.dispatch(&mut inner, actions);
        drop(inner);
        self.progress.lock().observe(&health);
        *self.last.lock() = (health, safe_to_remove);
        for action in recoveries {
            self.spawn_recovery(action);
        }
    }

    /// `Some(ready)` while leader. On losing leadership the commands in flight are failed;
    /// the chunkservers stay connected (every master keeps their copies, see the module).
    fn leadership(&self) -> Option<bool> {
        let mut since = self.leader_since.lock();
        if !self.meta.is_leader() {
            if since.take().is_some() {
                tracing::warn!("no longer leader: failing chunkserver commands in flight");
                self.inner.lock().fail_pending();
                let mut progress = self.progress.lock();
                progress.recovery.forget();
                progress.drain.forget();
            }
            return None;
        }
        let started = *since.get_or_insert_with(|| {
            tracing::info!(
                delay_ms = self.config.replication_delay_init_ms,
                "leader: waiting for chunkservers to register before replicating (the chunk map is warm)"
            );
            Instant::now()
        });
        Some(started.elapsed() >= Duration::from_millis(self.config.replication_delay_init_ms))
    }

    fn expire_commands(&self) {
        let timeout = Duration::from_millis(self.config.command_timeout_ms);
        let mut inner = self.inner.lock();
        let expired: Vec<u64> = inner
            .pending
            .iter()
            .filter(|(_, p)| p.sent.elapsed() > timeout)
            .map(|(op, _)| *op)
            .collect();
        for op in expired {
            tracing::warn!(op, kind = ?inner.pending[&op].kind, "chunkserver command timed out");
            inner.finish(op, Err(Status::Io));
        }
        let lock = Duration::from_millis(self.config.write_lock_timeout_ms);
        inner.writing.retain(|_, since| since.elapsed() < lock);
    }

    /// Sends the planned commands; returns the version recoveries to run (they wait for
    /// chunkservers and a commit, so they run in their own tasks).
    fn dispatch(&self, inner: &mut Inner, actions: Vec<Action>) -> Vec<Action> {
        let mut recoveries = Vec::new();
        for action in actions {
            match action {
                Action::Replicate { chunk, version, source, target, why } => {
                    self.send_replication(inner, (chunk, version), source, target, why);
                }
                Action::Delete { chunk, version, server, why } => {
                    let kind = PendingKind::Delete { chunk };
                    let make = |op| MasterToCs::Delete { op, chunk_id: chunk, version };
                    if inner.send(server, kind, make, None).is_ok() {
                        inner.servers.get_mut(&server).expect("sent to it").deletions += 1;
                        self.started.1.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            chunk = format_args!("{chunk:016X}"),
                            version,
                            ?why,
                            "deleting copy"
                        );
                    }
                }
                Action::AcceptVersion { chunk, .. } | Action::Renumber { chunk, .. } => {
                    inner.proposing.insert(chunk);
                    recoveries.push(action);
                }
            }
        }
        recoveries
    }

    fn send_replication(
        &self,
        inner: &mut Inner,
        (chunk, version): (ChunkId, u32),
        source: ServerKey,
        target: ServerKey,
        why: plan::Why,
    ) {
        let Some(source_addr) = inner.servers.get(&source).map(|s| s.addr.clone()) else { return };
        let kind = PendingKind::Replicate { chunk, version, source };
        let make = |op| MasterToCs::Replicate {
            op,
            chunk_id: chunk,
            version,
            source: source_addr.clone(),
        };
        if inner.send(target, kind, make, None).is_err() {
            return;
        }
        for key in [source, target] {
            inner.servers.get_mut(&key).expect("planned with it").replications += 1;
        }
        self.started.0.fetch_add(1, Ordering::Relaxed);
        *inner.replicating.entry(chunk).or_default() += 1;
        let target_addr = &inner.servers[&target].addr;
        tracing::info!(chunk = format_args!("{chunk:016X}"), version, ?why, from = %source_addr, to = %target_addr, "replicating");
    }

    /// Runs an `AcceptVersion` or `Renumber` action; the chunk stays out of planning
    /// (`proposing`) until it is done.
    fn spawn_recovery(self: &Arc<Self>, action: Action) {
        let registry = self.clone();
        tokio::spawn(async move {
            let chunk = match action {
                Action::AcceptVersion { chunk, version } => {
                    tracing::warn!(chunk = format_args!("{chunk:016X}"), version,
                        "copies are newer than the recorded version (an interrupted renumbering); recording it");
                    registry.accept(chunk, version).await;
                    chunk
                }
                Action::Renumber { chunk, from, to, servers } => {
                    registry.renumber(chunk, from, to, servers).await;
                    chunk
                }
                other => unreachable!("not a recovery: {other:?}"),
            };
            registry.inner.lock().proposing.remove(&chunk);
        });
    }

    /// Makes the copies at `from` on `servers` version `to`, and records `to` if any made it.
    async fn renumber(&self, chunk: ChunkId, from: u32, to: u32, servers: Vec<ServerKey>) {
        tracing::warn!(chunk = format_args!("{chunk:016X}"), newest = from, new_version = to,
            copies = servers.len(),
            "no copy has the chunk's current version; accepting the newest copies there are (data written after them is lost)");
        let cmds = servers
            .into_iter()
            .map(|server| write::Cmd::set_version(server, chunk, from, to))
            .collect();
        let results = write::run_all(self, cmds).await;
        if results.iter().any(|(_, r)| r.is_ok()) {
            self.accept(chunk, to).await;
        } else {
            tracing::error!(
                chunk = format_args!("{chunk:016X}"),
                from,
                to,
                "no chunkserver could renumber its copy; will try again"
            );
        }
    }

    async fn accept(&self, chunk: ChunkId, version: u32) {
        if let Err(e) = self.meta.accept_version(chunk, version).await {
            tracing::error!(chunk = format_args!("{chunk:016X}"), version, error = %e,
                "recording the accepted version failed; will try again");
        }
    }
}

impl ChunkService for ChunkRegistry {
    fn locations(&self, chunk_id: ChunkId, version: u32) -> Vec<ServerAddr> {
        self.inner.lock().locations(chunk_id, version)
    }

    fn choose_chain(&self, goal: u8, exclude: &[ServerAddr]) -> Vec<ServerAddr> {
        self.inner.lock().choose_chain(goal, exclude)
    }

    fn copies(&self, chunk_id: ChunkId) -> Vec<CopyInfo> {
        let version = self.meta.chunk(chunk_id).map(|c| c.version);
        self.inner.lock().copies_of(chunk_id, version)
    }

    fn prepare_write<'a>(
        &'a self,
        outcome: &'a Outcome,
    ) -> BoxFuture<'a, Result<Vec<ServerAddr>, Status>> {
        Box::pin(write::prepare(self, outcome))
    }

    fn write_end(&self, chunk_id: ChunkId, ok: bool) {
        self.inner.lock().writing.remove(&chunk_id);
        if !ok {
            tracing::warn!(
                chunk = format_args!("{chunk_id:016X}"),
                "a client reported a failed chunk write"
            );
        }
    }

    fn fs_stat(&self) -> (u64, u64) {
        self.inner.lock().fs_stat()
    }

    fn chunkservers(&self) -> Vec<ChunkserverStatus> {
        let safe = self.last.lock().1.clone();
        self.inner.lock().statuses(&safe)
    }

    fn copy_health(&self, _chunks_total: u64) -> CopyHealth {
        self.last.lock().0
    }

    fn command_counts(&self) -> CommandCounts {
        let mut counts = CommandCounts {
            replications_started: self.started.0.load(Ordering::Relaxed),
            deletions_started: self.started.1.load(Ordering::Relaxed),
            ..CommandCounts::default()
        };
        for pending in self.inner.lock().pending.values() {
            match pending.kind {
                PendingKind::Replicate { .. } => counts.replicating += 1,
                PendingKind::Delete { .. } => counts.deleting += 1,
                _ => counts.other += 1,
            }
        }
        counts
    }

    fn long_work(&self) -> Vec<mfsha_proto::client::LongWork> {
        let progress = self.progress.lock();
        [progress.recovery.view(), progress.drain.view()].into_iter().flatten().collect()
    }
}

/// What a chunk registry gets to start with (see [`crate::daemon::start_with`]).
pub struct ChunksSetup {
    pub meta: MetaHandle,
    pub config: ChunksConfig,
    /// The bound chunkserver port. Take it to serve chunkservers; if left, the master does
    /// not listen for chunkservers.
    pub listener: Option<TcpListener>,
    /// Who leads, and where every master is (sent to chunkservers in `Hello`).
    pub leadership: Leadership,
    /// This master's `cluster_id`: a chunkserver configured for another is refused.
    pub cluster_id: String,
    /// The cluster secret chunkservers must prove first (`None`: no `secret_file`).
    pub key: Option<mfsha_proto::cluster_key::ClusterKey>,
    pub shutdown: Shutdown,
}

/// Builds the chunk service once the Raft node runs.
pub type ChunksFactory = Box<dyn FnOnce(&mut ChunksSetup) -> Arc<dyn ChunkService> + Send>;

/// Builds the registry for [`crate::daemon::start_with`]: serves the chunkserver port and
/// runs the engine until shutdown.
pub fn factory() -> ChunksFactory {
    Box::new(|setup: &mut ChunksSetup| -> Arc<dyn ChunkService> {
        let meta: Arc<dyn ChunkMeta> = Arc::new(setup.meta.clone());
        let registry = ChunkRegistry::new(meta, setup.config.clone());
        if let Some(listener) = setup.listener.take() {
            let serve = listener::serve(
                listener,
                registry.clone(),
                listener::Greeting {
                    leadership: setup.leadership.clone(),
                    cluster: setup.cluster_id.clone(),
                    key: setup.key.clone(),
                },
                setup.shutdown.clone(),
            );
            tokio::spawn(serve);
        }
        tokio::spawn(registry.clone().run_engine(setup.shutdown.clone()));
        registry
    })
}
