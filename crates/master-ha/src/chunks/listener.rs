//! The chunkserver port (9420): one task per connected chunkserver.
//!
//! Every master, leader or not, takes chunkserver registrations and keeps their copies in its
//! registry, so a newly elected leader knows where every copy is at once; only the leader
//! sends commands. The master speaks first with `Hello` (its node id, its cluster, every
//! master's chunkserver address), then the connection must carry `Register`; a chunkserver
//! configured for another cluster is refused there. After that the connection carries, in
//! both directions and in any order, the chunk list, heartbeats, copy reports and `Done`
//! answers from the chunkserver, and commands from the master.
//!
//! Every frame to a chunkserver carries this master's current term (`FromMaster`). A command
//! is sent only while this master leads, stamped with the term it leads in; queued when it
//! led and found at send time that it no longer does, it is dropped (its waiter times out),
//! so a deposed leader's connection carries no command. A bad frame or a protocol violation
//! closes only that connection, logged with the peer.

use super::registry::ServerKey;
use super::ChunkRegistry;
use crate::server::{Leadership, Shutdown};
use mfsha_proto::cluster_key::{self, ClusterKey, KeyedPort};
use mfsha_proto::cs::{CsToMaster, FromMaster, MasterToCs, MASTER_HEARTBEAT_MS};
use mfsha_proto::frame::{read_frame, write_frame, FrameError};
use mfsha_proto::gate::{within_fd_limit, Gate, GateLimits};
use mfsha_proto::types::ServerAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A chunkserver silent for this long (it heartbeats every second) is considered gone.
/// Chunkserver connections open at once, and from one address (a host runs a few
/// chunkservers; anything beyond is a misconfiguration or an attack).
const CHUNKSERVER_CONNECTIONS: GateLimits = GateLimits { per_address: 64, total: 1024 };
const SILENCE_LIMIT: Duration = Duration::from_secs(10);
/// How long the `Hello` may take to send.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Commands queued for one chunkserver before sends fail with `Busy`.
const COMMAND_QUEUE: usize = 4096;
/// Copies one chunkserver may report; more is a broken or hostile peer.
const MAX_COPIES_PER_SERVER: u64 = 100_000_000;
/// Most chunks a heartbeat may name as being written.
const MAX_WRITING_PER_HEARTBEAT: usize = mfsha_proto::cs::WRITING_PER_HEARTBEAT;

/// What this master tells every chunkserver first.
#[derive(Clone)]
pub struct Greeting {
    pub leadership: Leadership,
    pub cluster: String,
    /// The cluster secret a chunkserver must prove before anything else.
    pub key: Option<ClusterKey>,
}

impl Greeting {
    fn hello(&self, node_id: u64) -> FromMaster {
        let book = self.leadership.book();
        let masters = book.chunkserver_addrs();
        let msg =
            MasterToCs::Hello { master_node: node_id, cluster: self.cluster.clone(), masters };
        FromMaster { term: self.leadership.now().term, msg }
    }
}

