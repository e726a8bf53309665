//! The systemd integration (issue 11): every unit in `systemd/` passes `systemd-analyze
//! verify`, and each daemon, started as systemd starts a `Type=notify` service with a watchdog,
//! says READY=1 only once its ports accept connections, then sends WATCHDOG=1 every half
//! watchdog interval, stops when frozen (SIGSTOP), resumes when thawed and says STOPPING=1 on
//! SIGTERM.
//!
//! The test plays systemd's part: it binds the `NOTIFY_SOCKET` datagram socket, sets
//! `WATCHDOG_USEC`, and sets `WATCHDOG_PID` to the daemon's pid (a shell that `exec`s the
//! daemon knows its own pid before the daemon exists), as systemd does.

use crate::util::{bootstrap, free_port, tail, Cluster, Daemon};
use std::fs;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The watchdog interval the tests give (systemd's `WatchdogSec=`); pings are due every half.
const WATCHDOG: Duration = Duration::from_secs(2);
/// How long the tests watch the pings of a running daemon.
const OBSERVE: Duration = Duration::from_secs(6);

/// Panics naming what is missing and how to get it, unless `program` runs.
fn require(program: &str, package: &str) {
    let found = Command::new(program).arg("--version").stdout(Stdio::null()).status();
    if !matches!(found, Ok(status) if status.success()) {
        panic!("{program} is missing or does not run: install Debian's {package} package (scripts/setup.sh does)");
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Every unit file in `systemd/`.
fn unit_files() -> Vec<PathBuf> {
    let dir = repo_root().join("systemd");
    let mut units: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service" || e == "mount"))
        .collect();
    units.sort();
    units
}

/// An image root for `systemd-analyze verify --root`: the host's systemd units (the targets
/// ours depend on), the built `mfsha` as /usr/bin/mfsha (verify checks that ExecStart is an
/// executable) and `units` in /etc/systemd/system, unchanged.
fn verify_root(dir: &Path, units: &[PathBuf]) -> PathBuf {
    let host_units = Path::new("/usr/lib/systemd/system");
    if !host_units.join("sysinit.target").exists() {
        panic!(
            "{} has no sysinit.target: install Debian's systemd package (scripts/setup.sh does)",
            host_units.display()
        );
    }
    let root = dir.join("root");
    fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(host_units)
        .arg(root.join("usr/lib/systemd/"))
        .status()
        .expect("run cp");
    assert!(copied.success(), "copying {} failed", host_units.display());
    let bin = root.join("usr/bin/mfsha");
    if fs::hard_link(crate::util::mfsha_bin(), &bin).is_err() {
        fs::copy(crate::util::mfsha_bin(), &bin).expect("copy the mfsha binary into the root");
    }
    // ExecReload of the master: kill(1), from procps.
    let kill = Path::new("/usr/bin/kill");
    assert!(kill.exists(), "/usr/bin/kill is missing: install Debian's procps package");
    fs::copy(kill, root.join("usr/bin/kill")).expect("copy kill into the root");
    for unit in units {
        fs::copy(unit, root.join("etc/systemd/system").join(unit.file_name().unwrap())).unwrap();
    }
    root
}

/// What `systemd-analyze verify` says about `/etc/systemd/system/NAME` in `root`: its exit
/// status and its complaints (warnings such as unknown keys leave the status 0).
fn verify(root: &Path, name: &str) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(format!("/etc/systemd/system/{name}"))
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), said.trim().to_string())
}

