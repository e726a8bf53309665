//! The MooseFS-style file tools, run against a master by path:
//! `mfsha fileinfo|checkfile|dirinfo|getgoal|setgoal [-r] N PATH`.
//!
//! Each opens a session (`Hello`), resolves the path (relative to the filesystem root),
//! asks, prints in the layout of `mfsfileinfo`, `mfscheckfile`, `mfsdirinfo`, `mfsgetgoal`
//! and `mfssetgoal` so operators recognise it, and closes the session.

use anyhow::{bail, Context};
use mfsha_proto::client::{CheckFileCounts, ChunkCopies, ClientOp, ClientReply, DirStats, Request};
use mfsha_proto::rpc::RpcClient;
use mfsha_proto::types::{Attr, FileKind, Reply, SessionId, MAX_GOAL};
use std::fmt::Write as _;

/// How long one request to the master may take.
const TIMEOUT_MS: u64 = 10_000;

/// A tool's session with the master.
struct Session {
    client: RpcClient<Request, Reply<ClientReply>>,
    master: String,
    session: SessionId,
    seq: u64,
}

impl Session {
    async fn open(master: &str) -> anyhow::Result<Session> {
        let client = RpcClient::connect(master)
            .await
            .with_context(|| format!("cannot reach the master at {master} (is it running?)"))?;
        let mut s = Session { client, master: master.to_string(), session: 0, seq: 0 };
        let hello = ClientOp::Hello {
            session: None,
            client_info: format!("mfsha tools (pid {})", std::process::id()),
            subdir: "/".into(),
            password: None,
        };
        match s.call(hello, false).await? {
            ClientReply::Session { session, .. } => s.session = session,
            other => bail!("master {master} answered Hello with {other:?}"),
        }
        Ok(s)
    }

    /// Sends `op`; `mutation` gives it the next sequence number (exactly-once on retry).
    async fn call(&mut self, op: ClientOp, mutation: bool) -> anyhow::Result<ClientReply> {
        let seq = if mutation {
            self.seq += 1;
            self.seq
        } else {
            0
        };
        let request = Request { session: self.session, seq, uid: 0, gid: 0, op };
        let reply = self
            .client
            .call_timeout(request, TIMEOUT_MS)
            .await
            .with_context(|| format!("request to the master at {} failed", self.master))?;
        reply.map_err(|status| anyhow::anyhow!("{status} (errno {})", status.errno()))
    }

    async fn resolve(&mut self, path: &str) -> anyhow::Result<Attr> {
        match self.call(ClientOp::ResolvePath { path: path.to_string() }, false).await {
            Ok(ClientReply::Attr(attr)) => Ok(attr),
            Ok(other) => bail!("unexpected answer to ResolvePath: {other:?}"),
            Err(e) => Err(e.context(format!("{path}"))),
        }
    }

    async fn close(mut self) {
        // The tool is done either way; a failed goodbye only leaves a session to expire.
        if let Err(e) = self.call(ClientOp::Goodbye, true).await {
            tracing::debug!(error = %e, "closing the tool session failed");
        }
    }
}

/// `mfsfileinfo`: every chunk of a file with its copies and their state.
pub async fn fileinfo(master: &str, path: &str) -> anyhow::Result<()> {
    let mut s = Session::open(master).await?;
    let attr = s.resolve(path).await?;
    let reply = s.call(ClientOp::FileInfo { ino: attr.ino }, false).await;
    s.close().await;
    match reply.with_context(|| path.to_string())? {
        ClientReply::FileInfo(chunks) => print!("{}", format_fileinfo(path, &chunks)),
        other => bail!("unexpected answer to FileInfo: {other:?}"),
    }
    Ok(())
}

/// `mfscheckfile`: a file's chunks counted by number of valid copies.
pub async fn checkfile(master: &str, path: &str) -> anyhow::Result<()> {
    let mut s = Session::open(master).await?;
    let attr = s.resolve(path).await?;
    let reply = s.call(ClientOp::CheckFile { ino: attr.ino }, false).await;
    s.close().await;
    match reply.with_context(|| path.to_string())? {
        ClientReply::CheckFile(counts) => print!("{}", format_checkfile(path, &counts)),
        other => bail!("unexpected answer to CheckFile: {other:?}"),
    }
    Ok(())
}

/// `mfsdirinfo`: recursive totals of a directory (or one file).
pub async fn dirinfo(master: &str, path: &str) -> anyhow::Result<()> {
    let mut s = Session::open(master).await?;
    let attr = s.resolve(path).await?;
    let reply = s.call(ClientOp::DirInfo { ino: attr.ino }, false).await;
    s.close().await;
    match reply.with_context(|| path.to_string())? {
        ClientReply::DirInfo(stats) => print!("{}", format_dirinfo(path, &stats)),
        other => bail!("unexpected answer to DirInfo: {other:?}"),
    }
    Ok(())
}

/// `mfsgetgoal`: the goal (number of copies) of a file or directory.
pub async fn getgoal(master: &str, path: &str) -> anyhow::Result<()> {
    let mut s = Session::open(master).await?;
    let attr = s.resolve(path).await?;
    let reply = s.call(ClientOp::GetGoal { ino: attr.ino }, false).await;
    s.close().await;
    match reply.with_context(|| path.to_string())? {
        ClientReply::Goal(goal) => println!("{path}: {goal}"),
        other => bail!("unexpected answer to GetGoal: {other:?}"),
    }
    Ok(())
}

