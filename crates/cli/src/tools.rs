//! The MooseFS-style file tools, run against a master by path:
//! `mfsha fileinfo|checkfile|dirinfo|getgoal|setgoal [-r] N PATH`.
//!
//! PATH is, as with MooseFS's tools, a path on a mounted filesystem: when it lies inside a
//! mounted mfsha filesystem (see [`target`]) the tool asks that mount's masters about the same
//! object. Any other PATH is a path from the filesystem root on the masters named by `-H`.
//! Of several masters the tool talks to the leader, found whatever the order (see
//! [`crate::leader`]).
//!
//! Each opens a session (`Hello`), resolves the path, asks, prints in the layout of
//! `mfsfileinfo`, `mfscheckfile`, `mfsdirinfo`, `mfsgetgoal` and `mfssetgoal` (naming PATH as
//! given) so operators recognise it, and closes the session.

use anyhow::{bail, Context};
use mfsha_proto::client::{
    CheckFileCounts, ChunkCopies, ClientOp, ClientReply, DirStats, MasterClient, Request,
};
use mfsha_proto::types::{Attr, FileKind, Ino, SessionId, Status, MAX_GOAL};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

/// How long one request to the master may take.
const TIMEOUT_MS: u64 = 10_000;
/// How long to look for a leader (an election takes a second or two).
const FIND_LEADER: std::time::Duration = std::time::Duration::from_secs(10);

/// A tool's session with the master (root, uid 0, like MooseFS's tools run by root).
pub(crate) struct Session {
    client: MasterClient,
    master: String,
    session: SessionId,
    seq: u64,
}

impl Session {
    /// Opens a session with the leader among `masters` (comma- or `+`-separated).
    pub(crate) async fn open(masters: &str) -> anyhow::Result<Session> {
        let list = crate::leader::master_list(masters);
        let deadline = std::time::Instant::now() + FIND_LEADER;
        // One token for every attempt: one that committed unseen does not leave a second session.
        let token = rand::random::<u64>() | 1;
        loop {
            let (client, master, _) =
                crate::leader::connect(&list, FIND_LEADER).await.with_context(|| {
                    format!("cannot reach a leading master at {masters} (is one running?)")
                })?;
            let mut s = Session { client, master, session: 0, seq: 0 };
            let info = format!("mfsha tools (pid {})", std::process::id());
            let reply = crate::leader::tool_hello(&s.client, token, info, TIMEOUT_MS).await;
            match reply.with_context(|| format!("request to the master at {} failed", s.master))? {
                Ok(ClientReply::Session { session, .. }) => {
                    s.session = session;
                    return Ok(s);
                }
                // It leads but has not applied its first entry yet, or just lost the lead.
                Err(Status::NotLeader | Status::Unavailable)
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await
                }
                Err(status) => bail!(
                    "master {} refused the session: {status}{}",
                    s.master,
                    crate::leader::exports_hint(status)
                ),
                other => bail!("master {} answered Hello with {other:?}", s.master),
            }
        }
    }

    /// Sends `op`; `mutation` gives it the next sequence number (exactly-once on retry).
    pub(crate) async fn call(
        &mut self,
        op: ClientOp,
        mutation: bool,
    ) -> anyhow::Result<ClientReply> {
        let seq = if mutation {
            self.seq += 1;
            self.seq
        } else {
            0
        };
        let request =
            Request { session: self.session, seq, uid: 0, gid: 0, groups: Vec::new(), op };
        let reply = self
            .client
            .call_timeout(request, TIMEOUT_MS)
            .await
            .with_context(|| format!("request to the master at {} failed", self.master))?;
        reply.map_err(|status| anyhow::anyhow!("{status} (errno {})", status.errno()))
    }

    pub(crate) async fn resolve(&mut self, path: &str) -> anyhow::Result<Attr> {
        match self.call(ClientOp::ResolvePath { path: path.to_string() }, false).await {
            Ok(ClientReply::Attr(attr)) => Ok(attr),
            Ok(other) => bail!("unexpected answer to ResolvePath: {other:?}"),
            Err(e) => Err(e.context(path.to_string())),
        }
    }

    pub(crate) async fn close(mut self) {
        // The tool is done either way; a failed goodbye only leaves a session to expire.
        if let Err(e) = self.call(ClientOp::Goodbye, true).await {
            tracing::debug!(error = %e, "closing the tool session failed");
        }
    }
}

