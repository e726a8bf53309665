//! The master's own permission checks (issue 12, item 4), against a real master process and
//! a raw protocol client that claims whichever uid it likes and skips the kernel's checks:
//! each refusal is the errno a local filesystem gives, and what the owner, a group member
//! (by a supplementary group) or root may do still works.

use crate::session::Session;
use crate::util::Cluster;
use mfsha_proto::client::{ClientOp, ClientReply};
use mfsha_proto::types::{FileKind, Ino, Reply, SetAttr, Status, TimeSet, Timestamp, ROOT_INO};

const ROOT: (u32, u32, &[u32]) = (0, 0, &[]);
const ALICE: (u32, u32, &[u32]) = (1000, 1000, &[]);
const BOB: (u32, u32, &[u32]) = (1001, 1001, &[]);
const BOB_IN_STAFF: (u32, u32, &[u32]) = (1001, 1001, &[50, 2000]);

fn ino_of(reply: Reply<ClientReply>) -> Ino {
    match reply {
        Ok(ClientReply::Attr(attr)) => attr.ino,
        other => panic!("expected attributes, got {other:?}"),
    }
}

fn status_of(reply: Reply<ClientReply>) -> Result<(), Status> {
    reply.map(|_| ())
}

fn mkdir(parent: Ino, name: &str, mode: u32) -> ClientOp {
    ClientOp::Mkdir { parent, name: name.into(), mode, umask: 0 }
}

fn mknod(parent: Ino, name: &str) -> ClientOp {
    mknod_mode(parent, name, 0o644)
}

fn mknod_mode(parent: Ino, name: &str, mode: u32) -> ClientOp {
    let kind = FileKind::File;
    ClientOp::Mknod { parent, name: name.into(), kind, mode, umask: 0, rdev: 0 }
}

/// Linux open(2) flags as the kernel sends them to a FUSE filesystem.
const O_RDONLY: i32 = 0;
const O_WRONLY: i32 = 1;
const O_RDWR: i32 = 2;
const O_TRUNC: i32 = 0o1000;
/// The kernel's internal flag on the open of a program about to be run (execve).
const FMODE_EXEC: i32 = 0x20;

fn open(ino: Ino, flags: i32) -> ClientOp {
    ClientOp::Open { ino, flags }
}

fn setattr(ino: Ino, set: SetAttr) -> ClientOp {
    ClientOp::SetAttr { ino, set, by_handle: false }
}

