//! Raft traffic between masters over TCP (the peer port, 9423).
//!
//! Outgoing: [`TcpTransport`] is the node's [`Transport`]. The Raft thread hands it messages
//! without blocking; one task per peer keeps a connection open (reconnecting with backoff) and
//! writes the messages in frames, coalescing whatever is queued. A full queue or a dead peer
//! drops messages: Raft resends what matters.
//!
//! Incoming: [`serve_peers`] accepts connections from the configured peers only. The first
//! frame names the caller; every later frame is one Raft message handed to the node. A bad
//! frame or an unknown caller closes that connection with a warning naming the address.

use super::Shutdown;
use crate::node::{MetaHandle, Transport};
use mfsha_proto::frame::{self, FrameReader};
use mfsha_proto::peer::PeerMessage;
use protobuf::Message as _;
use raft::eraftpb::Message;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::Instrument;

/// The name peers exchange in `Hello`, so masters of two different clusters never talk Raft.
pub const CLUSTER_NAME: &str = "mfsha";
/// Raft messages queued per peer before new ones are dropped.
const QUEUE_PER_PEER: usize = 4096;
/// Longest wait between reconnection attempts to a peer.
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Sends Raft messages to the other masters.
pub struct TcpTransport {
    queues: HashMap<u64, mpsc::Sender<Message>>,
}

impl TcpTransport {
    /// Starts one sender task per peer on the current Tokio runtime.
    pub fn start(node_id: u64, peers: &[(u64, String)], shutdown: Shutdown) -> TcpTransport {
        let mut queues = HashMap::new();
        for (id, addr) in peers {
            let (tx, rx) = mpsc::channel(QUEUE_PER_PEER);
            let span = tracing::info_span!("peer_out", peer = id, %addr);
            tokio::spawn(send_loop(node_id, addr.clone(), rx, shutdown.clone()).instrument(span));
            queues.insert(*id, tx);
        }
        TcpTransport { queues }
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, msg: Message) {
        let Some(queue) = self.queues.get(&msg.to) else {
            tracing::error!(to = msg.to, "raft message for a node not in `peers`; dropped");
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(msg)) = queue.try_send(msg) {
            tracing::debug!(to = msg.to, "peer queue full; raft message dropped (raft resends)");
        }
    }
}

async fn send_loop(
    node_id: u64,
    addr: String,
    mut rx: mpsc::Receiver<Message>,
    shutdown: Shutdown,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let stream = tokio::select! {
            stream = TcpStream::connect(&addr) => stream,
            () = shutdown.triggered() => return,
        };
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "cannot connect to peer; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        stream.set_nodelay(true).ok();
        tracing::info!("connected to peer");
        match send_messages(node_id, &mut stream, &mut rx, &shutdown).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "peer connection lost; reconnecting"),
        }
    }
}

/// Writes `Hello`, then queued messages until shutdown (`Ok`) or a write fails (`Err`).
async fn send_messages(
    node_id: u64,
    stream: &mut TcpStream,
    rx: &mut mpsc::Receiver<Message>,
    shutdown: &Shutdown,
) -> Result<(), frame::FrameError> {
    let mut buf = Vec::with_capacity(64 << 10);
    let hello = PeerMessage::Hello { from: node_id, cluster: CLUSTER_NAME.into() };
    frame::encode(0, &hello, &mut buf)?;
    stream.write_all(&buf).await?;
    loop {
        buf.clear();
        let first = tokio::select! {
            msg = rx.recv() => msg,
            () = shutdown.triggered() => return Ok(()),
        };
        let Some(first) = first else { return Ok(()) };
        encode_message(&first, &mut buf);
        while buf.len() < (1 << 20) {
            match rx.try_recv() {
                Ok(msg) => encode_message(&msg, &mut buf),
                Err(_) => break,
            }
        }
        stream.write_all(&buf).await?;
    }
}

fn encode_message(msg: &Message, buf: &mut Vec<u8>) {
    let bytes = match msg.write_to_bytes() {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(error = %e, to = msg.to, "raft message does not encode; dropped");
            return;
        }
    };
    let body = PeerMessage::Raft(serde_bytes::ByteBuf::from(bytes));
    if let Err(e) = frame::encode(0, &body, buf) {
        // A snapshot larger than a frame cannot travel this way; raft retries it and the
        // operator sees why followers do not catch up.
        tracing::error!(error = %e, to = msg.to, kind = ?msg.get_msg_type(),
            "raft message too large for one frame; dropped");
    }
}

/// Accepts peer connections until shutdown; `peers` are the node ids allowed to call.
pub async fn serve_peers(
    listener: TcpListener,
    meta: MetaHandle,
    peers: Vec<u64>,
    shutdown: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.triggered() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let span = tracing::info_span!("peer_in", %addr);
                let (meta, peers, shutdown) = (meta.clone(), peers.clone(), shutdown.clone());
                tokio::spawn(
                    async move {
                        tokio::select! {
                            result = receive(stream, &meta, &peers) => if let Err(reason) = result {
                                tracing::warn!(%addr, %reason, "closed peer connection");
                            },
                            () = shutdown.triggered() => {}
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a peer connection failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads `Hello` then Raft messages from one peer. `Ok` on a clean close.
async fn receive(stream: TcpStream, meta: &MetaHandle, peers: &[u64]) -> Result<(), String> {
    stream.set_nodelay(true).ok();
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut buf = Vec::new();
    let mut from = None;
    loop {
        match FrameReader::read_into(&mut reader, &mut buf).await {
            Ok(()) => {}
            Err(e) if e.is_clean_close() => return Ok(()),
            Err(e) => return Err(format!("bad frame: {e}")),
        }
        let message =
            frame::decode_body::<PeerMessage>(&buf).map_err(|e| format!("bad frame: {e}"))?;
        match (message.body, from) {
            (PeerMessage::Hello { from: id, cluster }, None) => {
                if cluster != CLUSTER_NAME || !peers.contains(&id) {
                    return Err(format!(
                        "caller says it is node {id} of cluster {cluster:?}; not a configured peer"
                    ));
                }
                tracing::info!(peer = id, "peer connected");
                from = Some(id);
            }
            (PeerMessage::Raft(bytes), Some(id)) => {
                if let Err(status) = meta.step_bytes(&bytes) {
                    // Full inbox or stopping: drop, raft resends. Garbage: close.
                    if status == mfsha_proto::types::Status::Invalid {
                        return Err(format!("node {id} sent a raft message that does not decode"));
                    }
                }
            }
            (_, None) => return Err("first frame is not Hello".into()),
            (PeerMessage::Hello { .. }, Some(id)) => {
                return Err(format!("node {id} sent a second Hello"));
            }
        }
    }
}
