//! The Debian package (issue 11): `scripts/deb.sh` builds a .deb from the binary cargo built
//! for this test run, lintian finds no errors in it, and it installs on this machine: files,
//! conffiles, the `mfsha` system user and its data directories, a working `mfsha --version`
//! and `mount.mfsha`, a bootstrap run as that user; then purge removes what it installed.
//!
//! It installs for real (as root), so it refuses to run where mfsha is already installed or
//! /etc/mfsha exists, and a guard purges the package (and removes the user it created) even
//! when an assertion fails: the machine is left as found.

use crate::util::mfsha_bin;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Runs `program ARGS`, panicking with what to install if it cannot be started.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("cannot run {program}: {e} (scripts/setup.sh installs what the tests need)")
    })
}

/// Runs and insists on success, showing its output otherwise.
fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn require(program: &str, package: &str) {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {program}")).output();
    if !matches!(found, Ok(out) if out.status.success()) {
        panic!("{program} is missing: install Debian's {package} package (scripts/setup.sh does)");
    }
}

fn installed(package: &str) -> bool {
    let out = run("dpkg-query", &["-W", "-f=${Status}", package]);
    String::from_utf8_lossy(&out.stdout).contains("install ok installed")
}

fn user_exists(name: &str) -> bool {
    run("getent", &["passwd", name]).status.success()
}

/// Purges the package and removes the user if this test made it, on every exit path.
struct Installed {
    made_user: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let purged = run("dpkg", &["--purge", "mfsha"]);
        if !purged.status.success() {
            eprintln!(
                "cleanup: dpkg --purge mfsha failed: {}",
                String::from_utf8_lossy(&purged.stderr)
            );
        }
        if self.made_user && user_exists("mfsha") {
            let removed = run("deluser", &["--system", "--quiet", "mfsha"]);
            if !removed.status.success() {
                eprintln!(
                    "cleanup: deluser mfsha failed: {}",
                    String::from_utf8_lossy(&removed.stderr)
                );
            }
        }
        if self.made_user && run("getent", &["group", "mfsha"]).status.success() {
            let removed = run("delgroup", &["--system", "--quiet", "mfsha"]);
            if !removed.status.success() {
                eprintln!(
                    "cleanup: delgroup mfsha failed: {}",
                    String::from_utf8_lossy(&removed.stderr)
                );
            }
        }
    }
}

