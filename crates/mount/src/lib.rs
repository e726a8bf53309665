/*!
The mfsha client: the library every program uses to reach the filesystem, and the FUSE mount.

This crate owns the client side of the system:

* [`client`]: a session with the master that survives reconnects and master restarts
  (operations block and retry with the same session and sequence number, so each change is
  applied exactly once; only after the I/O timeout does a caller see EIO), chunk reads from any
  valid copy with fall-back, chain writes with write-back buffering, read-ahead, and whole-path
  helpers. It has no FUSE in it, so tools, benchmarks and tests use it without `/dev/fuse`.
* [`metrics`]: master requests by type with latency, and reconnects, served at `/metrics`
  only when the mount is asked to (`-o metrics=ADDR`; the HTTP server is `mfsha-ops`).
* `fuse`: a thin adapter that turns kernel FUSE requests into client calls and replies;
  it holds no protocol, caching or reconnect logic of its own.

It must never depend on raft, RocksDB or the metadata state machine: a client only speaks the
wire protocol (`mfsha-proto`), so it can be deployed on machines that run nothing else and it
cannot accidentally bypass the master.
*/

pub mod client;

pub use client::{Caller, Client, ClientConfig, ConnectError, Groups, MasterConfig, NewNode};
pub mod fuse;
pub mod helper;
pub mod metrics;
mod options;
mod run;

pub use options::{masters, MountOptions, OptionError, Resolved, FSNAME_MASTER_SEPARATOR};
pub use run::{check_fuse_available, mount, unmount, MountError};
