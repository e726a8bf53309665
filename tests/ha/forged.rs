//! A leader's snapshot that does not load — a newer build's format, a damaged blob, or a
//! forgery from a host that holds the cluster secret — stops the follower for good (exit
//! status 65, which the systemd unit does not restart on) with the index and what to do,
//! and nothing of it is stored: not the snapshot, not its term. The node's data is as it was,
//! and once it is started again beside the real leader it serves as before.
//!
//! The test plays master 1 (stopped) towards master 2 on the peer port, with the key: first
//! from another address than master 1 was added with, which is refused before any message
//! (a host with the secret cannot pose as another member), then from master 1's own.

use super::cluster::{runtime, HaCluster, CLUSTER_ID};
use super::retry::addr;
use crate::session::Session;
use crate::util::tail;
use mfsha_proto::cluster_key::{self, ClusterKey, KeyedPort};
use mfsha_proto::frame::{read_frame, write_frame};
use mfsha_proto::peer::PeerMessage;
use mfsha_proto::types::ROOT_INO;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Message, MessageType, Snapshot, SnapshotMetadata};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const LIMIT: Duration = Duration::from_secs(30);

/// A `MsgSnapshot` from node 1 to node 2 at `term`, for `index`, whose blob is not a snapshot.
fn forged_snapshot(term: u64, index: u64) -> Message {
    let mut metadata = SnapshotMetadata { index, term, ..Default::default() };
    metadata.set_conf_state(ConfState { voters: vec![1, 2, 3], ..Default::default() });
    let mut snapshot = Snapshot::default();
    snapshot.set_metadata(metadata);
    snapshot.data = [&b"MFSHMETA"[..], &[0xee; 64]].concat().into();
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgSnapshot);
    (message.from, message.to, message.term) = (1, 2, term);
    message.set_snapshot(snapshot);
    message
}

/// Sends `message` to master 2's peer port from `source` as node 1 does: key proof, Hello,
/// one part.
async fn send_as_node_1(cluster: &HaCluster, source: [u8; 4], message: &Message) {
    let key = ClusterKey::load(&cluster.key_path()).expect("the cluster key");
    let peer = format!("127.0.0.1:{}", cluster.masters[1].ports.peer);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((std::net::Ipv4Addr::from(source), 0).into()).expect("bind the source address");
    let connect = socket.connect(peer.parse().unwrap());
    let mut stream = connect.await.expect("master 2's peer port");
    cluster_key::prove(&mut stream, Some(&key), KeyedPort::Peer).await.expect("key accepted");
    let hello = PeerMessage::Hello { from: 1, to: 2, cluster: CLUSTER_ID.into() };
    write_frame(&mut stream, 0, &hello).await.unwrap();
    let bytes = message.write_to_bytes().unwrap();
    let part = PeerMessage::SnapshotPart {
        total: bytes.len() as u64,
        offset: 0,
        bytes: serde_bytes::ByteBuf::from(bytes),
    };
    write_frame(&mut stream, 0, &part).await.unwrap();
    stream.flush().await.unwrap();
    // `SnapshotDone` (handed to the node), or the close when it stops first.
    let _ = tokio::time::timeout(LIMIT, read_frame::<_, PeerMessage>(&mut stream)).await;
}

#[test]
fn a_leaders_snapshot_that_does_not_load_stops_the_follower_for_good_and_is_not_installed() {
    let mut cluster = HaCluster::start(0);
    let rt = runtime();
    cluster.wait_leader(LIMIT);
    cluster.stop_master(0);
    assert_eq!(cluster.wait_leader(LIMIT), 1, "master 2 leads once master 1 is gone");
    rt.block_on(async { Session::open(&addr(&cluster, 1)).await.mkdir(ROOT_INO, "before").await });
    let before = cluster.status(1).expect("master 2's status");
    let (term, index) = (before.term + 5, before.commit_index + 1000);

    // From another host than node 1 was added with (127.0.0.1): refused before the message.
    rt.block_on(send_as_node_1(&cluster, [127, 0, 0, 2], &forged_snapshot(term, index)));
    std::thread::sleep(Duration::from_millis(500));
    let log = tail(&cluster.masters[1].daemon.as_ref().unwrap().log, 40);
    let refused = "caller says it is node 1 but connects from 127.0.0.2";
    assert!(log.contains(refused), "the log lacks {refused:?}:\n{log}");
    assert!(cluster.masters[1].daemon.as_mut().unwrap().is_running(), "{log}");
    assert_eq!(cluster.status(1).expect("master 2 serves").term, before.term, "{log}");

    rt.block_on(send_as_node_1(&cluster, [127, 0, 0, 1], &forged_snapshot(term, index)));
    let mut daemon = cluster.masters[1].daemon.take().expect("master 2 runs");
    let status = daemon.stop_after_signal(LIMIT);
    let log = tail(&daemon.log, 40);
    assert_eq!(status.code(), Some(65), "master 2 exited with {status}; log:\n{log}");
    let wanted = format!("the leader's snapshot at index {index} (term {term}) does not load");
    assert!(log.contains(&wanted), "the log lacks {wanted:?}:\n{log}");
    assert!(log.contains("nothing of it was installed"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    let data_dir = cluster.path().join("master2");
    let store = mfsha_raft::RaftStore::open(
        &data_dir,
        <mfsha_meta::State as mfsha_raft::StateMachine>::TABLES,
    )
    .unwrap();
    // (Applied batches skip the WAL: after an exit the stored applied index may be behind,
    // as after a crash, and the log replays the rest. It must not be the forged one.)
    let applied = store.applied().0;
    assert!(applied < index, "applied {applied}, the forged snapshot is at {index}");
    assert!(store.latest_snapshot().is_none_or(|s| s.index < index), "the snapshot was stored");
    assert!(store.hard_state().term < term, "the forged term was stored: {:?}", store.hard_state());
    drop(store);

    cluster.start_master(0);
    cluster.start_master(1);
    let leader = cluster.wait_leader(LIMIT);
    rt.block_on(async {
        let session = Session::open(&addr(&cluster, leader)).await;
        assert!(session.list(ROOT_INO).await.contains_key("before"), "the file made before");
    });
}
