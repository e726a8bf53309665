//! Real FUSE mounts used through ordinary system calls and tools.

use super::{cluster, cluster_status, runtime, sha256_file, Mount};
use crate::util::{mfsha_bin, tail};
use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

#[test]
fn posix_basics_on_a_mount() {
    let c = cluster(3);
    let m = Mount::start(&c, "mnt", &[]);
    let root = &m.dir;

    // Create, write, read, append, overwrite, truncate both ways.
    let f = root.join("a.txt");
    fs::write(&f, b"hello world").unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"hello world");
    let mut appender = fs::OpenOptions::new().append(true).open(&f).unwrap();
    appender.write_all(b", again").unwrap();
    drop(appender);
    assert_eq!(fs::read_to_string(&f).unwrap(), "hello world, again");
    let mut rw = fs::OpenOptions::new().read(true).write(true).open(&f).unwrap();
    rw.seek(SeekFrom::Start(6)).unwrap();
    rw.write_all(b"WORLD").unwrap();
    rw.seek(SeekFrom::Start(0)).unwrap();
    let mut back = String::new();
    rw.read_to_string(&mut back).unwrap();
    assert_eq!(back, "hello WORLD, again", "a read on the same handle sees the write");
    rw.set_len(5).unwrap();
    drop(rw);
    assert_eq!(fs::read(&f).unwrap(), b"hello");
    fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(3 << 20).unwrap();
    let grown = fs::read(&f).unwrap();
    assert_eq!(grown.len(), 3 << 20);
    assert!(grown[5..].iter().all(|b| *b == 0), "growing by truncate gives zeros");
    fs::OpenOptions::new().write(true).truncate(true).open(&f).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().len(), 0, "O_TRUNC empties the file");

    // Sparse file: one byte far out.
    let sparse = root.join("sparse");
    let mut s = fs::File::create(&sparse).unwrap();
    s.seek(SeekFrom::Start(200 << 20)).unwrap();
    s.write_all(b"x").unwrap();
    s.sync_all().unwrap();
    drop(s);
    let mut s = fs::File::open(&sparse).unwrap();
    assert_eq!(s.metadata().unwrap().len(), (200 << 20) + 1);
    let mut buf = vec![1u8; 4096];
    s.seek(SeekFrom::Start(100 << 20)).unwrap();
    s.read_exact(&mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 0));

    // Directories, rename over an existing file, hard links, symlinks.
    fs::create_dir_all(root.join("d1/d2")).unwrap();
    fs::write(root.join("d1/x"), b"x").unwrap();
    fs::write(root.join("d1/y"), b"y").unwrap();
    fs::rename(root.join("d1/x"), root.join("d1/y")).unwrap();
    assert_eq!(fs::read(root.join("d1/y")).unwrap(), b"x");
    assert!(!root.join("d1/x").exists());
    fs::hard_link(root.join("d1/y"), root.join("d1/d2/hard")).unwrap();
    assert_eq!(fs::metadata(root.join("d1/y")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(root.join("d1/y")).unwrap().ino(),
        fs::metadata(root.join("d1/d2/hard")).unwrap().ino()
    );
    std::os::unix::fs::symlink("../y", root.join("d1/d2/link")).unwrap();
    assert_eq!(fs::read_link(root.join("d1/d2/link")).unwrap(), Path::new("../y"));
    assert_eq!(fs::read(root.join("d1/d2/link")).unwrap(), b"x");
    let mut listed: Vec<String> = fs::read_dir(root.join("d1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, ["d2", "y"]);
    assert_eq!(fs::remove_dir(root.join("d1")).unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
    fs::remove_dir_all(root.join("d1")).unwrap();
    assert!(!root.join("d1").exists());

    // Modes, owners, times with nanoseconds.
    let p = root.join("modes");
    fs::write(&p, b"m").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4751)).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o4751);
    std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
    let md = fs::metadata(&p).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    let when = UNIX_EPOCH + Duration::new(1_500_000_000, 123_456_789);
    fs::File::options().write(true).open(&p).unwrap().set_modified(when).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().modified().unwrap(), when);

    // FIFO and socket nodes; extended attributes.
    let fifo = root.join("fifo");
    assert_eq!(
        unsafe { libc::mkfifo(cstr(&fifo).as_ptr(), 0o644) },
        0,
        "mkfifo: {}",
        std::io::Error::last_os_error()
    );
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    let name = CString::new("user.test").unwrap();
    let rc =
        unsafe { libc::setxattr(cstr(&p).as_ptr(), name.as_ptr(), b"value".as_ptr().cast(), 5, 0) };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
    let mut val = [0u8; 64];
    let n = unsafe {
        libc::getxattr(cstr(&p).as_ptr(), name.as_ptr(), val.as_mut_ptr().cast(), val.len())
    };
    assert_eq!(&val[..n as usize], b"value");

    // `df` names the master and shows real space.
    let df = run(Command::new("df").arg("-P").arg(root));
    assert!(df.contains(&c.master_addr()), "df shows the master as the source:\n{df}");
    let vfs = nix_statvfs(root);
    assert!(vfs.0 > 0, "statfs reports the chunkservers' space");

    // A large file written in one go, read back through a fresh open.
    let big = root.join("big");
    let data: Vec<u8> =
        (0..(9 << 20) as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fs::write(&big, &data).unwrap();
    assert!(fs::read(&big).unwrap() == data);
}

