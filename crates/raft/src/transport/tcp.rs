//! Raft traffic between nodes over TCP (the peer port, 9423).
//!
//! Outgoing: [`TcpTransport`] is the node's [`Transport`]. The node thread hands it messages
//! without blocking. Per peer, one task keeps a connection open (1 s connect timeout, a write
//! timeout, TCP keepalive) and writes ordinary messages in frames, coalescing what is queued;
//! a `MsgSnapshot` instead goes to a task of its own that opens a fresh connection, streams the
//! message in [`SNAPSHOT_PART_BYTES`] parts and waits for the receiver's `SnapshotDone`. Only
//! then is the outcome reported to Raft, so a follower behind the compacted log is never
//! reported caught up by a snapshot that did not arrive.
//!
//! Incoming: [`serve_peers`] accepts connections from the configured members only. The first
//! frame names the caller, the intended receiver and the cluster; a mismatch closes the
//! connection with a warning naming the address. A caller of this cluster that a serving
//! leader's membership no longer names (it was removed while it was down) is told so with
//! `NotMember`, and the connection goes on as before; the caller's sender task, which
//! otherwise only writes, reads that answer and reports it to its node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mfsha_proto::cluster_key::{self, ClusterKey, KeyedPort};
use mfsha_proto::frame::{self, FrameReader};
use mfsha_proto::gate::{within_fd_limit, Gate, GateLimits};
use mfsha_proto::peer::{PeerMessage, SNAPSHOT_PART_BYTES};
use parking_lot::RwLock;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tracing::Instrument;

use super::transfers::{Direction, TransferGuard, Transfers};
use super::{Reports, Transport};
use crate::handle::{Handle, MAX_PEER_MESSAGE_BYTES};
use crate::lifecycle::Shutdown;
use crate::state_machine::StateMachine;

/// Raft messages queued per peer before new ones are dropped.
const QUEUE_PER_PEER: usize = 4096;
/// A connecting peer must send its Hello this soon.
const HELLO_WAIT: Duration = Duration::from_secs(10);
/// A started frame (at most a snapshot part) must be complete this soon.
const FRAME_FINISH: Duration = Duration::from_secs(30);
/// Inbound peer connections open at once, and from one address: the members dial one each
/// (plus a snapshot stream and a reconnect overlapping the old link); the rest is refused.
const PEER_CONNECTIONS: GateLimits = GateLimits { per_address: 16, total: 128 };
/// Longest wait between reconnection attempts to a peer.
const RECONNECT_MAX: Duration = Duration::from_millis(500);
/// A peer that does not accept a connection by then is treated as down (then retried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A write that makes no progress this long means the peer is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the receiver may take to answer a whole snapshot, after its last part.
const SNAPSHOT_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// One snapshot in flight per peer: raft sends another only after the report anyway.
const SNAPSHOTS_PER_PEER: usize = 1;

/// Who this node is, as peers must see it.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    pub node_id: u64,
    pub cluster_id: String,
    /// The cluster secret: proved on every connection this node opens and required of every
    /// caller (`mfsha_proto::cluster_key`); `None` when no `secret_file` is configured.
    pub key: Option<ClusterKey>,
}

struct PeerQueue {
    messages: mpsc::Sender<Message>,
    addr: String,
    snapshots: Arc<Semaphore>,
}

/// Who may call this node, each with the peer address it was added with: the configured
/// peers and the members the replicated address book added since. Shared by the transport
/// (which learns them) and the listener (which checks callers against them).
#[derive(Debug, Clone, Default)]
pub struct PeerSet(Arc<RwLock<BTreeMap<u64, String>>>);

impl PeerSet {
    pub fn new(peers: impl IntoIterator<Item = (u64, String)>) -> PeerSet {
        PeerSet(Arc::new(RwLock::new(peers.into_iter().collect())))
    }

    pub fn contains(&self, id: u64) -> bool {
        self.0.read().contains_key(&id)
    }

    /// The peer address `id` was added with.
    pub fn address(&self, id: u64) -> Option<String> {
        self.0.read().get(&id).cloned()
    }

    fn insert(&self, id: u64, addr: &str) {
        self.0.write().insert(id, addr.to_string());
    }

    fn remove(&self, id: u64) {
        self.0.write().remove(&id);
    }
}