/// Where a tool's PATH lives: the master to ask and the path from the filesystem root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub master: String,
    pub path: String,
}

/// Finds what PATH names. A PATH whose directory exists here and lies inside a mounted mfsha
/// filesystem (in `/proc/self/mountinfo`: fstype `fuse.mfsha`, or `fuse` as a mount made
/// directly by root shows, with the source `host:port[/subfolder]`)
/// names that mount's master and the path inside the filesystem, whatever `-H` says: the
/// mount is the authority on where its files live. Any other PATH is taken as a path from the
/// filesystem root on `master`.
pub fn target(master: &str, path: &str) -> Target {
    let given = Target { master: master.to_string(), path: path.to_string() };
    let Some(local) = local_path(Path::new(path)) else { return given };
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else { return given };
    mfsha_mount_of(&table, &local).unwrap_or(given)
}

/// The absolute form of a local `path`, with its directory's symlinks resolved but not its
/// last component (a tool asked about a symlink means the link). `None` when the directory
/// does not exist here.
fn local_path(path: &Path) -> Option<PathBuf> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            Some(std::fs::canonicalize(dir).ok()?.join(name))
        }
        // "/", ".", "..", "dir/..": nothing to keep unresolved.
        _ => std::fs::canonicalize(path).ok(),
    }
}

