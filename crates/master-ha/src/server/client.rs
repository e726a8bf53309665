//! Answers one client request.
//!
//! Reads are served from the applied state of this master, and only by the leader (a
//! follower's state may lag, and a client that just wrote must read its write). Mutations are
//! turned into an [`Entry`] carrying the cluster time (this leader's clock, never before the
//! applied cluster time: [`MetaHandle::cluster_now`](crate::node::MetaHandle::cluster_now)), any new ids, and the request's
//! `(session, seq)`; the reply is sent only after the entry is committed, applied and durable.
//! A retried mutation whose `(session, seq)` the state machine already answered gets that same
//! answer again without a second proposal.

use super::access::{self, Grant, HelloFields};
use super::session::Connection;
use super::Service;
use mfsha_meta::{ClientTag, Entry, Op, Outcome, State};
use mfsha_proto::chunk_token::ChunkToken;
use mfsha_proto::client::{
    CheckFileCounts, ChunkCopies, ChunkWrite, ClientOp, ClientReply, Request,
};
use mfsha_proto::cluster_key::ClusterKey;
use mfsha_proto::types::*;

/// Most directory entries returned by one `ReadDir`: with names of at most 255 bytes each
/// reply stays far below the frame limit.
pub const READDIR_MAX_ENTRIES: u32 = 4096;
/// How long a transfer with a VIP waits before releasing it, so the "started" answer is sent.
const REPLY_HEADSTART: std::time::Duration = std::time::Duration::from_millis(20);
/// Longest `client_info` kept for a session (the rest is cut).
pub const CLIENT_INFO_MAX: usize = 1024;

/// Answers a request that [`answer_now`] left (sessions, mutations, locks): these wait for
/// a commit or the lock table, so each runs in its own task. Any other request is here
/// because the lease was out when it came: it is answered as [`answer_now`] would, once the
/// lease is back (which it may be already: this task runs a little later).
pub async fn handle_waiting(
    service: &Service,
    connection: &Connection,
    request: Request,
) -> Reply<ClientReply> {
    if !service.meta.is_leader() && !wait_for_lease(service).await {
        return Err(Status::NotLeader);
    }
    if let Some(reply) = answer_now(service, connection, &request) {
        return reply;
    }
    match &request.op {
        ClientOp::Hello { session, client_info, subdir, token, proof, version } => {
            let hello = HelloFields {
                session: session.unwrap_or(0),
                token: *token,
                subdir,
                client_info,
                proof: *proof,
                version: *version,
            };
            let grant = access::check_hello(service, connection, &hello)?;
            match session {
                Some(session) => resume(service, connection, *session, &hello, grant),
                None => open_session(service, connection, &hello, grant).await,
            }
        }
        ClientOp::Goodbye => goodbye(service, connection, &request).await,
        ClientOp::ChangeMember { change } => {
            super::membership::change(service, request.uid, change).await
        }
        ClientOp::GetLock { .. } | ClientOp::SetLock { .. } | ClientOp::ReleaseLocks { .. } => {
            super::locks::handle(service, &request).await
        }
        ClientOp::Open { .. } | ClientOp::Release { .. } | ClientOp::Reopen { .. } => {
            super::opens::handle(service, &request)
        }
        op if op.is_mutation() => mutate(service, &request).await,
        // A read left again: the lease went out once more since the wait. The client asks
        // again (it retries `NotLeader`).
        _ => Err(Status::NotLeader),
    }
}

