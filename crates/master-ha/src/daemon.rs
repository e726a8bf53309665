//! The master process: start the Raft node, open the listeners, serve until SIGTERM/SIGINT,
//! then stop in order.
//!
//! Startup order: bind every listener first (so a second master on the same ports fails in
//! milliseconds, before it touches the data directory), then open the store and start the
//! Raft thread, then accept clients. Shutdown order: stop accepting, let requests already
//! running finish (bounded), stop the Raft thread (which finishes its current Ready: nothing
//! acknowledged is lost), join it.

use crate::chunks::{ChunksFactory, ChunksSetup};
use crate::config::{self, Advertise, MasterConfig};
use crate::fence::{Rules, VipFence};
use crate::node::MetaHandle;
use crate::server::leadership::{AddressBook, Bound};
use crate::server::{logger, ClientListener, Leadership, Service, Shutdown};
use mfsha_meta::{Member, State};
use mfsha_proto::cluster_key::ClusterKey;
use mfsha_raft::transport::tcp::{self, PeerIdentity, PeerPolicy, TcpTransport};
use mfsha_raft::{RaftConfig, Transport};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::Instrument;

/// How long shutdown waits for running client requests before stopping Raft anyway.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Why the master could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot listen for {what} on {addr}: {cause} (is another master running? check listen.{what} in the config)")]
    Bind { what: &'static str, addr: SocketAddr, cause: std::io::Error },
    #[error("cannot start the Raft node for data directory {data_dir}: {reason}")]
    Node { data_dir: PathBuf, reason: String },
    #[error("the Raft thread panicked; see the log above, then restart the master (the store is consistent at its last applied index)")]
    RaftThreadPanicked,
    #[error("cannot install the {signal} handler: {cause}")]
    Signal { signal: &'static str, cause: std::io::Error },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Vip(#[from] mfsha_vip::VipError),
    #[error(transparent)]
    Http(#[from] mfsha_ops::OpsError),
    #[error(
        "{0} (fix the exports file, or remove `exports:` from the config to export everything)"
    )]
    Exports(#[from] crate::exports::ExportsError),
    #[error("{0} (or remove `secret_file:` from the config to run without a cluster secret)")]
    Key(#[from] mfsha_proto::cluster_key::KeyFileError),
}

/// A running master (in this process).
pub struct Master {
    /// The client address actually bound (port 0 in the config is resolved here).
    pub client_addr: SocketAddr,
    /// The HTTP address actually bound (`/metrics`).
    pub http_addr: SocketAddr,
    pub service: Arc<Service>,
    shutdown: Shutdown,
    client_task: tokio::task::JoinHandle<()>,
    in_flight: Arc<crate::server::listener::InFlight>,
    raft_thread: std::thread::JoinHandle<()>,
    /// The VIP fence, which releases the VIP when shutdown is triggered.
    fence_task: Option<tokio::task::JoinHandle<()>>,
    node_id: u64,
}

/// The operator's HTTP port: `/metrics` now, the status page next.
const HTTP: mfsha_ops::Endpoint =
    mfsha_ops::Endpoint { what: "master metrics and status page", key: "listen.http" };

/// Starts a master with its chunk registry: serves chunkservers and runs the replication engine.
pub async fn start(config: MasterConfig) -> Result<Master, DaemonError> {
    start_with(config, crate::chunks::factory()).await
}

/// Starts a master; `chunks` builds the chunk registry from the running node.
pub async fn start_with(
    config: MasterConfig,
    chunks: ChunksFactory,
) -> Result<Master, DaemonError> {
    // Before anything binds: a bad exports file stops the master with its file:line:column.
    let exports = match &config.exports {
        Some(path) => Some(Arc::new(crate::exports::Exports::load(path)?)),
        None => None,
    };
    let key = mfsha_proto::cluster_key::load_configured(config.secret_file.as_deref(), "master")?;
    let client_listener = bind("client", config.listen.client).await?;
    let chunkserver_listener = bind("chunkserver", config.listen.chunkserver).await?;
    let logger_listener = bind("logger", config.listen.logger).await?;
    let bound = Bound {
        client: local_addr("client", &client_listener, config.listen.client)?,
        chunkserver: local_addr("chunkserver", &chunkserver_listener, config.listen.chunkserver)?,
        logger: local_addr("logger", &logger_listener, config.listen.logger)?,
    };
    let client_addr = bound.client;
    let http_listener = mfsha_ops::bind(HTTP, config.listen.http).await?;
    let http_addr = http_listener.local_addr();
    // A group of one has no peer port: nobody would call it.
    let peer_listener = match config.peers.is_empty() {
        true => None,
        false => Some(bind("peer", config.listen.peer).await?),
    };
    // Before the store is touched: a VIP that cannot be held stops the master at once, and a
    // VIP left on the interface (this master is not leader yet) is removed.
    let vip = match &config.vip {
        Some(vip) => Some(mfsha_vip::Vip::start(vip.clone()).await?),
        None => None,
    };
    let shutdown = Shutdown::new();
    let (meta, raft_thread, policy) = start_node(&config, key.clone(), &shutdown).await?;
    let transfers = policy.as_ref().map(|p| p.transfers.clone()).unwrap_or_default();
    let book = AddressBook::from_config(&config, bound);
    tracing::info!(masters = ?book.describe(), "address book (from the configuration)");
    let leadership = Leadership::watch(meta.clone(), book, shutdown.clone());
    let fence = vip.map(VipFence::new);
    let fence_task = fence.as_ref().map(|fence| {
        let (rules, book) = (fence_rules(&config), leadership.clone());
        let run = fence.clone().run(meta.clone(), rules, book, shutdown.clone());
        tokio::spawn(run.in_current_span())
    });
    if let (Some(listener), Some(policy)) = (peer_listener, policy) {
        let serve = tcp::serve_peers(listener, meta.raft().clone(), policy, shutdown.clone());
        tokio::spawn(serve.in_current_span());
    }
    let mut setup = ChunksSetup {
        meta: meta.clone(),
        config: config.chunks.clone(),
        listener: Some(chunkserver_listener),
        leadership: leadership.clone(),
        cluster_id: config.cluster_id.clone(),
        key: key.clone(),
        shutdown: shutdown.clone(),
    };
    let chunk_service = chunks(&mut setup);
    // Leader-only inside: every master runs it, only the leader's rounds propose.
    let purger = crate::trash::run(meta.clone(), config.trash.clone(), shutdown.clone());
    tokio::spawn(purger.in_current_span());
    if setup.listener.is_some() {
        tracing::warn!(addr = %config.listen.chunkserver,
            "no chunk registry in this master; not listening for chunkservers (data I/O answers NoChunkservers)");
    }
    let peers = config.peers.iter().map(|p| format!("{}@{}", p.id, p.addr)).collect();
    let mut service =
        Service::new(meta, chunk_service, peers, leadership, config.cluster_id.clone());
    service.vip = fence;
    service.transfers = transfers;
    if let Some(exports) = &exports {
        tracing::info!(file = %exports.file.display(), lines = exports.rules.len(), "exports in force");
    }
    service.exports = parking_lot::RwLock::new(exports);
    service.exports_file = config.exports.clone();
    service.key = key;
    service.max_open_files_per_session = config.client.max_open_files_per_session;
    let service = Arc::new(service);
    let router = mfsha_ops::metrics_routes(crate::metrics::exporter(&service))
        .merge(crate::web::routes(service.clone(), page_links(&config, http_addr.port())));
    let stop_http = shutdown.clone();
    http_listener.serve(router, async move { stop_http.triggered().await });
    let listener = ClientListener::new(client_listener, service.clone(), config.client.clone());
    let in_flight = listener.in_flight();
    let client_task = tokio::spawn(listener.run(shutdown.clone()).in_current_span());
    let sustain = Duration::from_secs(config.client.session_sustain_secs);
    let expiry = crate::server::expiry::run(service.clone(), sustain, shutdown.clone());
    tokio::spawn(expiry.in_current_span());
    let freeing = crate::server::opens::run(service.clone(), shutdown.clone());
    tokio::spawn(freeing.in_current_span());
    let loggers = logger::serve_loggers(logger_listener, service.clone(), shutdown.clone());
    tokio::spawn(loggers.in_current_span());
    tracing::info!(%client_addr, "master serving clients");
    Ok(Master {
        client_addr,
        http_addr,
        service,
        shutdown,
        client_task,
        in_flight,
        raft_thread,
        fence_task,
        node_id: config.node_id,
    })
}

/// Where the other masters' status pages are: those the configuration names, else (see
/// [`crate::web::PageLinks`]) a master's client host with this master's HTTP port.
fn page_links(config: &MasterConfig, http_port: u16) -> crate::web::PageLinks {
    let configured = config.peers.iter().filter_map(|p| Some((p.id, p.http.clone()?))).collect();
    crate::web::PageLinks { http_port, configured }
}

/// What the VIP fence needs from the configuration: which members are masters (a voter
/// with a client address; the witness has none).
fn fence_rules(config: &MasterConfig) -> Rules {
    let peers = config.peers.iter().filter(|p| !p.learner && p.client.is_some()).map(|p| p.id);
    let masters = std::iter::once(config.node_id).chain(peers).collect();
    Rules { masters }
}

fn local_addr(
    what: &'static str,
    listener: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, DaemonError> {
    listener.local_addr().map_err(|cause| DaemonError::Bind { what, addr, cause })
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(addr).await.map_err(|cause| DaemonError::Bind { what, addr, cause })
}

/// The Raft settings of this master, from its configuration.
pub fn raft_config(config: &MasterConfig) -> RaftConfig {
    let mut learners: Vec<u64> = config.peers.iter().filter(|p| p.learner).map(|p| p.id).collect();
    learners.sort_unstable();
    let peers = config.peers.iter().map(|p| (p.id, p.addr.clone())).collect();
    let members = mfsha_raft::Members { peers, learners };
    let data_dir = config.data_dir.clone();
    RaftConfig::new(config.node_id, &config.cluster_id, data_dir, members, &config.raft, false)
}

/// Makes a new metadata group in this master's empty data directory (`mfsha master bootstrap`):
/// the only way a group is born. Every configured member starts as a voter (or a learner).
pub fn bootstrap(config: &MasterConfig) -> Result<(), DaemonError> {
    let data_dir = config.data_dir.clone();
    let index = mfsha_raft::store::BOOTSTRAP_INDEX;
    let state = <State as mfsha_raft::StateMachine>::bootstrap(index).with_members(members(config));
    let term = mfsha_raft::store::BOOTSTRAP_TERM;
    mfsha_raft::driver::bootstrap_with::<State>(&raft_config(config), state, term)
        .map_err(|e| DaemonError::Node { data_dir, reason: e.to_string() })
}

/// The first replicated address book: this master and every configured peer. A port that
/// listens on every interface is recorded with this host's name (`advertise` overrides).
fn members(config: &MasterConfig) -> BTreeMap<u64, Member> {
    let (own, listen) = (&config.advertise, &config.listen);
    let host = crate::server::leadership::host_name();
    let at = |configured: &Option<String>, addr| Advertise::resolve(configured, addr, &host);
    let me = Member {
        peer: at(&own.peer, listen.peer),
        client: Some(at(&own.client, listen.client)),
        chunkserver: Some(at(&own.chunkserver, listen.chunkserver)),
        logger: Some(at(&own.logger, listen.logger)),
    };
    let peer = |p: &config::PeerConfig| Member {
        peer: p.addr.clone(),
        client: p.client.clone(),
        chunkserver: p.chunkserver.clone(),
        logger: p.logger.clone(),
    };
    let peers = config.peers.iter().map(|p| (p.id, peer(p)));
    std::iter::once((config.node_id, me)).chain(peers).collect()
}

/// Makes a new group in this master's data directory from `state`, the metadata of a lost
/// group (`mfsha meta restore`), starting at `term`. The data directory must be empty or
/// missing: a restore never overwrites anything.
pub fn bootstrap_from(config: &MasterConfig, state: State, term: u64) -> Result<(), DaemonError> {
    let data_dir = config.data_dir.clone();
    let not_empty = |reason: String| DaemonError::Node { data_dir: data_dir.clone(), reason };
    let empty = match std::fs::read_dir(&config.data_dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(not_empty(format!("cannot be read: {e}"))),
    };
    if !empty {
        return Err(not_empty(
            "is not empty; a restore writes only into an empty or missing data directory \
             (move the old one aside first)"
                .into(),
        ));
    }
    let state = state.rebased(mfsha_raft::store::BOOTSTRAP_INDEX);
    mfsha_raft::driver::bootstrap_with::<State>(&raft_config(config), state, term)
        .map_err(|e| DaemonError::Node { data_dir: config.data_dir.clone(), reason: e.to_string() })
}

/// Opens the store and starts the Raft thread (blocking work, so off the async workers).
/// The node, its thread, and who may call its peer port (`None` for a group of one).
async fn start_node(
    config: &MasterConfig,
    key: Option<ClusterKey>,
    shutdown: &Shutdown,
) -> Result<(MetaHandle, std::thread::JoinHandle<()>, Option<PeerPolicy>), DaemonError> {
    let raft = raft_config(config);
    let data_dir = config.data_dir.clone();
    let node_error = |reason: String| DaemonError::Node { data_dir: data_dir.clone(), reason };
    let (transport, policy): (Box<dyn Transport>, _) = match raft.peers.is_empty() {
        true => (Box::new(mfsha_raft::NoPeers), None),
        false => {
            let (node_id, cluster_id) = (raft.node_id, raft.cluster_id.clone());
            let me = PeerIdentity { node_id, cluster_id, key };
            let transport = TcpTransport::start(me, &raft.peers, shutdown.clone());
            let policy = transport.policy(mfsha_raft::MAX_PEER_MESSAGE_BYTES as u64);
            (Box::new(transport), Some(policy))
        }
    };
    let (handle, thread) =
        tokio::task::spawn_blocking(move || mfsha_raft::driver::start::<State>(raft, transport))
            .await
            .map_err(|e| node_error(format!("start-up task failed: {e}")))?
            .map_err(|e| node_error(e.to_string()))?;
    Ok((MetaHandle::new(handle), thread, policy))
}

impl Master {
    /// Resolves once this master has applied its own removal from the group (its Raft node
    /// has stopped); never otherwise.
    pub async fn removed(&self) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while !self.service.meta.raft().removed() {
            tick.tick().await;
        }
    }

    /// The systemd watchdog's probe: the Raft thread ticked since the last round (`ticks`
    /// keeps the count seen then) and the client listener still runs. Asked from the runtime,
    /// so an answer at all also means the runtime schedules tasks.
    pub fn alive(&self, ticks: &mut Option<u64>) -> Result<(), String> {
        let now = self.service.meta.stats().ticks;
        let before = ticks.replace(now);
        if before.is_some_and(|before| now <= before) {
            return Err(format!(
                "the Raft thread has not ticked since the last round (ticks {now})"
            ));
        }
        if self.client_task.is_finished() {
            return Err("the client listener task has ended".into());
        }
        Ok(())
    }

    /// Re-reads the exports file (SIGHUP). A file with an error leaves the exports in force
    /// as they were, and the error (file:line:column) is logged and returned. Sessions get
    /// the new exports at their next `Hello` (see `server::access`).
    pub fn reload_exports(&self) -> Result<(), crate::exports::ExportsError> {
        self.service.reload_exports().map(|_| ())
    }

    /// This master's Raft node id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Stops in order: stop accepting, drain running requests, stop Raft, join its thread.
    pub async fn stop(self) -> Result<(), DaemonError> {
        tracing::info!("shutting down: no new client requests");
        self.shutdown.trigger();
        if let Some(fence) = self.fence_task {
            if let Err(e) = fence.await {
                tracing::error!(error = %e, "VIP fence task failed");
            }
        }
        if let Err(e) = self.client_task.await {
            tracing::error!(error = %e, "client listener task failed");
        }
        let left = self.in_flight.wait_idle(DRAIN_LIMIT).await;
        if left > 0 {
            tracing::warn!(
                left,
                limit_ms = DRAIN_LIMIT.as_millis() as u64,
                "client requests still running at the drain limit; they will fail with Unavailable"
            );
        }
        self.service.meta.shutdown();
        let thread = self.raft_thread;
        let joined = tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|_| DaemonError::RaftThreadPanicked)?;
        joined.map_err(|_| DaemonError::RaftThreadPanicked)?;
        tracing::info!("master stopped");
        Ok(())
    }
}

/// Runs a master until SIGTERM or SIGINT, then stops it cleanly.
pub async fn run(config: MasterConfig) -> Result<(), DaemonError> {
    let span = tracing::info_span!("master", node = config.node_id);
    async move {
        tracing::info!(%config, "starting");
        let mut terminate = signal(tokio::signal::unix::SignalKind::terminate(), "SIGTERM")?;
        let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt(), "SIGINT")?;
        let mut hangup = signal(tokio::signal::unix::SignalKind::hangup(), "SIGHUP")?;
        let master = start(config).await?;
        mfsha_sd::ready();
        let mut ticks = None;
        let mut watchdog = Box::pin(mfsha_sd::watchdog(|| master.alive(&mut ticks)));
        // The watchdog borrows the master until this loop ends.
        loop {
            tokio::select! {
                _ = terminate.recv() => { tracing::info!("SIGTERM received"); break }
                _ = interrupt.recv() => { tracing::info!("SIGINT received"); break }
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP received: re-reading the exports file");
                    let _ = master.reload_exports(); // logged; the old exports stay
                }
                () = master.removed() => {
                    tracing::warn!("this master was removed from the group \
                        (`mfsha member remove`); stopping for good: move its data directory \
                        aside before it joins again");
                    break
                }
                never = &mut watchdog => match never {},
            }
        }
        drop(watchdog);
        mfsha_sd::stopping();
        master.stop().await
    }
    .instrument(span)
    .await
}

fn signal(
    kind: tokio::signal::unix::SignalKind,
    name: &'static str,
) -> Result<tokio::signal::unix::Signal, DaemonError> {
    tokio::signal::unix::signal(kind).map_err(|cause| DaemonError::Signal { signal: name, cause })
}

/// Loads the config at `config_path` and runs the master on a new multi-threaded runtime.
/// For `mfsha master -c FILE`.
pub fn run_blocking(config_path: &Path) -> Result<(), DaemonError> {
    let config = config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mfsha-master")
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(run(config))
}
