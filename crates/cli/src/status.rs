//! `mfsha status [-H host:port] [--json]`: one master's view of the cluster.

use anyhow::{bail, Context};
use mfsha_proto::client::{ClientOp, ClientReply, ClusterStatus, Request};
use mfsha_proto::rpc::RpcClient;
use mfsha_proto::types::Reply;
use std::fmt::Write as _;

/// How long to wait for the master's answer.
const STATUS_TIMEOUT_MS: u64 = 5_000;

/// Asks the master at `master` for its status and prints it (as JSON with `json`).
pub async fn run(master: &str, json: bool) -> anyhow::Result<()> {
    let status = fetch(master).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", format_status(master, &status));
    }
    Ok(())
}

/// Fetches `ClusterStatus` from the master's client port (no session needed).
pub async fn fetch(master: &str) -> anyhow::Result<ClusterStatus> {
    let client: RpcClient<Request, Reply<ClientReply>> = RpcClient::connect(master)
        .await
        .with_context(|| format!("cannot reach the master at {master} (is it running?)"))?;
    let request = Request { session: 0, seq: 0, uid: 0, gid: 0, op: ClientOp::Status };
    let reply = client
        .call_timeout(request, STATUS_TIMEOUT_MS)
        .await
        .with_context(|| format!("asking {master} for its status"))?;
    match reply {
        Ok(ClientReply::Status(status)) => Ok(status),
        Ok(other) => bail!("master {master} answered a status request with {other:?}"),
        Err(status) => bail!("master {master} refused the status request: {status}"),
    }
}

/// The human-readable report.
pub fn format_status(master: &str, s: &ClusterStatus) -> String {
    let mut out = String::new();
    let leader = if s.leader_id == 0 { "none".to_string() } else { s.leader_id.to_string() };
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "master {master}: node {} is {}, leader {leader}, term {}",
        s.node_id, s.role, s.term
    );
    let _ =
        writeln!(out, "raft: commit index {}, applied index {}", s.commit_index, s.applied_index);
    let _ = writeln!(
        out,
        "metadata: {} inodes, {} directories, {} files, {} chunks, {} in trash",
        s.inodes, s.directories, s.files, s.chunks, s.trash_inodes
    );
    let _ = writeln!(
        out,
        "chunk health: {} missing, {} endangered, {} undergoal, {} overgoal",
        s.chunks_missing, s.chunks_endangered, s.chunks_undergoal, s.chunks_overgoal
    );
    let _ = writeln!(out, "chunkservers: {}", s.chunkservers.len());
    for cs in &s.chunkservers {
        let _ = writeln!(
            out,
            "  {}  {} chunks, {} of {} bytes used, {} disks{}",
            cs.addr,
            cs.chunks,
            cs.used_bytes,
            cs.total_bytes,
            cs.disks.len(),
            labels(&cs.labels)
        );
    }
    let _ = writeln!(out, "clients: {}", s.clients.len());
    for c in &s.clients {
        let _ = writeln!(
            out,
            "  session {}  {}  {}  {} open files",
            c.session, c.peer, c.info, c.open_files
        );
    }
    let _ = writeln!(out, "loggers: {}", s.loggers.len());
    for logger in &s.loggers {
        let _ = writeln!(out, "  {logger}");
    }
    let _ = writeln!(
        out,
        "peers: {}",
        if s.peers.is_empty() { "none".into() } else { s.peers.join(", ") }
    );
    out
}

fn labels(labels: &[String]) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!(", labels {}", labels.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfsha_proto::client::{ChunkserverStatus, ClientStatus};

    #[test]
    fn human_report_names_every_figure() {
        let status = ClusterStatus {
            node_id: 2,
            role: "leader".into(),
            leader_id: 2,
            term: 7,
            commit_index: 1234,
            applied_index: 1233,
            inodes: 10,
            directories: 3,
            files: 7,
            chunks: 5,
            chunkservers: vec![ChunkserverStatus {
                addr: "10.0.0.5:9422".into(),
                ..Default::default()
            }],
            clients: vec![ClientStatus {
                session: 99,
                peer: "10.0.0.9:4000".into(),
                info: "h:/mnt".into(),
                open_files: 1,
            }],
            loggers: vec!["10.0.0.7:4100".into()],
            ..Default::default()
        };
        let text = format_status("m:9421", &status);
        for expected in [
            "node 2 is leader",
            "term 7",
            "commit index 1234",
            "applied index 1233",
            "10 inodes",
            "3 directories",
            "7 files",
            "5 chunks",
            "chunkservers: 1",
            "10.0.0.5:9422",
            "clients: 1",
            "session 99",
            "loggers: 1",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }
}
