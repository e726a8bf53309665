//! The master's status page and its JSON on the HTTP port (beside `/metrics`): `/` is the
//! page ([`crate::page`]), `/api/status` the whole [`ClusterStatus`], and `/api/servers`,
//! `/api/disks`, `/api/chunks`, `/api/sessions`, `/api/long-work` the same rows as
//! `mfsha status --servers` and the others ([`mfsha_proto::views`]).

use crate::page::{self, PageExtras};
use crate::server::Service;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mfsha_proto::client::ClusterStatus;
use mfsha_proto::views;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the page needs beside the service: where the other masters' pages are.
#[derive(Debug, Clone, Default)]
pub struct PageLinks {
    /// This master's HTTP port (the default for another master's page).
    pub http_port: u16,
    /// Pages the configuration names (`peers: - http:`), by node id.
    pub configured: BTreeMap<u64, String>,
}

impl PageLinks {
    /// The page of master `leader`, whose client address is `client`.
    fn page_of(&self, leader: u64, client: Option<&str>) -> Option<String> {
        match self.configured.get(&leader) {
            Some(addr) => Some(format!("http://{addr}/")),
            None => page::leader_page(client, self.http_port),
        }
    }
}

/// The operation counts at the last page load, for the rates the next load shows.
#[derive(Debug, Default)]
struct Rates(parking_lot::Mutex<Option<(std::time::Instant, BTreeMap<String, u64>)>>);

impl Rates {
    /// Each operation's count and its rate since the last call.
    fn sample(&self, counts: Vec<(String, u64)>) -> Vec<(String, u64, Option<f64>)> {
        let now = std::time::Instant::now();
        let mut last = self.0.lock();
        let rate = |name: &str, count: u64| {
            let (then, before) = last.as_ref()?;
            let secs = now.duration_since(*then).as_secs_f64();
            let before = before.get(name).copied().unwrap_or(0);
            (secs > 0.0).then(|| count.saturating_sub(before) as f64 / secs)
        };
        let rows = counts.iter().map(|(n, c)| (n.clone(), *c, rate(n, *c))).collect();
        *last = Some((now, counts.into_iter().collect()));
        rows
    }
}

/// The page's and the API's routes.
pub fn routes(service: Arc<Service>, links: PageLinks) -> Router {
    let links = Arc::new((links, Rates::default()));
    let (s, l) = (service.clone(), links);
    let api = |f: fn(&ClusterStatus) -> serde_json::Value| {
        let s = service.clone();
        get(move || async move { Json(f(&status(&s).await)) })
    };
    Router::new()
        .route("/", get(move || page_html(s.clone(), l.clone())))
        .route("/api/status", api(json::<ClusterStatus>))
        .route("/api/servers", api(|st| json(&views::servers(st))))
        .route("/api/disks", api(|st| json(&views::disks(st))))
        .route("/api/chunks", api(|st| json(&views::chunks(st))))
        .route("/api/sessions", api(|st| json(&views::sessions(st))))
        .route("/api/long-work", api(|st| json(&st.long_work)))
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    // Serialising plain data structs cannot fail.
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// The status, built off the async workers (it reads state under locks).
async fn status(service: &Arc<Service>) -> ClusterStatus {
    let service = service.clone();
    let built =
        tokio::task::spawn_blocking(move || crate::server::status::cluster_status(&service));
    built.await.unwrap_or_default()
}

async fn page_html(service: Arc<Service>, links: Arc<(PageLinks, Rates)>) -> Response {
    let status = status(&service).await;
    let hint = service.leadership.hint();
    let (links, rates) = (&links.0, &links.1);
    let extras = PageExtras {
        leader_page: links.page_of(status.leader_id, hint.client.as_deref()),
        operations: rates.sample(service.client_metrics.operations()),
        now_unix_ms: now_unix_ms(),
    };
    let html = page::render(&status, &extras);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

fn now_unix_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_the_counts_added_since_the_last_load_per_second() {
        let rates = Rates::default();
        let first = rates.sample(vec![("create".into(), 10)]);
        assert_eq!(first, vec![("create".to_string(), 10, None)], "no rate the first time");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let second = rates.sample(vec![("create".into(), 20), ("lookup".into(), 3)]);
        let create = second[0].2.expect("a rate the second time");
        // 10 more in at least 50 ms: at most 200 per second.
        assert!(create > 0.0 && create <= 200.0, "{create}");
        assert!(second[1].2.is_some_and(|r| r > 0.0), "an operation new since the last load");
    }
}
