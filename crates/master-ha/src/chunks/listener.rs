//! The chunkserver port (9420): one task per connected chunkserver.
//!
//! A connection must start with `Register`; a master that is not the leader answers
//! `NotLeader` with a hint naming the leader's chunkserver port and closes it right there, so
//! the chunkserver goes to the leader (or the next master address, or the VIP's new owner).
//! Every frame to a chunkserver carries the term in which this master accepted it as leader
//! (`FromMaster`), and the connection is closed as soon as this master no longer leads in
//! that term, so a chunkserver never gets a command from a deposed leader's connection.
//! After that the connection carries, in both directions and in any order, the chunk list,
//! heartbeats, reports and `Done` answers from the chunkserver, and commands from the master.
//! A bad frame or a protocol violation closes only that connection, logged with the peer.

use super::registry::ServerKey;
use super::ChunkRegistry;
use crate::server::{Leadership, Shutdown};
use mfsha_proto::cs::{CsToMaster, FromMaster, MasterToCs, MASTER_HEARTBEAT_MS};
use mfsha_proto::frame::{read_frame, write_frame, FrameError};
use mfsha_proto::types::ServerAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A chunkserver silent for this long (it heartbeats every second) is considered gone.
const SILENCE_LIMIT: Duration = Duration::from_secs(10);
/// Commands queued for one chunkserver before sends fail with `Busy`.
const COMMAND_QUEUE: usize = 4096;
/// How long a follower reads what a redirected chunkserver still sends before closing.
const REDIRECT_DRAIN: Duration = Duration::from_secs(2);
/// Copies one chunkserver may report; more is a broken or hostile peer.
const MAX_COPIES_PER_SERVER: u64 = 100_000_000;

/// Accepts chunkserver connections until shutdown.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<ChunkRegistry>,
    leadership: Leadership,
    shutdown: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.triggered() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let registry = registry.clone();
                let shutdown = shutdown.clone();
                let leadership = leadership.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = connection(stream, peer, registry, leadership) => {}
                        _ = shutdown.triggered() => {}
                    }
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
    #[error("this master is not the leader")]
    NotLeader,
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    registry: Arc<ChunkRegistry>,
    leadership: Leadership,
) {
    stream.set_nodelay(true).ok();
    let (read_half, write_half) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    let first = tokio::time::timeout(SILENCE_LIMIT, read_frame::<_, CsToMaster>(&mut reader)).await;
    let register = match first {
        Ok(Ok(frame)) => frame.body,
        Ok(Err(e)) => {
            return tracing::warn!(%peer, error = %e, "chunkserver connection closed before registering")
        }
        Err(_) => return tracing::warn!(%peer, "chunkserver sent nothing; closing"),
    };
    let CsToMaster::Register { host, port, labels, disks, server_id } = register else {
        return tracing::warn!(%peer, "chunkserver's first message was not Register; closing");
    };
    let term = match leadership.leading_term() {
        Some(term) if registry.meta.is_leader() => term,
        _ => return redirect(write_half, reader, peer, &leadership).await,
    };
    let addr = ServerAddr { host: host.unwrap_or_else(|| peer.ip().to_string()), port };
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let key = registry.inner.lock().add_server(server_id, addr.clone(), labels, disks, tx);
    tracing::info!(%peer, server = %addr, server_id = format_args!("{server_id:016x}"), term, "chunkserver registering");
    let writer = tokio::spawn(write_loop(write_half, rx, addr.clone(), term));
    let (frames_tx, frames) = mpsc::channel(64);
    let read_task = tokio::spawn(read_loop(reader, frames_tx));
    let result = tokio::select! {
        result = session(&registry, key, &addr, frames) => result,
        () = leadership.ended(term) => Err(ConnError::NotLeader),
    };
    read_task.abort();
    writer.abort();
    registry.inner.lock().remove_server(key);
    match result {
        Ok(()) => tracing::info!(server = %addr, "chunkserver disconnected"),
        Err(e) => tracing::warn!(server = %addr, error = %e, "chunkserver connection closed"),
    }
}

/// A follower's answer to `Register`: who leads, then close. What the chunkserver sent
/// meanwhile is read and dropped until it closes (at most [`REDIRECT_DRAIN`]): closing with
/// unread data would reset the connection, and the reset can destroy the redirect before
/// the chunkserver reads it.
async fn redirect(
    mut out: OwnedWriteHalf,
    mut reader: BufReader<OwnedReadHalf>,
    peer: SocketAddr,
    leadership: &Leadership,
) {
    let hint = leadership.hint();
    tracing::debug!(%peer, leader = hint.leader_id, to = ?hint.chunkserver,
        "not the leader; redirecting the chunkserver");
    let frame = FromMaster { term: hint.term, msg: MasterToCs::NotLeader { hint } };
    let sent = match write_frame(&mut out, 0, &frame).await {
        Ok(()) => out.shutdown().await.map_err(FrameError::from),
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        return tracing::debug!(%peer, error = %e, "could not redirect the chunkserver");
    }
    let mut sink = tokio::io::sink();
    let drain = tokio::io::copy(&mut reader, &mut sink);
    if tokio::time::timeout(REDIRECT_DRAIN, drain).await.is_err() {
        tracing::debug!(%peer, "redirected chunkserver kept sending; closing");
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
    term: u64,
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
            _ = beat.tick() => MasterToCs::Heartbeat,
        };
        if let Err(e) = write_batch(&mut out, msg, &mut rx, term).await {
            tracing::warn!(server = %addr, error = %e, "cannot send to chunkserver");
            return;
        }
    }
}

/// Writes `first` and whatever else is queued, each stamped with `term`, then flushes once.
async fn write_batch(
    out: &mut BufWriter<OwnedWriteHalf>,
    first: MasterToCs,
    rx: &mut mpsc::Receiver<MasterToCs>,
    term: u64,
) -> Result<(), FrameError> {
    write_frame(out, 0, &FromMaster { term, msg: first }).await?;
    while let Ok(msg) = rx.try_recv() {
        write_frame(out, 0, &FromMaster { term, msg }).await?;
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
                if !registry.meta.is_leader() {
                    return Err(ConnError::NotLeader);
                }
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
        CsToMaster::Heartbeat { disks } => {
            if let Some(server) = inner.servers.get_mut(&key) {
                server.disks = disks;
            }
        }
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
