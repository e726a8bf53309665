//! Creating, linking, removing and renaming names: the POSIX cases and each error.

mod common;

use common::*;
use mfsha_meta::{Op, Outcome, LINK_MAX, RENAME_EXCHANGE, RENAME_NOREPLACE, S_ISGID};
use mfsha_proto::types::*;

#[test]
fn new_state_has_only_the_root() {
    let fs = Fs::new();
    let root = fs.getattr(ROOT_INO);
    assert_eq!(root.kind, FileKind::Directory);
    assert_eq!((root.mode, root.uid, root.gid, root.nlink), (0o755, 0, 0, 2));
    assert_eq!((root.goal, root.trash_seconds), (DEFAULT_GOAL, DEFAULT_TRASH_SECONDS));
    assert_eq!((root.atime, root.mtime, root.ctime), (T0, T0, T0));
    assert_eq!(fs.state.applied_index(), 0);
    assert_eq!(fs.state.next_free_ino(), ROOT_INO + 1);
    assert_eq!(fs.state.counts().inodes, 1);
    fs.state.check_invariants().unwrap();
}

#[test]
fn invalid_names_are_rejected() {
    let mut fs = Fs::new();
    for name in ["", ".", "..", "a/b", "a\0b"] {
        assert_eq!(fs.create_in(ROOT_INO, name), Err(Status::Invalid), "name {name:?}");
        assert_eq!(fs.mkdir_in(ROOT_INO, name), Err(Status::Invalid), "name {name:?}");
    }
    let long = "x".repeat(NAME_MAX + 1);
    assert_eq!(fs.create_in(ROOT_INO, &long), Err(Status::NameTooLong));
    assert_eq!(fs.state.lookup(ROOT_INO, &long), Err(Status::NameTooLong));
    let longest = "x".repeat(NAME_MAX);
    fs.file(ROOT_INO, &longest);
    assert_eq!(fs.state.lookup(ROOT_INO, &longest).unwrap().kind, FileKind::File);
    assert_eq!(names(&fs.state, ROOT_INO), vec![longest]);
}

#[test]
fn create_applies_umask_times_and_inheritance() {
    let mut fs = Fs::new();
    let dir = fs.dir(ROOT_INO, "d");
    fs.run(Op::SetGoal { ino: dir, goal: 3, recursive: false }).unwrap();
    fs.set_trash(dir, 600);
    let ino = fs.state.next_free_ino();
    let op = Op::Create {
        parent: dir,
        name: "f".into(),
        ino,
        kind: FileKind::File,
        mode: 0o100777, // type bits from the kernel are dropped
        umask: 0o027,
        uid: 7,
        gid: 8,
        rdev: 99,
    };
    let attr = as_attr(fs.run(op).unwrap());
    let now = fs.now;
    assert_eq!((attr.ino, attr.kind, attr.mode), (ino, FileKind::File, 0o750));
    assert_eq!((attr.uid, attr.gid, attr.nlink, attr.size, attr.rdev), (7, 8, 1, 0, 0));
    assert_eq!((attr.atime, attr.mtime, attr.ctime), (now, now, now));
    assert_eq!((attr.goal, attr.trash_seconds), (3, 600));
    let parent = fs.getattr(dir);
    assert_eq!((parent.mtime, parent.ctime, parent.nlink), (now, now, 2));
    assert_eq!(fs.state.lookup(dir, "f").unwrap(), attr);
    assert!(fs.state.next_free_ino() > ino);
}

#[test]
fn create_errors() {
    let mut fs = Fs::new();
    let file = fs.file(ROOT_INO, "f");
    assert_eq!(fs.create_in(ROOT_INO, "f"), Err(Status::Exists));
    assert_eq!(fs.create_in(file, "x"), Err(Status::NotDir));
    assert_eq!(fs.create_in(999, "x"), Err(Status::NotFound));
    let used = Op::Create {
        parent: ROOT_INO,
        name: "g".into(),
        ino: file,
        kind: FileKind::Fifo,
        mode: 0o644,
        umask: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
    };
    assert_eq!(fs.run(used.clone()), Err(Status::Exists), "inode number in use");
    let zero = match used.clone() {
        Op::Create { parent, name, kind, mode, umask, uid, gid, rdev, .. } => {
            Op::Create { parent, name, ino: 0, kind, mode, umask, uid, gid, rdev }
        }
        _ => unreachable!(),
    };
    assert_eq!(fs.run(zero), Err(Status::Invalid));
    let dir_kind = Op::Create {
        parent: ROOT_INO,
        name: "g".into(),
        ino: 100,
        kind: FileKind::Directory,
        mode: 0o755,
        umask: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
    };
    assert_eq!(fs.run(dir_kind), Err(Status::Invalid), "directories come from Mkdir");
    assert_eq!(fs.state.lookup(ROOT_INO, "g"), Err(Status::NotFound));
}

