//! The connections to the masters: registration, heartbeats, reports, and the leader's
//! commands.
//!
//! A chunkserver keeps one connection to *every* master of the group, so each master knows
//! where every copy is and a newly elected leader serves reads and writes at once instead of
//! waiting for the chunkservers to re-register. It starts from the configured addresses (a
//! VIP, or a list); every master greets with `Hello` naming its node id and the chunkserver
//! address of every master, and a link is started for each address not yet followed. Two
//! addresses reaching the same master (the VIP and that master's own address) make one
//! registration: the second link waits until the first ends ([`Links`]).
//!
//! On each connection this side sends `Register`, the chunk list in `Chunks` batches and
//! `RegisterDone`, then a heartbeat every `heartbeat_ms` (naming the chunks clients are
//! writing) and every change to its copies as it happens (`Copy`, `Gone`, `Damaged`,
//! `Lost`), to every master. Only the leader sends commands, each answered by a `Done`
//! carrying its `op` id.
//!
//! When a connection drops the link reconnects with a back-off from 50 ms to 200 ms and
//! re-registers from scratch. Connections are made with a 1 s connect timeout and with
//! keepalive and `TCP_USER_TIMEOUT` at 1 s (`mfsha_proto::net`); a master that sends nothing
//! (it heartbeats every 300 ms) for [`MASTER_SILENCE`] is taken for hung.
//!
//! Every frame from a master carries its term; the [`TermFence`] refuses commands of a term
//! older than the highest seen, and records a newer term on disk (before obeying a command
//! that brought it). Terms of heartbeats and greetings count too: once any master is at a
//! newer term, the old term's leader is deposed, and its commands are refused.

use crate::fence::{self, FenceError, TermFence};
use crate::server::Peers;
use crate::store::{blocking, Store};
use mfsha_proto::chunk_token::ANY_VERSION;
use mfsha_proto::cluster_key::{self, ClusterKey, KeyedPort};
use mfsha_proto::cs::{
    CsToMaster, FromMaster, MasterToCs, CHUNKS_PER_FRAME, WRITING_PER_HEARTBEAT,
};
use mfsha_proto::data::{check_block_crcs, DataReply, DataRequest, MAX_IO_BYTES};
use mfsha_proto::frame::{read_frame, write_frame, FrameError};
use mfsha_proto::types::{ChunkId, ServerAddr, Status};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{broadcast, mpsc, watch, Notify, Semaphore};

/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest reconnect delay. Short: a master that restarts should have this server's copies
/// again before it can be elected.
pub const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// How often a link whose address reaches an already-followed master looks again (the VIP
/// moves with the leader).
const DUPLICATE_RECHECK: Duration = Duration::from_secs(2);
/// How long a master of the wrong cluster is left alone before it is tried again.
const WRONG_CLUSTER_RETRY: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = mfsha_proto::net::CONNECT_TIMEOUT;
/// A write to the master that takes longer than this means the master is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands executed at once; more wait (the master paces replication anyway).
const COMMANDS_MAX: usize = 32;

/// What the links announce about this server.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub masters: Vec<String>,
    /// The masters' cluster id, when configured: others are refused.
    pub cluster: Option<String>,
    /// The cluster secret, proved to every master (and a master must prove it back).
    pub key: Option<ClusterKey>,
    pub host: Option<String>,
    pub port: u16,
    pub labels: Vec<String>,
    pub server_id: u64,
    pub heartbeat: Duration,
}

/// Why one session with a master ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("the master closed the connection")]
    Closed,
    #[error("write to the master timed out")]
    WriteTimeout,
    #[error("{0}")]
    Fenced(#[from] FenceError),
    #[error(
        "the master sent {0} where its Hello was expected (an mfsha master of another version?)"
    )]
    NoHello(String),
    #[error("the master sent {0} before the registration was complete")]
    Early(String),
    #[error("the master sent nothing for {0:?} (hung or gone)")]
    Silent(Duration),
    #[error("master node {0} is already followed through another address")]
    Duplicate(u64),
    #[error("the master belongs to cluster {theirs:?}, this chunkserver to {ours:?}: check `master` and `cluster_id` in the chunkserver's config")]
    WrongCluster { ours: String, theirs: String },
    #[error("cluster secret: {0}")]
    Key(#[from] cluster_key::HandshakeError),
    #[error("fell behind on copy reports; registering again")]
    Lagged,
}

