/*!
The metalogger: keeps restorable copies of the master's metadata.

A logger connects to a master's logger port (9419), receives a full snapshot of the metadata and
then every committed changelog entry, and keeps them on its own disk:

* `metadata_ml.mfsha` — the latest snapshot (and `metadata_ml.back.mfsha`, the one before it),
  written to a temporary file, fsynced, renamed into place, directory fsynced;
* `changelog_ml.mfsha` — entries after that snapshot, each record checksummed (and
  `changelog_ml.back.mfsha`, the entries after the previous snapshot).

[`restore::load`] rebuilds the metadata from those files (snapshot + replay), which is what an
operator needs after losing every master. Unlike MooseFS's metalogger, nothing here can leave a
zero-length or half-written "latest" file: a file becomes current only by rename after fsync,
and every record carries a CRC32C so a torn tail is detected and reported, never applied.

With a `witness:` section the logger is also a voting member of the masters' Raft group
([`witness`]): the two-masters-plus-witness appliance. That part embeds the `raft` crate's node
(and its RocksDB store); the metalogger files above stay as they are, a second, independent
copy. [`metrics`] serves the logger's figures at `/metrics` on `http` (9428; the HTTP server
is `mfsha-ops`). This crate knows no FUSE and serves no client.
*/

pub mod config;
pub mod files;
pub mod link;
pub mod metrics;
pub mod restore;
pub mod witness;

pub use config::LoggerConfig;
pub use link::run;
