//! The master's own permission checks: what a local filesystem refuses with EACCES or EPERM
//! is refused here too, whatever the client claims to have checked.
//!
//! A mount runs with `default_permissions` unless told otherwise, so the kernel has already
//! checked and these checks agree with it (the mount sends the caller's supplementary groups
//! for that). A mount without it (`-o nodefault_permissions`), a raw protocol client or a
//! patched mount meet them here. They run on the leader against the applied state, after the
//! exports have mapped the caller (`maproot`, `mapall`), before a read is answered or a
//! mutation proposed: a client's own earlier mutations are applied by then (each is answered
//! only once applied).
//!
//! Checked: search permission for lookups; write and search permission on the directories a
//! create, link, unlink, rmdir or rename changes, with the sticky bit's owner rule; write
//! permission on a directory moved to another parent (its `..` changes); `chmod`, `chown`,
//! `utimes`, truncation and extended attributes as Linux rules them (reading `user.` needs
//! read permission, `trusted.` is root's); goals and trash times by the owner only
//! (MooseFS); opening a file, for the access its flags ask (read, write, both; `O_TRUNC`
//! writes); access(2); listing a directory (read permission); a file's chunks, read or
//! written, by a session that holds the file open or may read or write it. Not checked, as
//! on Linux: attribute reads and symlink targets (search permission on the path is what
//! guards those, and lookups check it).
//!
//! One request is changed rather than refused, as Linux does: a chmod that sets the setgid
//! bit of a file whose group the caller is not in has the bit cleared ([`adjust`]).

use mfsha_meta::{State, S_ISGID};
use mfsha_proto::client::ClientOp;
use mfsha_proto::types::{Attr, FileKind, Ino, Reply, SessionId, SetAttr, Status, TimeSet};

/// Who asks, as the exports mapped them: uid, primary gid and supplementary groups, and the
/// session asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller<'a> {
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [u32],
    pub session: SessionId,
    /// The export says `ignoregid`: as in MooseFS, a caller who does not own an inode gets
    /// its group's bits or the others', whichever allow, whatever its groups.
    pub ignore_gid: bool,
    /// The session holds open the inode a `SetAttr` changes or whose chunks it reads or
    /// writes (leader memory): an ftruncate(2), read(2) or write(2) on it was judged when it
    /// was opened.
    pub holds_open: bool,
}

/// Access wanted on an inode, as the `rwx` bits of one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Want(u32);

const READ: Want = Want(0o4);
const WRITE: Want = Want(0o2);
const SEARCH: Want = Want(0o1);
const WRITE_SEARCH: Want = Want(0o3);

/// The sticky bit: in a directory, entries are removed only by their owner's say.
const S_ISVTX: u32 = 0o1000;

/// The set-user-id and set-group-id bits.
const SUID_SGID: u32 = 0o6000;

impl Caller<'_> {
    fn is_root(&self) -> bool {
        self.uid == 0
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    fn owns(&self, attr: &Attr) -> bool {
        self.uid == attr.uid
    }

    /// The permission-bit check of access(2): the owner class if the caller owns the inode,
    /// else the group class if it is in the inode's group, else the other class. Root passes.
    fn may(&self, attr: &Attr, want: Want) -> bool {
        if self.is_root() {
            return true;
        }
        let class = if self.owns(attr) {
            attr.mode >> 6
        } else if self.ignore_gid {
            (attr.mode >> 3) | attr.mode
        } else if self.in_group(attr.gid) {
            attr.mode >> 3
        } else {
            attr.mode
        };
        class & want.0 == want.0
    }
}

