//! setattr (incl. truncate), xattrs, goal and trash time, chunk writes.

mod common;

use common::*;
use mfsha_meta::{Op, Outcome, MAX_FILE_SIZE, XATTR_CREATE, XATTR_REPLACE};
use mfsha_proto::types::*;

fn setattr(ino: Ino, set: SetAttr) -> Op {
    Op::SetAttr { ino, set, cow_chunk_id: 0 }
}

fn size(size: u64) -> SetAttr {
    SetAttr { size: Some(size), ..SetAttr::default() }
}

#[test]
fn chmod_chown_and_times() {
    let mut fs = Fs::new();
    let file = fs.file(ROOT_INO, "f");
    let created = fs.getattr(file);
    let set = SetAttr { mode: Some(0o104755), uid: Some(5), gid: Some(6), ..SetAttr::default() };
    let attr = as_attr(fs.run(setattr(file, set)).unwrap());
    assert_eq!((attr.kind, attr.mode, attr.uid, attr.gid), (FileKind::File, 0o4755, 5, 6));
    assert_eq!((attr.ctime, attr.mtime, attr.atime), (fs.now, created.mtime, created.atime));
    let at = Timestamp::new(-5, 999_999_999);
    let later = Timestamp::new(1 << 40, 1);
    let set = SetAttr { atime: Some(TimeSet::At(at)), ..SetAttr::default() };
    let attr = as_attr(fs.run(setattr(file, set)).unwrap());
    assert_eq!((attr.atime, attr.mtime), (at, created.mtime), "mtime untouched (UTIME_OMIT)");
    let set = SetAttr { mtime: Some(TimeSet::At(later)), ..SetAttr::default() };
    let attr = as_attr(fs.run(setattr(file, set)).unwrap());
    assert_eq!((attr.atime, attr.mtime, attr.ctime), (at, later, fs.now));
    let set =
        SetAttr { atime: Some(TimeSet::Now), mtime: Some(TimeSet::Now), ..Default::default() };
    let attr = as_attr(fs.run(setattr(file, set)).unwrap());
    assert_eq!((attr.atime, attr.mtime), (fs.now, fs.now));
    assert_eq!(fs.run(setattr(999, SetAttr::default())), Err(Status::NotFound));
}

#[test]
fn size_only_for_regular_files() {
    let mut fs = Fs::new();
    let dir = fs.dir(ROOT_INO, "d");
    let op = Op::Symlink {
        parent: ROOT_INO,
        name: "l".into(),
        ino: 77,
        target: "x".into(),
        uid: 0,
        gid: 0,
    };
    fs.run(op).unwrap();
    let file = fs.file(ROOT_INO, "f");
    assert_eq!(fs.run(setattr(dir, size(0))), Err(Status::IsDir));
    assert_eq!(fs.run(setattr(77, size(0))), Err(Status::Invalid));
    assert_eq!(fs.run(setattr(file, size(MAX_FILE_SIZE + 1))), Err(Status::TooBig));
    let attr = as_attr(fs.run(setattr(file, size(5 * CHUNK_BYTES + 3))).unwrap());
    assert_eq!((attr.size, attr.mtime, attr.ctime), (5 * CHUNK_BYTES + 3, fs.now, fs.now));
    assert!(fs.state.file_chunks(file).unwrap().is_empty(), "extension only makes holes");
    // truncate(2) to the same size still updates mtime.
    let attr = as_attr(fs.run(setattr(file, size(5 * CHUNK_BYTES + 3))).unwrap());
    assert_eq!(attr.mtime, fs.now);
}

