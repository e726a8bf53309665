//! The client library against a real master and real chunkservers (no FUSE).

use super::{cluster, connect, connect_with, runtime};
use mfsha_mount::{Caller, Groups, NewNode};
use mfsha_proto::types::*;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

const ME: Caller = Caller { uid: 1000, gid: 1000, groups: Groups::NONE };

fn names(entries: &[DirEntry]) -> Vec<String> {
    let mut v: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    v.sort();
    v
}

#[test]
fn metadata_operations_reach_the_master_and_come_back() {
    let c = cluster(0);
    runtime().block_on(async {
        let fs = connect(&c.master_addr()).await;
        let root = fs.root();
        let dir = fs.mkdir(ME, root, "dir", 0o755, 0o022).await.unwrap();
        assert_eq!(
            (dir.kind, dir.mode & 0o7777, dir.uid, dir.gid),
            (FileKind::Directory, 0o755, 1000, 1000)
        );
        let file = fs.mknod(ME, dir.ino, "file", NewNode::file(0o640)).await.unwrap();
        assert_eq!(
            (file.kind, file.mode & 0o7777, file.size, file.nlink),
            (FileKind::File, 0o640, 0, 1)
        );
        assert_eq!(fs.lookup(ME, dir.ino, "file").await.unwrap().ino, file.ino);
        assert_eq!(fs.lookup(ME, dir.ino, "nope").await, Err(Status::NotFound));
        assert_eq!(fs.mkdir(ME, root, "dir", 0o755, 0).await, Err(Status::Exists));

        let hard = fs.link(ME, file.ino, root, "hard").await.unwrap();
        assert_eq!((hard.ino, hard.nlink), (file.ino, 2));
        let sym = fs.symlink(ME, root, "sym", "dir/file").await.unwrap();
        assert_eq!(sym.kind, FileKind::Symlink);
        assert_eq!(fs.readlink(sym.ino).await.unwrap(), "dir/file");

        fs.rename(ME, dir.ino, "file", root, "moved", 0).await.unwrap();
        assert_eq!(fs.lookup(ME, dir.ino, "file").await, Err(Status::NotFound));
        assert_eq!(
            names(&fs.readdir_all(Caller::ROOT, root).await.unwrap()),
            ["dir", "hard", "moved", "sym"]
        );
        const RENAME_NOREPLACE: u32 = 1;
        assert_eq!(
            fs.rename(ME, root, "sym", root, "moved", RENAME_NOREPLACE).await,
            Err(Status::Exists)
        );

        let when = Timestamp::new(1_234_567_890, 123_456_789);
        let set =
            SetAttr { mode: Some(0o600), mtime: Some(TimeSet::At(when)), ..Default::default() };
        let attr = fs.setattr(ME, file.ino, set).await.unwrap();
        assert_eq!((attr.mode & 0o7777, attr.mtime), (0o600, when));
        assert_eq!(fs.getattr(file.ino).await.unwrap().mtime, when, "nanoseconds are kept");

        fs.setxattr(ME, file.ino, "user.colour", b"blue", 0).await.unwrap();
        assert_eq!(fs.getxattr(Caller::ROOT, file.ino, "user.colour").await.unwrap(), b"blue");
        assert_eq!(fs.listxattr(file.ino).await.unwrap(), ["user.colour"]);
        const XATTR_CREATE: u32 = 1;
        assert_eq!(
            fs.setxattr(ME, file.ino, "user.colour", b"red", XATTR_CREATE).await,
            Err(Status::Exists)
        );
        fs.removexattr(ME, file.ino, "user.colour").await.unwrap();
        assert_eq!(fs.getxattr(Caller::ROOT, file.ino, "user.colour").await, Err(Status::NoAttr));

        fs.unlink(ME, root, "hard").await.unwrap();
        assert_eq!(fs.getattr(file.ino).await.unwrap().nlink, 1);
        fs.mknod(ME, dir.ino, "inside", NewNode::file(0o644)).await.unwrap();
        assert_eq!(fs.rmdir(ME, root, "dir").await, Err(Status::NotEmpty));
        fs.unlink(ME, dir.ino, "inside").await.unwrap();
        fs.rmdir(ME, root, "dir").await.unwrap();
        assert_eq!(names(&fs.readdir_all(Caller::ROOT, root).await.unwrap()), ["moved", "sym"]);
        fs.close().await.unwrap();
    });
}

/// What a file should hold, kept in memory next to the real one.
fn model_write(model: &mut Vec<u8>, offset: usize, data: &[u8]) {
    if model.len() < offset + data.len() {
        model.resize(offset + data.len(), 0);
    }
    model[offset..offset + data.len()].copy_from_slice(data);
}