/// On Raft's leader without a lease (it lapsed while the node's thread or its quorum was late,
/// or the node was just elected and has not applied its first entry): waits for the lease up
/// to an election timeout rather than send the client away to look for a leader that is this
/// one. False if it did not come (the node stepped down, or its quorum is gone).
async fn wait_for_lease(service: &Service) -> bool {
    let deadline = tokio::time::Instant::now() + service.meta.raft().election_timeout();
    loop {
        if service.meta.is_leader() {
            return true;
        }
        let raft_leader = service.meta.raft_status().role == mfsha_raft::Role::Leader;
        if !raft_leader || tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// The reply to `request` if it needs no waiting: status and who leads (from any master),
/// reads from the applied state, and `NotLeader` on a follower. `None` for requests that
/// propose (sessions and mutations), for locks (which may wait for the lock table), and for
/// everything on Raft's leader while it has no lease (which waits for it).
pub fn answer_now(
    service: &Service,
    connection: &Connection,
    request: &Request,
) -> Option<Reply<ClientReply>> {
    match request.op {
        ClientOp::Status => {
            return Some(Ok(ClientReply::Status(Box::new(super::status::cluster_status(service)))))
        }
        ClientOp::WhoLeads => {
            let hint =
                LeaderHint { cluster_id: service.cluster_id.clone(), ..service.leadership.hint() };
            return Some(Ok(ClientReply::Leader(hint)));
        }
        ClientOp::Challenge { ref subdir } => {
            return Some(access::challenge(service, connection, subdir))
        }
        // Every master reads its own file: a follower reloads too.
        ClientOp::ReloadExports => return Some(reload_exports(service, request.uid)),
        _ => {}
    }
    if !service.meta.is_leader() {
        if service.leadership.now().raft_leader {
            return None; // a lapsed lease or a leader not caught up yet: wait (`handle_waiting`)
        }
        if let ClientOp::Hello { .. } = request.op {
            admit_on_follower(service, connection, request);
        }
        return Some(Err(Status::NotLeader));
    }
    if let Err(refused) = bound_to_connection(connection, request) {
        return Some(Err(refused));
    }
    match &request.op {
        ClientOp::TransferLeader { to } => Some(transfer_leader(service, request.uid, *to)),
        ClientOp::Hello { .. } | ClientOp::Goodbye | ClientOp::ChangeMember { .. } => None,
        ClientOp::GetLock { .. } | ClientOp::SetLock { .. } | ClientOp::ReleaseLocks { .. } => None,
        ClientOp::Open { .. } | ClientOp::Release { .. } | ClientOp::Reopen { .. } => None,
        op if op.is_mutation() => None,
        _ => Some(read(service, connection, request)),
    }
}

/// A follower opens no session, but it judges a `Hello` by its exports all the same and
/// keeps the grant with the connection: the only requests a follower answers besides
/// `Status` and `WhoLeads` are about itself (`ReloadExports`), and under exports those need
/// an export's say (`admin`).
fn admit_on_follower(service: &Service, connection: &Connection, request: &Request) {
    let ClientOp::Hello { session, client_info, subdir, token, proof, version } = &request.op
    else {
        return;
    };
    let (session, token, proof, version) = (session.unwrap_or(0), *token, *proof, *version);
    let hello = HelloFields { session, token, subdir, client_info, proof, version };
    if let Ok(grant) = access::check_hello(service, connection, &hello) {
        *connection.grant.lock() = grant;
    }
}

/// Re-reads this master's exports file (root only; `admit` has checked `admin`).
fn reload_exports(service: &Service, uid: u32) -> Reply<ClientReply> {
    if uid != 0 {
        return Err(Status::Perm);
    }
    let reloaded = service.reload_exports();
    let lines = reloaded.map(|lines| lines.map(|n| n as u32)).map_err(|e| e.to_string());
    Ok(ClientReply::ExportsReloaded(lines))
}

/// Starts handing leadership to master `to` (root only). Only a master may be named: the
/// witness would hand it straight back, and an unknown id would make raft-rs wait for a node
/// that does not exist.
///
/// With a VIP, this master first releases it and waits until it is off the interface, then
/// asks raft for the transfer, so the new leader may claim it the moment it leads. That runs
/// in a task of its own: the reply ("started") goes out before this master steps down and
/// closes the connection; the tool then waits for the new leader.
fn transfer_leader(service: &Service, uid: u32, to: u64) -> Reply<ClientReply> {
    if uid != 0 {
        return Err(Status::Perm);
    }
    let members = super::status::members(service);
    let target = members.iter().find(|m| m.id == to).ok_or(Status::Invalid)?;
    if target.kind != mfsha_proto::client::MemberKind::Master {
        return Err(Status::Invalid);
    }
    if to == service.meta.raft_status().node_id {
        return Ok(ClientReply::Unit); // already leads
    }
    tracing::info!(to, "leadership transfer asked for by a client");
    let Some(fence) = service.vip.clone() else {
        service.meta.raft().transfer_leader(to)?;
        return Ok(ClientReply::Unit);
    };
    let raft = service.meta.raft().clone();
    tokio::spawn(async move {
        // Let the answer leave first: once the VIP is gone it cannot (the tool connected
        // through it). The tool checks the outcome either way.
        tokio::time::sleep(REPLY_HEADSTART).await;
        if let Err(e) = fence.hand_over().await {
            tracing::error!(error = %e, to, "cannot release the VIP for the transfer; not transferring");
            return;
        }
        if let Err(e) = raft.transfer_leader(to) {
            tracing::error!(error = ?e, to, "the raft node did not take the transfer");
        }
    });
    Ok(ClientReply::Unit)
}

/// How many fresh ids a session open tries: an id can clash only with one another leader
/// handed out just before a failover (ids are seeded from the clock).
const OPEN_ATTEMPTS: usize = 3;

/// A request may name only the session its connection took up with `Hello` (or none): a
/// session id alone grants nothing, so one seen in a log or guessed cannot be used from
/// another connection.
fn bound_to_connection(connection: &Connection, request: &Request) -> Result<(), Status> {
    if request.session == 0 || matches!(request.op, ClientOp::Hello { .. }) {
        return Ok(());
    }
    match *connection.session.lock() {
        Some((attached, _)) if attached == request.session => Ok(()),
        _ => {
            if !connection.refused.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(session = request.session, peer = %connection.peer,
                    "refused a request naming a session this connection did not take up with \
                     Hello (a stolen session id?); further ones on this connection are refused \
                     without a log line");
            }
            Err(Status::BadSession)
        }
    }
}

/// Attaches this connection to an existing session (a reconnect), given the session's
/// secret: the random token its client opened it with, which only that client knows (no
/// answer reveals it). A session opened without a token cannot be resumed.
fn resume(
    service: &Service,
    connection: &Connection,
    session: SessionId,
    hello: &HelloFields,
    grant: Grant,
) -> Reply<ClientReply> {
    let info: String = hello.client_info.chars().take(CLIENT_INFO_MAX).collect();
    let (root, secret) =
        service.meta.read(|s| s.session_resume(session)).ok_or(Status::BadSession)?;
    if secret == 0 || secret != hello.token {
        tracing::warn!(session, peer = %connection.peer,
            "refused to resume a session without its secret (a stolen or guessed session id, \
             or a client that opened it without a token)");
        return Err(Status::BadSession);
    }
    own_root(service, connection, session, root, hello, &grant)?;
    *connection.grant.lock() = grant;
    service.sessions.attach(connection, session, root, &info);
    tracing::debug!(session, peer = %connection.peer, "session resumed");
    Ok(ClientReply::Session { session, root })
}

/// Opens a session, exactly once per `token`: a retry whose first attempt committed (the
/// reply was lost, perhaps with the leader that sent it) gets the session it opened.
async fn open_session(
    service: &Service,
    connection: &Connection,
    hello: &HelloFields<'_>,
    grant: Grant,
) -> Reply<ClientReply> {
    let (token, subdir) = (hello.token, exported(hello.subdir));
    let info: String = hello.client_info.chars().take(CLIENT_INFO_MAX).collect();
    if let Some((session, root)) = service.meta.read(|s| s.session_by_token(token)) {
        own_root(service, connection, session, root, hello, &grant)?;
        *connection.grant.lock() = grant;
        service.sessions.attach(connection, session, root, &info);
        tracing::info!(session, peer = %connection.peer, "session open retried: same session");
        return Ok(ClientReply::Session { session, root });
    }
    let root = service.meta.read(|s| {
        let ino = s.resolve_path(ROOT_INO, &subdir)?;
        match s.getattr(ino)?.kind {
            FileKind::Directory => Ok(ino),
            _ => Err(Status::NotDir),
        }
    })?;
    let term = service.leadership.epoch().ok_or(Status::NotLeader)?.term;
    let mut attempt = 1;
    let (session, root) = loop {
        let applied_max = service.meta.read(|s| s.sessions().map(|(id, ..)| id).max().unwrap_or(0));
        let session = service.sessions.allocate_id(applied_max);
        let op = Op::OpenSession { session, info: info.clone(), root, token };
        let entry = Entry { now: service.meta.cluster_now(), client: None, op };
        match service.meta.propose(entry).await {
            Ok(Outcome::Session { session, root }) => break (session, root),
            Ok(other) => {
                tracing::error!(?other, "OpenSession applied with an outcome that is no session");
                return Err(Status::Io);
            }
            Err(Status::Exists) if attempt < OPEN_ATTEMPTS => attempt += 1,
            Err(status) => return Err(status),
        }
    };
    service.sessions.opened(session, term);
    *connection.grant.lock() = grant;
    service.sessions.attach(connection, session, root, &info);
    tracing::info!(session, peer = %connection.peer, info = %info, root, "session opened");
    Ok(ClientReply::Session { session, root })
}

/// Under exports, the export was chosen by the directory a `Hello` names: taking up an
/// existing session, that must be the session's own root, or a client could name a
/// directory of a writable line to take up a session rooted under a read-only one.
fn own_root(
    service: &Service,
    connection: &Connection,
    session: SessionId,
    root: Ino,
    hello: &HelloFields,
    grant: &Grant,
) -> Reply<()> {
    let Grant::Export { line, .. } = grant else { return Ok(()) };
    let named = service.meta.read(|s| s.resolve_path(ROOT_INO, &exported(hello.subdir)));
    if named == Ok(root) {
        return Ok(());
    }
    tracing::warn!(session, peer = %connection.peer, subdir = hello.subdir, line,
        "refused to take up a session naming another directory than its root");
    Err(Status::Access)
}

/// The directory a `Hello` names, as the exports matched it (`..` taken back lexically, as
/// the metadata resolves it).
fn exported(subdir: &str) -> String {
    crate::exports::normalise(subdir)
}

async fn goodbye(
    service: &Service,
    connection: &Connection,
    request: &Request,
) -> Reply<ClientReply> {
    let session = request.session;
    if service.meta.read(|s| s.session_root(session)).is_none() {
        return Err(Status::BadSession);
    }
    let client = (request.seq != 0).then_some(ClientTag { session, seq: request.seq });
    let entry = Entry { now: service.meta.cluster_now(), client, op: Op::CloseSession { session } };
    service.meta.propose(entry).await?;
    service.sessions.disconnect(connection);
    service.sessions.forget(session);
    service.locks.release_session(session);
    service.opens.end_session(session);
    *connection.session.lock() = None;
    tracing::info!(session, peer = %connection.peer, "session closed");
    Ok(ClientReply::Unit)
}

/// Proposes a mutation once per `(session, seq)` and answers it.
async fn mutate(service: &Service, request: &Request) -> Reply<ClientReply> {
    let (session, seq) = (request.session, request.seq);
    if seq == 0 {
        return Err(Status::Invalid);
    }
    if let ClientOp::WriteChunkEnd { chunk_id, ok: false, .. } = request.op {
        // A failed write changes no metadata: the file keeps its length, the chunk its
        // version; only the registry needs to know the write is over.
        service.chunks.write_end(chunk_id, false);
        return Ok(ClientReply::Unit);
    }
    let earlier = service.meta.read(|s| {
        if s.session_root(session).is_none() {
            return Err(Status::BadSession);
        }
        Ok(s.session_reply(session, seq))
    })?;
    let outcome = match earlier {
        Some(outcome) => {
            held_if_created(service, request, &outcome)?;
            outcome
        }
        None => {
            let op = build_op(service, request)?;
            let creating = hold_while_creating(service, request, &op)?;
            let client = Some(ClientTag { session, seq });
            let entry = Entry { now: service.meta.cluster_now(), client, op };
            let outcome = service.meta.propose(entry).await;
            if let (Err(_), Some((epoch, ino))) = (&outcome, creating) {
                service.opens.undo_create(epoch, session, ino);
            }
            outcome
        }
    }?;
    finish(service, &request.op, outcome).await
}

/// A create holds its new file open from the moment it exists (FUSE `create` is an open):
/// registered in the leader's open-file table before the entry is proposed. Returns what
/// to take back if the create fails.
fn hold_while_creating(
    service: &Service,
    request: &Request,
    op: &Op,
) -> Reply<Option<(super::leadership::Epoch, Ino)>> {
    let (ClientOp::Create { .. }, Op::Create { ino, .. }) = (&request.op, op) else {
        return Ok(None);
    };
    let epoch = service.leadership.epoch().ok_or(Status::NotLeader)?;
    let cap = service.max_open_files_per_session;
    let session = request.session;
    let held = service.opens.creating(epoch, session, *ino, cap);
    held.map_err(|r| super::opens::refused(r, session, *ino, cap))?;
    Ok(Some((epoch, *ino)))
}

/// A retried create answered from the reply window: its first attempt may have been made
/// by another leader, whose open-file table is gone, so the file is registered here unless
/// this session holds it already.
fn held_if_created(
    service: &Service,
    request: &Request,
    outcome: &Result<Outcome, Status>,
) -> Reply<()> {
    let (ClientOp::Create { .. }, Ok(Outcome::Attr(attr))) = (&request.op, outcome) else {
        return Ok(());
    };
    if service.opens.count(request.session, attr.ino).1 {
        return Ok(());
    }
    let epoch = service.leadership.epoch().ok_or(Status::NotLeader)?;
    let cap = service.max_open_files_per_session;
    let held = service.opens.creating(epoch, request.session, attr.ino, cap);
    held.map_err(|r| super::opens::refused(r, request.session, attr.ino, cap))
}

/// The replicated operation for a client mutation, with new ids allocated by this leader.
fn build_op(service: &Service, request: &Request) -> Reply<Op> {
    let (uid, gid) = (request.uid, request.gid);
    let meta = &service.meta;
    Ok(match request.op.clone() {
        ClientOp::SetAttr { ino, set, .. } => {
            // Only a truncation can need a copy-on-write chunk; don't burn ids otherwise.
            let cow_chunk_id = if set.size.is_some() { meta.alloc_chunk_id() } else { 0 };
            Op::SetAttr { ino, set, cow_chunk_id }
        }
        ClientOp::Mknod { parent, name, kind, mode, umask, rdev } => {
            check_name(&name)?;
            if matches!(kind, FileKind::Directory | FileKind::Symlink) {
                return Err(Status::Invalid);
            }
            let ino = meta.alloc_ino();
            Op::Create { parent, name, ino, kind, mode, umask, uid, gid, rdev }
        }
        ClientOp::Create { parent, name, mode, umask } => {
            check_name(&name)?;
            let ino = meta.alloc_ino();
            // Held open through the leader's table (`hold_while_creating`), not the log.
            let (kind, rdev) = (FileKind::File, 0);
            Op::Create { parent, name, ino, kind, mode, umask, uid, gid, rdev }
        }
        ClientOp::Mkdir { parent, name, mode, umask } => {
            check_name(&name)?;
            Op::Mkdir { parent, name, ino: meta.alloc_ino(), mode, umask, uid, gid }
        }
        ClientOp::Symlink { parent, name, target } => {
            check_name(&name)?;
            if target.is_empty() || target.len() > PATH_MAX {
                return Err(if target.is_empty() { Status::NotFound } else { Status::NameTooLong });
            }
            Op::Symlink { parent, name, ino: meta.alloc_ino(), target, uid, gid }
        }
        ClientOp::Unlink { parent, name } => Op::Unlink { parent, name },
        ClientOp::Rmdir { parent, name } => Op::Rmdir { parent, name },
        ClientOp::Rename { parent, name, new_parent, new_name, flags } => {
            check_name(&new_name)?;
            Op::Rename { parent, name, new_parent, new_name, flags }
        }
        ClientOp::Link { ino, new_parent, new_name } => {
            check_name(&new_name)?;
            Op::Link { ino, parent: new_parent, name: new_name }
        }
        ClientOp::WriteChunk { ino, index } => write_chunk_op(service, ino, index)?,
        ClientOp::WriteChunkEnd { ino, index, chunk_id, file_size, .. } => {
            Op::WriteChunkEnd { ino, index, chunk_id, file_size }
        }
        ClientOp::SetXattr { ino, name, value, flags } => Op::SetXattr { ino, name, value, flags },
        ClientOp::RemoveXattr { ino, name } => Op::RemoveXattr { ino, name },
        ClientOp::SetGoal { ino, goal, recursive } => {
            if goal == 0 || goal > MAX_GOAL {
                return Err(Status::Invalid);
            }
            Op::SetGoal { ino, goal, recursive }
        }
        ClientOp::SetTrashTime { ino, seconds, recursive } => {
            Op::SetTrashTime { ino, seconds, recursive }
        }
        // The trash holds every user's deleted files: only root may act on it.
        ClientOp::Undelete { .. } | ClientOp::Purge { .. } if uid != 0 => return Err(Status::Perm),
        ClientOp::Undelete { ino } => Op::Undelete { ino },
        ClientOp::Purge { ino } => Op::Purge { ino },
        other => {
            // `handle` sends only mutations here; answering beats panicking.
            tracing::error!(?other, "non-mutation routed to build_op by mistake");
            return Err(Status::NotSupported);
        }
    })
}

/// Refuses a chunk write up front when it could not succeed, so that no chunk version is
/// bumped in the metadata that no copy will ever have:
/// * no chunkserver could take a chunk (`NoChunkservers`);
/// * the chunk holds acknowledged bytes of the file but no registered server holds its
///   current version (`NoChunkCopies`) — typically a leader that just started, before the
///   chunkservers re-registered. Bumping then would leave every copy a version behind; the
///   client waits and asks again. (A chunk without data and without copies is made afresh.)
fn write_chunk_op(service: &Service, ino: Ino, index: u32) -> Reply<Op> {
    let (goal, current) = service.meta.read(|s| {
        let attr = s.getattr(ino)?;
        if attr.kind != FileKind::File {
            // Apply gives the precise error for a non-file.
            return Ok((attr.goal, None));
        }
        let chunk = s.file_chunk(ino, index)?;
        if attr.size <= u64::from(index) * CHUNK_BYTES {
            return Ok((attr.goal, None)); // no acknowledged byte lives in this chunk
        }
        Ok((attr.goal, s.chunk(chunk).map(|c| (chunk, c.version))))
    })?;
    if service.chunks.choose_chain(goal, &[]).is_empty() {
        return Err(Status::NoChunkservers);
    }
    if let Some((chunk, version)) = current {
        if service.chunks.locations(chunk, version).is_empty() {
            return Err(Status::NoChunkCopies);
        }
    }
    Ok(Op::WriteChunk { ino, index, new_chunk_id: service.meta.alloc_chunk_id() })
}

/// A name a directory entry may have.
fn check_name(name: &str) -> Reply<()> {
    if name.len() > NAME_MAX {
        return Err(Status::NameTooLong);
    }
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Status::Invalid);
    }
    Ok(())
}

