//! The data listener (port 9422): answers [`DataRequest`]s from mounts and other chunkservers.
//!
//! * `Read` verifies the CRC of every block it touches; a mismatch answers
//!   `Err(Status::Checksum)` (the client reads another copy) and queues a `Damaged` report.
//! * `Write` stores locally while forwarding to the next server of the chain, and answers only
//!   after both finished, so an acknowledged write is on every copy of the chain.
//! * `Sync` fsyncs here and down the chain the same way.

use crate::store::{blocking, Store};
use mfsha_proto::chunk_token::{unix_now_ms, ChunkToken, TokenError, ANY_VERSION};
use mfsha_proto::cluster_key::ClusterKey;
use mfsha_proto::data::{block_crcs, check_block_crcs, DataReply, DataRequest, MAX_IO_BYTES};
use mfsha_proto::gate::{within_fd_limit, Gate, GateLimits};
use mfsha_proto::rpc::{serve_with, Deadlines, RpcClient};
use mfsha_proto::types::{ChunkId, Reply, ServerAddr, Status, MAX_GOAL};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A connection to another chunkserver.
pub type DataClient = RpcClient<DataRequest, Reply<DataReply>>;

/// Requests one client connection may have in progress at once.
const MAX_IN_FLIGHT: usize = 16;
/// Data connections open at once, and from one address (mounts pool one per chunkserver;
/// chain writes and replication add one per peer chunkserver). At most a quarter of the
/// descriptors: the chunk files need the rest, and a chunkserver out of descriptors would
/// take its disks for failed.
const DATA_CONNECTIONS: GateLimits = GateLimits { per_address: 256, total: 4096 };
/// A pooled data connection idle this long is closed (the mount makes a new one on next use).
const DATA_IDLE: Duration = Duration::from_secs(300);
/// How long a forwarded request may take before the chain counts as broken.
const FORWARD_TIMEOUT_MS: u64 = 60_000;
/// How long connecting to another chunkserver may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections to other chunkservers (chain forwarding, replication), reused across requests.
#[derive(Default)]
pub struct Peers {
    clients: Mutex<HashMap<String, DataClient>>,
    /// The cluster secret, to sign this server's own requests (replication reads).
    key: Option<ClusterKey>,
}

impl Peers {
    pub fn new(key: Option<ClusterKey>) -> Peers {
        Peers { clients: Mutex::default(), key }
    }

    /// A token for this server's own read from another (replication; none without a
    /// cluster secret).
    pub fn read_token(&self, chunk_id: ChunkId, version: u32) -> ChunkToken {
        let sign = |key: &ClusterKey| key.sign_read(chunk_id, version);
        self.key.as_ref().map_or_else(ChunkToken::default, sign)
    }

    /// A live connection to `addr`, opening one if needed.
    pub async fn get(&self, addr: &ServerAddr) -> Result<DataClient, Status> {
        let key = addr.to_string();
        if let Some(c) = self.clients.lock().expect("peers poisoned").get(&key) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let client = match tokio::time::timeout(CONNECT_TIMEOUT, DataClient::connect(&key)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(peer = %key, error = %e, "cannot reach chunkserver");
                return Err(Status::Io);
            }
            Err(_) => {
                tracing::warn!(peer = %key, "connecting to chunkserver timed out");
                return Err(Status::Io);
            }
        };
        self.clients.lock().expect("peers poisoned").insert(key, client.clone());
        Ok(client)
    }

    /// Sends `req` to `addr` and returns its reply; transport failures become `Status::Io`.
    pub async fn call(&self, addr: &ServerAddr, req: DataRequest) -> Reply<DataReply> {
        let client = self.get(addr).await?;
        match client.call_timeout(req, FORWARD_TIMEOUT_MS).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(peer = %addr, error = %e, "chunkserver request failed");
                Err(Status::Io)
            }
        }
    }
}

/// Where one chain write goes.
struct Piece {
    chunk_id: ChunkId,
    version: u32,
    offset: u32,
}

/// The chain of a write or sync as the master gave it, this server's place in it, and the
/// token (signed for this chain when the cluster has a secret).
struct Chain {
    servers: Vec<ServerAddr>,
    hop: u8,
    token: ChunkToken,
}

