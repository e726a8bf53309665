//! `ClusterStatus`: what `mfsha status` shows.

use super::Service;
use mfsha_proto::client::{ClientStatus, ClusterStatus, MemberKind, MemberStatus};
use mfsha_proto::types::SessionId;
use std::collections::HashMap;

/// This master's view of the cluster: its Raft position, metadata counts, connected
/// chunkservers, clients and metaloggers.
pub fn cluster_status(service: &Service) -> ClusterStatus {
    let raft = service.meta.raft_status();
    let (counts, sessions) = service.meta.read(|s| (s.counts(), s.sessions().count() as u64));
    let health = service.chunks.copy_health(counts.chunks);
    ClusterStatus {
        node_id: raft.node_id,
        role: raft.role.to_string(),
        leader_id: raft.leader_id,
        term: raft.term,
        commit_index: raft.commit_index,
        applied_index: raft.applied_index,
        inodes: counts.inodes,
        directories: counts.directories,
        files: counts.files,
        chunks: counts.chunks,
        trash_inodes: counts.trash_inodes,
        chunkservers: service.chunks.chunkservers(),
        clients: connected_clients(service),
        loggers: service.loggers.lock().clone(),
        peers: service.peers.clone(),
        chunks_endangered: health.endangered,
        chunks_undergoal: health.undergoal,
        chunks_overgoal: health.overgoal,
        chunks_missing: health.missing,
        members: members(service),
        sessions,
        vip: service.vip.as_ref().map(|fence| Box::new(vip_state(fence.status()))),
        cluster_id: service.cluster_id.clone(),
        chunks_stable: health.stable,
        chunk_matrix: health.matrix,
        long_work: long_work(service),
        sustained_inodes: counts.sustained_inodes,
    }
}

/// Snapshot streams (bytes) and the chunk engine's episodes (chunks) under way.
fn long_work(service: &Service) -> Vec<mfsha_proto::client::LongWork> {
    let streams = service.transfers.list().into_iter().map(|t| mfsha_proto::client::LongWork {
        what: t.what(),
        done: t.done_bytes,
        total: t.total_bytes,
        unit: "bytes".into(),
        elapsed_ms: t.elapsed.as_millis() as u64,
        eta_ms: t.eta.map(|d| d.as_millis() as u64),
    });
    streams.chain(service.chunks.long_work()).collect()
}

fn vip_state(status: mfsha_vip::VipStatus) -> mfsha_proto::client::VipState {
    let unix_ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    };
    mfsha_proto::client::VipState {
        address: status.address.to_string(),
        interface: status.interface,
        held: status.held,
        since_unix_ms: unix_ms(status.since),
        last_announcement_unix_ms: status.last_announcement.map(unix_ms),
        announcements: status.announcements,
        readded: status.readded,
        last_error: status.last_error,
    }
}

/// The group's members as this master tracks them while it leads (empty otherwise). A voter
/// with no client address in the address book is the witness: every master's `peers` entry
/// names its client port, the witness logger serves no client.
pub fn members(service: &Service) -> Vec<MemberStatus> {
    let book = service.leadership.book();
    let member = |p: mfsha_raft::PeerProgress| {
        let client = book.get(p.id).and_then(|addrs| addrs.client.clone());
        let kind = match (p.voter, client.is_some()) {
            (false, _) => MemberKind::Learner,
            (true, true) => MemberKind::Master,
            (true, false) => MemberKind::Witness,
        };
        MemberStatus {
            id: p.id,
            kind,
            matched: p.matched,
            last_contact_ms: p.last_contact_ms,
            client,
        }
    };
    service.meta.raft().progress().into_iter().map(member).collect()
}

/// Connected clients with the number of files each session holds open.
fn connected_clients(service: &Service) -> Vec<ClientStatus> {
    let mut clients = service.sessions.connected();
    let open: HashMap<SessionId, usize> = service.opens.by_session();
    for client in &mut clients {
        client.open_files = open.get(&client.session).copied().unwrap_or(0) as u64;
    }
    clients
}
