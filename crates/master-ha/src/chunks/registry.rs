//! The in-memory registry: which chunkserver is connected, which copy of which chunk it holds
//! at which version, and which commands are in flight. Plain data and queries; no I/O except
//! handing commands to a connection's bounded send queue.

use mfsha_proto::client::{ChunkserverStatus, CopyInfo};
use mfsha_proto::cs::{DiskInfo, MasterToCs};
use mfsha_proto::types::{ChunkId, ServerAddr, Status, CHUNK_BYTES};
use std::collections::{HashMap, HashSet};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// How long a chunk named as being written in a heartbeat stays untouchable (chunkservers
/// heartbeat every second and name chunks written in the last five).
pub const REPORTED_WRITING_HOLD: std::time::Duration = std::time::Duration::from_secs(3);

/// Identifies one chunkserver *connection* (a reconnecting server gets a new key).
pub type ServerKey = u64;

/// A connected chunkserver.
#[derive(Debug)]
pub struct Server {
    pub key: ServerKey,
    /// The id the chunkserver keeps in its data directories.
    pub server_id: u64,
    pub addr: ServerAddr,
    pub labels: Vec<String>,
    pub disks: Vec<DiskInfo>,
    /// Sent `RegisterDone`: its chunk list is complete.
    pub registered: bool,
    /// Commands for this server, written to its socket by the connection's writer task.
    pub tx: mpsc::Sender<MasterToCs>,
    /// Replications in flight with this server as source or target.
    pub replications: usize,
    /// Deletions in flight on this server.
    pub deletions: usize,
    /// Copies it holds.
    pub copies: u64,
}

impl Server {
    /// Bytes free on disks that take new chunks (healthy, not marked for removal).
    pub fn avail_bytes(&self) -> u64 {
        self.disks
            .iter()
            .filter(|d| !d.damaged && !d.marked_for_removal)
            .map(|d| d.total_bytes.saturating_sub(d.used_bytes))
            .sum()
    }

    /// Used fraction of its healthy, unmarked disks (1.0 when it has none).
    pub fn usage(&self) -> f64 {
        let disks = self.disks.iter().filter(|d| !d.damaged && !d.marked_for_removal);
        let (used, total) =
            disks.fold((0u64, 0u64), |(u, t), d| (u + d.used_bytes, t + d.total_bytes));
        if total == 0 {
            1.0
        } else {
            used as f64 / total as f64
        }
    }

    /// Whether it can take a new copy: registered, with room for a whole chunk.
    pub fn takes_new_chunks(&self) -> bool {
        self.registered && self.avail_bytes() >= CHUNK_BYTES
    }
}

/// One copy of a chunk on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkCopy {
    pub server: ServerKey,
    pub version: u32,
    /// Reported damaged (CRC mismatch or unreadable).
    pub damaged: bool,
    /// On a disk marked for removal: readable, but does not count toward the goal.
    pub marked: bool,
    /// When this entry last changed; the engine leaves copies newer than its view of the
    /// metadata alone (they may reflect a write the view does not know yet).
    pub changed: Instant,
}

/// What a command in flight will change when it succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingKind {
    Create { chunk: ChunkId, version: u32 },
    SetVersion { chunk: ChunkId, version: u32 },
    Delete { chunk: ChunkId },
    Replicate { chunk: ChunkId, version: u32, source: ServerKey },
    Duplicate { chunk: ChunkId, version: u32 },
}

/// A command sent and not yet answered.
#[derive(Debug)]
pub struct Pending {
    pub server: ServerKey,
    pub kind: PendingKind,
    pub sent: Instant,
    pub waiter: Option<oneshot::Sender<Result<(), Status>>>,
}

