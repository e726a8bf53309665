//! The status page on the leader's HTTP port, loaded in a real headless Chromium from a
//! running appliance (two masters, the witness, three chunkservers, a FUSE mount): the DOM
//! must show the real chunkservers, the chunk matrix with the files' chunks, the nodes and
//! the mount; a follower's page must link to the leader's. A screenshot is saved.

use crate::ha::cluster::HaCluster;
use crate::metrics::http_get;
use crate::mount::{require_fuse, which, Mount};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Chromium as Debian installs it (`apt-get install chromium`), or `MFSHA_CHROMIUM`.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("MFSHA_CHROMIUM") {
        return path.into();
    }
    which("chromium").or_else(|| which("chromium-browser")).expect(
        "chromium is missing: the status page test needs a real browser \
         (Debian: apt-get install chromium; scripts/setup.sh installs it)",
    )
}

/// Chromium's command line for a headless run on a closed network, as root (see the
/// machine notes: without the background-networking flags it keeps dialling out).
fn browser(profile: &Path) -> Command {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,2200",
    ]);
    cmd.arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// The page's DOM after Chromium loaded and rendered `url`.
fn dump_dom(profile: &Path, url: &str) -> String {
    let out = browser(profile).arg("--dump-dom").arg(url).output().expect("run chromium");
    assert!(
        out.status.success(),
        "chromium --dump-dom {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the DOM is UTF-8")
}

