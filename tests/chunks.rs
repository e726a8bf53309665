//! Chunkservers, the data path and the master's replication engine, with real processes:
//! one master, several `mfsha chunkserver`s, the client library as the reader and writer.
//!
//! Sizes here are at most two chunks so the default suite stays fast; `tests/slow/` runs the
//! same kill-during-read scenario with 256 MiB: `cargo test --workspace --test slow`.

pub mod scenario;

use crate::util::{mfsha, Cluster};
use mfsha_mount::client::Caller;
use mfsha_proto::data::{DataReply, DataRequest};
use mfsha_proto::rpc::RpcClient;
use mfsha_proto::types::{Reply, Status};
use scenario::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(40);

/// Two chunks (72 MiB): the killed server held chunk 0 (stale after the write made while it
/// was down) and possibly chunk 1 (surplus once re-replicated).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_survives_a_holder_killed_mid_read_and_copies_are_restored_and_cleaned() {
    kill_during_read(72 << 20, LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn goal_3_file_is_readable_with_two_of_three_servers_dead() {
    let mut cluster = cluster(3).await;
    let client = connect(&cluster).await;
    let dir = client.mkdir_all(Caller::ROOT, "/g3", 0o755).await.unwrap();
    client.set_goal(Caller::ROOT, dir.ino, 3, false).await.unwrap();
    let data = random_data(5 << 20);
    write(&client, "/g3/file", &data).await;
    assert!(
        has_exactly(&client, "/g3/file", 3, false).await,
        "{:?}",
        file_info(&client, "/g3/file").await
    );
    close(&client).await;
    cluster.kill_chunkserver(0);
    cluster.kill_chunkserver(2);
    let client = connect(&cluster).await;
    let back = client.read_file("/g3/file").await.expect("readable from the one server left");
    assert_eq!(sha256(&back), sha256(&data));
    close(&client).await;
}

/// A finished write releases its chunk at once (`WriteChunkEnd`), so a copy lost right after
/// the write is replaced within seconds, not after the 120 s write lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_lost_right_after_a_write_is_replaced_at_once() {
    let mut cluster = cluster(3).await;
    let client = connect(&cluster).await;
    write(&client, "/fresh", &random_data(1 << 20)).await;
    let info = file_info(&client, "/fresh").await;
    let victim = server_by_port(&cluster, info[0].copies[0].server.port);
    let port = cluster.chunkservers[victim].port;
    cluster.kill_chunkserver(victim);
    wait_for(
        &cluster,
        "a new second copy (is the chunk still write-locked?)",
        Duration::from_secs(15),
        || async {
            has_exactly(&client, "/fresh", 2, false).await
                && file_info(&client, "/fresh").await[0]
                    .copies
                    .iter()
                    .all(|c| c.server.port != port)
        },
    )
    .await;
    close(&client).await;
}