#[test]
fn units_pass_systemd_analyze_verify() {
    require("systemd-analyze", "systemd");
    let units = unit_files();
    let names: Vec<String> =
        units.iter().map(|u| u.file_name().unwrap().to_string_lossy().to_string()).collect();
    for daemon in ["mfsha-master.service", "mfsha-chunkserver.service", "mfsha-logger.service"] {
        assert!(names.iter().any(|n| n == daemon), "systemd/ has no {daemon}: {names:?}");
    }
    assert!(names.iter().any(|n| n.ends_with(".mount")), "systemd/ has no mount unit: {names:?}");
    let dir = tempfile::Builder::new().prefix("mfsha-units-").tempdir().unwrap();
    let root = verify_root(dir.path(), &units);
    for name in &names {
        let (ok, said) = verify(&root, name);
        assert!(ok && said.is_empty(), "systemd-analyze verify {name}: ok={ok}:\n{said}");
    }
    // The hardening stays where it is: systemd's own exposure score (0 best, 10 worst) at
    // most 3.0 ("OK") for every daemon.
    for name in names.iter().filter(|n| n.ends_with(".service")) {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=30", "--no-pager"])
            .arg(format!("--root={}", root.display()))
            .arg(format!("/etc/systemd/system/{name}"))
            .output()
            .expect("run systemd-analyze security");
        let said = String::from_utf8_lossy(&out.stdout);
        let score = said.lines().find(|l| l.contains("Overall exposure level")).unwrap_or("");
        assert!(out.status.success(), "{name} is exposed more than 3.0: {score}\n{said}");
    }
    // The check itself catches a bad unit: a misspelt key, and a missing binary.
    let broken = root.join("etc/systemd/system/broken.service");
    let master = fs::read_to_string(repo_root().join("systemd/mfsha-master.service")).unwrap();
    fs::write(&broken, master.replace("WatchdogSec=", "WatchdogSecs=")).unwrap();
    let (_, said) = verify(&root, "broken.service");
    assert!(said.contains("WatchdogSecs"), "verify missed a misspelt key: {said:?}");
    fs::remove_file(root.join("usr/bin/mfsha")).unwrap();
    let (ok, said) = verify(&root, "mfsha-master.service");
    assert!(!ok && said.contains("/usr/bin/mfsha"), "verify missed a missing binary: {said:?}");
}

/// The test's end of `NOTIFY_SOCKET`.
struct Notify {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Notify {
    fn bind(dir: &Path, name: &str) -> Notify {
        let path = dir.join(format!("{name}.notify"));
        let socket = UnixDatagram::bind(&path)
            .unwrap_or_else(|e| panic!("cannot bind the notify socket {}: {e}", path.display()));
        Notify { socket, path }
    }

    /// The next datagram (one line per state, trimmed) and when it came, within `timeout`.
    fn next(&self, timeout: Duration) -> Option<(Instant, String)> {
        self.socket.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some((Instant::now(), String::from_utf8_lossy(&buf[..n]).trim().to_string())),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("reading the notify socket failed: {e}"),
        }
    }

    /// Every datagram within `window`, with its arrival time.
    fn during(&self, window: Duration) -> Vec<(Instant, String)> {
        let end = Instant::now() + window;
        let mut got = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(message) => got.push(message),
                None => break,
            }
        }
        got
    }
}

/// Starts `mfsha ARGS` as systemd starts a Type=notify service with `WatchdogSec=2s`.
fn spawn_notified(dir: &Path, name: &str, notify: &Notify, args: &[&str]) -> Daemon {
    let log = dir.join(format!("{name}.log"));
    let out = fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    // $$ is the shell's pid, which exec hands to mfsha.
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" "$@""#)
        .arg(crate::util::mfsha_bin())
        .args(args)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Daemon { name: name.to_string(), child: Some(child), log }
}

