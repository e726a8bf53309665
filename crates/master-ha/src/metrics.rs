//! The master's Prometheus metrics, served at `GET /metrics` on `listen.http`.
//!
//! Gauges are read at scrape time from the state the master keeps anyway ([`cluster_status`]
//! and the chunk registry): nothing on the request path updates them. Only the client
//! request counts and latencies are recorded as requests are answered ([`ClientMetrics`]).
//! The Raft figures (`mfsha_raft_*`) come from `mfsha_raft::metrics`. docs/metrics.md lists
//! every metric.

use crate::server::status::cluster_status;
use crate::server::Service;
use mfsha_ops::{counter, counter_vec, gauge, gauge_vec, set_counter, Exporter};
use mfsha_proto::types::Reply;
use prometheus::{HistogramVec, IntCounterVec, IntGauge, IntGaugeVec};
use std::sync::Arc;
use std::time::Instant;

/// Client requests by type (`op`: [`mfsha_proto::client::ClientOp::name`]), recorded by
/// the client listener as each is answered.
#[derive(Clone)]
pub struct ClientMetrics {
    seconds: HistogramVec,
    errors: IntCounterVec,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        ClientMetrics {
            seconds: mfsha_ops::latency_histogram_vec(
                "mfsha_master_client_request_seconds",
                "Time to answer a client request, by request type (mutations: until committed, \
                 applied and durable).",
                &["op"],
            ),
            errors: counter_vec(
                "mfsha_master_client_request_errors_total",
                "Client requests answered with an error (NotLeader included), by request type.",
                &["op"],
            ),
        }
    }
}

impl ClientMetrics {
    /// Records one answered request of type `op` that started at `started`.
    pub fn record<T>(&self, op: &'static str, started: Instant, reply: &Reply<T>) {
        self.seconds.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
        if reply.is_err() {
            self.errors.with_label_values(&[op]).inc();
        }
    }

