//! The chunkserver end to end in one process: real disks (temp dirs), real sockets, and a
//! scripted master speaking the chunkserver protocol.

use super::*;
use mfsha_proto::cs::{CsToMaster, FromMaster, MasterToCs};
use mfsha_proto::data::{DataReply, DataRequest};
use mfsha_proto::frame::{read_frame, write_frame};
use mfsha_proto::types::{Reply, ServerAddr, Status};
use std::path::PathBuf;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Chunkservers started here have no cluster secret: they ask for no token.
const NO_TOKEN: mfsha_proto::chunk_token::ChunkToken =
    mfsha_proto::chunk_token::ChunkToken { expires_ms: 0, mac: [0; 16] };

const WAIT: Duration = Duration::from_secs(5);

struct FakeMaster {
    listener: TcpListener,
    /// The node id its `Hello` names.
    node: u64,
    /// The masters its `Hello` lists.
    masters: std::sync::Mutex<Vec<(u64, String)>>,
}

struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_op: u64,
    /// The term every frame of this fake master carries.
    term: u64,
}

impl FakeMaster {
    async fn new() -> FakeMaster {
        FakeMaster::node(1).await
    }

    /// A fake master that says it is node `node`.
    async fn node(node: u64) -> FakeMaster {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        FakeMaster { listener, node, masters: Default::default() }
    }

    fn addr(&self) -> String {
        self.listener.local_addr().unwrap().to_string()
    }

    async fn accept(&self) -> Conn {
        let (stream, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("chunkserver did not connect to the master")
            .unwrap();
        let (r, w) = stream.into_split();
        let mut conn = Conn { reader: BufReader::new(r), writer: w, next_op: 1, term: 1 };
        let masters = self.masters.lock().unwrap().clone();
        let cluster = "test".to_string();
        conn.send(&MasterToCs::Hello { master_node: self.node, cluster, masters }).await;
        conn
    }
}

impl Conn {
    async fn recv(&mut self) -> CsToMaster {
        tokio::time::timeout(WAIT, read_frame::<_, CsToMaster>(&mut self.reader))
            .await
            .expect("no message from the chunkserver")
            .expect("bad frame from the chunkserver")
            .body
    }

    /// The next message that is not a heartbeat or a copy report.
    async fn recv_event(&mut self) -> CsToMaster {
        loop {
            match self.recv().await {
                CsToMaster::Heartbeat { .. }
                | CsToMaster::Copy { .. }
                | CsToMaster::Gone { .. } => continue,
                other => return other,
            }
        }
    }