/// Reads one chunk straight from a chunkserver, as a client's data path would.
async fn read_direct(port: u16, chunk_id: u64, version: u32, size: u32) -> Reply<DataReply> {
    let client: RpcClient<DataRequest, Reply<DataReply>> =
        RpcClient::connect(&format!("127.0.0.1:{port}")).await.unwrap();
    let token = Default::default(); // a cluster without a secret asks for no token
    client.call(DataRequest::Read { chunk_id, version, offset: 0, size, token }).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flipped_byte_is_never_returned_and_the_copy_is_replaced() {
    let cluster = cluster(3).await;
    let client = connect(&cluster).await;
    let data = random_data(3 << 20);
    write(&client, "/flip", &data).await;
    let chunk = file_info(&client, "/flip").await.remove(0);
    let bad = server_by_port(&cluster, chunk.copies[0].server.port);
    let path =
        chunk_file(&cluster.chunkservers[bad].dirs[0], chunk.chunk_id).expect("chunk file on disk");
    flip_byte(&path, CHUNK_DATA_OFFSET + 1_000_000);
    // The damaged server refuses to return the block; a client reading the file gets the
    // right bytes from the other copy.
    let port = cluster.chunkservers[bad].port;
    assert_eq!(
        read_direct(port, chunk.chunk_id, chunk.version, 2 << 20).await,
        Err(Status::Checksum)
    );
    let back = client.read_file("/flip").await.unwrap();
    assert_eq!(sha256(&back), sha256(&data));
    // The report makes the master copy the chunk elsewhere and delete the damaged copy.
    wait_for(&cluster, "the damaged copy replaced", LIMIT, || async {
        has_exactly(&client, "/flip", 2, false).await
            && file_info(&client, "/flip").await[0].copies.iter().all(|c| c.server.port != port)
            && chunk_file(&cluster.chunkservers[bad].dirs[0], chunk.chunk_id).is_none()
    })
    .await;
    assert_eq!(sha256(&client.read_file("/flip").await.unwrap()), sha256(&data));
    close(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scrub_finds_a_flipped_byte_nobody_reads() {
    let mut cluster = Cluster::new();
    cluster.master_extra_yaml = FAST_MASTER_YAML.to_string();
    cluster.start_master();
    for _ in 0..3 {
        let i = cluster.add_chunkserver(1);
        cluster.chunkservers[i].scrub_mib_per_sec = 200.0;
        cluster.restart_chunkserver(i);
    }
    let client = connect(&cluster).await;
    wait_for(&cluster, "registration", LIMIT, || async {
        status(&client).await.chunkservers.len() == 3
    })
    .await;
    let data = random_data(1 << 20);
    write(&client, "/scrubbed", &data).await;
    let chunk = file_info(&client, "/scrubbed").await.remove(0);
    let bad = server_by_port(&cluster, chunk.copies[1].server.port);
    let path = chunk_file(&cluster.chunkservers[bad].dirs[0], chunk.chunk_id).unwrap();
    flip_byte(&path, CHUNK_DATA_OFFSET + 12_345);
    let port = cluster.chunkservers[bad].port;
    wait_for(
        &cluster,
        "the scrub to report the copy and the master to replace it",
        LIMIT,
        || async {
            has_exactly(&client, "/scrubbed", 2, false).await
                && file_info(&client, "/scrubbed").await[0]
                    .copies
                    .iter()
                    .all(|c| c.server.port != port)
        },
    )
    .await;
    assert!(
        cluster.chunkserver_log(bad).contains("CRC mismatch"),
        "{}",
        cluster.chunkserver_log(bad)
    );
    close(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_marked_for_removal_is_drained_and_reported_safe() {
    let mut cluster = cluster(3).await;
    let client = connect(&cluster).await;
    let files: Vec<String> = (0..6).map(|i| format!("/drain/f{i}")).collect();
    for f in &files {
        write(&client, f, &random_data(300 << 10)).await;
    }
    close(&client).await;
    assert!(
        !chunk_files(&cluster.chunkservers[0].dirs[0]).is_empty(),
        "server 0 holds some copies"
    );
    // Mark server 0's disk while the master is down, so that when everything is back the
    // only reason to copy chunks is the mark (not a server that was away).
    cluster.kill_master();
    cluster.stop_chunkserver(0);
    cluster.chunkservers[0].marked = vec![true];
    cluster.restart_chunkserver(0);
    cluster.start_master();
    let client = connect(&cluster).await;
    let port0 = cluster.chunkservers[0].port;
    wait_for(
        &cluster,
        "every chunk at goal without the marked disk, and the disk reported safe",
        LIMIT,
        || async {
            for f in &files {
                if !has_exactly(&client, f, 2, true).await {
                    return false;
                }
            }
            let s = status(&client).await;
            let zero = s.chunkservers.iter().find(|c| c.addr.ends_with(&format!(":{port0}")));
            zero.is_some_and(|c| c.disks.iter().all(|d| d.marked_for_removal && d.safe_to_remove))
        },
    )
    .await;
    let mut on_zero = Vec::new();
    for f in &files {
        on_zero.extend(
            file_info(&client, f)
                .await
                .into_iter()
                .flat_map(|c| c.copies)
                .filter(|c| c.server.port == port0),
        );
    }
    assert!(!on_zero.is_empty(), "the marked disk's copies stay until it is pulled");
    assert!(on_zero.iter().all(|c| c.state == "MARKED FOR REMOVAL"), "{on_zero:?}");
    // The drain was reported as long work from start to end (the engine's next pass sees it
    // finished), and is no longer under way.
    let lines =
        ["drain of disks marked for removal started", "drain of disks marked for removal finished"];
    wait_log_lines(&cluster, &lines).await;
    assert!(status(&client).await.long_work.is_empty(), "nothing is under way any more");
    // Pulling the disk now loses nothing.
    cluster.kill_chunkserver(0);
    for f in &files {
        assert_eq!(client.read_file(f).await.unwrap().len(), 300 << 10);
    }
    close(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_disk_is_marked_and_its_chunks_re_replicated() {
    let cluster = cluster(3).await;
    let client = connect(&cluster).await;
    let mut sums = Vec::new();
    for i in 0..4 {
        let data = random_data(500 << 10);
        write(&client, &format!("/dmg/f{i}"), &data).await;
        sums.push(sha256(&data));
    }
    // The disk goes bad under the running server: its directory is replaced by a file
    // (tests run as root, so permissions cannot make it unreadable).
    let disk = cluster.chunkservers[1].dirs[0].clone();
    std::fs::rename(&disk, disk.with_extension("gone")).unwrap();
    std::fs::write(&disk, b"not a directory any more").unwrap();
    let port1 = cluster.chunkservers[1].port;
    wait_for(
        &cluster,
        "the disk reported damaged and every chunk back at goal 2",
        LIMIT,
        || async {
            let s = status(&client).await;
            let damaged = s
                .chunkservers
                .iter()
                .filter(|c| c.addr.ends_with(&format!(":{port1}")))
                .flat_map(|c| &c.disks)
                .any(|d| d.damaged);
            let mut at_goal = true;
            for i in 0..4 {
                let path = format!("/dmg/f{i}");
                at_goal &= has_exactly(&client, &path, 2, false).await
                    && file_info(&client, &path)
                        .await
                        .iter()
                        .flat_map(|c| &c.copies)
                        .all(|c| c.server.port != port1);
            }
            damaged && at_goal
        },
    )
    .await;
    for (i, sum) in sums.iter().enumerate() {
        assert_eq!(&sha256(&client.read_file(&format!("/dmg/f{i}")).await.unwrap()), sum);
    }
    wait_log_lines(&cluster, &["re-replication started", "re-replication finished"]).await;
    close(&client).await;
}

/// Waits (bounded) until the master's whole log holds every one of `lines`.
async fn wait_log_lines(cluster: &Cluster, lines: &[&str]) {
    let path = cluster.path().join("master.log");
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        let missing: Vec<&&str> = lines.iter().filter(|l| !log.contains(**l)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the master log lacks {missing:?}:\n{}",
            cluster.master_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tools_print_file_and_tree_info_and_setgoal_r_drives_replication() {
    let cluster = cluster(3).await;
    let client = connect(&cluster).await;
    let big = random_data((64 << 20) + 100_000);
    write(&client, "/tree/big", &big).await;
    write(&client, "/tree/sub/a", &random_data(1 << 20)).await;
    write(&client, "/tree/sub/b", b"small").await;
    let master = cluster.master_addr();
    let run = |args: &[&str]| {
        let mut full = vec![args[0], "-H", &master];
        full.extend_from_slice(&args[1..]);
        let out = mfsha(&full);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "mfsha {full:?} failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let info = run(&["fileinfo", "/tree/big"]);
    assert!(info.starts_with("/tree/big:\n"), "{info}");
    assert!(info.contains("\tchunk 0: ") && info.contains("\tchunk 1: "), "{info}");
    assert_eq!(info.matches("(status:VALID)").count(), 4, "{info}");
    for copy in file_info(&client, "/tree/big").await.iter().flat_map(|c| &c.copies) {
        assert!(
            info.contains(&format!("copy 1: {}", copy.server))
                || info.contains(&format!("copy 2: {}", copy.server)),
            "{info}"
        );
    }
    let check = run(&["checkfile", "/tree/big"]);
    assert!(
        check
            .lines()
            .any(|l| l.starts_with(" chunks with 2 copies:") && l.trim_end().ends_with(" 2")),
        "{check}"
    );
    let dir = run(&["dirinfo", "/tree"]);
    let field = |name: &str| -> u64 {
        let line = dir
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {dir}"));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    assert_eq!((field("inodes:"), field("directories:"), field("files:")), (5, 2, 3), "{dir}");
    assert_eq!(field("chunks:"), 4, "{dir}");
    assert_eq!(field("length:"), big.len() as u64 + (1 << 20) + 5, "{dir}");
    assert_eq!(field("realsize:"), 2 * field("size:"), "{dir}");
    assert_eq!(run(&["getgoal", "/tree/big"]), "/tree/big: 2\n");
    let set = run(&["setgoal", "-r", "3", "/tree"]);
    assert!(
        set.contains("inodes with goal changed:")
            && set.lines().nth(1).unwrap().trim_end().ends_with(" 5"),
        "{set}"
    );
    assert_eq!(run(&["getgoal", "/tree/sub/a"]), "/tree/sub/a: 3\n");
    wait_for(&cluster, "replication to follow the new goal", LIMIT, || async {
        has_exactly(&client, "/tree/big", 3, false).await
            && has_exactly(&client, "/tree/sub/a", 3, false).await
    })
    .await;
    let check = run(&["checkfile", "/tree/big"]);
    assert!(check.contains(" chunks with 3 copies:"), "{check}");
    close(&client).await;
}

fn flip_byte(path: &std::path::Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    file.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x01;
    file.write_all_at(&b, at).unwrap();
    file.sync_all().unwrap();
}

/// `mfsha bench io` starts its own master and three chunkservers, writes and reads a file
/// with goal 1, 2 and 3 (checking what it reads back), prints the figures next to the local
/// disk's, and leaves nothing behind in its work directory.
#[test]
fn bench_io_runs_end_to_end_on_three_chunkservers() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("bench");
    let out = mfsha(&["bench", "io", "--size-mib", "8", "--dir", work.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "bench io failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figure = |line: &str, after: &str| -> f64 {
        let rest = &line[line.find(after).unwrap_or_else(|| panic!("no {after:?} in {line:?}"))
            + after.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let local = text.lines().find(|l| l.starts_with("local disk:")).expect("local disk line");
    assert!(figure(local, "write") > 0.0 && figure(local, "read") > 0.0, "{text}");
    for goal in 1..=3 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("goal {goal}:")))
            .unwrap_or_else(|| panic!("no goal {goal} line in {text}"));
        assert!(figure(line, "write") > 0.0 && figure(line, "read") > 0.0, "{line}");
        assert!(line.contains("% of local"), "{line}");
    }
    let left: Vec<_> = std::fs::read_dir(&work).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "the bench left {left:?} behind");
}

/// As with MooseFS's tools, a path on a mounted filesystem is enough: the tools find the
/// mount's master and the path inside it (an explicit `-H` naming nothing is not used), for
/// absolute paths and paths relative to a directory inside the mount.
#[test]
fn tools_take_a_path_on_a_mounted_filesystem() {
    let cluster = crate::mount::cluster(2);
    let mount = crate::mount::Mount::start(&cluster, "mnt", &[]);
    std::fs::create_dir_all(mount.path("top/sub")).unwrap();
    let data = random_data(2 << 20);
    std::fs::write(mount.path("top/sub/f"), &data).unwrap();
    let nobody = format!("127.0.0.1:{}", crate::util::free_port());
    let run = |cwd: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(crate::util::mfsha_bin())
            .args(args)
            .env("MFSHA_MASTER", &nobody)
            .current_dir(cwd)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "mfsha {args:?} in {cwd:?} failed: {text}{}\nmount log:\n{}\nmounts:\n{}",
            String::from_utf8_lossy(&out.stderr),
            mount.log(),
            std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
        );
        text
    };
    let root = std::path::Path::new("/");
    let file = mount.path("top/sub/f");
    let file = file.to_str().unwrap();
    let info = run(root, &["fileinfo", "-H", &nobody, file]);
    assert!(info.starts_with(&format!("{file}:\n\tchunk 0: ")), "{info}");
    assert_eq!(info.matches("(status:VALID)").count(), 2, "{info}");
    assert_eq!(run(root, &["getgoal", file]), format!("{file}: 2\n"));
    let top = mount.path("top");
    let set = run(root, &["setgoal", "-r", "1", top.to_str().unwrap()]);
    assert!(set.lines().nth(1).unwrap().trim_end().ends_with(" 3"), "{set}");
    // Relative to a directory inside the mount; the master side agrees.
    assert_eq!(run(&top, &["getgoal", "sub/f"]), "sub/f: 1\n");
    let check = run(&top, &["checkfile", "sub/f"]);
    assert!(check.starts_with("sub/f:\n"), "{check}");
    let dir = run(&mount.dir, &["dirinfo", "."]);
    let field = |name: &str| -> u64 {
        let line = dir.lines().find(|l| l.trim_start().starts_with(name)).unwrap();
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    assert_eq!((field("inodes:"), field("files:"), field("length:")), (4, 1, 2 << 20), "{dir}");
    // The same file by its in-filesystem path on the master, as before.
    assert_eq!(
        run(root, &["getgoal", "-H", &cluster.master_addr(), "/top/sub/f"]),
        "/top/sub/f: 1\n"
    );
}

/// Writes `patch` at `offset` of `path` through an open handle (durable when it returns).
async fn patch_file(client: &mfsha_mount::client::Client, path: &str, offset: u64, patch: &[u8]) {
    let attr = client.resolve(path).await.unwrap();
    let (fh, _) = client.open(Caller::ROOT, attr.ino, libc::O_WRONLY).await.unwrap();
    client.write(fh, offset, patch).await.unwrap_or_else(|e| panic!("patching {path}: {e}"));
    client.release(fh).await.unwrap_or_else(|e| panic!("closing {path}: {e}"));
}

/// Both copies lost their newest version in turn: server A missed a write, then B (the only
/// one with it) died. The master accepts A's older copy rather than losing the chunk, under a
/// version number never used before, so that when B returns its copy (which has a write A
/// never saw, at a version the old numbering would issue again) is stale, not "valid" with
/// different data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_newest_surviving_copy_is_accepted_and_a_returning_newer_one_is_discarded() {
    let mut cluster = cluster(2).await;
    let client = connect(&cluster).await;
    let mut expect = random_data(1 << 20);
    write(&client, "/v", &expect).await;
    cluster.kill_chunkserver(0);
    patch_file(&client, "/v", 0, &random_data(4096)).await; // only server 1 has this
    cluster.kill_chunkserver(1);
    cluster.restart_chunkserver(0);
    wait_for(&cluster, "server 0's older copy accepted", LIMIT, || async {
        has_exactly(&client, "/v", 1, false).await
    })
    .await;
    assert_eq!(sha256(&client.read_file("/v").await.unwrap()), sha256(&expect));
    let patch = random_data(4096);
    patch_file(&client, "/v", 8192, &patch).await;
    expect[8192..8192 + 4096].copy_from_slice(&patch);
    cluster.restart_chunkserver(1);
    wait_for(&cluster, "two valid copies, server 1's replaced", LIMIT, || async {
        status(&client).await.chunkservers.len() == 2 && has_exactly(&client, "/v", 2, false).await
    })
    .await;
    let chunk = file_info(&client, "/v").await.remove(0);
    for copy in &chunk.copies {
        let got = match read_direct(copy.server.port, chunk.chunk_id, chunk.version, 1 << 20).await
        {
            Ok(DataReply::Data { data, .. }) => data.into_vec(),
            other => panic!("reading the copy on {}: {other:?}", copy.server),
        };
        assert_eq!(sha256(&got), sha256(&expect), "the copy on {} differs", copy.server);
    }
    close(&client).await;
}

/// A file deleted for good (trash time 0) leaves no chunk files behind on any chunkserver;
/// a file kept in the trash keeps its copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_of_a_file_gone_for_good_are_deleted_from_the_chunkservers() {
    let cluster = cluster(3).await;
    let client = connect(&cluster).await;
    let now = client.mkdir_all(Caller::ROOT, "/now", 0o755).await.unwrap();
    client.set_trash_time(Caller::ROOT, now.ino, 0, false).await.unwrap();
    write(&client, "/now/gone", &random_data(3 << 20)).await;
    write(&client, "/kept", &random_data(1 << 20)).await;
    let kept = file_info(&client, "/kept").await.remove(0).chunk_id;
    let all_files = || -> Vec<std::path::PathBuf> {
        cluster.chunkservers.iter().flat_map(|c| chunk_files(&c.dirs[0])).collect()
    };
    assert_eq!(all_files().len(), 4, "two copies of each file's chunk");
    client.remove_file(Caller::ROOT, "/now/gone").await.unwrap();
    client.remove_file(Caller::ROOT, "/kept").await.unwrap();
    close(&client).await; // nothing holds the files open any more
    let client = connect(&cluster).await;
    wait_for(&cluster, "the deleted file's two copies removed", LIMIT, || async {
        let left = all_files();
        let prefix = format!("chunk_{kept:016X}_");
        left.len() == 2
            && left.iter().all(|p| p.file_name().unwrap().to_string_lossy().starts_with(&prefix))
    })
    .await;
    // The master's per-server chunk counts follow the deletions it sent, which the servers
    // confirm asynchronously: the disk may be clean a moment before the count is.
    wait_for(&cluster, "the master to count the two copies left", LIMIT, || async {
        status(&client).await.chunkservers.iter().map(|c| c.chunks).sum::<u64>() == 2
    })
    .await;
    close(&client).await;
}

/// A chunkserver whose disk died while it was down starts on its other disks and shows the
/// dead one as damaged; with no usable disk at all it refuses to start, naming the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunkserver_starts_with_a_dead_disk_and_reports_it() {
    let mut cluster = Cluster::new();
    cluster.master_extra_yaml = FAST_MASTER_YAML.to_string();
    cluster.start_master();
    let cs = cluster.add_chunkserver(2);
    let dead = cluster.chunkservers[cs].dirs[0].clone();
    std::fs::remove_dir(&dead).unwrap();
    std::fs::write(&dead, b"not a directory").unwrap();
    cluster.restart_chunkserver(cs);
    let client = connect(&cluster).await;
    wait_for(&cluster, "registration with one damaged disk", LIMIT, || async {
        let s = status(&client).await;
        s.chunkservers.len() == 1 && {
            let disks = &s.chunkservers[0].disks;
            disks.len() == 2 && disks[0].damaged && !disks[1].damaged
        }
    })
    .await;
    let dir = client.mkdir_all(Caller::ROOT, "/one", 0o755).await.unwrap();
    client.set_goal(Caller::ROOT, dir.ino, 1, false).await.unwrap();
    let data = random_data(1 << 20);
    write(&client, "/one/f", &data).await;
    assert_eq!(chunk_files(&cluster.chunkservers[cs].dirs[1]).len(), 1, "stored on the good disk");
    assert_eq!(sha256(&client.read_file("/one/f").await.unwrap()), sha256(&data));
    close(&client).await;

    let config = cluster.path().join("only-dead.yaml");
    let yaml = format!(
        "data_dirs:\n  - path: {}\nmaster: {}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:0\n",
        dead.display(),
        cluster.master_addr(),
        crate::util::free_port()
    );
    std::fs::write(&config, yaml).unwrap();
    let out = mfsha(&["chunkserver", "-c", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with no usable disk: {err}");
    assert!(
        err.contains("no usable data directory") && err.contains(&*dead.to_string_lossy()),
        "{err}"
    );
}

/// After a master restart the engine waits `replication_delay_init_ms` for chunkservers to
/// register: a server that comes back a little late finds its copies still wanted, and
/// nothing was replicated or deleted meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_master_waits_for_chunkservers_before_replicating() {
    let mut cluster = cluster(3).await;
    let client = connect(&cluster).await;
    let files: Vec<String> = (0..6).map(|i| format!("/wait/f{i}")).collect();
    for f in &files {
        write(&client, f, &random_data(200 << 10)).await;
    }
    let mut before = Vec::new();
    for f in &files {
        before.push(file_info(&client, f).await);
    }
    close(&client).await;
    let late = server_by_port(&cluster, before[0][0].copies[0].server.port);
    cluster.kill_master();
    for i in 0..3 {
        cluster.stop_chunkserver(i);
    }
    let log_path = cluster.path().join("master.log");
    let logged_before = std::fs::read_to_string(&log_path).unwrap().len();
    cluster.master_extra_yaml = FAST_MASTER_YAML
        .replace("replication_delay_init_ms: 300", "replication_delay_init_ms: 2000");
    cluster.start_master();
    for i in (0..3).filter(|&i| i != late) {
        cluster.restart_chunkserver(i);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.restart_chunkserver(late);
    let client = connect(&cluster).await;
    wait_for(&cluster, "every server registered", LIMIT, || async {
        status(&client).await.chunkservers.len() == 3
    })
    .await;
    // Well past the delay: the engine has run many passes with everything registered.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let since = std::fs::read_to_string(&log_path).unwrap()[logged_before..].to_string();
    assert!(since.contains("waiting for chunkservers to register"), "{since}");
    let acted: Vec<&str> = since
        .lines()
        .filter(|l| {
            l.contains("deleting copy") || l.contains("replicating") && !l.contains("before")
        })
        .collect();
    assert!(acted.is_empty(), "the engine acted on copies that were only late:\n{acted:#?}");
    for (f, earlier) in files.iter().zip(&before) {
        assert_eq!(&file_info(&client, f).await, earlier, "{f}");
    }
    close(&client).await;
}

/// `mfsha status --servers --disks --chunks --sessions`, text and JSON, on real daemons: the
/// rows name the running chunkservers and their disks, the matrix counts the files' chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_views_list_servers_disks_chunks_and_sessions() {
    let cluster = cluster(3).await;
    let client = connect(&cluster).await;
    for i in 0..3 {
        write(&client, &format!("/views/f{i}"), &random_data(10_000)).await;
    }
    let master = cluster.master_addr();
    let views = ["--servers", "--disks", "--chunks", "--sessions"];
    let run = |json: bool| {
        let mut args = vec!["status", "-H", &master];
        args.extend_from_slice(&views);
        if json {
            args.push("--json");
        }
        let out = mfsha(&args);
        assert!(out.status.success(), "mfsha {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    wait_for(&cluster, "three chunks with both copies in the matrix", LIMIT, || async {
        let json: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
        json["chunks"]["matrix"][2][2] == 3
    })
    .await;
    let json: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    let servers = json["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "{json}");
    for cs in &cluster.chunkservers {
        let port = format!(":{}", cs.port);
        assert!(servers.iter().any(|s| s["addr"].as_str().unwrap().ends_with(&port)), "{json}");
    }
    let disks = json["disks"].as_array().unwrap();
    assert_eq!(disks.len(), cluster.chunkservers.iter().map(|c| c.dirs.len()).sum::<usize>());
    assert!(disks.iter().all(|d| d["total_bytes"].as_u64().unwrap() > 0 && d["damaged"] == false));
    assert_eq!(
        (json["chunks"]["total"].as_u64(), json["chunks"]["stable"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(json["sessions"].as_array().unwrap().len(), 1, "the test's client session: {json}");
    let text = run(false);
    for part in [
        "chunkserver",
        "used%",
        "valid copies (columns) against goal (rows)",
        "3 stable",
        "open files",
    ] {
        assert!(text.contains(part), "{part:?} missing:\n{text}");
    }
    assert!(text.contains(&cluster.chunkservers[0].dirs[0].display().to_string()), "{text}");
    // `mfsha status | head` ends quietly when the reader goes away (it once panicked on
    // "Broken pipe"): the pipe's read end is closed before the tool has its answer to print.
    let mut piped = std::process::Command::new(crate::util::mfsha_bin())
        .args(["status", "-H", &master, "--servers", "--disks", "--chunks", "--sessions"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(piped.stdout.take());
    let out = piped.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "mfsha status into a closed pipe: {stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?} {stderr}", out.status);
    close(&client).await;
}

/// A tmpfs mounted over a data directory and unmounted at the end, whatever happens.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size_mib: u64) -> Tmpfs {
        let size = format!("size={size_mib}m");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs", dir.to_str().unwrap()])
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "mounting a {size_mib} MiB tmpfs on {} failed (the test needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A disk that really fills up (a 96 MiB tmpfs: ENOSPC from the kernel, no injection) fails
/// the write that filled it with "no space" and is not taken for damaged: what was written
/// before reads back, and once space is freed new writes succeed on the same disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_that_fills_up_says_no_space_and_stays_in_service() {
    let mut cluster = Cluster::new();
    cluster.master_extra_yaml = FAST_MASTER_YAML.to_string();
    cluster.start_master();
    let cs = cluster.add_chunkserver(1);
    let _tmpfs = Tmpfs::mount(&cluster.chunkservers[cs].dirs[0], 96);
    // No reserve: the disk itself must run out, mid-chunk.
    cluster.chunkservers[cs].extra_yaml = "leave_free_mib: 0\n".into();
    cluster.restart_chunkserver(cs);
    let client = connect(&cluster).await;
    wait_for(&cluster, "registration", LIMIT, || async {
        status(&client).await.chunkservers.len() == 1
    })
    .await;
    client.set_trash_time(Caller::ROOT, client.root(), 0, false).await.unwrap();
    let kept = random_data(8 << 20);
    write(&client, "/kept", &kept).await;
    // Two files at once: each chunk is created while 88 MiB are free, then 2 x 60 MiB do
    // not fit, and the kernel says ENOSPC in the middle of a chunk.
    let (one, two) = (random_data(60 << 20), random_data(60 << 20));
    let (a, b) = tokio::join!(
        client.write_file(Caller::ROOT, "/filled", &one),
        client.write_file(Caller::ROOT, "/filled2", &two)
    );
    let failures: Vec<Status> = [a, b].into_iter().filter_map(|r| r.err()).collect();
    // The chunkserver answers "no space"; the client's retry then finds no server with
    // room ("no chunkservers"): the user sees ENOSPC either way.
    assert!(
        !failures.is_empty() && failures.iter().all(|f| f.errno() == libc::ENOSPC),
        "the writes that did not fit must fail with ENOSPC: {failures:?}"
    );
    let disks = status(&client).await.chunkservers[0].disks.clone();
    assert!(disks.iter().all(|d| !d.damaged), "a full disk was marked damaged: {disks:?}");
    assert_eq!(sha256(&client.read_file("/kept").await.unwrap()), sha256(&kept));
    let log = cluster.chunkserver_log(cs);
    assert!(!log.contains("marked damaged"), "chunkserver log:\n{log}");
    // Space comes back when the files go; the same disk takes new data.
    for name in ["/filled", "/filled2"] {
        let _ = client.remove_file(Caller::ROOT, name).await;
    }
    wait_for(&cluster, "space to come back", LIMIT, || async {
        let s = status(&client).await;
        let cs = &s.chunkservers[0];
        cs.total_bytes.saturating_sub(cs.used_bytes) > 70 << 20
    })
    .await;
    let after = random_data(20 << 20);
    write(&client, "/after", &after).await;
    assert_eq!(sha256(&client.read_file("/after").await.unwrap()), sha256(&after));
    close(&client).await;
}

/// An ext4 filesystem on a loop device over an image file: a real disk the test can make
/// fail. [`LoopExt4::shut_down`] is ext4's `EXT4_IOC_SHUTDOWN` (what xfstests' `godown`
/// does): from then on the kernel answers opens, reads and writes on it with EIO, as for a
/// disk that died under a mounted filesystem. (This kernel has no device-mapper for
/// `dm-error`; the shutdown gives the same errors through the same system calls.)
struct LoopExt4 {
    dir: std::path::PathBuf,
    device: String,
}

impl LoopExt4 {
    fn mount(dir: &std::path::Path, image: &std::path::Path, size_mib: u64) -> LoopExt4 {
        let run = |program: &str, args: &[&str]| {
            let out = std::process::Command::new(program).args(args).output().unwrap_or_else(|e| {
                panic!("cannot run {program} (the disk-fault test needs util-linux, e2fsprogs and root): {e}")
            });
            assert!(
                out.status.success(),
                "{program} {args:?} failed (the disk-fault test needs root and loop devices): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let image = image.to_str().unwrap();
        run("truncate", &["-s", &format!("{size_mib}M"), image]);
        run("mkfs.ext4", &["-q", "-F", image]);
        let device = run("losetup", &["-f", "--show", image]);
        let guard = LoopExt4 { dir: dir.to_path_buf(), device: device.clone() };
        run("mount", &[&device, dir.to_str().unwrap()]);
        guard
    }

    /// Every later open, read and write on the filesystem fails with EIO.
    fn shut_down(&self) {
        const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d; // _IOR('X', 125, __u32)
        const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;
        let dir = std::fs::File::open(&self.dir).unwrap();
        let flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
        // SAFETY: a valid descriptor and a pointer to a live u32, as the ioctl takes.
        let rc = unsafe {
            libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&dir), EXT4_IOC_SHUTDOWN, &flags)
        };
        assert_eq!(rc, 0, "EXT4_IOC_SHUTDOWN: {}", std::io::Error::last_os_error());
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::process::Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// (chunk id, version) of the chunk files under a data directory
/// (`chunk_<id:016X>_<version:08X>.mfs`).
fn chunk_ids(dir: &std::path::Path) -> Vec<(u64, u32)> {
    chunk_files(dir)
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.strip_prefix("chunk_")?;
            let id = u64::from_str_radix(name.get(..16)?, 16).ok()?;
            let version = u32::from_str_radix(name.get(17..25)?, 16).ok()?;
            Some((id, version))
        })
        .collect()
}

/// One of a chunkserver's two disks dies under it (real EIO from the kernel): users read
/// every file intact from the other copies, the repeated errors mark that one disk damaged
/// (not the server, not its other disk), its chunks are copied back to goal, and new writes
/// work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_that_returns_real_io_errors_is_retired_alone_and_nothing_is_lost() {
    let mut cluster = Cluster::new();
    cluster.master_extra_yaml = FAST_MASTER_YAML.to_string();
    cluster.start_master();
    let cs = cluster.add_chunkserver(2);
    let dirs = cluster.chunkservers[cs].dirs.clone();
    let disks: Vec<LoopExt4> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| LoopExt4::mount(d, &cluster.path().join(format!("disk{i}.img")), 160))
        .collect();
    cluster.chunkservers[cs].extra_yaml = "leave_free_mib: 0\n".into();
    cluster.restart_chunkserver(cs);
    cluster.start_chunkserver(1);
    let client = connect(&cluster).await;
    wait_for(&cluster, "registration", LIMIT, || async {
        status(&client).await.chunkservers.len() == 2
    })
    .await;
    let mut sums = Vec::new();
    for i in 0..8 {
        let data = random_data(2 << 20);
        write(&client, &format!("/eio/f{i}"), &data).await;
        sums.push(sha256(&data));
    }
    wait_for(&cluster, "two copies of every chunk", LIMIT, || async {
        let mut all = true;
        for i in 0..8 {
            all &= has_exactly(&client, &format!("/eio/f{i}"), 2, false).await;
        }
        all
    })
    .await;
    let on_failing = chunk_ids(&dirs[0]);
    assert!(on_failing.len() >= 2, "the chunks did not spread over both disks: {on_failing:?}");

    disks[0].shut_down();
    // Users never see the failure: every read finds a good copy.
    let reader = connect(&cluster).await;
    for (i, sum) in sums.iter().enumerate() {
        let got = reader.read_file(&format!("/eio/f{i}")).await.unwrap();
        assert_eq!(&sha256(&got), sum, "f{i} after the disk failed");
    }
    // Reads of the failed disk's copies straight from its server: errors, never data.
    let port = cluster.chunkservers[cs].port;
    for &(id, version) in &on_failing {
        let read = read_direct(port, id, version, 4096).await;
        assert!(read.is_err(), "chunk {id:016X} read from a dead disk: {read:?}");
    }
    let failing = dirs[0].display().to_string();
    wait_for(
        &cluster,
        "that one disk marked damaged and every chunk back at goal",
        LIMIT,
        || async {
            let s = status(&client).await;
            let Some(server) =
                s.chunkservers.iter().find(|c| c.addr.ends_with(&format!(":{port}")))
            else {
                return false;
            };
            let damaged: Vec<bool> = server.disks.iter().map(|d| d.damaged).collect();
            let only_failing = server.disks.iter().all(|d| d.damaged == (d.path == failing));
            let mut at_goal = true;
            for i in 0..8 {
                at_goal &= has_exactly(&client, &format!("/eio/f{i}"), 2, false).await;
            }
            only_failing && damaged.len() == 2 && at_goal
        },
    )
    .await;
    // The copies that were on the dead disk are back on the server's good one.
    let healthy: Vec<u64> = chunk_ids(&dirs[1]).into_iter().map(|(id, _)| id).collect();
    for (id, _) in &on_failing {
        assert!(healthy.contains(id), "chunk {id:016X} not copied to the healthy disk");
    }
    let fresh = random_data(3 << 20);
    write(&client, "/eio/after", &fresh).await;
    assert_eq!(sha256(&reader.read_file("/eio/after").await.unwrap()), sha256(&fresh));
    for (i, sum) in sums.iter().enumerate() {
        assert_eq!(&sha256(&reader.read_file(&format!("/eio/f{i}")).await.unwrap()), sum);
    }
    let log = cluster.chunkserver_log(cs);
    let marked = log.lines().any(|l| l.contains("disk marked damaged") && l.contains(&failing));
    assert!(marked && log.contains("os error 5"), "no EIO marking {failing} damaged:\n{log}");
    close(&reader).await;
    close(&client).await;
    drop(cluster);
    drop(disks);
}
