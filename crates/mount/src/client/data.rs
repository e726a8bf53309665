//! Talking to chunkservers: a connection pool, reads that fall back to another copy, and
//! chain writes.
//!
//! One multiplexed connection per chunkserver carries every request to it (many in flight).
//! A connection that failed is dropped from the pool and made again on next use.

use mfsha_proto::client::ChunkWrite;
use mfsha_proto::data::{block_crcs, check_block_crcs, DataReply, DataRequest, MAX_IO_BYTES};
use mfsha_proto::types::{ChunkLocation, Reply, ServerAddr, Status};
use mfsha_proto::RpcClient;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

type DataRpc = RpcClient<DataRequest, Reply<DataReply>>;

/// Bytes per data request: large enough to amortise a round trip, small enough that several
/// requests of one flush travel in parallel.
pub const PIECE_BYTES: u32 = 1 << 20;
const _: () = assert!(PIECE_BYTES <= MAX_IO_BYTES);

/// Why one chunkserver request failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("chunkserver {server}: {status}")]
    Status { server: String, status: Status },
    #[error("chunkserver {server}: {reason}")]
    Transport { server: String, reason: String },
    #[error("chunkserver {server} gave an unexpected answer: {what}")]
    Unexpected { server: String, what: String },
    #[error("chunkserver {server} sent bytes of chunk {chunk:016X} that fail their CRC ({mismatch}): damaged on the way; another copy is read")]
    Crc { server: String, chunk: u64, mismatch: mfsha_proto::data::CrcMismatch },
}

/// Connections to chunkservers, one per server.
pub struct DataPool {
    conns: Mutex<HashMap<String, DataRpc>>,
    timeout: Duration,
}

impl DataPool {
    /// `timeout` bounds each request (a chain write includes the whole chain).
    pub fn new(timeout: Duration) -> Self {
        DataPool { conns: Mutex::new(HashMap::new()), timeout }
    }

    async fn client(&self, server: &str) -> Result<DataRpc, DataError> {
        if let Some(c) = self.conns.lock().get(server) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let transport =
            |reason: String| DataError::Transport { server: server.to_string(), reason };
        let rpc = match tokio::time::timeout(self.timeout, DataRpc::connect(server)).await {
            Ok(Ok(rpc)) => rpc,
            Ok(Err(e)) => return Err(transport(e.to_string())),
            Err(_) => return Err(transport("connect timed out".into())),
        };
        // Another task may have connected meanwhile; either connection works, keep the newest.
        self.conns.lock().insert(server.to_string(), rpc.clone());
        Ok(rpc)
    }