/// Everything the registry knows, behind one lock.
#[derive(Debug, Default)]
pub struct Inner {
    pub servers: HashMap<ServerKey, Server>,
    pub copies: HashMap<ChunkId, Vec<ChunkCopy>>,
    pub pending: HashMap<u64, Pending>,
    pub next_op: u64,
    pub next_key: ServerKey,
    /// Chunks being written by a client (since `prepare_write`, until `write_end`).
    pub writing: HashMap<ChunkId, Instant>,
    /// Chunks chunkservers said clients wrote to recently (heartbeats), whichever master
    /// handed out the write: when last named. A new leader leaves them alone.
    pub reported_writing: HashMap<ChunkId, Instant>,
    /// Replications in flight per chunk.
    pub replicating: HashMap<ChunkId, usize>,
    /// Chunks with a `SetChunkVersion` proposal in flight.
    pub proposing: HashSet<ChunkId>,
}

impl Inner {
    /// Adds a connection. A server reconnecting with the same id replaces its old entry.
    pub fn add_server(
        &mut self,
        server_id: u64,
        addr: ServerAddr,
        labels: Vec<String>,
        disks: Vec<DiskInfo>,
        tx: mpsc::Sender<MasterToCs>,
    ) -> ServerKey {
        let old: Vec<ServerKey> = self
            .servers
            .values()
            .filter(|s| s.server_id == server_id || s.addr == addr)
            .map(|s| s.key)
            .collect();
        for key in old {
            tracing::info!(server = %addr, "chunkserver reconnected; dropping its old connection's state");
            self.remove_server(key);
        }
        self.next_key += 1;
        let key = self.next_key;
        let server = Server {
            key,
            server_id,
            addr,
            labels,
            disks,
            registered: false,
            tx,
            replications: 0,
            deletions: 0,
            copies: 0,
        };
        self.servers.insert(key, server);
        key
    }

    /// Forgets a connection: its copies, and fails its commands in flight.
    pub fn remove_server(&mut self, key: ServerKey) {
        if self.servers.remove(&key).is_none() {
            return;
        }
        self.copies.retain(|_, list| {
            list.retain(|c| c.server != key);
            !list.is_empty()
        });
        let ops: Vec<u64> =
            self.pending.iter().filter(|(_, p)| p.server == key).map(|(op, _)| *op).collect();
        for op in ops {
            self.finish(op, Err(Status::Io));
        }
        // Replications *from* this server to others are still running there; they end with a
        // Done (or time out). Their source slot is gone with the server.
    }

    /// Records that `server` holds `chunk` at `version` (one copy per chunk per server).
    pub fn upsert_copy(&mut self, server: ServerKey, chunk: ChunkId, version: u32, marked: bool) {
        if !self.servers.contains_key(&server) {
            return; // a replaced connection's late message
        }
        let list = self.copies.entry(chunk).or_default();
        let now = Instant::now();
        match list.iter_mut().find(|c| c.server == server) {
            Some(copy) => {
                *copy = ChunkCopy { server, version, damaged: false, marked, changed: now };
            }
            None => {
                list.push(ChunkCopy { server, version, damaged: false, marked, changed: now });
                if let Some(s) = self.servers.get_mut(&server) {
                    s.copies += 1;
                }
            }
        }
    }

    /// Whether `server`'s copy of `chunk` is on a disk marked for removal (false if unknown).
    pub fn copy_marked(&self, server: ServerKey, chunk: ChunkId) -> bool {
        let copies = self.copies.get(&chunk).into_iter().flatten();
        copies.filter(|c| c.server == server).any(|c| c.marked)
    }

    /// Notes chunks a heartbeat named as being written; forgets those not named for
    /// [`REPORTED_WRITING_HOLD`].
    pub fn note_writing(&mut self, chunks: &[ChunkId]) {
        let now = Instant::now();
        self.reported_writing.retain(|_, at| now.duration_since(*at) < REPORTED_WRITING_HOLD);
        for chunk in chunks {
            self.reported_writing.insert(*chunk, now);
        }
    }

    /// Whether a chunkserver named `chunk` as being written within [`REPORTED_WRITING_HOLD`].
    pub fn reported_written(&self, chunk: ChunkId, now: Instant) -> bool {
        let at = self.reported_writing.get(&chunk);
        at.is_some_and(|at| now.saturating_duration_since(*at) < REPORTED_WRITING_HOLD)
    }

