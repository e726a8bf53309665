//! The slow suite: the chunk scenarios at the size the issue names (256 MiB), too long for
//! every `cargo test`. Run it explicitly:
//!
//! ```text
//! cargo test --workspace --locked --test slow
//! ```
//!
//! It shares the helpers of the default suite (`tests/util.rs`, `tests/chunks/scenario.rs`).

#[path = "../util.rs"]
mod util;

#[path = "../chunks/scenario.rs"]
mod scenario;

use std::time::Duration;

/// Three chunkservers, 256 MiB of random data with goal 2, a holder SIGKILLed during the read:
/// the read completes with the right SHA-256, the master restores two copies of every chunk
/// within the bound, and the returned server's stale and surplus copies are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_during_read_256_mib() {
    scenario::kill_during_read(256 << 20, Duration::from_secs(240)).await;
}
