//! The chunkserver's Prometheus metrics, served at `GET /metrics` on `http` (default
//! `0.0.0.0:9427`). Per-disk figures are read at scrape time from the store (space, chunks,
//! health) and from each disk's counters (bytes, CRC errors); the data port records its
//! requests as it answers them ([`DataMetrics`]). docs/metrics.md lists every metric.

use crate::store::Store;
use mfsha_ops::{counter_vec, gauge, gauge_vec, set_counter, Exporter};
use mfsha_proto::types::Reply;
use prometheus::{HistogramVec, IntCounterVec, IntGauge};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Requests on the data port (9422) by type, and its open connections.
#[derive(Clone)]
pub struct DataMetrics {
    seconds: HistogramVec,
    bytes: IntCounterVec,
    errors: IntCounterVec,
    pub(crate) connections: IntGauge,
}

impl Default for DataMetrics {
    fn default() -> Self {
        DataMetrics {
            seconds: mfsha_ops::latency_histogram_vec(
                "mfsha_chunkserver_request_seconds",
                "Time to answer a data request (read, write, sync, stat), the rest of a write \
                 chain included.",
                &["op"],
            ),
            bytes: counter_vec(
                "mfsha_chunkserver_request_bytes_total",
                "Data bytes of answered requests: read (sent) and write (received).",
                &["op"],
            ),
            errors: counter_vec(
                "mfsha_chunkserver_request_errors_total",
                "Data requests answered with an error, by type.",
                &["op"],
            ),
            connections: gauge(
                "mfsha_chunkserver_connections",
                "Open connections on the data port (mounts and other chunkservers).",
            ),
        }
    }
}

impl DataMetrics {
    /// Records one answered request of type `op` moving `bytes` of data.
    pub fn record<T>(&self, op: &'static str, started: Instant, bytes: u64, reply: &Reply<T>) {
        self.seconds.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
        match reply {
            Ok(_) => self.bytes.with_label_values(&[op]).inc_by(bytes),
            Err(_) => self.errors.with_label_values(&[op]).inc(),
        }
    }
}

/// Every metric of this chunkserver, ready for [`mfsha_ops::metrics_routes`].
pub fn exporter(store: Arc<Store>, data: &DataMetrics) -> Arc<Exporter> {
    let mut exporter = Exporter::new();
    exporter.register(&data.seconds);
    exporter.register(&data.bytes);
    exporter.register(&data.errors);
    exporter.register(&data.connections);
    let disk = |name, help| gauge_vec(name, help, &["disk"]);
    let total = disk("mfsha_chunkserver_disk_total_bytes", "Size of the disk's filesystem.");
    let free = disk("mfsha_chunkserver_disk_free_bytes", "Bytes available on the disk.");
    let chunks = disk("mfsha_chunkserver_disk_chunks", "Chunk copies on the disk.");
    let damaged = disk(
        "mfsha_chunkserver_disk_damaged",
        "1 when the disk returned I/O errors (its chunks count as lost; replace it).",
    );
    let marked = disk(
        "mfsha_chunkserver_disk_marked_for_removal",
        "1 when the disk is marked for removal (being drained).",
    );
    let per_disk = |name, help| counter_vec(name, help, &["disk"]);
    let read = per_disk(
        "mfsha_chunkserver_disk_read_bytes_total",
        "Chunk bytes read from the disk and verified.",
    );
    let written = per_disk(
        "mfsha_chunkserver_disk_written_bytes_total",
        "Chunk bytes written to the disk (client writes and replications).",
    );
    let crc = per_disk(
        "mfsha_chunkserver_disk_crc_errors_total",
        "Damaged copies found on the disk: a block failing its CRC, or a file shorter than \
         recorded.",
    );
    let cached = per_disk(
        "mfsha_chunkserver_disk_cached_read_bytes_total",
        "Chunk bytes of blocks verified earlier, read from the page cache without reading and \
         checking the whole block again.",
    );
    for g in [&total, &free, &chunks, &damaged, &marked] {
        exporter.register(g);
    }
    for c in [&read, &written, &crc, &cached] {
        exporter.register(c);
    }
    let all_chunks = gauge("mfsha_chunkserver_chunks", "Chunk copies on this chunkserver.");
    exporter.register(&all_chunks);
    exporter.on_scrape(move || {
        let infos = store.disk_infos();
        all_chunks.set(infos.iter().map(|d| d.chunks).sum::<u64>() as i64);
        for (info, disk) in infos.iter().zip(&store.disks) {
            let path = [info.path.as_str()];
            total.with_label_values(&path).set(info.total_bytes as i64);
            let avail = info.total_bytes.saturating_sub(info.used_bytes);
            free.with_label_values(&path).set(avail as i64);
            chunks.with_label_values(&path).set(info.chunks as i64);
            damaged.with_label_values(&path).set(info.damaged as i64);
            marked.with_label_values(&path).set(info.marked_for_removal as i64);
            let counters = &disk.counters;
            let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            set_counter(&read.with_label_values(&path), load(&counters.read_bytes));
            set_counter(&written.with_label_values(&path), load(&counters.written_bytes));
            set_counter(&crc.with_label_values(&path), load(&counters.crc_errors));
            set_counter(&cached.with_label_values(&path), load(&counters.cached_read_bytes));
        }
    });
    let info = gauge_vec(
        "mfsha_build_info",
        "Always 1; the labels name this daemon's version.",
        &["daemon", "version"],
    );
    info.with_label_values(&["chunkserver", env!("CARGO_PKG_VERSION")]).set(1);
    exporter.register(&info);
    Arc::new(exporter)
}
