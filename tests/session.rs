//! A client session with a real master for the process-level tests: Hello (retried while
//! the master has not won its first election), numbered mutations, and small conveniences.

#![allow(dead_code)] // each test module uses its own subset

use mfsha_proto::client::{ClientOp, ClientReply, Request};
use mfsha_proto::types::{FileKind, Ino, Reply, Status, ROOT_INO};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub type Client = mfsha_proto::client::MasterClient;

/// A client session driven by a test (as root, uid 0).
pub struct Session {
    pub client: Client,
    pub id: u64,
    pub seq: u64,
}

impl Session {
    /// Connects and opens a session. A master that just started answers NotLeader until it
    /// has won its first election: Hello is retried for up to 20 s.
    pub async fn open(addr: &str) -> Session {
        let client = Client::connect(addr).await.expect("connect to the master");
        let mut session = Session { client, id: 0, seq: 0 };
        let deadline = Instant::now() + Duration::from_secs(20);
        // One token for every attempt: an attempt that committed unseen is not a second session.
        let token = rand::random::<u64>() | 1;
        loop {
            let hello = ClientOp::Hello {
                session: None,
                client_info: "mfsha test".into(),
                subdir: "/".into(),
                proof: None,
                token,
                version: mfsha_proto::client::VERSION,
            };
            match session.read(hello).await.expect("hello reaches the master") {
                Ok(ClientReply::Session { session: id, root }) => {
                    assert_eq!(root, ROOT_INO);
                    session.id = id;
                    return session;
                }
                Err(Status::NotLeader | Status::Unavailable) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => panic!("Hello answered {other:?}"),
            }
        }
    }

    pub async fn read(&self, op: ClientOp) -> Result<Reply<ClientReply>, mfsha_proto::RpcError> {
        self.client
            .call(Request { session: self.id, seq: 0, uid: 0, gid: 0, groups: Vec::new(), op })
            .await
    }

    pub async fn mutate(
        &mut self,
        op: ClientOp,
    ) -> Result<Reply<ClientReply>, mfsha_proto::RpcError> {
        self.seq += 1;
        self.client
            .call(Request {
                session: self.id,
                seq: self.seq,
                uid: 0,
                gid: 0,
                groups: Vec::new(),
                op,
            })
            .await
    }

    /// A mutation as `uid`/`gid` with supplementary `groups` (a raw client claims whom it
    /// likes; the master's own checks decide).
    pub async fn mutate_as(&mut self, who: (u32, u32, &[u32]), op: ClientOp) -> Reply<ClientReply> {
        self.seq += 1;
        let (uid, gid, groups) = (who.0, who.1, who.2.to_vec());
        let request = Request { session: self.id, seq: self.seq, uid, gid, groups, op };
        self.client.call(request).await.expect("the request reaches the master")
    }

    /// A read as `uid`/`gid` with supplementary `groups`.
    pub async fn read_as(&self, who: (u32, u32, &[u32]), op: ClientOp) -> Reply<ClientReply> {
        let (uid, gid, groups) = (who.0, who.1, who.2.to_vec());
        let request = Request { session: self.id, seq: 0, uid, gid, groups, op };
        self.client.call(request).await.expect("the request reaches the master")
    }

    pub async fn mkdir(&mut self, parent: Ino, name: &str) -> Ino {
        let op = ClientOp::Mkdir { parent, name: name.into(), mode: 0o755, umask: 0 };
        match self.mutate(op).await.expect("mkdir reaches the master") {
            Ok(ClientReply::Attr(attr)) => attr.ino,
            other => panic!("mkdir {name} answered {other:?}"),
        }
    }

    /// Every entry of directory `dir`: name → (kind, permission bits, inode).
    pub async fn list(&self, dir: Ino) -> BTreeMap<String, (FileKind, u32, Ino)> {
        let mut out = BTreeMap::new();
        loop {
            let op =
                ClientOp::ReadDir { ino: dir, offset: out.len() as u64, max: 1000, after: None };
            match self.read(op).await.expect("readdir reaches the master") {
                Ok(ClientReply::Entries { entries, more }) => {
                    for e in entries {
                        out.insert(e.name, (e.attr.kind, e.attr.mode & 0o7777, e.attr.ino));
                    }
                    if !more {
                        return out;
                    }
                }
                other => panic!("readdir {dir} answered {other:?}"),
            }
        }
    }
}
