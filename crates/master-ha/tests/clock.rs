//! Cluster time in a real master: once an entry from a leader whose clock ran ahead has been
//! applied, this master (whose clock is "behind") stamps the cluster time, not its own, also
//! after a restart.

use mfsha_meta::{Entry, Op};
use mfsha_proto::client::{ClientOp, ClientReply};
use mfsha_proto::types::{Timestamp, ROOT_INO};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_clock_is_behind_the_cluster_time_stamps_the_cluster_time() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = start(dir.path()).await;
    // What an earlier leader with a clock an hour fast would have left in the log.
    let ahead = Timestamp::new(Timestamp::now().secs + 3600, 0);
    let entry = Entry { now: ahead, client: None, op: Op::Noop };
    master.service.meta.propose(entry).await.unwrap();
    assert!(master.service.meta.cluster_now() >= ahead, "proposals never before it");
    let client = Client::connect(&addr).await.unwrap();
    let session = open_session(&client).await;
    let mkdir =
        |name: &str| ClientOp::Mkdir { parent: ROOT_INO, name: name.into(), mode: 0o755, umask: 0 };
    let made = attr(client.call(request(session, 1, mkdir("d"))).await.unwrap());
    assert!(made.mtime >= ahead && made.ctime >= ahead, "{made:?} stamped before {ahead:?}");
    let root =
        attr(client.call(request(session, 0, ClientOp::GetAttr { ino: ROOT_INO })).await.unwrap());
    assert!(root.mtime >= ahead, "the parent's mtime went backwards: {root:?}");
    drop(client);
    master.stop().await.unwrap();
    // The cluster time is replicated state: a restarted master goes on from it.
    let (master, addr) = start(dir.path()).await;
    assert!(master.service.meta.cluster_now() >= ahead);
    let client = Client::connect(&addr).await.unwrap();
    let resumed = hello(&client, Some(session)).await;
    assert!(matches!(resumed, Ok(ClientReply::Session { .. })), "resume: {resumed:?}");
    let again = attr(client.call(request(session, 2, mkdir("e"))).await.unwrap());
    assert!(again.mtime >= made.mtime, "{again:?} is older than {made:?}");
    master.stop().await.unwrap();
}
