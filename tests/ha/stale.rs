//! A SIGSTOPped leader resumed after a new election serves nothing and commands nothing.
//!
//! Clients: requests queued at the hung leader are answered, once it runs again, only with
//! refusals or with its old term, which the mount's [`TermFloor`] refuses (or the connection
//! is closed); none of them takes effect. A real mount that has followed the new leader and
//! then meets a master answering everything in the old term (what the deposed leader would
//! say, played by the test on its address) accepts none of it: its mkdir waits for the real
//! leader. Chunkservers: after obeying the new leader, a chunkserver keeps that term on disk
//! and refuses a master speaking the old term, so the deposed leader cannot delete a copy.

use super::cluster::{HaCluster, CLUSTER_ID};
use super::retry::{addr, ask, hello};
use crate::mount::Mount;
use crate::util::signal;
use mfsha_mount::client::master::TermFloor;
use mfsha_proto::client::{Answer, ClientOp, ClientReply, MasterRpc, Request};
use mfsha_proto::cluster_key::{self, ClusterKey, KeyedPort};
use mfsha_proto::cs::{CsToMaster, FromMaster, MasterToCs};
use mfsha_proto::frame::{read_frame, write_frame};
use mfsha_proto::types::{Attr, ChunkId, FileKind, LeaderHint, Status, Timestamp, ROOT_INO};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader};

/// The inode the fake deposed master gives everything it is asked about.
const FAKE_INO: u64 = 999_999_999;

fn background_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// The term recorded in a chunkserver's term fence file.
fn fenced_term(disk: &Path) -> u64 {
    let path = disk.join(mfsha_chunk::fence::TERM_FILE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let term = text.strip_prefix("term ").and_then(|t| t.split(' ').next());
    term.and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("{}: {text:?}", path.display()))
}

/// The path of `chunk_id`'s copy at `version` on `disk`.
fn chunk_file(disk: &Path, chunk_id: ChunkId, version: u32) -> PathBuf {
    use mfsha_chunk::format::{file_name, subdir_name};
    disk.join(subdir_name(chunk_id)).join(file_name(chunk_id, version))
}

/// Creates `name` and has the leader create its first chunk on the chunkservers.
async fn file_with_a_chunk(addr: &str, session: u64, name: &str) -> (ChunkId, u32) {
    let op = ClientOp::Create { parent: ROOT_INO, name: name.into(), mode: 0o644, umask: 0 };
    let created =
        ask(addr, Request { session, seq: 1, uid: 0, gid: 0, groups: Vec::new(), op }).await;
    let Ok(ClientReply::Attr(file)) = created else { panic!("create answered {created:?}") };
    let op = ClientOp::WriteChunk { ino: file.ino, index: 0 };
    let write =
        ask(addr, Request { session, seq: 2, uid: 0, gid: 0, groups: Vec::new(), op }).await;
    let Ok(ClientReply::ChunkWrite(chunk)) = write else { panic!("WriteChunk answered {write:?}") };
    let op = ClientOp::WriteChunkEnd {
        ino: file.ino,
        index: 0,
        chunk_id: chunk.chunk_id,
        file_size: 0,
        ok: true,
    };
    ask(addr, Request { session, seq: 3, uid: 0, gid: 0, groups: Vec::new(), op })
        .await
        .expect("WriteChunkEnd");
    (chunk.chunk_id, chunk.version)
}

