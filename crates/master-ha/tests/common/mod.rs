//! Helpers shared by the in-process master tests: a real master (`daemon::start`, real
//! RocksDB in a temporary directory) on 127.0.0.1 ports, and client requests to it.

#![allow(dead_code)] // each test file uses its own subset

use mfsha_master_ha::config::MasterConfig;
use mfsha_master_ha::daemon;
use mfsha_meta::{Entry, Op};
use mfsha_proto::client::{ClientOp, ClientReply, Request};
use mfsha_proto::types::{Reply, SetAttr, ROOT_INO};
use std::time::{Duration, Instant};

pub type Client = mfsha_proto::client::MasterClient;

pub fn config(dir: &std::path::Path) -> MasterConfig {
    let mut config = MasterConfig {
        data_dir: dir.join("master"),
        cluster_id: "test".into(),
        ..MasterConfig::default()
    };
    config.listen.client = "127.0.0.1:0".parse().unwrap();
    config.listen.chunkserver = "127.0.0.1:0".parse().unwrap();
    config.listen.logger = "127.0.0.1:0".parse().unwrap();
    config.listen.peer = "127.0.0.1:0".parse().unwrap();
    config.listen.http = "127.0.0.1:0".parse().unwrap();
    config.raft.tick_ms = 20;
    config
}

pub async fn start(dir: &std::path::Path) -> (daemon::Master, String) {
    start_with(config(dir)).await
}

/// Starts a master with `config` and waits until it leads (a group of one elects itself).
pub async fn start_with(config: MasterConfig) -> (daemon::Master, String) {
    let new_group = !config.data_dir.exists();
    if new_group {
        // A new group is made explicitly, as `mfsha bootstrap` does; a restart reuses it.
        daemon::bootstrap(&config).expect("bootstrap a new group");
    }
    let master = daemon::start(config).await.expect("master starts");
    let addr = master.client_addr.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !master.service.meta.is_leader() {
        assert!(Instant::now() < deadline, "a group of one must elect itself within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if new_group {
        open_root_directory(&master).await;
    }
    (master, addr)
}

/// The tests act as uid 1000 in the root directory, and the master checks permissions as a
/// local filesystem does: root's directory is made writable for everyone (as /tmp is).
async fn open_root_directory(master: &daemon::Master) {
    let set = SetAttr { mode: Some(0o777), ..SetAttr::default() };
    let op = Op::SetAttr { ino: ROOT_INO, set, cow_chunk_id: 0 };
    let entry = Entry { now: master.service.meta.cluster_now(), client: None, op };
    master.service.meta.propose(entry).await.expect("chmod 777 /");
}

pub fn request(session: u64, seq: u64, op: ClientOp) -> Request {
    Request { session, seq, uid: 1000, gid: 1000, groups: Vec::new(), op }
}

/// The token each session of these tests was opened with: its secret for resuming.
static SECRETS: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(Vec::new());

/// Opens a session (`None`, with a fresh token) or resumes one with the token it was opened
/// with here (0 for a session this process did not open: the master refuses it).
pub async fn hello(client: &Client, resume: Option<u64>) -> Reply<ClientReply> {
    let token = match resume {
        Some(session) => {
            let secrets = SECRETS.lock().unwrap();
            secrets.iter().find(|(s, _)| *s == session).map_or(0, |(_, t)| *t)
        }
        None => rand::random::<u64>() | 1,
    };
    let op = ClientOp::Hello {
        session: resume,
        client_info: "test".into(),
        subdir: "/".into(),
        proof: None,
        token,
        version: mfsha_proto::client::VERSION,
    };
    let reply = client.call(request(0, 0, op)).await.unwrap();
    if let (None, Ok(ClientReply::Session { session, .. })) = (resume, &reply) {
        SECRETS.lock().unwrap().push((*session, token));
    }
    reply
}

pub async fn open_session(client: &Client) -> u64 {
    match hello(client, None).await {
        Ok(ClientReply::Session { session, root }) => {
            assert_eq!(root, ROOT_INO);
            session
        }
        other => panic!("Hello answered {other:?}"),
    }
}

pub fn attr(reply: Reply<ClientReply>) -> mfsha_proto::types::Attr {
    match reply {
        Ok(ClientReply::Attr(attr)) => attr,
        other => panic!("expected attributes, got {other:?}"),
    }
}
