/*!
The mfsha chunkserver: where file data lives.

This crate owns the chunk files on the local disks and everything that touches them, following
the data path:

* [`config`] — the YAML configuration (data directories, master addresses, listen address,
  labels, scrub rate, fsync policy).
* [`format`] — the on-disk layout of one chunk file (header, CRC32C table, 64 KiB blocks), the
  `XX/chunk_<id>_<version>.mfs` naming, and the torn-write and version-change rules.
* [`disk`] — one data directory: its 256 subdirectories, lock, space, health, startup scan.
* [`store`] — the chunk index across disks and every operation on chunk files; classifies
  failures (disk I/O error → disk damaged and its chunks lost; CRC mismatch → that copy
  damaged).
* [`server`] — the data port (9422): verified reads, chain writes, chain syncs.
* [`master_link`] — registration, heartbeats, reports and the master's commands (create,
  version change, delete, replicate, truncate, duplicate); following the leader.
* [`fence`] — the highest master term obeyed, on disk: commands of deposed masters are refused.
* [`scrub`] — background CRC verification at a configured rate.
* [`metrics`] — the Prometheus metrics at `/metrics` on `http` (9427): per-disk space,
  chunks, bytes, CRC errors, damage; data requests by type (the server is `mfsha-ops`).

It must never depend on raft, rocksdb or the metadata model (`mfsha-meta`): a chunkserver
knows chunks by id and version only; which file a chunk belongs to and which version is
current is the master's business. Keeping it that way lets chunkservers keep serving data
through a master failover, and keeps this crate small enough to reason about byte by byte.

Entry points: [`run`] (the daemon, until SIGTERM/SIGINT) and [`Chunkserver::start`] (the
same, controlled by the caller — tests and `mfsha demo`).
*/

pub mod config;
pub mod disk;
pub mod fence;
pub mod format;
pub mod master_link;
pub mod metrics;
pub mod scrub;
pub mod server;
pub mod store;

pub use config::ChunkserverConfig;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the chunkserver could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ChunkserverError {
    #[error("configuration: {key}: {reason}")]
    Config { key: String, reason: String },
    #[error("{0}")]
    Disk(String),
    #[error("cannot listen on {addr}: {cause}; is another chunkserver running there?")]
    Bind { addr: SocketAddr, cause: std::io::Error },
    #[error("cannot install the signal handler: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Http(#[from] mfsha_ops::OpsError),
}

/// The operator's HTTP port.
const HTTP: mfsha_ops::Endpoint = mfsha_ops::Endpoint { what: "chunkserver metrics", key: "http" };

/// The tasks a chunkserver is useless without, in the order `start` spawns them first (the
/// scrubbers and housekeeping after them may end by design: scrub is off at rate 0).
const ESSENTIAL_TASKS: [&str; 2] = ["the data port listener", "the master link"];

/// Write descriptors idle this long are fsynced and closed.
const IDLE_CLOSE: Duration = Duration::from_secs(30);

/// A running chunkserver.
pub struct Chunkserver {
    addr: SocketAddr,
    http_addr: SocketAddr,
    store: Arc<store::Store>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Chunkserver {
    /// Opens the disks, scans them, binds the data port and starts the master link, scrub
    /// and housekeeping tasks.
    pub async fn start(config: ChunkserverConfig) -> Result<Chunkserver, ChunkserverError> {
        config::validate(&config)
            .map_err(|(key, reason)| ChunkserverError::Config { key: key.to_string(), reason })?;
        let dirs = config.data_dirs.clone();
        let fsync_every_write = config.fsync == config::FsyncPolicy::EveryWrite;
        let leave_free = config.leave_free_mib << 20;
        let (store, server_id, fence) =
            tokio::task::spawn_blocking(move || open_store(&dirs, fsync_every_write, leave_free))
                .await
                .map_err(|e| ChunkserverError::Disk(format!("disk scan task failed: {e}")))??;
        let fence = Arc::new(fence);
        let store = Arc::new(store);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|cause| ChunkserverError::Bind { addr: config.listen, cause })?;
        let addr = listener
            .local_addr()
            .map_err(|cause| ChunkserverError::Bind { addr: config.listen, cause })?;
        let http = mfsha_ops::bind(HTTP, config.http).await?;
        let http_addr = http.local_addr();
        let key =
            mfsha_proto::cluster_key::load_configured(config.secret_file.as_deref(), "chunkserver")
                .map_err(|e| ChunkserverError::Config {
                    key: "secret_file".into(),
                    reason: e.to_string(),
                })?;
        let (shutdown, watch_rx) = watch::channel(false);
        let peers = Arc::new(server::Peers::new(key.clone()));
        let metrics = metrics::DataMetrics::default();
        let router = mfsha_ops::metrics_routes(metrics::exporter(store.clone(), &metrics));
        let service = Arc::new(server::DataService {
            store: store.clone(),
            peers: peers.clone(),
            metrics,
            key: key.clone(),
        });
        let mut tasks = vec![tokio::spawn(server::serve_data(listener, service, watch_rx.clone()))];
        let link = master_link::LinkConfig {
            masters: config.master.clone(),
            cluster: config.cluster_id.clone(),
            key,
            host: config.advertise_host.clone().or_else(|| {
                (!config.listen.ip().is_unspecified()).then(|| config.listen.ip().to_string())
            }),
            port: addr.port(),
            labels: config.labels.clone(),
            server_id,
            heartbeat: Duration::from_millis(config.heartbeat_ms),
        };
        tasks.push(tokio::spawn(master_link::run_link(
            store.clone(),
            peers,
            link,
            fence,
            watch_rx.clone(),
        )));
        let rate = config.scrub_mib_per_sec * 1024.0 * 1024.0;
        for disk in 0..store.disks.len() {
            tasks.push(tokio::spawn(scrub::scrub_disk(
                store.clone(),
                disk,
                rate,
                watch_rx.clone(),
            )));
        }
        let mut stop_http = watch_rx.clone();
        tasks.push(tokio::spawn(close_idle_loop(store.clone(), watch_rx)));
        // After the essential tasks: `alive` finds those by their place.
        let stopped = async move {
            let _stopped_or_gone = stop_http.wait_for(|stop| *stop).await;
        };
        tasks.push(http.serve(router, stopped).task);
        tracing::info!(%addr, server_id = format_args!("{server_id:016x}"), masters = ?config.master,
            disks = store.disks.len(), "chunkserver started");
        Ok(Chunkserver { addr, http_addr, store, shutdown, tasks })
    }