    /// Fails every command in flight (this master stopped leading: their answers may still
    /// come and update the copies, but nobody waits for them).
    pub fn fail_pending(&mut self) {
        let ops: Vec<u64> = self.pending.keys().copied().collect();
        for op in ops {
            self.finish(op, Err(Status::NotLeader));
        }
    }

    /// Forgets `server`'s copy of `chunk`.
    pub fn remove_copy(&mut self, server: ServerKey, chunk: ChunkId) {
        let Some(list) = self.copies.get_mut(&chunk) else { return };
        let before = list.len();
        list.retain(|c| c.server != server);
        if list.len() < before {
            if let Some(s) = self.servers.get_mut(&server) {
                s.copies = s.copies.saturating_sub(1);
            }
        }
        if list.is_empty() {
            self.copies.remove(&chunk);
        }
    }

    /// Marks `server`'s copy of `chunk` damaged (if it is at `version`).
    pub fn mark_damaged(&mut self, server: ServerKey, chunk: ChunkId, version: u32) {
        let Some(list) = self.copies.get_mut(&chunk) else { return };
        if let Some(copy) = list.iter_mut().find(|c| c.server == server && c.version == version) {
            copy.damaged = true;
            copy.changed = Instant::now();
        }
    }

    /// Sends a command to `server`, recording it as pending. `make` gets the op id.
    pub fn send(
        &mut self,
        server: ServerKey,
        kind: PendingKind,
        make: impl FnOnce(u64) -> MasterToCs,
        waiter: Option<oneshot::Sender<Result<(), Status>>>,
    ) -> Result<u64, Status> {
        let Some(s) = self.servers.get(&server) else { return Err(Status::Io) };
        self.next_op += 1;
        let op = self.next_op;
        if let Err(e) = s.tx.try_send(make(op)) {
            tracing::warn!(server = %s.addr, error = %e, "cannot queue a command for the chunkserver");
            return Err(Status::Busy);
        }
        self.pending.insert(op, Pending { server, kind, sent: Instant::now(), waiter });
        Ok(op)
    }

    /// Applies the answer to command `op` and wakes whoever waits for it.
    pub fn finish(&mut self, op: u64, status: Result<(), Status>) {
        let Some(p) = self.pending.remove(&op) else { return };
        self.settle(&p, status.is_ok());
        if let Some(waiter) = p.waiter {
            // The waiter may have timed out; then nobody needs the answer.
            let _unwanted = waiter.send(status);
        }
    }

    fn settle(&mut self, p: &Pending, ok: bool) {
        match p.kind {
            PendingKind::Create { chunk, version }
            | PendingKind::SetVersion { chunk, version }
            | PendingKind::Duplicate { chunk, version } => {
                if ok {
                    self.upsert_copy(p.server, chunk, version, false);
                }
            }
            PendingKind::Delete { chunk } => {
                if let Some(s) = self.servers.get_mut(&p.server) {
                    s.deletions = s.deletions.saturating_sub(1);
                }
                if ok {
                    self.remove_copy(p.server, chunk);
                }
            }
            PendingKind::Replicate { chunk, version, source } => {
                for key in [p.server, source] {
                    if let Some(s) = self.servers.get_mut(&key) {
                        s.replications = s.replications.saturating_sub(1);
                    }
                }
                if let Some(n) = self.replicating.get_mut(&chunk) {
                    *n -= 1;
                    if *n == 0 {
                        self.replicating.remove(&chunk);
                    }
                }
                if ok {
                    self.upsert_copy(p.server, chunk, version, false);
                }
            }
        }
    }

