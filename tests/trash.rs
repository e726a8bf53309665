//! The trash with real processes: a master, chunkservers, the client library and the `mfsha`
//! trash tools. A deleted file keeps its chunk copies while it is in the trash; once its trash
//! time passes the leader purges it and every copy disappears from the chunkservers' disks.

use crate::chunks::scenario::*;
use mfsha_mount::client::Caller;
use std::time::Duration;

/// Master settings: purge rounds every 100 ms (the default is 1 s).
const FAST_TRASH_YAML: &str = "trash:\n  purge_interval_ms: 100\n  purge_batch: 1000\n";

/// Chunk files of `chunk_id` on every chunkserver of the cluster.
fn copies_on_disk(cluster: &crate::util::Cluster, chunk_id: u64) -> usize {
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