#[test]
fn a_sigstopped_leader_resumed_after_a_new_election_serves_nothing_and_commands_nothing() {
    let mut cluster = HaCluster::start(1);
    let rt = background_runtime();
    let masters = cluster.client_addrs();
    let mut mount =
        Mount::start_in(cluster.path(), "mount", &masters, &[], &masters.replace(',', "+"));
    let old = cluster.wait_leader(Duration::from_secs(30));
    let old_addr = addr(&cluster, old);
    let opened = rt.block_on(ask(&old_addr, hello(rand::random::<u64>() | 1)));
    let Ok(ClientReply::Session { session, .. }) = opened else { panic!("Hello: {opened:?}") };
    let (chunk_id, version) = rt.block_on(file_with_a_chunk(&old_addr, session, "guarded"));
    let disk = cluster.path().join("chunkserver0-disk");
    assert!(chunk_file(&disk, chunk_id, version).exists(), "the leader created the copy");
    // A client connection to the leader, and the term it answers with.
    let floor = TermFloor::default();
    let stale = rt.block_on(MasterRpc::connect(&old_addr)).expect("connect to the leader");
    let status = Request::anonymous(ClientOp::Status);
    let answer = rt.block_on(stale.call(status)).expect("status from the leader");
    let old_term = answer.term;
    floor.admit(old_term).unwrap();

    // The leader hangs; requests sent to it wait in its socket.
    let pid = cluster.masters[old].daemon.as_ref().unwrap().pid().unwrap();
    stop(pid);
    let read = Request {
        session,
        seq: 0,
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        op: ClientOp::GetAttr { ino: ROOT_INO },
    };
    let mkdir = ClientOp::Mkdir { parent: ROOT_INO, name: "stale".into(), mode: 0o755, umask: 0 };
    let write = Request { session, seq: 4, uid: 0, gid: 0, groups: Vec::new(), op: mkdir };
    let queued: Vec<_> = [read, write]
        .into_iter()
        .map(|request| {
            let stale = stale.clone();
            rt.spawn(async move { stale.call(request).await })
        })
        .collect();
    let next = wait_leader_other_than(&cluster, old);
    let new_term = cluster.status(next).expect("the new leader answers").term;
    assert!(new_term > old_term, "new term {new_term}, old {old_term}");
    floor.admit(new_term).unwrap(); // the client has heard of the new leader
    cluster.wait_chunkservers(1, Duration::from_secs(30));
    assert!(fenced_term(&disk) >= new_term, "the chunkserver recorded the new leader's term");
    // The mount follows the new leader (and so has seen its term).
    std::fs::write(mount.path("followed"), b"new leader").expect("write after the election");

    // Resumed, the old leader answers what it had queued: nothing a client would accept.
    signal(pid, libc::SIGCONT);
    for task in queued {
        let answered = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(15), task).await.expect("answered or closed")
        });
        match answered.expect("the request task") {
            // Closed when it stepped down: it served nothing.
            Err(closed) => eprintln!("the resumed old leader closed the connection: {closed}"),
            Ok(Answer { term, reply, .. }) => {
                eprintln!("the resumed old leader answered {reply:?} with term {term}");
                let refused_by_term = floor.admit(term).is_err();
                assert!(
                    refused_by_term || matches!(reply, Err(Status::NotLeader)),
                    "the deposed leader answered {reply:?} with term {term} (new term {new_term})"
                );
            }
        }
    }
    // Its mutation took effect nowhere.
    cluster.wait_caught_up(old, Duration::from_secs(30));
    let lookup = ClientOp::Lookup { parent: ROOT_INO, name: "stale".into() };
    let found = rt.block_on(ask(
        &addr(&cluster, next),
        Request { session, seq: 0, uid: 0, gid: 0, groups: Vec::new(), op: lookup },
    ));
    assert_eq!(found, Err(Status::NotFound), "the deposed leader's mkdir must not exist");

    // The mount and the chunkserver meet a master speaking the old term at the old leader's
    // addresses (what the deposed leader would say) while the real leader is silent.
    let (client_port, cs_port) =
        (cluster.masters[old].ports.client, cluster.masters[old].ports.chunkserver);
    cluster.kill_master(old);
    let asked = Arc::new(AtomicU64::new(0));
    let fake_client =
        rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", client_port))).unwrap();
    rt.spawn(stale_master_answers(fake_client, old_term, asked.clone()));
    let fake_cs = rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", cs_port))).unwrap();
    let next_pid = cluster.masters[next].daemon.as_ref().unwrap().pid().unwrap();
    stop(next_pid); // both leave the silent leader and try the other address
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let dir = mount.path("after-stop");
    std::thread::spawn(move || done_tx.send(std::fs::create_dir(&dir)));
    let key = ClusterKey::load(&cluster.key_path()).expect("the cluster key");
    let refused = rt.block_on(stale_master_commands(&fake_cs, &key, old_term, chunk_id));
    wait_until(Duration::from_secs(20), "the mount asks the old leader's address", || {
        asked.load(Ordering::Relaxed) > 0
    });
    std::thread::sleep(Duration::from_secs(1));
    let early = done_rx.try_recv();
    signal(next_pid, libc::SIGCONT);
    assert!(refused, "the chunkserver obeyed a command of the deposed leader's term");
    assert!(chunk_file(&disk, chunk_id, version).exists(), "the deposed leader deleted a copy");
    assert!(fenced_term(&disk) >= new_term, "the fence still holds the new term");
    assert!(
        early.is_err(),
        "the mount's mkdir finished ({early:?}) while only the deposed master answered ({} requests)",
        asked.load(Ordering::Relaxed)
    );
    let made =
        done_rx.recv_timeout(Duration::from_secs(30)).expect("mkdir after the leader is back");
    made.expect("mkdir through the mount once the real leader answers again");
    let ino = std::fs::metadata(mount.path("after-stop")).unwrap().ino();
    assert_ne!(ino, FAKE_INO, "the mount believed the deposed master");
    let lookup = ClientOp::Lookup { parent: ROOT_INO, name: "after-stop".into() };
    let found = rt.block_on(ask(
        &addr(&cluster, next),
        Request { session, seq: 0, uid: 0, gid: 0, groups: Vec::new(), op: lookup },
    ));
    assert!(matches!(found, Ok(ClientReply::Attr(ref a)) if a.ino == ino), "{found:?}");
    cluster.wait_chunkservers(1, Duration::from_secs(30));
    mount.stop();
}