/// Turns what apply produced into the reply, acting on chunk outcomes first.
async fn finish(service: &Service, op: &ClientOp, outcome: Outcome) -> Reply<ClientReply> {
    if let ClientOp::WriteChunkEnd { chunk_id, .. } = op {
        // Whatever apply answered (the file's new attributes), the write is over: release the
        // chunk so the replication engine may act on it again.
        service.chunks.write_end(*chunk_id, true);
    }
    match outcome {
        Outcome::ChunkWrite { chunk_id, version, file_size, .. } => {
            let chain = service.chunks.prepare_write(&outcome).await?;
            let token = chunk_token(service.key.as_ref(), chunk_id, version, Some(&chain));
            Ok(ClientReply::ChunkWrite(ChunkWrite { chunk_id, version, file_size, chain, token }))
        }
        Outcome::Truncated { ref attr, .. } => {
            let attr = attr.clone();
            service.chunks.prepare_write(&outcome).await?;
            Ok(ClientReply::Attr(attr))
        }
        Outcome::Attr(attr) => Ok(ClientReply::Attr(attr)),
        Outcome::Changed { inodes, not_changed, not_permitted } => {
            Ok(ClientReply::Changed { inodes, not_changed, not_permitted })
        }
        // Only OpenSession has this outcome, and it is no client mutation.
        Outcome::Session { session, root } => Ok(ClientReply::Session { session, root }),
        Outcome::Unit => Ok(ClientReply::Unit),
    }
}