#[test]
fn devices_keep_rdev() {
    let mut fs = Fs::new();
    let op = Op::Create {
        parent: ROOT_INO,
        name: "null".into(),
        ino: 50,
        kind: FileKind::CharDevice,
        mode: 0o666,
        umask: 0,
        uid: 0,
        gid: 0,
        rdev: 0x0103,
    };
    let attr = as_attr(fs.run(op).unwrap());
    assert_eq!((attr.kind, attr.rdev, attr.mode), (FileKind::CharDevice, 0x0103, 0o666));
    assert_eq!(fs.state.next_free_ino(), 51);
}

#[test]
fn setgid_directory_passes_group_and_bit() {
    let mut fs = Fs::new();
    let dir = fs.dir(ROOT_INO, "shared");
    let set = SetAttr { mode: Some(0o2775), gid: Some(50), ..SetAttr::default() };
    fs.run(Op::SetAttr { ino: dir, set, cow_chunk_id: 0 }).unwrap();
    let file = fs.create_in(dir, "f").unwrap();
    assert_eq!((file.gid, file.mode & S_ISGID), (50, 0));
    let sub = fs.mkdir_in(dir, "sub").unwrap();
    assert_eq!((sub.gid, sub.mode), (50, 0o2755));
    let deeper = fs.mkdir_in(sub.ino, "deeper").unwrap();
    assert_eq!((deeper.gid, deeper.mode & S_ISGID), (50, S_ISGID));
    let plain = fs.mkdir_in(ROOT_INO, "plain").unwrap();
    assert_eq!((plain.gid, plain.mode & S_ISGID), (1000, 0));
}

#[test]
fn mkdir_counts_links() {
    let mut fs = Fs::new();
    let a = fs.dir(ROOT_INO, "a");
    assert_eq!(fs.getattr(a).nlink, 2);
    assert_eq!(fs.getattr(ROOT_INO).nlink, 3);
    fs.dir(a, "b");
    fs.file(a, "f");
    assert_eq!(fs.getattr(a).nlink, 3, "files do not link their parent");
    assert_eq!(fs.mkdir_in(a, "b"), Err(Status::Exists));
    assert_eq!(fs.state.lookup(a, "..").unwrap().ino, ROOT_INO);
    assert_eq!(fs.state.lookup(a, ".").unwrap().ino, a);
}

#[test]
fn symlinks() {
    let mut fs = Fs::new();
    let mk = |ino, target: &str| Op::Symlink {
        parent: ROOT_INO,
        name: format!("l{ino}"),
        ino,
        target: target.into(),
        uid: 1,
        gid: 2,
    };
    let attr = as_attr(fs.run(mk(10, "../some/where")).unwrap());
    assert_eq!((attr.kind, attr.size, attr.mode, attr.nlink), (FileKind::Symlink, 13, 0o777, 1));
    assert_eq!(fs.state.readlink(10).unwrap(), "../some/where");
    assert_eq!(fs.run(mk(11, "")), Err(Status::NotFound));
    assert_eq!(fs.run(mk(12, &"p".repeat(PATH_MAX + 1))), Err(Status::NameTooLong));
    assert!(fs.run(mk(13, &"p".repeat(PATH_MAX))).is_ok());
    let file = fs.file(ROOT_INO, "f");
    assert_eq!(fs.state.readlink(file), Err(Status::Invalid));
    assert_eq!(fs.state.readlink(999), Err(Status::NotFound));
}