    async fn send(&mut self, msg: &MasterToCs) {
        let frame = FromMaster { term: self.term, msg: msg.clone() };
        write_frame(&mut self.writer, 0, &frame).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// Reads Register, Chunks…, RegisterDone; answers Welcome. Returns (port, chunks).
    async fn registration(&mut self) -> (u16, Vec<(u64, u32, bool)>) {
        let port = match self.recv().await {
            CsToMaster::Register { port, disks, server_id, .. } => {
                assert!(!disks.is_empty());
                assert_ne!(server_id, 0);
                port
            }
            other => panic!("expected Register first, got {other:?}"),
        };
        let mut chunks = Vec::new();
        loop {
            match self.recv().await {
                CsToMaster::Chunks(batch) => chunks.extend(batch),
                CsToMaster::RegisterDone => break,
                other => panic!("unexpected during registration: {other:?}"),
            }
        }
        self.send(&MasterToCs::Welcome { master_node: 1 }).await;
        chunks.sort();
        (port, chunks)
    }

    /// Sends a command built with a fresh op id and waits for its Done.
    async fn command(&mut self, make: impl FnOnce(u64) -> MasterToCs) -> Result<(), Status> {
        let op = self.next_op;
        self.next_op += 1;
        self.send(&make(op)).await;
        match self.recv_event().await {
            CsToMaster::Done { op: got, status } if got == op => status,
            other => panic!("expected Done for op {op}, got {other:?}"),
        }
    }
}

async fn start_cs(master: &str, dirs: Vec<PathBuf>, scrub_mib: f64) -> Chunkserver {
    let mut config = ChunkserverConfig::with_dirs(dirs);
    config.master = vec![master.to_string()];
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.http = "127.0.0.1:0".parse().unwrap();
    config.heartbeat_ms = 100;
    config.scrub_mib_per_sec = scrub_mib;
    Chunkserver::start(config).await.unwrap()
}

fn addr_of(cs: &Chunkserver) -> ServerAddr {
    ServerAddr { host: "127.0.0.1".into(), port: cs.addr().port() }
}

async fn data_client(cs: &Chunkserver) -> server::DataClient {
    server::DataClient::connect(&cs.addr().to_string()).await.unwrap()
}

/// The whole chain of a write sent to a first server followed by `rest` (the first server's
/// own address is not looked at: it is told its place, hop 0).
fn whole_chain(rest: Vec<ServerAddr>) -> Vec<ServerAddr> {
    let head = ServerAddr { host: "first".into(), port: 0 };
    std::iter::once(head).chain(rest).collect()
}

/// A write to the first server of a chain that continues with `rest`.
fn write_req(
    id: u64,
    version: u32,
    offset: u32,
    data: &[u8],
    rest: Vec<ServerAddr>,
) -> DataRequest {
    DataRequest::Write {
        chunk_id: id,
        version,
        offset,
        data: serde_bytes::ByteBuf::from(data.to_vec()),
        chain: whole_chain(rest),
        hop: 0,
        token: NO_TOKEN,
        crcs: mfsha_proto::data::block_crcs(offset, data),
    }
}

async fn read(
    client: &server::DataClient,
    id: u64,
    version: u32,
    offset: u32,
    size: u32,
) -> Reply<Vec<u8>> {
    match client
        .call(DataRequest::Read { chunk_id: id, version, offset, size, token: NO_TOKEN })
        .await
        .unwrap()?
    {
        DataReply::Data { data, crcs } => {
            mfsha_proto::data::check_block_crcs(offset, &data, &crcs).expect("read CRCs");
            Ok(data.into_vec())
        }
        other => panic!("unexpected reply {other:?}"),
    }
}

#[tokio::test]
async fn registers_heartbeats_and_reconnects_quickly() {
    let master = FakeMaster::new().await;
    let tmp = tempfile::tempdir().unwrap();
    let cs = start_cs(&master.addr(), vec![tmp.path().to_path_buf()], 0.0).await;
    let mut conn = master.accept().await;
    let (port, chunks) = conn.registration().await;
    assert_eq!(port, cs.addr().port());
    assert!(chunks.is_empty());
    assert_eq!(conn.command(|op| MasterToCs::Create { op, chunk_id: 7, version: 1 }).await, Ok(()));
    loop {
        match conn.recv().await {
            CsToMaster::Copy { chunk_id: 7, version: 1 } => continue,
            CsToMaster::Heartbeat { .. } => break,
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
    // The master goes away: the chunkserver must be back within a few back-off steps.
    drop(conn);
    let started = std::time::Instant::now();
    let mut conn = master.accept().await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "reconnect took {:?}",
        started.elapsed()
    );
    let (_, chunks) = conn.registration().await;
    assert_eq!(chunks, vec![(7, 1, false)]);
    cs.shutdown().await;
}

/// Reads until the chunkserver closes the connection (heartbeats and reports skipped).
async fn expect_closed(conn: &mut Conn) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, read_frame::<_, CsToMaster>(&mut conn.reader));
        match next.await.expect("the chunkserver must close the connection") {
            Err(_) => return,
            Ok(frame) => match frame.body {
                CsToMaster::Heartbeat { .. }
                | CsToMaster::Copy { .. }
                | CsToMaster::Gone { .. } => continue,
                other => panic!("expected the connection to close, got {other:?}"),
            },
        }
    }
}