/// (total blocks, free blocks) from statvfs.
fn nix_statvfs(p: &Path) -> (u64, u64) {
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(cstr(p).as_ptr(), &mut s) }, 0);
    (s.f_blocks, s.f_bfree)
}

/// Builds a small source tree with the things `cp -a` must keep: nested directories, modes,
/// symlinks (relative, absolute, dangling), hard links, an empty file, a larger binary file.
fn make_tree(root: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    run(Command::new("cp").arg("-a").arg(repo.join("crates")).arg(root.join("crates")));
    fs::create_dir_all(root.join("extra/deep/deeper")).unwrap();
    fs::write(root.join("extra/empty"), b"").unwrap();
    let bin: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(root.join("extra/deep/blob.bin"), &bin).unwrap();
    fs::set_permissions(root.join("extra/deep/blob.bin"), fs::Permissions::from_mode(0o600))
        .unwrap();
    fs::hard_link(root.join("extra/deep/blob.bin"), root.join("extra/blob-hardlink")).unwrap();
    std::os::unix::fs::symlink("deep/blob.bin", root.join("extra/rel-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("extra/dangling")).unwrap();
    fs::set_permissions(root.join("extra/deep/deeper"), fs::Permissions::from_mode(0o710)).unwrap();
}

/// Writes `total` bytes of a deterministic stream to `path` in 1 MiB writes, then fsyncs.
fn write_stream(path: &Path, total: usize) -> std::io::Result<String> {
    use sha2::Digest;
    let mut f = fs::File::create(path)?;
    let mut h = sha2::Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    let mut written = 0usize;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while written < total {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = block.len().min(total - written);
        f.write_all(&block[..n])?;
        h.update(&block[..n]);
        written += n;
    }
    f.sync_all()?;
    Ok(super::hex(&h.finalize()))
}

#[test]
fn two_mounts_see_each_others_files_after_close() {
    let c = cluster(2);
    let a = Mount::start(&c, "mnt-a", &[]);
    let b = Mount::start(&c, "mnt-b", &[]);
    fs::write(a.path("shared"), b"first version").unwrap();
    assert_eq!(fs::read(b.path("shared")).unwrap(), b"first version");
    fs::write(b.path("shared"), b"second, longer version").unwrap();
    assert_eq!(fs::read(a.path("shared")).unwrap(), b"second, longer version");
    fs::create_dir(b.path("dir")).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert!(a.path("dir").is_dir(), "a directory made on one mount appears on the other");
}

#[test]
fn sigterm_unmounts_cleanly_after_storing_buffered_writes() {
    let c = cluster(2);
    let mut m = Mount::start(&c, "mnt", &[]);
    let data = vec![7u8; 5 << 20];
    let mut f = fs::File::create(m.path("pending")).unwrap();
    f.write_all(&data).unwrap();
    drop(f);
    m.stop();
    let again = Mount::start(&c, "mnt", &[]);
    assert!(fs::read(again.path("pending")).unwrap() == data);
}

#[test]
fn the_mount_helper_mounts_like_mount_t_mfsha_does() {
    super::require_fuse();
    let c = cluster(2);
    let helper = c.path().join("mount.mfsha");
    std::os::unix::fs::symlink(mfsha_bin(), &helper).unwrap();
    let dir = c.path().join("helper-mnt");
    fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let log = c.path().join("helper.log");
    // What mount(8) runs for: mount -t mfsha 127.0.0.1:PORT:/ DIR -o rw,_netdev
    let out = Command::new(&helper)
        .arg(format!("{}:/", c.master_addr()))
        .arg(&dir)
        .args(["-o", "rw,_netdev,mfsattrcacheto=0.5"])
        .env("MFSHA_MOUNT_LOG", &log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount.mfsha failed: {}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&log, 30)
    );
    assert!(mfsha_mount::helper::is_mounted(&dir, &c.master_addr()));
    fs::write(dir.join("via-helper"), b"ok").unwrap();
    assert_eq!(fs::read(dir.join("via-helper")).unwrap(), b"ok");
    run(Command::new("umount").arg(&dir));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while mfsha_mount::helper::is_mounted(&dir, &c.master_addr())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!mfsha_mount::helper::is_mounted(&dir, &c.master_addr()));
    // The detached mount process exits once unmounted.
    let mut gone = false;
    for _ in 0..100 {
        let ps = run(Command::new("ps").args(["-eo", "args"]));
        if !ps.lines().any(|l| l.contains("mount.mfsha") && l.contains(dir.to_str().unwrap())) {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone, "the mount process is still running after umount; log:\n{}", tail(&log, 30));
}

/// The writer is a separate program (`dd`), as in the issue's scenario. It must not be a
/// thread of this test: every `exec` of a child of this process (the master's restart) closes
/// the inherited descriptors, and closing a descriptor of a FUSE file sends FLUSH, which waits
/// for the master that the exec was about to start.
#[test]
fn a_write_survives_the_master_being_killed_and_restarted() {
    let mut c = cluster(3);
    let m = Mount::start(&c, "mnt", &[]);
    let total = 200 << 20;
    let source = c.path().join("source.bin");
    let sum = write_stream(&source, total).unwrap();
    let path = m.path("big.bin");
    let mut writer = Command::new("dd")
        .arg(format!("if={}", source.display()))
        .arg(format!("of={}", path.display()))
        .args(["bs=1M", "conv=fsync", "status=none"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("dd starts (coreutils)");
    // Let the write get going, then take the master away for a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fs::metadata(&path).map(|m| m.len()).unwrap_or(0) < 16 << 20
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(writer.try_wait().unwrap().is_none(), "dd finished before the master was killed");
    c.kill_master();
    std::thread::sleep(Duration::from_secs(3));
    c.start_master();
    let out = writer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the writer saw an error ({}): {}\nmount log:\n{}\nmaster log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        m.log(),
        c.master_log()
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), total as u64);
    assert_eq!(sha256_file(&path), sum, "the file read back has the bytes written");
    assert!(m.log().contains("connected to the master"), "the mount reconnected:\n{}", m.log());
    assert!(
        !m.log().contains("opening a new one"),
        "the mount resumed its session rather than opening a new one:\n{}",
        m.log()
    );
}

#[test]
fn cp_a_onto_the_mount_and_back_is_identical() {
    let c = cluster(3);
    let m = Mount::start(&c, "mnt", &[]);
    let src = c.path().join("src");
    fs::create_dir_all(&src).unwrap();
    make_tree(&src);
    run(Command::new("cp").arg("-a").arg(&src).arg(m.path("copy")));
    let back = c.path().join("back");
    run(Command::new("cp").arg("-a").arg(m.path("copy")).arg(&back));
    let diff = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&src)
        .arg(&back)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "diff -r found differences:\n{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    let diff = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&src)
        .arg(m.path("copy"))
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "the mount differs from the source:\n{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    // Hard links stay hard links, modes and symlink targets survive both copies.
    for tree in [m.path("copy"), back.clone()] {
        let a = fs::metadata(tree.join("extra/deep/blob.bin")).unwrap();
        let b = fs::metadata(tree.join("extra/blob-hardlink")).unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "hard link kept in {}", tree.display());
        assert_eq!(a.mode() & 0o7777, 0o600);
        assert_eq!(fs::metadata(tree.join("extra/deep/deeper")).unwrap().mode() & 0o7777, 0o710);
        assert_eq!(
            fs::read_link(tree.join("extra/dangling")).unwrap(),
            Path::new("/nonexistent/target")
        );
    }
    // Modification times survive too (cp -a preserves them; the mount keeps nanoseconds).
    let t_src = fs::metadata(src.join("extra/deep/blob.bin")).unwrap().modified().unwrap();
    let t_back = fs::metadata(back.join("extra/deep/blob.bin")).unwrap().modified().unwrap();
    assert_eq!(t_src, t_back);
}