/// A sequential reader gets the next read-ahead window fetched in the background; a write
/// through another handle of the same client must make that prefetched window stale, so the
/// reader sees the new bytes, not the ones prefetched before the write.
#[test]
fn a_write_between_sequential_reads_is_seen_despite_the_prefetched_window() {
    let c = cluster(2);
    runtime().block_on(async {
        let fs = connect(&c.master_addr()).await;
        let size = 24 << 20;
        let old: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        fs.write_file(ME, "/seq", &old).await.unwrap();
        let ino = fs.lookup(ME, fs.root(), "seq").await.unwrap().ino;
        let (reader, _) = fs.open(ME, ino, libc::O_RDONLY).await.unwrap();
        let step = 1u32 << 20;
        // Read sequentially up to a window's end (windows 1, 1, 2 and 4 MiB), so the window
        // after it, [8, 16) MiB, is being prefetched when the write comes.
        let mut at = 0u64;
        while at < 8 << 20 {
            let got = fs.read(reader, at, step).await.unwrap();
            assert_eq!(got, old[at as usize..at as usize + step as usize]);
            at += u64::from(step);
        }
        // Overwrite everything after the reader's position through another handle.
        let (writer, _) = fs.open(ME, ino, libc::O_WRONLY).await.unwrap();
        let new = vec![0xA5u8; size - at as usize];
        fs.write(writer, at, &new).await.unwrap();
        fs.release(writer).await.unwrap();
        while (at as usize) < size {
            let got = fs.read(reader, at, step).await.unwrap();
            assert!(got.iter().all(|b| *b == 0xA5), "stale prefetched bytes at offset {at}");
            at += u64::from(step);
        }
        fs.release(reader).await.unwrap();
    });
}

#[test]
fn files_of_several_chunks_with_holes_read_back_exactly() {
    let c = cluster(3);
    runtime().block_on(async {
        let fs = connect(&c.master_addr()).await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let chunk = CHUNK_BYTES as usize;
        let file = fs.mknod(ME, fs.root(), "big", NewNode::file(0o644)).await.unwrap();
        let (fh, _) = fs.open(ME, file.ino, libc::O_RDWR).await.unwrap();
        let mut model = Vec::new();
        // The start of chunk 0, a range across the chunk 0/1 border, and one far into chunk 2
        // (leaving most of chunk 1 a hole).
        for (offset, len) in
            [(0, 3 << 20), (chunk - (1 << 20), 2 << 20), (2 * chunk + 12345, 1 << 20)]
        {
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            assert_eq!(fs.write(fh, offset as u64, &data).await.unwrap() as usize, len);
            model_write(&mut model, offset, &data);
        }
        // Reads before any flush see the buffered writes.
        assert_eq!(fs.read(fh, 100, 1000).await.unwrap(), model[100..1100]);
        fs.fsync(fh).await.unwrap();
        assert_eq!(fs.getattr(file.ino).await.unwrap().size, model.len() as u64);
        fs.release(fh).await.unwrap();

        // A second client sees everything once the writer closed the file.
        let other = connect(&c.master_addr()).await;
        let back = other.read_file("/big").await.unwrap();
        assert_eq!(back.len(), model.len());
        assert!(back == model, "content read back differs from what was written");
        assert!(
            back[(3 << 20)..chunk - (1 << 20)].iter().all(|b| *b == 0),
            "a hole reads as zeros"
        );

        // Overwrite in the middle, cut the file inside chunk 1, and read again.
        let (fh, _) = fs.open(ME, file.ino, libc::O_RDWR).await.unwrap();
        let patch = vec![0xabu8; 300_000];
        fs.write(fh, 1_000_000, &patch).await.unwrap();
        model_write(&mut model, 1_000_000, &patch);
        fs.release(fh).await.unwrap();
        let cut = (chunk + 777) as u64;
        fs.setattr(ME, file.ino, SetAttr { size: Some(cut), ..Default::default() }).await.unwrap();
        model.truncate(cut as usize);
        assert!(
            other.read_file("/big").await.unwrap() == model,
            "content after overwrite + truncate"
        );
        fs.close().await.unwrap();
        other.close().await.unwrap();
    });
}