/// If the innermost mount of `mountinfo` that contains `local` (absolute) is an mfsha
/// filesystem: the mount's master and the path of `local` inside the filesystem.
fn mfsha_mount_of(mountinfo: &str, local: &Path) -> Option<Target> {
    let (fstype, point, source) = mountinfo
        .lines()
        .filter_map(parse_mount_line)
        .filter(|(_, point, _)| local.starts_with(point))
        .max_by_key(|(_, point, _)| point.components().count())?;
    let (master, subfolder) = match source.find('/') {
        Some(at) => (source[..at].to_string(), source[at..].trim_end_matches('/').to_string()),
        None => (source.clone(), String::new()),
    };
    // A FUSE mount made by root without fusermount shows as plain "fuse" (the subtype is
    // lost); the mount's source, "host:port[/subfolder]", then tells it is ours.
    let port_given = master.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    if !(fstype == "fuse.mfsha" || (fstype == "fuse" && port_given)) {
        return None;
    }
    let inside = local.strip_prefix(&point).ok()?;
    let mut path = subfolder;
    for part in inside.components() {
        if let Component::Normal(name) = part {
            path.push('/');
            path.push_str(&name.to_string_lossy());
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    Some(Target { master, path })
}

/// (fstype, mount point, source) of a line of `/proc/self/mountinfo`:
/// `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`.
fn parse_mount_line(line: &str) -> Option<(String, PathBuf, String)> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    let fstype = fields.get(sep + 1)?.to_string();
    let point = PathBuf::from(mfsha_mount::helper::unescape(fields.get(4)?));
    Some((fstype, point, mfsha_mount::helper::unescape(fields.get(sep + 2)?)))
}

/// The tools' one exchange: opens a session with PATH's master, resolves PATH, sends
/// `op(inode)` (with a sequence number if it is a `mutation`), closes the session whatever
/// happened. Returns PATH's attributes and the answer; errors name PATH.
pub(crate) async fn ask_about(
    master: &str,
    path: &str,
    mutation: bool,
    op: impl FnOnce(Ino) -> ClientOp,
) -> anyhow::Result<(Attr, ClientReply)> {
    let target = target(master, path);
    let mut s = Session::open(&target.master).await?;
    let reply = match s.resolve(&target.path).await {
        Ok(attr) => s.call(op(attr.ino), mutation).await.map(|reply| (attr, reply)),
        Err(e) => Err(e),
    };
    s.close().await;
    reply.with_context(|| path.to_string())
}

/// `mfsfileinfo`: every chunk of a file with its copies and their state.
pub async fn fileinfo(master: &str, path: &str) -> anyhow::Result<()> {
    match ask_about(master, path, false, |ino| ClientOp::FileInfo { ino }).await?.1 {
        ClientReply::FileInfo(chunks) => print!("{}", format_fileinfo(path, &chunks)),
        other => bail!("unexpected answer to FileInfo: {other:?}"),
    }
    Ok(())
}

/// `mfscheckfile`: a file's chunks counted by number of valid copies.
pub async fn checkfile(master: &str, path: &str) -> anyhow::Result<()> {
    match ask_about(master, path, false, |ino| ClientOp::CheckFile { ino }).await?.1 {
        ClientReply::CheckFile(counts) => print!("{}", format_checkfile(path, &counts)),
        other => bail!("unexpected answer to CheckFile: {other:?}"),
    }
    Ok(())
}

/// `mfsdirinfo`: recursive totals of a directory (or one file).
pub async fn dirinfo(master: &str, path: &str) -> anyhow::Result<()> {
    match ask_about(master, path, false, |ino| ClientOp::DirInfo { ino }).await?.1 {
        ClientReply::DirInfo(stats) => print!("{}", format_dirinfo(path, &stats)),
        other => bail!("unexpected answer to DirInfo: {other:?}"),
    }
    Ok(())
}

/// `mfsgetgoal`: the goal (number of copies) of a file or directory.
pub async fn getgoal(master: &str, path: &str) -> anyhow::Result<()> {
    match ask_about(master, path, false, |ino| ClientOp::GetGoal { ino }).await?.1 {
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
    let op = |ino| ClientOp::SetGoal { ino, goal, recursive };
    match ask_about(master, path, true, op).await? {
        (attr, ClientReply::Changed { inodes, not_changed, not_permitted }) => {
            let counts = (inodes, not_changed, not_permitted);
            print!("{}", format_setgoal(path, goal, &attr, recursive, counts));
        }
        (_, ClientReply::Attr(a)) => println!("{path}: {}", a.goal),
        (_, ClientReply::Unit) => println!("{path}: {goal}"),
        (_, other) => bail!("unexpected answer to SetGoal: {other:?}"),
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
        writeln!(
            out,
            "\tchunk {}: {:016X}_{:08X} / (id:{} ver:{}) goal:{}",
            c.index, c.chunk_id, c.version, c.chunk_id, c.version, c.goal
        )
        .expect("writing to a String cannot fail");
        if c.copies.is_empty() {
            out.push_str("\t\tno valid copies !!!\n");
        }
        for (i, copy) in c.copies.iter().enumerate() {
            writeln!(out, "\t\tcopy {}: {} (status:{})", i + 1, copy.server, copy.state)
                .expect("writing to a String cannot fail");
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
        writeln!(out, " {label:<32}{count:>10}").expect("writing to a String cannot fail");
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
        writeln!(out, "{name:<16}{value:>16}").expect("writing to a String cannot fail");
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
    format_set(path, "goal", u32::from(goal), attr, recursive, (changed, not_changed, denied))
}

/// `mfsset*` layout for an attribute named `what` (`goal`, `trashtime`): the new value for one
/// object, counters for `-r` on a directory.
pub fn format_set(
    path: &str,
    what: &str,
    value: u32,
    attr: &Attr,
    recursive: bool,
    (changed, not_changed, denied): (u64, u64, u64),
) -> String {
    if !recursive || attr.kind != FileKind::Directory {
        return format!("{path}: {value}\n");
    }
    let rows = [
        (format!(" inodes with {what} changed:"), changed),
        (format!(" inodes with {what} not changed:"), not_changed),
        (" inodes with permission denied:".to_string(), denied),
    ];
    let mut out = format!("{path}:\n");
    for (label, count) in rows {
        writeln!(out, "{label}{count:>width$}", width = 50usize.saturating_sub(label.len()))
            .expect("writing to a String cannot fail");
    }
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

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
61 22 0:52 / /mnt/mfs rw,nosuid,nodev,relatime shared:33 - fuse.mfsha 10.0.0.5:9421 rw,user_id=0
62 22 0:53 / /mnt/my\\040data rw,relatime shared:34 - fuse.mfsha m1:7000/projects/a rw
63 61 0:54 / /mnt/mfs/inner rw,relatime shared:35 - fuse.sshfs host:/x rw
64 22 0:55 / /mnt/root rw,relatime - fuse 127.0.0.1:9421 rw,user_id=0,allow_other
65 22 0:56 / /mnt/other rw,relatime - fuse somefs rw,user_id=0
";

    fn located(local: &str) -> Option<Target> {
        mfsha_mount_of(MOUNTINFO, Path::new(local))
    }

    fn at(master: &str, path: &str) -> Option<Target> {
        Some(Target { master: master.into(), path: path.into() })
    }

    #[test]
    fn a_path_in_a_mount_names_its_master_and_the_path_inside() {
        assert_eq!(located("/mnt/mfs/tree/big"), at("10.0.0.5:9421", "/tree/big"));
        assert_eq!(located("/mnt/mfs"), at("10.0.0.5:9421", "/"));
        // A subfolder mount: paths inside start at the subfolder; escapes are undone.
        assert_eq!(located("/mnt/my data/f"), at("m1:7000", "/projects/a/f"));
        assert_eq!(located("/mnt/my data"), at("m1:7000", "/projects/a"));
        // Another filesystem mounted inside, or no mfsha mount at all: taken as given.
        assert_eq!(located("/mnt/mfs/inner/f"), None);
        assert_eq!(located("/mnt/mfsx/f"), None);
        // Mounted by root without fusermount: plain "fuse", known by its source.
        assert_eq!(located("/mnt/root/a/b"), at("127.0.0.1:9421", "/a/b"));
        assert_eq!(located("/mnt/other/a"), None);
        assert_eq!(located("/home/f"), None);
    }

    #[test]
    fn a_path_outside_any_mount_is_a_path_on_the_master() {
        let t = target("m:9421", "/no/such/dir/anywhere/file");
        assert_eq!(
            t,
            Target { master: "m:9421".into(), path: "/no/such/dir/anywhere/file".into() }
        );
    }

    #[test]
    fn set_layouts_line_up_like_mfssetgoal() {
        let t = mfsha_proto::types::Timestamp::new(0, 0);
        let attr = |kind| Attr {
            ino: 2,
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            nlink: 1,
            rdev: 0,
            atime: t,
            mtime: t,
            ctime: t,
            goal: 2,
            trash_seconds: 60,
        };
        let dir = attr(FileKind::Directory);
        let text = format_setgoal("/d", 3, &dir, true, (5, 1, 0));
        assert_eq!(
            text,
            "/d:\n inodes with goal changed:                       5\n \
             inodes with goal not changed:                   1\n \
             inodes with permission denied:                  0\n"
        );
        let text = format_set("/d", "trashtime", 60, &dir, true, (2, 0, 0));
        assert!(text.lines().all(|l| l == "/d:" || l.len() == 50), "{text}");
        assert_eq!(
            format_set("/f", "trashtime", 60, &attr(FileKind::File), true, (1, 0, 0)),
            "/f: 60\n"
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