/// Answers a read from the applied state.
///
/// The chunk registry is asked only after the state's read lock is released, so the two
/// locks are never held together (the registry may itself read the state).
fn read(service: &Service, connection: &Connection, request: &Request) -> Reply<ClientReply> {
    let chunks = &*service.chunks;
    match &request.op {
        ClientOp::ReadChunk { ino, index } => {
            let found = service.meta.read(|s| chunk_at(s, *ino, *index))?;
            read_chunk_reply(chunks, service.key.as_ref(), found)
        }
        ClientOp::StatFs => {
            let counts = service.meta.read(|s| s.counts());
            let (total_bytes, avail_bytes) = chunks.fs_stat();
            Ok(ClientReply::FsStat(FsStat {
                total_bytes,
                avail_bytes,
                used_bytes: total_bytes.saturating_sub(avail_bytes),
                inodes: counts.inodes,
                trash_inodes: counts.trash_inodes,
            }))
        }
        ClientOp::FileInfo { ino } => {
            let (goal, list) = service.meta.read(|s| file_chunks(s, *ino))?;
            let info = list
                .into_iter()
                .map(|(index, chunk_id, version)| {
                    let copies = chunks.copies(chunk_id);
                    ChunkCopies { index, chunk_id, version, goal, copies }
                })
                .collect();
            Ok(ClientReply::FileInfo(info))
        }
        ClientOp::CheckFile { ino } => {
            let (_, list) = service.meta.read(|s| file_chunks(s, *ino))?;
            let mut by_copies: Vec<u64> = Vec::new();
            for (_, chunk_id, version) in list {
                let valid = chunks.locations(chunk_id, version).len();
                if by_copies.len() <= valid {
                    by_copies.resize(valid + 1, 0);
                }
                by_copies[valid] += 1;
            }
            Ok(ClientReply::CheckFile(CheckFileCounts { by_copies }))
        }
        _ => service.meta.read(|s| read_state(s, connection, request)),
    }
}

