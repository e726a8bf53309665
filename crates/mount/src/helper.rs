//! `mount.mfsha`: the helper `mount(8)` runs for `mount -t mfsha HOST[:PORT]:/PATH DIR` and for
//! fstab lines such as `mfsmaster:/ /mnt/mfs mfsha rw,_netdev 0 0`.
//!
//! It is the `mfsha` binary itself, started under the name `mount.mfsha` (the .deb installs
//! the symlink; by hand: `ln -s /usr/bin/mfsha /sbin/mount.mfsha`). `mount(8)` waits for the
//! helper to exit, so the helper starts the real mount as a detached child (the same
//! executable, marked with an environment variable), waits until the kernel lists the mount,
//! and exits 0 — or exits 32 with the child's reason if the mount failed.

use crate::options::MountOptions;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Marks the detached child that does the mounting.
const FOREGROUND_ENV: &str = "MFSHA_MOUNT_FOREGROUND";
/// Where the detached mount logs (default `/var/log/mfsha-mount.log`, else nowhere).
pub const LOG_ENV: &str = "MFSHA_MOUNT_LOG";
const DEFAULT_LOG: &str = "/var/log/mfsha-mount.log";

/// mount(8) helper exit codes.
const EX_USAGE: i32 = 1;
const EX_FAIL: i32 = 32;

/// True when the program was started under the helper's name.
pub fn invoked_as_helper(argv0: &std::ffi::OsStr) -> bool {
    Path::new(argv0).file_name().is_some_and(|n| n == "mount.mfsha")
}

/// A parsed helper command line.
#[derive(Debug, Clone, PartialEq)]
pub struct HelperArgs {
    pub master: String,
    pub subfolder: String,
    pub dir: PathBuf,
    pub options: Vec<String>,
    /// `-f`: do everything but the mount.
    pub fake: bool,
}

/// Parses `SPEC DIR [-sfnv] [-o OPTIONS] [-t TYPE]` (what mount(8) passes).
pub fn parse(args: &[String]) -> Result<HelperArgs, String> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut fake = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-o" => {
                options.extend(it.next().ok_or("-o needs options")?.split(',').map(String::from))
            }
            "-t" | "-N" => {
                it.next().ok_or(format!("{arg} needs a value"))?;
            }
            "-f" => fake = true,
            "-s" | "-n" | "-v" => {}
            s if s.starts_with("-o") => options.extend(s[2..].split(',').map(String::from)),
            s if s.starts_with('-') => return Err(format!("unknown flag {s}")),
            s => positional.push(s.to_string()),
        }
    }
    let [spec, dir] = positional.as_slice() else {
        return Err("usage: mount.mfsha HOST[:PORT]:[/PATH] DIR [-o OPTIONS]".into());
    };
    let (master, subfolder) = split_spec(spec);
    options.retain(|o| !o.is_empty());
    Ok(HelperArgs { master, subfolder, dir: PathBuf::from(dir), options, fake })
}

/// "host:9421:/sub" → ("host:9421", "/sub"); "host:/" and "host" → ("host", "/").
fn split_spec(spec: &str) -> (String, String) {
    if let Some(i) = spec.find(":/") {
        return (spec[..i].to_string(), spec[i + 1..].to_string());
    }
    (spec.trim_end_matches(':').to_string(), "/".to_string())
}

/// Runs the helper with the program's arguments (without argv[0]); returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = args.into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let parsed = match parse(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mount.mfsha: {e}");
            return EX_USAGE;
        }
    };
    let mut opts = MountOptions::new(parsed.dir.clone(), &parsed.master);
    opts.subfolder = parsed.subfolder.clone();
    // As mfsmount does: other users may use a system mount; the kernel checks permissions.
    opts.allow_other = true;
    opts.options = parsed.options.clone();
    let resolved = match opts.resolve() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mount.mfsha: {e}");
            return EX_USAGE;
        }
    };
    if parsed.fake {
        return 0;
    }
    if std::env::var_os(FOREGROUND_ENV).is_some() {
        init_logging();
        return match crate::mount(opts) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("mount of {} failed: {e}", parsed.dir.display());
                EX_FAIL
            }
        };
    }
    match start_detached(&args, &parsed.dir, &resolved.fsname, resolved.client.master.io_timeout) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mount.mfsha: {e}");
            EX_FAIL
        }
    }
}

