//! `mfsha bench meta [-H host:port] [--sessions 32] [--ops N]`: metadata throughput and
//! latency of a running master over the real client protocol.
//!
//! Each of `sessions` tasks opens its own session on its own connection and works in its own
//! directory under a fresh bench root, one request at a time (like one application thread).
//! Phases run one after another, all sessions at once: mkdir, create, lookup, getattr,
//! unlink, rmdir. Every mutation is acknowledged only once durable, so creates/s is the
//! durable rate. The bench cleans up after itself.

use anyhow::{bail, Context};
use mfsha_proto::client::{ClientOp, ClientReply, Request};
use mfsha_proto::types::{FileKind, Ino, Reply, SessionId, ROOT_INO};
use std::time::{Duration, Instant};

type Client = mfsha_proto::client::MasterClient;

/// One client session: a connection, the session id and the next mutation sequence number.
pub struct BenchSession {
    client: Client,
    session: SessionId,
    seq: u64,
}

impl BenchSession {
    /// Connects to `master` and opens a session.
    pub async fn open(master: &str, info: &str) -> anyhow::Result<Self> {
        let client = Client::connect(master)
            .await
            .with_context(|| format!("cannot reach the master at {master}"))?;
        let mut session = BenchSession { client, session: 0, seq: 0 };
        let hello = ClientOp::Hello {
            session: None,
            client_info: info.to_string(),
            subdir: "/".into(),
            proof: None,
            token: 0, // one attempt: nothing to retry
            version: mfsha_proto::client::VERSION,
        };
        match session.send(hello).await? {
            Ok(ClientReply::Session { session: id, .. }) => session.session = id,
            other => bail!("master {master} answered Hello with {other:?}"),
        }
        Ok(session)
    }

    /// Sends a read (or a session request) and returns the master's reply.
    pub async fn send(&self, op: ClientOp) -> anyhow::Result<Reply<ClientReply>> {
        let request =
            Request { session: self.session, seq: 0, uid: 0, gid: 0, groups: Vec::new(), op };
        self.client.call(request).await.context("request to the master failed")
    }

    /// Sends a mutation with the next sequence number.
    pub async fn mutate(&mut self, op: ClientOp) -> anyhow::Result<Reply<ClientReply>> {
        self.seq += 1;
        let request = Request {
            session: self.session,
            seq: self.seq,
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            op,
        };
        self.client.call(request).await.context("request to the master failed")
    }
}

/// Results of one phase.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub name: &'static str,
    pub ops: usize,
    pub elapsed: Duration,
    /// Per-request latencies, sorted.
    pub latencies_us: Vec<u64>,
}

impl PhaseResult {
    pub fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency (0 < p ≤ 100), in microseconds.
    pub fn percentile_us(&self, p: f64) -> u64 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
        self.latencies_us[rank.clamp(1, self.latencies_us.len()) - 1]
    }
}

/// Runs the benchmark against `master` and prints one line per phase.
pub async fn run(master: &str, sessions: usize, ops: usize) -> anyhow::Result<()> {
    let results = bench(master, sessions, ops).await?;
    println!(
        "mfsha bench meta: {master}, {sessions} sessions, {} ops per phase",
        ops_per_phase(sessions, ops)
    );
    println!("{:<8} {:>8} {:>11} {:>9} {:>9}", "op", "ops", "ops/s", "p50 µs", "p99 µs");
    for r in &results {
        println!(
            "{:<8} {:>8} {:>11.0} {:>9} {:>9}",
            r.name,
            r.ops,
            r.ops_per_second(),
            r.percentile_us(50.0),
            r.percentile_us(99.0)
        );
    }
    Ok(())
}

fn ops_per_phase(sessions: usize, ops: usize) -> usize {
    ops.div_ceil(sessions.max(1)) * sessions.max(1)
}

/// Runs every phase and returns their results (mkdir, create, lookup, getattr, unlink, rmdir).
pub async fn bench(master: &str, sessions: usize, ops: usize) -> anyhow::Result<Vec<PhaseResult>> {
    if sessions == 0 || ops == 0 {
        bail!("--sessions and --ops must be at least 1");
    }
    let per_session = ops.div_ceil(sessions);
    let mut setup = BenchSession::open(master, "mfsha bench meta (setup)").await?;
    let root_name = format!("mfsha-bench-{}-{}", std::process::id(), now_nanos());
    let root = expect_attr(setup.mutate(mkdir(ROOT_INO, &root_name)).await?, "mkdir bench root")?;
    let mut workers = Vec::with_capacity(sessions);
    for k in 0..sessions {
        let mut s = BenchSession::open(master, &format!("mfsha bench meta #{k}")).await?;
        let dir = expect_attr(s.mutate(mkdir(root, &format!("s{k}"))).await?, "mkdir session dir")?;
        workers.push(Worker { session: s, dir, files: Vec::with_capacity(per_session) });
    }
    let mut results = Vec::new();
    for phase in PHASES {
        let (result, back) = run_phase(*phase, workers, per_session).await?;
        workers = back;
        results.push(result);
    }
    for (k, w) in workers.iter_mut().enumerate() {
        expect_unit(w.session.mutate(rmdir(root, &format!("s{k}"))).await?, "rmdir session dir")?;
    }
    expect_unit(setup.mutate(rmdir(ROOT_INO, &root_name)).await?, "rmdir bench root")?;
    Ok(results)
}

