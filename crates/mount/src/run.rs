//! Mounting: checks, the FUSE session, clean unmount on SIGTERM/SIGINT.

use crate::client::{Client, ConnectError};
use crate::fuse::{MfsFuse, PermissionChecks};
use crate::options::{MountOptions, OptionError, Resolved};
use fuser::MountOption;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a mount failed or ended badly.
///
/// Each message already includes its cause, so no variant links a `source`: printing the
/// error chain (`{:#}`) would repeat the cause's text.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Options(#[from] OptionError),
    #[error("{0}")]
    Missing(String),
    #[error("mount point {path}: {why}")]
    MountPoint { path: String, why: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot open a session with the master: {0}")]
    Connect(ConnectError),
    // fusermount's own message (its stderr) ends with a newline.
    #[error("cannot mount on {path}: {}", trimmed(.error))]
    Fuse { path: String, error: std::io::Error },
    #[error("buffered writes could not be stored at unmount: {0}")]
    Flush(mfsha_proto::types::Status),
    #[error(transparent)]
    Http(#[from] mfsha_ops::OpsError),
}

impl From<ConnectError> for MountError {
    fn from(e: ConnectError) -> Self {
        MountError::Connect(e)
    }
}

fn trimmed(error: &std::io::Error) -> String {
    error.to_string().trim_end().to_string()
}

/// Serves the mount's `/metrics` on `addr` for as long as the runtime runs.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    client: &Client,
) -> Result<mfsha_ops::Running, MountError> {
    let endpoint = mfsha_ops::Endpoint { what: "mount metrics", key: "the metrics= mount option" };
    let router = mfsha_ops::metrics_routes(crate::metrics::exporter(client.metrics()));
    Ok(mfsha_ops::serve(endpoint, addr, router, std::future::pending()).await?)
}

/// The device every FUSE mount opens.
const FUSE_DEVICE: &str = "/dev/fuse";

/// What a normal user needs for FUSE, said whenever something of it is missing.
const USER_FUSE_NEEDS: &str = "as a normal user FUSE needs /dev/fuse mode 0666 (Debian's \
    default) and a setuid-root fusermount3 (package fuse3); run as root, or fix /dev/fuse's mode \
    (as root: chmod 0666 /dev/fuse)";

/// Checks what a FUSE mount needs on this machine for this user, naming what is missing and
/// what to do, so a mount (or the demo, before it starts any daemon) fails at once with advice
/// instead of with fusermount's bare "Permission denied".
pub fn check_fuse_available() -> Result<(), MountError> {
    check_fuse_device(Path::new(FUSE_DEVICE))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // The kernel lets only root call mount(2) for FUSE; everyone else goes through the
        // setuid-root helper, which opens /dev/fuse with the user's own rights.
        check_fusermount(which("fusermount3").or_else(|| which("fusermount")))?;
    }
    Ok(())
}

