//! Acting on committed chunk operations before the client is answered: create the copies of
//! a new chunk, bump the version of an existing one, copy-on-write a shared one, or cut a
//! truncated one — on the chunkservers, waiting for their answers.
//!
//! Every step is idempotent, because a client that reconnects retries its request and gets
//! the same committed outcome again: servers that already hold the wanted (chunk, version)
//! are used as they are.

use super::registry::{PendingKind, ServerKey};
use super::ChunkRegistry;
use mfsha_meta::Outcome;
use mfsha_proto::cs::MasterToCs;
use mfsha_proto::types::{ChunkId, ServerAddr, Status};
use std::time::Instant;

/// One command to send, built with its op id.
pub(super) struct Cmd {
    pub(super) server: ServerKey,
    pub(super) kind: PendingKind,
    pub(super) make: Box<dyn FnOnce(u64) -> MasterToCs + Send>,
}

impl Cmd {
    /// Tells `server` to move its copy of `chunk` from version `from` to `to`.
    pub(super) fn set_version(server: ServerKey, chunk: ChunkId, from: u32, to: u32) -> Cmd {
        Cmd {
            server,
            kind: PendingKind::SetVersion { chunk, version: to },
            make: Box::new(move |op| MasterToCs::SetVersion {
                op,
                chunk_id: chunk,
                old_version: from,
                new_version: to,
            }),
        }
    }
}

pub(super) async fn prepare(
    reg: &ChunkRegistry,
    outcome: &Outcome,
) -> Result<Vec<ServerAddr>, Status> {
    let (chunk, result) = match *outcome {
        Outcome::ChunkWrite { chunk_id, version, previous, goal, holds_data, .. } => {
            reg.inner.lock().writing.insert(chunk_id, Instant::now());
            let result = match previous {
                None => create(reg, chunk_id, version, goal).await,
                Some((old, _)) if old == chunk_id && !holds_data && no_copy_at_all(reg, old) => {
                    // Created in the metadata by a write that never reached a chunkserver
                    // (the leader died first), and no acknowledged byte lives in it: make
                    // it afresh rather than wait forever for copies that never existed.
                    tracing::info!(
                        chunk = chunk_id,
                        version,
                        "chunk has no copy anywhere and holds no data yet; creating it afresh"
                    );
                    create(reg, chunk_id, version, goal).await
                }
                Some((old, old_version)) if old == chunk_id => {
                    bump(reg, chunk_id, old_version, version).await
                }
                Some((old, old_version)) => {
                    duplicate(reg, (chunk_id, version), (old, old_version)).await
                }
            };
            (chunk_id, result)
        }
        Outcome::Truncated { chunk_id, version, previous, length, .. } => {
            reg.inner.lock().writing.insert(chunk_id, Instant::now());
            let result =
                truncate(reg, (chunk_id, version), previous, length).await.map(|()| Vec::new());
            reg.inner.lock().writing.remove(&chunk_id);
            return result;
        }
        _ => return Ok(Vec::new()),
    };
    if result.is_err() {
        reg.inner.lock().writing.remove(&chunk);
    }
    result
}

/// True when no registered server reports any copy of `chunk`, at any version.
fn no_copy_at_all(reg: &ChunkRegistry, chunk: ChunkId) -> bool {
    reg.inner.lock().copies.get(&chunk).is_none_or(|list| list.is_empty())
}

/// Servers holding a readable copy of `chunk` at `version`, unmarked ones first.
fn holders(reg: &ChunkRegistry, chunk: ChunkId, version: u32) -> Vec<(ServerKey, ServerAddr)> {
    let inner = reg.inner.lock();
    let Some(list) = inner.copies.get(&chunk) else { return Vec::new() };
    let mut found: Vec<(bool, ServerKey, ServerAddr)> = list
        .iter()
        .filter(|c| c.version == version && !c.damaged)
        .filter_map(|c| inner.servers.get(&c.server).map(|s| (c.marked, c.server, s.addr.clone())))
        .collect();
    found.sort();
    found.into_iter().map(|(_, k, a)| (k, a)).collect()
}

/// Sends every command at once, then waits for all answers.
pub(super) async fn run_all(
    reg: &ChunkRegistry,
    cmds: Vec<Cmd>,
) -> Vec<(ServerKey, Result<(), Status>)> {
    let mut waiting = Vec::new();
    {
        let mut inner = reg.inner.lock();
        for cmd in cmds {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let sent = inner.send(cmd.server, cmd.kind, cmd.make, Some(tx));
            waiting.push((cmd.server, sent.map(|op| (op, rx))));
        }
    }
    let deadline = tokio::time::Instant::now() + super::COMMAND_WAIT;
    let mut results = Vec::new();
    for (server, sent) in waiting {
        let status = match sent {
            Err(e) => Err(e),
            Ok((op, rx)) => match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(status)) => status,
                Ok(Err(_)) => Err(Status::Io),
                Err(_) => {
                    reg.inner.lock().finish(op, Err(Status::Io));
                    Err(Status::Io)
                }
            },
        };
        if let Err(e) = status {
            let addr =
                addr_of(reg, server).map_or_else(|| "(disconnected)".into(), |a| a.to_string());
            tracing::warn!(server = %addr, error = %e,
                "chunkserver command failed; the other copies are used and the engine repairs this one");
        }
        results.push((server, status));
    }
    results
}