/// Sends Raft messages to the other members.
pub struct TcpTransport {
    me: PeerIdentity,
    queues: HashMap<u64, PeerQueue>,
    /// Peers given at start (their addresses stay); the rest were learned from the book.
    configured: BTreeSet<u64>,
    members: PeerSet,
    /// Set once by `attach`; the sender tasks, started before it, read it when they report.
    reports: Arc<OnceLock<Reports>>,
    /// Not-a-member notices heard before `attach` (a restarted node's first connections
    /// race its node's start), handed over by `attach`.
    early_notices: Arc<parking_lot::Mutex<Vec<(u64, u64)>>>,
    shutdown: Shutdown,
    /// Snapshot tasks are spawned from the node thread, which is outside the runtime.
    runtime: tokio::runtime::Handle,
    /// Snapshot streams under way, both ways (shared with the listener's policy).
    transfers: Transfers,
}

impl TcpTransport {
    /// Starts one sender task per peer on the current Tokio runtime (call it from inside one).
    pub fn start(me: PeerIdentity, peers: &[(u64, String)], shutdown: Shutdown) -> TcpTransport {
        let configured: BTreeSet<u64> = peers.iter().map(|(id, _)| *id).collect();
        let members = PeerSet::default();
        let runtime = tokio::runtime::Handle::current();
        let queues = HashMap::new();
        let transfers = Transfers::default();
        let mut transport = TcpTransport {
            me,
            queues,
            configured,
            members,
            reports: Arc::new(OnceLock::new()),
            early_notices: Arc::default(),
            shutdown,
            runtime,
            transfers,
        };
        for (id, addr) in peers {
            transport.add_peer(*id, addr);
        }
        transport
    }

    /// Who may call this node, for [`serve_peers`]: follows what the transport learns.
    pub fn policy(&self, max_snapshot_bytes: u64) -> PeerPolicy {
        PeerPolicy {
            me: self.me.clone(),
            members: self.members.clone(),
            max_snapshot_bytes,
            transfers: self.transfers.clone(),
        }
    }

    /// The snapshot streams under way, for status views.
    pub fn transfers(&self) -> Transfers {
        self.transfers.clone()
    }

    /// One sender task per peer; dropping its queue ends the task.
    fn add_peer(&mut self, id: u64, addr: &str) {
        let (messages, rx) = mpsc::channel(QUEUE_PER_PEER);
        let span = tracing::info_span!("peer_out", peer = id, %addr);
        let link = self.link(id, addr);
        self.runtime.spawn(send_loop(link, rx, self.shutdown.clone()).instrument(span));
        let snapshots = Arc::new(Semaphore::new(SNAPSHOTS_PER_PEER));
        self.queues.insert(id, PeerQueue { messages, addr: addr.to_string(), snapshots });
        self.members.insert(id, addr);
    }

    fn link(&self, to: u64, addr: &str) -> Link {
        let (reports, early_notices) = (self.reports.clone(), self.early_notices.clone());
        Link { me: self.me.clone(), to, addr: addr.to_string(), reports, early_notices }
    }

    fn send_snapshot(&self, msg: Message) {
        let (to, reports) = (msg.to, self.reports.clone());
        let Some(queue) = self.queues.get(&to) else { return };
        let Ok(permit) = queue.snapshots.clone().try_acquire_owned() else {
            // Raft only sends another once the last was reported; this one is extra.
            report(&reports, to, false);
            return;
        };
        let link = self.link(to, &queue.addr);
        let shutdown = self.shutdown.clone();
        let span = tracing::info_span!("snapshot_out", peer = to, addr = %link.addr);
        let transfers = self.transfers.clone();
        self.runtime.spawn(
            async move {
                let result = tokio::select! {
                    result = stream_snapshot(&link, &msg, &transfers) => result,
                    () = shutdown.triggered() => Err("shutting down".into()),
                };
                match &result {
                    Ok(()) => tracing::info!("snapshot delivered"),
                    Err(reason) => tracing::warn!(%reason, "snapshot not delivered; raft retries"),
                }
                report(&reports, to, result.is_ok());
                drop(permit);
            }
            .instrument(span),
        );
    }
}

