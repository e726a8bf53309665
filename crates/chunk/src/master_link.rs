//! The connection to the master: registration, heartbeats, reports, and the master's commands.
//!
//! The link is a bidirectional stream of frames, not request/response: this side sends
//! `Register`, the chunk list in `Chunks` batches and `RegisterDone`, then a heartbeat every
//! `heartbeat_ms` and any reports (`Damaged`, `Lost`) as they happen; the master sends
//! commands whenever it likes, each answered by a `Done` carrying its `op` id.
//!
//! When the connection drops (master restart, leader change, network) the link reconnects at
//! once with a back-off starting at 50 ms and capped at 1 s — not MooseFS's fixed 5 s, which
//! would dominate failover time — and re-registers from scratch. It tries the master it
//! was last registered with first, then each configured address in turn; a follower answers
//! `NotLeader` with the leader's chunkserver address, which is tried next without a pause.
//! Connections are made with a 1 s connect timeout and with keepalive and `TCP_USER_TIMEOUT`
//! at 1 s (`mfsha_proto::net`): with a heartbeat every second, a master whose host died is
//! noticed within about two seconds.
//!
//! Every frame from the master carries its term; the [`TermFence`] refuses frames of a term
//! older than one already obeyed and records a newer term on disk before obeying it.

use crate::fence::{self, FenceError, TermFence};
use crate::server::Peers;
use crate::store::{blocking, Store};
use mfsha_proto::cs::{CsToMaster, FromMaster, MasterToCs, CHUNKS_PER_FRAME};
use mfsha_proto::data::{DataReply, DataRequest, MAX_IO_BYTES};
use mfsha_proto::frame::{read_frame, write_frame, FrameError};
use mfsha_proto::types::{ChunkId, LeaderHint, ServerAddr, Status};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, watch, Semaphore};

/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest reconnect delay. Short: during an election (250-400 ms) every master says "not the
/// leader", and a chunkserver that backs off further registers with the new leader late, so
/// the first writes after a failover find no chunkserver to write to.
pub const BACKOFF_MAX: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = mfsha_proto::net::CONNECT_TIMEOUT;
/// A write to the master that takes longer than this means the master is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failed registration waits for the redirect a follower sent before closing.
const REDIRECT_GRACE: Duration = Duration::from_millis(200);
/// Commands executed at once; more wait (the master paces replication anyway).
const COMMANDS_MAX: usize = 32;

/// What the link announces about this server.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub masters: Vec<String>,
    pub host: Option<String>,
    pub port: u16,
    pub labels: Vec<String>,
    pub server_id: u64,
    pub heartbeat: Duration,
}

/// Why one session with the master ended.
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
    #[error("not the leader (leader: node {}, at {:?})", .0.leader_id, .0.chunkserver)]
    NotLeader(LeaderHint),
    #[error("{0}")]
    Fenced(#[from] FenceError),
    #[error("the master sent {0} before the registration was complete")]
    Early(String),
    #[error("the master sent nothing for {0:?} (hung or gone)")]
    Silent(Duration),
}

/// How long the master may stay silent once it has heartbeated.
const MASTER_SILENCE: Duration = Duration::from_millis(mfsha_proto::cs::MASTER_SILENCE_MS);

/// When the master was last heard from. Until its first frame the limit always holds (a
/// hung master accepts connections in its kernel but never answers the registration); after
/// that only once the master has sent a heartbeat: every mfsha master heartbeats from the
/// start of the connection, a scripted master in a test need not.
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

