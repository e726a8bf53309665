/*!
The mfsha master daemon: the metadata, replicated with Raft and stored in RocksDB, and the
services around it.

It owns:

* [`node`] — [`node::MetaHandle`], the master's way into its Raft node (the `mfsha-raft`
  crate: Ready loop, RocksDB store, peer transport): it proposes [`mfsha_meta::Entry`]s
  (answered only once committed, applied and durable) and reads the applied
  [`mfsha_meta::State`].
* [`fence`] — VIP fencing: the leader holds the cluster's virtual IP (the `mfsha-vip` crate)
  only while its lease is valid, and claims it only once no earlier leader can hold it.
* [`metrics`] — the Prometheus metrics served at `/metrics` on `listen.http` (the HTTP
  server itself is `mfsha-ops`).
* [`page`] — the status page on the HTTP port, rendered from the cluster status, and
  [`web`] — its routes and the `/api/...` JSON, beside `/metrics`.
* [`trash`] — the leader's periodic purge of files whose trash time has passed.
* the configuration, the listeners for clients, chunkservers and metaloggers, the
  in-memory chunk-copy registry and the replication engine (see their modules).

It must never depend on `fuser` or the chunkserver's disk code: the master neither mounts nor
stores chunk data, and keeping them out keeps the metadata path small enough to reason about.
The state machine itself is the `meta` crate, which knows no Raft, RocksDB or network; the
durability rules (what is fsynced, in which batch, before which reply) live in `mfsha-raft`.
*/

pub mod chunks;
pub mod config;
pub mod daemon;
pub mod exports;
pub mod fence;
pub mod inspect;
pub mod metrics;
pub mod node;
pub mod page;
pub mod server;
pub mod trash;
pub mod web;
