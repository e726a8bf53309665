//! `mfsha status [-H host:port[,host:port...]] [--json]`: one master's view of the cluster —
//! the given master's, or of several the leader's (a follower's if none leads).

use anyhow::Context;
use mfsha_proto::client::{ClusterStatus, MasterClient};
use std::fmt::Write as _;
use std::time::Duration;

/// How long to look for a leader among several masters before showing a follower's view.
const FIND_LEADER: Duration = Duration::from_secs(3);

/// Asks the master(s) at `masters` for the status and prints it (as JSON with `json`).
pub async fn run(masters: &str, json: bool) -> anyhow::Result<()> {
    let (master, status) = fetch(masters).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", format_status(&master, &status));
    }
    Ok(())
}

/// Fetches `ClusterStatus` (no session needed) and says which master answered: the one
/// given, or of several the leader, or the first that answers when none leads.
pub async fn fetch(masters: &str) -> anyhow::Result<(String, ClusterStatus)> {
    let list = crate::leader::master_list(masters);
    if list.len() > 1 {
        if let Ok((_, master, status)) = crate::leader::connect(&list, FIND_LEADER).await {
            return Ok((master, status));
        }
    }
    let mut failures = Vec::new();
    for master in &list {
        match ask(master).await {
            Ok(status) => return Ok((master.clone(), status)),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    anyhow::bail!("no master answered the status request: {}", failures.join("; "))
}

async fn ask(master: &str) -> anyhow::Result<ClusterStatus> {
    let client = MasterClient::connect_within(master, mfsha_proto::net::CONNECT_TIMEOUT)
        .await
        .with_context(|| format!("cannot reach the master at {master} (is it running?)"))?;
    crate::leader::ask_status(&client)
        .await
        .with_context(|| format!("asking {master} for its status"))
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