/// Logs to stderr (the log file) unless the caller set up logging already.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let installed =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    if installed.is_err() {
        tracing::debug!("logging was already set up by the caller");
    }
}

/// Starts the mounting child in its own session and waits until the mount shows up.
fn start_detached(
    args: &[String],
    dir: &Path,
    fsname: &str,
    timeout: Duration,
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let dir = dir.canonicalize().map_err(|e| format!("mount point {}: {e}", dir.display()))?;
    let (log, log_path) = open_log()?;
    let err = log.try_clone().map_err(|e| format!("cannot share the log file: {e}"))?;
    let mut child = Command::new(exe)
        .arg0("mount.mfsha")
        .args(args)
        .env(FOREGROUND_ENV, "1")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the mount process: {e}"))?;
    let deadline = Instant::now() + timeout + Duration::from_secs(5);
    loop {
        if is_mounted(&dir, fsname) {
            return Ok(());
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(format!("the mount process exited with {status}; see {log_path}"))
            }
            Ok(None) => {}
            Err(e) => return Err(format!("cannot watch the mount process: {e}")),
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} was not mounted within {timeout:?}; see {log_path}",
                dir.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn open_log() -> Result<(std::fs::File, String), String> {
    let path = std::env::var(LOG_ENV).unwrap_or_else(|_| DEFAULT_LOG.into());
    let open = |p: &str| std::fs::OpenOptions::new().create(true).append(true).open(p);
    match open(&path) {
        Ok(f) => Ok((f, path)),
        Err(e) => {
            eprintln!("mount.mfsha: cannot open the log {path} ({e}); the mount will not log");
            let null = open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
            Ok((null, format!("(no log: {path} could not be opened; set {LOG_ENV})")))
        }
    }
}

/// True if the kernel lists a mount of `fsname` on `dir` (an absolute, canonical path).
pub fn is_mounted(dir: &Path, fsname: &str) -> bool {
    mounts_on(dir).iter().any(|source| source == fsname)
}

/// True if anything is mounted on `dir` (an absolute, canonical path).
pub fn is_mounted_anything(dir: &Path) -> bool {
    !mounts_on(dir).is_empty()
}

/// The sources of the mounts on `dir`, from `/proc/self/mountinfo`.
fn mounts_on(dir: &Path) -> Vec<String> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let want = dir.to_string_lossy();
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let point = unescape(fields.get(4)?);
            let source = unescape(fields.get(sep + 2)?);
            (point == want).then_some(source)
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash).
pub fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_what_mount_passes() {
        let p =
            parse(&strings(&["mfsmaster:9421:/data", "/mnt/x", "-o", "rw,_netdev", "-n"])).unwrap();
        assert_eq!(p.master, "mfsmaster:9421");
        assert_eq!(p.subfolder, "/data");
        assert_eq!(p.dir, PathBuf::from("/mnt/x"));
        assert_eq!(p.options, vec!["rw", "_netdev"]);
        assert!(!p.fake);
        let p = parse(&strings(&["host:/", "/mnt/y", "-f", "-t", "mfsha"])).unwrap();
        assert_eq!((p.master.as_str(), p.subfolder.as_str(), p.fake), ("host", "/", true));
        assert_eq!(parse(&strings(&["host"])).unwrap_err().split(':').next(), Some("usage"));
        assert!(parse(&strings(&["h:/", "/m", "-x"])).is_err());
    }

    /// The source as `findmnt` shows it (masters joined by `+`) mounts the same masters.
    #[test]
    fn the_source_findmnt_shows_is_accepted() {
        let p = parse(&strings(&["m1:19121+m2:19221:/", "/mnt/x"])).unwrap();
        let mut opts = MountOptions::new(p.dir.clone(), &p.master);
        opts.subfolder = p.subfolder.clone();
        let resolved = opts.resolve().unwrap();
        assert_eq!(resolved.client.master.masters, vec!["m1:19121", "m2:19221"]);
        assert_eq!(resolved.fsname, "m1:19121+m2:19221", "and shows it the same way again");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape("plain"), "plain");
        assert!(invoked_as_helper(std::ffi::OsStr::new("/sbin/mount.mfsha")));
        assert!(!invoked_as_helper(std::ffi::OsStr::new("mfsha")));
    }
}