/// Mount options end to end: a subfolder as the root (`-S`), a read-only mount, and `df`
/// totals that are the chunkservers' space.
#[test]
fn subfolder_read_only_and_df_totals() {
    let c = cluster(2);
    let full = Mount::start(&c, "mnt-full", &[]);
    fs::create_dir_all(full.path("projects/alpha")).unwrap();
    fs::write(full.path("projects/alpha/notes"), b"inside").unwrap();
    fs::write(full.path("outside"), b"not visible from the subfolder").unwrap();

    // -S: the subfolder is the root; nothing above it can be reached.
    let source = format!("{}/projects", c.master_addr());
    let sub = Mount::start_as(&c, "mnt-sub", &["-S", "/projects"], &source);
    assert_eq!(fs::read(sub.path("alpha/notes")).unwrap(), b"inside");
    assert!(!sub.path("outside").exists());
    let listed: Vec<String> = fs::read_dir(&sub.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listed, ["alpha"], "the subfolder's root lists only its own entries");
    fs::write(sub.path("alpha/from-sub"), b"written below the subfolder root").unwrap();
    assert_eq!(
        fs::read(full.path("projects/alpha/from-sub")).unwrap(),
        b"written below the subfolder root"
    );
    let df = run(Command::new("df").arg("-P").arg(&sub.dir));
    assert!(df.contains(&source), "df names the master and the subfolder:\n{df}");

    // --read-only: reads work, every change is refused with EROFS.
    let ro = Mount::start(&c, "mnt-ro", &["--read-only"]);
    assert_eq!(fs::read(ro.path("projects/alpha/notes")).unwrap(), b"inside");
    let erofs = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    assert_eq!(erofs(fs::write(ro.path("new"), b"x")), Some(libc::EROFS));
    assert_eq!(erofs(fs::create_dir(ro.path("newdir"))), Some(libc::EROFS));
    assert_eq!(erofs(fs::remove_file(ro.path("outside"))), Some(libc::EROFS));
    let open_rw = fs::OpenOptions::new().write(true).open(ro.path("outside"));
    assert_eq!(open_rw.unwrap_err().raw_os_error(), Some(libc::EROFS));

    // df: the total is the sum of the chunkservers' disks, as the master reports them.
    let status = runtime().block_on(cluster_status(&c.master_addr())).expect("master answers");
    let disks: u64 = status.chunkservers.iter().map(|cs| cs.total_bytes).sum();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(cstr(&full.dir).as_ptr(), &mut s) }, 0);
    let total = s.f_blocks * s.f_frsize;
    assert!(disks > 0, "the chunkservers report their space");
    assert!(
        total <= disks && disks - total < s.f_frsize,
        "statfs total {total} is the chunkservers' {disks} (rounded to {} byte blocks)",
        s.f_frsize
    );
    assert!(s.f_bavail > 0 && s.f_bavail <= s.f_blocks);
}

