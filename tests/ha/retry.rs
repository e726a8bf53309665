//! Exactly-once across a failover, end to end: a create and a session open whose replies are
//! "lost" because the leader is SIGKILLed after committing them, retried against the new
//! leader, get the original inode and the original session, and exist once.

use super::cluster::{runtime, HaCluster};
use mfsha_proto::client::{ClientOp, ClientReply, MasterClient, Request};
use mfsha_proto::types::{Reply, Status, ROOT_INO};
use std::time::{Duration, Instant};

/// The client address of master `index`.
pub fn addr(cluster: &HaCluster, index: usize) -> String {
    format!("127.0.0.1:{}", cluster.masters[index].ports.client)
}

/// The token each session opened by [`ask`] was opened with: its secret, shown to resume it.
static SECRETS: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(Vec::new());

/// Sends `request` to the master at `addr` on a new connection and returns its reply, asking
/// again (the same request: retries are safe) while it answers that it does not lead yet, for
/// up to 15 s. A request in a session [`ask`] opened resumes that session first, as a client
/// does on every new connection (a master serves a session only on a connection that took it
/// up).
pub async fn ask(addr: &str, request: Request) -> Reply<ClientReply> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let client = MasterClient::connect_within(addr, Duration::from_secs(1)).await;
        let client = client.unwrap_or_else(|e| panic!("connect to the master at {addr}: {e}"));
        let secret = SECRETS.lock().unwrap().iter().find(|(s, _)| *s == request.session).copied();
        if let Some((session, token)) = secret {
            let mut resume = hello(token);
            if let ClientOp::Hello { session: s, .. } = &mut resume.op {
                *s = Some(session);
            }
            let resumed = client.call_timeout(resume, 10_000).await;
            match resumed.unwrap_or_else(|e| panic!("resuming session {session} at {addr}: {e}")) {
                Ok(_) => {}
                Err(Status::NotLeader | Status::Unavailable) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                refused => return refused,
            }
        }
        let reply = client.call_timeout(request.clone(), 10_000).await;
        match reply.unwrap_or_else(|e| panic!("{:?} to {addr}: {e}", request.op)) {
            Err(Status::NotLeader | Status::Unavailable) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            reply => {
                if let (
                    ClientOp::Hello { session: None, token, .. },
                    Ok(ClientReply::Session { session, .. }),
                ) = (&request.op, &reply)
                {
                    SECRETS.lock().unwrap().push((*session, *token));
                }
                return reply;
            }
        }
    }
}

pub fn hello(token: u64) -> Request {
    let op = ClientOp::Hello {
        session: None,
        client_info: "ha retry test".into(),
        subdir: "/".into(),
        proof: None,
        token,
        version: mfsha_proto::client::VERSION,
    };
    Request::anonymous(op)
}

#[test]
fn a_create_and_a_hello_retried_across_a_leader_kill_return_the_originals() {
    let mut cluster = HaCluster::start(1);
    let rt = runtime();
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let token = rand::random::<u64>() | 1;
    let opened = rt.block_on(ask(&addr(&cluster, leader), hello(token)));
    let Ok(ClientReply::Session { session, .. }) = opened else {
        panic!("Hello answered {opened:?}");
    };
    let op = ClientOp::Create { parent: ROOT_INO, name: "once".into(), mode: 0o644, umask: 0 };
    let create = Request { session, seq: 1, uid: 0, gid: 0, groups: Vec::new(), op };
    let created = rt.block_on(ask(&addr(&cluster, leader), create.clone()));
    let Ok(ClientReply::Attr(first)) = created else { panic!("create answered {created:?}") };
    // The leader answered, so both entries are committed on a majority. Their replies are
    // "lost": the leader dies, and the client retries both against whoever leads next.
    cluster.kill_master(leader);
    let next = cluster.wait_leader(Duration::from_secs(30));
    assert_ne!(next, leader);
    let retried = rt.block_on(ask(&addr(&cluster, next), create));
    let Ok(ClientReply::Attr(again)) = retried else { panic!("the retry answered {retried:?}") };
    assert_eq!(again.ino, first.ino, "the retry must return the original inode");
    assert_eq!(again, first, "the retry is answered from the stored reply");
    let reopened = rt.block_on(ask(&addr(&cluster, next), hello(token)));
    assert_eq!(reopened, opened, "the retried Hello must return the original session");
    // Exactly one entry, one file and one session exist.
    let list = Request {
        session,
        seq: 0,
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        op: ClientOp::ReadDir { ino: ROOT_INO, offset: 0, max: 100, after: None },
    };
    let listed = rt.block_on(ask(&addr(&cluster, next), list));
    let Ok(ClientReply::Entries { entries, .. }) = listed else { panic!("readdir: {listed:?}") };
    let names: Vec<(&str, u64)> = entries.iter().map(|e| (e.name.as_str(), e.attr.ino)).collect();
    assert_eq!(names, vec![("once", first.ino)]);
    let status = cluster.status(next).expect("the new leader answers");
    assert_eq!((status.files, status.sessions), (1, 1), "{status:?}");
}