/// Builds the .deb from the test's binary into `out` and returns its path.
fn build_deb(out: &Path) -> PathBuf {
    let script = repo_root().join("scripts/deb.sh");
    let built = Command::new(&script)
        .arg("--bin")
        .arg(mfsha_bin())
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/deb.sh");
    let stdout = String::from_utf8_lossy(&built.stdout);
    assert!(
        built.status.success(),
        "scripts/deb.sh failed ({}):\n{stdout}\n{}",
        built.status,
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = PathBuf::from(stdout.lines().last().expect("deb.sh printed the package path"));
    assert!(deb.is_file(), "deb.sh named {} but there is no such file", deb.display());
    deb
}

/// Lintian's complaints of severity error (`E:` lines); the warnings are printed.
fn lintian_errors(deb: &Path) -> Vec<String> {
    let out = run("lintian", &["--no-cfg", deb.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("lintian {}:\n{text}{}", deb.display(), String::from_utf8_lossy(&out.stderr));
    let errors: Vec<String> =
        text.lines().filter(|l| l.starts_with("E:")).map(String::from).collect();
    assert!(
        out.status.success() || !errors.is_empty(),
        "lintian failed without naming an error ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    errors
}

fn same_content(installed: &str, source: &Path) {
    let got = fs::read(installed).unwrap_or_else(|e| panic!("{installed} after install: {e}"));
    let want = fs::read(source).unwrap();
    assert!(got == want, "{installed} differs from {}", source.display());
}

fn check_files() {
    let repo = repo_root();
    let bin = fs::metadata("/usr/bin/mfsha").expect("/usr/bin/mfsha installed");
    assert!(bin.permissions().mode() & 0o111 != 0, "/usr/bin/mfsha is not executable");
    let link = fs::read_link("/sbin/mount.mfsha").expect("/sbin/mount.mfsha is a symlink");
    assert_eq!(link, Path::new("/usr/bin/mfsha"), "/sbin/mount.mfsha points elsewhere");
    for unit in ["mfsha-master.service", "mfsha-chunkserver.service", "mfsha-logger.service"] {
        same_content(&format!("/lib/systemd/system/{unit}"), &repo.join("systemd").join(unit));
    }
    same_content(
        "/usr/share/doc/mfsha/examples/mnt-mfsha.mount",
        &repo.join("systemd/mnt-mfsha.mount"),
    );
    let conffiles = run_ok("dpkg-query", &["-W", "-f=${Conffiles}", "mfsha"]);
    for conf in ["master", "chunkserver", "logger"] {
        let path = format!("/etc/mfsha/{conf}.yaml");
        same_content(&path, &repo.join("deploy").join(format!("{conf}.yaml")));
        assert!(conffiles.contains(&path), "{path} is not a conffile: {conffiles}");
    }
    for doc in ["copyright", "changelog.Debian.gz", "install.md", "README.md"] {
        let path = format!("/usr/share/doc/mfsha/{doc}");
        assert!(Path::new(&path).is_file(), "{path} missing");
    }
    let man = run_ok("man", &["-P", "cat", "mfsha"]);
    assert!(man.contains("mfsha chunkserver"), "the man page lacks the commands:\n{man}");
}

/// The system user and the data directories postinst makes.
fn check_user() {
    let entry = run_ok("getent", &["passwd", "mfsha"]);
    let fields: Vec<&str> = entry.trim().split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "mfsha is not a system user: {entry}");
    assert!(
        fields[6].ends_with("nologin") || fields[6].ends_with("false"),
        "mfsha can log in: {entry}"
    );
    for dir in ["/var/lib/mfsha/master", "/var/lib/mfsha/chunks", "/var/lib/mfsha/logger"] {
        let meta = fs::metadata(dir).unwrap_or_else(|e| panic!("{dir} after install: {e}"));
        assert!(meta.is_dir() && meta.uid() == uid, "{dir} is not a directory owned by mfsha");
        assert_eq!(meta.mode() & 0o777, 0o750, "{dir} mode");
    }
}

/// The installed binary runs: its version, the mount helper, and a bootstrap as user mfsha
/// into the directory the master's unit uses (what install.md tells operators to do).
fn check_runs(dir: &Path) {
    let version = run_ok("/usr/bin/mfsha", &["--version"]);
    assert_eq!(version.trim(), format!("mfsha {}", env!("CARGO_PKG_VERSION")));
    let helper = run("/sbin/mount.mfsha", &[]);
    let said = String::from_utf8_lossy(&helper.stderr);
    assert!(!helper.status.success() && said.contains("usage: mount.mfsha"), "mount.mfsha: {said}");
    let config = dir.join("master.yaml");
    let yaml = "node_id: 1\ncluster_id: package-test\ndata_dir: /var/lib/mfsha/master\n";
    fs::write(&config, yaml).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let config = config.to_str().unwrap();
    run_ok("runuser", &["-u", "mfsha", "--", "/usr/bin/mfsha", "bootstrap", "-c", config]);
    let stored = fs::read_dir("/var/lib/mfsha/master").unwrap().count();
    assert!(stored > 0, "bootstrap as mfsha left /var/lib/mfsha/master empty");
}

#[test]
fn deb_builds_passes_lintian_installs_and_purges() {
    for (program, package) in [
        ("dpkg-deb", "dpkg"),
        ("dpkg-shlibdeps", "dpkg-dev"),
        ("lintian", "lintian"),
        ("adduser", "adduser"),
        ("runuser", "util-linux"),
        ("man", "man-db"),
    ] {
        require(program, package);
    }
    assert!(is_root(), "the package test installs a .deb: run it as root (scripts/test.sh does)");
    assert!(
        !installed("mfsha")
            && !Path::new("/etc/mfsha").exists()
            && !Path::new("/var/lib/mfsha").exists(),
        "mfsha is installed here already (or /etc/mfsha or /var/lib/mfsha exists): this test \
         installs and purges the package, so remove them first (dpkg --purge mfsha)"
    );
    let dir = tempfile::Builder::new().prefix("mfsha-deb-").tempdir().unwrap();
    let deb = build_deb(dir.path());
    let errors = lintian_errors(&deb);
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));

    let guard = Installed { made_user: !user_exists("mfsha") };
    run_ok("dpkg", &["-i", deb.to_str().unwrap()]);
    check_files();
    check_user();
    check_runs(dir.path());

    run_ok("dpkg", &["--purge", "mfsha"]);
    assert!(!installed("mfsha"), "mfsha still installed after purge");
    for gone in [
        "/usr/bin/mfsha",
        "/sbin/mount.mfsha",
        "/lib/systemd/system/mfsha-master.service",
        "/etc/mfsha",
        "/var/lib/mfsha",
    ] {
        assert!(fs::symlink_metadata(gone).is_err(), "{gone} is still there after purge");
    }
    let made_user = guard.made_user;
    drop(guard);
    let group = run("getent", &["group", "mfsha"]).status.success();
    assert!(
        !made_user || (!user_exists("mfsha") && !group),
        "the mfsha user or group this test made is still there"
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}
