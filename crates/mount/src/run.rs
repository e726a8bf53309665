//! Mounting: checks, the FUSE session, clean unmount on SIGTERM/SIGINT.

use crate::client::{Client, ConnectError};
use crate::fuse::MfsFuse;
use crate::options::{MountOptions, OptionError, Resolved};
use fuser::MountOption;
use std::path::{Path, PathBuf};

/// Why a mount failed or ended badly.
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
    Connect(#[from] ConnectError),
    #[error("cannot mount on {path}: {source}")]
    Fuse { path: String, source: std::io::Error },
    #[error("buffered writes could not be stored at unmount: {0}")]
    Flush(mfsha_proto::types::Status),
}

/// Checks what a FUSE mount needs on this machine, naming what is missing.
pub fn check_fuse_available() -> Result<(), MountError> {
    if !Path::new("/dev/fuse").exists() {
        return Err(MountError::Missing(
            "/dev/fuse does not exist: load the fuse kernel module (modprobe fuse)".into(),
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && which("fusermount3").is_none() && which("fusermount").is_none() {
        return Err(MountError::Missing(
            "fusermount3 is not installed (Debian: apt-get install fuse3); non-root mounts need it"
                .into(),
        ));
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
    let fs = MfsFuse::new(client.clone(), rt.handle().clone(), resolved.times);
    let notifier = fs.notifier();
    let options = fuse_options(&resolved);
    let mut session = fuser::Session::new(fs, &mountpoint, &options)
        .map_err(|source| MountError::Fuse { path: mountpoint.display().to_string(), source })?;
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
    served.map_err(|source| MountError::Fuse { path: mountpoint.display().to_string(), source })?;
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
        MountOption::Subtype("mfsha".into()),
        MountOption::DefaultPermissions,
    ];
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