/// How long the master may stay silent once it has heartbeated.
const MASTER_SILENCE: Duration = Duration::from_millis(mfsha_proto::cs::MASTER_SILENCE_MS);

/// When the master was last heard from. Until its first frame the limit always holds (a
/// hung master accepts connections in its kernel but never answers); after that only once
/// the master has sent a heartbeat: every mfsha master heartbeats from the start of the
/// connection, a scripted master in a test need not.
struct Silence {
    since: tokio::time::Instant,
    heard: bool,
    heartbeats: bool,
}

impl Default for Silence {
    fn default() -> Self {
        Silence { since: tokio::time::Instant::now(), heard: false, heartbeats: false }
    }
}

impl Silence {
    fn heard(&mut self, msg: &MasterToCs) {
        self.heard = true;
        self.heartbeats |= matches!(msg, MasterToCs::Heartbeat);
        self.since = tokio::time::Instant::now();
    }

    async fn expired(&self) {
        match !self.heard || self.heartbeats {
            true => tokio::time::sleep_until(self.since + MASTER_SILENCE).await,
            false => std::future::pending().await,
        }
    }
}

/// Which master each address reaches, so that each master gets one registration.
#[derive(Default)]
struct Links {
    state: Mutex<LinksState>,
    /// Signalled when a master stops being followed.
    released: Notify,
}

#[derive(Default)]
struct LinksState {
    /// Master node id → the address it is followed through.
    followed: HashMap<u64, String>,
    /// Addresses with a link running.
    running: HashSet<String>,
}

impl Links {
    /// Follows `node` through `addr`, unless another address already does.
    fn claim(self: &Arc<Self>, node: u64, addr: &str) -> Result<Claim, LinkError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.followed.get(&node) {
            Some(other) if other != addr => Err(LinkError::Duplicate(node)),
            _ => {
                state.followed.insert(node, addr.to_string());
                Ok(Claim { links: self.clone(), node })
            }
        }
    }

    /// Marks `addr` as having a link; false if it already had one.
    fn start(&self, addr: &str) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.running.insert(addr.to_string())
    }
}

/// A master followed by one link; released on drop.
struct Claim {
    links: Arc<Links>,
    node: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut state = self.links.state.lock().unwrap_or_else(|p| p.into_inner());
        state.followed.remove(&self.node);
        drop(state);
        self.links.released.notify_waiters();
    }
}

/// What every link shares.
#[derive(Clone)]
struct Shared {
    store: Arc<Store>,
    peers: Arc<Peers>,
    config: Arc<LinkConfig>,
    fence: Arc<TermFence>,
    commands: Arc<Semaphore>,
    links: Arc<Links>,
    shutdown: watch::Receiver<bool>,
}