#[test]
fn the_master_refuses_what_a_local_filesystem_refuses() {
    let mut cluster = Cluster::new();
    cluster.start_master();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut s = Session::open(&cluster.master_addr()).await;
        // Root's directories: / (0755), a sticky world-writable /shared, a group one /staff.
        let shared = ino_of(s.mutate_as(ROOT, mkdir(ROOT_INO, "shared", 0o1777)).await);
        let staff = ino_of(s.mutate_as(ROOT, mkdir(ROOT_INO, "staff", 0o770)).await);
        let gid = SetAttr { gid: Some(2000), ..SetAttr::default() };
        s.mutate_as(ROOT, setattr(staff, gid)).await.expect("root gives /staff to group 2000");
        let closed = ino_of(s.mutate_as(ROOT, mkdir(staff, "closed", 0o700)).await);

        // Creating in a directory one may not write: EACCES.
        assert_eq!(status_of(s.mutate_as(ALICE, mknod(ROOT_INO, "x")).await), Err(Status::Access));
        let file = ino_of(s.mutate_as(ALICE, mknod(shared, "alices")).await);

        // Bob and Alice's file: chmod, chown, a chosen mtime, goal: EPERM; truncate,
        // touch, a user xattr: EACCES (no write permission).
        let chmod = SetAttr { mode: Some(0o666), ..SetAttr::default() };
        assert_eq!(
            status_of(s.mutate_as(BOB, setattr(file, chmod.clone())).await),
            Err(Status::Perm)
        );
        let chown = SetAttr { uid: Some(1001), ..SetAttr::default() };
        assert_eq!(status_of(s.mutate_as(BOB, setattr(file, chown)).await), Err(Status::Perm));
        let at = TimeSet::At(Timestamp::new(1, 0));
        let stamp = SetAttr { mtime: Some(at), ..SetAttr::default() };
        assert_eq!(status_of(s.mutate_as(BOB, setattr(file, stamp)).await), Err(Status::Perm));
        let touch = SetAttr { mtime: Some(TimeSet::Now), ..SetAttr::default() };
        assert_eq!(
            status_of(s.mutate_as(BOB, setattr(file, touch.clone())).await),
            Err(Status::Access)
        );
        let truncate = SetAttr { size: Some(0), ..SetAttr::default() };
        assert_eq!(status_of(s.mutate_as(BOB, setattr(file, truncate)).await), Err(Status::Access));
        let xattr = ClientOp::SetXattr {
            ino: file,
            name: "user.note".into(),
            value: serde_bytes::ByteBuf::from(b"bob".to_vec()),
            flags: 0,
        };
        assert_eq!(status_of(s.mutate_as(BOB, xattr.clone()).await), Err(Status::Access));
        let goal = ClientOp::SetGoal { ino: file, goal: 1, recursive: false };
        assert_eq!(status_of(s.mutate_as(BOB, goal.clone()).await), Err(Status::Perm));

        // The sticky bit: Bob may write /shared but not remove or rename Alice's file.
        let unlink = ClientOp::Unlink { parent: shared, name: "alices".into() };
        assert_eq!(status_of(s.mutate_as(BOB, unlink.clone()).await), Err(Status::Perm));
        let rename = ClientOp::Rename {
            parent: shared,
            name: "alices".into(),
            new_parent: shared,
            new_name: "bobs".into(),
            flags: 0,
        };
        assert_eq!(status_of(s.mutate_as(BOB, rename).await), Err(Status::Perm));

        // Opening Alice's 0644 file: Bob may read it, not write or truncate it; Alice may.
        s.mutate_as(BOB, open(file, O_RDONLY)).await.expect("others may read a 0644 file");
        for flags in [O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC] {
            let opened = status_of(s.mutate_as(BOB, open(file, flags)).await);
            assert_eq!(
                opened,
                Err(Status::Access),
                "Bob opening Alice's 0644 file, flags {flags:o}"
            );
        }
        s.mutate_as(ALICE, open(file, O_RDWR | O_TRUNC)).await.expect("the owner writes");
        // A program Bob may run but not read (0711): the kernel's exec open needs execute.
        let prog = ino_of(s.mutate_as(ALICE, mknod_mode(shared, "prog", 0o711)).await);
        let read = status_of(s.mutate_as(BOB, open(prog, O_RDONLY)).await);
        assert_eq!(read, Err(Status::Access), "reading a 0711 file of another user");
        s.mutate_as(BOB, open(prog, O_RDONLY | FMODE_EXEC)).await.expect("running it");
        s.mutate_as(ROOT, open(prog, O_RDWR)).await.expect("root opens anything");

        // Group permission by a supplementary group: only with the group does Bob get in.
        assert_eq!(status_of(s.mutate_as(BOB, mknod(staff, "b")).await), Err(Status::Access));
        s.mutate_as(BOB_IN_STAFF, mknod(staff, "b")).await.expect("a member of group 2000");
        // Search permission: looking up in a 0700 directory of root's.
        let lookup = ClientOp::Lookup { parent: closed, name: "anything".into() };
        assert_eq!(status_of(s.read_as(BOB_IN_STAFF, lookup.clone()).await), Err(Status::Access));
        assert_eq!(status_of(s.read_as(ROOT, lookup).await), Err(Status::NotFound));

        // The owner, and root, may do all of it.
        s.mutate_as(ALICE, setattr(file, chmod)).await.expect("the owner's chmod");
        s.mutate_as(ALICE, setattr(file, touch)).await.expect("the owner's touch");
        s.mutate_as(ALICE, xattr).await.expect("the owner's xattr");
        s.mutate_as(ALICE, goal).await.expect("the owner's goal");
        // Now world-writable (0666): Bob may truncate it, still not remove it.
        let truncate = SetAttr { size: Some(0), ..SetAttr::default() };
        s.mutate_as(BOB, setattr(file, truncate)).await.expect("a write-permitted truncate");
        assert_eq!(status_of(s.mutate_as(BOB, unlink.clone()).await), Err(Status::Perm));
        s.mutate_as(ALICE, unlink).await.expect("the owner removes her file");
        s.mutate_as(ROOT, ClientOp::Rmdir { parent: staff, name: "closed".into() })
            .await
            .expect("root removes anything");
    });
    let log = cluster.master_log();
    assert!(!log.contains("panicked"), "the master panicked:\n{log}");
}