/// Refuses `op` from `who` where a local filesystem would (see the module documentation).
/// An inode that does not exist passes: the operation itself answers `NotFound`.
pub fn check(state: &State, who: &Caller, op: &ClientOp) -> Reply<()> {
    if who.is_root() {
        return Ok(());
    }
    let attr = |ino: Ino| state.getattr(ino).ok();
    let need = |ino: Ino, want: Want| match attr(ino) {
        Some(attr) if !who.may(&attr, want) => Err(Status::Access),
        _ => Ok(()),
    };
    match op {
        ClientOp::Lookup { parent, .. } => need(*parent, SEARCH),
        ClientOp::SetAttr { ino, set, .. } => match attr(*ino) {
            // ftruncate(2) on a file this session holds open was judged when it was opened.
            Some(attr) => check_setattr(who, &attr, set, who.holds_open),
            None => Ok(()),
        },
        ClientOp::Mknod { parent, .. }
        | ClientOp::Mkdir { parent, .. }
        | ClientOp::Symlink { parent, .. }
        | ClientOp::Create { parent, .. } => need(*parent, WRITE_SEARCH),
        ClientOp::Link { new_parent, .. } => need(*new_parent, WRITE_SEARCH),
        ClientOp::Unlink { parent, name } | ClientOp::Rmdir { parent, name } => {
            check_removal(state, who, *parent, name)
        }
        ClientOp::Rename { parent, name, new_parent, new_name, .. } => {
            check_removal(state, who, *parent, name)?;
            need(*new_parent, WRITE_SEARCH)?;
            if let Ok(target) = state.lookup(*new_parent, new_name) {
                check_sticky(who, attr(*new_parent).as_ref(), &target)?;
            }
            match state.lookup(*parent, name) {
                // A directory moved elsewhere gets a new `..`: that writes the directory.
                Ok(moved) if moved.kind == FileKind::Directory && parent != new_parent => {
                    need(moved.ino, WRITE)
                }
                _ => Ok(()),
            }
        }
        ClientOp::SetXattr { ino, name, .. } | ClientOp::RemoveXattr { ino, name } => {
            match attr(*ino) {
                Some(attr) => check_xattr_change(who, &attr, name),
                None => Ok(()),
            }
        }
        ClientOp::Open { ino, flags } => need(*ino, open_access(*flags)),
        ClientOp::Access { ino, mask } => need(*ino, Want(mask & 0o7)),
        ClientOp::ReadDir { ino, .. } => need(*ino, READ),
        ClientOp::GetXattr { ino, name } => match attr(*ino) {
            Some(attr) => check_xattr_read(who, &attr, name),
            None => Ok(()),
        },
        ClientOp::ReadChunk { ino, .. } if !who.holds_open => need(*ino, READ),
        ClientOp::WriteChunk { ino, .. } | ClientOp::WriteChunkEnd { ino, .. }
            if !who.holds_open =>
        {
            need(*ino, WRITE)
        }
        ClientOp::SetGoal { ino, .. } | ClientOp::SetTrashTime { ino, .. } => match attr(*ino) {
            Some(attr) if !who.owns(&attr) => Err(Status::Perm),
            _ => Ok(()),
        },
        // Not checked here (see the module documentation), or not about inodes: the trash
        // tools, membership and leadership check for root themselves.
        ClientOp::Hello { .. }
        | ClientOp::Challenge { .. }
        | ClientOp::GetAttr { .. }
        | ClientOp::ReadLink { .. }
        | ClientOp::Release { .. }
        | ClientOp::Reopen { .. }
        | ClientOp::ReadChunk { .. }
        | ClientOp::WriteChunk { .. }
        | ClientOp::WriteChunkEnd { .. }
        | ClientOp::StatFs
        | ClientOp::ListXattr { .. }
        | ClientOp::GetGoal { .. }
        | ClientOp::GetTrashTime { .. }
        | ClientOp::FileInfo { .. }
        | ClientOp::CheckFile { .. }
        | ClientOp::DirInfo { .. }
        | ClientOp::ResolvePath { .. }
        | ClientOp::Status
        | ClientOp::Goodbye
        | ClientOp::TrashList { .. }
        | ClientOp::Undelete { .. }
        | ClientOp::Purge { .. }
        | ClientOp::GetLock { .. }
        | ClientOp::SetLock { .. }
        | ClientOp::ReleaseLocks { .. }
        | ClientOp::WhoLeads
        | ClientOp::TransferLeader { .. }
        | ClientOp::ChangeMember { .. }
        | ClientOp::ReloadExports => Ok(()),
    }
}

/// The access an open(2) with `flags` (Linux's, as the mount sends them) asks for. The
/// kernel opens a program it is about to run read-only with its internal `__FMODE_EXEC`
/// flag, and that open needs execute permission, not read (a `--x` program runs).
fn open_access(flags: i32) -> Want {
    const O_ACCMODE: i32 = 0o3;
    const FMODE_EXEC: i32 = 0x20;
    const O_TRUNC: i32 = 0o1000;
    let mode = match flags & O_ACCMODE {
        0 if flags & FMODE_EXEC != 0 => SEARCH.0,
        0 => READ.0,
        1 => WRITE.0,
        _ => READ.0 | WRITE.0,
    };
    let trunc = if flags & O_TRUNC != 0 { WRITE.0 } else { 0 };
    Want(mode | trunc)
}

/// Removing `name` from `parent` (unlink, rmdir, the source of a rename): write and search
/// on the directory, and the sticky bit's rule.
fn check_removal(state: &State, who: &Caller, parent: Ino, name: &str) -> Reply<()> {
    let Ok(dir) = state.getattr(parent) else { return Ok(()) };
    if !who.may(&dir, WRITE_SEARCH) {
        return Err(Status::Access);
    }
    match state.lookup(parent, name) {
        Ok(child) => check_sticky(who, Some(&dir), &child),
        Err(_) => Ok(()),
    }
}