/// The whole systemd conversation with one daemon whose `ports` must accept connections by
/// the time it says READY=1.
fn check_notifications(daemon: &mut Daemon, notify: &Notify, ports: &[u16]) {
    let (name, log) = (daemon.name.clone(), daemon.log.clone());
    let said = |what: &str| format!("{what}; {name} log:\n{}", tail(&log, 30));
    let (_, first) = notify
        .next(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{}", said("no READY=1 within 60 s")));
    // Checked at once: a daemon that said READY before binding would refuse here.
    for port in ports {
        if let Err(e) = TcpStream::connect(("127.0.0.1", *port)) {
            panic!("{}", said(&format!("READY=1 came but port {port} refuses connections ({e})")));
        }
    }
    assert_eq!(first, "READY=1", "{}", said("the first notification is not READY=1"));

    let pings = notify.during(OBSERVE);
    let period = WATCHDOG / 2;
    assert!(
        pings.iter().all(|(_, m)| m == "WATCHDOG=1"),
        "{}",
        said(&format!("unexpected notifications {pings:?}"))
    );
    let expected = (OBSERVE.as_millis() / period.as_millis()) as usize;
    assert!(
        (expected - 2..=expected + 1).contains(&pings.len()),
        "{}",
        said(&format!(
            "{} WATCHDOG=1 in {OBSERVE:?}, expected about {expected} (one per {period:?})",
            pings.len()
        ))
    );
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let longest = gaps.iter().max().copied().unwrap_or_default();
    assert!(
        longest < WATCHDOG,
        "{}",
        said(&format!(
            "a {longest:?} gap between pings: systemd would have killed it; gaps {gaps:?}"
        ))
    );
    let mut sorted = gaps.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    assert!(
        median > period * 7 / 10 && median < period * 13 / 10,
        "{}",
        said(&format!("pings every {median:?} (median), expected about {period:?}; gaps {gaps:?}"))
    );

    let pid = daemon.pid().expect("daemon running");
    crate::util::signal(pid, libc::SIGSTOP);
    let thaw = Thaw(pid);
    std::thread::sleep(Duration::from_millis(100));
    let _sent_before_the_stop = notify.during(Duration::from_millis(20));
    let frozen = notify.during(WATCHDOG * 2);
    assert!(frozen.is_empty(), "{}", said(&format!("a stopped daemon notified {frozen:?}")));
    drop(thaw);
    let resumed = notify.next(WATCHDOG);
    assert!(
        matches!(&resumed, Some((_, m)) if m == "WATCHDOG=1"),
        "{}",
        said(&format!("after SIGCONT: {resumed:?}, expected WATCHDOG=1 within {WATCHDOG:?}"))
    );

    crate::util::signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut stopping = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match notify.next(left) {
            Some((_, m)) if m == "STOPPING=1" => {
                stopping = true;
                break;
            }
            Some((_, m)) if m == "WATCHDOG=1" => {}
            Some((_, m)) => panic!("{}", said(&format!("unexpected {m:?} after SIGTERM"))),
            None => break,
        }
    }
    assert!(stopping, "{}", said("no STOPPING=1 within 15 s of SIGTERM"));
    let status = daemon.stop_after_signal(Duration::from_secs(30));
    assert!(status.success(), "{}", said(&format!("exited with {status} after SIGTERM")));
}