#[tokio::test]
async fn commands_of_an_older_term_are_refused_also_after_a_restart() {
    let master = FakeMaster::new().await;
    let tmp = tempfile::tempdir().unwrap();
    let cs = start_cs(&master.addr(), vec![tmp.path().to_path_buf()], 0.0).await;
    let mut conn = master.accept().await;
    conn.term = 5;
    conn.registration().await;
    assert_eq!(conn.command(|op| MasterToCs::Create { op, chunk_id: 1, version: 1 }).await, Ok(()));
    // A deposed leader (term 4) on the same link: refused, answered NotLeader, link dropped.
    conn.term = 4;
    let delete = |op| MasterToCs::Delete { op, chunk_id: 1, version: 0 };
    assert_eq!(conn.command(delete).await, Err(Status::NotLeader));
    expect_closed(&mut conn).await;
    assert!(tmp.path().join("01").join(format::file_name(1, 1)).exists(), "not deleted");
    cs.shutdown().await;
    // After a restart the fence still stands: a term-4 command is refused. (A fresh fake
    // master, so no connection of the first run is accepted by mistake.)
    let master = FakeMaster::new().await;
    let cs = start_cs(&master.addr(), vec![tmp.path().to_path_buf()], 0.0).await;
    let mut stale = master.accept().await;
    stale.term = 4;
    assert_eq!(stale.registration().await.1, vec![(1, 1, false)]);
    assert_eq!(stale.command(delete).await, Err(Status::NotLeader));
    expect_closed(&mut stale).await;
    // The current leader's term (and a newer one) is obeyed.
    let mut current = master.accept().await;
    current.term = 6;
    current.registration().await;
    let delete = |op| MasterToCs::Delete { op, chunk_id: 1, version: 0 };
    assert_eq!(current.command(delete).await, Ok(()));
    assert!(!tmp.path().join("01").join(format::file_name(1, 1)).exists(), "deleted");
    cs.shutdown().await;
    let on_disk = std::fs::read_to_string(tmp.path().join(fence::TERM_FILE)).unwrap();
    assert!(on_disk.starts_with("term 6 "), "{on_disk}");
}

#[tokio::test]
async fn every_master_gets_one_registration_and_hears_of_every_copy_change() {
    let leader = FakeMaster::node(1).await;
    let follower = FakeMaster::node(2).await;
    // Another address of the leader (as the VIP is): it must not get a second registration.
    let alias = FakeMaster::node(1).await;
    let book = vec![(1, leader.addr()), (2, follower.addr())];
    *leader.masters.lock().unwrap() = book.clone();
    *follower.masters.lock().unwrap() = book;
    let tmp = tempfile::tempdir().unwrap();
    let mut config = ChunkserverConfig::with_dirs(vec![tmp.path().to_path_buf()]);
    config.master = vec![leader.addr(), alias.addr()];
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.http = "127.0.0.1:0".parse().unwrap();
    config.heartbeat_ms = 100;
    let cs = Chunkserver::start(config).await.unwrap();
    let mut lead = leader.accept().await;
    lead.registration().await;
    // The follower is named only in the leader's Hello: it is found from there.
    let mut follow = follower.accept().await;
    follow.registration().await;
    let mut dup = alias.accept().await;
    expect_closed(&mut dup).await;
    // The leader's command is carried out, and the follower hears of the new copy.
    assert_eq!(lead.command(|op| MasterToCs::Create { op, chunk_id: 3, version: 1 }).await, Ok(()));
    assert_eq!(next_copy_report(&mut follow).await, CsToMaster::Copy { chunk_id: 3, version: 1 });
    let delete = |op| MasterToCs::Delete { op, chunk_id: 3, version: 1 };
    assert_eq!(lead.command(delete).await, Ok(()));
    assert_eq!(next_copy_report(&mut follow).await, CsToMaster::Gone { chunk_id: 3 });
    // A write a client makes is named in the heartbeats of every link.
    let client = data_client(&cs).await;
    let create = |op| MasterToCs::Create { op, chunk_id: 4, version: 1 };
    assert_eq!(lead.command(create).await, Ok(()));
    let write = DataRequest::Write {
        chunk_id: 4,
        version: 1,
        offset: 0,
        data: serde_bytes::ByteBuf::from(vec![1u8; 100]),
        chain: whole_chain(vec![]),
        hop: 0,
        token: NO_TOKEN,
        crcs: mfsha_proto::data::block_crcs(0, &[1u8; 100]),
    };
    client.call(write).await.unwrap().expect("the write is stored");
    loop {
        if let CsToMaster::Heartbeat { writing, .. } = follow.recv().await {
            if writing == vec![4] {
                break;
            }
        }
    }
    cs.shutdown().await;
}

