//! mfsha's process-level tests: real daemons started from the real `mfsha` binary, on loopback
//! ports, with their data in temporary directories. One test binary for the whole suite, as
//! in ripgrep; each module covers one part of the system.
//!
//! `chunks.rs` (issue #3) and `mount.rs` (issue #4) are written but not yet part of the suite:
//! they need the master's chunk registry (`crates/master-ha/src/chunks/`) wired into the
//! daemon, which is the next step. Until then they would fail, not skip, so they are left out
//! here explicitly rather than silently.

mod logger;
mod master;
mod util;