/// Reads answered from the metadata alone.
fn read_state(s: &State, connection: &Connection, request: &Request) -> Reply<ClientReply> {
    match &request.op {
        ClientOp::Lookup { parent, name } => {
            if name.len() > NAME_MAX {
                return Err(Status::NameTooLong);
            }
            s.lookup(*parent, name).map(ClientReply::Attr)
        }
        ClientOp::GetAttr { ino } => s.getattr(*ino).map(ClientReply::Attr),
        ClientOp::Access { ino, mask } => access_answer(&s.getattr(*ino)?, *mask),
        ClientOp::ReadLink { ino } => s.readlink(*ino).map(ClientReply::Target),
        ClientOp::ReadDir { ino, offset, max, after } => {
            let max = (*max).clamp(1, READDIR_MAX_ENTRIES);
            let (entries, more) = match after {
                Some(name) => s.readdir_after(*ino, Some(name), max)?,
                None => s.readdir(*ino, *offset, max)?,
            };
            Ok(ClientReply::Entries { entries, more })
        }
        ClientOp::GetXattr { ino, name } => {
            s.getxattr(*ino, name).map(|v| ClientReply::Xattr(serde_bytes::ByteBuf::from(v)))
        }
        ClientOp::ListXattr { ino } => s.listxattr(*ino).map(ClientReply::Names),
        ClientOp::GetGoal { ino } => s.getattr(*ino).map(|a| ClientReply::Goal(a.goal)),
        ClientOp::GetTrashTime { ino } => {
            s.getattr(*ino).map(|a| ClientReply::TrashTime(a.trash_seconds))
        }
        ClientOp::DirInfo { ino } => s.dir_info(*ino).map(ClientReply::DirInfo),
        ClientOp::TrashList { after, max } => super::trash::list(s, request.uid, *after, *max),
        ClientOp::ResolvePath { path } => {
            let root = session_root(s, connection, request.session)?;
            let ino = s.resolve_path(root, path)?;
            s.getattr(ino).map(ClientReply::Attr)
        }
        other => {
            // `handle` routes every other request elsewhere; answering beats panicking.
            tracing::error!(?other, "request routed to the state reader by mistake");
            Err(Status::NotSupported)
        }
    }
}