    /// Servers with a readable copy of `chunk` at `version`: unmarked first, shuffled so
    /// readers spread over them.
    pub fn locations(&self, chunk: ChunkId, version: u32) -> Vec<ServerAddr> {
        let Some(list) = self.copies.get(&chunk) else { return Vec::new() };
        let mut found: Vec<(bool, u64, ServerAddr)> = list
            .iter()
            .filter(|c| c.version == version && !c.damaged)
            .filter_map(|c| {
                self.servers.get(&c.server).map(|s| (c.marked, rand::random(), s.addr.clone()))
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, _, addr)| addr).collect()
    }

    /// Every copy of `chunk` with its state relative to the metadata's `version`.
    pub fn copies_of(&self, chunk: ChunkId, version: Option<u32>) -> Vec<CopyInfo> {
        let Some(list) = self.copies.get(&chunk) else { return Vec::new() };
        let mut out: Vec<CopyInfo> = list
            .iter()
            .filter_map(|c| {
                let server = self.servers.get(&c.server)?.addr.clone();
                let state = if c.damaged {
                    "DAMAGED"
                } else if version != Some(c.version) {
                    "WRONG VERSION"
                } else if c.marked {
                    "MARKED FOR REMOVAL"
                } else {
                    "VALID"
                };
                Some(CopyInfo { server, state: state.to_string() })
            })
            .collect();
        out.sort_by(|a, b| a.server.cmp(&b.server));
        out
    }

    /// Up to `goal` servers for a new chunk, none in `exclude`, picked at random weighted by
    /// free space (so equal servers share the load and fuller ones get less).
    pub fn choose_chain(&self, goal: u8, exclude: &[ServerAddr]) -> Vec<ServerAddr> {
        let mut candidates: Vec<(u64, &Server)> = self
            .servers
            .values()
            .filter(|s| s.takes_new_chunks() && !exclude.contains(&s.addr))
            .map(|s| (s.avail_bytes(), s))
            .collect();
        let mut chain = Vec::new();
        while chain.len() < goal as usize && !candidates.is_empty() {
            let total: u128 = candidates.iter().map(|(w, _)| *w as u128).sum();
            let mut pick = (rand::random::<u64>() as u128) % total.max(1);
            let mut index = candidates.len() - 1;
            for (i, (w, _)) in candidates.iter().enumerate() {
                if pick < *w as u128 {
                    index = i;
                    break;
                }
                pick -= *w as u128;
            }
            chain.push(candidates.swap_remove(index).1.addr.clone());
        }
        chain
    }

    pub fn server_by_addr(&self, addr: &ServerAddr) -> Option<ServerKey> {
        self.servers.values().find(|s| &s.addr == addr).map(|s| s.key)
    }

    /// Connected chunkservers for `mfsha status`. `safe` lists servers whose marked disks
    /// hold no chunk that lacks its full goal elsewhere.
    pub fn statuses(&self, safe: &HashSet<ServerKey>) -> Vec<ChunkserverStatus> {
        let mut out: Vec<ChunkserverStatus> = self
            .servers
            .values()
            .map(|s| {
                let disks: Vec<DiskInfo> = s
                    .disks
                    .iter()
                    .map(|d| DiskInfo {
                        safe_to_remove: d.marked_for_removal && safe.contains(&s.key),
                        ..d.clone()
                    })
                    .collect();
                ChunkserverStatus {
                    addr: s.addr.to_string(),
                    chunks: s.copies,
                    used_bytes: disks.iter().map(|d| d.used_bytes).sum(),
                    total_bytes: disks.iter().map(|d| d.total_bytes).sum(),
                    disks,
                    labels: s.labels.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.addr.cmp(&b.addr));
        out
    }

    /// (total, available) bytes over healthy disks; marked disks add no available space.
    pub fn fs_stat(&self) -> (u64, u64) {
        let disks = self.servers.values().flat_map(|s| s.disks.iter()).filter(|d| !d.damaged);
        disks.fold((0, 0), |(total, avail), d| {
            let free =
                if d.marked_for_removal { 0 } else { d.total_bytes.saturating_sub(d.used_bytes) };
            (total + d.total_bytes, avail + free)
        })
    }
}