fn screenshot(profile: &Path, url: &str, to: &Path) {
    let out = browser(profile)
        .arg(format!("--screenshot={}", to.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png =
        std::fs::read(to).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", to.display()));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} is no page screenshot",
        to.display()
    );
}

/// Where screenshots are kept after the test: beside the build, so CI can keep them.
fn screenshot_path() -> PathBuf {
    let dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let dir = dir.join("screenshots");
    std::fs::create_dir_all(&dir).expect("make the screenshot directory");
    dir.join("status-page.png")
}

/// The `<td>` of the chunk matrix for `goal` and `valid` copies, as a number.
fn matrix_cell(dom: &str, goal: usize, valid: usize) -> Option<u64> {
    let key = format!("data-goal=\"{goal}\" data-valid=\"{valid}\">");
    let at = dom.find(&key)? + key.len();
    dom[at..].split('<').next()?.trim().parse().ok()
}

#[test]
fn the_status_page_in_chromium_shows_the_nodes_servers_chunk_matrix_and_mounts() {
    require_fuse();
    let profile = tempfile::tempdir().unwrap();
    let _ = chromium();
    let cluster = HaCluster::start(3);
    let leader = cluster.wait_leader(Duration::from_secs(20));
    cluster.wait_chunkservers(3, Duration::from_secs(20));
    let masters = cluster.client_addrs();
    let mount = Mount::start_in(cluster.path(), "mnt", &masters, &[], &masters.replace(',', "+"));
    const FILES: usize = 5;
    for i in 0..FILES {
        std::fs::write(mount.path(&format!("f{i}")), vec![i as u8; 1000]).unwrap();
    }
    let url = format!("http://127.0.0.1:{}/", cluster.masters[leader].ports.http);
    // The engine counts copies every pass: wait until the page shows every chunk at goal 2.
    let deadline = Instant::now() + Duration::from_secs(30);
    let dom = loop {
        let dom = dump_dom(profile.path(), &url);
        if matrix_cell(&dom, 2, 2) == Some(FILES as u64) || Instant::now() > deadline {
            break dom;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(matrix_cell(&dom, 2, 2), Some(FILES as u64), "goal-2 chunks with 2 copies:\n{dom}");
    assert!(dom.contains("class=\"stable\""), "a full-goal cell is coloured stable");
    assert!(
        dom.contains("per second") && dom.contains("<td class=\"l\">create</td>"),
        "operations and their rates:\n{dom}"
    );
    for (port, _) in &cluster.chunkservers {
        assert!(dom.contains(&format!("127.0.0.1:{port}")), "chunkserver {port} missing:\n{dom}");
    }
    assert!(dom.contains("Chunkservers (3)"), "three chunkservers:\n{dom}");
    for id in [1, 2, 3] {
        assert!(dom.contains(&format!("<td class=\"l\">{id}</td>")), "node {id} missing:\n{dom}");
    }
    assert!(dom.contains("witness") && dom.contains("Mounts (1)"), "{dom}");
    let version = format!("/mnt (mfsha {})", env!("CARGO_PKG_VERSION"));
    assert!(dom.contains(&version), "the mount's point and version ({version}):\n{dom}");
    assert!(!dom.contains("follower-note"), "the leader's page is no follower's");
    // The same data as JSON under /api, as `mfsha status --chunks` etc. give it.
    let http = format!("127.0.0.1:{}", cluster.masters[leader].ports.http);
    let chunks: serde_json::Value = serde_json::from_str(&http_get(&http, "/api/chunks")).unwrap();
    assert_eq!(chunks["matrix"][2][2], FILES as u64, "{chunks}");
    assert_eq!(chunks["stable"], FILES as u64, "{chunks}");
    let servers: serde_json::Value =
        serde_json::from_str(&http_get(&http, "/api/servers")).unwrap();
    assert_eq!(servers.as_array().map(Vec::len), Some(3), "{servers}");
    let sessions: serde_json::Value =
        serde_json::from_str(&http_get(&http, "/api/sessions")).unwrap();
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");
    let status: serde_json::Value = serde_json::from_str(&http_get(&http, "/api/status")).unwrap();
    assert_eq!(status["role"], "leader");
    let shot = screenshot_path();
    screenshot(profile.path(), &url, &shot);
    eprintln!("status page screenshot: {}", shot.display());

    let follower = 1 - leader;
    let follower_url = format!("http://127.0.0.1:{}/", cluster.masters[follower].ports.http);
    let dom = dump_dom(profile.path(), &follower_url);
    assert!(dom.contains("follower-note"), "a follower's page says it does not lead:\n{dom}");
    // The leader's page as the follower's config names it (`peers: - http:`).
    let link = format!(
        "id=\"leader-link\" href=\"http://127.0.0.1:{}/\"",
        cluster.masters[leader].ports.http
    );
    assert!(dom.contains(&link), "no link to the leader's page ({link}):\n{dom}");
    drop(mount);
}

/// Whether `addr` answers `GET /` with 200: only masters serve the page.
fn serves_page(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return false };
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if write!(stream, "GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// The demo's status pages in Chromium: of the daemons the banner lists, the two masters
/// serve a page; the leader's shows the demo's three chunkservers, its three nodes and its
/// chunk matrix, the follower's links to it. Called by the demo test.
pub fn check_demo_pages(banner: &str) {
    let profile = tempfile::tempdir().unwrap();
    let line = banner.lines().find_map(|l| l.trim().strip_prefix("Prometheus metrics: "));
    let urls: Vec<&str> = line.expect("the banner names the metrics").split(' ').collect();
    let addrs: Vec<&str> = urls
        .iter()
        .filter_map(|u| u.trim_start_matches("http://").split_once('/').map(|(a, _)| a))
        .filter(|a| serves_page(a))
        .collect();
    assert_eq!(addrs.len(), 2, "two masters serve a status page: {urls:?}");
    let pages: Vec<(String, String)> = addrs
        .iter()
        .map(|a| (a.to_string(), dump_dom(profile.path(), &format!("http://{a}/"))))
        .collect();
    let (leaders, followers): (Vec<_>, Vec<_>) =
        pages.iter().partition(|(_, dom)| !dom.contains("follower-note"));
    assert_eq!((leaders.len(), followers.len()), (1, 1), "one leader's page, one follower's");
    let (leader, dom) = leaders[0];
    assert!(dom.contains("Chunkservers (3)"), "the demo's three chunkservers:\n{dom}");
    for id in [1, 2, 3] {
        assert!(dom.contains(&format!("<td class=\"l\">{id}</td>")), "node {id}:\n{dom}");
    }
    assert!(
        dom.contains("data-goal=\"2\""),
        "the chunk matrix has the demo's goal-2 chunks:\n{dom}"
    );
    assert!(followers[0].1.contains("leader-link"), "the follower links to the leader");
    let shot = screenshot_path().with_file_name("demo-status-page.png");
    screenshot(profile.path(), &format!("http://{leader}/"), &shot);
    eprintln!("demo status page screenshot: {}", shot.display());
}