#[test]
fn hard_links() {
    let mut fs = Fs::new();
    let a = fs.dir(ROOT_INO, "a");
    let file = fs.file(ROOT_INO, "f");
    let link = |ino, parent, name: &str| Op::Link { ino, parent, name: name.into() };
    let attr = as_attr(fs.run(link(file, a, "g")).unwrap());
    let now = fs.now;
    assert_eq!((attr.nlink, attr.ctime), (2, now));
    assert_eq!((fs.getattr(a).mtime, fs.getattr(a).ctime), (now, now));
    assert_eq!(fs.state.lookup(a, "g").unwrap().ino, file);
    assert_eq!(fs.run(link(a, ROOT_INO, "a2")), Err(Status::Perm), "no links to directories");
    assert_eq!(fs.run(link(file, a, "g")), Err(Status::Exists));
    assert_eq!(fs.run(link(999, a, "x")), Err(Status::NotFound));
    assert_eq!(fs.run(link(file, file, "x")), Err(Status::NotDir));
    assert_eq!(fs.run(link(file, a, "")), Err(Status::Invalid));
    fs.run(unlink(a, "g")).unwrap();
    assert_eq!(fs.getattr(file).nlink, 1);
    assert_eq!(fs.state.counts().trash_inodes, 0, "a remaining link keeps the file");
}

#[test]
fn links_stop_at_link_max() {
    let mut fs = Fs::new();
    let file = fs.file(ROOT_INO, "f");
    let mut index = fs.state.applied_index();
    // Straight through State::apply: checking invariants 65,000 times would be slow.
    for n in 1..LINK_MAX {
        index += 1;
        let op = Op::Link { ino: file, parent: ROOT_INO, name: format!("l{n}") };
        let entry = mfsha_meta::Entry { now: T0, client: None, op };
        fs.state.apply(index, &entry).unwrap();
    }
    assert_eq!(fs.getattr(file).nlink, LINK_MAX);
    let op = Op::Link { ino: file, parent: ROOT_INO, name: "one-more".into() };
    assert_eq!(fs.run(op), Err(Status::TooManyLinks));
}

#[test]
fn unlink_cases() {
    let mut fs = Fs::new();
    let a = fs.dir(ROOT_INO, "a");
    assert_eq!(fs.run(unlink(ROOT_INO, "a")), Err(Status::IsDir));
    assert_eq!(fs.run(unlink(ROOT_INO, "nope")), Err(Status::NotFound));
    let file = fs.file(a, "f");
    assert_eq!(fs.run(unlink(file, "x")), Err(Status::NotDir));
    fs.run(unlink(a, "f")).unwrap();
    let now = fs.now;
    assert_eq!((fs.getattr(a).mtime, fs.getattr(a).ctime), (now, now));
    assert_eq!(fs.state.lookup(a, "f"), Err(Status::NotFound));
    // The default trash time keeps the file in the trash under its old path.
    let trash: Vec<_> = fs.state.trash().map(|(i, p, t)| (i, p.to_string(), t)).collect();
    assert_eq!(trash, vec![(file, "/a/f".to_string(), now)]);
    let attr = fs.getattr(file);
    assert_eq!((attr.nlink, attr.ctime), (0, now));
    assert_eq!(fs.state.counts().inodes, 3);
}

#[test]
fn unlink_without_trash_frees_file_and_chunks() {
    let mut fs = Fs::new();
    fs.set_trash(ROOT_INO, 0);
    let file = fs.file(ROOT_INO, "f");
    let chunk = fs.write(file, 0, 1000);
    assert!(fs.state.chunk(chunk).is_some());
    fs.run(unlink(ROOT_INO, "f")).unwrap();
    // Unlinked, it waits for the leader (which knows whether it is open) to free it.
    assert_eq!(fs.state.sustained().collect::<Vec<_>>(), vec![file]);
    fs.run(Op::Free { inos: vec![file] }).unwrap();
    assert_eq!(fs.state.getattr(file), Err(Status::NotFound));
    assert_eq!(fs.state.chunk(chunk), None);
    assert_eq!(fs.state.counts().chunks, 0);
}