/// In a sticky directory (`/tmp`) only the owner of an entry, or of the directory, may
/// remove or replace it.
fn check_sticky(who: &Caller, dir: Option<&Attr>, child: &Attr) -> Reply<()> {
    let Some(dir) = dir else { return Ok(()) };
    let sticky = dir.mode & S_ISVTX != 0;
    if sticky && !who.owns(dir) && !who.owns(child) {
        return Err(Status::Perm);
    }
    Ok(())
}

/// chmod, chown, truncate and utimes, as Linux's `setattr_prepare` rules them (root has
/// passed already).
fn check_setattr(who: &Caller, attr: &Attr, set: &SetAttr, held_open: bool) -> Reply<()> {
    if let Some(mode) = set.mode {
        // A write by a non-owner drops suid/sgid itself (the kernel's `file_remove_privs`,
        // sent as a chmod): allowed to whoever may write, as it only takes privilege away.
        let (new, old) = (mode & 0o7777, attr.mode & 0o7777);
        let drops_privileges = new | SUID_SGID == old | SUID_SGID && new & !old == 0;
        let may_drop = drops_privileges && (held_open || who.may(attr, WRITE));
        if !who.owns(attr) && !may_drop {
            return Err(Status::Perm);
        }
    }
    if set.uid.is_some_and(|uid| uid != attr.uid) {
        return Err(Status::Perm); // only root gives a file away
    }
    if let Some(gid) = set.gid {
        let allowed = gid == attr.gid || (who.owns(attr) && who.in_group(gid));
        if !allowed {
            return Err(Status::Perm);
        }
    }
    if set.size.is_some() && !held_open && !who.may(attr, WRITE) {
        return Err(Status::Access);
    }
    let times = [set.atime, set.mtime];
    if !who.owns(attr) && times.iter().any(Option::is_some) {
        // To "now" needs write permission; to a chosen time, ownership.
        let to_now = times.iter().flatten().all(|t| *t == TimeSet::Now);
        if !to_now {
            return Err(Status::Perm);
        }
        if !who.may(attr, WRITE) {
            return Err(Status::Access);
        }
    }
    Ok(())
}

/// Changes `op` where Linux changes rather than refuses: a chmod (or chown and chmod) that
/// sets the setgid bit of an inode whose group the caller is not in clears the bit
/// (`setattr_prepare`). Root keeps it. Runs before [`check`], under the same state read.
pub fn adjust(state: &State, who: &Caller, op: &mut ClientOp) {
    let ClientOp::SetAttr { ino, set, .. } = op else { return };
    let Some(mode) = set.mode.filter(|m| m & S_ISGID != 0) else { return };
    if who.is_root() {
        return;
    }
    let Ok(attr) = state.getattr(*ino) else { return };
    if !who.in_group(set.gid.unwrap_or(attr.gid)) {
        set.mode = Some(mode & !S_ISGID);
    }
}

/// getxattr by namespace: `user.` needs read permission (other kinds of inode carry none),
/// `trusted.` is root's (others are told there is none, as Linux does), `security.` and
/// `system.` are for anyone who reached the inode.
fn check_xattr_read(who: &Caller, attr: &Attr, name: &str) -> Reply<()> {
    if name.starts_with("user.") {
        if !matches!(attr.kind, FileKind::File | FileKind::Directory) {
            return Err(Status::NoAttr);
        }
        return if who.may(attr, READ) { Ok(()) } else { Err(Status::Access) };
    }
    if name.starts_with("trusted.") {
        return Err(Status::NoAttr);
    }
    Ok(())
}

/// setxattr/removexattr by namespace: `user.` needs write permission (and only files and
/// directories carry them), `trusted.` and `security.` are root's, `system.` (ACLs) the
/// owner's.
fn check_xattr_change(who: &Caller, attr: &Attr, name: &str) -> Reply<()> {
    if name.starts_with("user.") {
        let plain = matches!(attr.kind, FileKind::File | FileKind::Directory);
        if !plain {
            return Err(Status::Perm);
        }
        if attr.kind == FileKind::Directory && attr.mode & S_ISVTX != 0 && !who.owns(attr) {
            return Err(Status::Perm);
        }
        return if who.may(attr, WRITE) { Ok(()) } else { Err(Status::Access) };
    }
    if name.starts_with("system.") {
        return if who.owns(attr) { Ok(()) } else { Err(Status::Perm) };
    }
    Err(Status::Perm)
}
