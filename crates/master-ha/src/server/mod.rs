//! The master's client-facing service: listeners, connections and request dispatch.
//!
//! * [`listener`] accepts connections (bounded in number) and stops accepting on shutdown,
//!   then waits for requests already running.
//! * [`client`] answers one [`Request`](mfsha_proto::client::Request): reads come from the
//!   applied state, mutations become a [`mfsha_meta::Entry`] proposed through Raft and are
//!   answered only once committed, applied and durable.
//! * [`session`] opens and resumes client sessions and remembers which are connected.
//! * [`expiry`] ends sessions no connection carried for the session sustain time.
//! * [`locks`] keeps file locks (POSIX byte ranges, flock) in the leader's memory.
//! * [`opens`] keeps which session holds which file open, in the leader's memory too, and
//!   frees unlinked files nobody holds.
//! * [`status`] assembles `ClusterStatus` for `mfsha status`.
//! * [`leadership`] knows who leads and where each master is (leader hints), and tells
//!   connections when this master stops leading so they are closed.
//! * [`trash`] pages through the trash for `mfsha trash list`.
//! * [`membership`] adds and removes members of the master group (`mfsha member add|remove`).
//! * [`logger`] streams a snapshot and then the applied changelog to metaloggers.
//!
//! Chunk copies are not replicated metadata: which chunkserver holds which copy lives in the
//! chunks registry, reached through the [`ChunkService`] trait so that this module does not
//! depend on how the registry is built.

pub mod access;
pub mod client;
pub mod expiry;
pub mod leadership;
pub mod listener;
pub mod locks;
pub mod logger;
pub mod membership;
pub mod opens;
pub mod perm;
pub mod session;
pub mod status;
pub mod trash;

use crate::node::MetaHandle;
use mfsha_meta::Outcome;
use mfsha_proto::client::{ChunkserverStatus, CopyInfo};
use mfsha_proto::types::{ChunkId, ServerAddr, Status};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use leadership::{AddressBook, Leadership};
pub use listener::{ClientListener, Shutdown};
pub use locks::LockTable;
pub use session::Sessions;

/// Runs `round` every `period` until `shutdown`; a round under way when it comes is dropped.
/// The leader's periodic work (session expiry, freeing unlinked files) runs this way on every
/// master, each round proposing only where this master leads.
pub async fn every<F, Fut>(period: std::time::Duration, shutdown: Shutdown, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.triggered() => return,
        }
        tokio::select! {
            () = round() => {}
            () = shutdown.triggered() => return,
        }
    }
}

/// A boxed future, so [`ChunkService`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the client service needs from the chunk registry (implemented by `crate::chunks`).
pub trait ChunkService: Send + Sync {
    /// Servers holding a valid copy of `chunk_id` at `version`, healthiest first.
    fn locations(&self, chunk_id: ChunkId, version: u32) -> Vec<ServerAddr>;

    /// Servers to hold a new chunk with `goal` copies, in chain order, none in `exclude`.
    /// Fewer than `goal` if fewer servers can take it; empty if none can.
    fn choose_chain(&self, goal: u8, exclude: &[ServerAddr]) -> Vec<ServerAddr>;

    /// Every copy of `chunk_id` the registry knows of, valid or not, with its state.
    fn copies(&self, chunk_id: ChunkId) -> Vec<CopyInfo>;

    /// Acts on a committed chunk operation before the client is answered:
    /// for `Outcome::ChunkWrite` it creates / duplicates / bumps the copies and returns the
    /// write chain; for `Outcome::Truncated` it cuts the copies and returns an empty chain.
    fn prepare_write<'a>(
        &'a self,
        outcome: &'a Outcome,
    ) -> BoxFuture<'a, Result<Vec<ServerAddr>, Status>>;

    /// A client finished (or gave up on) writing `chunk_id`: the chunk is no longer being
    /// written, and on failure its copies may need checking.
    fn write_end(&self, chunk_id: ChunkId, ok: bool);

    /// Total and available bytes over all connected chunkservers.
    fn fs_stat(&self) -> (u64, u64);

    /// Connected chunkservers, for `mfsha status`.
    fn chunkservers(&self) -> Vec<ChunkserverStatus>;

    /// Chunks counted by copy health, given how many chunks the metadata has.
    fn copy_health(&self, chunks_total: u64) -> CopyHealth;
    /// Re-replication and drains under way, with their progress.
    fn long_work(&self) -> Vec<mfsha_proto::client::LongWork> {
        Vec::new()
    }

    /// Commands sent to chunkservers and not yet answered, and how many were started.
    fn command_counts(&self) -> CommandCounts {
        CommandCounts::default()
    }
}

/// The replication engine's work: commands in flight by kind, and totals since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandCounts {
    pub replicating: u64,
    pub deleting: u64,
    /// Creations, version changes and duplications (the write path's commands).
    pub other: u64,
    pub replications_started: u64,
    pub deletions_started: u64,
}

/// Chunks counted by how their valid copies compare with their goal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyHealth {
    /// Exactly one valid copy left.
    pub endangered: u64,
    /// Fewer valid copies than the goal (endangered included).
    pub undergoal: u64,
    /// More valid copies than the goal.
    pub overgoal: u64,
    /// No valid copy at all.
    pub missing: u64,
    /// Exactly the goal of valid copies.
    pub stable: u64,
    /// Short of their goal while a copy sits on a disk marked for removal (counted in
    /// `undergoal` too): what a drain still has to copy.
    pub draining: u64,
    /// Every chunk by goal and valid copies (see [`mfsha_proto::client::ChunkMatrix`]).
    pub matrix: mfsha_proto::client::ChunkMatrix,
}