/// access(2) after the permission bits were checked (`perm`): root, who passes those, may
/// execute only what has an execute bit somewhere (or is a directory), as on Linux.
fn access_answer(attr: &Attr, mask: u32) -> Reply<ClientReply> {
    const X_OK: u32 = 1;
    let runnable = attr.kind == FileKind::Directory || attr.mode & 0o111 != 0;
    if mask & X_OK != 0 && !runnable {
        return Err(Status::Access);
    }
    Ok(ClientReply::Unit)
}

/// The root a session sees: `/` for session 0 (tools without a session).
fn session_root(s: &State, connection: &Connection, session: SessionId) -> Reply<Ino> {
    if session == 0 {
        return Ok(ROOT_INO);
    }
    if let Some((attached, root)) = *connection.session.lock() {
        if attached == session {
            return Ok(root);
        }
    }
    s.session_root(session).ok_or(Status::BadSession)
}

/// What the metadata says about chunk `index` of a file: (chunk id, version, bytes of the
/// file inside this chunk). Chunk id 0 is a hole.
fn chunk_at(s: &State, ino: Ino, index: u32) -> Reply<(ChunkId, u32, u64)> {
    let attr = s.getattr(ino)?;
    if attr.kind != FileKind::File {
        return Err(if attr.kind == FileKind::Directory { Status::IsDir } else { Status::Invalid });
    }
    let start = u64::from(index) * CHUNK_BYTES;
    let file_length = attr.size.saturating_sub(start).min(CHUNK_BYTES);
    let chunk_id = s.file_chunk(ino, index)?;
    if chunk_id == 0 {
        return Ok((0, 0, file_length));
    }
    // A file referencing a chunk the chunk table lacks is a broken invariant, not a client
    // error; report it as an I/O error rather than crash the master.
    let version = s.chunk(chunk_id).ok_or(Status::Io)?.version;
    Ok((chunk_id, version, file_length))
}

