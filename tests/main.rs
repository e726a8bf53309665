//! mfsha's process-level tests: real daemons started from the real `mfsha` binary, on loopback
//! ports, with their data in temporary directories. One test binary for the whole suite, as
//! in ripgrep; each module covers one part of the system.

mod util;
mod master;