/// Accepts chunkserver connections until shutdown.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<ChunkRegistry>,
    greeting: Greeting,
    shutdown: Shutdown,
) {
    let gate = Gate::new("chunkserver", within_fd_limit(CHUNKSERVER_CONNECTIONS, 0.125));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.triggered() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(admitted) = gate.admit(peer) else { continue };
                let registry = registry.clone();
                let shutdown = shutdown.clone();
                let greeting = greeting.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = connection(stream, peer, registry, greeting) => {}
                        _ = shutdown.triggered() => {}
                    }
                    drop(admitted);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept on the chunkserver port failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Why a chunkserver connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("no message for {0:?}")]
    Silent(Duration),
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    registry: Arc<ChunkRegistry>,
    greeting: Greeting,
) {
    stream.set_nodelay(true).ok();
    let mut stream = stream;
    if let Err(e) =
        cluster_key::verify(&mut stream, greeting.key.as_ref(), KeyedPort::Chunkserver).await
    {
        return tracing::warn!(%peer, error = %e, "refused a caller on the chunkserver port");
    }
    let (read_half, mut write_half) = stream.into_split();
    let hello = greeting.hello(registry.meta.node_id());
    if let Err(e) = send_hello(&mut write_half, &hello).await {
        return tracing::debug!(%peer, error = %e, "could not greet the chunkserver");
    }
    let mut reader = BufReader::new(read_half);
    let first = tokio::time::timeout(SILENCE_LIMIT, read_frame::<_, CsToMaster>(&mut reader)).await;
    let register = match first {
        Ok(Ok(frame)) => frame.body,
        Ok(Err(e)) => {
            return tracing::debug!(%peer, error = %e, "chunkserver connection closed before registering")
        }
        Err(_) => return tracing::warn!(%peer, "chunkserver sent nothing; closing"),
    };
    let CsToMaster::Register { host, port, labels, disks, server_id, cluster } = register else {
        return tracing::warn!(%peer, "chunkserver's first message was not Register; closing");
    };
    if let Some(theirs) = cluster.filter(|theirs| *theirs != greeting.cluster) {
        return tracing::error!(%peer, cluster = %theirs, ours = %greeting.cluster,
            "refusing a chunkserver of another cluster (check its master and cluster_id)");
    }
    let addr = ServerAddr { host: host.unwrap_or_else(|| peer.ip().to_string()), port };
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let key = registry.inner.lock().add_server(server_id, addr.clone(), labels, disks, tx);
    tracing::info!(%peer, server = %addr, server_id = format_args!("{server_id:016x}"), "chunkserver registering");
    let writer = tokio::spawn(write_loop(write_half, rx, addr.clone(), greeting, hello));
    let (frames_tx, frames) = mpsc::channel(64);
    let read_task = tokio::spawn(read_loop(reader, frames_tx));
    let result = session(&registry, key, &addr, frames).await;
    read_task.abort();
    writer.abort();
    registry.inner.lock().remove_server(key);
    match result {
        Ok(()) => tracing::info!(server = %addr, "chunkserver disconnected"),
        Err(e) => tracing::warn!(server = %addr, error = %e, "chunkserver connection closed"),
    }
}

async fn send_hello(out: &mut OwnedWriteHalf, hello: &FromMaster) -> Result<(), FrameError> {
    let sent = async {
        write_frame(out, 0, hello).await?;
        out.flush().await.map_err(FrameError::from)
    };
    match tokio::time::timeout(HELLO_TIMEOUT, sent).await {
        Ok(result) => result,
        Err(_) => Err(FrameError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))),
    }
}

/// Reads frames in their own task so a half-read frame is never dropped by a `select!`.
async fn read_loop(
    mut reader: BufReader<OwnedReadHalf>,
    tx: mpsc::Sender<Result<CsToMaster, FrameError>>,
) {
    loop {
        let frame = read_frame::<_, CsToMaster>(&mut reader).await.map(|f| f.body);
        let failed = frame.is_err();
        if tx.send(frame).await.is_err() || failed {
            return;
        }
    }
}

async fn write_loop(
    out: OwnedWriteHalf,
    mut rx: mpsc::Receiver<MasterToCs>,
    addr: ServerAddr,
    greeting: Greeting,
    mut greeted: FromMaster,
) {
    let mut out = BufWriter::new(out);
    let mut beat = tokio::time::interval(Duration::from_millis(MASTER_HEARTBEAT_MS));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => msg,
                None => return,
            },
            _ = beat.tick() => regreeting(&greeting, &mut greeted).unwrap_or(MasterToCs::Heartbeat),
        };
        if let Err(e) = write_batch(&mut out, msg, &mut rx, &greeting.leadership).await {
            tracing::warn!(server = %addr, error = %e, "cannot send to chunkserver");
            return;
        }
    }
}

/// A new `Hello` when the masters' chunkserver addresses changed since the last one (a master
/// added with `mfsha member add`): the chunkserver then follows the new master too, so a
/// master that becomes leader later already knows every copy. Heartbeats stand in for it.
fn regreeting(greeting: &Greeting, greeted: &mut FromMaster) -> Option<MasterToCs> {
    let MasterToCs::Hello { master_node, .. } = greeted.msg else { return None };
    let now = greeting.hello(master_node);
    let masters = |m: &FromMaster| match &m.msg {
        MasterToCs::Hello { masters, .. } => masters.clone(),
        _ => Vec::new(),
    };
    if masters(&now) == masters(greeted) {
        return None;
    }
    tracing::info!(masters = ?masters(&now), "the masters changed: greeting the chunkserver again");
    *greeted = now;
    Some(greeted.msg.clone())
}

