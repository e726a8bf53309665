//! pjdfstest (the `pjdfstest` crate) against a real mount. Tests known not to apply to a Linux
//! FUSE filesystem are listed in `EXPECTED_FAILURES`, each with its reason in docs/posix.md.

use super::{cluster, which, Mount};
use std::path::PathBuf;
use std::process::Command;

/// pjdfstest cases that run but may fail, with the reason in docs/posix.md ("Exclusions").
const EXPECTED_FAILURES: &[&str] = &[];

fn pjdfstest_binary() -> PathBuf {
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/pjdfstest"));
    which("pjdfstest").or(home.filter(|p| p.is_file())).unwrap_or_else(|| {
        panic!("pjdfstest is missing: install it with `cargo install pjdfstest` (scripts/setup.sh does)")
    })
}

fn config() -> String {
    let failures: Vec<String> = EXPECTED_FAILURES.iter().map(|f| format!("\"{f}\"")).collect();
    format!(
        "[features]\nposix_fallocate = {{}}\nutime_now = {{}}\nutimensat = {{}}\n\n\
         [settings]\nnaptime = 1\nallow_remount = false\nexpected_failures = [{}]\n\n\
         [dummy_auth]\nentries = [[\"nobody\", \"nogroup\"], [\"daemon\", \"daemon\"]]\n",
        failures.join(", ")
    )
}

#[test]
fn pjdfstest_passes_on_the_mount() {
    run_pjdfstest(&[]);
}

/// Without `default_permissions` the kernel checks nothing but what it must (exec bits):
/// every EACCES and EPERM pjdfstest expects comes from the master's own checks.
#[test]
fn pjdfstest_passes_on_a_mount_that_leaves_permission_checks_to_the_master() {
    run_pjdfstest(&["-o", "nodefault_permissions"]);
}

fn run_pjdfstest(mount_args: &[&str]) {
    let bin = pjdfstest_binary();
    let c = cluster(3);
    let m = Mount::start(&c, "mnt", mount_args);
    if !mount_args.is_empty() {
        let options = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = options.lines().find(|l| l.contains(m.dir.to_str().unwrap())).unwrap();
        assert!(!line.contains("default_permissions"), "still default_permissions: {line}");
    }
    let conf = c.path().join("pjdfstest.toml");
    std::fs::write(&conf, config()).unwrap();
    // A directory on another filesystem, for the cross-device (EXDEV) cases.
    let secondary = tempfile::Builder::new().prefix("mfsha-pjdfs-").tempdir_in("/dev/shm").unwrap();
    let out = Command::new(&bin)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&m.dir)
        .arg("-s")
        .arg(secondary.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = c.path().join("pjdfstest.out");
    std::fs::write(&report, stdout.as_bytes()).unwrap();
    let summary =
        stdout.lines().rev().find(|l| l.starts_with("Summary")).unwrap_or("(no summary line)");
    eprintln!("pjdfstest: {summary}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.contains("FAILED")).collect();
    assert!(
        out.status.success(),
        "pjdfstest failed ({}): {summary}\nfailing cases:\n{}\nstderr:\n{}\nmount log:\n{}",
        out.status,
        failed.join("\n"),
        String::from_utf8_lossy(&out.stderr),
        m.log()
    );
}
