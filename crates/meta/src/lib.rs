/*!
The mfsha metadata model and its deterministic state machine.

This crate owns what the filesystem *is*: inodes (files, directories, symlinks, FIFOs, sockets,
devices), directory entries, hard links, attributes, extended attributes, goals and trash times,
files as sequences of 64 MiB chunks, the chunk table, the trash and sustained (unlinked but open)
files, and client sessions.

It knows no Raft, no RocksDB and no network. The master's Raft driver (`master-ha`) feeds it
committed [`Entry`]s in log order through [`State::apply`]; `apply` is deterministic — no clock,
no randomness, no I/O — because the proposer puts the time and any new ids in the entry. Every
applied entry also yields the [`Change`]s to its persisted records, which the driver writes to
RocksDB in the same atomic batch as the applied index.

Reads (lookup, getattr, readdir, …) are plain methods on [`State`]: the master serves them from
the applied state without going through the log.

[`State::check_invariants`] verifies the model's invariants (link counts, chunk references,
no directory cycles, …); tests call it after every step and `mfsha meta check` calls it on a
stopped master's data.
*/

mod attrs;
mod chunks;
mod digest;
mod invariants;
mod model;
mod ns;
mod op;
mod persist;
mod read;
mod rename;
mod sessions;
mod state;
mod table;

pub use model::{
    ChunkInfo, Counts, LINK_MAX, MAX_FILE_SIZE, RENAME_EXCHANGE, RENAME_NOREPLACE,
    SESSION_INFO_MAX, S_ISGID, XATTR_CREATE, XATTR_REPLACE,
};
pub use op::{ClientTag, Entry, Op, Outcome};
pub use persist::{LoadError, SNAPSHOT_FORMAT};
pub use state::State;
pub use table::{Change, Record, Table};