    /// The bound data address (the real port when the config said port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound HTTP address (`/metrics`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The systemd watchdog's probe: the data port and the master link still run (a panic
    /// ends a task, not the process). Asked from the runtime, so an answer at all also means
    /// the runtime schedules tasks.
    pub fn alive(&self) -> Result<(), String> {
        let ended = ESSENTIAL_TASKS.iter().zip(&self.tasks).find(|(_, task)| task.is_finished());
        match ended {
            Some((name, _)) => Err(format!("{name} task has ended")),
            None => Ok(()),
        }
    }

    /// The chunk store (tests inspect it).
    pub fn store(&self) -> &Arc<store::Store> {
        &self.store
    }

    /// Stops accepting, ends the master link, and fsyncs every chunk still open for writing.
    pub async fn shutdown(self) {
        // Receivers live in the tasks; a send error only means they all ended already.
        let _ended = self.shutdown.send(true);
        for task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                tracing::warn!("a chunkserver task did not stop within 5 s");
            }
        }
        // Requests still running hold the store (and so the disk locks); let them finish.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.store) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let store = self.store.clone();
        let flushed =
            tokio::task::spawn_blocking(move || store.close_idle_blocking(Duration::ZERO)).await;
        if let Err(e) = flushed {
            tracing::error!(error = %e, "final fsync of open chunks failed");
        }
        tracing::info!("chunkserver stopped");
    }
}

/// Opens every data directory. One that cannot be opened is kept as damaged (reported to
/// the master, its chunks re-replicated from other servers) while the others serve; the
/// server refuses to start only when no directory is usable, or one is in use by another
/// chunkserver.
fn open_store(
    dirs: &[config::DataDir],
    fsync_every_write: bool,
    leave_free: u64,
) -> Result<(store::Store, u64, fence::TermFence), ChunkserverError> {
    let mut disks = Vec::new();
    let mut failures = Vec::new();
    for dir in dirs {
        match disk::Disk::open(dir) {
            Ok(disk) => disks.push(disk.with_leave_free(leave_free)),
            Err(e @ disk::OpenError::InUse(_)) => {
                return Err(ChunkserverError::Disk(e.to_string()))
            }
            Err(disk::OpenError::Unusable(why)) => {
                tracing::error!(error = %why,
                    "data directory unusable: marked damaged, the other disks serve on (fix or replace it, then restart)");
                failures.push(why);
                disks.push(disk::Disk::unusable(dir));
            }
        }
    }
    if disks.iter().all(|d| d.is_damaged()) {
        let why = failures.join("; ");
        return Err(ChunkserverError::Disk(format!("no usable data directory: {why}")));
    }
    let server_id = disk::server_id(&disks).map_err(|e| {
        ChunkserverError::Disk(format!("cannot read or write the server id file: {e}"))
    })?;
    let healthy: Vec<_> =
        disks.iter().filter(|d| !d.is_damaged()).map(|d| d.path.clone()).collect();
    let fence =
        fence::TermFence::open(&healthy).map_err(|e| ChunkserverError::Disk(e.to_string()))?;
    Ok((store::Store::open(disks, fsync_every_write), server_id, fence))
}

async fn close_idle_loop(store: Arc<store::Store>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
        let s = store.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || s.close_idle_blocking(IDLE_CLOSE)).await
        {
            tracing::error!(error = %e, "closing idle chunk files failed");
        }
    }
}

/// Runs the chunkserver until SIGTERM or SIGINT, then shuts down cleanly.
pub async fn run(config: ChunkserverConfig) -> Result<(), ChunkserverError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(ChunkserverError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ChunkserverError::Signal)?;
    let server = Chunkserver::start(config).await?;
    // Disks scanned and the data port bound: what systemd's Type=notify waits for.
    mfsha_sd::ready();
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        never = mfsha_sd::watchdog(|| server.alive()) => match never {},
    }
    mfsha_sd::stopping();
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests;
