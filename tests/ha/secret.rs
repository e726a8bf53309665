//! The cluster secret between daemons (issue 12, item 5): every daemon of the appliance names
//! the same `secret_file` (the harness's cluster does, so every HA test runs with it). Here a
//! chunkserver holding another key, one holding none, a forged peer and a metalogger without
//! the key are each refused before anything they send is read, and the master's log names
//! the port, the address and why; the cluster goes on serving. `mfsha bootstrap` makes the
//! key file when the config names one that does not exist, private, and never replaces it.
//! On the data port (9422), a chunkserver with the secret serves a chunk only with the token
//! the master signed for it (reading, or writing, that version).

use super::cluster::{HaCluster, CLUSTER_ID};
use super::retry::{addr, ask, hello};
use crate::util::{free_port, mfsha, tail, Daemon};
use mfsha_proto::chunk_token::ChunkToken;
use mfsha_proto::client::{ClientOp, ClientReply, Request};
use mfsha_proto::cluster_key::ClusterKey;
use mfsha_proto::data::{DataReply, DataRequest};
use mfsha_proto::frame::write_frame;
use mfsha_proto::logger::LoggerToMaster;
use mfsha_proto::peer::PeerMessage;
use mfsha_proto::types::{Reply, ServerAddr, Status, ROOT_INO};
use mfsha_proto::RpcClient;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Waits until `what` is in the log at `path` (the last 400 lines).
fn wait_log(path: &Path, what: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !tail(path, 400).contains(what) {
        assert!(
            Instant::now() < deadline,
            "{} never said {what:?}:\n{}",
            path.display(),
            tail(path, 60)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until some master's log holds a line with every one of `parts`; a part may offer
/// alternatives separated by `|`.
fn wait_master_log(cluster: &HaCluster, parts: &[&str], limit: Duration) {
    let deadline = Instant::now() + limit;
    let has =
        |line: &str, part: &str| part.split('|').any(|alternative| line.contains(alternative));
    loop {
        let logs: Vec<String> = cluster
            .masters
            .iter()
            .filter_map(|m| m.daemon.as_ref().map(|d| tail(&d.log, 400)))
            .collect();
        let mut lines = logs.iter().flat_map(|log| log.lines());
        if lines.any(|line| parts.iter().all(|part| has(line, part))) {
            return;
        }
        assert!(Instant::now() < deadline, "no master logged {parts:?}:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a chunkserver registering with the cluster's masters, with `secret_file` as given.
fn chunkserver(cluster: &HaCluster, name: &str, secret_file: Option<&Path>) -> Daemon {
    let disk = cluster.path().join(format!("{name}-disk"));
    std::fs::create_dir_all(&disk).unwrap();
    let masters: Vec<String> =
        cluster.masters.iter().map(|m| format!("\"127.0.0.1:{}\"", m.ports.chunkserver)).collect();
    let secret = secret_file.map(|p| format!("secret_file: {}\n", p.display())).unwrap_or_default();
    let yaml = format!(
        "data_dirs:\n  - path: {}\nmaster: [{}]\ncluster_id: {CLUSTER_ID}\n{secret}listen: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\nheartbeat_ms: 200\nscrub_mib_per_sec: 0\n",
        disk.display(),
        masters.join(", "),
        free_port(),
        free_port()
    );
    let config = cluster.path().join(format!("{name}.yaml"));
    std::fs::write(&config, yaml).unwrap();
    Daemon::spawn(cluster.path(), name, &["chunkserver", "-c", config.to_str().unwrap()])
}

/// Connects to `addr`, sends `frame` as a keyless daemon would, and expects the connection
/// closed without an answer.
async fn send_without_key<T: serde::Serialize>(addr: &str, frame: &T) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    write_frame(&mut stream, 0, frame).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    let read = read.await.expect("the master closes the connection");
    assert!(read.is_err() || answer.is_empty(), "{addr} answered a caller without the key");
}

#[test]
fn callers_without_the_cluster_secret_are_refused_on_every_daemon_port() {
    let cluster = HaCluster::start(1);
    let leader = cluster.wait_leader(Duration::from_secs(30));

    // Another cluster's key: the chunkserver finds the master's proof wrong, and says so.
    let other = cluster.path().join("other.key");
    ClusterKey::generate().write_new(&other).unwrap();
    let mut wrong = chunkserver(&cluster, "wrong-key", Some(&other));
    wait_log(&wrong.log, "its proof of the cluster secret is wrong", Duration::from_secs(20));
    wait_master_log(
        &cluster,
        &["refused a caller on the chunkserver port", "127.0.0.1", "proof of the cluster secret"],
        Duration::from_secs(20),
    );
    // No key at all: the chunkserver waits for the master to speak first and gives up; the
    // master, waiting for a proof, refuses it either way.
    let mut keyless = chunkserver(&cluster, "no-key", None);
    wait_master_log(
        &cluster,
        &[
            "refused a caller on the chunkserver port",
            "no proof of the cluster secret|did not prove the cluster secret",
        ],
        Duration::from_secs(20),
    );

    let rt = super::cluster::runtime();
    rt.block_on(async {
        // A forged peer: node 2's Hello without the secret on the leader's peer port.
        let peer = format!("127.0.0.1:{}", cluster.masters[leader].ports.peer);
        let to = cluster.masters[leader].id;
        let hello = PeerMessage::Hello { from: 2, to, cluster: CLUSTER_ID.into() };
        send_without_key(&peer, &hello).await;
        // A metalogger without the secret.
        let logger = format!("127.0.0.1:{}", cluster.masters[leader].ports.logger);
        let hello = LoggerToMaster::Hello { name: "intruder".into(), applied: 0, cluster: None };
        send_without_key(&logger, &hello).await;
    });
    wait_master_log(
        &cluster,
        &["refused a caller on the peer port", "did not prove the cluster secret"],
        Duration::from_secs(10),
    );
    wait_master_log(
        &cluster,
        &["refused on the metalogger port", "did not prove the cluster secret"],
        Duration::from_secs(10),
    );

    // Only the chunkserver with the key is registered, and the cluster still serves.
    let status = cluster.status(leader).expect("the leader answers");
    assert_eq!(status.chunkservers.len(), 1, "{:?}\n{}", status.chunkservers, cluster.logs());
    wrong.kill();
    keyless.kill();
    assert!(cluster.wait_leader(Duration::from_secs(10)) == leader, "the leader stayed");
}

#[test]
fn bootstrap_makes_a_private_cluster_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    let write_config = |name: &str| {
        let yaml = format!(
            "node_id: 1\ncluster_id: {CLUSTER_ID}\nsecret_file: {}\ndata_dir: {}\n",
            key.display(),
            dir.path().join(name).display()
        );
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        path
    };
    let first = write_config("first");
    let out = mfsha(&["bootstrap", "-c", first.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("made the cluster key"), "{stdout}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key file must be private");
    let made = ClusterKey::load(&key).expect("a key file mfsha reads back");
    // A second group's bootstrap with the same file uses the key; it never makes another.
    let second = write_config("second");
    let out = mfsha(&["bootstrap", "-c", second.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("using the cluster key"), "{stdout}");
    assert_eq!(ClusterKey::load(&key).unwrap(), made, "the key was replaced");
    // A key others can read is refused, with the fix.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let third = write_config("third");
    let out = mfsha(&["bootstrap", "-c", third.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("chmod 600"), "{stderr}");
}

/// One data request straight to the chunkserver on `port`, as a client's data path sends it.
async fn data_call(port: u16, request: DataRequest) -> Reply<DataReply> {
    let client: RpcClient<DataRequest, Reply<DataReply>> =
        RpcClient::connect(&format!("127.0.0.1:{port}")).await.unwrap();
    client.call(request).await.unwrap()
}

#[test]
fn chunk_reads_and_writes_need_the_masters_token() {
    let cluster = HaCluster::start(1);
    let rt = super::cluster::runtime();
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let master = addr(&cluster, leader);
    let port = cluster.chunkservers[0].0;
    rt.block_on(async {
        let opened = ask(&master, hello(rand::random::<u64>() | 1)).await;
        let Ok(ClientReply::Session { session, .. }) = opened else { panic!("Hello: {opened:?}") };
        let request = |seq, op| Request { session, seq, ..Request::anonymous(op) };
        let create =
            ClientOp::Create { parent: ROOT_INO, name: "tokened".into(), mode: 0o644, umask: 0 };
        let Ok(ClientReply::Attr(file)) = ask(&master, request(1, create)).await else {
            panic!("create")
        };
        let write_chunk = ClientOp::WriteChunk { ino: file.ino, index: 0 };
        let Ok(ClientReply::ChunkWrite(cw)) = ask(&master, request(2, write_chunk)).await else {
            panic!("WriteChunk")
        };
        let (chunk_id, version) = (cw.chunk_id, cw.version);
        let data = serde_bytes::ByteBuf::from(vec![7u8; 4096]);
        assert_eq!(cw.chain.len(), 1, "goal 1 with one chunkserver: {:?}", cw.chain);
        let write_along = |chain: Vec<ServerAddr>, token| DataRequest::Write {
            chunk_id,
            version,
            offset: 0,
            data: data.clone(),
            chain,
            hop: 0,
            token,
            crcs: mfsha_proto::data::block_crcs(0, &data),
        };
        let write = |token| write_along(cw.chain.clone(), token);
        // The master's write token writes; no token, or a changed one, is refused.
        assert_eq!(data_call(port, write(cw.token)).await, Ok(DataReply::Written));
        assert_eq!(data_call(port, write(ChunkToken::default())).await, Err(Status::Access));
        let mut forged = cw.token;
        forged.mac[0] ^= 1;
        assert_eq!(data_call(port, write(forged)).await, Err(Status::Access));
        // The token is for the master's chain: making the server forward anywhere else (here
        // to a port nobody registered) is refused before anything is written or sent.
        let mut detour = cw.chain.clone();
        detour.push(ServerAddr { host: "127.0.0.1".into(), port: crate::util::free_port() });
        assert_eq!(data_call(port, write_along(detour, cw.token)).await, Err(Status::Access));
        let end = ClientOp::WriteChunkEnd {
            ino: file.ino,
            index: 0,
            chunk_id,
            file_size: 4096,
            ok: true,
        };
        ask(&master, request(3, end)).await.expect("WriteChunkEnd");

        // The location's read token reads, and only reads.
        let read_chunk = ClientOp::ReadChunk { ino: file.ino, index: 0 };
        let Ok(ClientReply::Chunk(loc)) = ask(&master, request(0, read_chunk)).await else {
            panic!("ReadChunk")
        };
        assert_eq!(loc.version, version);
        let read = |token| DataRequest::Read { chunk_id, version, offset: 0, size: 4096, token };
        let got = data_call(port, read(loc.token)).await;
        let crcs = mfsha_proto::data::block_crcs(0, &data);
        let want = DataReply::Data { data: data.clone(), crcs };
        assert_eq!(got, Ok(want), "the master's token reads");
        assert_eq!(data_call(port, read(ChunkToken::default())).await, Err(Status::Access));
        assert_eq!(data_call(port, write(loc.token)).await, Err(Status::Access), "read-only");
        let other_version = DataRequest::Read {
            chunk_id,
            version: version + 1,
            offset: 0,
            size: 1,
            token: loc.token,
        };
        assert_eq!(data_call(port, other_version).await, Err(Status::Access));
    });
    let log = &cluster.chunkservers[0].1.as_ref().expect("the chunkserver runs").log;
    wait_log(log, "refused a data request without a valid chunk token", Duration::from_secs(5));
    assert!(tail(log, 400).contains("127.0.0.1"), "the refusal names the caller");
}
