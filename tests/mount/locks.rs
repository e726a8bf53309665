//! File locks across two real mounts of one cluster: flock(1) and fcntl byte-range locks.

use super::{cluster, which, Mount};
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn require_flock() {
    assert!(which("flock").is_some(), "flock(1) is missing: install util-linux");
}

/// Starts `flock [args] FILE sleep 600` and waits until it says it holds the lock.
fn hold_flock(file: &Path, args: &[&str]) -> Child {
    let mut child = Command::new("flock")
        .args(args)
        .arg(file)
        .args(["sh", "-c", "echo held; exec sleep 600"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("flock starts");
    let mut word = [0u8; 5];
    child.stdout.as_mut().unwrap().read_exact(&mut word).expect("the holder reports the lock");
    assert_eq!(&word, b"held\n");
    child
}

/// Runs `flock ARGS FILE true`; true if it got the lock.
fn try_flock(file: &Path, args: &[&str]) -> bool {
    let status = Command::new("flock").args(args).arg(file).arg("true").status().unwrap();
    status.success()
}

fn kill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Polls `f` for up to `secs` seconds.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn flock_excludes_across_mounts_and_dies_with_its_holder() {
    require_flock();
    let c = cluster(1);
    let a = Mount::start(&c, "mnt-a", &[]);
    let b = Mount::start(&c, "mnt-b", &[]);
    fs::write(a.path("lockfile"), b"").unwrap();
    let (on_a, on_b) = (a.path("lockfile"), b.path("lockfile"));

    // -o: the flock process alone holds the lock (its `sleep` child does not inherit it).
    let mut holder = hold_flock(&on_a, &["-o"]);
    assert!(!try_flock(&on_b, &["-n"]), "flock -n on the other mount must fail while held");
    assert!(!try_flock(&on_b, &["-n", "-s"]), "a shared lock waits for an exclusive one too");
    // A blocking flock with a timeout is interrupted (SIGALRM) instead of hanging.
    let started = Instant::now();
    assert!(!try_flock(&on_b, &["-w", "1"]), "flock -w 1 times out while held");
    assert!(started.elapsed() < Duration::from_secs(10), "the timed wait ended promptly");

    // A waiter on the other mount gets the lock once the holder dies.
    let waiter = Command::new("flock").args(["-w", "30"]).arg(&on_b).arg("true").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    kill(&mut holder);
    let waited = waiter.wait_with_output().unwrap();
    assert!(waited.status.success(), "the blocked flock got the lock after the holder died");
    assert!(try_flock(&on_a, &["-n"]), "and the lock is free again afterwards");

    // Shared locks coexist across mounts.
    let mut reader = hold_flock(&on_a, &["-s", "-o"]);
    assert!(try_flock(&on_b, &["-n", "-s"]), "two shared locks coexist");
    assert!(!try_flock(&on_b, &["-n"]), "but an exclusive one must wait");
    kill(&mut reader);
    assert!(eventually(10, || try_flock(&on_b, &["-n"])), "free after the reader died");
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn flock_struct(kind: i32, start: i64, len: i64) -> libc::flock {
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    fl
}

/// fcntl(F_SETLK) on `fd`: Ok or the errno.
fn setlk(fd: i32, kind: i32, start: i64, len: i64) -> Result<(), i32> {
    let fl = flock_struct(kind, start, len);
    if unsafe { libc::fcntl(fd, libc::F_SETLK, &fl) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    }
}

/// fcntl(F_GETLK) on `fd`: the conflicting lock as (type, start, len, pid).
fn getlk(fd: i32, kind: i32, start: i64, len: i64) -> (i32, i64, i64, i32) {
    let mut fl = flock_struct(kind, start, len);
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETLK, &mut fl) }, 0, "F_GETLK failed");
    (i32::from(fl.l_type), fl.l_start, fl.l_len, fl.l_pid)
}

#[test]
fn fcntl_byte_range_locks_conflict_across_mounts_and_are_released() {
    let c = cluster(1);
    let a = Mount::start(&c, "mnt-a", &[]);
    let b = Mount::start(&c, "mnt-b", &[]);
    fs::write(a.path("ranges"), vec![0u8; 4096]).unwrap();
    let fa = fs::OpenOptions::new().read(true).write(true).open(a.path("ranges")).unwrap();
    let fb = fs::OpenOptions::new().read(true).write(true).open(b.path("ranges")).unwrap();
    let (da, db) = (fa.as_raw_fd(), fb.as_raw_fd());

    setlk(da, libc::F_WRLCK, 100, 100).unwrap();
    assert_eq!(setlk(db, libc::F_WRLCK, 150, 10), Err(libc::EAGAIN), "overlap conflicts");
    assert_eq!(setlk(db, libc::F_RDLCK, 199, 1), Err(libc::EAGAIN), "last byte conflicts");
    setlk(db, libc::F_WRLCK, 200, 50).expect("the next range is free");
    setlk(db, libc::F_WRLCK, 0, 100).expect("and so is the one before");
    let (kind, start, len, pid) = getlk(db, libc::F_RDLCK, 120, 1);
    assert_eq!((kind, start, len), (libc::F_WRLCK, 100, 100), "F_GETLK names a's lock");
    assert_eq!(pid, std::process::id() as i32, "with the holder's pid");
    assert_eq!(getlk(db, libc::F_RDLCK, 300, 10).0, libc::F_UNLCK, "nothing conflicts there");

    // Unlocking part of the range frees just that part.
    setlk(da, libc::F_UNLCK, 100, 50).unwrap();
    setlk(db, libc::F_WRLCK, 100, 50).expect("the unlocked half is free");
    assert_eq!(setlk(db, libc::F_WRLCK, 150, 1), Err(libc::EAGAIN), "the other half is not");

    // Closing a's descriptor releases the process's locks on that mount (POSIX close rule).
    drop(fa);
    assert!(eventually(10, || setlk(db, libc::F_WRLCK, 150, 50).is_ok()), "released at close");
    // b still holds its own locks: a fresh descriptor on a cannot take them.
    let fa = fs::OpenOptions::new().read(true).write(true).open(a.path("ranges")).unwrap();
    assert_eq!(setlk(fa.as_raw_fd(), libc::F_RDLCK, 0, 0), Err(libc::EAGAIN));
    drop(fb);
    assert!(eventually(10, || setlk(fa.as_raw_fd(), libc::F_WRLCK, 0, 0).is_ok()));
}