fn getattr_mode(reply: Reply<ClientReply>) -> u32 {
    match reply {
        Ok(ClientReply::Attr(attr)) => attr.mode & 0o7777,
        other => panic!("expected attributes, got {other:?}"),
    }
}

/// What a mount without `default_permissions` leaves to the master: listings, access(2),
/// extended attribute reads, a file's chunks, and truncation by path versus through an open
/// file; and what Linux changes instead of refusing (a setgid bit the caller may not set).
#[test]
fn the_master_guards_listings_access_xattrs_and_chunks_as_linux_does() {
    const R: u32 = 4;
    const W: u32 = 2;
    const X: u32 = 1;
    let mut cluster = Cluster::new();
    cluster.start_master();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut s = Session::open(&cluster.master_addr()).await;
        let mut bobs = Session::open(&cluster.master_addr()).await;
        let shared = ino_of(s.mutate_as(ROOT, mkdir(ROOT_INO, "shared", 0o1777)).await);
        // Alice's directory others may pass through (0711) but not list.
        let boxed = ino_of(s.mutate_as(ALICE, mkdir(shared, "box", 0o711)).await);
        let list = ClientOp::ReadDir { ino: boxed, offset: 0, max: 100, after: None };
        assert_eq!(status_of(bobs.read_as(BOB, list.clone()).await), Err(Status::Access));
        s.read_as(ALICE, list).await.expect("the owner lists her directory");
        let access = |ino, mask| ClientOp::Access { ino, mask };
        bobs.read_as(BOB, access(boxed, X)).await.expect("others may search it");
        bobs.read_as(BOB, access(boxed, 0)).await.expect("F_OK: it exists");
        for mask in [R, W, R | X] {
            let got = status_of(bobs.read_as(BOB, access(boxed, mask)).await);
            assert_eq!(got, Err(Status::Access), "access({mask:o}) to a 0711 directory");
        }
        assert_eq!(status_of(bobs.read_as(BOB, access(999_999, R)).await), Err(Status::NotFound));

        // Alice's 0600 file with a user xattr: Bob reads neither the attribute nor the data.
        let secret = ino_of(s.mutate_as(ALICE, mknod_mode(shared, "secret", 0o600)).await);
        let note = ClientOp::SetXattr {
            ino: secret,
            name: "user.note".into(),
            value: serde_bytes::ByteBuf::from(b"alice".to_vec()),
            flags: 0,
        };
        s.mutate_as(ALICE, note).await.expect("the owner sets an xattr");
        let get = |name: &str| ClientOp::GetXattr { ino: secret, name: name.into() };
        assert_eq!(status_of(bobs.read_as(BOB, get("user.note")).await), Err(Status::Access));
        assert_eq!(status_of(bobs.read_as(BOB, get("trusted.x")).await), Err(Status::NoAttr));
        match s.read_as(ALICE, get("user.note")).await {
            Ok(ClientReply::Xattr(v)) => assert_eq!(v.as_slice(), b"alice"),
            other => panic!("the owner reads her xattr: {other:?}"),
        }
        let read_chunk = ClientOp::ReadChunk { ino: secret, index: 0 };
        assert_eq!(status_of(bobs.read_as(BOB, read_chunk.clone()).await), Err(Status::Access));
        let write_chunk = ClientOp::WriteChunk { ino: secret, index: 0 };
        assert_eq!(status_of(bobs.mutate_as(BOB, write_chunk).await), Err(Status::Access));
        s.read_as(ALICE, read_chunk).await.expect("the owner reads her file's chunks");

        // access(2) and execute for root: only where some execute bit is set.
        assert_eq!(status_of(s.read_as(ROOT, access(secret, X)).await), Err(Status::Access));
        s.read_as(ROOT, access(secret, R | W)).await.expect("root reads and writes anything");
        let prog = ino_of(s.mutate_as(ALICE, mknod_mode(shared, "prog", 0o700)).await);
        s.read_as(ROOT, access(prog, X)).await.expect("root runs what has an execute bit");

        // A file Bob opened for writing while it was 0666: he keeps what he opened for
        // (its chunks, ftruncate) after Alice's chmod 0600, but not truncate(2) by path.
        let notes = ino_of(s.mutate_as(ALICE, mknod_mode(shared, "notes", 0o666)).await);
        bobs.mutate_as(BOB, open(notes, O_RDWR)).await.expect("open a 0666 file");
        let private = SetAttr { mode: Some(0o600), ..SetAttr::default() };
        s.mutate_as(ALICE, setattr(notes, private)).await.expect("the owner's chmod");
        let read_notes = ClientOp::ReadChunk { ino: notes, index: 0 };
        bobs.read_as(BOB, read_notes).await.expect("reading through the open file");
        let cut = SetAttr { size: Some(0), ..SetAttr::default() };
        let by_handle = ClientOp::SetAttr { ino: notes, set: cut.clone(), by_handle: true };
        bobs.mutate_as(BOB, by_handle).await.expect("ftruncate through the open file");
        let by_path = setattr(notes, cut);
        assert_eq!(status_of(bobs.mutate_as(BOB, by_path).await), Err(Status::Access));

        // Setgid on a file whose group Alice is not in: the chmod works, the bit is cleared
        // (Linux); root keeps it.
        let grouped = ino_of(s.mutate_as(ALICE, mknod_mode(shared, "grouped", 0o755)).await);
        let to_3000 = SetAttr { gid: Some(3000), ..SetAttr::default() };
        s.mutate_as(ROOT, setattr(grouped, to_3000)).await.expect("root's chgrp");
        let sgid = SetAttr { mode: Some(0o2755), ..SetAttr::default() };
        let mode = getattr_mode(s.mutate_as(ALICE, setattr(grouped, sgid.clone())).await);
        assert_eq!(mode, 0o755, "setgid set by a non-member of the group");
        let mode = getattr_mode(s.mutate_as(ROOT, setattr(grouped, sgid)).await);
        assert_eq!(mode, 0o2755, "root keeps the setgid bit");

        // A write by a non-owner drops set-user-id (the kernel sends it as a chmod): allowed
        // to a writer, as only that; any other chmod is still the owner's.
        let suid = ino_of(s.mutate_as(ALICE, mknod_mode(shared, "suid", 0o4766)).await);
        let more = SetAttr { mode: Some(0o777), ..SetAttr::default() };
        assert_eq!(status_of(bobs.mutate_as(BOB, setattr(suid, more)).await), Err(Status::Perm));
        let drop = SetAttr { mode: Some(0o766), ..SetAttr::default() };
        let mode = getattr_mode(bobs.mutate_as(BOB, setattr(suid, drop)).await);
        assert_eq!(mode, 0o766);
    });
    let log = cluster.master_log();
    assert!(!log.contains("panicked"), "the master panicked:\n{log}");
}