fn report(reports: &OnceLock<Reports>, to: u64, delivered: bool) {
    if let Some(reports) = reports.get() {
        reports.snapshot(to, delivered);
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, msg: Message) {
        if msg.get_msg_type() == MessageType::MsgSnapshot {
            self.send_snapshot(msg);
            return;
        }
        let Some(queue) = self.queues.get(&msg.to) else {
            tracing::error!(to = msg.to, "raft message for a node that is not a peer; dropped");
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(msg)) = queue.messages.try_send(msg) {
            tracing::debug!(to = msg.to, "peer queue full; raft message dropped (raft resends)");
        }
    }

    fn attach(&mut self, reports: Reports) {
        // Under the notices' lock, so a sender task either queued its notice before the
        // reports were set (handed over here) or sees them set.
        let mut early = self.early_notices.lock();
        if self.reports.set(reports).is_err() {
            tracing::error!("transport attached twice; the first reports stay");
        }
        let reports = self.reports.get().expect("just set");
        for (from, applied_index) in early.drain(..) {
            reports.not_member(from, applied_index);
        }
    }

    fn learn_peers(&mut self, peers: &[(u64, String)]) {
        for (id, addr) in peers {
            let known = self.queues.get(id).map(|queue| queue.addr.as_str());
            if self.configured.contains(id) || known == Some(addr.as_str()) {
                continue;
            }
            tracing::info!(peer = id, %addr, "peer address from the replicated address book");
            self.add_peer(*id, addr);
        }
        let learned: Vec<u64> = self.queues.keys().copied().collect();
        for id in learned {
            let in_book = peers.iter().any(|(peer, _)| *peer == id);
            if !in_book && !self.configured.contains(&id) {
                tracing::info!(peer = id, "peer left the address book; no longer sending to it");
                self.queues.remove(&id);
                self.members.remove(id);
            }
        }
    }
}

/// One direction of one peer pair.
#[derive(Clone)]
struct Link {
    me: PeerIdentity,
    to: u64,
    addr: String,
    reports: Arc<OnceLock<Reports>>,
    early_notices: Arc<parking_lot::Mutex<Vec<(u64, u64)>>>,
}

impl Link {
    /// Connects (bounded by [`CONNECT_TIMEOUT`]) and says `Hello`.
    async fn connect(&self) -> Result<TcpStream, String> {
        let connect = TcpStream::connect(&self.addr);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| format!("no answer within {} ms", CONNECT_TIMEOUT.as_millis()))?
            .map_err(|e| e.to_string())?;
        configure(&stream);
        let mut stream = stream;
        cluster_key::prove(&mut stream, self.me.key.as_ref(), KeyedPort::Peer)
            .await
            .map_err(|e| format!("cluster secret: {e}"))?;
        let hello = PeerMessage::Hello {
            from: self.me.node_id,
            to: self.to,
            cluster: self.me.cluster_id.clone(),
        };
        let mut buf = Vec::new();
        frame::encode(0, &hello, &mut buf).map_err(|e| e.to_string())?;
        write_all(&mut stream, &buf).await?;
        Ok(stream)
    }
}

/// No Nagle delay for heartbeats; keepalive so a silent peer host is noticed.
fn configure(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a peer connection");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1))
        .with_retries(2);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot set TCP keepalive on a peer connection");
    }
}

async fn write_all<W: AsyncWrite + Unpin>(stream: &mut W, bytes: &[u8]) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("write stalled for {} ms", WRITE_TIMEOUT.as_millis())),
    }
}

async fn send_loop(link: Link, mut rx: mpsc::Receiver<Message>, shutdown: Shutdown) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let connected = tokio::select! {
            connected = link.connect() => connected,
            () = shutdown.triggered() => return,
        };
        let mut stream = match connected {
            Ok(stream) => stream,
            Err(reason) => {
                tracing::debug!(%reason, "cannot connect to peer; retrying");
                // What queued meanwhile is stale; raft resends what matters.
                while rx.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        backoff = Duration::from_millis(20);
        tracing::info!("connected to peer");
        let (reading, mut writing) = stream.split();
        let result = tokio::select! {
            result = send_messages(&mut writing, &mut rx, &shutdown) => result,
            ended = link.read_answers(reading) => Err(ended),
        };
        match result {
            Ok(()) => return,
            Err(reason) => tracing::warn!(%reason, "peer connection lost; reconnecting"),
        }
    }
}

