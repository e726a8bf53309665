use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TEST: Endpoint = Endpoint { what: "test", key: "test.http" };

/// Sends `request` and reads until the server closes; a connection the server reset (it
/// closed without reading what was sent) reads as what arrived before the reset.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut answer = Vec::new();
    if stream.write_all(request).await.is_ok() {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
        let read = read.await.expect("the server answers and closes");
        if let Err(e) = read {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn exporter_with_one_refreshed_gauge() -> (Arc<Exporter>, Arc<std::sync::atomic::AtomicI64>) {
    let source = Arc::new(std::sync::atomic::AtomicI64::new(7));
    let mut exporter = Exporter::new();
    let g = gauge("mfsha_test_value", "A test value.");
    exporter.register(&g);
    let from = source.clone();
    exporter.on_scrape(move || g.set(from.load(std::sync::atomic::Ordering::Relaxed)));
    (Arc::new(exporter), source)
}

#[tokio::test]
async fn metrics_are_refreshed_at_each_scrape_and_served_as_text() {
    let (exporter, source) = exporter_with_one_refreshed_gauge();
    let running = serve(TEST, "127.0.0.1:0".parse().unwrap(), metrics_routes(exporter), async {
        std::future::pending().await
    })
    .await
    .unwrap();
    let get = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let first = exchange(running.addr, get).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.contains("text/plain; version=0.0.4"), "{first}");
    assert!(first.contains("\nmfsha_test_value 7\n"), "{first}");
    source.store(11, std::sync::atomic::Ordering::Relaxed);
    let second = exchange(running.addr, get).await;
    assert!(second.contains("\nmfsha_test_value 11\n"), "{second}");
    let missing = exchange(running.addr, b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    running.task.abort();
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_and_the_server_goes_on() {
    let (exporter, _) = exporter_with_one_refreshed_gauge();
    let running = serve(TEST, "127.0.0.1:0".parse().unwrap(), metrics_routes(exporter), async {
        std::future::pending().await
    })
    .await
    .unwrap();
    let huge = format!("GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let answer = exchange(running.addr, huge.as_bytes()).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
    let garbage = exchange(running.addr, b"\x00\x01 not http at all\r\n\r\n").await;
    assert!(garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let ok = exchange(running.addr, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    running.task.abort();
}

#[tokio::test]
async fn a_client_that_never_finishes_its_head_is_dropped_at_the_head_timeout() {
    let (exporter, _) = exporter_with_one_refreshed_gauge();
    let running = serve(TEST, "127.0.0.1:0".parse().unwrap(), metrics_routes(exporter), async {
        std::future::pending().await
    })
    .await
    .unwrap();
    let mut slow = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(HEAD_TIMEOUT * 3, slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "still open after three head timeouts");
    let waited = started.elapsed();
    assert!(waited >= HEAD_TIMEOUT - Duration::from_millis(500), "closed early: {waited:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    running.task.abort();
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    let (exporter, _) = exporter_with_one_refreshed_gauge();
    let running = serve(TEST, "127.0.0.1:0".parse().unwrap(), metrics_routes(exporter), async {
        std::future::pending().await
    })
    .await
    .unwrap();
    // Idle connections that never send a head hold their slots (until the head timeout).
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(running.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = exchange(running.addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(refused, "", "a connection past the cap is closed without an answer");
    drop(idle);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = exchange(running.addr, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
        let answer = answer.await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slots never came back: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.task.abort();
}

#[tokio::test]
async fn a_port_in_use_is_an_error_naming_the_address_and_the_setting() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = serve(TEST, addr, Router::new(), async {}).await.err().expect("the port is taken");
    let text = err.to_string();
    assert!(text.contains(&addr.to_string()) && text.contains("test.http"), "{text}");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = serve(TEST, "127.0.0.1:0".parse().unwrap(), Router::new(), async move {
        let _ = rx.await;
    })
    .await
    .unwrap();
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running.task).await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(running.addr).await.is_err());
}

#[test]
fn a_mirrored_counter_follows_its_source_and_never_goes_back() {
    let c = counter("mfsha_test_total", "A test counter.");
    set_counter(&c, 5);
    set_counter(&c, 9);
    set_counter(&c, 3);
    assert_eq!(c.get(), 9);
}