    /// One request to one chunkserver.
    pub async fn call(
        &self,
        server: &ServerAddr,
        req: DataRequest,
    ) -> Result<DataReply, DataError> {
        let name = server.to_string();
        let rpc = self.client(&name).await?;
        let ms = self.timeout.as_millis() as u64;
        match rpc.call_timeout(req, ms).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(status)) => Err(DataError::Status { server: name, status }),
            Err(e) => {
                self.forget(&name, &rpc);
                Err(DataError::Transport { server: name, reason: e.to_string() })
            }
        }
    }

    fn forget(&self, name: &str, failed: &DataRpc) {
        let mut conns = self.conns.lock();
        if conns.get(name).is_some_and(|c| c.is_closed() || failed.is_closed()) {
            conns.remove(name);
        }
    }

    /// Reads `size` bytes at `offset` of a chunk from the first copy that answers; the other
    /// copies are tried in order when one fails. Errors of every copy are returned if all fail.
    pub async fn read(
        self: &Arc<Self>,
        loc: &ChunkLocation,
        offset: u32,
        size: u32,
    ) -> Result<Vec<u8>, Vec<DataError>> {
        let mut errors = Vec::new();
        for server in &loc.servers {
            match self.read_from(server, loc, offset, size).await {
                Ok(data) => return Ok(data),
                Err(e) => {
                    tracing::warn!(chunk = loc.chunk_id, version = loc.version, error = %e,
                        "chunk read failed; trying another copy");
                    errors.push(e);
                }
            }
        }
        Err(errors)
    }

    /// Reads from one server, pieces in parallel.
    async fn read_from(
        self: &Arc<Self>,
        server: &ServerAddr,
        loc: &ChunkLocation,
        offset: u32,
        size: u32,
    ) -> Result<Vec<u8>, DataError> {
        if size <= PIECE_BYTES {
            // One piece (small and random reads): no task to spawn and join.
            let (chunk_id, version, token) = (loc.chunk_id, loc.version, loc.token);
            let req = DataRequest::Read { chunk_id, version, offset, size, token };
            let reply = self.call(server, req).await?;
            return checked_data(server, chunk_id, offset, size, reply);
        }
        let mut tasks = JoinSet::new();
        let mut at = 0u32;
        while at < size {
            let len = (size - at).min(PIECE_BYTES);
            let req = DataRequest::Read {
                chunk_id: loc.chunk_id,
                version: loc.version,
                offset: offset + at,
                size: len,
                token: loc.token,
            };
            let (pool, server) = (self.clone(), server.clone());
            tasks.spawn(async move { (at, len, pool.call(&server, req).await) });
            at += len;
        }
        let chunk_id = loc.chunk_id;
        // Pieces arrive in any order; they are joined once, in order, when all are here.
        let mut pieces: Vec<Option<Vec<u8>>> = vec![None; tasks.len()];
        while let Some(joined) = tasks.join_next().await {
            let (at, len, reply) = joined.map_err(|e| join_error(server, e))?;
            let data = checked_data(server, chunk_id, offset + at, len, reply?)?;
            pieces[(at / PIECE_BYTES) as usize] = Some(data);
        }
        let mut out = Vec::with_capacity(size as usize);
        for piece in pieces {
            out.extend_from_slice(&piece.expect("every spawned piece was joined"));
        }
        Ok(out)
    }

    /// Writes `extents` (offset within the chunk, bytes) down the chain of `cw`, then makes them
    /// durable on every copy (`Sync`). Pieces travel in parallel.
    pub async fn write_chain(
        self: &Arc<Self>,
        cw: &ChunkWrite,
        extents: &[(u32, &[u8])],
    ) -> Result<(), DataError> {
        let Some(head) = cw.chain.first() else {
            return Err(DataError::Unexpected {
                server: "-".into(),
                what: "empty write chain".into(),
            });
        };
        let mut tasks = JoinSet::new();
        for &(offset, bytes) in extents {
            for (i, piece) in bytes.chunks(PIECE_BYTES as usize).enumerate() {
                let at = offset + (i as u32) * PIECE_BYTES;
                let req = DataRequest::Write {
                    chunk_id: cw.chunk_id,
                    version: cw.version,
                    offset: at,
                    data: serde_bytes::ByteBuf::from(piece.to_vec()),
                    chain: cw.chain.clone(),
                    hop: 0,
                    token: cw.token,
                    crcs: block_crcs(at, piece),
                };
                let (pool, head) = (self.clone(), head.clone());
                tasks.spawn(async move { pool.call(&head, req).await });
            }
        }
        while let Some(joined) = tasks.join_next().await {
            let reply = joined.map_err(|e| join_error(head, e))??;
            expect(head, reply, |r| matches!(r, DataReply::Written))?;
        }
        let (chunk_id, version, chain, token) =
            (cw.chunk_id, cw.version, cw.chain.clone(), cw.token);
        let sync = DataRequest::Sync { chunk_id, version, chain, hop: 0, token };
        let reply = self.call(head, sync).await?;
        expect(head, reply, |r| matches!(r, DataReply::Synced))
    }
}

fn expect(
    server: &ServerAddr,
    reply: DataReply,
    ok: impl Fn(&DataReply) -> bool,
) -> Result<(), DataError> {
    if ok(&reply) {
        Ok(())
    } else {
        Err(DataError::Unexpected { server: server.to_string(), what: describe(&reply) })
    }
}

/// The bytes of a read's answer, if they are as many as asked for and match their CRCs.
fn checked_data(
    server: &ServerAddr,
    chunk: u64,
    offset: u32,
    size: u32,
    reply: DataReply,
) -> Result<Vec<u8>, DataError> {
    match reply {
        DataReply::Data { data, crcs } if data.len() == size as usize => {
            check_block_crcs(offset, &data, &crcs).map_err(|mismatch| DataError::Crc {
                server: server.to_string(),
                chunk,
                mismatch,
            })?;
            Ok(data.into_vec())
        }
        other => Err(DataError::Unexpected {
            server: server.to_string(),
            what: format!("{} for a {size}-byte read", describe(&other)),
        }),
    }
}

/// A reply named without dumping its payload into a log line.
fn describe(reply: &DataReply) -> String {
    match reply {
        DataReply::Data { data, .. } => format!("{} bytes of data", data.len()),
        DataReply::Written => "Written".into(),
        DataReply::Synced => "Synced".into(),
        DataReply::Stat { version, length } => format!("Stat(version {version}, {length} bytes)"),
    }
}

fn join_error(server: &ServerAddr, e: tokio::task::JoinError) -> DataError {
    DataError::Transport { server: server.to_string(), reason: format!("request task failed: {e}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_bytes_that_fail_their_crcs_are_refused_naming_the_server_and_chunk() {
        let server = ServerAddr { host: "10.0.0.7".into(), port: 9422 };
        let bytes = vec![5u8; 70_000];
        let reply = |data: &[u8]| DataReply::Data {
            data: serde_bytes::ByteBuf::from(data.to_vec()),
            crcs: block_crcs(100, &bytes),
        };
        assert_eq!(checked_data(&server, 0xab, 100, 70_000, reply(&bytes)).unwrap(), bytes);
        let mut damaged = bytes.clone();
        damaged[69_999] ^= 0x80;
        let err = checked_data(&server, 0xab, 100, 70_000, reply(&damaged)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DataError::Crc { .. }), "{err:?}");
        assert!(text.contains("10.0.0.7:9422") && text.contains("00000000000000AB"), "{text}");
    }
}
