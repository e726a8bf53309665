//! Sessions in process: a real master (real RocksDB in a temporary directory) and real client
//! connections. A retried Hello opens no second session; a session no connection carries
//! ends after the sustain time, releasing its open files; a connected one never does; a
//! master that starts leading counts a session's idle time from the start of its leadership.

use mfsha_proto::client::{ClientOp, ClientReply, ClusterStatus, Request};
use mfsha_proto::types::{Reply, SessionId, Status, ROOT_INO};
use std::time::{Duration, Instant};

mod common;
use common::*;

async fn hello_with_token(client: &Client, token: u64) -> Reply<ClientReply> {
    let op = ClientOp::Hello {
        session: None,
        client_info: "sessions test".into(),
        subdir: "/".into(),
        proof: None,
        token,
        version: mfsha_proto::client::VERSION,
    };
    client.call(request(0, 0, op)).await.unwrap()
}

async fn status(client: &Client) -> ClusterStatus {
    match client.call(request(0, 0, ClientOp::Status)).await.unwrap() {
        Ok(ClientReply::Status(status)) => *status,
        other => panic!("status answered {other:?}"),
    }
}

/// Waits up to `limit` for the master's status to satisfy `ok`; returns how long it took.
async fn wait_status(
    client: &Client,
    limit: Duration,
    what: &str,
    ok: impl Fn(&ClusterStatus) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let status = status(client).await;
        if ok(&status) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what} within {limit:?}: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_hello_with_the_same_token_gets_the_session_the_first_one_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = start(dir.path()).await;
    let first = Client::connect(&addr).await.unwrap();
    let opened = hello_with_token(&first, 0xfeed).await;
    let Ok(ClientReply::Session { session, root: ROOT_INO }) = opened else {
        panic!("Hello answered {opened:?}");
    };
    // The reply was "lost": the client retries on a new connection with the same token.
    let retry = Client::connect(&addr).await.unwrap();
    assert_eq!(hello_with_token(&retry, 0xfeed).await, opened);
    assert_eq!(status(&retry).await.sessions, 1, "the retry opened no second session");
    // Another token (another mount) is another session; so is every open without a token.
    let other = hello_with_token(&retry, 0xbeef).await;
    assert!(matches!(other, Ok(ClientReply::Session { session: s, .. }) if s != session));
    hello_with_token(&retry, 0).await.unwrap();
    hello_with_token(&retry, 0).await.unwrap();
    assert_eq!(status(&retry).await.sessions, 4);
    master.stop().await.unwrap();
}

