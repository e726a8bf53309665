//! Fuzz targets: every decoder that reads bytes an attacker or a damaged disk can hand us.
//!
//! Each [`Target`] takes arbitrary bytes and runs them through the same function the daemon
//! runs on what arrives, then checks what must hold of the answer:
//! * no input panics, hangs or allocates without bound (the fuzzer's limits catch the last
//!   two: `scripts/fuzz.sh` runs it with `-timeout` and `-rss_limit_mb`);
//! * what decodes encodes again and decodes to the same value (no message the sender could
//!   not have written is accepted as a different one);
//! * what is refused is refused with an error that names where (a config error its file,
//!   an exports error its line and column).
//!
//! Three programs call the targets: the coverage-guided fuzzer (`fuzz/`, a cargo-fuzz
//! project of its own, run by `scripts/fuzz.sh`), the corpus replay in this crate's tests
//! (part of the test command: every file under `fuzz/corpus/<target>/` and every seed), and
//! `examples/seeds.rs`, which writes the seeds into the corpus directories.

mod decoders;
mod seeds;

pub use seeds::seeds;

/// One fuzz target: a decoder and the checks on its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Frames on the client port (9421): `client::Request` in, `client::Answer` out.
    ClientPort,
    /// Frames on the chunkserver port (9420): `cs::CsToMaster` in, `cs::FromMaster` out.
    ChunkserverPort,
    /// Frames on the data port (9422): `data::DataRequest` in, its replies out.
    DataPort,
    /// Frames on the metalogger port (9419): `logger::LoggerToMaster` in, `MasterToLogger` out.
    LoggerPort,
    /// Frames on the peer port (9423), and the raft-rs message a `Raft` frame carries.
    PeerPort,
    /// A committed Raft entry as apply decodes it (`meta::op::Entry`).
    RaftEntry,
    /// A metadata snapshot as a follower loads it from its leader (checksum made valid).
    Snapshot,
    /// A chunk file's header and CRC table as the chunkserver reads them at start.
    ChunkHeader,
    /// The master, chunkserver and metalogger YAML configs.
    Config,
    /// The exports file (`mfsexports.cfg` grammar) and the rule lookup a session start does.
    Exports,
}

impl Target {
    /// Every target, in the order the soak runs them.
    pub const ALL: [Target; 10] = [
        Target::ClientPort,
        Target::ChunkserverPort,
        Target::DataPort,
        Target::LoggerPort,
        Target::PeerPort,
        Target::RaftEntry,
        Target::Snapshot,
        Target::ChunkHeader,
        Target::Config,
        Target::Exports,
    ];

    /// The name of its fuzz binary and corpus directory.
    pub fn name(self) -> &'static str {
        match self {
            Target::ClientPort => "client_port",
            Target::ChunkserverPort => "chunkserver_port",
            Target::DataPort => "data_port",
            Target::LoggerPort => "logger_port",
            Target::PeerPort => "peer_port",
            Target::RaftEntry => "raft_entry",
            Target::Snapshot => "snapshot",
            Target::ChunkHeader => "chunk_header",
            Target::Config => "config",
            Target::Exports => "exports",
        }
    }

    /// Runs one input; panics (the fuzzer's finding) if a check fails.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::ClientPort => decoders::client_port(data),
            Target::ChunkserverPort => decoders::chunkserver_port(data),
            Target::DataPort => decoders::data_port(data),
            Target::LoggerPort => decoders::logger_port(data),
            Target::PeerPort => decoders::peer_port(data),
            Target::RaftEntry => decoders::raft_entry(data),
            Target::Snapshot => decoders::snapshot(data),
            Target::ChunkHeader => decoders::chunk_header(data),
            Target::Config => decoders::config(data),
            Target::Exports => decoders::exports(data),
        }
    }
}
