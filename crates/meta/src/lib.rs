/*!
The mfsha metadata model and its deterministic state machine.

This crate owns what the filesystem *is*: inodes (files, directories, symlinks, FIFOs, sockets,
devices), directory entries, hard links, attributes, extended attributes, goals and trash times,
files as sequences of 64 MiB chunks, the chunk table, the trash and sustained files (unlinked,
kept until the leader, which alone knows which files are open, frees them with `Op::Free`), and
client sessions with their last reply (exactly-once retries).

It must never depend on Raft, RocksDB, tokio or the network: every replica has to compute the
same state from the same log, so the master's Raft driver (`master-ha`) feeds it committed
[`Entry`]s in log order through [`State::apply`], and `apply` is deterministic — no clock, no
randomness, no I/O — because the proposer puts the time and any new ids in the entry. That also
makes the whole model testable in memory, in milliseconds.

Persistence without I/O: `apply` remembers which records it touched, and
[`State::take_changes`] hands the driver their current values ([`Change`]s, one per key) to
write to RocksDB in the same atomic batch as the applied index. Records are small and separate
— one per inode, one per directory entry, one per chunk, … (see [`Table`]) — so a create in a
directory of a million entries writes three records, not the directory. [`State::load`]
rebuilds the state from those records; [`State::to_snapshot`] / [`State::from_snapshot`] carry
the same records in one versioned, CRC32C-checked blob for Raft snapshots and the metalogger;
[`State::digest`] (SHA-256 of the records) lets replicas compare states.

Reads (lookup, getattr, readdir, …) are plain methods on [`State`]: the master serves them from
the applied state without going through the log.

[`State::check_invariants`] verifies the model's invariants (link counts, chunk references,
no directory cycles, …); tests call it after every step, `load` calls it on everything it
rebuilds, and `mfsha meta check` calls it on a stopped master's data.

`cargo run --release -p mfsha-meta --example scale` measures creates per second, memory and
the whole-state operations on a million inodes.
*/

mod attrs;
mod chunks;
mod digest;
mod idmap;
mod invariants;
mod model;
mod ns;
mod op;
mod persist;
mod read;
mod rename;
mod sessions;
mod state;
mod synth;
mod table;
mod trash;

pub use model::{
    ChunkInfo, Counts, Member, LINK_MAX, MAX_FILE_SIZE, RENAME_EXCHANGE, RENAME_NOREPLACE,
    REPLY_WINDOW, SESSION_INFO_MAX, S_ISGID, XATTR_CREATE, XATTR_REPLACE,
};
pub use op::{ClientTag, Entry, Op, Outcome};
pub use persist::{LoadError, RecordVisitor, SnapshotWriter, SNAPSHOT_FORMAT};
pub use sessions::FREE_BATCH_MAX;
pub use state::State;
pub use synth::SYNTHETIC_FILES_PER_DIR;
pub use table::{Change, Record, Table};
