//! Listing the trash for operators (`mfsha trash list`).
//!
//! Undelete and purge are ordinary mutations (`Op::Undelete`, `Op::Purge`) proposed by the
//! client service; this module only pages through the trash, bounded so that a page always
//! fits in one frame whatever the paths' lengths.

use mfsha_meta::State;
use mfsha_proto::client::{ClientReply, TrashEntry};
use mfsha_proto::types::{Ino, Reply, Status};

/// Most entries in one page.
pub const PAGE_MAX_ENTRIES: u32 = 1000;
/// A page stops once its paths add up to this much (half the frame limit).
pub const PAGE_MAX_PATH_BYTES: usize = mfsha_proto::frame::MAX_FRAME_BYTES / 2;

/// The trashed files with inode numbers above `after`, at most `max` (capped at
/// [`PAGE_MAX_ENTRIES`]). Only root (`uid` 0) may see the trash: it names deleted files of
/// every user.
pub fn list(state: &State, uid: u32, after: Ino, max: u32) -> Reply<ClientReply> {
    if uid != 0 {
        return Err(Status::Perm);
    }
    let max = max.clamp(1, PAGE_MAX_ENTRIES) as usize;
    // The trash is kept in inode order; paging by inode stays correct while files come and go.
    let mut rest = state.trash().skip_while(|(ino, _, _)| *ino <= after).peekable();
    let mut entries = Vec::new();
    let mut bytes = 0;
    while let Some((ino, path, deleted_at)) = rest.next_if(|_| entries.len() < max) {
        let attr = state.getattr(ino)?;
        let (trash_seconds, size) = (attr.trash_seconds, attr.size);
        entries.push(TrashEntry { ino, path: path.to_string(), deleted_at, trash_seconds, size });
        bytes += path.len();
        if bytes >= PAGE_MAX_PATH_BYTES {
            break;
        }
    }
    Ok(ClientReply::Trash { entries, more: rest.peek().is_some() })
}
