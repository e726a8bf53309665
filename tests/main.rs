//! mfsha's process-level tests: real daemons started from the real `mfsha` binary, on loopback
//! ports, with their data in temporary directories. One test binary for the whole suite, as
//! in ripgrep; each module covers one part of the system.
//!
//! `chunks.rs` (issue #3) runs its scenarios at a few MiB (one or two chunks) with the master's
//! replication delays shortened; `tests/slow/` runs the kill-during-read scenario at 256 MiB.
//! `failover.rs` runs a group of three masters; `membership.rs` adds and removes members.

mod chunks;
mod demo;
mod demo_user;
mod exports;
mod failover;
mod ha;
mod hardening;
mod lab;
mod logger;
mod master;
mod membership;
mod metrics;
mod mount;
mod netns;
mod package;
mod page;
mod perm;
mod session;
mod systemd;
mod trash;
mod util;
mod vip;
