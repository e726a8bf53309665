//! Emptying the trash with a real master in process (real Raft node, real RocksDB, real client
//! connections): files whose trash time passed are purged by the leader within a bound, never
//! before; trash time 0 frees at once; a purged file that is still open becomes sustained.

use mfsha_master_ha::daemon::Master;
use mfsha_master_ha::server::opens;
use mfsha_master_ha::trash::{purge_round, Round};
use mfsha_proto::client::{ClientOp, ClientReply, Request, TrashEntry};
use mfsha_proto::types::{Attr, FileKind, Ino, Status, Timestamp, ROOT_INO};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// A session with the master that numbers its mutations.
struct Tool {
    client: Client,
    session: u64,
    seq: u64,
}

impl Tool {
    async fn open(addr: &str) -> Tool {
        let client = Client::connect(addr).await.unwrap();
        let session = open_session(&client).await;
        Tool { client, session, seq: 0 }
    }

    async fn mutate(&mut self, op: ClientOp) -> Result<ClientReply, Status> {
        self.seq += 1;
        self.client.call(request(self.session, self.seq, op)).await.unwrap()
    }

    /// A new empty file in the root with `trash_seconds`.
    async fn file(&mut self, name: &str, trash_seconds: u32) -> Attr {
        let create = ClientOp::Mknod {
            parent: ROOT_INO,
            name: name.into(),
            kind: FileKind::File,
            mode: 0o644,
            umask: 0,
            rdev: 0,
        };
        let file = attr(self.mutate(create).await);
        let set =
            ClientOp::SetTrashTime { ino: file.ino, seconds: trash_seconds, recursive: false };
        let changed = self.mutate(set).await;
        assert!(matches!(changed, Ok(ClientReply::Changed { .. })), "{changed:?}");
        let get = ClientOp::GetTrashTime { ino: file.ino };
        let now = self.client.call(request(self.session, 0, get)).await.unwrap();
        assert_eq!(now, Ok(ClientReply::TrashTime(trash_seconds)));
        file
    }

    async fn unlink(&mut self, name: &str) {
        let unlink = ClientOp::Unlink { parent: ROOT_INO, name: name.into() };
        assert_eq!(self.mutate(unlink).await, Ok(ClientReply::Unit), "unlink {name}");
    }

    /// Files `a`, `b`, `c` (trash time one hour) created and deleted; their inodes.
    async fn trash_three(&mut self) -> Vec<Ino> {
        let mut files = Vec::new();
        for name in ["a", "b", "c"] {
            files.push(self.file(name, 3600).await.ino);
            self.unlink(name).await;
        }
        files
    }

    /// A page of the trash listing, asked as root, and whether more follow.
    async fn trash_page(&self, after: Ino, max: u32) -> (Vec<TrashEntry>, bool) {
        let op = ClientOp::TrashList { after, max };
        let as_root = Request { uid: 0, gid: 0, ..request(0, 0, op) };
        match self.client.call(as_root).await.unwrap() {
            Ok(ClientReply::Trash { entries, more }) => (entries, more),
            other => panic!("TrashList answered {other:?}"),
        }
    }

    async fn getattr(&self, ino: Ino) -> Result<ClientReply, Status> {
        self.client.call(request(self.session, 0, ClientOp::GetAttr { ino })).await.unwrap()
    }
}

async fn fast_master(dir: &std::path::Path) -> (Master, String) {
    let mut config = config(dir);
    config.trash.purge_interval_ms = 100;
    start_with(config).await
}

fn in_trash(master: &Master, ino: Ino) -> bool {
    master.service.meta.read(|s| s.trash().any(|(i, _, _)| i == ino))
}

fn sustained(master: &Master, ino: Ino) -> bool {
    master.service.meta.read(|s| s.sustained().any(|i| i == ino))
}

