/*!
The mfsha wire protocol.

This crate owns the bytes that cross a socket between two mfsha daemons and nothing else: it
knows no Raft, no RocksDB and no filesystem. It is a leaf of the workspace so that every daemon
(master, chunkserver, mount, logger) can depend on it without pulling in the others.

Every message travels in a [`frame`]:

```text
+-----------+---------+------------+----------------------+
| len: u32  | ver: u8 | req_id: u64| body (postcard, len-9)|
+-----------+---------+------------+----------------------+
```

* `len` counts the bytes after itself and is checked against [`MAX_FRAME_BYTES`] *before* any
  allocation, so a hostile peer cannot make us allocate more than one frame.
* `ver` must equal [`PROTOCOL_VERSION`]; anything else closes that one connection.
* `req_id` pairs a reply with its request, so a connection can carry many requests at once.

The typed bodies are grouped by which pair of daemons talks:

| module | between |
|---|---|
| [`client`] | mount/tools ↔ master |
| [`cs`] | chunkserver ↔ master |
| [`data`] | mount ↔ chunkserver, and chunkserver ↔ chunkserver (chain writes, replication) |
| [`logger`] | metalogger ↔ master |
| [`peer`] | master ↔ master (Raft messages) |

Every listening port admits connections through a [`gate::Gate`] (per-address and per-port
caps) and reads frames with deadlines ([`FrameReader::read_within`]). On the chunkserver,
metalogger and peer ports, a [`cluster_key`] handshake (both ends prove the cluster's secret)
comes before the first frame; on the client port, export passwords use [`auth`].

Shared value types (attributes, file kinds, error statuses) live in [`types`].

Why postcard: it is a small, well-kept serde format with varint integers, it never trusts a
length prefix beyond the bytes actually present, and it lets the message definitions stay plain
Rust enums that the compiler checks exhaustively on both ends.
*/

pub mod auth;
pub mod chunk_token;
pub mod client;
pub mod cluster_key;
pub mod cs;
pub mod data;
pub mod frame;
pub mod gate;
pub mod logger;
pub mod net;
pub mod peer;
pub mod rpc;
pub mod types;
pub mod views;

pub use frame::{
    read_frame, write_frame, Frame, FrameError, FrameReader, HEADER_BYTES, MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};
pub use rpc::{RpcClient, RpcError};

/// Default TCP ports, as MooseFS operators know them.
pub mod ports {
    /// Metaloggers connect to the master here.
    pub const MASTER_LOGGER: u16 = 9419;
    /// Chunkservers connect to the master here.
    pub const MASTER_CHUNKSERVER: u16 = 9420;
    /// Clients (mounts and tools) connect to the master here.
    pub const MASTER_CLIENT: u16 = 9421;
    /// Chunkservers listen for clients and for each other here.
    pub const CHUNKSERVER: u16 = 9422;
    /// Masters talk Raft to each other here.
    pub const MASTER_PEER: u16 = 9423;
    /// HTTP status page and Prometheus `/metrics` of the master.
    pub const MASTER_HTTP: u16 = 9425;
    /// Prometheus `/metrics` of a chunkserver.
    pub const CHUNKSERVER_HTTP: u16 = 9427;
    /// Prometheus `/metrics` of a metalogger (and witness).
    pub const LOGGER_HTTP: u16 = 9428;
    /// Prometheus `/metrics` of a mount, when asked for (`-o metrics=127.0.0.1:9429`).
    pub const MOUNT_HTTP: u16 = 9429;
}