/// Keeps a session with every master open until `shutdown`, reconnecting as needed.
pub async fn run_link(
    store: Arc<Store>,
    peers: Arc<Peers>,
    config: LinkConfig,
    fence: Arc<TermFence>,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Shared {
        store,
        peers,
        config: Arc::new(config),
        fence,
        commands: Arc::new(Semaphore::new(COMMANDS_MAX)),
        links: Arc::new(Links::default()),
        shutdown: shutdown.clone(),
    };
    for addr in shared.config.masters.clone() {
        spawn_follow(&shared, addr);
    }
    // The links stop on the same signal.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Starts a link to `addr` unless one runs already.
fn spawn_follow(shared: &Shared, addr: String) {
    if shared.links.start(&addr) {
        tokio::spawn(follow(shared.clone(), addr));
    }
}

/// One address's link: sessions one after another until shutdown.
async fn follow(shared: Shared, addr: String) {
    let mut shutdown = shared.shutdown.clone();
    let mut backoff = BACKOFF_MIN;
    loop {
        let session = Session { shared: &shared, addr: &addr };
        let result = tokio::select! {
            r = session.run(&mut backoff) => r,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let pause = match &result {
            Ok(()) => {
                tracing::info!(master = %addr, "master connection closed");
                backoff
            }
            Err(LinkError::Duplicate(node)) => {
                tracing::debug!(master = %addr, node, "already following that master");
                let released = shared.links.released.notified();
                tokio::select! {
                    _ = released => {}
                    _ = tokio::time::sleep(DUPLICATE_RECHECK) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                continue;
            }
            Err(e @ LinkError::WrongCluster { .. }) => {
                tracing::error!(master = %addr, error = %e, "refusing this master");
                WRONG_CLUSTER_RETRY
            }
            Err(e) => {
                tracing::warn!(master = %addr, error = %e, retry_ms = backoff.as_millis() as u64,
                    "master connection lost; reconnecting");
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

struct Session<'a> {
    shared: &'a Shared,
    addr: &'a str,
}

impl Session<'_> {
    async fn run(&self, backoff: &mut Duration) -> Result<(), LinkError> {
        let mut stream = mfsha_proto::net::connect(self.addr, CONNECT_TIMEOUT)
            .await
            .map_err(|e| LinkError::Connect(e.to_string()))?;
        let key = self.shared.config.key.as_ref();
        cluster_key::prove(&mut stream, key, KeyedPort::Chunkserver).await?;
        let (read_half, mut out) = stream.into_split();
        let (frames_tx, mut frames) = mpsc::channel::<Result<FromMaster, FrameError>>(256);
        let reader = tokio::spawn(read_loop(BufReader::new(read_half), frames_tx));
        let result = self.greeted(&mut out, &mut frames, backoff).await;
        reader.abort();
        result
    }

    /// From the master's `Hello` to the end of the session.
    async fn greeted(
        &self,
        out: &mut OwnedWriteHalf,
        frames: &mut mpsc::Receiver<Result<FromMaster, FrameError>>,
        backoff: &mut Duration,
    ) -> Result<(), LinkError> {
        let node = self.hello(frames).await?;
        let _claim = self.shared.links.claim(node, self.addr)?;
        // Subscribed before the chunk list is taken, so no change falls between the two.
        let mut reports = self.shared.store.subscribe_reports();
        self.register(out, frames).await?;
        self.serve(out, frames, &mut reports, backoff).await
    }

    /// Reads the master's `Hello`: checks its cluster and starts links to the masters it
    /// names. Returns its node id.
    async fn hello(
        &self,
        frames: &mut mpsc::Receiver<Result<FromMaster, FrameError>>,
    ) -> Result<u64, LinkError> {
        let first = tokio::time::timeout(MASTER_SILENCE, frames.recv())
            .await
            .map_err(|_| LinkError::Silent(MASTER_SILENCE))?;
        let (term, master_node, cluster, masters) = match first {
            None => return Err(LinkError::Closed),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(FromMaster {
                term,
                msg: MasterToCs::Hello { master_node, cluster, masters },
            })) => (term, master_node, cluster, masters),
            Some(Ok(other)) => return Err(LinkError::NoHello(format!("{:?}", other.msg))),
        };
        if let Some(ours) = &self.shared.config.cluster {
            if *ours != cluster {
                return Err(LinkError::WrongCluster { ours: ours.clone(), theirs: cluster });
            }
        }
        fence::note(&self.shared.fence, term).await?;
        for (_, addr) in masters {
            spawn_follow(self.shared, addr);
        }
        Ok(master_node)
    }

    async fn register(
        &self,
        out: &mut OwnedWriteHalf,
        frames: &mut mpsc::Receiver<Result<FromMaster, FrameError>>,
    ) -> Result<(), LinkError> {
        let store = self.shared.store.clone();
        let (disks, chunks) = tokio::task::spawn_blocking(move || {
            store.check_disks();
            (store.disk_infos(), store.list())
        })
        .await
        .expect("registration scan task panicked");
        let config = &self.shared.config;
        let register = CsToMaster::Register {
            host: config.host.clone(),
            port: config.port,
            labels: config.labels.clone(),
            disks,
            server_id: config.server_id,
            cluster: config.cluster.clone(),
        };
        send(out, &register).await?;
        for batch in chunks.chunks(CHUNKS_PER_FRAME) {
            early_frame(frames)?;
            send(out, &CsToMaster::Chunks(batch.to_vec())).await?;
        }
        early_frame(frames)?;
        send(out, &CsToMaster::RegisterDone).await?;
        for report in self.shared.store.damaged_reports() {
            send(out, &report).await?;
        }
        tracing::info!(master = %self.addr, chunks = chunks.len(), "registered with the master");
        Ok(())
    }

    async fn serve(
        &self,
        out: &mut OwnedWriteHalf,
        frames: &mut mpsc::Receiver<Result<FromMaster, FrameError>>,
        reports: &mut broadcast::Receiver<CsToMaster>,
        backoff: &mut Duration,
    ) -> Result<(), LinkError> {
        let (done_tx, mut done_rx) = mpsc::channel::<CsToMaster>(COMMANDS_MAX * 2);
        let mut heartbeat = tokio::time::interval(self.shared.config.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut silence = Silence::default();
        loop {
            tokio::select! {
                frame = frames.recv() => match frame {
                    None => return Err(LinkError::Closed),
                    Some(Err(e)) if e.is_clean_close() => return Ok(()),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(frame)) => {
                        silence.heard(&frame.msg);
                        self.obey(out, frame, &done_tx, backoff).await?
                    }
                },
                () = silence.expired() => return Err(LinkError::Silent(MASTER_SILENCE)),
                Some(done) = done_rx.recv() => send(out, &done).await?,
                _ = heartbeat.tick() => self.heartbeat(out).await?,
                report = reports.recv() => match report {
                    Ok(report) => send(out, &report).await?,
                    Err(broadcast::error::RecvError::Lagged(_)) => return Err(LinkError::Lagged),
                    Err(broadcast::error::RecvError::Closed) => return Err(LinkError::Closed),
                },
            }
        }
    }

    /// Acts on one frame from the master; a command only once its term passed the fence.
    async fn obey(
        &self,
        out: &mut OwnedWriteHalf,
        frame: FromMaster,
        done: &mpsc::Sender<CsToMaster>,
        backoff: &mut Duration,
    ) -> Result<(), LinkError> {
        let FromMaster { term, msg } = frame;
        let Some(op) = command_op(&msg) else {
            fence::note(&self.shared.fence, term).await?;
            match msg {
                MasterToCs::Welcome { master_node } => {
                    *backoff = BACKOFF_MIN;
                    tracing::info!(master = %self.addr, master_node, term, "registration accepted");
                }
                // A later Hello names the masters anew (one was added): follow the new ones.
                MasterToCs::Hello { cluster, masters, .. } => {
                    if self.shared.config.cluster.as_ref().is_some_and(|ours| *ours != cluster) {
                        let ours = self.shared.config.cluster.clone().unwrap_or_default();
                        return Err(LinkError::WrongCluster { ours, theirs: cluster });
                    }
                    for (_, addr) in masters {
                        spawn_follow(self.shared, addr);
                    }
                }
                _ => {}
            }
            return Ok(());
        };
        if let Err(e) = fence::admit(&self.shared.fence, term).await {
            tracing::error!(master = %self.addr, error = %e, command = ?msg,
                "refusing the master's command; leaving it for another master");
            send(out, &CsToMaster::Done { op, status: Err(Status::NotLeader) }).await?;
            return Err(e.into());
        }
        self.spawn_command(msg, done.clone());
        Ok(())
    }

    async fn heartbeat(&self, out: &mut OwnedWriteHalf) -> Result<(), LinkError> {
        let store = self.shared.store.clone();
        let disks = tokio::task::spawn_blocking(move || {
            store.check_disks();
            store.disk_infos()
        })
        .await
        .expect("heartbeat disk check panicked");
        let writing = self.shared.store.writing(WRITING_PER_HEARTBEAT);
        send(out, &CsToMaster::Heartbeat { disks, writing }).await
    }

    fn spawn_command(&self, command: MasterToCs, done: mpsc::Sender<CsToMaster>) {
        let store = self.shared.store.clone();
        let peers = self.shared.peers.clone();
        let slots = self.shared.commands.clone();
        tokio::spawn(async move {
            let _permit = slots.acquire_owned().await.expect("semaphore never closed");
            let Some(op) = command_op(&command) else { return };
            let status = execute(&store, &peers, command).await;
            // The session may be gone; the master re-learns the state at re-registration.
            let _gone = done.send(CsToMaster::Done { op, status }).await;
        });
    }
}

/// Before `RegisterDone` a master sends only heartbeats: anything else ends the
/// registration.
fn early_frame(
    frames: &mut mpsc::Receiver<Result<FromMaster, FrameError>>,
) -> Result<(), LinkError> {
    let mut next = frames.try_recv();
    while matches!(next, Ok(Ok(FromMaster { msg: MasterToCs::Heartbeat, .. }))) {
        next = frames.try_recv();
    }
    match next {
        Err(mpsc::error::TryRecvError::Empty) => Ok(()),
        Err(mpsc::error::TryRecvError::Disconnected) => Err(LinkError::Closed),
        Ok(Ok(other)) => Err(LinkError::Early(format!("{:?}", other.msg))),
        Ok(Err(e)) if e.is_clean_close() => Err(LinkError::Closed),
        Ok(Err(e)) => Err(e.into()),
    }
}

async fn send(out: &mut OwnedWriteHalf, msg: &CsToMaster) -> Result<(), LinkError> {
    match tokio::time::timeout(WRITE_TIMEOUT, write_frame(out, 0, msg)).await {
        Ok(result) => result?,
        Err(_) => return Err(LinkError::WriteTimeout),
    }
    match tokio::time::timeout(WRITE_TIMEOUT, out.flush()).await {
        Ok(result) => result.map_err(FrameError::from)?,
        Err(_) => return Err(LinkError::WriteTimeout),
    }
    Ok(())
}

/// Reads frames in its own task: `read_frame` must not be cancelled half way by a `select!`.
async fn read_loop(
    mut reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    tx: mpsc::Sender<Result<FromMaster, FrameError>>,
) {
    loop {
        let frame = read_frame::<_, FromMaster>(&mut reader).await;
        let failed = frame.is_err();
        if tx.send(frame.map(|f| f.body)).await.is_err() || failed {
            return;
        }
    }
}

fn command_op(command: &MasterToCs) -> Option<u64> {
    match command {
        MasterToCs::Hello { .. } | MasterToCs::Welcome { .. } | MasterToCs::Heartbeat => None,
        MasterToCs::Create { op, .. }
        | MasterToCs::SetVersion { op, .. }
        | MasterToCs::Delete { op, .. }
        | MasterToCs::Replicate { op, .. }
        | MasterToCs::Truncate { op, .. }
        | MasterToCs::Duplicate { op, .. } => Some(*op),
    }
}

/// Carries out one master command and tells every master what changed.
pub async fn execute(store: &Arc<Store>, peers: &Peers, command: MasterToCs) -> Result<(), Status> {
    tracing::debug!(?command, "master command");
    let change = change_of(&command);
    let result = carry_out(store, peers, command).await;
    if let (Ok(()), Some(change)) = (&result, change) {
        store.push_report(change);
    }
    result
}

/// What `command` leaves on this server when it succeeds, as the report every master gets.
fn change_of(command: &MasterToCs) -> Option<CsToMaster> {
    let copy = |chunk_id, version| Some(CsToMaster::Copy { chunk_id, version });
    match *command {
        MasterToCs::Hello { .. } | MasterToCs::Welcome { .. } | MasterToCs::Heartbeat => None,
        MasterToCs::Create { chunk_id, version, .. } => copy(chunk_id, version),
        MasterToCs::SetVersion { chunk_id, new_version, .. } => copy(chunk_id, new_version),
        MasterToCs::Truncate { chunk_id, new_version, .. } => copy(chunk_id, new_version),
        MasterToCs::Duplicate { new_chunk, new_version, .. } => copy(new_chunk, new_version),
        MasterToCs::Replicate { chunk_id, version, .. } => copy(chunk_id, version),
        MasterToCs::Delete { chunk_id, .. } => Some(CsToMaster::Gone { chunk_id }),
    }
}

async fn carry_out(store: &Arc<Store>, peers: &Peers, command: MasterToCs) -> Result<(), Status> {
    match command {
        MasterToCs::Hello { .. } | MasterToCs::Welcome { .. } | MasterToCs::Heartbeat => Ok(()),
        MasterToCs::Create { chunk_id, version, .. } => {
            blocking(store, move |s| s.create_blocking(chunk_id, version)).await
        }
        MasterToCs::SetVersion { chunk_id, old_version, new_version, .. } => {
            blocking(store, move |s| s.set_version_blocking(chunk_id, old_version, new_version))
                .await
        }
        MasterToCs::Delete { chunk_id, version, .. } => {
            match blocking(store, move |s| s.delete_blocking(chunk_id, version)).await {
                // Already gone is what the master wanted.
                Err(Status::NotFound) => Ok(()),
                other => other,
            }
        }
        MasterToCs::Replicate { chunk_id, version, source, .. } => {
            replicate(store, peers, chunk_id, version, &source).await
        }
        MasterToCs::Truncate { chunk_id, old_version, new_version, length, .. } => {
            blocking(store, move |s| {
                s.truncate_blocking(chunk_id, old_version, new_version, length)
            })
            .await
        }
        MasterToCs::Duplicate { new_chunk, new_version, old_chunk, old_version, .. } => {
            blocking(store, move |s| {
                s.duplicate_blocking(new_chunk, new_version, old_chunk, old_version)
            })
            .await
        }
    }
}

/// Copies `chunk_id` at `version` from `source`, reading through its CRC-verifying read path,
/// into a temporary file that becomes the copy only when complete and fsynced.
pub async fn replicate(
    store: &Arc<Store>,
    peers: &Peers,
    chunk_id: ChunkId,
    version: u32,
    source: &ServerAddr,
) -> Result<(), Status> {
    let stat = DataRequest::Stat { chunk_id, token: peers.read_token(chunk_id, ANY_VERSION) };
    let length = match peers.call(source, stat).await? {
        DataReply::Stat { version: v, length } if v == version => length,
        DataReply::Stat { .. } => return Err(Status::WrongVersion),
        _ => return Err(Status::Io),
    };
    let mut builder = blocking(store, move |s| s.build_begin(chunk_id, version)).await?;
    let mut offset = 0u64;
    while offset < length {
        let size = (length - offset).min(MAX_IO_BYTES as u64) as u32;
        let token = peers.read_token(chunk_id, version);
        let req = DataRequest::Read { chunk_id, version, offset: offset as u32, size, token };
        let at = offset as u32;
        let data = match peers.call(source, req).await {
            Ok(DataReply::Data { data, crcs }) if data.len() == size as usize => {
                match check_block_crcs(at, &data, &crcs) {
                    Ok(()) => data.into_vec(),
                    Err(mismatch) => {
                        store.build_abort(builder);
                        tracing::warn!(chunk = format_args!("{chunk_id:016X}"), %source, error = %mismatch,
                            "replication read arrived damaged (its bytes fail their CRC); nothing kept, the master retries elsewhere");
                        return Err(Status::Checksum);
                    }
                }
            }
            other => {
                let error = other.err().unwrap_or(Status::Io);
                store.build_abort(builder);
                tracing::warn!(chunk = format_args!("{chunk_id:016X}"), %source, %error,
                    "replication read failed");
                return Err(error);
            }
        };
        let (b, result) = append(store, builder, data).await;
        builder = b;
        if let Err(e) = result {
            store.build_abort(builder);
            return Err(e);
        }
        offset += size as u64;
    }
    let store2 = store.clone();
    tokio::task::spawn_blocking(move || store2.build_finish(builder))
        .await
        .unwrap_or(Err(Status::Io))?;
    tracing::info!(chunk = format_args!("{chunk_id:016X}"), version, %source, length, "replicated");
    Ok(())
}

async fn append(
    store: &Arc<Store>,
    mut builder: crate::store::Builder,
    data: Vec<u8>,
) -> (crate::store::Builder, Result<(), Status>) {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let result = store.build_append(&mut builder, &data);
        (builder, result)
    })
    .await
    .expect("replication append task panicked")
}