    /// Requests answered since this master started, by type, the most frequent first (the
    /// status page's operation counts: the same numbers as `/metrics`).
    pub fn operations(&self) -> Vec<(String, u64)> {
        use prometheus::core::Collector;
        let mut counts: Vec<(String, u64)> = Vec::new();
        for family in self.seconds.collect() {
            for metric in family.get_metric() {
                let op = metric.get_label().iter().find(|l| l.name() == "op");
                let count = metric.get_histogram().get_sample_count();
                counts.extend(op.map(|l| (l.value().to_string(), count)));
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts
    }

    fn register(&self, exporter: &Exporter) {
        exporter.register(&self.seconds);
        exporter.register(&self.errors);
    }
}

/// Gauges refreshed from [`cluster_status`] at each scrape.
struct StatusGauges {
    inodes: IntGaugeVec,
    sessions: IntGauge,
    clients: IntGauge,
    open_files: IntGauge,
    loggers: IntGauge,
    logger_acked: IntGaugeVec,
    logger_lag: IntGaugeVec,
    chunks: IntGaugeVec,
    chunkservers: IntGauge,
    cs_chunks: IntGaugeVec,
    cs_used: IntGaugeVec,
    cs_total: IntGaugeVec,
    cs_disks: IntGaugeVec,
}

impl StatusGauges {
    fn new() -> StatusGauges {
        let per_cs = |name, help| gauge_vec(name, help, &["chunkserver"]);
        StatusGauges {
            inodes: gauge_vec(
                "mfsha_master_inodes",
                "Inodes in the applied metadata, by kind (file, directory, trash, all).",
                &["kind"],
            ),
            sessions: gauge("mfsha_master_sessions", "Client sessions in the replicated state."),
            clients: gauge(
                "mfsha_master_clients_connected",
                "Client connections carrying a session on this master.",
            ),
            open_files: gauge(
                "mfsha_master_open_files",
                "Files held open by the sessions connected to this master.",
            ),
            loggers: gauge("mfsha_master_loggers_connected", "Metaloggers following this master."),
            logger_acked: gauge_vec(
                "mfsha_master_logger_acked_index",
                "The last metadata index each metalogger following this master acknowledged \
                 as stored.",
                &["logger"],
            ),
            logger_lag: gauge_vec(
                "mfsha_master_logger_lag_entries",
                "Entries this master applied that each following metalogger has not \
                 acknowledged yet.",
                &["logger"],
            ),
            chunks: gauge_vec(
                "mfsha_master_chunks",
                "Leader only: chunks by copy health, as its last replication pass counted \
                 them: missing (no valid copy), endangered (one valid copy, goal above one), \
                 undergoal (fewer valid copies than the goal, more than one), stable (the \
                 goal), overgoal (more). The states add up to every chunk.",
                &["state"],
            ),
            chunkservers: gauge("mfsha_master_chunkservers", "Chunkservers connected."),
            cs_chunks: per_cs("mfsha_master_chunkserver_chunks", "Chunk copies per chunkserver."),
            cs_used: per_cs(
                "mfsha_master_chunkserver_used_bytes",
                "Bytes used on each chunkserver's disks, as it last reported.",
            ),
            cs_total: per_cs(
                "mfsha_master_chunkserver_total_bytes",
                "Bytes of each chunkserver's disks, as it last reported.",
            ),
            cs_disks: gauge_vec(
                "mfsha_master_chunkserver_disks",
                "Disks of each chunkserver by state (ok, damaged, marked for removal).",
                &["chunkserver", "state"],
            ),
        }
    }

    fn register(&self, exporter: &Exporter) {
        for vec in [&self.inodes, &self.chunks, &self.cs_chunks, &self.cs_used] {
            exporter.register(vec);
        }
        exporter.register(&self.cs_total);
        exporter.register(&self.cs_disks);
        exporter.register(&self.logger_acked);
        exporter.register(&self.logger_lag);
        for g in [&self.sessions, &self.clients, &self.open_files, &self.loggers] {
            exporter.register(g);
        }
        exporter.register(&self.chunkservers);
    }

    fn refresh(&self, service: &Service) {
        let status = cluster_status(service);
        let kinds = [
            ("all", status.inodes),
            ("file", status.files),
            ("directory", status.directories),
            ("trash", status.trash_inodes),
            ("reserved", status.sustained_inodes),
        ];
        for (kind, count) in kinds {
            self.inodes.with_label_values(&[kind]).set(count as i64);
        }
        self.sessions.set(status.sessions as i64);
        self.clients.set(status.clients.len() as i64);
        self.open_files.set(status.clients.iter().map(|c| c.open_files).sum::<u64>() as i64);
        self.loggers.set(status.loggers.len() as i64);
        self.refresh_loggers(service, status.applied_index);
        self.refresh_health(service, &status);
        self.refresh_chunkservers(&status.chunkservers);
    }

    /// Only the leader runs replication passes, so only its counts are current: on any other
    /// master the series are absent (a sum over masters counts each chunk once).
    fn refresh_health(&self, service: &Service, status: &mfsha_proto::client::ClusterStatus) {
        self.chunks.reset();
        if !service.meta.is_leader() {
            return;
        }
        // `chunks_undergoal` counts the endangered too; here each chunk has one state.
        let undergoal_only = status.chunks_undergoal.saturating_sub(status.chunks_endangered);
        let states = [
            ("missing", status.chunks_missing),
            ("endangered", status.chunks_endangered),
            ("undergoal", undergoal_only),
            ("stable", status.chunks_stable),
            ("overgoal", status.chunks_overgoal),
        ];
        for (state, count) in states {
            self.chunks.with_label_values(&[state]).set(count as i64);
        }
    }

    fn refresh_loggers(&self, service: &Service, applied: u64) {
        self.logger_acked.reset();
        self.logger_lag.reset();
        for (logger, acked) in service.logger_acks.lock().iter() {
            self.logger_acked.with_label_values(&[logger]).set(*acked as i64);
            let lag = applied.saturating_sub(*acked);
            self.logger_lag.with_label_values(&[logger]).set(lag as i64);
        }
    }

    fn refresh_chunkservers(&self, servers: &[mfsha_proto::client::ChunkserverStatus]) {
        self.chunkservers.set(servers.len() as i64);
        // Servers come and go: only those connected now are shown.
        for vec in [&self.cs_chunks, &self.cs_used, &self.cs_total, &self.cs_disks] {
            vec.reset();
        }
        for cs in servers {
            let addr = cs.addr.as_str();
            self.cs_chunks.with_label_values(&[addr]).set(cs.chunks as i64);
            self.cs_used.with_label_values(&[addr]).set(cs.used_bytes as i64);
            self.cs_total.with_label_values(&[addr]).set(cs.total_bytes as i64);
            let damaged = cs.disks.iter().filter(|d| d.damaged).count();
            let marked = cs.disks.iter().filter(|d| !d.damaged && d.marked_for_removal).count();
            let ok = cs.disks.len() - damaged - marked;
            for (state, n) in [("ok", ok), ("damaged", damaged), ("marked_for_removal", marked)] {
                self.cs_disks.with_label_values(&[addr, state]).set(n as i64);
            }
        }
    }
}

/// The replication engine's commands, refreshed from the registry.
struct EngineGauges {
    in_flight: IntGaugeVec,
    replications: prometheus::IntCounter,
    deletions: prometheus::IntCounter,
}

impl EngineGauges {
    fn new() -> EngineGauges {
        EngineGauges {
            in_flight: gauge_vec(
                "mfsha_master_chunk_commands_in_flight",
                "The replication queue: commands sent to chunkservers and not yet answered, \
                 by kind (replicate, delete, other: create, version change, duplicate). Each \
                 replication pass adds more, paced per chunkserver.",
                &["kind"],
            ),
            replications: counter(
                "mfsha_master_chunk_replications_total",
                "Chunk replications this master started as leader.",
            ),
            deletions: counter(
                "mfsha_master_chunk_deletions_total",
                "Chunk copy deletions this master started as leader.",
            ),
        }
    }

    fn register(&self, exporter: &Exporter) {
        exporter.register(&self.in_flight);
        exporter.register(&self.replications);
        exporter.register(&self.deletions);
    }

    fn refresh(&self, service: &Service) {
        let counts = service.chunks.command_counts();
        let kinds = [
            ("replicate", counts.replicating),
            ("delete", counts.deleting),
            ("other", counts.other),
        ];
        for (kind, n) in kinds {
            self.in_flight.with_label_values(&[kind]).set(n as i64);
        }
        set_counter(&self.replications, counts.replications_started);
        set_counter(&self.deletions, counts.deletions_started);
    }
}

/// Every metric of this master, ready for [`mfsha_ops::metrics_routes`].
pub fn exporter(service: &Arc<Service>) -> Arc<Exporter> {
    let mut exporter = Exporter::new();
    let raft = mfsha_raft::metrics::register(service.meta.raft(), exporter.registry())
        .expect("the Raft metrics are registered once, with valid names");
    exporter.on_scrape(raft);
    service.client_metrics.register(&exporter);
    let status = StatusGauges::new();
    status.register(&exporter);
    let engine = EngineGauges::new();
    engine.register(&exporter);
    let from = service.clone();
    exporter.on_scrape(move || {
        status.refresh(&from);
        engine.refresh(&from);
    });
    if service.vip.is_some() {
        let held = gauge(
            "mfsha_master_vip_held",
            "1 while this master holds the cluster's virtual IP (configured with `vip:`).",
        );
        exporter.register(&held);
        let from = service.clone();
        exporter.on_scrape(move || {
            let holds = from.vip.as_ref().is_some_and(|fence| fence.status().held);
            held.set(holds as i64);
        });
    }
    let info = gauge_vec(
        "mfsha_build_info",
        "Always 1; the labels name this daemon's version and cluster.",
        &["daemon", "version", "cluster_id"],
    );
    let labels = ["master", env!("CARGO_PKG_VERSION"), service.cluster_id.as_str()];
    info.with_label_values(&labels).set(1);
    exporter.register(&info);
    Arc::new(exporter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_count_each_answered_request_by_type() {
        let metrics = ClientMetrics::default();
        let started = Instant::now();
        for _ in 0..3 {
            metrics.record("lookup", started, &Ok::<(), _>(()));
        }
        metrics.record("create", started, &Err::<(), _>(mfsha_proto::types::Status::NotLeader));
        let expected = vec![("lookup".to_string(), 3), ("create".to_string(), 1)];
        assert_eq!(metrics.operations(), expected);
        assert_eq!(metrics.errors.with_label_values(&["create"]).get(), 1);
        assert_eq!(metrics.errors.with_label_values(&["lookup"]).get(), 0);
    }
}