fn addr_of(reg: &ChunkRegistry, key: ServerKey) -> Option<ServerAddr> {
    reg.inner.lock().servers.get(&key).map(|s| s.addr.clone())
}

/// Runs `cmds`; the chain is `chain` (servers already done) plus every server whose command
/// succeeded, or `none` if that leaves no server.
async fn chain_after(
    reg: &ChunkRegistry,
    mut chain: Vec<ServerAddr>,
    cmds: Vec<Cmd>,
    none: Status,
) -> Result<Vec<ServerAddr>, Status> {
    for (server, status) in run_all(reg, cmds).await {
        if status.is_ok() {
            chain.extend(addr_of(reg, server));
        }
    }
    if chain.is_empty() {
        return Err(none);
    }
    Ok(chain)
}

/// A new chunk: create it on `goal` servers chosen by free space.
async fn create(
    reg: &ChunkRegistry,
    chunk: ChunkId,
    version: u32,
    goal: u8,
) -> Result<Vec<ServerAddr>, Status> {
    let existing = holders(reg, chunk, version);
    let chain: Vec<ServerAddr> = existing.iter().map(|(_, a)| a.clone()).collect();
    let missing = (goal as usize).saturating_sub(chain.len());
    let targets = reg.inner.lock().choose_chain(missing as u8, &chain);
    let cmds = targets
        .iter()
        .filter_map(|addr| reg.inner.lock().server_by_addr(addr))
        .map(|server| Cmd {
            server,
            kind: PendingKind::Create { chunk, version },
            make: Box::new(move |op| MasterToCs::Create { op, chunk_id: chunk, version }),
        })
        .collect();
    chain_after(reg, chain, cmds, Status::NoChunkservers).await
}

/// An existing chunk: move every readable copy from `old` to `new` version.
async fn bump(
    reg: &ChunkRegistry,
    chunk: ChunkId,
    old: u32,
    new: u32,
) -> Result<Vec<ServerAddr>, Status> {
    let done = holders(reg, chunk, new);
    let cmds = holders(reg, chunk, old)
        .into_iter()
        .map(|(server, _)| Cmd::set_version(server, chunk, old, new))
        .collect();
    let chain = done.into_iter().map(|(_, a)| a).collect();
    chain_after(reg, chain, cmds, Status::NoChunkCopies).await
}

/// Copy-on-write: every server with a readable copy of `old` makes `new` from it locally.
async fn duplicate(
    reg: &ChunkRegistry,
    (chunk, version): (ChunkId, u32),
    (old, old_version): (ChunkId, u32),
) -> Result<Vec<ServerAddr>, Status> {
    let done = holders(reg, chunk, version);
    let have: Vec<ServerKey> = done.iter().map(|(k, _)| *k).collect();
    let cmds = holders(reg, old, old_version)
        .into_iter()
        .filter(|(k, _)| !have.contains(k))
        .map(|(server, _)| Cmd {
            server,
            kind: PendingKind::Duplicate { chunk, version },
            make: Box::new(move |op| MasterToCs::Duplicate {
                op,
                new_chunk: chunk,
                new_version: version,
                old_chunk: old,
                old_version,
            }),
        })
        .collect();
    let chain = done.into_iter().map(|(_, a)| a).collect();
    chain_after(reg, chain, cmds, Status::NoChunkCopies).await
}

/// Cuts the copies of a truncated chunk to `length` at `version` (copying it first if the
/// truncation made a new chunk from a shared one).
async fn truncate(
    reg: &ChunkRegistry,
    (chunk, version): (ChunkId, u32),
    (old, old_version): (ChunkId, u32),
    length: u64,
) -> Result<(), Status> {
    let from = if old == chunk {
        old_version
    } else {
        duplicate(reg, (chunk, version), (old, old_version)).await?;
        version
    };
    let sources = holders(reg, chunk, from);
    if sources.is_empty() {
        // Nothing to cut: no copy, or a retried request whose copies are already cut.
        return Ok(());
    }
    let cmds = sources
        .into_iter()
        .map(|(server, _)| Cmd {
            server,
            kind: PendingKind::SetVersion { chunk, version },
            make: Box::new(move |op| MasterToCs::Truncate {
                op,
                chunk_id: chunk,
                old_version: from,
                new_version: version,
                length,
            }),
        })
        .collect();
    let results = run_all(reg, cmds).await;
    if results.iter().any(|(_, s)| s.is_ok()) {
        Ok(())
    } else {
        Err(Status::Io)
    }
}
