//! Network namespaces for the VIP tests and the lab: a guard that deletes its namespace on
//! drop, veth pairs, a tokio runtime whose threads live in a namespace (so sockets opened by
//! its tasks are there), and a raw-socket capture of the frames an interface receives.
//!
//! Names are unique per process (`mfs<tag><pid>x<n>`) so a leftover from a killed run never
//! collides; [`sweep_leftovers`] deletes the namespaces of runs whose process is gone. A
//! missing prerequisite (not root, no `ip netns`) fails the test and says what is missing.

use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Once};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// Fails (never skips) unless the test can build namespaces.
pub fn require_lab_prerequisites() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the VIP tests need root (network namespaces, veth pairs, CAP_NET_ADMIN/CAP_NET_RAW); run the test command as root");
    let listed = Command::new("ip").args(["netns", "list"]).output();
    match listed {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`ip netns list` failed ({}): the VIP tests need iproute2 with netns support: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("cannot run `ip` ({e}): the VIP tests need iproute2 (`ip netns`)"),
    }
    SWEEP.call_once(sweep_leftovers);
}

/// Runs `ip` with `args`; panics with its stderr if it fails.
pub fn ip(args: &[&str]) -> String {
    let out = run("ip", args);
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} {}: {e}", args.join(" ")))
}

/// Deletes namespaces named by this module whose creating process no longer runs.
pub fn sweep_leftovers() {
    let listed = run("ip", &["netns", "list"]);
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = owner_pid(name) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let out = run("ip", &["netns", "del", name]);
            eprintln!("deleted leftover namespace {name} of dead process {pid}: {}", out.status);
        }
    }
    // Hosts files the lab wrote for namespaces of dead runs.
    let Ok(dirs) = std::fs::read_dir("/etc/netns") else { return };
    for dir in dirs.flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        let dead = owner_pid(&name)
            .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
        if dead {
            if let Err(e) = std::fs::remove_dir_all(dir.path()) {
                eprintln!("cannot remove leftover {}: {e}", dir.path().display());
            }
        }
    }
}

/// The pid encoded in a name made by [`unique_name`].
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("mfs")?;
    let digits_start = rest.find(|c: char| c.is_ascii_digit())?;
    let (pid, _) = rest[digits_start..].split_once('x')?;
    pid.parse().ok()
}