impl Chain {
    /// A chain longer than any goal, or a place outside it, is refused.
    fn new(servers: Vec<ServerAddr>, hop: u8, token: ChunkToken) -> Result<Chain, Status> {
        if servers.len() > MAX_GOAL as usize || usize::from(hop) >= servers.len() {
            return Err(Status::Invalid);
        }
        Ok(Chain { servers, hop, token })
    }

    /// The next server and its place, if this one is not the last.
    fn next(&self) -> Option<(&ServerAddr, u8)> {
        let hop = self.hop + 1;
        self.servers.get(usize::from(hop)).map(|next| (next, hop))
    }
}

/// The chunk a request is about.
fn chunk_of(req: &DataRequest) -> ChunkId {
    match req {
        DataRequest::Read { chunk_id, .. }
        | DataRequest::Write { chunk_id, .. }
        | DataRequest::Sync { chunk_id, .. }
        | DataRequest::Stat { chunk_id, .. } => *chunk_id,
    }
}

/// What every request handler shares.
pub struct DataService {
    pub store: Arc<Store>,
    pub peers: Arc<Peers>,
    pub metrics: crate::metrics::DataMetrics,
    /// The cluster secret: with it, every request needs a valid chunk token.
    pub key: Option<ClusterKey>,
}

impl DataService {
    /// Answers one request from `peer`, recording it in the metrics.
    pub async fn handle(self: Arc<Self>, peer: &str, req: DataRequest) -> Reply<DataReply> {
        if let Err(refused) = self.check_token(&req) {
            tracing::warn!(%peer, chunk = format_args!("{:016X}", chunk_of(&req)), error = %refused,
                "refused a data request without a valid chunk token");
            return Err(Status::Access);
        }
        let started = std::time::Instant::now();
        let (op, sent) = match &req {
            DataRequest::Read { size, .. } => ("read", *size as u64),
            DataRequest::Write { data, .. } => ("write", data.len() as u64),
            DataRequest::Sync { .. } => ("sync", 0),
            DataRequest::Stat { .. } => ("stat", 0),
        };
        let metrics = self.metrics.clone();
        let reply = self.answer(req).await;
        metrics.record(op, started, sent, &reply);
        reply
    }

    /// Without a cluster secret every request passes; with it, the request's token must allow
    /// it (see `mfsha_proto::chunk_token`).
    fn check_token(&self, req: &DataRequest) -> Result<(), TokenError> {
        let Some(key) = &self.key else { return Ok(()) };
        let (chunk_id, now) = (chunk_of(req), unix_now_ms());
        match req {
            DataRequest::Read { token, version, .. } => {
                key.check_read(token, chunk_id, *version, now)
            }
            DataRequest::Stat { token, .. } => key.check_read(token, chunk_id, ANY_VERSION, now),
            DataRequest::Write { token, version, chain, .. }
            | DataRequest::Sync { token, version, chain, .. } => {
                key.check_write(token, chunk_id, *version, chain, now)
            }
        }
    }

    async fn answer(self: Arc<Self>, req: DataRequest) -> Reply<DataReply> {
        match req {
            DataRequest::Read { chunk_id, version, offset, size, .. } => {
                let data = match self.store.read_cached(chunk_id, version, offset, size) {
                    Some(data) => data,
                    None => {
                        blocking(&self.store, move |s| {
                            s.read_blocking(chunk_id, version, offset, size)
                        })
                        .await?
                    }
                };
                let crcs = block_crcs(offset, &data);
                Ok(DataReply::Data { data: serde_bytes::ByteBuf::from(data), crcs })
            }
            DataRequest::Write { chunk_id, version, offset, data, chain, hop, token, crcs } => {
                // Checked before anything is stored or forwarded: damaged bytes go nowhere.
                if let Err(mismatch) = check_block_crcs(offset, &data, &crcs) {
                    tracing::warn!(chunk = format_args!("{chunk_id:016X}"), hop, error = %mismatch,
                        "refused a write whose bytes fail their CRC (damaged on the way here); \
                         nothing stored or forwarded, the writer retries");
                    return Err(Status::Checksum);
                }
                let chain = Chain::new(chain, hop, token)?;
                self.write(Piece { chunk_id, version, offset }, (data.into_vec(), crcs), chain)
                    .await
            }
            DataRequest::Sync { chunk_id, version, chain, hop, token } => {
                self.sync(chunk_id, version, Chain::new(chain, hop, token)?).await
            }
            DataRequest::Stat { chunk_id, .. } => {
                let (version, length) = self.store.stat(chunk_id)?;
                Ok(DataReply::Stat { version, length })
            }
        }
    }