#[test]
fn operations_wait_for_a_restarted_master_and_apply_exactly_once() {
    let mut c = cluster(2);
    let rt = runtime();
    let fs = rt.block_on(connect(&c.master_addr()));
    let session = fs.session();
    // A stream of creates and small files; the master is killed twice in the middle. A create
    // applied just before a kill and retried after it must not fail with EEXIST.
    let worker = {
        let fs = fs.clone();
        rt.spawn(async move {
            for i in 0..150u32 {
                let dir = fs
                    .mkdir(ME, fs.root(), &format!("d{i}"), 0o755, 0)
                    .await
                    .map_err(|e| format!("mkdir d{i}: {e}"))?;
                let data = vec![i as u8; 70_000];
                fs.write_file(ME, &format!("/d{i}/f"), &data)
                    .await
                    .map_err(|e| format!("write d{i}/f: {e}"))?;
                assert_eq!(dir.kind, FileKind::Directory);
            }
            Ok::<(), String>(())
        })
    };
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(700));
        c.kill_master();
        std::thread::sleep(Duration::from_secs(2));
        c.start_master();
    }
    rt.block_on(async {
        let outcome = tokio::time::timeout(Duration::from_secs(120), worker).await;
        let done = outcome.expect("the workload finishes after the master is back").unwrap();
        done.unwrap_or_else(|e| panic!("{e}\nmaster log:\n{}", c.master_log()));
        assert_eq!(fs.session(), session, "the same session was resumed");
        let listing = fs.readdir_all(Caller::ROOT, fs.root()).await.unwrap();
        assert_eq!(listing.len(), 150);
        for i in [0u32, 77, 149] {
            assert_eq!(fs.read_file(&format!("/d{i}/f")).await.unwrap(), vec![i as u8; 70_000]);
        }
        fs.close().await.unwrap();
    });
}

#[test]
fn creates_during_master_restarts_are_applied_exactly_once() {
    let mut c = cluster(0);
    let rt = runtime();
    let fs = rt.block_on(connect(&c.master_addr()));
    let session = fs.session();
    // Many small changes while the master is killed three times, from 16 tasks at once on
    // the one session (so many seqs are in flight together, inside the reply window): a
    // create that was applied just before a kill and retried after it must come back as
    // success, never EEXIST, and none may be applied twice or lost.
    let workers: Vec<_> = (0..16u32)
        .map(|w| {
            let fs = fs.clone();
            rt.spawn(async move {
                for i in 0..100u32 {
                    fs.mkdir(ME, fs.root(), &format!("w{w}-d{i}"), 0o755, 0)
                        .await
                        .map_err(|e| format!("mkdir w{w}-d{i}: {e}"))?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        c.kill_master();
        std::thread::sleep(Duration::from_millis(1500));
        c.start_master();
    }
    rt.block_on(async {
        for worker in workers {
            let done = tokio::time::timeout(Duration::from_secs(120), worker)
                .await
                .expect("workload finishes");
            done.unwrap().unwrap_or_else(|e| panic!("{e}\nmaster log:\n{}", c.master_log()));
        }
        assert_eq!(fs.session(), session, "the same session was resumed");
        assert_eq!(fs.readdir_all(Caller::ROOT, fs.root()).await.unwrap().len(), 1600);
        fs.close().await.unwrap();
    });
}

#[test]
fn an_unreachable_master_fails_operations_with_eio_after_the_timeout() {
    let mut c = cluster(0);
    let rt = runtime();
    let fs = rt.block_on(connect_with(&c.master_addr(), Duration::from_secs(2)));
    let x = rt.block_on(fs.mkdir(ME, fs.root(), "x", 0o755, 0)).unwrap();
    c.kill_master();
    let started = Instant::now();
    // Not the root: its attributes came with the mkdir and would be answered from memory.
    let result = rt.block_on(fs.getattr(x.ino));
    let waited = started.elapsed();
    assert_eq!(result, Err(Status::Io));
    assert!(waited >= Duration::from_millis(1500), "gave up after only {waited:?}");
    assert!(waited < Duration::from_secs(10), "took {waited:?} to give up");
    // The master returns: the same client works again.
    c.start_master();
    assert_eq!(rt.block_on(fs.lookup(ME, fs.root(), "x")).unwrap().kind, FileKind::Directory);
}

#[test]
fn reads_fall_back_to_another_copy_when_a_chunkserver_dies() {
    let mut c = cluster(2);
    let rt = runtime();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    rt.block_on(async {
        let fs = connect(&c.master_addr()).await;
        fs.write_file(ME, "/two-copies", &data).await.unwrap();
        let info = fs.file_info(fs.resolve("/two-copies").await.unwrap().ino).await.unwrap();
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].copies.len(), 2, "goal 2 gives two copies: {info:?}");
        fs.close().await.unwrap();
    });
    c.kill_chunkserver(0);
    rt.block_on(async {
        let fs = connect(&c.master_addr()).await;
        assert!(fs.read_file("/two-copies").await.unwrap() == data, "read from the surviving copy");
        fs.close().await.unwrap();
    });
}