/// The chunk service of a master with no chunkserver registry attached: it knows no copies,
/// has no space and cannot place a chunk. Metadata-only operation (and the metadata
/// benchmark) runs against it; any data access answers `NoChunkservers`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoChunkservers;

impl ChunkService for NoChunkservers {
    fn locations(&self, _chunk_id: ChunkId, _version: u32) -> Vec<ServerAddr> {
        Vec::new()
    }

    fn choose_chain(&self, _goal: u8, _exclude: &[ServerAddr]) -> Vec<ServerAddr> {
        Vec::new()
    }

    fn copies(&self, _chunk_id: ChunkId) -> Vec<CopyInfo> {
        Vec::new()
    }

    fn prepare_write<'a>(
        &'a self,
        _outcome: &'a Outcome,
    ) -> BoxFuture<'a, Result<Vec<ServerAddr>, Status>> {
        Box::pin(async { Err(Status::NoChunkservers) })
    }

    fn write_end(&self, _chunk_id: ChunkId, _ok: bool) {}

    fn fs_stat(&self) -> (u64, u64) {
        (0, 0)
    }

    fn chunkservers(&self) -> Vec<ChunkserverStatus> {
        Vec::new()
    }

    /// With no chunkserver, every chunk the metadata names has no copy.
    fn copy_health(&self, chunks_total: u64) -> CopyHealth {
        CopyHealth { missing: chunks_total, ..CopyHealth::default() }
    }
}

/// Everything a client request handler needs, shared by all connections.
pub struct Service {
    pub meta: MetaHandle,
    pub chunks: Arc<dyn ChunkService>,
    pub sessions: Sessions,
    /// File locks held by clients (leader memory only).
    pub locks: LockTable,
    /// Files held open by clients (leader memory only).
    pub opens: opens::OpenTable,
    /// Addresses of the other masters, for `ClusterStatus::peers`.
    pub peers: Vec<String>,
    /// Connected metaloggers, for `ClusterStatus::loggers` (filled by the logger listener).
    pub loggers: parking_lot::Mutex<Vec<String>>,
    /// The last index each connected metalogger acknowledged as stored, by its `loggers`
    /// entry (metrics: the loggers' lag).
    pub logger_acks: parking_lot::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Who leads and where the masters are; connections close when this master steps down.
    pub leadership: Leadership,
    /// This master's `cluster_id`: metaloggers of another cluster are refused, and clients
    /// are told it (in `WhoLeads` and status answers) so they can refuse this master.
    pub cluster_id: String,
    /// The VIP fence, when the configuration has a `vip:` section.
    pub vip: Option<Arc<crate::fence::VipFence>>,
    /// Client request counts and latencies by type (`/metrics`).
    pub client_metrics: crate::metrics::ClientMetrics,
    /// Snapshot streams on the peer port (none in a group of one).
    pub transfers: mfsha_raft::transport::transfers::Transfers,
    /// The exports in force (`exports:` in the config; `None`: every client may do
    /// everything, as before exports existed). Replaced whole by a reload.
    pub exports: parking_lot::RwLock<Option<Arc<crate::exports::Exports>>>,
    /// Where the exports are read from (`exports:` in the config).
    pub exports_file: Option<std::path::PathBuf>,
    /// The cluster secret metaloggers must prove first (`secret_file:`; `None`: none).
    pub key: Option<mfsha_proto::cluster_key::ClusterKey>,
    /// Files one session may hold open at once (`client.max_open_files_per_session`).
    pub max_open_files_per_session: usize,
}

impl Service {
    pub fn new(
        meta: MetaHandle,
        chunks: Arc<dyn ChunkService>,
        peers: Vec<String>,
        leadership: Leadership,
        cluster_id: String,
    ) -> Self {
        Service {
            meta,
            chunks,
            sessions: Sessions::new(),
            locks: LockTable::new(),
            opens: opens::OpenTable::default(),
            peers,
            loggers: parking_lot::Mutex::new(Vec::new()),
            logger_acks: parking_lot::Mutex::new(std::collections::BTreeMap::new()),
            leadership,
            cluster_id,
            vip: None,
            client_metrics: crate::metrics::ClientMetrics::default(),
            transfers: Default::default(),
            exports: parking_lot::RwLock::new(None),
            exports_file: None,
            key: None,
            max_open_files_per_session: crate::config::ClientLimits::default()
                .max_open_files_per_session,
        }
    }

    /// Re-reads the exports file (SIGHUP, `mfsha exports reload`) and returns how many lines
    /// it has. A file with an error leaves the exports in force as they were, and the error
    /// (file:line:column) is logged and returned. Sessions get the new exports at their next
    /// `Hello` (see `access`). `Ok(None)`: the config names no exports file.
    pub fn reload_exports(&self) -> Result<Option<usize>, crate::exports::ExportsError> {
        let Some(path) = &self.exports_file else {
            tracing::info!("reload asked for, but the config names no exports file; nothing to do");
            return Ok(None);
        };
        match crate::exports::Exports::load(path) {
            Ok(exports) => {
                let lines = exports.rules.len();
                tracing::info!(file = %path.display(), lines,
                    "exports reloaded: they apply to every Hello from now on");
                *self.exports.write() = Some(Arc::new(exports));
                Ok(Some(lines))
            }
            Err(e) => {
                tracing::error!(error = %e, "exports not reloaded: the file has an error; the \
                    exports read before stay in force");
                Err(e)
            }
        }
    }
}