#[test]
fn non_regular_files_skip_the_trash() {
    let mut fs = Fs::new();
    let op = Op::Symlink {
        parent: ROOT_INO,
        name: "l".into(),
        ino: 20,
        target: "t".into(),
        uid: 0,
        gid: 0,
    };
    fs.run(op).unwrap();
    fs.run(unlink(ROOT_INO, "l")).unwrap();
    assert_eq!(fs.state.getattr(20), Err(Status::NotFound));
    assert_eq!(fs.state.counts().trash_inodes, 0);
}

#[test]
fn rmdir_cases() {
    let mut fs = Fs::new();
    let a = fs.dir(ROOT_INO, "a");
    fs.dir(a, "b");
    fs.file(ROOT_INO, "f");
    assert_eq!(fs.run(rmdir(ROOT_INO, "f")), Err(Status::NotDir));
    assert_eq!(fs.run(rmdir(ROOT_INO, "a")), Err(Status::NotEmpty));
    assert_eq!(fs.run(rmdir(ROOT_INO, "zz")), Err(Status::NotFound));
    assert_eq!(fs.run(rmdir(ROOT_INO, ".")), Err(Status::Invalid));
    assert_eq!(fs.run(rmdir(ROOT_INO, "..")), Err(Status::Invalid));
    assert_eq!(fs.getattr(a).nlink, 3);
    fs.run(rmdir(a, "b")).unwrap();
    let now = fs.now;
    let parent = fs.getattr(a);
    assert_eq!((parent.nlink, parent.mtime, parent.ctime), (2, now, now));
    fs.run(rmdir(ROOT_INO, "a")).unwrap();
    assert_eq!(fs.getattr(ROOT_INO).nlink, 2);
    assert_eq!(fs.state.getattr(a), Err(Status::NotFound));
    assert_eq!(fs.state.counts().directories, 1);
}

#[test]
fn rename_moves_and_times() {
    let mut fs = Fs::new();
    let a = fs.dir(ROOT_INO, "a");
    let b = fs.dir(ROOT_INO, "b");
    let file = fs.file(a, "f");
    let sub = fs.dir(a, "sub");
    assert_eq!(fs.run(rename(a, "f", b, "g", 0)), Ok(Outcome::Unit));
    let now = fs.now;
    assert_eq!(fs.state.lookup(b, "g").unwrap().ino, file);
    assert_eq!(fs.state.lookup(a, "f"), Err(Status::NotFound));
    assert_eq!(fs.getattr(file).ctime, now);
    for dir in [a, b] {
        assert_eq!((fs.getattr(dir).mtime, fs.getattr(dir).ctime), (now, now));
    }
    fs.run(rename(a, "sub", b, "sub2", 0)).unwrap();
    assert_eq!((fs.getattr(a).nlink, fs.getattr(b).nlink), (2, 3));
    assert_eq!(fs.state.lookup(sub, "..").unwrap().ino, b);
    assert_eq!(fs.state.dir_path_of(sub).unwrap(), "/b/sub2");
    assert_eq!(fs.run(rename(a, "missing", b, "x", 0)), Err(Status::NotFound));
    assert_eq!(fs.run(rename(a, "x", 999, "x", 0)), Err(Status::NotFound));
    assert_eq!(fs.run(rename(b, "g", file, "x", 0)), Err(Status::NotDir));
    assert_eq!(fs.run(rename(b, "g", b, "", 0)), Err(Status::Invalid));
}