/// Opens the device read-write as this process, exactly as the mount will.
fn check_fuse_device(dev: &Path) -> Result<(), MountError> {
    let error = match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    if error.kind() == std::io::ErrorKind::NotFound {
        return Err(MountError::Missing(format!(
            "{} does not exist: load the fuse kernel module (modprobe fuse); in a container, \
             pass the device in (docker run --device /dev/fuse --cap-add SYS_ADMIN)",
            dev.display()
        )));
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let node = match std::fs::metadata(dev) {
        Ok(meta) => format!("mode {:04o} owner uid {}", meta.mode() & 0o7777, meta.uid()),
        Err(e) => format!("cannot stat it: {e}"),
    };
    let advice = if uid == 0 {
        "root is refused too, so a device policy forbids it: in a container, pass the device \
         in (docker run --device /dev/fuse --cap-add SYS_ADMIN)"
    } else {
        USER_FUSE_NEEDS
    };
    Err(MountError::Missing(format!(
        "{} is not readable and writable by uid {uid} ({node}; {error}): {advice}",
        dev.display()
    )))
}

/// A normal user mounts through fusermount3 (or the older fusermount): it must be there and
/// setuid root.
fn check_fusermount(found: Option<PathBuf>) -> Result<(), MountError> {
    let Some(path) = found else {
        return Err(MountError::Missing(format!(
            "neither fusermount3 nor fusermount is on PATH (Debian: apt-get install fuse3): \
             {USER_FUSE_NEEDS}"
        )));
    };
    let meta = std::fs::metadata(&path)
        .map_err(|e| MountError::Missing(format!("cannot stat {}: {e}", path.display())))?;
    if meta.mode() & libc::S_ISUID == 0 || meta.uid() != 0 {
        return Err(MountError::Missing(format!(
            "{} is not setuid root (mode {:04o} owner uid {}), so it cannot mount for a normal \
             user: reinstall it (Debian: apt-get install --reinstall fuse3) or, as root, \
             chown root {} && chmod u+s {}; or run as root",
            path.display(),
            meta.mode() & 0o7777,
            meta.uid(),
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// Mounts the filesystem and serves it until it is unmounted (`umount`, `fusermount3 -u`, or
/// SIGTERM/SIGINT, on which it unmounts itself). Buffered writes are stored and the session is
/// closed before this returns.
pub fn mount(opts: MountOptions) -> Result<(), MountError> {
    let resolved = opts.resolve()?;
    check_fuse_available()?;
    let mountpoint = check_mountpoint(&resolved.mountpoint)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mfsha-mount")
        .build()
        .map_err(MountError::Runtime)?;
    let client = rt.block_on(Client::connect(resolved.client.clone()))?;
    let _metrics = match resolved.metrics {
        Some(addr) => Some(rt.block_on(serve_metrics(addr, &client))?),
        None => None,
    };
    let fs = MfsFuse::new(client.clone(), rt.handle().clone(), resolved.times, resolved.checks);
    let notifier = fs.notifier();
    let options = fuse_options(&resolved);
    let mut session = fuser::Session::new(fs, &mountpoint, &options)
        .map_err(|error| MountError::Fuse { path: mountpoint.display().to_string(), error })?;
    if notifier.set(session.notifier()).is_err() {
        tracing::debug!("the kernel notifier was already set");
    }
    tracing::info!(
        mountpoint = %mountpoint.display(),
        source = %resolved.fsname,
        session = client.session(),
        "mounted"
    );
    rt.spawn(unmount_on_signal(
        mountpoint.clone(),
        resolved.fsname.clone(),
        session.unmount_callable(),
    ));
    let served = session.run();
    // Dropping the session runs `destroy` (flushes every file) and unmounts if still mounted.
    drop(session);
    if let Err(e) = &served {
        tracing::error!(error = %e, "the FUSE session ended with an error");
    }
    let closed = rt.block_on(client.close());
    tracing::info!(mountpoint = %mountpoint.display(), "unmounted");
    served.map_err(|error| MountError::Fuse { path: mountpoint.display().to_string(), error })?;
    closed.map_err(MountError::Flush)
}

fn check_mountpoint(path: &Path) -> Result<PathBuf, MountError> {
    let bad = |why: String| MountError::MountPoint { path: path.display().to_string(), why };
    let canonical = path.canonicalize().map_err(|e| bad(e.to_string()))?;
    let meta = std::fs::metadata(&canonical).map_err(|e| bad(e.to_string()))?;
    if !meta.is_dir() {
        return Err(bad("not a directory".into()));
    }
    Ok(canonical)
}

fn fuse_options(r: &Resolved) -> Vec<MountOption> {
    let mut options = vec![
        MountOption::FSName(r.fsname.clone()),
        // The type is then `fuse.mfsha` in /proc/mounts (`findmnt -t fuse.mfsha`). Not
        // `MountOption::Subtype`: fuser hands that only to fusermount, and a mount made
        // directly by root would show plain `fuse`; the kernel takes `subtype=` itself.
        MountOption::CUSTOM("subtype=mfsha".into()),
    ];
    if r.checks == PermissionChecks::Kernel {
        options.push(MountOption::DefaultPermissions);
    }
    options.push(if r.read_only { MountOption::RO } else { MountOption::RW });
    if r.allow_other {
        options.push(MountOption::AllowOther);
    }
    options
}

/// On SIGTERM or SIGINT, unmounts (lazily if the mount is busy), which ends `session.run`.
async fn unmount_on_signal(
    mountpoint: PathBuf,
    fsname: String,
    mut unmounter: fuser::SessionUnmounter,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot watch SIGTERM/SIGINT; unmount with umount instead");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: unmounting"),
        _ = int.recv() => tracing::info!("SIGINT: unmounting"),
    }
    // fuser's own unmount first, so the session does not try again when it is dropped.
    if let Err(e) = unmounter.unmount() {
        tracing::warn!(mountpoint = %mountpoint.display(), error = %e, "unmount failed");
    }
    if crate::helper::is_mounted(&mountpoint, &fsname) {
        if let Err(e) = unmount(&mountpoint) {
            tracing::error!(mountpoint = %mountpoint.display(), error = %e, "unmount failed");
        }
    }
}

/// Unmounts `mountpoint`; when it is busy, detaches it so it goes away once unused.
pub fn unmount(mountpoint: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())?;
    // SAFETY: umount2 with a valid NUL-terminated path.
    if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EBUSY) => {
            tracing::warn!(mountpoint = %mountpoint.display(), "mount is busy; detaching it lazily");
            // SAFETY: as above.
            if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        Some(libc::EPERM) => fusermount_unmount(mountpoint),
        _ => Err(err),
    }
}

/// Non-root users unmount through the setuid fusermount helper.
fn fusermount_unmount(mountpoint: &Path) -> std::io::Result<()> {
    let tool = if which("fusermount3").is_some() { "fusermount3" } else { "fusermount" };
    let status = std::process::Command::new(tool).arg("-u").arg("-z").arg(mountpoint).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("{tool} -u exited with {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn errors_say_their_cause_once() {
        let denied = || std::io::Error::from_raw_os_error(libc::EACCES);
        let fuse = MountError::Fuse { path: "/m".into(), error: denied() };
        assert_eq!(fuse.to_string(), "cannot mount on /m: Permission denied (os error 13)");
        let fusermount =
            std::io::Error::other("fusermount3: mount failed: Operation not permitted\n");
        let fuse = MountError::Fuse { path: "/m".into(), error: fusermount };
        assert_eq!(
            fuse.to_string(),
            "cannot mount on /m: fusermount3: mount failed: Operation not permitted"
        );
        let connect = MountError::from(ConnectError::NoMasters);
        let password = OptionError::PasswordFile { path: "/p".into(), error: denied() };
        let options = MountError::from(password);
        // A linked source would make `{:#}` (how `mfsha` prints errors) repeat the cause.
        for e in [fuse, connect, options] {
            assert!(e.source().is_none(), "{e} links a source that repeats its message");
        }
    }

    #[test]
    fn a_missing_device_says_to_load_the_module() {
        let e = check_fuse_device(Path::new("/nonexistent/fuse")).unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/fuse does not exist") && e.contains("modprobe fuse"),
            "{e}"
        );
    }

    #[test]
    fn fusermount_must_exist_and_be_setuid_root() {
        let e = check_fusermount(None).unwrap_err().to_string();
        assert!(e.contains("neither fusermount3 nor fusermount") && e.contains("fuse3"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("fusermount3");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = check_fusermount(Some(tool.clone())).unwrap_err().to_string();
        let named = format!("{} is not setuid root (mode 0755", tool.display());
        assert!(e.contains(&named) && e.contains("chmod u+s"), "{e}");
    }
}