/// Writes `first` and whatever else is queued, then flushes once. Commands go out only while
/// this master leads, stamped with that term; others carry the current term.
async fn write_batch(
    out: &mut BufWriter<OwnedWriteHalf>,
    first: MasterToCs,
    rx: &mut mpsc::Receiver<MasterToCs>,
    leadership: &Leadership,
) -> Result<(), FrameError> {
    let lead = leadership.now();
    let mut next = Some(first);
    while let Some(msg) = next {
        let is_command = !matches!(
            msg,
            MasterToCs::Hello { .. } | MasterToCs::Welcome { .. } | MasterToCs::Heartbeat
        );
        if is_command && !lead.leading {
            tracing::warn!(command = ?msg, "no longer leader: dropping a queued chunkserver command");
        } else {
            write_frame(out, 0, &FromMaster { term: lead.term, msg }).await?;
        }
        next = rx.try_recv().ok();
    }
    out.flush().await?;
    Ok(())
}

async fn session(
    registry: &ChunkRegistry,
    key: ServerKey,
    addr: &ServerAddr,
    mut frames: mpsc::Receiver<Result<CsToMaster, FrameError>>,
) -> Result<(), ConnError> {
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let mut last_heard = tokio::time::Instant::now();
    loop {
        let frame = tokio::select! {
            f = frames.recv() => f,
            _ = check.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    return Err(ConnError::Silent(SILENCE_LIMIT));
                }
                continue;
            }
        };
        let msg = match frame {
            None => return Ok(()),
            Some(Err(e)) if e.is_clean_close() => return Ok(()),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(msg)) => msg,
        };
        last_heard = tokio::time::Instant::now();
        handle(registry, key, addr, msg)?;
    }
}

fn handle(
    registry: &ChunkRegistry,
    key: ServerKey,
    addr: &ServerAddr,
    msg: CsToMaster,
) -> Result<(), ConnError> {
    let mut inner = registry.inner.lock();
    match msg {
        CsToMaster::Register { .. } => return Err(ConnError::Protocol("second Register".into())),
        CsToMaster::Chunks(list) => {
            let held = inner.servers.get(&key).map(|s| s.copies).unwrap_or(0);
            if held + list.len() as u64 > MAX_COPIES_PER_SERVER {
                return Err(ConnError::Protocol(format!(
                    "more than {MAX_COPIES_PER_SERVER} copies reported"
                )));
            }
            for (chunk, version, marked) in list {
                inner.upsert_copy(key, chunk, version, marked);
            }
        }
        CsToMaster::RegisterDone => {
            let Some(server) = inner.servers.get_mut(&key) else { return Ok(()) };
            server.registered = true;
            let copies = server.copies;
            let welcome = MasterToCs::Welcome { master_node: registry.meta.node_id() };
            if server.tx.try_send(welcome).is_err() {
                return Err(ConnError::Protocol("command queue full at registration".into()));
            }
            tracing::info!(server = %addr, copies, "chunkserver registered");
        }
        CsToMaster::Heartbeat { disks, writing } => {
            if writing.len() > MAX_WRITING_PER_HEARTBEAT {
                return Err(ConnError::Protocol(format!(
                    "{} chunks named as being written (at most {MAX_WRITING_PER_HEARTBEAT})",
                    writing.len()
                )));
            }
            if let Some(server) = inner.servers.get_mut(&key) {
                server.disks = disks;
            }
            inner.note_writing(&writing);
        }
        CsToMaster::Copy { chunk_id, version } => {
            let marked = inner.copy_marked(key, chunk_id);
            inner.upsert_copy(key, chunk_id, version, marked);
        }
        CsToMaster::Gone { chunk_id } => inner.remove_copy(key, chunk_id),
        CsToMaster::Damaged { chunk_id, version } => {
            tracing::warn!(server = %addr, chunk = format_args!("{chunk_id:016X}"), version, "chunkserver reports a damaged copy");
            inner.mark_damaged(key, chunk_id, version);
        }
        CsToMaster::Lost(chunks) => {
            tracing::warn!(server = %addr, copies = chunks.len(), "chunkserver lost copies (damaged disk)");
            for chunk in chunks {
                inner.remove_copy(key, chunk);
            }
        }
        CsToMaster::Done { op, status } => {
            if inner.pending.get(&op).is_some_and(|p| p.server == key) {
                inner.finish(op, status);
            }
        }
    }
    Ok(())
}