/// One session's share of the work and what it created.
struct Worker {
    session: BenchSession,
    dir: Ino,
    files: Vec<Ino>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Mkdir,
    Create,
    Lookup,
    GetAttr,
    Unlink,
    Rmdir,
}

const PHASES: &[Phase] =
    &[Phase::Mkdir, Phase::Create, Phase::Lookup, Phase::GetAttr, Phase::Unlink, Phase::Rmdir];

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Mkdir => "mkdir",
            Phase::Create => "create",
            Phase::Lookup => "lookup",
            Phase::GetAttr => "getattr",
            Phase::Unlink => "unlink",
            Phase::Rmdir => "rmdir",
        }
    }
}

/// Runs `phase` on every worker at once; gives the workers back for the next phase.
async fn run_phase(
    phase: Phase,
    workers: Vec<Worker>,
    count: usize,
) -> anyhow::Result<(PhaseResult, Vec<Worker>)> {
    let start = Instant::now();
    let tasks: Vec<_> =
        workers.into_iter().map(|w| tokio::spawn(worker_phase(phase, w, count))).collect();
    let mut latencies_us = Vec::with_capacity(tasks.len() * count);
    let mut back = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (worker, mut lat) = task.await.context("bench task panicked")??;
        latencies_us.append(&mut lat);
        back.push(worker);
    }
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    let result = PhaseResult { name: phase.name(), ops: latencies_us.len(), elapsed, latencies_us };
    Ok((result, back))
}

async fn worker_phase(
    phase: Phase,
    mut w: Worker,
    count: usize,
) -> anyhow::Result<(Worker, Vec<u64>)> {
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        let what = phase.name();
        match phase {
            Phase::Mkdir => {
                expect_attr(w.session.mutate(mkdir(w.dir, &format!("d{i}"))).await?, what)?;
            }
            Phase::Create => {
                let op = ClientOp::Mknod {
                    parent: w.dir,
                    name: format!("f{i}"),
                    kind: FileKind::File,
                    mode: 0o644,
                    umask: 0o022,
                    rdev: 0,
                };
                let ino = expect_attr(w.session.mutate(op).await?, what)?;
                w.files.push(ino);
            }
            Phase::Lookup => {
                let op = ClientOp::Lookup { parent: w.dir, name: format!("f{i}") };
                let ino = expect_attr(w.session.send(op).await?, what)?;
                if ino != w.files[i] {
                    bail!("lookup of f{i} gave inode {ino}, create gave {}", w.files[i]);
                }
            }
            Phase::GetAttr => {
                expect_attr(w.session.send(ClientOp::GetAttr { ino: w.files[i] }).await?, what)?;
            }
            Phase::Unlink => {
                let op = ClientOp::Unlink { parent: w.dir, name: format!("f{i}") };
                expect_unit(w.session.mutate(op).await?, what)?;
            }
            Phase::Rmdir => {
                expect_unit(w.session.mutate(rmdir(w.dir, &format!("d{i}"))).await?, what)?
            }
        }
        latencies.push(t.elapsed().as_micros() as u64);
    }
    Ok((w, latencies))
}

fn mkdir(parent: Ino, name: &str) -> ClientOp {
    ClientOp::Mkdir { parent, name: name.to_string(), mode: 0o755, umask: 0o022 }
}

fn rmdir(parent: Ino, name: &str) -> ClientOp {
    ClientOp::Rmdir { parent, name: name.to_string() }
}

fn expect_attr(reply: Reply<ClientReply>, what: &str) -> anyhow::Result<Ino> {
    match reply {
        Ok(ClientReply::Attr(attr)) => Ok(attr.ino),
        Ok(other) => bail!("{what}: unexpected reply {other:?}"),
        Err(status) => bail!("{what}: master answered {status:?} ({status})"),
    }
}

fn expect_unit(reply: Reply<ClientReply>, what: &str) -> anyhow::Result<()> {
    match reply {
        Ok(ClientReply::Unit) => Ok(()),
        Ok(other) => bail!("{what}: unexpected reply {other:?}"),
        Err(status) => bail!("{what}: master answered {status:?} ({status})"),
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_rank() {
        let r = PhaseResult {
            name: "x",
            ops: 100,
            elapsed: Duration::from_secs(2),
            latencies_us: (1..=100).collect(),
        };
        assert_eq!(r.percentile_us(50.0), 50);
        assert_eq!(r.percentile_us(99.0), 99);
        assert_eq!(r.percentile_us(100.0), 100);
        assert_eq!(r.ops_per_second(), 50.0);
    }
}