/// `mfssetgoal [-r] N PATH`: sets the goal; with `recursive`, of everything below a directory.
pub async fn setgoal(master: &str, path: &str, goal: u8, recursive: bool) -> anyhow::Result<()> {
    if goal == 0 || goal > MAX_GOAL {
        bail!("goal {goal} is out of range: use 1..={MAX_GOAL}");
    }
    let mut s = Session::open(master).await?;
    let attr = s.resolve(path).await?;
    let reply = s.call(ClientOp::SetGoal { ino: attr.ino, goal, recursive }, true).await;
    s.close().await;
    match reply.with_context(|| path.to_string())? {
        ClientReply::Changed { inodes, not_changed, not_permitted } => {
            print!(
                "{}",
                format_setgoal(path, goal, &attr, recursive, (inodes, not_changed, not_permitted))
            );
        }
        ClientReply::Attr(a) => println!("{path}: {}", a.goal),
        ClientReply::Unit => println!("{path}: {goal}"),
        other => bail!("unexpected answer to SetGoal: {other:?}"),
    }
    Ok(())
}

/// `mfsfileinfo` layout: one line per chunk, one per copy, "no valid copies !!!" when none.
pub fn format_fileinfo(path: &str, chunks: &[ChunkCopies]) -> String {
    let mut out = format!("{path}:\n");
    if chunks.is_empty() {
        out.push_str("\tno chunks - empty file\n");
    }
    for c in chunks {
        let _ = writeln!(
            out,
            "\tchunk {}: {:016X}_{:08X} / (id:{} ver:{}) goal:{}",
            c.index, c.chunk_id, c.version, c.chunk_id, c.version, c.goal
        );
        if c.copies.is_empty() {
            out.push_str("\t\tno valid copies !!!\n");
        }
        for (i, copy) in c.copies.iter().enumerate() {
            let _ = writeln!(out, "\t\tcopy {}: {} (status:{})", i + 1, copy.server, copy.state);
        }
    }
    out
}

/// `mfscheckfile` layout: "chunks with N copies: COUNT" for each N that occurs.
pub fn format_checkfile(path: &str, counts: &CheckFileCounts) -> String {
    let mut out = format!("{path}:\n");
    for (copies, &count) in counts.by_copies.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let label = match copies {
            0 => "chunks with 0 copies:".to_string(),
            1 => "chunks with 1 copy:".to_string(),
            n => format!("chunks with {n} copies:"),
        };
        let _ = writeln!(out, " {label:<32}{count:>10}");
    }
    out
}

/// `mfsdirinfo` layout.
pub fn format_dirinfo(path: &str, s: &DirStats) -> String {
    let rows = [
        (" inodes:", s.inodes),
        ("  directories:", s.directories),
        ("  files:", s.files),
        (" chunks:", s.chunks),
        (" length:", s.length),
        (" size:", s.size),
        (" realsize:", s.realsize),
    ];
    let mut out = format!("{path}:\n");
    for (name, value) in rows {
        let _ = writeln!(out, "{name:<16}{value:>16}");
    }
    out
}

/// `mfssetgoal` layout: the new goal for one object, counters for `-r`.
pub fn format_setgoal(
    path: &str,
    goal: u8,
    attr: &Attr,
    recursive: bool,
    (changed, not_changed, denied): (u64, u64, u64),
) -> String {
    if !recursive || attr.kind != FileKind::Directory {
        return format!("{path}: {goal}\n");
    }
    let mut out = format!("{path}:\n");
    let _ = writeln!(out, " inodes with goal changed:{changed:>24}");
    let _ = writeln!(out, " inodes with goal not changed:{not_changed:>20}");
    let _ = writeln!(out, " inodes with permission denied:{denied:>19}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfsha_proto::client::CopyInfo;
    use mfsha_proto::types::ServerAddr;

    #[test]
    fn fileinfo_lists_chunks_and_copies_like_mfsfileinfo() {
        let copy = |port, state: &str| CopyInfo {
            server: ServerAddr { host: "10.0.0.1".into(), port },
            state: state.into(),
        };
        let chunks = vec![
            ChunkCopies {
                index: 0,
                chunk_id: 0x1A,
                version: 3,
                goal: 2,
                copies: vec![copy(9422, "VALID"), copy(9423, "WRONG VERSION")],
            },
            ChunkCopies { index: 1, chunk_id: 0x1B, version: 1, goal: 2, copies: vec![] },
        ];
        let text = format_fileinfo("/f", &chunks);
        assert_eq!(
            text,
            "/f:\n\tchunk 0: 000000000000001A_00000003 / (id:26 ver:3) goal:2\n\
             \t\tcopy 1: 10.0.0.1:9422 (status:VALID)\n\
             \t\tcopy 2: 10.0.0.1:9423 (status:WRONG VERSION)\n\
             \tchunk 1: 000000000000001B_00000001 / (id:27 ver:1) goal:2\n\
             \t\tno valid copies !!!\n"
        );
    }

    #[test]
    fn checkfile_and_dirinfo_layouts() {
        let text = format_checkfile("/f", &CheckFileCounts { by_copies: vec![0, 1, 3] });
        assert!(text.contains(" chunks with 1 copy:"), "{text}");
        assert!(text.contains(" chunks with 2 copies:"), "{text}");
        assert!(!text.contains("0 copies"), "{text}");
        let stats = DirStats {
            inodes: 4,
            directories: 1,
            files: 3,
            chunks: 3,
            length: 10,
            size: 20,
            realsize: 40,
        };
        let text = format_dirinfo("/d", &stats);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "/d:");
        assert!(lines[1].starts_with(" inodes:") && lines[1].ends_with(" 4"));
        assert!(lines[7].starts_with(" realsize:") && lines[7].ends_with(" 40"));
    }
}