/// Opens a session on `client`, creates `name` held open by it, and unlinks it (trash time 0
/// on the root: the file is kept only because the session holds it).
async fn open_unlinked_file(client: &Client, name: &str) -> SessionId {
    let session = open_session(client).await;
    let no_trash = ClientOp::SetTrashTime { ino: ROOT_INO, seconds: 0, recursive: false };
    // Root's directory: its trash time is root's to set.
    let as_root = Request { uid: 0, gid: 0, ..request(session, 1, no_trash) };
    client.call(as_root).await.unwrap().unwrap();
    let create = ClientOp::Create { parent: ROOT_INO, name: name.into(), mode: 0o644, umask: 0 };
    attr(client.call(request(session, 2, create)).await.unwrap());
    let unlink = ClientOp::Unlink { parent: ROOT_INO, name: name.into() };
    client.call(request(session, 3, unlink)).await.unwrap().unwrap();
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_connection_expires_and_frees_its_unlinked_files_a_connected_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.client.session_sustain_secs = 1;
    let (master, addr) = start_with(config).await;
    let leaving = Client::connect(&addr).await.unwrap();
    let gone = open_unlinked_file(&leaving, "open-unlinked").await;
    let staying = Client::connect(&addr).await.unwrap();
    let kept = open_session(&staying).await;
    let inodes = status(&staying).await.inodes;
    // Both connected for longer than the sustain time: both kept.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let now = status(&staying).await;
    assert_eq!((now.sessions, now.inodes), (2, inodes), "connected sessions are kept alive");
    drop(leaving);
    let dropped = Instant::now();
    wait_status(&staying, Duration::from_secs(10), "the detached session expires", |s| {
        s.sessions == 1
    })
    .await;
    let took = dropped.elapsed();
    assert!(took >= Duration::from_millis(900), "expired after {took:?}, before the sustain time");
    // The open-but-unlinked file is freed by the leader's next round once nobody holds it.
    wait_status(&staying, Duration::from_secs(3), "the unlinked file is freed", |s| {
        s.inodes == inodes - 1
    })
    .await;
    let back = Client::connect(&addr).await.unwrap();
    assert_eq!(hello(&back, Some(gone)).await, Err(Status::BadSession));
    // The connected session still works.
    let mkdir = ClientOp::Mkdir { parent: ROOT_INO, name: "still".into(), mode: 0o755, umask: 0 };
    attr(staying.call(request(kept, 1, mkdir)).await.unwrap());
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_counts_idle_time_from_the_start_of_its_leadership() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = start(dir.path()).await;
    let client = Client::connect(&addr).await.unwrap();
    let session = open_session(&client).await;
    drop(client);
    master.stop().await.unwrap();
    // The session has been detached since before the restart; this master has not seen it
    // since, so it counts from when it started leading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut config = config(dir.path());
    config.client.session_sustain_secs = 3;
    let (master, addr) = start_with(config).await;
    let leading = Instant::now();
    let client = Client::connect(&addr).await.unwrap();
    assert_eq!(status(&client).await.sessions, 1, "not expired at the start of leadership");
    let took =
        wait_status(&client, Duration::from_secs(15), "the session expires", |s| s.sessions == 0)
            .await;
    let since = leading.elapsed();
    assert!(since >= Duration::from_millis(2900), "expired {since:?} into the leadership");
    assert!(took > Duration::ZERO);
    assert_eq!(hello(&client, Some(session)).await, Err(Status::BadSession));
    master.stop().await.unwrap();
}

/// One session may hold `client.max_open_files_per_session` files open: the next open of
/// another file is refused with ENFILE (and logged), a second open of a held file and other
/// sessions' opens are not, and a release makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_holds_at_most_its_cap_of_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.client.max_open_files_per_session = 3;
    let (master, addr) = start_with(config).await;
    let client = Client::connect(&addr).await.unwrap();
    let session = open_session(&client).await;
    let mut seq = 0;
    let mut call = |op: ClientOp| {
        seq += 1;
        client.call(request(session, seq, op))
    };
    let mut files = Vec::new();
    for i in 0..4 {
        let create = ClientOp::Mknod {
            parent: ROOT_INO,
            name: format!("f{i}"),
            kind: mfsha_proto::types::FileKind::File,
            mode: 0o644,
            umask: 0,
            rdev: 0,
        };
        files.push(attr(call(create).await.unwrap()).ino);
    }
    for &ino in &files[..3] {
        assert!(call(ClientOp::Open { ino, flags: 0 }).await.unwrap().is_ok());
    }
    let over = call(ClientOp::Open { ino: files[3], flags: 0 }).await.unwrap();
    assert_eq!(over, Err(Status::TooManyOpen));
    assert_eq!(Status::TooManyOpen.errno(), 23, "ENFILE");
    let again = call(ClientOp::Open { ino: files[0], flags: 0 }).await.unwrap();
    assert!(again.is_ok(), "a held file opens again: {again:?}");
    // Another session has its own cap.
    let other = Client::connect(&addr).await.unwrap();
    let other_session = open_session(&other).await;
    let theirs = other.call(request(other_session, 1, ClientOp::Open { ino: files[3], flags: 0 }));
    assert!(theirs.await.unwrap().is_ok());
    // Releasing one file (held once) makes room.
    assert!(call(ClientOp::Release { ino: files[1] }).await.unwrap().is_ok());
    assert!(call(ClientOp::Open { ino: files[3], flags: 0 }).await.unwrap().is_ok());
    master.stop().await.unwrap();
}