/// A short name unique in this process, for namespaces and interfaces (at most 15 bytes for
/// interfaces: keep `tag` to 2 letters).
pub fn unique_name(tag: &str) -> String {
    format!("mfs{tag}{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A network namespace, deleted on drop (with everything in it: veths, addresses; processes
/// in it must be killed by their owners first).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        require_lab_prerequisites();
        let name = unique_name(tag);
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> args…`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// `ip netns exec <ns> program args…`, not checked.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// The addresses (`a.b.c.d/len`) on `dev` in this namespace.
    pub fn addresses(&self, dev: &str) -> Vec<String> {
        let out = self.ip(&["-o", "addr", "show", "dev", dev]);
        out.lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                words.find(|w| *w == "inet" || *w == "inet6")?;
                words.next().map(str::to_string)
            })
            .collect()
    }

    pub fn has_address(&self, dev: &str, address: &str) -> bool {
        self.addresses(dev).iter().any(|a| a == address)
    }

    /// The MAC of `dev` in this namespace.
    pub fn mac(&self, dev: &str) -> [u8; 6] {
        let out = self.ip(&["-o", "link", "show", "dev", dev]);
        let text = out
            .split("link/ether ")
            .nth(1)
            .expect("an ethernet link")
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        parse_mac(&text)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = run("ip", &["netns", "del", &self.name]);
        if !out.status.success() {
            eprintln!(
                "cannot delete namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

pub fn parse_mac(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text.split(':').map(|b| u8::from_str_radix(b, 16).expect("hex")).collect();
    bytes.try_into().expect("6 bytes")
}

pub fn show_mac(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A veth pair: `a_dev` in `a`, `b_dev` in `b`, both up.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    a.ip(&["link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", &b.name]);
    a.ip(&["link", "set", a_dev, "up"]);
    b.ip(&["link", "set", b_dev, "up"]);
}

/// Moves the calling thread into namespace `name` (threads it creates later follow it).
pub fn enter(name: &str) {
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    // SAFETY: a valid namespace descriptor; setns affects only this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns into {name}: {}", std::io::Error::last_os_error());
}

/// A tokio runtime whose threads are in a namespace: tasks it runs open their sockets there.
pub struct NsRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsRuntime {
    pub fn new(ns: &Netns) -> NsRuntime {
        let name = ns.name.clone();
        let (handle_tx, handle_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            enter(&name);
            // Built here, so its worker and driver threads are created inside the namespace.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime");
            handle_tx.send(runtime.handle().clone()).unwrap();
            runtime.block_on(async {
                let _ = stopped.await;
            });
        });
        let handle = handle_rx.recv().expect("the namespace thread started");
        NsRuntime { handle, stop: Some(stop), thread: Some(thread) }
    }

    /// Runs `future` on the namespace's worker and waits for its output.
    pub fn run<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().expect("the task finished")
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A frame seen by a [`Capture`], with when.
#[derive(Clone, Debug)]
pub struct Frame {
    pub at: Instant,
    pub bytes: Vec<u8>,
}

/// An ARP packet as parsed from a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: [u8; 4],
    pub target_mac: [u8; 6],
    pub target_ip: [u8; 4],
}

impl Frame {
    pub fn arp(&self) -> Option<Arp> {
        let b = &self.bytes;
        if b.len() < 42 || b[12..14] != [0x08, 0x06] {
            return None;
        }
        Some(Arp {
            op: u16::from_be_bytes([b[20], b[21]]),
            sender_mac: b[22..28].try_into().unwrap(),
            sender_ip: b[28..32].try_into().unwrap(),
            target_mac: b[32..38].try_into().unwrap(),
            target_ip: b[38..42].try_into().unwrap(),
        })
    }

    /// (target, override flag, target link-layer address) of an ICMPv6 neighbour advertisement.
    pub fn neighbour_advert(&self) -> Option<([u8; 16], bool, Option<[u8; 6]>)> {
        let b = &self.bytes;
        if b.len() < 14 + 40 + 24 || b[12..14] != [0x86, 0xdd] || b[20] != 58 || b[54] != 136 {
            return None;
        }
        let target: [u8; 16] = b[62..78].try_into().unwrap();
        let override_flag = b[58] & 0x20 != 0;
        let lladdr = (b.len() >= 86 && b[78] == 2).then(|| b[80..86].try_into().unwrap());
        Some((target, override_flag, lladdr))
    }
}

type Frames = std::sync::Mutex<Vec<Frame>>;

/// Frames arriving at an interface of a namespace, collected on a thread of their own.
pub struct Capture {
    frames: std::sync::Arc<Frames>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing on `dev` in `ns`; returns once the socket is bound.
    pub fn start(ns: &Netns, dev: &str) -> Capture {
        let frames = std::sync::Arc::new(Frames::default());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let (name, dev) = (ns.name.clone(), dev.to_string());
            let (frames, stop) = (frames.clone(), stop.clone());
            std::thread::spawn(move || {
                enter(&name);
                let fd = open_capture(&dev);
                ready_tx.send(()).unwrap();
                let mut buffer = vec![0u8; 2048];
                while !stop.load(Ordering::Acquire) {
                    // SAFETY: buffer outlives the call; fd is a bound packet socket.
                    let n = unsafe {
                        libc::recv(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0)
                    };
                    if n > 0 {
                        let frame =
                            Frame { at: Instant::now(), bytes: buffer[..n as usize].to_vec() };
                        frames.lock().unwrap().push(frame);
                    }
                }
            })
        };
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("capture socket bound");
        Capture { frames, stop, thread: Some(thread) }
    }

    /// Everything captured so far.
    pub fn frames(&self) -> Vec<Frame> {
        self.frames.lock().unwrap().clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A packet socket receiving every protocol on `dev`, with a 50 ms receive timeout.
fn open_capture(dev: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2), checked.
    let fd = unsafe {
        libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(all))
    };
    assert!(fd >= 0, "capture socket: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptor owned here.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let cname = std::ffi::CString::new(dev).unwrap();
    // SAFETY: a valid C string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    assert!(index > 0, "no interface {dev} to capture on");
    // SAFETY: zeroed sockaddr_ll is valid; fields set below.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = all;
    address.sll_ifindex = index as i32;
    // SAFETY: address outlives the call.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&address as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind capture socket: {}", std::io::Error::last_os_error());
    let timeout = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
    // SAFETY: timeout outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    assert_eq!(rc, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
    fd
}

/// Polls `condition` every 10 ms until it holds or `limit` passes; how long it took.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if condition() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connects to `addr` over TCP from namespace `ns` (1 s timeout).
pub fn connect_from(ns: &Netns, addr: std::net::SocketAddr) -> std::io::Result<()> {
    let name = ns.name.clone();
    let thread = std::thread::spawn(move || {
        enter(&name);
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map(drop)
    });
    thread.join().expect("connect thread")
}