/// Waits until the leader has freed `ino` (no longer sustained, gone); how long it took.
async fn wait_freed(master: &Master, ino: Ino, limit: Duration) -> Duration {
    let start = Instant::now();
    while master.service.meta.read(|s| s.getattr(ino).is_ok()) {
        assert!(start.elapsed() < limit, "inode {ino} not freed after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Waits until `ino` has left the trash; returns how long that took.
async fn wait_purged(master: &Master, ino: Ino, limit: Duration) -> Duration {
    let start = Instant::now();
    while in_trash(master, ino) {
        assert!(start.elapsed() < limit, "inode {ino} still in the trash after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_files_are_purged_within_a_bound_and_never_early() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = fast_master(dir.path()).await;
    let mut tool = Tool::open(&addr).await;
    let short = tool.file("short", 1).await;
    let long = tool.file("long", 86_400).await;
    let zero = tool.file("zero", 0).await;

    let unlinked = Instant::now();
    tool.unlink("short").await;
    tool.unlink("long").await;
    tool.unlink("zero").await;
    // Trash time 0: never in the trash, freed by the leader's next round (nobody has it open).
    assert!(!in_trash(&master, zero.ino));
    wait_freed(&master, zero.ino, Duration::from_secs(2)).await;
    assert_eq!(tool.getattr(zero.ino).await, Err(Status::NotFound));
    assert!(in_trash(&master, short.ino) && in_trash(&master, long.ino));
    let paths: Vec<String> = master.service.meta.read(|s| s.trash().map(|t| t.1.into()).collect());
    assert_eq!(paths, ["/short", "/long"]);

    // Its expiry is at least 1 s after `unlinked` (deleted_at is taken after it): still
    // there at 900 ms, gone at the first round after 1 s (rounds every 100 ms) plus a commit.
    tokio::time::sleep(Duration::from_millis(900).saturating_sub(unlinked.elapsed())).await;
    let (there, at) = (in_trash(&master, short.ino), unlinked.elapsed());
    assert!(there || at >= Duration::from_secs(1), "purged {at:?} after the unlink, before 1 s");
    wait_purged(&master, short.ino, Duration::from_secs(4)).await;
    wait_freed(&master, short.ino, Duration::from_secs(2)).await;
    eprintln!("purged {:?} after the unlink (trash time 1 s)", unlinked.elapsed());
    assert_eq!(tool.getattr(short.ino).await, Err(Status::NotFound), "the purged file is freed");
    assert!(!sustained(&master, short.ino));
    // A file with a day to go stays through several rounds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(in_trash(&master, long.ino));
    assert!(matches!(tool.getattr(long.ino).await, Ok(ClientReply::Attr(_))));
    master.service.meta.read(|s| s.check_invariants()).expect("invariants hold after the purge");
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_file_still_open_is_sustained_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = fast_master(dir.path()).await;
    let mut tool = Tool::open(&addr).await;
    let file = tool.file("open", 1).await;
    let opened = tool.mutate(ClientOp::Open { ino: file.ino, flags: 0 }).await;
    assert!(matches!(opened, Ok(ClientReply::Attr(_))), "open answered {opened:?}");
    tool.unlink("open").await;
    assert!(in_trash(&master, file.ino));

    wait_purged(&master, file.ino, Duration::from_secs(5)).await;
    // Several of the leader's freeing rounds go by: the open file stays.
    tokio::time::sleep(opens::FREE_PERIOD * 3).await;
    assert!(sustained(&master, file.ino), "a purged file still open must be sustained");
    assert!(matches!(tool.getattr(file.ino).await, Ok(ClientReply::Attr(_))));

    let released = tool.mutate(ClientOp::Release { ino: file.ino }).await;
    assert_eq!(released, Ok(ClientReply::Unit));
    wait_freed(&master, file.ino, Duration::from_secs(2)).await;
    assert!(!sustained(&master, file.ino));
    assert_eq!(tool.getattr(file.ino).await, Err(Status::NotFound));
    master.service.meta.read(|s| s.check_invariants()).expect("invariants hold");
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_purges_at_most_its_batch_and_only_what_expired_by_its_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = start(dir.path()).await;
    let mut tool = Tool::open(&addr).await;
    let files = tool.trash_three().await;
    let meta = &master.service.meta;
    let now = Timestamp::now();
    let early = Timestamp::new(now.secs + 3000, 0);
    assert_eq!(purge_round(meta, 10, early).await, Round::default(), "nothing expired yet");
    let late = Timestamp::new(now.secs + 3700, 0);
    let round = purge_round(meta, 2, late).await;
    assert_eq!(round, Round { purged: 2, gone: 0, failed: 0 }, "a batch of 2");
    // Lowest inode numbers first; the third waits for the next round.
    assert!(!in_trash(&master, files[0]) && !in_trash(&master, files[1]));
    assert!(in_trash(&master, files[2]));
    assert_eq!(purge_round(meta, 2, late).await.purged, 1);
    assert_eq!(purge_round(meta, 2, late).await, Round::default());
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trash_listing_pages_by_inode_and_only_root_may_see_or_change_the_trash() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = start(dir.path()).await;
    let mut tool = Tool::open(&addr).await;
    let files = tool.trash_three().await;
    let (first, more) = tool.trash_page(0, 2).await;
    assert!(more);
    assert_eq!(first.iter().map(|e| e.ino).collect::<Vec<_>>(), files[..2]);
    assert_eq!((first[0].path.as_str(), first[0].trash_seconds), ("/a", 3600));
    let (rest, more) = tool.trash_page(first[1].ino, 2).await;
    assert_eq!(rest.iter().map(|e| e.ino).collect::<Vec<_>>(), files[2..]);
    assert!(!more);
    // Uid 1000 (the tool's requests): neither listing nor purging nor undeleting.
    let list = request(tool.session, 0, ClientOp::TrashList { after: 0, max: 10 });
    assert_eq!(tool.client.call(list).await.unwrap(), Err(Status::Perm));
    assert_eq!(tool.mutate(ClientOp::Purge { ino: files[0] }).await, Err(Status::Perm));
    assert_eq!(tool.mutate(ClientOp::Undelete { ino: files[0] }).await, Err(Status::Perm));
    assert!(files.iter().all(|ino| in_trash(&master, *ino)));
    master.stop().await.unwrap();
}
