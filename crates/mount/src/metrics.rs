//! The mount's Prometheus metrics, served at `GET /metrics` only when asked for
//! (`-o metrics=127.0.0.1:9429` or `--metrics ADDR`): master requests by type with their
//! latency (retries across reconnects included) and reconnects. docs/metrics.md lists every
//! metric.

use mfsha_ops::{counter, counter_vec, gauge_vec, Exporter};
use mfsha_proto::types::Reply;
use prometheus::{HistogramVec, IntCounter, IntCounterVec};
use std::sync::Arc;
use std::time::Instant;

/// What the link to the master records as it works.
#[derive(Clone)]
pub struct LinkMetrics {
    seconds: HistogramVec,
    errors: IntCounterVec,
    pub(crate) reconnects: IntCounter,
}

impl Default for LinkMetrics {
    fn default() -> Self {
        LinkMetrics {
            seconds: mfsha_ops::latency_histogram_vec(
                "mfsha_mount_master_request_seconds",
                "Time until the master answered a request, by type (waits and retries across \
                 reconnects included).",
                &["op"],
            ),
            errors: counter_vec(
                "mfsha_mount_master_request_errors_total",
                "Master requests that ended with an error, by type.",
                &["op"],
            ),
            reconnects: counter(
                "mfsha_mount_master_reconnects_total",
                "Connections to a master made after the first (master failover, restart or \
                 network loss).",
            ),
        }
    }
}

impl LinkMetrics {
    /// Records one finished request of type `op` that started at `started`.
    pub fn record<T>(&self, op: &'static str, started: Instant, reply: &Reply<T>) {
        self.seconds.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
        if reply.is_err() {
            self.errors.with_label_values(&[op]).inc();
        }
    }
}

/// Every metric of this mount, ready for [`mfsha_ops::metrics_routes`].
pub fn exporter(link: &LinkMetrics) -> Arc<Exporter> {
    let exporter = Exporter::new();
    exporter.register(&link.seconds);
    exporter.register(&link.errors);
    exporter.register(&link.reconnects);
    let info = gauge_vec(
        "mfsha_build_info",
        "Always 1; the labels name this daemon's version.",
        &["daemon", "version"],
    );
    info.with_label_values(&["mount", env!("CARGO_PKG_VERSION")]).set(1);
    exporter.register(&info);
    Arc::new(exporter)
}