#[test]
fn rename_replaces_targets() {
    let mut fs = Fs::new();
    let d1 = fs.dir(ROOT_INO, "d1");
    let d2 = fs.dir(ROOT_INO, "d2");
    let full = fs.dir(ROOT_INO, "full");
    fs.file(full, "x");
    let f1 = fs.file(ROOT_INO, "f1");
    let f2 = fs.file(ROOT_INO, "f2");
    assert_eq!(fs.run(rename(ROOT_INO, "f1", ROOT_INO, "d1", 0)), Err(Status::IsDir));
    assert_eq!(fs.run(rename(ROOT_INO, "d1", ROOT_INO, "f1", 0)), Err(Status::NotDir));
    assert_eq!(fs.run(rename(ROOT_INO, "d1", ROOT_INO, "full", 0)), Err(Status::NotEmpty));
    // A file replaces a file; the replaced one goes to the trash.
    fs.run(rename(ROOT_INO, "f1", ROOT_INO, "f2", 0)).unwrap();
    assert_eq!(fs.state.lookup(ROOT_INO, "f2").unwrap().ino, f1);
    assert_eq!(fs.getattr(f2).nlink, 0);
    assert_eq!(
        fs.state.trash().next().map(|(i, p, _)| (i, p.to_string())),
        Some((f2, "/f2".into()))
    );
    // A directory replaces an empty directory.
    let root_links = fs.getattr(ROOT_INO).nlink;
    fs.run(rename(ROOT_INO, "d1", ROOT_INO, "d2", 0)).unwrap();
    assert_eq!(fs.state.lookup(ROOT_INO, "d2").unwrap().ino, d1);
    assert_eq!(fs.state.getattr(d2), Err(Status::NotFound));
    assert_eq!(fs.getattr(ROOT_INO).nlink, root_links - 1);
}

#[test]
fn rename_refuses_cycles_and_keeps_same_inode() {
    let mut fs = Fs::new();
    let a = fs.dir(ROOT_INO, "a");
    let b = fs.dir(a, "b");
    fs.dir(b, "c");
    assert_eq!(fs.run(rename(ROOT_INO, "a", b, "x", 0)), Err(Status::Invalid));
    assert_eq!(fs.run(rename(ROOT_INO, "a", a, "x", 0)), Err(Status::Invalid));
    assert_eq!(fs.run(rename(ROOT_INO, "a", ROOT_INO, "a", 0)), Ok(Outcome::Unit));
    let file = fs.file(ROOT_INO, "f");
    fs.run(Op::Link { ino: file, parent: a, name: "h".into() }).unwrap();
    let before = logical_records(&fs.state);
    let ctime = fs.getattr(file).ctime;
    // Two names of one inode: success, nothing changes (not even times).
    assert_eq!(fs.run(rename(ROOT_INO, "f", a, "h", 0)), Ok(Outcome::Unit));
    assert_eq!(fs.getattr(file).ctime, ctime);
    assert_eq!(fs.state.lookup(ROOT_INO, "f").unwrap().ino, file);
    assert_eq!(fs.getattr(file).nlink, 2);
    assert!(logical_records(&fs.state) == before, "a same-inode rename changed records");
}

#[test]
fn rename_noreplace_and_exchange() {
    let mut fs = Fs::new();
    let a = fs.dir(ROOT_INO, "a");
    let b = fs.dir(ROOT_INO, "b");
    let file = fs.file(a, "f");
    let dir = fs.dir(b, "d");
    fs.file(a, "other");
    assert_eq!(fs.run(rename(a, "f", a, "other", RENAME_NOREPLACE)), Err(Status::Exists));
    fs.run(rename(a, "f", a, "new", RENAME_NOREPLACE)).unwrap();
    assert_eq!(fs.run(rename(a, "new", b, "none", RENAME_EXCHANGE)), Err(Status::NotFound));
    assert_eq!(fs.run(rename(a, "new", b, "d", 3)), Err(Status::Invalid));
    assert_eq!(fs.run(rename(a, "new", b, "d", 4)), Err(Status::Invalid));
    // Swap a file in a with a directory in b.
    fs.run(rename(a, "new", b, "d", RENAME_EXCHANGE)).unwrap();
    assert_eq!(fs.state.lookup(a, "new").unwrap().ino, dir);
    assert_eq!(fs.state.lookup(b, "d").unwrap().ino, file);
    assert_eq!((fs.getattr(a).nlink, fs.getattr(b).nlink), (3, 2));
    assert_eq!(fs.state.lookup(dir, "..").unwrap().ino, a);
    let now = fs.now;
    assert_eq!((fs.getattr(file).ctime, fs.getattr(dir).ctime), (now, now));
    // Exchanging a directory with its own parent's entry would make a cycle.
    let inner = fs.dir(dir, "inner");
    assert_eq!(fs.run(rename(dir, "inner", a, "new", RENAME_EXCHANGE)), Err(Status::Invalid));
    assert_eq!(fs.state.lookup(dir, "inner").unwrap().ino, inner);
}