fn read_chunk_reply(
    chunks: &dyn super::ChunkService,
    key: Option<&ClusterKey>,
    (chunk_id, version, file_length): (ChunkId, u32, u64),
) -> Reply<ClientReply> {
    if chunk_id == 0 {
        let token = ChunkToken::default();
        let hole = ChunkLocation { chunk_id, version, file_length, servers: Vec::new(), token };
        return Ok(ClientReply::Chunk(hole));
    }
    let servers = chunks.locations(chunk_id, version);
    if servers.is_empty() {
        return Err(Status::NoChunkCopies);
    }
    let token = chunk_token(key, chunk_id, version, None);
    Ok(ClientReply::Chunk(ChunkLocation { chunk_id, version, file_length, servers, token }))
}

/// The token a client shows the chunkservers to read this chunk, or to write it along
/// `chain` (none without a cluster secret: chunkservers without one ask for none).
fn chunk_token(
    key: Option<&ClusterKey>,
    chunk_id: ChunkId,
    version: u32,
    write_chain: Option<&[ServerAddr]>,
) -> ChunkToken {
    match (key, write_chain) {
        (None, _) => ChunkToken::default(),
        (Some(key), None) => key.sign_read(chunk_id, version),
        (Some(key), Some(chain)) => key.sign_write(chunk_id, version, chain),
    }
}

/// A file's chunks as (index, id, version).
type ChunkList = Vec<(u32, ChunkId, u32)>;

/// A file's goal and its chunks.
fn file_chunks(s: &State, ino: Ino) -> Reply<(u8, ChunkList)> {
    let goal = s.getattr(ino)?.goal;
    let list = s
        .file_chunk_list(ino)?
        .into_iter()
        .map(|(index, id)| (index, id, s.chunk(id).map(|c| c.version).unwrap_or(0)))
        .collect();
    Ok((goal, list))
}