impl Link {
    /// The peer writes on this connection only a not-a-member notice (handed to the node);
    /// anything else, or a close, ends the connection. Returns what ended it.
    async fn read_answers(&self, reading: tokio::net::tcp::ReadHalf<'_>) -> String {
        let mut reader = BufReader::with_capacity(1024, reading);
        let mut buf = Vec::new();
        loop {
            match FrameReader::read_within(&mut reader, &mut buf, None, FRAME_FINISH).await {
                Ok(()) => {}
                Err(e) if e.is_clean_close() => return "the peer closed the connection".into(),
                Err(e) => return format!("bad frame from the peer: {e}"),
            }
            match frame::decode_body::<PeerMessage>(&buf).map(|message| message.body) {
                Ok(PeerMessage::NotMember { applied_index }) => {
                    self.heard_not_member(applied_index)
                }
                Ok(other) => {
                    return format!("the peer sent {} on an outgoing connection", other.kind())
                }
                Err(e) => return format!("bad frame from the peer: {e}"),
            }
        }
    }

    fn heard_not_member(&self, applied_index: u64) {
        tracing::info!(
            peer = self.to,
            applied_index,
            "peer says its membership leaves this node out"
        );
        let mut early = self.early_notices.lock();
        match self.reports.get() {
            Some(reports) => reports.not_member(self.to, applied_index),
            None => early.push((self.to, applied_index)),
        }
    }
}

/// Writes queued messages until shutdown (`Ok`) or a write fails (`Err`).
async fn send_messages(
    stream: &mut tokio::net::tcp::WriteHalf<'_>,
    rx: &mut mpsc::Receiver<Message>,
    shutdown: &Shutdown,
) -> Result<(), String> {
    let mut buf = Vec::with_capacity(64 << 10);
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
        write_all(stream, &buf).await?;
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
    if let Err(e) = frame::encode(0, &PeerMessage::Raft(ByteBuf::from(bytes)), buf) {
        // Appends carry at most max_size_per_msg (1 MiB); only a bug gets here.
        tracing::error!(error = %e, to = msg.to, kind = ?msg.get_msg_type(),
            "raft message too large for one frame; dropped");
    }
}

