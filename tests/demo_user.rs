//! `mfsha demo` as a normal user (issue #4: "works as root; as a normal user where FUSE
//! permits"): the real demo runs as uid `nobody`, once where FUSE does not permit it (it must
//! fail at once, saying what is missing and what to do, with nothing left running) and once
//! where it does (the mount works for that user and Ctrl-C stops everything).
//!
//! Whether FUSE permits a normal user is decided by /dev/fuse's mode, which differs between
//! machines, so neither test depends on the host's: each runs the demo in a private mount
//! namespace where /dev/fuse is replaced by a fresh node (same device, 10:229) with the mode the
//! test needs. The node lives on a tmpfs mounted only in that namespace, so a `nodev` /tmp
//! cannot get in the way and nothing is left on disk. The namespace is held by a small process
//! (`unshare ... sh`, then `cat` until the test closes its stdin); every command of the test
//! that must see the namespace's mounts enters it with `nsenter`.
//!
//! Needs root (to make the node, the namespace and to switch to `nobody`) and util-linux's
//! unshare, nsenter, setpriv, mount and mknod, plus fusermount3 (package fuse3) for the mount;
//! without them the tests fail naming what is missing.

use crate::demo::{daemon_pids, master_address, wait_for_banner, DAEMONS, STANDARD_PORTS};
use crate::util::{mfsha_bin, signal, tail, Daemon};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// How long the demo may take to give up when FUSE does not permit it (it starts nothing).
const FAIL_LIMIT: Duration = Duration::from_secs(30);
const STOP_LIMIT: Duration = Duration::from_secs(60);

#[test]
fn demo_as_a_normal_user_without_fuse_access_fails_clearly() {
    let user = NormalUser::prepare(&["unshare", "nsenter", "setpriv", "mount", "mknod"]);
    let ns = FuseNamespace::new(&user.work.join("dev"), 0o600);
    let dir = user.work.join("demo");
    let mut demo = user.spawn(&ns, "demo", &["demo", dir.to_str().unwrap()]);
    let exit = demo.stop_after_signal(FAIL_LIMIT);
    let log = fs::read_to_string(&demo.log).unwrap();
    assert!(!exit.success(), "the demo should fail without access to /dev/fuse; it said:\n{log}");
    for words in [
        "/dev/fuse is not readable and writable by uid",
        &format!("uid {}", user.uid),
        "mode 0600",
        "mode 0666",
        "setuid-root fusermount3",
        "run as root",
    ] {
        assert!(log.contains(words), "the message should say {words:?}:\n{log}");
    }
    assert_eq!(log.lines().count(), 1, "one clear line, not a daemon's log tail:\n{log}");
    assert!(!dir.join("master.log").exists(), "no daemon may start before the FUSE check:\n{log}");
    let left = processes_mentioning(&user.work);
    assert!(left.is_empty(), "processes left running: {left:?}");
}

