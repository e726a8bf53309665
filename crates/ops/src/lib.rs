/*!
The operator's HTTP endpoint of an mfsha daemon: `/metrics` (Prometheus text format) on every
daemon now; the master adds its status page routes (`/`, `/api/...`) to the same server.

It owns:

* [`bind`], [`Bound::serve`] and [`serve`] — the one HTTP server of the workspace: HTTP/1 only, bounded because the network
  is hostile (request head size and count of header lines, the time to send the head, the
  lifetime of a connection, the number of connections at once). A daemon hands it an
  [`axum::Router`]; routes of different concerns are merged into one router first.
* [`Exporter`] and [`metrics_routes`] — a `prometheus::Registry` plus the refresh hooks
  that copy state the daemon already keeps into gauges just before each scrape, rendered
  as text at `GET /metrics`.
* [`latency_histogram`] and [`set_counter`] — the shared conventions (buckets in seconds,
  counters mirrored from the daemons' own atomics).

It knows no daemon: each daemon crate decides what it exports. Adding routes to a daemon:

```ignore
let router = mfsha_ops::metrics_routes(exporter).merge(status_routes(service));
let running = mfsha_ops::serve(addr, router, shutdown).await?;
```
*/

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, Registry};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Connections served at once; more are closed at accept. Prometheus needs one per scraper.
pub const MAX_CONNECTIONS: usize = 32;
/// Longest request head (request line and headers); longer ones get 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines in one request.
pub const MAX_HEADERS: usize = 64;
/// Time a client has to send a request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection (keep-alive included): a client reading its answer a
/// byte at a time cannot hold a slot for longer.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Why the HTTP endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("cannot listen for HTTP ({what}) on {addr}: {cause} (is another daemon using the port? change {key} in the configuration)")]
    Bind { what: &'static str, key: &'static str, addr: SocketAddr, cause: std::io::Error },
}

/// Where the endpoint listens, for messages: what it is and which setting names its address.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// E.g. "master metrics and status page".
    pub what: &'static str,
    /// The configuration key (or mount option) holding the address, e.g. "listen.http".
    pub key: &'static str,
}

/// A running HTTP endpoint.
pub struct Running {
    /// The address bound (port 0 resolved).
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

/// A bound HTTP port, not yet serving: daemons bind every port before they open their
/// stores (a second daemon on the same ports fails at once), and serve once their state
/// exists.
pub struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
}

/// Binds `addr` for `endpoint`; the error names the address and the setting to change.
pub async fn bind(endpoint: Endpoint, addr: SocketAddr) -> Result<Bound, OpsError> {
    let bind_error = |cause| OpsError::Bind { what: endpoint.what, key: endpoint.key, addr, cause };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    tracing::info!(%addr, what = endpoint.what, "HTTP endpoint listening");
    Ok(Bound { listener, addr })
}

impl Bound {
    /// The address bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `router` until `shutdown` resolves, then stops accepting and drops every open
    /// connection (nothing served here is worth waiting for).
    pub fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Running {
        let task = tokio::spawn(accept_loop(self.listener, router, shutdown));
        Running { addr: self.addr, task }
    }
}

/// [`bind`] then [`Bound::serve`].
pub async fn serve(
    endpoint: Endpoint,
    addr: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, OpsError> {
    Ok(bind(endpoint, addr).await?.serve(router, shutdown))
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = MAX_CONNECTIONS, "refusing HTTP connection: too many open");
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        connections.spawn(async move {
            let connection = http1().serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP connection failed"),
                Err(_) => tracing::debug!(%peer, "HTTP connection closed at its lifetime limit"),
            }
            drop(slot);
        });
    }
    connections.shutdown().await;
}

fn http1() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES.max(8192))
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    builder
}

/// Copies state a daemon keeps anyway into metrics; run before every scrape.
pub type Refresh = Box<dyn Fn() + Send + Sync>;

/// A registry and what refreshes it before a scrape.
pub struct Exporter {
    registry: Registry,
    refresh: Vec<Refresh>,
    /// One scrape at a time: a refresh may reset a labelled gauge before filling it again.
    scraping: std::sync::Mutex<()>,
}

impl Default for Exporter {
    fn default() -> Self {
        Exporter::new()
    }
}

impl Exporter {
    pub fn new() -> Exporter {
        Exporter { registry: Registry::new(), refresh: Vec::new(), scraping: Default::default() }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers `collector`. A second metric of the same name is a programming error.
    pub fn register<C: prometheus::core::Collector + Clone + 'static>(&self, collector: &C) {
        if let Err(e) = self.registry.register(Box::new(collector.clone())) {
            panic!("a metric was registered twice or is malformed: {e}");
        }
    }

    /// Adds a refresh hook, run before each scrape in the order added.
    pub fn on_scrape(&mut self, refresh: impl Fn() + Send + Sync + 'static) {
        self.refresh.push(Box::new(refresh));
    }

    /// The text format of every metric, refreshed now.
    pub fn render(&self) -> Result<String, String> {
        let _one_at_a_time = self.scraping.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for refresh in &self.refresh {
            refresh();
        }
        let families = self.registry.gather();
        let mut text = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&families, &mut text)
            .map_err(|e| format!("encoding the metrics failed: {e}"))?;
        String::from_utf8(text).map_err(|e| format!("the metrics are not UTF-8: {e}"))
    }
}

/// `GET /metrics`: the exporter's metrics in Prometheus text format.
pub fn metrics_routes(exporter: Arc<Exporter>) -> Router {
    Router::new().route("/metrics", get(move || render(exporter.clone())))
}

async fn render(exporter: Arc<Exporter>) -> Response {
    // Refreshing reads daemon state under its locks: off the async workers.
    let rendered = tokio::task::spawn_blocking(move || exporter.render()).await;
    match rendered {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Ok(Err(why)) => (StatusCode::INTERNAL_SERVER_ERROR, why).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("the scrape task failed: {e}"))
            .into_response(),
    }
}

/// Latency buckets in seconds: 50 µs to about 6.5 s, doubling.
pub fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_05, 2.0, 18).expect("valid bucket parameters")
}

/// A latency histogram in seconds.
pub fn latency_histogram(name: &str, help: &str) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(latency_buckets());
    Histogram::with_opts(opts).expect("a valid metric name")
}

/// A latency histogram in seconds with labels.
pub fn latency_histogram_vec(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(latency_buckets());
    HistogramVec::new(opts, labels).expect("a valid metric name and labels")
}

/// A gauge (no labels).
pub fn gauge(name: &str, help: &str) -> prometheus::IntGauge {
    prometheus::IntGauge::new(name, help).expect("a valid metric name")
}

/// A gauge with labels.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::IntGaugeVec {
    prometheus::IntGaugeVec::new(prometheus::Opts::new(name, help), labels)
        .expect("a valid metric name and labels")
}

/// A counter (no labels).
pub fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("a valid metric name")
}

/// A counter with labels.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::IntCounterVec {
    prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)
        .expect("a valid metric name and labels")
}

/// Mirrors a count the daemon keeps itself (an atomic that only grows) into `counter`.
pub fn set_counter(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

#[cfg(test)]
mod tests;