#[test]
fn truncate_drops_chunks_past_the_end_and_cuts_the_last() {
    let mut fs = Fs::new();
    let file = fs.file(ROOT_INO, "f");
    let c0 = fs.write(file, 0, CHUNK_BYTES);
    let c1 = fs.write(file, 1, CHUNK_BYTES);
    let c2 = fs.write(file, 2, 100);
    assert_eq!(fs.state.file_chunks(file).unwrap(), vec![c0, c1, c2]);
    let v0 = fs.state.chunk(c0).unwrap().version;
    let out = fs.run(setattr(file, size(CHUNK_BYTES / 2))).unwrap();
    match out {
        Outcome::Truncated { attr, chunk_id, version, previous, length } => {
            assert_eq!(attr.size, CHUNK_BYTES / 2);
            assert_eq!((chunk_id, version, previous), (c0, v0 + 1, (c0, v0)));
            assert_eq!(length, CHUNK_BYTES / 2);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert_eq!(fs.state.file_chunks(file).unwrap(), vec![c0]);
    assert_eq!((fs.state.chunk(c1), fs.state.chunk(c2)), (None, None));
    assert_eq!(fs.state.chunk(c0).unwrap().version, v0 + 1);
    // At a chunk boundary nothing needs cutting.
    let c1 = fs.write(file, 1, 10);
    let out = fs.run(setattr(file, size(CHUNK_BYTES))).unwrap();
    assert!(matches!(out, Outcome::Attr(ref a) if a.size == CHUNK_BYTES), "{out:?}");
    assert_eq!(fs.state.chunk(c1), None);
    // A cut inside a hole needs nothing either.
    fs.run(setattr(file, size(3 * CHUNK_BYTES))).unwrap();
    let out = fs.run(setattr(file, size(2 * CHUNK_BYTES + 5))).unwrap();
    assert!(matches!(out, Outcome::Attr(_)), "{out:?}");
    fs.run(setattr(file, size(0))).unwrap();
    assert_eq!(fs.state.counts().chunks, 0);
}

#[test]
fn write_chunk_creates_then_bumps() {
    let mut fs = Fs::new();
    let file = fs.file(ROOT_INO, "f");
    fs.run(Op::SetGoal { ino: file, goal: 3, recursive: false }).unwrap();
    let out = fs.run(Op::WriteChunk { ino: file, index: 2, new_chunk_id: 40 }).unwrap();
    let expected = Outcome::ChunkWrite {
        chunk_id: 40,
        version: 1,
        previous: None,
        file_size: 0,
        goal: 3,
        holds_data: false,
    };
    assert_eq!(out, expected);
    assert_eq!(fs.state.file_chunks(file).unwrap(), vec![0, 0, 40]);
    assert_eq!(fs.state.next_free_chunk_id(), 41);
    let info = fs.state.chunk(40).unwrap();
    assert_eq!((info.version, info.refcount, info.goal), (1, 1, 3));
    let end =
        Op::WriteChunkEnd { ino: file, index: 2, chunk_id: 40, file_size: 2 * CHUNK_BYTES + 9 };
    let attr = as_attr(fs.run(end).unwrap());
    assert_eq!((attr.size, attr.mtime, attr.ctime), (2 * CHUNK_BYTES + 9, fs.now, fs.now));
    let out = fs.run(Op::WriteChunk { ino: file, index: 2, new_chunk_id: 41 }).unwrap();
    let expected = Outcome::ChunkWrite {
        chunk_id: 40,
        version: 2,
        previous: Some((40, 1)),
        file_size: 2 * CHUNK_BYTES + 9,
        goal: 3,
        holds_data: true,
    };
    assert_eq!(out, expected);
    assert_eq!(fs.state.next_free_chunk_id(), 41, "a bump allocates nothing");
    // A shorter write end never shrinks the file.
    let end = Op::WriteChunkEnd { ino: file, index: 2, chunk_id: 40, file_size: 2 * CHUNK_BYTES };
    assert_eq!(as_attr(fs.run(end).unwrap()).size, 2 * CHUNK_BYTES + 9);
    fs.run(Op::SetChunkVersion { chunk_id: 40, version: 1 }).unwrap();
    assert_eq!(fs.state.chunk(40).unwrap().version, 1);
    assert_eq!(fs.run(Op::SetChunkVersion { chunk_id: 99, version: 1 }), Err(Status::NotFound));
}

#[test]
fn write_chunk_errors() {
    let mut fs = Fs::new();
    let file = fs.file(ROOT_INO, "f");
    let other = fs.file(ROOT_INO, "g");
    let dir = fs.dir(ROOT_INO, "d");
    let write = |ino, index, new_chunk_id| Op::WriteChunk { ino, index, new_chunk_id };
    assert_eq!(fs.run(write(dir, 0, 5)), Err(Status::IsDir));
    assert_eq!(fs.run(write(999, 0, 5)), Err(Status::NotFound));
    assert_eq!(fs.run(write(file, 0, 0)), Err(Status::Invalid));
    fs.run(write(other, 0, 5)).unwrap();
    assert_eq!(fs.run(write(file, 0, 5)), Err(Status::Exists), "chunk id in use");
    assert!(fs.state.file_chunks(file).unwrap().is_empty());
    // A huge index costs one entry, not a dense table.
    fs.run(write(file, u32::MAX, 6)).unwrap();
    assert_eq!(fs.state.file_chunk_list(file).unwrap(), vec![(u32::MAX, 6)]);
    assert_eq!(fs.state.file_chunk(file, u32::MAX).unwrap(), 6);
    let end =
        |index, chunk_id, file_size| Op::WriteChunkEnd { ino: file, index, chunk_id, file_size };
    assert_eq!(fs.run(end(0, 6, 10)), Err(Status::Invalid), "chunk not at that index");
    assert_eq!(fs.run(end(u32::MAX, 5, 10)), Err(Status::Invalid), "wrong chunk id");
    assert_eq!(fs.run(end(u32::MAX, 6, MAX_FILE_SIZE + 1)), Err(Status::Invalid));
    assert_eq!(as_attr(fs.run(end(u32::MAX, 6, MAX_FILE_SIZE)).unwrap()).size, MAX_FILE_SIZE);
    let ws = Op::WriteChunkEnd { ino: other, index: 0, chunk_id: 5, file_size: CHUNK_BYTES + 1 };
    assert_eq!(fs.run(ws), Err(Status::Invalid), "a write in chunk 0 cannot pass 64 MiB");
}

#[test]
fn xattrs() {
    let mut fs = Fs::new();
    let file = fs.file(ROOT_INO, "f");
    let set = |name: &str, value: &[u8], flags| Op::SetXattr {
        ino: file,
        name: name.into(),
        value: serde_bytes::ByteBuf::from(value.to_vec()),
        flags,
    };
    fs.run(set("user.a", b"1", 0)).unwrap();
    assert_eq!(fs.getattr(file).ctime, fs.now);
    assert_eq!(fs.run(set("user.a", b"2", XATTR_CREATE)), Err(Status::Exists));
    assert_eq!(fs.run(set("user.b", b"2", XATTR_REPLACE)), Err(Status::NoAttr));
    fs.run(set("user.a", b"3", XATTR_REPLACE)).unwrap();
    fs.run(set("user.b", &[0; XATTR_VALUE_MAX], XATTR_CREATE)).unwrap();
    assert_eq!(fs.run(set("user.c", &[0; XATTR_VALUE_MAX + 1], 0)), Err(Status::Range));
    assert_eq!(fs.run(set("", b"", 0)), Err(Status::Range));
    assert_eq!(fs.run(set(&"n".repeat(XATTR_NAME_MAX + 1), b"", 0)), Err(Status::Range));
    fs.run(set(&"n".repeat(XATTR_NAME_MAX), b"", 0)).unwrap();
    assert_eq!(fs.run(set("user.a", b"", XATTR_CREATE | XATTR_REPLACE)), Err(Status::Invalid));
    assert_eq!(fs.state.getxattr(file, "user.a").unwrap(), b"3");
    assert_eq!(fs.state.getxattr(file, "user.zz"), Err(Status::NoAttr));
    assert_eq!(fs.state.getxattr(999, "user.a"), Err(Status::NotFound));
    let list = fs.state.listxattr(file).unwrap();
    assert_eq!(list, vec!["n".repeat(XATTR_NAME_MAX), "user.a".into(), "user.b".into()]);
    let remove = |name: &str| Op::RemoveXattr { ino: file, name: name.into() };
    fs.run(remove("user.a")).unwrap();
    assert_eq!(fs.getattr(file).ctime, fs.now);
    assert_eq!(fs.run(remove("user.a")), Err(Status::NoAttr));
    assert_eq!(fs.state.listxattr(file).unwrap().len(), 2);
    // Freeing the inode frees its attributes.
    fs.set_trash(ROOT_INO, 0);
    fs.run(unlink(ROOT_INO, "f")).unwrap();
    fs.run(Op::Free { inos: vec![file] }).unwrap();
    assert_eq!(fs.state.listxattr(file), Err(Status::NotFound));
}

#[test]
fn goal_and_trash_time_recursive() {
    let mut fs = Fs::new();
    let a = fs.dir(ROOT_INO, "a");
    let b = fs.dir(a, "b");
    let f = fs.file(b, "f");
    fs.run(Op::Link { ino: f, parent: a, name: "f2".into() }).unwrap();
    let c = fs.write(f, 0, 10);
    assert_eq!(fs.run(Op::SetGoal { ino: a, goal: 0, recursive: true }), Err(Status::Invalid));
    assert_eq!(
        fs.run(Op::SetGoal { ino: a, goal: MAX_GOAL + 1, recursive: false }),
        Err(Status::Invalid)
    );
    assert_eq!(fs.run(Op::SetGoal { ino: 999, goal: 1, recursive: false }), Err(Status::NotFound));
    fs.run(Op::SetGoal { ino: b, goal: 5, recursive: false }).unwrap();
    // a, b, f: f is reached twice but counted once; b already has goal 5.
    let out = fs.run(Op::SetGoal { ino: a, goal: 5, recursive: true }).unwrap();
    assert_eq!(out, Outcome::Changed { inodes: 2, not_changed: 1, not_permitted: 0 });
    assert_eq!(fs.getattr(f).goal, 5);
    assert_eq!(fs.getattr(f).ctime, fs.now);
    assert_eq!(fs.state.chunk(c).unwrap().goal, 5, "chunk goal follows its file");
    assert_eq!(fs.getattr(ROOT_INO).goal, DEFAULT_GOAL);
    let out = fs.run(Op::SetTrashTime { ino: a, seconds: 0, recursive: true }).unwrap();
    assert_eq!(out, Outcome::Changed { inodes: 3, not_changed: 0, not_permitted: 0 });
    let out = fs.run(Op::SetTrashTime { ino: a, seconds: 0, recursive: false }).unwrap();
    assert_eq!(out, Outcome::Changed { inodes: 0, not_changed: 1, not_permitted: 0 });
    let new = fs.file(b, "new");
    assert_eq!((fs.getattr(new).goal, fs.getattr(new).trash_seconds), (5, 0));
}

#[test]
fn dir_info_sums_the_subtree() {
    let mut fs = Fs::new();
    let a = fs.dir(ROOT_INO, "a");
    let b = fs.dir(a, "b");
    let f = fs.file(b, "f");
    fs.write(f, 0, CHUNK_BYTES);
    fs.write(f, 1, 100_000); // 2 blocks of 64 KiB
    fs.file(a, "empty");
    fs.run(Op::SetGoal { ino: a, goal: 3, recursive: true }).unwrap();
    let stats = fs.state.dir_info(a).unwrap();
    assert_eq!((stats.inodes, stats.directories, stats.files, stats.chunks), (4, 2, 2, 2));
    assert_eq!(stats.length, CHUNK_BYTES + 100_000);
    assert_eq!(stats.size, CHUNK_BYTES + 2 * BLOCK_BYTES);
    assert_eq!(stats.realsize, 3 * (CHUNK_BYTES + 2 * BLOCK_BYTES));
    let file_stats = fs.state.dir_info(f).unwrap();
    assert_eq!((file_stats.inodes, file_stats.files, file_stats.chunks), (1, 1, 2));
    assert_eq!(fs.state.dir_info(999), Err(Status::NotFound));
}