/// Keeps a session with a master open until `shutdown`, reconnecting as needed.
pub async fn run_link(
    store: Arc<Store>,
    peers: Arc<Peers>,
    config: LinkConfig,
    fence: Arc<TermFence>,
    mut shutdown: watch::Receiver<bool>,
) {
    let commands = Arc::new(Semaphore::new(COMMANDS_MAX));
    let mut backoff = BACKOFF_MIN;
    let mut targets = Targets::new(config.masters.clone());
    loop {
        let addr = targets.next();
        let session = Session {
            store: &store,
            peers: &peers,
            config: &config,
            commands: &commands,
            fence: &fence,
        };
        let result = tokio::select! {
            r = session.run(&addr, &mut backoff) => r,
            _ = shutdown.changed() => return,
        };
        match &result {
            Ok(()) => tracing::info!(master = %addr, "master connection closed"),
            Err(LinkError::NotLeader(hint)) => {
                tracing::info!(master = %addr, leader = hint.leader_id, to = ?hint.chunkserver,
                    "not the leader; following its hint");
            }
            Err(e) => {
                tracing::warn!(master = %addr, error = %e, retry_ms = backoff.as_millis() as u64,
                "master connection lost; reconnecting")
            }
        }
        if targets.ended(&addr, &result) {
            continue; // a redirect to another master: go there at once
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Which master address to try next: a leader hint first, then the master last registered
/// with, then the configured addresses in turn.
struct Targets {
    masters: Vec<String>,
    next: usize,
    hinted: Option<String>,
    last_leader: Option<String>,
    /// Redirects followed since the last pause, so two confused masters pointing at each
    /// other cannot make the link spin.
    hops: u32,
}

impl Targets {
    fn new(masters: Vec<String>) -> Targets {
        Targets { masters, next: 0, hinted: None, last_leader: None, hops: 0 }
    }

    fn next(&mut self) -> String {
        if let Some(addr) = self.hinted.take().or_else(|| self.last_leader.take()) {
            return addr;
        }
        let addr = self.masters[self.next % self.masters.len()].clone();
        self.next += 1;
        addr
    }

    /// Notes how a session with `addr` ended; true when the next try should start at once.
    fn ended(&mut self, addr: &str, result: &Result<(), LinkError>) -> bool {
        match result {
            Err(LinkError::NotLeader(hint)) => {
                let to = hint.chunkserver.clone().filter(|to| to != addr);
                if to.is_some() && self.hops < 3 {
                    self.hops += 1;
                    self.hinted = to;
                    return true;
                }
            }
            // Registered there: it led, and it is the best first guess next time (if it
            // stepped down it redirects us to its successor).
            Ok(()) | Err(LinkError::Closed | LinkError::Frame(_) | LinkError::WriteTimeout) => {
                self.last_leader = Some(addr.to_string());
            }
            Err(_) => {}
        }
        self.hops = 0;
        false
    }
}

struct Session<'a> {
    store: &'a Arc<Store>,
    peers: &'a Arc<Peers>,
    config: &'a LinkConfig,
    commands: &'a Arc<Semaphore>,
    fence: &'a Arc<TermFence>,
}

impl Session<'_> {
    async fn run(&self, addr: &str, backoff: &mut Duration) -> Result<(), LinkError> {
        let stream = mfsha_proto::net::connect(addr, CONNECT_TIMEOUT)
            .await
            .map_err(|e| LinkError::Connect(e.to_string()))?;
        let (read_half, mut out) = stream.into_split();
        // Read from the start: a follower answers Register with NotLeader at once, and the
        // chunk list need not go to it.
        let (frames_tx, mut frames) = mpsc::channel::<Result<FromMaster, FrameError>>(256);
        let reader = tokio::spawn(read_loop(BufReader::new(read_half), frames_tx));
        let result = match self.register(&mut out, &mut frames).await {
            Ok(()) => self.serve(&mut out, &mut frames, addr, backoff).await,
            Err(e) => Err(e),
        };
        reader.abort();
        result
    }

    /// Sends the registration, stopping early if the master redirects us meanwhile.
    async fn register(
        &self,
        out: &mut OwnedWriteHalf,
        frames: &mut mpsc::Receiver<Result<FromMaster, FrameError>>,
    ) -> Result<(), LinkError> {
        match self.send_registration(out, frames).await {
            // A follower closes after its NotLeader: a failed send may just mean that.
            Err(e @ (LinkError::Frame(_) | LinkError::WriteTimeout)) => {
                let next = tokio::time::timeout(REDIRECT_GRACE, frames.recv()).await;
                match next {
                    Ok(Some(Ok(FromMaster { msg: MasterToCs::NotLeader { hint }, .. }))) => {
                        Err(LinkError::NotLeader(hint))
                    }
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    async fn send_registration(
        &self,
        out: &mut OwnedWriteHalf,
        frames: &mut mpsc::Receiver<Result<FromMaster, FrameError>>,
    ) -> Result<(), LinkError> {
        let store = self.store.clone();
        let (disks, chunks) = tokio::task::spawn_blocking(move || {
            store.check_disks();
            (store.disk_infos(), store.list())
        })
        .await
        .expect("registration scan task panicked");
        let register = CsToMaster::Register {
            host: self.config.host.clone(),
            port: self.config.port,
            labels: self.config.labels.clone(),
            disks,
            server_id: self.config.server_id,
        };
        send(out, &register).await?;
        for batch in chunks.chunks(CHUNKS_PER_FRAME) {
            early_frame(frames)?;
            send(out, &CsToMaster::Chunks(batch.to_vec())).await?;
        }
        early_frame(frames)?;
        send(out, &CsToMaster::RegisterDone).await?;
        // Reports queued while disconnected still go out; damaged copies are re-announced.
        self.store.requeue_damaged();
        tracing::info!(chunks = chunks.len(), "registered with the master");
        Ok(())
    }

    async fn serve(
        &self,
        out: &mut OwnedWriteHalf,
        frames: &mut mpsc::Receiver<Result<FromMaster, FrameError>>,
        addr: &str,
        backoff: &mut Duration,
    ) -> Result<(), LinkError> {
        let (done_tx, mut done_rx) = mpsc::channel::<CsToMaster>(COMMANDS_MAX * 2);
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
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
                        self.obey(out, frame, &done_tx, addr, backoff).await?
                    }
                },
                () = silence.expired() => return Err(LinkError::Silent(MASTER_SILENCE)),
                Some(done) = done_rx.recv() => send(out, &done).await?,
                _ = heartbeat.tick() => self.heartbeat(out).await?,
                _ = self.store.report_ready.notified() => self.send_reports(out).await?,
            }
        }
    }

    /// Acts on one frame from the master, once its term passed the fence.
    async fn obey(
        &self,
        out: &mut OwnedWriteHalf,
        frame: FromMaster,
        done: &mpsc::Sender<CsToMaster>,
        addr: &str,
        backoff: &mut Duration,
    ) -> Result<(), LinkError> {
        let FromMaster { term, msg } = frame;
        if let MasterToCs::NotLeader { hint } = msg {
            return Err(LinkError::NotLeader(hint));
        }
        if let Err(e) = fence::admit(self.fence, term).await {
            tracing::error!(master = %addr, error = %e, command = ?msg,
                "refusing the master's command; leaving it for another master");
            if let Some(op) = command_op(&msg) {
                send(out, &CsToMaster::Done { op, status: Err(Status::NotLeader) }).await?;
            }
            return Err(e.into());
        }
        match msg {
            MasterToCs::Welcome { master_node } => {
                *backoff = BACKOFF_MIN;
                tracing::info!(master = %addr, master_node, term, "registration accepted");
            }
            MasterToCs::Heartbeat => {}
            command => self.spawn_command(command, done.clone()),
        }
        Ok(())
    }

    async fn heartbeat(&self, out: &mut OwnedWriteHalf) -> Result<(), LinkError> {
        let store = self.store.clone();
        let disks = tokio::task::spawn_blocking(move || {
            store.check_disks();
            store.disk_infos()
        })
        .await
        .expect("heartbeat disk check panicked");
        send(out, &CsToMaster::Heartbeat { disks }).await?;
        self.send_reports(out).await
    }

    async fn send_reports(&self, out: &mut OwnedWriteHalf) -> Result<(), LinkError> {
        for report in self.store.take_reports() {
            send(out, &report).await?;
        }
        Ok(())
    }

    fn spawn_command(&self, command: MasterToCs, done: mpsc::Sender<CsToMaster>) {
        let store = self.store.clone();
        let peers = self.peers.clone();
        let slots = self.commands.clone();
        tokio::spawn(async move {
            let _permit = slots.acquire_owned().await.expect("semaphore never closed");
            let Some(op) = command_op(&command) else { return };
            let status = execute(&store, &peers, command).await;
            // The session may be gone; the master re-learns the state at re-registration.
            let _gone = done.send(CsToMaster::Done { op, status }).await;
        });
    }
}

/// Before `RegisterDone` a leader sends only heartbeats: another frame there is a follower's
/// redirect (or the connection failing), and ends the registration.
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
        Ok(Ok(FromMaster { msg: MasterToCs::NotLeader { hint }, .. })) => {
            Err(LinkError::NotLeader(hint))
        }
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
        MasterToCs::Welcome { .. } | MasterToCs::NotLeader { .. } | MasterToCs::Heartbeat => None,
        MasterToCs::Create { op, .. }
        | MasterToCs::SetVersion { op, .. }
        | MasterToCs::Delete { op, .. }
        | MasterToCs::Replicate { op, .. }
        | MasterToCs::Truncate { op, .. }
        | MasterToCs::Duplicate { op, .. } => Some(*op),
    }
}

/// Carries out one master command.
pub async fn execute(store: &Arc<Store>, peers: &Peers, command: MasterToCs) -> Result<(), Status> {
    tracing::debug!(?command, "master command");
    match command {
        MasterToCs::Welcome { .. } | MasterToCs::NotLeader { .. } | MasterToCs::Heartbeat => Ok(()),
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
    let length = match peers.call(source, DataRequest::Stat { chunk_id }).await? {
        DataReply::Stat { version: v, length } if v == version => length,
        DataReply::Stat { .. } => return Err(Status::WrongVersion),
        _ => return Err(Status::Io),
    };
    let mut builder = blocking(store, move |s| s.build_begin(chunk_id, version)).await?;
    let mut offset = 0u64;
    while offset < length {
        let size = (length - offset).min(MAX_IO_BYTES as u64) as u32;
        let req = DataRequest::Read { chunk_id, version, offset: offset as u32, size };
        let data = match peers.call(source, req).await {
            Ok(DataReply::Data(d)) if d.len() == size as usize => d.into_vec(),
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
