//! The logger's Prometheus metrics, served at `GET /metrics` on `http` (default
//! `0.0.0.0:9428`): how far its restorable copy reaches, whether it follows a master, and —
//! as the witness — the Raft figures (`mfsha_raft_*`) and its lag behind the group's commit.
//! docs/metrics.md lists every metric.

use mfsha_meta::State;
use mfsha_ops::{counter, gauge, gauge_vec, set_counter, Exporter};
use mfsha_raft::Handle;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// What the link to the master did, shared with the scrape.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Last index restorable from this logger's files.
    pub changelog_index: AtomicU64,
    /// Following a master now (connected and said hello).
    pub connected: AtomicBool,
    pub entries: AtomicU64,
    pub snapshots: AtomicU64,
    pub connects: AtomicU64,
}

/// Every metric of this logger, ready for [`mfsha_ops::metrics_routes`].
pub fn exporter(link: Arc<LinkStats>, witness: Option<&Handle<State>>) -> Arc<Exporter> {
    let mut exporter = Exporter::new();
    let index = gauge(
        "mfsha_logger_changelog_index",
        "Last metadata index restorable from this logger's snapshot and changelog files.",
    );
    let connected = gauge("mfsha_logger_connected", "1 while following the leading master.");
    let entries = counter("mfsha_logger_entries_received_total", "Changelog entries stored.");
    let snapshots = counter("mfsha_logger_snapshots_stored_total", "Metadata snapshots stored.");
    let connects = counter("mfsha_logger_master_connects_total", "Connections made to a master.");
    exporter.register(&index);
    exporter.register(&connected);
    for c in [&entries, &snapshots, &connects] {
        exporter.register(c);
    }
    let stats = link.clone();
    exporter.on_scrape(move || {
        index.set(stats.changelog_index.load(Ordering::Relaxed) as i64);
        connected.set(stats.connected.load(Ordering::Relaxed) as i64);
        set_counter(&entries, stats.entries.load(Ordering::Relaxed));
        set_counter(&snapshots, stats.snapshots.load(Ordering::Relaxed));
        set_counter(&connects, stats.connects.load(Ordering::Relaxed));
    });
    if let Some(handle) = witness {
        let raft = mfsha_raft::metrics::register(handle, exporter.registry())
            .expect("the Raft metrics are registered once, with valid names");
        exporter.on_scrape(raft);
        let lag = gauge(
            "mfsha_logger_lag_entries",
            "Witness only: entries committed in the group (as the witness knows) that this \
             logger's files do not hold yet.",
        );
        exporter.register(&lag);
        let handle = handle.clone();
        exporter.on_scrape(move || {
            let committed = handle.status().commit_index;
            let held = link.changelog_index.load(Ordering::Relaxed);
            lag.set(committed.saturating_sub(held) as i64);
        });
    }
    let info = gauge_vec(
        "mfsha_build_info",
        "Always 1; the labels name this daemon's version.",
        &["daemon", "version"],
    );
    let daemon = if witness.is_some() { "logger-witness" } else { "logger" };
    info.with_label_values(&[daemon, env!("CARGO_PKG_VERSION")]).set(1);
    exporter.register(&info);
    Arc::new(exporter)
}
