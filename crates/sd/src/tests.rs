//! The watchdog against a notification socket of our own, as systemd would listen on it.
//! One test only: it sets the process's environment, which other tests would share.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every datagram waiting on the socket now.
fn drain(socket: &UnixDatagram) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return got,
            Err(e) => panic!("reading the notification socket failed: {e}"),
        }
    }
}

/// Waits until the probe has been asked `n` times (the rounds before it have sent).
async fn wait_rounds(rounds: &AtomicU32, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while rounds.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "the watchdog stopped asking its probe");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_watchdog_pings_only_while_the_probe_says_alive() {
    let dir = std::env::temp_dir().join(format!("mfsha-sd-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify");
    let _stale = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_nonblocking(true).unwrap();
    std::env::set_var("NOTIFY_SOCKET", &path);
    std::env::set_var("WATCHDOG_USEC", "100000");
    std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    assert_eq!(super::watchdog_period(), Some(Duration::from_millis(50)));

    // Alive in rounds 0..=2, stuck in 3..=7, alive again from 8. A round's ping (if any) is
    // sent before the next round asks the probe, so counting asks orders everything.
    let rounds = Arc::new(AtomicU32::new(0));
    let counted = rounds.clone();
    let task =
        tokio::spawn(super::watchdog(move || match counted.fetch_add(1, Ordering::SeqCst) {
            3..=7 => Err("the test's probe says stuck".into()),
            _ => Ok(()),
        }));
    wait_rounds(&rounds, 4).await;
    assert_eq!(drain(&socket), ["WATCHDOG=1"; 3], "one ping per round while alive");
    wait_rounds(&rounds, 8).await;
    let stuck = drain(&socket);
    assert!(stuck.is_empty(), "pinged while the probe said stuck: {stuck:?}");
    wait_rounds(&rounds, 11).await;
    assert!(drain(&socket).len() >= 2, "pings did not resume once the probe recovered");
    task.abort();
    let _late = task.await;
    let _pings = drain(&socket);

    // Another process's watchdog (WATCHDOG_PID) is not ours to feed.
    std::env::set_var("WATCHDOG_PID", (std::process::id() + 1).to_string());
    assert_eq!(super::watchdog_period(), None);
    super::ready();
    assert_eq!(drain(&socket), ["READY=1"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