/// How many `getxattr` requests the mount with metrics at `addr` has sent the master.
fn getxattr_requests(addr: &str) -> u64 {
    master_requests(addr, "getxattr")
}

/// How many `op` requests the mount with metrics at `addr` has sent the master.
fn master_requests(addr: &str, op: &str) -> u64 {
    let body = crate::metrics::http_get(addr, "/metrics");
    let prefix = format!("mfsha_mount_master_request_seconds_count{{op=\"{op}\"}}");
    let line = body.lines().find(|l| l.starts_with(&prefix));
    line.map_or(0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

/// After every change in a directory the kernel forgets the directory's attributes and asks
/// for them before the next change (the permission check on the parent). The master sends
/// them with the change, so 161 changes cost the master no GETATTR of the directory, and
/// what the mount then shows of the directory is what another mount reads from the master.
#[test]
fn changes_in_a_directory_do_not_ask_the_master_for_its_attributes_again() {
    let c = cluster(1);
    let metrics = format!("127.0.0.1:{}", crate::util::free_port());
    let a = Mount::start(&c, "mnt-a", &["-o", &format!("metrics={metrics}")]);
    let b = Mount::start(&c, "mnt-b", &[]);
    fs::create_dir(a.path("d")).unwrap();
    let before = master_requests(&metrics, "getattr");
    for i in 0..100 {
        fs::File::create(a.path(&format!("d/f{i}"))).unwrap();
    }
    for i in 0..10 {
        fs::create_dir(a.path(&format!("d/sub{i}"))).unwrap();
    }
    for i in 0..50 {
        fs::remove_file(a.path(&format!("d/f{i}"))).unwrap();
    }
    fs::rename(a.path("d/f99"), a.path("d/sub0/moved")).unwrap();
    // A directory with a change in it, then moved: its ctime and `..` change with the move.
    fs::File::create(a.path("d/sub1/x")).unwrap();
    fs::rename(a.path("d/sub1"), a.path("d/sub0/sub1")).unwrap();
    let moved_here = fs::metadata(a.path("d/sub0/sub1")).unwrap();
    let seen_here = fs::metadata(a.path("d")).unwrap();
    let asked = master_requests(&metrics, "getattr") - before;
    // A few may still be asked (a create answered after the next one began); not one each.
    assert!(asked <= 10, "{asked} GETATTRs sent to the master for 163 changes");
    let from_master = fs::metadata(b.path("d")).unwrap();
    let view = |m: &fs::Metadata| (m.nlink(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec());
    assert_eq!(view(&seen_here), view(&from_master), "the directory as this mount shows it");
    assert_eq!(seen_here.nlink(), 11, "9 subdirectories left in it");
    let moved_there = fs::metadata(b.path("d/sub0/sub1")).unwrap();
    assert_eq!(view(&moved_here), view(&moved_there), "the moved directory as this mount shows it");
}

/// Writes `count` blocks of 4 KiB to `path` (appending), one write(2) each.
fn write_blocks(path: &Path, count: usize) {
    let mut file = fs::OpenOptions::new().append(true).create(true).open(path).unwrap();
    for _ in 0..count {
        file.write_all(&[7u8; 4096]).unwrap();
    }
    file.sync_all().unwrap();
}

fn capability(path: &Path) -> String {
    run(Command::new("getcap").arg(path)).trim().to_string()
}

/// The kernel asks for `security.capability` before every write(2); the mount remembers
/// "none" for its attribute cache time instead of asking the master 256 times for 256
/// writes. A write still drops a capability set through this mount at once, and one set
/// through another mount once that time has passed.
#[test]
fn writes_do_not_ask_the_master_for_capabilities_each_time_and_still_drop_them() {
    if super::which("setcap").is_none() || super::which("getcap").is_none() {
        panic!("setcap and getcap (Debian package libcap2-bin) are needed for this test");
    }
    let c = cluster(2);
    let port = crate::util::free_port();
    let metrics = format!("127.0.0.1:{port}");
    let a = Mount::start(&c, "mnt-a", &["-o", &format!("metrics={metrics}")]);
    let b = Mount::start(&c, "mnt-b", &[]);

    let before = getxattr_requests(&metrics);
    write_blocks(&a.path("new"), 256);
    let made_here = getxattr_requests(&metrics) - before;
    fs::write(b.path("theirs"), b"x").unwrap();
    let before = getxattr_requests(&metrics);
    write_blocks(&a.path("theirs"), 256);
    let made_there = getxattr_requests(&metrics) - before;
    assert!(made_here <= 2 && made_there <= 4, "asked {made_here} and {made_there} times");

    run(Command::new("setcap").args(["cap_net_raw+ep", a.path("new").to_str().unwrap()]));
    assert!(capability(&a.path("new")).contains("cap_net_raw"), "set through mount a");
    write_blocks(&a.path("new"), 1);
    assert_eq!(capability(&a.path("new")), "", "a write through the same mount drops it");

    run(Command::new("setcap").args(["cap_net_raw+ep", b.path("theirs").to_str().unwrap()]));
    assert!(capability(&b.path("theirs")).contains("cap_net_raw"), "set through mount b");
    std::thread::sleep(Duration::from_millis(1200)); // mount a's attribute cache time, 1 s
    write_blocks(&a.path("theirs"), 1);
    assert_eq!(capability(&b.path("theirs")), "", "a write through the other mount drops it");
    assert_eq!(fs::metadata(b.path("new")).unwrap().len(), 257 * 4096);
}