    async fn write(
        &self,
        piece: Piece,
        (data, crcs): (Vec<u8>, Vec<u32>),
        chain: Chain,
    ) -> Reply<DataReply> {
        let Piece { chunk_id, version, offset } = piece;
        if data.len() > MAX_IO_BYTES as usize {
            return Err(Status::Invalid);
        }
        // The client's token goes down the chain: the master signed it for the whole chain.
        let forward = chain.next().map(|(next, hop)| {
            let req = DataRequest::Write {
                chunk_id,
                version,
                offset,
                data: serde_bytes::ByteBuf::from(data.clone()),
                chain: chain.servers.clone(),
                hop,
                token: chain.token,
                crcs,
            };
            self.forward(next.clone(), req)
        });
        // Every master hears of it in the heartbeats: one elected mid-write leaves it alone.
        self.store.note_write(chunk_id);
        let local =
            blocking(&self.store, move |s| s.write_blocking(chunk_id, version, offset, &data));
        join_forward(local, forward, DataReply::Written).await
    }

    async fn sync(&self, chunk_id: ChunkId, version: u32, chain: Chain) -> Reply<DataReply> {
        let forward = chain.next().map(|(next, hop)| {
            let (servers, token) = (chain.servers.clone(), chain.token);
            let req = DataRequest::Sync { chunk_id, version, chain: servers, hop, token };
            self.forward(next.clone(), req)
        });
        let local = blocking(&self.store, move |s| s.sync_blocking(chunk_id, version));
        join_forward(local, forward, DataReply::Synced).await
    }

    /// Starts forwarding `req` to `next` at once, so it overlaps the local disk work.
    fn forward(
        &self,
        next: ServerAddr,
        req: DataRequest,
    ) -> tokio::task::JoinHandle<Reply<DataReply>> {
        let peers = self.peers.clone();
        tokio::spawn(async move { peers.call(&next, req).await })
    }
}

/// Waits for the local operation and the forwarded one (if any) and answers `done` only if
/// both succeeded. The forward is awaited even when the local part failed, so no request
/// outlives its reply.
async fn join_forward(
    local: impl std::future::Future<Output = Result<(), Status>>,
    forward: Option<tokio::task::JoinHandle<Reply<DataReply>>>,
    done: DataReply,
) -> Reply<DataReply> {
    let local = local.await;
    let downstream = match forward {
        None => Ok(done.clone()),
        Some(handle) => handle.await.unwrap_or(Err(Status::Io)),
    };
    local?;
    match downstream? {
        reply if reply == done => Ok(done),
        other => {
            tracing::warn!(?other, "chain server answered with the wrong reply kind");
            Err(Status::Io)
        }
    }
}

/// Accepts data connections until `shutdown` turns true, then ends every open connection.
pub async fn serve_data(
    listener: TcpListener,
    service: Arc<DataService>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    let gate = Gate::new("chunkserver data", within_fd_limit(DATA_CONNECTIONS, 0.25));
    let deadlines = Deadlines { idle: Some(DATA_IDLE), ..Deadlines::default() };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept on the data port failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(admitted) = gate.admit(peer) else { continue };
        let service = service.clone();
        let open = service.metrics.connections.clone();
        open.inc();
        connections.spawn(async move {
            let who = peer.to_string();
            let handler = move |req: DataRequest| {
                let (service, who) = (service.clone(), who.clone());
                async move { service.handle(&who, req).await }
            };
            let served = serve_with(stream, peer.to_string(), MAX_IN_FLIGHT, deadlines, handler);
            if let Err(e) = served.await {
                tracing::warn!(%peer, error = %e, "data connection closed");
            }
            open.dec();
            drop(admitted);
        });
    }
    connections.shutdown().await;
}