/// A child process takes a POSIX lock through mount a and is killed with SIGKILL: the lock
/// must go with it, so a process on mount b gets it.
#[test]
fn a_posix_lock_dies_with_its_process() {
    let c = cluster(1);
    let a = Mount::start(&c, "mnt-a", &[]);
    let b = Mount::start(&c, "mnt-b", &[]);
    fs::write(a.path("victim"), b"data").unwrap();
    let path_a = cpath(&a.path("victim"));
    let mut pipe = [0i32; 2];
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // The child only makes async-signal-safe calls between fork and its end.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        unsafe {
            let fd = libc::open(path_a.as_ptr(), libc::O_RDWR);
            let fl = flock_struct(libc::F_WRLCK, 0, 0);
            let ok = fd >= 0 && libc::fcntl(fd, libc::F_SETLK, &fl) == 0;
            let byte = if ok { b'1' } else { b'0' };
            libc::write(pipe[1], (&byte as *const u8).cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    unsafe { libc::close(pipe[1]) };
    let mut byte = 0u8;
    let n = unsafe { libc::read(pipe[0], (&mut byte as *mut u8).cast(), 1) };
    unsafe { libc::close(pipe[0]) };
    let kill_child = || unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    };
    if (n, byte) != (1, b'1') {
        kill_child();
        panic!("the child could not lock the file on mount a; log:\n{}", a.log());
    }
    let fb = fs::OpenOptions::new().read(true).write(true).open(b.path("victim")).unwrap();
    let held = setlk(fb.as_raw_fd(), libc::F_WRLCK, 0, 0);
    let (_, _, _, holder) = getlk(fb.as_raw_fd(), libc::F_WRLCK, 0, 0);
    kill_child();
    assert_eq!(held, Err(libc::EAGAIN), "the child's lock holds on the other mount");
    assert_eq!(holder, child, "F_GETLK names the child");
    assert!(
        eventually(10, || setlk(fb.as_raw_fd(), libc::F_WRLCK, 0, 0).is_ok()),
        "the lock went away with the killed process; mount a log:\n{}",
        a.log()
    );
}

/// The master's lock table is memory only: after a restart the mount holding a lock re-takes
/// it when it reconnects, and the grace period keeps the other mount from grabbing it first.
#[test]
fn a_lock_survives_a_master_restart() {
    require_flock();
    let mut c = cluster(1);
    let a = Mount::start(&c, "mnt-a", &[]);
    let b = Mount::start(&c, "mnt-b", &[]);
    fs::write(a.path("lockfile"), b"").unwrap();
    let (on_a, on_b) = (a.path("lockfile"), b.path("lockfile"));
    let mut holder = hold_flock(&on_a, &["-o"]);
    assert!(!try_flock(&on_b, &["-n"]));

    c.kill_master();
    std::thread::sleep(Duration::from_secs(1));
    c.start_master();
    // b's request waits for the master, then for the grace period, and must still conflict.
    assert!(
        !try_flock(&on_b, &["-n"]),
        "the lock was lost in the restart\nmount a log:\n{}\nmaster log:\n{}",
        a.log(),
        c.master_log()
    );
    kill(&mut holder);
    assert!(eventually(20, || try_flock(&on_b, &["-n"])), "free once the holder died");
}

/// Data written under a lock on one mount is what the next holder reads on another, even
/// through a descriptor opened (and read, so cached) before: taking a lock drops the kernel's
/// cached pages of the file.
#[test]
fn the_next_lock_holder_reads_what_the_previous_one_wrote() {
    use std::os::unix::fs::FileExt;
    let c = cluster(1);
    let a = Mount::start(&c, "mnt-a", &[]);
    let b = Mount::start(&c, "mnt-b", &[]);
    fs::write(a.path("counter"), b"0000").unwrap();
    let fa = fs::OpenOptions::new().read(true).write(true).open(a.path("counter")).unwrap();
    let mut buf = [0u8; 4];
    fa.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"0000");

    let fb = fs::OpenOptions::new().read(true).write(true).open(b.path("counter")).unwrap();
    setlk(fb.as_raw_fd(), libc::F_WRLCK, 0, 0).unwrap();
    fb.write_all_at(b"1111", 0).unwrap();
    setlk(fb.as_raw_fd(), libc::F_UNLCK, 0, 0).unwrap();

    setlk(fa.as_raw_fd(), libc::F_WRLCK, 0, 0).unwrap();
    fa.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"1111", "the lock holder on mount a reads mount b's write");
}
