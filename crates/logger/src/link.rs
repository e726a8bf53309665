//! The logger's connection to a master: download a snapshot, then follow the changelog.
//!
//! Only the leader serves loggers. The logger tries a hinted leader first, then the master
//! it last followed, then each configured address in turn; a follower answers `NotLeader`
//! with the leader's logger address, tried next without a pause. Connections are made with a
//! 1 s connect timeout and with keepalive and `TCP_USER_TIMEOUT` at 1 s
//! (`mfsha_proto::net`), so a master whose host died is noticed in seconds, not minutes.

use crate::config::LoggerConfig;
use crate::files::{self, ChangelogWriter, FileError, StoredSnapshot};
use crate::metrics::LinkStats;
use mfsha_proto::cluster_key::{self, ClusterKey, KeyedPort};
use mfsha_proto::frame::{read_frame, write_frame, FrameError};
use mfsha_proto::logger::{LoggerToMaster, MasterToLogger};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Why the logger stopped, or why one connection to a master ended.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    #[error("cannot create data directory {path}: {cause}")]
    DataDir { path: PathBuf, cause: std::io::Error },
    #[error("writing the logger's files failed: {0}; check the disk, then restart the logger")]
    File(#[from] FileError),
    #[error("connection to master {master} failed: {reason}")]
    Link { master: String, reason: String },
    #[error("master {master} is not the leader (leader's logger port: {hint:?})")]
    NotLeader { master: String, hint: Option<String> },
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Witness(#[from] crate::witness::WitnessError),
    #[error(transparent)]
    Http(#[from] mfsha_ops::OpsError),
    #[error("{0} (or remove `secret_file:` from the logger's config)")]
    Key(#[from] cluster_key::KeyFileError),
}

const BACKOFF_START: Duration = Duration::from_millis(100);
/// A master that heartbeated and then sent nothing for this long is taken for hung. Longer
/// than a chunkserver's limit: the master encodes a requested snapshot on the connection's
/// task, and heartbeats pause meanwhile.
const MASTER_SILENCE: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Runs the logger until SIGTERM or SIGINT, reconnecting to the masters as needed.
pub async fn run(config: LoggerConfig) -> Result<(), LoggerError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|cause| LoggerError::DataDir { path: config.data_dir.clone(), cause })?;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(LoggerError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(LoggerError::Signal)?;
    let key = mfsha_proto::cluster_key::load_configured(config.secret_file.as_deref(), "logger")?;
    let http = mfsha_ops::bind(HTTP, config.http).await?;
    let witness = match &config.witness {
        Some(witness) => {
            let dir = config.data_dir.join("witness");
            let started = crate::witness::start(witness, dir, key.clone()).await;
            Some(started.map_err(LoggerError::Witness)?)
        }
        None => None,
    };
    let stats = Arc::new(LinkStats::default());
    let exporter = crate::metrics::exporter(stats.clone(), witness.as_ref().map(|w| &w.handle));
    let served = http.serve(mfsha_ops::metrics_routes(exporter), std::future::pending());
    // The data directory exists and the witness (if any) has bound its peer port and opened
    // its store: what systemd's Type=notify waits for.
    mfsha_sd::ready();
    let mut ticks = None;
    let result = tokio::select! {
        result = follow_masters(&config, key.as_ref(), &stats) => result,
        _ = term.recv() => { tracing::info!("SIGTERM received; stopping"); Ok(()) }
        _ = int.recv() => { tracing::info!("SIGINT received; stopping"); Ok(()) }
        never = mfsha_sd::watchdog(|| witness_alive(witness.as_ref(), &mut ticks)) => match never {},
    };
    served.task.abort();
    mfsha_sd::stopping();
    if let Some(witness) = witness {
        witness.stop().await;
    }
    result
}

/// The operator's HTTP port.
const HTTP: mfsha_ops::Endpoint = mfsha_ops::Endpoint { what: "logger metrics", key: "http" };

/// The systemd watchdog's probe: the witness's Raft thread ticked since the last round
/// (`ticks` keeps the count seen then). The metalogger part is the `select!` this runs in: an
/// answer at all means its loop yields to the runtime.
fn witness_alive(
    witness: Option<&crate::witness::Witness>,
    ticks: &mut Option<u64>,
) -> Result<(), String> {
    let Some(witness) = witness else { return Ok(()) };
    // A witness removed from the group has stopped its thread for good: nothing to watch
    // (restarting the logger would not bring it back).
    if witness.handle.removed() {
        return Ok(());
    }
    let now = witness.handle.stats().ticks;
    match ticks.replace(now) {
        Some(before) if now <= before => Err(format!(
            "the witness's Raft thread has not ticked since the last round (ticks {now})"
        )),
        _ => Ok(()),
    }
}

async fn follow_masters(
    config: &LoggerConfig,
    key: Option<&ClusterKey>,
    stats: &LinkStats,
) -> Result<(), LoggerError> {
    let mut backoff = BACKOFF_START;
    let mut next = 0usize;
    let mut first: Option<String> = None;
    let mut hops = 0u32;
    loop {
        let master = first.take().unwrap_or_else(|| {
            next += 1;
            config.masters[(next - 1) % config.masters.len()].clone()
        });
        let followed = follow(config, key, &master, stats).await;
        stats.connected.store(false, Ordering::Relaxed);
        match followed {
            // A file error means our disk is failing: stop rather than keep a broken copy.
            Err(LoggerError::File(e)) => return Err(LoggerError::File(e)),
            Err(LoggerError::NotLeader { hint: Some(to), .. }) if to != master && hops < 3 => {
                tracing::info!(%master, leader = %to, "not the leader; following its hint");
                hops += 1;
                first = Some(to);
                continue;
            }
            Err(e) => tracing::warn!(%e, "will retry in {backoff:?}"),
            Ok(()) => {
                tracing::info!(%master, "master closed the connection");
                // It led: the best first guess (if it stepped down, it redirects us).
                first = Some(master);
                backoff = BACKOFF_START;
            }
        }
        hops = 0;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// What the logger holds on disk: the last index it can restore to.
fn last_index_on_disk(dir: &Path) -> u64 {
    let snap = files::read_snapshot(&dir.join(files::SNAPSHOT)).map(|s| s.index).unwrap_or(0);
    let log = files::read_changelog(&dir.join(files::CHANGELOG))
        .ok()
        .and_then(|read| read.records.last().map(|r| r.0))
        .unwrap_or(0);
    snap.max(log)
}

/// One connection: hello, then snapshot parts and entries until the connection ends.
async fn follow(
    config: &LoggerConfig,
    key: Option<&ClusterKey>,
    master: &str,
    stats: &LinkStats,
) -> Result<(), LoggerError> {
    let link_err = |reason: String| LoggerError::Link { master: master.to_string(), reason };
    let mut stream = mfsha_proto::net::connect(master, mfsha_proto::net::CONNECT_TIMEOUT)
        .await
        .map_err(|e| link_err(e.to_string()))?;
    cluster_key::prove(&mut stream, key, KeyedPort::Logger)
        .await
        .map_err(|e| link_err(format!("cluster secret: {e}")))?;
    let (mut reader, mut writer) = stream.into_split();
    let dir = config.data_dir.clone();
    let mut follower = Follower::new(&dir, last_index_on_disk(&dir))?;
    let hello = LoggerToMaster::Hello {
        name: config.name.clone(),
        applied: follower.last,
        cluster: config.cluster(),
    };
    write_frame(&mut writer, 0, &hello).await.map_err(|e| link_err(e.to_string()))?;
    tracing::info!(%master, applied = follower.last, "connected to master");
    stats.changelog_index.store(follower.last, Ordering::Relaxed);
    stats.connects.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Result<MasterToLogger, FrameError>>(16);
    let read_task = tokio::spawn(async move {
        loop {
            let frame = read_frame::<_, MasterToLogger>(&mut reader).await;
            let stop = frame.is_err();
            if tx.send(frame.map(|f| f.body)).await.is_err() || stop {
                return;
            }
        }
    });
    let mut refresh = tokio::time::interval(Duration::from_secs(config.snapshot_every_s));
    refresh.tick().await; // the first snapshot comes with the connection
                          // Armed by the first heartbeat (every mfsha master sends them once the snapshot is out).
    let mut heard: Option<tokio::time::Instant> = None;
    let result = loop {
        let silent = async {
            match heard {
                Some(at) => tokio::time::sleep_until(at + MASTER_SILENCE).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = silent => break Err(link_err(format!("sent nothing for {MASTER_SILENCE:?} (hung or gone)"))),
            frame = rx.recv() => {
                let msg = match frame {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) if e.is_clean_close() => break Ok(()),
                    Some(Err(e)) => break Err(link_err(e.to_string())),
                    None => break Ok(()),
                };
                if heard.is_some() || matches!(msg, MasterToLogger::Heartbeat) {
                    heard = Some(tokio::time::Instant::now());
                }
                // Past the hello: a master that is not the leader answers NotLeader first.
                if !matches!(msg, MasterToLogger::NotLeader { .. }) {
                    stats.connected.store(true, Ordering::Relaxed);
                }
                let held = (follower.last, follower.snapshots_stored);
                let handled = follower.handle(msg, master);
                stats.changelog_index.store(follower.last, Ordering::Relaxed);
                if follower.snapshots_stored > held.1 {
                    stats.snapshots.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.entries.fetch_add(follower.last.saturating_sub(held.0), Ordering::Relaxed);
                }
                match handled {
                    Ok(Some(ack)) => {
                        let ack = LoggerToMaster::Ack { index: ack };
                        if let Err(e) = write_frame(&mut writer, 0, &ack).await {
                            break Err(link_err(e.to_string()));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => break Err(e),
                }
            }
            _ = refresh.tick() => {
                if let Err(e) = write_frame(&mut writer, 0, &LoggerToMaster::WantSnapshot).await {
                    break Err(link_err(e.to_string()));
                }
            }
        }
    };
    read_task.abort();
    let _closed = writer.shutdown().await;
    result
}

/// The logger's side of the stream: assembles snapshots and appends entries.
struct Follower {
    dir: PathBuf,
    /// Last index restorable from disk.
    last: u64,
    changelog: ChangelogWriter,
    /// Snapshot being received: (index, term, bytes so far).
    partial: Option<(u64, u64, Vec<u8>)>,
    /// Snapshots stored by this follower.
    snapshots_stored: u64,
}

impl Follower {
    fn new(dir: &Path, last: u64) -> Result<Self, LoggerError> {
        Ok(Follower {
            dir: dir.to_path_buf(),
            last,
            changelog: ChangelogWriter::open(dir)?,
            partial: None,
            snapshots_stored: 0,
        })
    }

    /// Handles one message; returns an index to acknowledge.
    fn handle(&mut self, msg: MasterToLogger, master: &str) -> Result<Option<u64>, LoggerError> {
        let bad = |reason: String| LoggerError::Link { master: master.to_string(), reason };
        match msg {
            MasterToLogger::SnapshotPart { index, term, offset, data, last, crc32c } => {
                let partial = self.partial.get_or_insert_with(|| (index, term, Vec::new()));
                if partial.0 != index || partial.2.len() as u64 != offset {
                    self.partial = None;
                    return Err(bad(format!("snapshot part at offset {offset} out of order")));
                }
                partial.2.extend_from_slice(&data);
                if !last {
                    return Ok(None);
                }
                let (index, term, blob) = self.partial.take().expect("set above");
                if crc32c::crc32c(&blob) != crc32c {
                    return Err(bad(format!("snapshot at index {index} failed its checksum")));
                }
                self.install_snapshot(StoredSnapshot { index, term, blob }, master)
            }
            MasterToLogger::Entries(entries) => {
                let fresh: Vec<(u64, u64, &[u8])> = entries
                    .iter()
                    .filter(|(index, _, _)| *index > self.last)
                    .map(|(index, term, data)| (*index, *term, data.as_slice()))
                    .collect();
                if let Some(first) = fresh.first() {
                    if first.0 != self.last + 1 {
                        return Err(bad(format!(
                            "entry {} follows {}: gap in the changelog",
                            first.0, self.last
                        )));
                    }
                    self.changelog.append(&fresh)?;
                    self.last = fresh.last().expect("non-empty").0;
                }
                Ok(Some(self.last))
            }
            MasterToLogger::NotLeader { leader_hint } => {
                Err(LoggerError::NotLeader { master: master.to_string(), hint: leader_hint })
            }
            MasterToLogger::Heartbeat => Ok(None),
        }
    }

    fn install_snapshot(
        &mut self,
        snap: StoredSnapshot,
        master: &str,
    ) -> Result<Option<u64>, LoggerError> {
        if snap.index < self.last {
            // A master behind what we already hold (a lagging replica): keep our newer copy.
            return Err(LoggerError::Link {
                master: master.to_string(),
                reason: format!(
                    "offers a snapshot at index {} but this logger already holds {}",
                    snap.index, self.last
                ),
            });
        }
        let index = snap.index;
        files::write_snapshot(&self.dir, &snap)?;
        files::rotate_changelog(&self.dir)?;
        self.changelog = ChangelogWriter::open(&self.dir)?;
        self.last = index;
        self.snapshots_stored += 1;
        tracing::info!(%master, index, bytes = snap.blob.len(), "stored metadata snapshot");
        Ok(Some(index))
    }
}