/// The next `Copy` or `Gone` the chunkserver sends.
async fn next_copy_report(conn: &mut Conn) -> CsToMaster {
    loop {
        match conn.recv().await {
            report @ (CsToMaster::Copy { .. } | CsToMaster::Gone { .. }) => return report,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn a_master_of_another_cluster_is_refused() {
    let master = FakeMaster::new().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut config = ChunkserverConfig::with_dirs(vec![tmp.path().to_path_buf()]);
    config.master = vec![master.addr()];
    config.cluster_id = Some("other".into());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.http = "127.0.0.1:0".parse().unwrap();
    let cs = Chunkserver::start(config).await.unwrap();
    let mut conn = master.accept().await;
    expect_closed(&mut conn).await;
    cs.shutdown().await;
}

#[tokio::test]
async fn a_master_that_stops_heartbeating_is_left_within_two_seconds() {
    let master = FakeMaster::new().await;
    let tmp = tempfile::tempdir().unwrap();
    let cs = start_cs(&master.addr(), vec![tmp.path().to_path_buf()], 0.0).await;
    let mut hung = master.accept().await;
    hung.registration().await;
    hung.send(&MasterToCs::Heartbeat).await;
    // The connection stays open and acknowledged by the kernel, but the master says nothing.
    let started = std::time::Instant::now();
    let mut conn = master.accept().await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "left the silent master after {took:?}");
    assert!(took >= Duration::from_millis(1000), "left a heartbeating master early: {took:?}");
    conn.registration().await;
    drop(hung);
    cs.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_term_file_stops_the_start_and_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(fence::TERM_FILE);
    std::fs::write(&path, "term 12 crc32c 00000000\n").unwrap();
    let mut config = ChunkserverConfig::with_dirs(vec![tmp.path().to_path_buf()]);
    config.master = vec!["127.0.0.1:1".into()];
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.http = "127.0.0.1:0".parse().unwrap();
    let err = match Chunkserver::start(config).await {
        Ok(_) => panic!("a chunkserver with a corrupt term file must not start"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("corrupt"), "{err}");
}

#[tokio::test]
async fn chain_write_reaches_every_copy_and_replication_copies_verified_data() {
    let master = FakeMaster::new().await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers = Vec::new();
    let mut conns = Vec::new();
    for d in &dirs {
        servers.push(start_cs(&master.addr(), vec![d.path().to_path_buf()], 0.0).await);
        let mut conn = master.accept().await;
        conn.registration().await;
        conns.push(conn);
    }
    for conn in &mut conns[..2] {
        assert_eq!(
            conn.command(|op| MasterToCs::Create { op, chunk_id: 0x42, version: 1 }).await,
            Ok(())
        );
    }
    let data: Vec<u8> = (0..(3 << 20) + 123).map(|i| (i % 253) as u8).collect();
    let first = data_client(&servers[0]).await;
    let chain = vec![addr_of(&servers[1])];
    let reply = first.call(write_req(0x42, 1, 4096, &data, chain.clone())).await.unwrap();
    assert_eq!(reply, Ok(DataReply::Written));
    let chain = whole_chain(chain);
    let sync = DataRequest::Sync { chunk_id: 0x42, version: 1, chain, hop: 0, token: NO_TOKEN };
    assert_eq!(first.call(sync).await.unwrap(), Ok(DataReply::Synced));
    let second = data_client(&servers[1]).await;
    assert_eq!(read(&second, 0x42, 1, 4096, data.len() as u32).await.unwrap(), data);
    // Bytes damaged on the way (one flipped after the writer took its CRCs) are refused by
    // the first server and stored by none.
    let mut damaged = write_req(0x42, 1, 4096, &[9u8; 200_000], vec![addr_of(&servers[1])]);
    if let DataRequest::Write { data, .. } = &mut damaged {
        data[150_000] ^= 1;
    }
    assert_eq!(first.call(damaged).await.unwrap(), Err(Status::Checksum));
    for server in [&first, &second] {
        assert_eq!(read(server, 0x42, 1, 4096, data.len() as u32).await.unwrap(), data);
    }
    // A chain through a server without the chunk fails as a whole.
    let bad_chain = vec![addr_of(&servers[2])];
    let reply = first.call(write_req(0x42, 1, 0, b"x", bad_chain)).await.unwrap();
    assert_eq!(reply, Err(Status::NotFound));
    // Server 3 replicates from server 2.
    let source = addr_of(&servers[1]);
    let status = conns[2]
        .command(|op| MasterToCs::Replicate { op, chunk_id: 0x42, version: 1, source })
        .await;
    assert_eq!(status, Ok(()));
    let third = data_client(&servers[2]).await;
    assert_eq!(read(&third, 0x42, 1, 4096, data.len() as u32).await.unwrap(), data);
    assert_eq!(
        third.call(DataRequest::Stat { chunk_id: 0x42, token: NO_TOKEN }).await.unwrap(),
        Ok(DataReply::Stat { version: 1, length: 4096 + data.len() as u64 })
    );
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn version_truncate_duplicate_and_delete_commands() {
    let master = FakeMaster::new().await;
    let tmp = tempfile::tempdir().unwrap();
    let cs = start_cs(&master.addr(), vec![tmp.path().to_path_buf()], 0.0).await;
    let mut conn = master.accept().await;
    conn.registration().await;
    assert_eq!(conn.command(|op| MasterToCs::Create { op, chunk_id: 1, version: 1 }).await, Ok(()));
    let client = data_client(&cs).await;
    client.call(write_req(1, 1, 0, &[7u8; 100_000], vec![])).await.unwrap().unwrap();
    let set = |op| MasterToCs::SetVersion { op, chunk_id: 1, old_version: 1, new_version: 2 };
    assert_eq!(conn.command(set).await, Ok(()));
    assert_eq!(read(&client, 1, 1, 0, 1).await, Err(Status::WrongVersion));
    let dup = |op| MasterToCs::Duplicate {
        op,
        new_chunk: 2,
        new_version: 1,
        old_chunk: 1,
        old_version: 2,
    };
    assert_eq!(conn.command(dup).await, Ok(()));
    let cut =
        |op| MasterToCs::Truncate { op, chunk_id: 2, old_version: 1, new_version: 3, length: 10 };
    assert_eq!(conn.command(cut).await, Ok(()));
    let back = read(&client, 2, 3, 0, 20).await.unwrap();
    assert_eq!(&back[..10], &[7u8; 10]);
    assert!(back[10..].iter().all(|&b| b == 0));
    assert_eq!(read(&client, 1, 2, 0, 20).await.unwrap(), vec![7u8; 20]);
    assert_eq!(conn.command(|op| MasterToCs::Delete { op, chunk_id: 1, version: 0 }).await, Ok(()));
    assert_eq!(read(&client, 1, 2, 0, 1).await, Err(Status::NotFound));
    assert_eq!(
        conn.command(|op| MasterToCs::Create { op, chunk_id: 2, version: 9 }).await,
        Err(Status::Exists)
    );
    cs.shutdown().await;
}

/// A chunkserver on one fresh disk, registered with a fake master, holding an empty chunk
/// `id` at `version`.
async fn one_with_chunk(
    id: u64,
    version: u32,
) -> (FakeMaster, tempfile::TempDir, Chunkserver, Conn) {
    let master = FakeMaster::new().await;
    let tmp = tempfile::tempdir().unwrap();
    let cs = start_cs(&master.addr(), vec![tmp.path().to_path_buf()], 0.0).await;
    let mut conn = master.accept().await;
    conn.registration().await;
    assert_eq!(conn.command(|op| MasterToCs::Create { op, chunk_id: id, version }).await, Ok(()));
    (master, tmp, cs, conn)
}

fn flip(path: &std::path::Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 1;
    f.write_all_at(&b, at).unwrap();
}

#[tokio::test]
async fn damaged_copy_is_refused_to_readers_and_reported_to_the_master() {
    let (_master, tmp, cs, mut conn) = one_with_chunk(0x10, 4).await;
    let client = data_client(&cs).await;
    client.call(write_req(0x10, 4, 0, &[1u8; 200_000], vec![])).await.unwrap().unwrap();
    let sync = DataRequest::Sync {
        chunk_id: 0x10,
        version: 4,
        chain: whole_chain(vec![]),
        hop: 0,
        token: NO_TOKEN,
    };
    client.call(sync).await.unwrap().unwrap();
    let path = tmp.path().join("10").join(format::file_name(0x10, 4));
    flip(&path, format::DATA_OFFSET + 150_000);
    assert_eq!(read(&client, 0x10, 4, 0, 200_000).await, Err(Status::Checksum));
    assert_eq!(conn.recv_event().await, CsToMaster::Damaged { chunk_id: 0x10, version: 4 });
    cs.shutdown().await;
}

/// Bytes of small reads the chunkserver answered from the page cache.
fn cached_bytes(cs: &Chunkserver) -> u64 {
    let disks = &cs.store().disks;
    disks
        .iter()
        .map(|d| d.counters.cached_read_bytes.load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}

#[tokio::test]
async fn small_reads_of_verified_blocks_skip_the_disk_and_any_change_is_checked_again() {
    let (_master, tmp, cs, mut conn) = one_with_chunk(0x20, 1).await;
    let client = data_client(&cs).await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    client.call(write_req(0x20, 1, 0, &data, vec![])).await.unwrap().unwrap();
    let at = |o: usize| data[o..o + 4096].to_vec();
    // The first read of block 1 reads and checks the whole block; the next ones of that
    // block come from the page cache.
    assert_eq!(read(&client, 0x20, 1, 70_000, 4096).await, Ok(at(70_000)));
    assert_eq!(cached_bytes(&cs), 0, "block 1 was not verified before");
    assert_eq!(read(&client, 0x20, 1, 80_000, 4096).await, Ok(at(80_000)));
    assert_eq!(read(&client, 0x20, 1, 100_000, 4096).await, Ok(at(100_000)));
    assert_eq!(cached_bytes(&cs), 8192, "two reads of a verified block");
    // Block 0 was never verified: read and checked.
    assert_eq!(read(&client, 0x20, 1, 1000, 4096).await, Ok(at(1000)));
    assert_eq!(cached_bytes(&cs), 8192);
    // A client's write forgets what was verified: the new bytes are read and checked.
    let new = [0xEEu8; 4096];
    client.call(write_req(0x20, 1, 80_000, &new, vec![])).await.unwrap().unwrap();
    assert_eq!(read(&client, 0x20, 1, 80_000, 4096).await, Ok(new.to_vec()));
    assert_eq!(cached_bytes(&cs), 8192, "a changed copy is read from the disk again");
    // A byte changed beside the chunkserver (after the change time can move) is found by
    // the CRC, not served from the cache.
    assert_eq!(read(&client, 0x20, 1, 90_000, 4096).await, Ok(at(90_000)));
    assert_eq!(cached_bytes(&cs), 12288);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let path = tmp.path().join("20").join(format::file_name(0x20, 1));
    flip(&path, format::DATA_OFFSET + 90_100);
    assert_eq!(read(&client, 0x20, 1, 90_000, 4096).await, Err(Status::Checksum));
    assert_eq!(conn.recv_event().await, CsToMaster::Damaged { chunk_id: 0x20, version: 1 });
    assert_eq!(cached_bytes(&cs), 12288);
    cs.shutdown().await;
}

#[tokio::test]
async fn scrub_finds_a_flipped_byte_without_any_read() {
    let master = FakeMaster::new().await;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("11").join(format::file_name(0x11, 1));
    {
        let cs = start_cs(&master.addr(), vec![tmp.path().to_path_buf()], 0.0).await;
        let mut conn = master.accept().await;
        conn.registration().await;
        assert_eq!(
            conn.command(|op| MasterToCs::Create { op, chunk_id: 0x11, version: 1 }).await,
            Ok(())
        );
        let client = data_client(&cs).await;
        client.call(write_req(0x11, 1, 0, &[3u8; 1 << 20], vec![])).await.unwrap().unwrap();
        cs.shutdown().await;
    }
    flip(&path, format::DATA_OFFSET + 900_000);
    let cs = start_cs(&master.addr(), vec![tmp.path().to_path_buf()], 100.0).await;
    let mut conn = master.accept().await;
    conn.registration().await;
    assert_eq!(conn.recv_event().await, CsToMaster::Damaged { chunk_id: 0x11, version: 1 });
    cs.shutdown().await;
}

#[tokio::test]
async fn a_vanished_disk_is_reported_damaged_and_its_chunks_lost() {
    let master = FakeMaster::new().await;
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("d1"), tmp.path().join("d2"));
    std::fs::create_dir(&d1).unwrap();
    std::fs::create_dir(&d2).unwrap();
    let cs = start_cs(&master.addr(), vec![d1.clone()], 0.0).await;
    let mut conn = master.accept().await;
    conn.registration().await;
    assert_eq!(
        conn.command(|op| MasterToCs::Create { op, chunk_id: 0x99, version: 1 }).await,
        Ok(())
    );
    cs.shutdown().await;
    drop(conn);
    let cs = start_cs(&master.addr(), vec![d1.clone(), d2.clone()], 0.0).await;
    let mut conn = master.accept().await;
    assert_eq!(conn.registration().await.1, vec![(0x99, 1, false)]);
    // Replace the data directory with a file: the heartbeat's health check notices.
    std::fs::rename(&d1, tmp.path().join("moved")).unwrap();
    std::fs::write(&d1, b"x").unwrap();
    assert_eq!(conn.recv_event().await, CsToMaster::Lost(vec![0x99]));
    let damaged = loop {
        if let CsToMaster::Heartbeat { disks, .. } = conn.recv().await {
            break disks;
        }
    };
    assert!(damaged[0].damaged && !damaged[1].damaged, "{damaged:?}");
    cs.shutdown().await;
}

#[tokio::test]
async fn hostile_data_requests_are_refused_without_harm() {
    let master = FakeMaster::new().await;
    let tmp = tempfile::tempdir().unwrap();
    let cs = start_cs(&master.addr(), vec![tmp.path().to_path_buf()], 0.0).await;
    let mut conn = master.accept().await;
    conn.registration().await;
    let client = data_client(&cs).await;
    let huge = DataRequest::Read {
        chunk_id: 1,
        version: 1,
        offset: u32::MAX,
        size: u32::MAX,
        token: NO_TOKEN,
    };
    assert_eq!(client.call(huge).await.unwrap(), Err(Status::Invalid));
    let long_chain = vec![addr_of(&cs); 20];
    assert_eq!(
        client.call(write_req(1, 1, 0, b"x", long_chain)).await.unwrap(),
        Err(Status::Invalid)
    );
    // Garbage bytes close only that connection.
    let mut raw = tokio::net::TcpStream::connect(cs.addr()).await.unwrap();
    raw.write_all(&[0, 0, 0, 12, 99, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9]).await.unwrap();
    let stat = DataRequest::Stat { chunk_id: 1, token: NO_TOKEN };
    assert_eq!(client.call(stat).await.unwrap(), Err(Status::NotFound));
    cs.shutdown().await;
}

/// Disk faults stay local (issue 12, item 8): a chunk file removed behind the server's back
/// (ENOENT) costs that copy alone: the read fails, the copy is reported lost, the disk stays
/// in use and another chunk on it still reads. Deleting a chunk whose file is already gone
/// succeeds. One real I/O error on a disk that passes its health check costs the copy; the
/// third within a minute fails the disk.
#[tokio::test]
async fn a_missing_chunk_file_costs_one_copy_and_only_repeated_io_errors_fail_the_disk() {
    let master = FakeMaster::new().await;
    let tmp = tempfile::tempdir().unwrap();
    let cs = start_cs(&master.addr(), vec![tmp.path().to_path_buf()], 0.0).await;
    let mut conn = master.accept().await;
    conn.registration().await;
    for id in [0x20, 0x21, 0x22] {
        let created = conn.command(|op| MasterToCs::Create { op, chunk_id: id, version: 1 }).await;
        assert_eq!(created, Ok(()));
    }
    let client = data_client(&cs).await;
    for id in [0x20, 0x21] {
        client.call(write_req(id, 1, 0, &[7u8; 70_000], vec![])).await.unwrap().unwrap();
    }
    std::fs::remove_file(tmp.path().join("20").join(format::file_name(0x20, 1))).unwrap();
    assert_eq!(read(&client, 0x20, 1, 0, 70_000).await, Err(Status::Io));
    assert_eq!(conn.recv_event().await, CsToMaster::Lost(vec![0x20]));
    assert!(!cs.store().disks[0].is_damaged(), "a missing file is not a damaged disk");
    assert_eq!(read(&client, 0x21, 1, 0, 70_000).await, Ok(vec![7u8; 70_000]));

    // A delete the master sends for a copy whose file is already gone: done, not damage.
    std::fs::remove_file(tmp.path().join("22").join(format::file_name(0x22, 1))).unwrap();
    assert_eq!(
        conn.command(|op| MasterToCs::Delete { op, chunk_id: 0x22, version: 1 }).await,
        Ok(())
    );
    assert!(!cs.store().disks[0].is_damaged());

    // Real I/O errors (EIO) on a disk whose health check passes: the first two cost their
    // copy (here: none named), the third in the window fails the disk.
    let eio = std::io::Error::from_raw_os_error(libc::EIO);
    let store = cs.store();
    assert_eq!(store.io_error(0, None, &eio, "test"), Status::Io);
    assert_eq!(store.io_error(0, None, &eio, "test"), Status::Io);
    assert!(!store.disks[0].is_damaged(), "two errors in a minute leave the disk in use");
    store.io_error(0, None, &eio, "test");
    assert!(store.disks[0].is_damaged(), "the third error in a minute fails the disk");
    cs.shutdown().await;
}

/// The errno classes: what is a disk's fault, a copy's, or an answer.
#[test]
fn errno_classes_blame_the_disk_only_for_real_io_errors() {
    let class = |errno: i32| match store::Fail::from(std::io::Error::from_raw_os_error(errno)) {
        store::Fail::Io(_) => "io",
        store::Fail::CopyUnusable(_) => "copy",
        store::Fail::Status(Status::NoSpace) => "full",
        store::Fail::Status(Status::Busy) => "busy",
        store::Fail::Status(other) => panic!("unexpected {other:?}"),
    };
    for (errno, expected) in [
        (libc::EIO, "io"),
        (libc::EROFS, "io"),
        (libc::ENOENT, "copy"),
        (libc::EACCES, "copy"),
        (libc::ENOSPC, "full"),
        (libc::EDQUOT, "full"),
        (libc::EMFILE, "busy"),
        (libc::ENFILE, "busy"),
        (libc::ENOMEM, "busy"),
    ] {
        assert_eq!(class(errno), expected, "errno {errno}");
    }
}