/// SIGCONT on drop, so a failing assertion never leaves a frozen daemon behind.
struct Thaw(u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of our own child; no memory is touched.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

#[test]
fn master_notifies_ready_after_binding_and_feeds_the_watchdog() {
    let cluster = Cluster::new();
    let config = cluster.write_master_config();
    bootstrap(cluster.path(), &config);
    let notify = Notify::bind(cluster.path(), "master");
    let args = ["master", "-c", config.to_str().unwrap()];
    let mut master = spawn_notified(cluster.path(), "master", &notify, &args);
    let p = cluster.ports;
    check_notifications(&mut master, &notify, &[p.client, p.chunkserver, p.logger]);
}

#[test]
fn chunkserver_notifies_ready_after_binding_and_feeds_the_watchdog() {
    let dir = tempfile::Builder::new().prefix("mfsha-test-").tempdir().unwrap();
    let disk = dir.path().join("disk0");
    fs::create_dir_all(&disk).unwrap();
    let port = free_port();
    // No master runs: the chunkserver serves its port and keeps trying the master meanwhile.
    let yaml = format!(
        "data_dirs:\n  - {}\nmaster: 127.0.0.1:{}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:0\n",
        disk.display(),
        free_port()
    );
    let config = dir.path().join("chunkserver.yaml");
    fs::write(&config, yaml).unwrap();
    let notify = Notify::bind(dir.path(), "chunkserver");
    let args = ["chunkserver", "-c", config.to_str().unwrap()];
    let mut chunkserver = spawn_notified(dir.path(), "chunkserver", &notify, &args);
    check_notifications(&mut chunkserver, &notify, &[port]);
}

#[test]
fn logger_with_witness_notifies_ready_after_binding_and_feeds_the_watchdog() {
    let dir = tempfile::Builder::new().prefix("mfsha-test-").tempdir().unwrap();
    let peer = free_port();
    // The masters are not running: the witness starts its node and waits for them.
    let yaml = format!(
        "name: logger1\ndata_dir: {data}\nmasters: [\"127.0.0.1:{m}\"]\nhttp: 127.0.0.1:0\nwitness:\n  node_id: 3\n  cluster_id: test\n  listen: 127.0.0.1:{peer}\n  peers:\n    - {{id: 1, addr: \"127.0.0.1:{p1}\"}}\n    - {{id: 2, addr: \"127.0.0.1:{p2}\"}}\n",
        data = dir.path().join("logger").display(),
        m = free_port(),
        p1 = free_port(),
        p2 = free_port(),
    );
    let config = dir.path().join("logger.yaml");
    fs::write(&config, yaml).unwrap();
    let notify = Notify::bind(dir.path(), "logger");
    let args = ["logger", "-c", config.to_str().unwrap()];
    let mut logger = spawn_notified(dir.path(), "logger", &notify, &args);
    check_notifications(&mut logger, &notify, &[peer]);
}

/// The fstab line docs/install.md gives, through systemd's own fstab generator: a network
/// mount (`_netdev`) of type mfsha, which systemd orders after the network and before
/// remote-fs.target, and whose unit verifies clean.
#[test]
fn fstab_line_in_the_docs_makes_a_network_mount() {
    let generator = Path::new("/usr/lib/systemd/system-generators/systemd-fstab-generator");
    if !generator.exists() {
        panic!(
            "{} is missing: install Debian's systemd package (scripts/setup.sh does)",
            generator.display()
        );
    }
    let doc = fs::read_to_string(repo_root().join("docs/install.md")).unwrap();
    let line = doc
        .lines()
        .find(|l| l.starts_with("mfsmaster:/") && l.contains(" mfsha "))
        .expect("docs/install.md has an fstab line for mfsha");
    assert!(line.contains("_netdev"), "the fstab line lacks _netdev: {line}");
    let dir = tempfile::Builder::new().prefix("mfsha-fstab-").tempdir().unwrap();
    let fstab = dir.path().join("fstab");
    fs::write(&fstab, format!("{line}\n")).unwrap();
    let out_dirs: Vec<PathBuf> =
        ["normal", "early", "late"].iter().map(|d| dir.path().join(d)).collect();
    for d in &out_dirs {
        fs::create_dir(d).unwrap();
    }
    let generated = Command::new(generator)
        .args(&out_dirs)
        .env("SYSTEMD_FSTAB", &fstab)
        .output()
        .expect("run systemd-fstab-generator");
    assert!(
        generated.status.success(),
        "systemd-fstab-generator failed: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let unit = out_dirs[0].join("mnt-mfsha.mount");
    let text = fs::read_to_string(&unit).unwrap_or_else(|e| panic!("no {}: {e}", unit.display()));
    assert!(text.contains("Type=mfsha") && text.contains("What=mfsmaster:/"), "generated:\n{text}");
    let remote = out_dirs[0].join("remote-fs.target.requires/mnt-mfsha.mount");
    assert!(
        fs::symlink_metadata(&remote).is_ok(),
        "not a network mount (no {}):\n{text}",
        remote.display()
    );

    let root = verify_root(dir.path(), &[unit]);
    let (ok, said) = verify(&root, "mnt-mfsha.mount");
    assert!(
        ok && said.is_empty(),
        "systemd-analyze verify of the generated unit: ok={ok}:\n{said}"
    );
}