#[test]
fn demo_as_a_normal_user_works_where_fuse_permits() {
    let user =
        NormalUser::prepare(&["unshare", "nsenter", "setpriv", "mount", "mknod", "fusermount3"]);
    let ns = FuseNamespace::new(&user.work.join("dev"), 0o666);
    let dir = user.work.join("demo");
    let mnt = dir.join("mnt");
    // The demo takes the standard ports when they are free; the root demo test does too.
    let _ports = STANDARD_PORTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut demo = user.spawn(&ns, "demo", &["demo", dir.to_str().unwrap()]);
    let banner = wait_for_banner(&mut demo);
    let pids = daemon_pids(&banner);
    assert_eq!(pids.len(), DAEMONS, "masters, metalogger, chunkservers, mount:\n{banner}");
    for pid in &pids {
        assert_eq!(process_uid(*pid), user.uid, "daemon pid {pid} should run as nobody");
    }
    let mount = ns.mount_line(&mnt).unwrap_or_else(|| panic!("{} not mounted", mnt.display()));
    assert!(mount.contains(&format!("user_id={}", user.uid)), "a user mount: {mount}");
    assert!(!mount.contains("allow_other"), "no allow_other for a normal user: {mount}");
    assert!(mount.contains(" - fuse.mfsha "), "the type is fuse.mfsha: {mount}");

    // The user writes a file through the mount and reads the same bytes back.
    let data: Vec<u8> =
        (0..5_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let source = user.work.join("source.bin");
    fs::write(&source, &data).unwrap();
    fs::set_permissions(&source, fs::Permissions::from_mode(0o644)).unwrap();
    let file = mnt.join("round-trip.bin");
    user.run_ok(&ns, "/bin/cp", &[source.to_str().unwrap(), file.to_str().unwrap()]);
    let back = user.run_ok(&ns, "/bin/cat", &[file.to_str().unwrap()]).stdout;
    assert_eq!(back.len(), data.len(), "the size read back through the mount");
    assert_eq!(sha256(&back), sha256(&data), "the bytes read back through the mount");
    let master = master_address(&banner);
    let info = user.run_ok(&ns, &user.bin, &["fileinfo", "-H", &master, file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&info.stdout);
    let copies: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with("copy ")).collect();
    assert_eq!(copies.len(), 2, "goal 2: two copies of the one chunk:\n{text}");
    assert!(copies.iter().all(|c| c.contains("VALID")), "both copies valid:\n{text}");

    // The daemons are the processes that mention the user's directory (so the check below
    // that none is left is not vacuous); everything they wrote there belongs to the user.
    let mut running = processes_mentioning(&user.work);
    running.sort();
    let mut expected = pids.clone();
    expected.push(demo.pid().unwrap());
    expected.sort();
    assert_eq!(running, expected, "the demo and its daemons:\n{banner}");
    assert_owned_by(&dir, user.uid, &mnt);

    // Ctrl-C: a clean exit, the mount released, no process left.
    signal(demo.pid().unwrap(), libc::SIGINT);
    let exit = demo.stop_after_signal(STOP_LIMIT);
    assert!(exit.success(), "demo exited with {exit}; log:\n{}", tail(&demo.log, 40));
    assert_eq!(ns.mount_line(&mnt), None, "{} still mounted after the demo", mnt.display());
    let left = processes_mentioning(&user.work);
    assert!(left.is_empty(), "processes left after the demo stopped: {left:?}");
}

/// The unprivileged user the demo runs as, and a work directory it owns.
struct NormalUser {
    uid: u32,
    gid: u32,
    /// Owned by the user; the demo's DIR and the namespace's /dev node directory are in it.
    work: PathBuf,
    /// An `mfsha` the user can execute.
    bin: PathBuf,
    _tmp: tempfile::TempDir,
}

impl NormalUser {
    /// Checks the test's prerequisites (root, `tools` on PATH) and makes the work directory.
    fn prepare(tools: &[&str]) -> NormalUser {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "this test needs root: it makes a device node and a mount namespace and runs the \
             demo as nobody (run the system tests as root, as .ci/run does)"
        );
        let missing: Vec<&str> = tools.iter().copied().filter(|t| which(t).is_none()).collect();
        assert!(
            missing.is_empty(),
            "this test needs {missing:?} on PATH (Debian: util-linux, mount, coreutils, fuse3)"
        );
        let (uid, gid) = nobody();
        let tmp = tempfile::Builder::new().prefix("mfsha-demo-user-").tempdir().unwrap();
        // The user must reach its directory inside the (root-only) temporary one.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let work = tmp.path().join("user");
        fs::create_dir(&work).unwrap();
        std::os::unix::fs::chown(&work, Some(uid), Some(gid)).unwrap();
        let bin = executable_by(uid, gid, tmp.path());
        NormalUser { uid, gid, work, bin, _tmp: tmp }
    }

    /// `program ARGS` as the user inside the namespace.
    fn command(&self, ns: &FuseNamespace, program: &Path, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--target={}", ns.pid))
            .arg("--mount")
            .arg("--")
            .arg("setpriv")
            .args(as_user(self.uid, self.gid))
            .arg(program)
            .args(args)
            .env("HOME", &self.work)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null());
        command
    }

    /// Starts `mfsha ARGS` as the user in the namespace, its output in work/NAME.log.
    fn spawn(&self, ns: &FuseNamespace, name: &str, args: &[&str]) -> Daemon {
        let log = self.work.join(format!("{name}.log"));
        let out = fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = self
            .command(ns, &self.bin, args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nsenter for {name}: {e}"));
        Daemon { name: name.to_string(), child: Some(child), log }
    }

    /// Runs `program ARGS` as the user in the namespace; panics with its stderr if it fails.
    fn run_ok(&self, ns: &FuseNamespace, program: impl AsRef<Path>, args: &[&str]) -> Output {
        let program = program.as_ref();
        let out = self.command(ns, program, args).output().unwrap();
        assert!(
            out.status.success(),
            "{} {args:?} as uid {} failed ({}): {}",
            program.display(),
            self.uid,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// setpriv's arguments that switch to `uid`/`gid` with no supplementary groups.
fn as_user(uid: u32, gid: u32) -> [String; 3] {
    [format!("--reuid={uid}"), format!("--regid={gid}"), "--clear-groups".to_string()]
}

/// nobody's uid and primary gid.
fn nobody() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd.lines().find(|l| l.starts_with("nobody:"));
    let fields: Vec<&str> =
        line.expect("this test needs a user 'nobody' in /etc/passwd").split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// The `mfsha` under test if `uid` can execute it where it is; otherwise (a target dir the
/// user cannot traverse) a world-executable copy in `dir`.
fn executable_by(uid: u32, gid: u32, dir: &Path) -> PathBuf {
    let bin = mfsha_bin();
    let runs = |bin: &Path| {
        Command::new("setpriv")
            .args(as_user(uid, gid))
            .arg(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    if runs(&bin) {
        return bin;
    }
    let copy = dir.join("mfsha");
    fs::copy(&bin, &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(runs(&copy), "uid {uid} cannot run {} nor a copy at {}", bin.display(), copy.display());
    copy
}

/// A private mount namespace whose /dev/fuse is a fresh node with a chosen mode.
struct FuseNamespace {
    holder: Child,
    pid: u32,
}

impl FuseNamespace {
    /// The node is made on a tmpfs mounted at `node_dir` inside the namespace only.
    fn new(node_dir: &Path, mode: u32) -> FuseNamespace {
        const SCRIPT: &str = r#"set -e
mount -t tmpfs -o mode=0755,size=16k mfsha-test-dev "$NODE_DIR"
mknod "$NODE_DIR/fuse" c 10 229
chmod "$NODE_MODE" "$NODE_DIR/fuse"
mount --bind "$NODE_DIR/fuse" /dev/fuse
echo ready
exec cat >/dev/null"#;
        fs::create_dir(node_dir).unwrap();
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", SCRIPT])
            .env("NODE_DIR", node_dir)
            .env("NODE_MODE", format!("{mode:o}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run unshare: {e}"));
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        if line.trim() != "ready" {
            let mut err = String::new();
            holder.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("cannot set up the mount namespace with a mode {mode:o} /dev/fuse: {err}");
        }
        let pid = holder.id();
        let ns = FuseNamespace { holder, pid };
        let dev = ns.path("/dev/fuse");
        let meta = fs::metadata(&dev).unwrap();
        assert_eq!(meta.mode() & 0o7777, mode, "the namespace's {}", dev.display());
        ns
    }

    /// `path` as seen inside the namespace.
    fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid))
    }

    /// The namespace's mountinfo line of what is mounted on `path`, if anything is.
    fn mount_line(&self, path: &Path) -> Option<String> {
        let mountinfo = fs::read_to_string(format!("/proc/{}/mountinfo", self.pid)).unwrap();
        let wanted = path.to_str().unwrap();
        let line = mountinfo.lines().find(|l| l.split(' ').nth(4) == Some(wanted))?;
        Some(line.to_string())
    }
}

impl Drop for FuseNamespace {
    fn drop(&mut self) {
        // Closing its stdin ends `cat`; kill in case it is stuck before that.
        drop(self.holder.stdin.take());
        if let Err(e) = self.holder.kill().and_then(|_| self.holder.wait()) {
            eprintln!("cannot stop the namespace holder {}: {e}", self.pid);
        }
    }
}

/// Pids (other than this test's) whose command line mentions `dir`.
fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let wanted = dir.to_str().unwrap();
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process may exit between the listing and the read: then it mentions nothing.
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if pid != me && String::from_utf8_lossy(&cmdline).contains(wanted) {
            pids.push(pid);
        }
    }
    pids
}

/// The real uid of a running process.
fn process_uid(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Everything under `dir` (except `skip`) belongs to `uid`: the daemons wrote their data,
/// logs and configs there as the user.
fn assert_owned_by(dir: &Path, uid: u32, skip: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path == skip {
            continue;
        }
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.uid(), uid, "{} belongs to uid {}", path.display(), meta.uid());
        if meta.is_dir() {
            assert_owned_by(&path, uid, skip);
        }
    }
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}
