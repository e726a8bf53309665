/*!
The mfsha master daemon: the metadata, replicated with Raft and stored in RocksDB, and the
services around it.

It owns:

* [`storage`] — the one RocksDB instance (`DATA_DIR/meta.rocksdb`): the Raft log, Raft's hard
  and conf state, snapshot metadata (snapshot blobs live in `DATA_DIR/snapshots/`), and one
  column family per metadata table. It implements `raft::Storage`. Every stored value carries a
  CRC32C; a bad one is reported with its column family and key.
* [`node`] — the thread that owns raft-rs's `RawNode`: it drains a bounded inbox (group commit:
  many proposals, one fsync), ticks, and handles each `Ready` in the order raft-rs requires.
  [`node::MetaHandle`] is how the rest of the master proposes [`mfsha_meta::Entry`]s (answered
  only once committed, applied and durable) and reads the applied [`mfsha_meta::State`].
* [`trash`] — the leader's periodic purge of files whose trash time has passed.
* [`slog_tracing`] — raft-rs logs through `slog`; this forwards them to `tracing`.
* the configuration, the listeners for clients, chunkservers, metaloggers and peers, the
  in-memory chunk-copy registry and the replication engine (see their modules).

It must never depend on `fuser` or the chunkserver's disk code: the master neither mounts nor
stores chunk data, and keeping them out keeps the metadata path small enough to reason about.
The state machine itself is the `meta` crate, which knows no Raft, RocksDB or network; this crate
is the only place where Raft, RocksDB and the metadata meet, so the durability rules (what is
fsynced, in which batch, before which reply) all live here.
*/

pub mod chunks;
pub mod config;
pub mod daemon;
pub mod inspect;
pub mod node;
pub mod server;
pub mod slog_tracing;
pub mod storage;
pub mod trash;
