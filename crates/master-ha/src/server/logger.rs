//! The metalogger port: each logger gets a snapshot of the applied metadata, then every
//! applied changelog entry after it, in order.
//!
//! The subscription to applied entries is taken *before* the snapshot, so nothing falls between
//! the two: entries at or below the snapshot's index are skipped. A logger that falls so far
//! behind that the broadcast drops entries gets a fresh snapshot instead of a gap.
//!
//! Only the leader serves loggers: a follower answers the hello with `NotLeader` naming the
//! leader's logger port and closes, and a leader that steps down closes its logger
//! connections, so loggers always follow the current leader's changelog.

use super::{Service, Shutdown};
use mfsha_proto::cluster_key::{self, KeyedPort};
use mfsha_proto::cs::MASTER_HEARTBEAT_MS;
use mfsha_proto::frame::{read_frame, write_frame, FrameError};
use mfsha_proto::gate::{within_fd_limit, Gate, GateLimits};
use mfsha_proto::logger::{LoggerToMaster, MasterToLogger, SNAPSHOT_PART_BYTES};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use tracing::Instrument;

/// Most entries sent in one frame; keeps frames far below the limit.
const ENTRIES_PER_FRAME: usize = 1024;
/// Metalogger connections open at once, and from one address.
const LOGGER_CONNECTIONS: GateLimits = GateLimits { per_address: 8, total: 64 };
/// A logger must say hello this soon after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts loggers until shutdown.
pub async fn serve_loggers(listener: TcpListener, service: Arc<Service>, shutdown: Shutdown) {
    let gate = Gate::new("metalogger", within_fd_limit(LOGGER_CONNECTIONS, 0.05));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a metalogger failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.triggered() => return,
        };
        let Ok(admitted) = gate.admit(peer) else { continue };
        let service = service.clone();
        let span = tracing::info_span!("logger", %peer);
        tokio::spawn(
            async move {
                let peer = peer.to_string();
                match serve_logger(stream, &peer, &service).await {
                    Ok(()) => tracing::info!("metalogger disconnected"),
                    Err(e) => tracing::warn!(error = %e, "metalogger connection closed"),
                }
                let of_peer = format!("({peer})");
                service.loggers.lock().retain(|name| !name.ends_with(&of_peer));
                service.logger_acks.lock().retain(|name, _| !name.ends_with(&of_peer));
                drop(admitted);
            }
            .instrument(span),
        );
    }
}

#[derive(Debug, thiserror::Error)]
enum LoggerLinkError {
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("no hello within {0:?}")]
    NoHello(Duration),
    #[error("expected hello first, got {0}")]
    NotHello(String),
    #[error("entry {first} would follow {sent}: gap in the applied stream")]
    Gap { first: u64, sent: u64 },
    #[error("the metalogger belongs to cluster {theirs:?}, this master to {ours:?}: check the metalogger's masters and cluster_id")]
    WrongCluster { theirs: String, ours: String },
    #[error("refused on the metalogger port: {0}")]
    Key(#[from] cluster_key::HandshakeError),
    #[error("no snapshot available: {0}")]
    NoSnapshot(mfsha_proto::types::Status),
}

async fn serve_logger(
    stream: TcpStream,
    peer: &str,
    service: &Service,
) -> Result<(), LoggerLinkError> {
    stream.set_nodelay(true).ok();
    let mut stream = stream;
    cluster_key::verify(&mut stream, service.key.as_ref(), KeyedPort::Logger).await?;
    let (mut reader, mut writer) = stream.into_split();
    let hello = tokio::time::timeout(HELLO_TIMEOUT, read_frame::<_, LoggerToMaster>(&mut reader))
        .await
        .map_err(|_| LoggerLinkError::NoHello(HELLO_TIMEOUT))??;
    let name = match hello.body {
        LoggerToMaster::Hello { name, applied, cluster } => {
            if let Some(theirs) = cluster.filter(|theirs| *theirs != service.cluster_id) {
                let ours = service.cluster_id.clone();
                return Err(LoggerLinkError::WrongCluster { theirs, ours });
            }
            tracing::info!(%name, applied, "metalogger connected");
            name
        }
        other => return Err(LoggerLinkError::NotHello(format!("{other:?}"))),
    };
    let Some(term) = service.leadership.leading_term() else {
        let leader_hint = service.leadership.hint().logger;
        tracing::info!(%name, hint = ?leader_hint, "not the leader; redirecting the metalogger");
        write_frame(&mut writer, 0, &MasterToLogger::NotLeader { leader_hint }).await?;
        return Ok(());
    };
    let key = format!("{name} ({peer})");
    service.loggers.lock().push(key.clone());
    let (want_tx, mut want_rx) = mpsc::channel::<Result<LoggerToMaster, FrameError>>(8);
    let read_task = tokio::spawn(async move {
        loop {
            let frame = read_frame::<_, LoggerToMaster>(&mut reader).await;
            let stop = frame.is_err();
            if want_tx.send(frame.map(|f| f.body)).await.is_err() || stop {
                return;
            }
        }
    });
    let result = tokio::select! {
        result = stream_to_logger(&mut writer, service, &key, &mut want_rx) => result,
        () = service.leadership.ended(term) => {
            tracing::info!("closing metalogger connection: this master stopped leading");
            Ok(())
        }
    };
    read_task.abort();
    result
}