/// SIGSTOPs `pid` and waits until the kernel says it is stopped, so that nothing it answers
/// afterwards predates the stop.
fn stop(pid: u32) {
    signal(pid, libc::SIGSTOP);
    wait_until(Duration::from_secs(5), "the process stops", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // "pid (comm) S ...": the state follows the last ')'.
        stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    });
}

/// The index of a master other than `old` that leads, within 30 s.
fn wait_leader_other_than(cluster: &HaCluster, old: usize) -> usize {
    let others: Vec<usize> = (0..cluster.masters.len()).filter(|i| *i != old).collect();
    let mut found = None;
    wait_until(Duration::from_secs(30), "another master leads", || {
        found =
            others.iter().copied().find(|i| cluster.status(*i).is_some_and(|s| s.role == "leader"));
        found.is_some()
    });
    found.expect("checked above")
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Plays the deposed leader on the client port: answers every request with success in
/// `term`, naming [`FAKE_INO`] for whatever is looked up or made; counts the requests.
async fn stale_master_answers(listener: tokio::net::TcpListener, term: u64, asked: Arc<AtomicU64>) {
    let at = Timestamp::new(0, 0);
    let fake = Attr {
        ino: FAKE_INO,
        kind: FileKind::Directory,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        nlink: 2,
        rdev: 0,
        atime: at,
        mtime: at,
        ctime: at,
        goal: 1,
        trash_seconds: 0,
    };
    while let Ok((stream, peer)) = listener.accept().await {
        let (asked, fake) = (asked.clone(), fake.clone());
        tokio::spawn(mfsha_proto::rpc::serve(stream, peer.to_string(), 8, move |req: Request| {
            asked.fetch_add(1, Ordering::Relaxed);
            let reply = match req.op {
                ClientOp::Hello { session, .. } => {
                    Ok(ClientReply::Session { session: session.unwrap_or(1), root: ROOT_INO })
                }
                ClientOp::WhoLeads => {
                    // Of the mount's own cluster: only its term gives it away.
                    let cluster_id = CLUSTER_ID.into();
                    Ok(ClientReply::Leader(LeaderHint {
                        term,
                        leader_id: 1,
                        cluster_id,
                        ..Default::default()
                    }))
                }
                ClientOp::Lookup { .. } | ClientOp::GetAttr { .. } | ClientOp::Mkdir { .. } => {
                    Ok(ClientReply::Attr(fake.clone()))
                }
                _ => Ok(ClientReply::Unit),
            };
            async move { Answer::new(term, reply) }
        }));
    }
}

/// Plays a master of `term` (holding the cluster's `key`, as a deposed master does): greets
/// the chunkserver, welcomes it and orders `chunk_id` deleted. True if the chunkserver closed
/// the connection without carrying the order out.
async fn stale_master_commands(
    listener: &tokio::net::TcpListener,
    key: &ClusterKey,
    term: u64,
    chunk_id: ChunkId,
) -> bool {
    let accepted = tokio::time::timeout(Duration::from_secs(30), listener.accept()).await;
    let (mut stream, _) =
        accepted.expect("the chunkserver tries the old leader's address").unwrap();
    cluster_key::verify(&mut stream, Some(key), KeyedPort::Chunkserver).await.expect("the secret");
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let hello = MasterToCs::Hello { master_node: 1, cluster: CLUSTER_ID.into(), masters: vec![] };
    write_frame(&mut write, 0, &FromMaster { term, msg: hello }).await.expect("hello");
    write.flush().await.expect("hello");
    loop {
        let frame = read_frame::<_, CsToMaster>(&mut read).await.expect("registration");
        if matches!(frame.body, CsToMaster::RegisterDone) {
            break;
        }
    }
    for msg in
        [MasterToCs::Welcome { master_node: 1 }, MasterToCs::Delete { op: 1, chunk_id, version: 0 }]
    {
        let frame = FromMaster { term, msg };
        if write_frame(&mut write, 0, &frame).await.is_err() || write.flush().await.is_err() {
            return true; // already closed
        }
    }
    loop {
        let next =
            tokio::time::timeout(Duration::from_secs(10), read_frame::<_, CsToMaster>(&mut read));
        match next.await.expect("the chunkserver must close the connection") {
            Err(_) => return true,
            Ok(frame) => match frame.body {
                CsToMaster::Done { op: 1, status: Ok(()) } => return false,
                _ => continue,
            },
        }
    }
}
