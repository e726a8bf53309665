//! The trash with real processes: a master, chunkservers, the client library and the `mfsha`
//! trash tools. A deleted file keeps its chunk copies while it is in the trash; once its trash
//! time passes the leader purges it and every copy disappears from the chunkservers' disks.

use crate::chunks::scenario::*;
use crate::util::{mfsha, Cluster};
use mfsha_mount::client::Caller;
use std::time::Duration;

/// Master settings: purge rounds every 100 ms (the default is 1 s).
const FAST_TRASH_YAML: &str = "trash:\n  purge_interval_ms: 100\n  purge_batch: 1000\n";

/// Chunk files of `chunk_id` on every chunkserver of the cluster.
fn copies_on_disk(cluster: &Cluster, chunk_id: u64) -> usize {
    let dirs = cluster.chunkservers.iter().flat_map(|cs| cs.dirs.iter());
    dirs.filter(|dir| chunk_file(dir, chunk_id).is_some()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunks_of_a_purged_file_are_deleted_from_the_chunkservers_disks() {
    let cluster = cluster_with(3, FAST_TRASH_YAML).await;
    let client = connect(&cluster).await;
    let kept = random_data(1 << 20);
    write(&client, "/kept", &kept).await;
    write(&client, "/doomed", &random_data(3 << 20)).await;
    let doomed = client.resolve("/doomed").await.unwrap();
    client.set_trash_time(Caller::ROOT, doomed.ino, 2, false).await.unwrap();
    let chunk = file_info(&client, "/doomed").await.remove(0);
    let kept_chunk = file_info(&client, "/kept").await.remove(0);
    assert_eq!(copies_on_disk(&cluster, chunk.chunk_id), 2, "goal 2 puts two copies on disk");

    client.remove_file(Caller::ROOT, "/doomed").await.unwrap();
    // In the trash the data stays (it may be undeleted): the copies are still there half-way
    // through the trash time.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(copies_on_disk(&cluster, chunk.chunk_id), 2, "a trashed file keeps its copies");

    wait_for(&cluster, "the purged file's chunk files to go", Duration::from_secs(20), || async {
        copies_on_disk(&cluster, chunk.chunk_id) == 0
    })
    .await;
    assert_eq!(client.getattr(doomed.ino).await, Err(mfsha_proto::types::Status::NotFound));
    // Nothing else was touched.
    assert_eq!(copies_on_disk(&cluster, kept_chunk.chunk_id), 2);
    assert_eq!(sha256(&client.read_file("/kept").await.unwrap()), sha256(&kept));
    close(&client).await;
}

/// Runs `mfsha ARGS -H MASTER`; (success, stdout, stderr).
fn tool(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    let master = cluster.master_addr();
    let mut full = args.to_vec();
    full.extend(["-H", &master]);
    let out = mfsha(&full);
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Runs a tool that must succeed; its stdout.
fn ok(cluster: &Cluster, args: &[&str]) -> String {
    let (success, out, err) = tool(cluster, args);
    assert!(success, "mfsha {args:?} failed:\n{out}{err}");
    out
}

/// `mfsha trash list --json`: (inode, path, deleted_at secs, trash_seconds).
fn listed(cluster: &Cluster) -> Vec<(u64, String, i64, u32)> {
    let json: serde_json::Value = serde_json::from_str(&ok(cluster, &["trash", "list", "--json"]))
        .expect("trash list --json prints JSON");
    let entries = json.as_array().expect("a JSON array").iter();
    entries
        .map(|e| {
            let secs = e["deleted_at"]["secs"].as_i64().unwrap();
            let (ino, path) = (e["ino"].as_u64().unwrap(), e["path"].as_str().unwrap().into());
            (ino, path, secs, e["trash_seconds"].as_u64().unwrap() as u32)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trash_tools_list_undelete_and_purge_and_set_trash_times() {
    let cluster = cluster(2).await;
    let client = connect(&cluster).await;
    let (f_data, g_data) = (random_data(1 << 20), random_data(2 << 20));
    write(&client, "/dir/f", &f_data).await;
    write(&client, "/dir/g", &g_data).await;
    assert_eq!(ok(&cluster, &["gettrashtime", "/dir/f"]), "/dir/f: 86400\n");
    let set = ok(&cluster, &["settrashtime", "-r", "3600", "/dir"]);
    assert!(set.starts_with("/dir:\n inodes with trashtime changed:"), "{set}");
    assert!(set.lines().nth(1).unwrap().trim_end().ends_with(" 3"), "{set}");
    assert_eq!(ok(&cluster, &["gettrashtime", "/dir/g"]), "/dir/g: 3600\n");
    assert_eq!(ok(&cluster, &["settrashtime", "7200", "/dir/g"]), "/dir/g: 7200\n");
    let (f, g) = (client.resolve("/dir/f").await.unwrap(), client.resolve("/dir/g").await.unwrap());
    let g_chunk = file_info(&client, "/dir/g").await.remove(0).chunk_id;

    client.remove_file(Caller::ROOT, "/dir/f").await.unwrap();
    client.remove_file(Caller::ROOT, "/dir/g").await.unwrap();
    let list = listed(&cluster);
    let got: Vec<(u64, &str, u32)> = list.iter().map(|e| (e.0, e.1.as_str(), e.3)).collect();
    assert_eq!(got, [(f.ino, "/dir/f", 3600), (g.ino, "/dir/g", 7200)]);
    let now = mfsha_proto::types::Timestamp::now().secs;
    assert!(list.iter().all(|e| (now - 60..=now).contains(&e.2)), "deleted just now: {list:?}");
    let text = ok(&cluster, &["trash", "list"]);
    let line = text.lines().find(|l| l.ends_with("  /dir/g")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.trim_start().starts_with(&g.ino.to_string()), "{text}");
    assert_eq!(line.split("  ").filter(|p| p.contains(':')).count(), 2, "two times: {line}");

    // Undelete by path: the file is back with its data (its chunks were kept).
    let out = ok(&cluster, &["trash", "undelete", "/dir/f"]);
    assert_eq!(out, format!("/dir/f: undeleted (inode {})\n", f.ino));
    assert_eq!(sha256(&client.read_file("/dir/f").await.unwrap()), sha256(&f_data));
    // A second undelete finds nothing; a name taken again blocks an undelete by inode.
    let (success, _, err) = tool(&cluster, &["trash", "undelete", "/dir/f"]);
    assert!(!success && err.contains("no deleted file /dir/f"), "{err}");
    write(&client, "/dir/g", b"new g").await;
    let (success, _, err) = tool(&cluster, &["trash", "undelete", &g.ino.to_string()]);
    assert!(!success && err.contains("name is taken"), "{err}");

    // Purge now: gone from the trash, and its chunk copies from the disks.
    let out = ok(&cluster, &["trash", "purge", &g.ino.to_string()]);
    assert_eq!(out, format!("inode {}: purged\n", g.ino));
    assert!(listed(&cluster).is_empty());
    let (success, _, err) = tool(&cluster, &["trash", "purge", &g.ino.to_string()]);
    assert!(!success && err.contains("is not in the trash"), "{err}");
    wait_for(&cluster, "the purged file's copies to go", Duration::from_secs(20), || async {
        copies_on_disk(&cluster, g_chunk) == 0
    })
    .await;
    assert_eq!(client.read_file("/dir/g").await.unwrap(), b"new g");
    close(&client).await;
}