/// Sends a snapshot, then entries, resending a snapshot when asked or when we fell behind.
async fn stream_to_logger(
    writer: &mut OwnedWriteHalf,
    service: &Service,
    key: &str,
    from_logger: &mut mpsc::Receiver<Result<LoggerToMaster, FrameError>>,
) -> Result<(), LoggerLinkError> {
    let mut applied = service.meta.subscribe_applied();
    let mut sent = send_snapshot(writer, service).await?;
    let mut beat = tokio::time::interval(Duration::from_millis(MASTER_HEARTBEAT_MS));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => write_frame(writer, 0, &MasterToLogger::Heartbeat).await?,
            event = applied.recv() => match event {
                Ok(first) => sent = send_entries(writer, &mut applied, first, sent).await?,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "metalogger fell behind; sending a fresh snapshot");
                    applied = service.meta.subscribe_applied();
                    sent = send_snapshot(writer, service).await?;
                }
                Err(RecvError::Closed) => return Ok(()), // the node stopped
            },
            msg = from_logger.recv() => match msg {
                Some(Ok(LoggerToMaster::WantSnapshot)) => {
                    applied = service.meta.subscribe_applied();
                    sent = send_snapshot(writer, service).await?;
                }
                Some(Ok(LoggerToMaster::Ack { index })) => {
                    tracing::trace!(index, "logger ack");
                    service.logger_acks.lock().insert(key.to_string(), index);
                }
                Some(Ok(LoggerToMaster::Hello { .. })) => {
                    return Err(LoggerLinkError::NotHello("a second hello".into()))
                }
                Some(Err(e)) if e.is_clean_close() => return Ok(()),
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
}

/// Sends the current snapshot in parts; returns its index.
async fn send_snapshot(
    writer: &mut OwnedWriteHalf,
    service: &Service,
) -> Result<u64, LoggerLinkError> {
    let (index, term, blob) = service.meta.snapshot().await.map_err(LoggerLinkError::NoSnapshot)?;
    let crc = crc32c::crc32c(&blob);
    let mut offset = 0usize;
    loop {
        let end = (offset + SNAPSHOT_PART_BYTES).min(blob.len());
        let last = end == blob.len();
        let part = MasterToLogger::SnapshotPart {
            index,
            term,
            offset: offset as u64,
            data: serde_bytes::ByteBuf::from(blob[offset..end].to_vec()),
            last,
            crc32c: if last { crc } else { 0 },
        };
        write_frame(writer, 0, &part).await?;
        if last {
            return Ok(index);
        }
        offset = end;
    }
}

/// Sends `first` and whatever else is already queued, skipping entries at or below `sent`.
async fn send_entries(
    writer: &mut OwnedWriteHalf,
    applied: &mut broadcast::Receiver<(u64, u64, Arc<Vec<u8>>)>,
    first: (u64, u64, Arc<Vec<u8>>),
    mut sent: u64,
) -> Result<u64, LoggerLinkError> {
    let mut batch = vec![first];
    while batch.len() < ENTRIES_PER_FRAME {
        match applied.try_recv() {
            Ok(event) => batch.push(event),
            Err(_) => break, // empty, or lagged: the next recv() reports the lag
        }
    }
    let entries: Vec<_> = batch
        .into_iter()
        .filter(|(index, _, _)| *index > sent)
        .map(|(index, term, data)| (index, term, serde_bytes::ByteBuf::from(data.as_ref().clone())))
        .collect();
    if let Some(last) = entries.last() {
        if entries[0].0 != sent + 1 {
            // Applied entries are broadcast in order; a gap is a bug here, not the logger's.
            tracing::error!(
                first = entries[0].0,
                sent,
                "gap in the applied stream to a metalogger"
            );
            return Err(LoggerLinkError::Gap { first: entries[0].0, sent });
        }
        sent = last.0;
        write_frame(writer, 0, &MasterToLogger::Entries(entries)).await?;
    }
    Ok(sent)
}