/// Streams one `MsgSnapshot` on a connection of its own and waits for the answer.
async fn stream_snapshot(link: &Link, msg: &Message, transfers: &Transfers) -> Result<(), String> {
    let wire = SnapshotWire::new(msg)?;
    let mut stream = link.connect().await?;
    let total = wire.len() as u64;
    let progress = transfers.begin(link.to, Direction::Sending, total);
    let mut buf = Vec::with_capacity(SNAPSHOT_PART_BYTES + 64);
    let mut offset = 0usize;
    while offset < wire.len() {
        buf.clear();
        let part = wire.part(offset, SNAPSHOT_PART_BYTES);
        let body =
            PeerMessage::SnapshotPart { total, offset: offset as u64, bytes: ByteBuf::from(part) };
        frame::encode(0, &body, &mut buf).map_err(|e| e.to_string())?;
        write_all(&mut stream, &buf).await?;
        offset += SNAPSHOT_PART_BYTES.min(wire.len() - offset);
        progress.advance(offset as u64);
    }
    let mut reader = BufReader::new(stream);
    let mut answer = Vec::new();
    let read = FrameReader::read_into(&mut reader, &mut answer);
    tokio::time::timeout(SNAPSHOT_ANSWER_TIMEOUT, read)
        .await
        .map_err(|_| "the receiver did not answer".to_string())?
        .map_err(|e| format!("reading the answer: {e}"))?;
    match frame::decode_body::<PeerMessage>(&answer).map_err(|e| e.to_string())?.body {
        PeerMessage::SnapshotDone { delivered: true, .. } => Ok(()),
        PeerMessage::SnapshotDone { delivered: false, reason } => Err(reason),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// A `MsgSnapshot` as protobuf bytes in three pieces, so that the blob (hundreds of MiB for
/// a big namespace) is streamed from the stored snapshot instead of copied into one encoded
/// message: the message without its snapshot, then the snapshot as field 9 written by hand,
/// `data` (field 1) before `metadata` (field 2). Protobuf lets fields come in any order, so
/// the receiver parses the concatenation as the whole message.
struct SnapshotWire {
    head: Vec<u8>,
    data: bytes::Bytes,
    tail: Vec<u8>,
}

impl SnapshotWire {
    fn new(msg: &Message) -> Result<SnapshotWire, String> {
        let snapshot = msg.get_snapshot();
        let data = snapshot.data.clone(); // shares the stored blob
        let encode_error = |e: protobuf::ProtobufError| format!("snapshot does not encode: {e}");
        let metadata = snapshot.get_metadata().write_to_bytes().map_err(encode_error)?;
        let mut rest = msg.clone();
        rest.clear_snapshot();
        let mut head = rest.write_to_bytes().map_err(encode_error)?;
        let data_field = 1 + varint_len(data.len()) + data.len();
        let metadata_field = 1 + varint_len(metadata.len()) + metadata.len();
        head.push((9 << 3) | 2); // Message.snapshot, length-delimited
        put_varint(&mut head, data_field + metadata_field);
        head.push((1 << 3) | 2); // Snapshot.data
        put_varint(&mut head, data.len());
        let mut tail = vec![(2 << 3) | 2]; // Snapshot.metadata
        put_varint(&mut tail, metadata.len());
        tail.extend_from_slice(&metadata);
        Ok(SnapshotWire { head, data, tail })
    }

    fn len(&self) -> usize {
        self.head.len() + self.data.len() + self.tail.len()
    }

    /// Bytes `offset..offset + max` (fewer at the end), copied out of the pieces.
    fn part(&self, offset: usize, max: usize) -> Vec<u8> {
        let end = (offset + max).min(self.len());
        let mut part = Vec::with_capacity(end - offset);
        let mut start = 0;
        for piece in [&self.head[..], &self.data[..], &self.tail[..]] {
            let (from, to) = (offset.max(start), end.min(start + piece.len()));
            if from < to {
                part.extend_from_slice(&piece[from - start..to - start]);
            }
            start += piece.len();
        }
        part
    }
}

fn varint_len(mut value: usize) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

fn put_varint(out: &mut Vec<u8>, mut value: usize) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Who may call: the members' ids and this node's identity.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    pub me: PeerIdentity,
    pub members: PeerSet,
    /// The largest snapshot accepted (bounds the receiver's memory).
    pub max_snapshot_bytes: u64,
    /// Snapshot streams under way (shared with the transport).
    pub transfers: Transfers,
}

/// Accepts peer connections until shutdown.
pub async fn serve_peers<S: StateMachine>(
    listener: TcpListener,
    node: Handle<S>,
    policy: PeerPolicy,
    shutdown: Shutdown,
) {
    let gate = Gate::new("peer", within_fd_limit(PEER_CONNECTIONS, 0.05));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.triggered() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let Ok(admitted) = gate.admit(addr) else { continue };
                let span = tracing::info_span!("peer_in", %addr);
                let (node, policy, shutdown) = (node.clone(), policy.clone(), shutdown.clone());
                tokio::spawn(
                    async move {
                        tokio::select! {
                            result = receive(stream, addr, &node, &policy) => if let Err(reason) = result {
                                tracing::warn!(%addr, %reason, "closed peer connection");
                            },
                            () = shutdown.triggered() => {}
                        }
                        drop(admitted);
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

/// Reads `Hello`, then Raft messages or one snapshot's parts. `Ok` on a clean close.
async fn receive<S: StateMachine>(
    stream: TcpStream,
    addr: SocketAddr,
    node: &Handle<S>,
    policy: &PeerPolicy,
) -> Result<(), String> {
    configure(&stream);
    let mut stream = stream;
    // The secret before anything else: a caller without it is told nothing, not even
    // whether the cluster id it names is this one.
    cluster_key::verify(&mut stream, policy.me.key.as_ref(), KeyedPort::Peer)
        .await
        .map_err(|e| format!("refused a caller on the peer port: {e}"))?;
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut buf = Vec::new();
    let from = match read_frame(&mut reader, &mut buf, Some(HELLO_WAIT)).await? {
        Some(PeerMessage::Hello { from, to, cluster }) => {
            check_caller(policy, from, to, &cluster)?;
            if let Some(applied_index) = node.removal_notice_for(from) {
                // Informs only: this node may be the one behind (it has not applied the
                // caller's addition), and then it must go on hearing the caller.
                tell_not_member(&mut reader, from, applied_index).await?;
            }
            check_source(policy, check_member(policy, from)?, addr.ip()).await?
        }
        Some(_) => return Err("first frame is not Hello".into()),
        None => return Ok(()),
    };
    tracing::debug!(peer = from, %addr, "peer connected");
    node.peer_connected(from);
    let mut snapshot: Option<Vec<u8>> = None;
    let mut progress: Option<TransferGuard> = None;
    loop {
        let Some(message) = read_frame(&mut reader, &mut buf, None).await? else {
            return Ok(());
        };
        let kind = message.kind();
        match message {
            PeerMessage::Raft(bytes) => step(node, from, &bytes)?,
            PeerMessage::SnapshotPart { total, offset, bytes } => {
                let whole = add_part(&mut snapshot, policy, total, offset, &bytes)?;
                progress
                    .get_or_insert_with(|| {
                        policy.transfers.begin(from, Direction::Receiving, total)
                    })
                    .advance(offset + bytes.len() as u64);
                if whole {
                    let data = snapshot.take().expect("a whole snapshot");
                    return answer_snapshot(reader, node, from, data).await;
                }
            }
            PeerMessage::Hello { .. } => return Err(format!("node {from} sent a second Hello")),
            PeerMessage::SnapshotDone { .. } | PeerMessage::NotMember { .. } => {
                return Err(format!("unexpected {kind} from node {from}"))
            }
        }
    }
}

/// Reads one peer frame; its first byte within `wait` when given, the rest within
/// [`FRAME_FINISH`] (a peer that drips bytes is cut off, see [`FrameReader::read_within`]).
async fn read_frame(
    reader: &mut BufReader<TcpStream>,
    buf: &mut Vec<u8>,
    wait: Option<Duration>,
) -> Result<Option<PeerMessage>, String> {
    match FrameReader::read_within(reader, buf, wait, FRAME_FINISH).await {
        Ok(()) => {}
        Err(e) if e.is_clean_close() => return Ok(None),
        Err(e) => return Err(format!("bad frame: {e}")),
    }
    let message = frame::decode_body::<PeerMessage>(buf).map_err(|e| format!("bad frame: {e}"))?;
    Ok(Some(message.body))
}

/// A caller of another cluster, or one that meant another node, is refused before anything
/// else (it is told nothing about this cluster's membership).
fn check_caller(policy: &PeerPolicy, from: u64, to: u64, cluster: &str) -> Result<(), String> {
    if cluster != policy.me.cluster_id {
        return Err(format!(
            "caller says it is node {from} of cluster {cluster:?}; this node is in cluster {:?}",
            policy.me.cluster_id
        ));
    }
    if to != policy.me.node_id {
        return Err(format!(
            "caller (node {from}) meant to reach node {to}, this is node {}: check its peer \
             addresses",
            policy.me.node_id
        ));
    }
    Ok(())
}

fn check_member(policy: &PeerPolicy, from: u64) -> Result<u64, String> {
    if !policy.members.contains(from) || from == policy.me.node_id {
        return Err(format!("caller says it is node {from}, which is not a member"));
    }
    Ok(from)
}

/// A member must call from the host it was added with: the secret says the caller is one
/// of the cluster's hosts, this that it is the member it claims to be. A peer address given
/// as an IP is checked strictly; a host name is resolved, and if that fails the caller is let
/// in with a warning (a DNS outage must not split the group; the secret still holds).
async fn check_source(policy: &PeerPolicy, from: u64, caller: IpAddr) -> Result<u64, String> {
    let Some(added) = policy.members.address(from) else {
        return Err(format!("caller says it is node {from}, which is not a member"));
    };
    let resolved = tokio::time::timeout(RESOLVE_LIMIT, tokio::net::lookup_host(added.as_str()));
    let ips: Vec<IpAddr> = match resolved.await {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        Ok(Err(e)) => return resolve_failed(from, &added, &e.to_string()),
        Err(_) => return resolve_failed(from, &added, "no answer within 2 s"),
    };
    if ips.iter().any(|ip| same_ip(*ip, caller)) {
        return Ok(from);
    }
    Err(format!(
        "caller says it is node {from} but connects from {caller}, and node {from} was added \
         with peer address {added} ({ips:?}): refused. If that node's connections leave from \
         another address, give it that one as its peer address"
    ))
}

/// How long a member's host name may take to resolve.
const RESOLVE_LIMIT: Duration = Duration::from_secs(2);

fn resolve_failed(from: u64, added: &str, why: &str) -> Result<u64, String> {
    tracing::warn!(peer = from, %added, why,
        "cannot resolve the peer address node {from} was added with; letting it in unchecked");
    Ok(from)
}

/// IPv4 and its IPv4-mapped IPv6 form are the same caller.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Tells a caller this node's membership leaves out so, with `NotMember`.
async fn tell_not_member(
    reader: &mut BufReader<TcpStream>,
    from: u64,
    applied_index: u64,
) -> Result<(), String> {
    let mut buf = Vec::new();
    let notice = PeerMessage::NotMember { applied_index };
    frame::encode(0, &notice, &mut buf).map_err(|e| e.to_string())?;
    write_all(reader.get_mut(), &buf).await?;
    tracing::info!(
        peer = from,
        applied_index,
        "told node {from} that this node's membership as of index {applied_index} leaves it out"
    );
    Ok(())
}

fn step<S: StateMachine>(node: &Handle<S>, from: u64, bytes: &[u8]) -> Result<(), String> {
    match node.step_bytes(bytes) {
        Ok(()) => Ok(()),
        // Garbage closes the connection; a full inbox or a stopping node drops the message.
        Err(mfsha_proto::types::Status::Invalid) => {
            Err(format!("node {from} sent a raft message that does not decode"))
        }
        Err(_) => Ok(()),
    }
}

/// Adds one part; `Ok(true)` once the snapshot is whole. Parts must come in order and agree
/// on the total, which must be within the policy's bound.
fn add_part(
    snapshot: &mut Option<Vec<u8>>,
    policy: &PeerPolicy,
    total: u64,
    offset: u64,
    bytes: &[u8],
) -> Result<bool, String> {
    let limit = policy.max_snapshot_bytes.min(MAX_PEER_MESSAGE_BYTES as u64);
    if total > limit {
        return Err(format!("snapshot of {total} bytes exceeds the limit of {limit} bytes"));
    }
    let data = snapshot.get_or_insert_with(|| Vec::with_capacity(total as usize));
    if offset != data.len() as u64 || offset + bytes.len() as u64 > total {
        return Err(format!("snapshot part at {offset} out of order ({} held)", data.len()));
    }
    data.extend_from_slice(bytes);
    Ok(data.len() as u64 == total)
}

async fn answer_snapshot<S: StateMachine>(
    reader: BufReader<TcpStream>,
    node: &Handle<S>,
    from: u64,
    data: Vec<u8>,
) -> Result<(), String> {
    let len = data.len();
    let result = node.step_snapshot_bytes(data);
    let (delivered, reason) = match result {
        Ok(()) => (true, String::new()),
        Err(status) => (false, format!("the receiving node refused it: {status:?}")),
    };
    tracing::info!(peer = from, bytes = len, delivered, "snapshot received");
    let mut buf = Vec::new();
    let done = PeerMessage::SnapshotDone { delivered, reason };
    frame::encode(0, &done, &mut buf).map_err(|e| e.to_string())?;
    let mut stream = reader.into_inner();
    write_all(&mut stream, &buf).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{ConfState, Snapshot, SnapshotMetadata};

    fn snapshot_message(data: Vec<u8>) -> Message {
        let mut metadata = SnapshotMetadata { index: 1234, term: 7, ..Default::default() };
        metadata.set_conf_state(ConfState { voters: vec![1, 2, 3], ..Default::default() });
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(metadata);
        snapshot.data = data.into();
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgSnapshot);
        (msg.to, msg.from, msg.term, msg.commit) = (2, 1, 7, 1234);
        msg.set_snapshot(snapshot);
        msg
    }

    #[test]
    fn snapshot_wire_parses_as_the_message() {
        // Sizes around the varint boundaries of the data length, and an empty blob.
        for len in [0, 1, 127, 128, 16_383, 16_384, 300_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let msg = snapshot_message(data);
            let wire = SnapshotWire::new(&msg).unwrap();
            let mut bytes = Vec::new();
            let mut offset = 0;
            while offset < wire.len() {
                let part = wire.part(offset, 1000);
                offset += part.len();
                bytes.extend_from_slice(&part);
            }
            assert_eq!(bytes.len(), wire.len(), "parts cover the message at {len}");
            let parsed = Message::parse_from_bytes(&bytes).unwrap();
            assert_eq!(parsed, msg, "data length {len}");
        }
    }
}
