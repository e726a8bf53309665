//! The client service in process: a real master (`daemon::start`, real RocksDB in a temporary
//! directory) answering real client connections on 127.0.0.1.

use mfsha_master_ha::daemon;
use mfsha_proto::client::{ClientOp, ClientReply};
use mfsha_proto::types::{FileKind, SetAttr, Status, ROOT_INO};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_requests_round_trip_and_retries_are_answered_once() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = start(dir.path()).await;
    let client = Client::connect(&addr).await.unwrap();
    let session = open_session(&client).await;

    let mkdir =
        ClientOp::Mkdir { parent: ROOT_INO, name: "docs".into(), mode: 0o750, umask: 0o022 };
    let docs = attr(client.call(request(session, 1, mkdir.clone())).await.unwrap());
    assert_eq!(docs.kind, FileKind::Directory);
    assert_eq!(docs.mode, 0o750);
    assert_eq!((docs.uid, docs.gid), (1000, 1000));
    // The same (session, seq) again — a retry after a lost reply — gets the same answer and
    // creates nothing new.
    let again = attr(client.call(request(session, 1, mkdir)).await.unwrap());
    assert_eq!(again, docs);
    // An older seq inside the reply window is answered from its stored reply, never applied
    // again even with a different body (meta's tests cover seqs below the window).
    let stale = ClientOp::Mkdir { parent: ROOT_INO, name: "x".into(), mode: 0o755, umask: 0 };
    let create = ClientOp::Mknod {
        parent: docs.ino,
        name: "a.txt".into(),
        kind: FileKind::File,
        mode: 0o644,
        umask: 0,
        rdev: 0,
    };
    let file = attr(client.call(request(session, 2, create)).await.unwrap());
    assert_eq!(attr(client.call(request(session, 1, stale)).await.unwrap()), docs);
    let x = ClientOp::Lookup { parent: ROOT_INO, name: "x".into() };
    assert_eq!(client.call(request(session, 0, x)).await.unwrap(), Err(Status::NotFound));

    let found = client.call(request(
        session,
        0,
        ClientOp::Lookup { parent: docs.ino, name: "a.txt".into() },
    ));
    assert_eq!(attr(found.await.unwrap()).ino, file.ino);
    let set = SetAttr { mode: Some(0o600), ..SetAttr::default() };
    let changed = attr(
        client
            .call(request(session, 3, ClientOp::SetAttr { ino: file.ino, set, by_handle: false }))
            .await
            .unwrap(),
    );
    assert_eq!(changed.mode, 0o600);
    let rename = ClientOp::Rename {
        parent: docs.ino,
        name: "a.txt".into(),
        new_parent: ROOT_INO,
        new_name: "b.txt".into(),
        flags: 0,
    };
    assert_eq!(client.call(request(session, 4, rename)).await.unwrap(), Ok(ClientReply::Unit));
    match client
        .call(request(
            session,
            0,
            ClientOp::ReadDir { ino: ROOT_INO, offset: 0, max: 100, after: None },
        ))
        .await
        .unwrap()
    {
        Ok(ClientReply::Entries { entries, more }) => {
            let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names, ["b.txt", "docs"]);
            assert!(!more);
        }
        other => panic!("readdir answered {other:?}"),
    }
    match client
        .call(request(session, 0, ClientOp::ResolvePath { path: "/b.txt".into() }))
        .await
        .unwrap()
    {
        Ok(ClientReply::Attr(a)) => assert_eq!(a.ino, file.ino),
        other => panic!("resolve answered {other:?}"),
    }
    let unlink = ClientOp::Unlink { parent: ROOT_INO, name: "b.txt".into() };
    assert_eq!(client.call(request(session, 5, unlink)).await.unwrap(), Ok(ClientReply::Unit));
    let gone = client.call(request(
        session,
        0,
        ClientOp::Lookup { parent: ROOT_INO, name: "b.txt".into() },
    ));
    assert_eq!(gone.await.unwrap(), Err(Status::NotFound));
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_across_restart_and_unknown_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = start(dir.path()).await;
    let client = Client::connect(&addr).await.unwrap();
    let other = open_session(&client).await;
    let session = open_session(&client).await;
    assert_ne!(session, other);
    let mkdir = ClientOp::Mkdir { parent: ROOT_INO, name: "kept".into(), mode: 0o755, umask: 0 };
    let kept = attr(client.call(request(session, 1, mkdir.clone())).await.unwrap());
    // Mutations need a session the master knows, and a seq.
    assert_eq!(client.call(request(0, 1, mkdir.clone())).await.unwrap(), Err(Status::BadSession));
    assert_eq!(
        client.call(request(session, 0, mkdir.clone())).await.unwrap(),
        Err(Status::Invalid)
    );
    match client.call(request(0, 0, ClientOp::Status)).await.unwrap() {
        Ok(ClientReply::Status(s)) => {
            assert_eq!(s.role, "leader");
            assert_eq!(s.directories, 2);
            // One connection carries one session: the last Hello on it.
            assert_eq!(s.clients.len(), 1, "{s:?}");
            assert_eq!(s.clients[0].session, session);
            assert!(s.applied_index >= 3);
        }
        other => panic!("status answered {other:?}"),
    }
    drop(client);
    master.stop().await.unwrap();

    let (master, addr) = start(dir.path()).await;
    let client = Client::connect(&addr).await.unwrap();
    assert_eq!(
        hello(&client, Some(session)).await,
        Ok(ClientReply::Session { session, root: ROOT_INO })
    );
    // The retry of seq 1 after the restart is answered from the replicated session table.
    assert_eq!(attr(client.call(request(session, 1, mkdir)).await.unwrap()), kept);
    assert_eq!(hello(&client, Some(session + 1_000_000_000)).await, Err(Status::BadSession));
    let goodbye = client.call(request(session, 2, ClientOp::Goodbye)).await.unwrap();
    assert_eq!(goodbye, Ok(ClientReply::Unit));
    assert_eq!(hello(&client, Some(session)).await, Err(Status::BadSession));
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_chunkservers_data_requests_say_so_and_statfs_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = start(dir.path()).await;
    let client = Client::connect(&addr).await.unwrap();
    let session = open_session(&client).await;
    let create = ClientOp::Mknod {
        parent: ROOT_INO,
        name: "f".into(),
        kind: FileKind::File,
        mode: 0o644,
        umask: 0,
        rdev: 0,
    };
    let file = attr(client.call(request(session, 1, create)).await.unwrap());
    let write = ClientOp::WriteChunk { ino: file.ino, index: 0 };
    assert_eq!(client.call(request(session, 2, write)).await.unwrap(), Err(Status::NoChunkservers));
    match client
        .call(request(session, 0, ClientOp::ReadChunk { ino: file.ino, index: 0 }))
        .await
        .unwrap()
    {
        Ok(ClientReply::Chunk(location)) => {
            assert_eq!(location.chunk_id, 0, "an empty file is a hole");
            assert!(location.servers.is_empty());
        }
        other => panic!("read chunk answered {other:?}"),
    }
    match client.call(request(session, 0, ClientOp::StatFs)).await.unwrap() {
        Ok(ClientReply::FsStat(stat)) => {
            assert_eq!(stat.total_bytes, 0);
            assert_eq!(stat.inodes, 2);
        }
        other => panic!("statfs answered {other:?}"),
    }
    let goal = ClientOp::SetGoal { ino: file.ino, goal: 3, recursive: false };
    match client.call(request(session, 3, goal)).await.unwrap() {
        Ok(ClientReply::Changed { inodes, .. }) => assert_eq!(inodes, 1),
        other => panic!("set goal answered {other:?}"),
    }
    let get = client.call(request(session, 0, ClientOp::GetGoal { ino: file.ino })).await.unwrap();
    assert_eq!(get, Ok(ClientReply::Goal(3)));
    let bad_goal = ClientOp::SetGoal { ino: file.ino, goal: 0, recursive: false };
    assert_eq!(client.call(request(session, 4, bad_goal)).await.unwrap(), Err(Status::Invalid));
    let long = ClientOp::Mkdir { parent: ROOT_INO, name: "n".repeat(256), mode: 0o755, umask: 0 };
    assert_eq!(client.call(request(session, 5, long)).await.unwrap(), Err(Status::NameTooLong));
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_master_on_the_same_port_fails_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = start(dir.path()).await;
    let mut second = config(&dir.path().join("other"));
    second.listen.client = addr.parse().unwrap();
    let err = daemon::start(second).await.err().expect("the port is taken");
    let text = err.to_string();
    assert!(text.contains(&addr) && text.contains("another master"), "{text}");
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_makes_a_file_held_open_by_the_session_and_several_mutations_may_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = start(dir.path()).await;
    let client = Client::connect(&addr).await.unwrap();
    let session = open_session(&client).await;
    let create = |name: &str| ClientOp::Create {
        parent: ROOT_INO,
        name: name.into(),
        mode: 0o666,
        umask: 0o022,
    };
    let file = attr(client.call(request(session, 1, create("new"))).await.unwrap());
    assert_eq!((file.kind, file.mode), (FileKind::File, 0o644));
    // A retry answers the same file; the session holds it exactly once: after one Release
    // nothing is held (a second changes nothing).
    assert_eq!(attr(client.call(request(session, 1, create("new"))).await.unwrap()), file);
    assert_eq!(master.service.opens.count(session, file.ino), (1, true));
    let release = || ClientOp::Release { ino: file.ino };
    assert_eq!(client.call(request(session, 2, release())).await.unwrap(), Ok(ClientReply::Unit));
    assert_eq!(master.service.opens.count(session, file.ino), (0, false));
    assert_eq!(client.call(request(session, 3, release())).await.unwrap(), Ok(ClientReply::Unit));
    // Forty creates in flight at once on one session (inside the reply window): each applied
    // once, each answered with its own file.
    let calls: Vec<_> = (0..40u64)
        .map(|i| {
            let client = client.clone();
            let op = create(&format!("f{i}"));
            tokio::spawn(
                async move { attr(client.call(request(session, 10 + i, op)).await.unwrap()) },
            )
        })
        .collect();
    let mut inodes = std::collections::BTreeSet::new();
    for call in calls {
        inodes.insert(call.await.unwrap().ino);
    }
    assert_eq!(inodes.len(), 40);
    let list = ClientOp::ReadDir { ino: ROOT_INO, offset: 0, max: 100, after: None };
    match client.call(request(session, 0, list)).await.unwrap() {
        Ok(ClientReply::Entries { entries, .. }) => {
            assert_eq!(entries.iter().filter(|e| e.name.starts_with('f')).count(), 40)
        }
        other => panic!("readdir: {other:?}"),
    }
    // Paging after a name: every entry once, in name order, pages of 7.
    let mut names: Vec<String> = Vec::new();
    loop {
        let after = names.last().cloned();
        let page = ClientOp::ReadDir { ino: ROOT_INO, offset: 0, max: 7, after };
        match client.call(request(session, 0, page)).await.unwrap() {
            Ok(ClientReply::Entries { entries, more }) => {
                assert!(entries.len() <= 7);
                names.extend(entries.into_iter().map(|e| e.name));
                if !more {
                    break;
                }
            }
            other => panic!("readdir after {:?}: {other:?}", names.last()),
        }
    }
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted, "name order, each name once");
    assert_eq!(names.iter().filter(|n| n.starts_with('f')).count(), 40);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn every_answer_carries_the_term_and_who_leads_names_this_master() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = start(dir.path()).await;
    let client = Client::connect(&addr).await.unwrap();
    let term = master.service.meta.raft_status().term;
    assert!(term > 0);
    let who = client.0.call(request(0, 0, ClientOp::WhoLeads)).await.unwrap();
    assert_eq!(who.term, term);
    match who.reply {
        Ok(ClientReply::Leader(hint)) => {
            assert_eq!((hint.term, hint.leader_id), (term, master.node_id()));
            // Listening on 127.0.0.1: the advertised address defaults to the bound one.
            assert_eq!(hint.client, Some(addr.clone()));
            assert!(hint.chunkserver.is_some() && hint.logger.is_some(), "{hint:?}");
        }
        other => panic!("WhoLeads answered {other:?}"),
    }
    // Errors carry it too.
    let stale = client.0.call(request(0, 1, ClientOp::GetAttr { ino: ROOT_INO })).await.unwrap();
    assert_eq!(stale.term, term);
    drop(client);
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_id_alone_opens_nothing_on_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = start(dir.path()).await;
    let owner = Client::connect(&addr).await.unwrap();
    let session = open_session(&owner).await;
    let thief = Client::connect(&addr).await.unwrap();
    let mkdir =
        |name: &str| ClientOp::Mkdir { parent: ROOT_INO, name: name.into(), mode: 0o755, umask: 0 };
    // Naming the session without having taken it up on this connection.
    assert_eq!(
        thief.call(request(session, 1, mkdir("stolen"))).await.unwrap(),
        Err(Status::BadSession)
    );
    let read = ClientOp::GetAttr { ino: ROOT_INO };
    assert_eq!(thief.call(request(session, 0, read)).await.unwrap(), Err(Status::BadSession));
    // Resuming it with a guessed secret.
    let guess = ClientOp::Hello {
        session: Some(session),
        client_info: "thief".into(),
        subdir: "/".into(),
        proof: None,
        token: 12345,
        version: mfsha_proto::client::VERSION,
    };
    assert_eq!(thief.call(request(0, 0, guess)).await.unwrap(), Err(Status::BadSession));
    // The owner goes on, and resumes on a new connection with its secret.
    attr(owner.call(request(session, 1, mkdir("mine"))).await.unwrap());
    let again = Client::connect(&addr).await.unwrap();
    assert_eq!(
        hello(&again, Some(session)).await,
        Ok(ClientReply::Session { session, root: ROOT_INO })
    );
    attr(again.call(request(session, 2, mkdir("mine too"))).await.unwrap());
    let names = master.service.meta.read(|s| s.readdir(ROOT_INO, 0, 100).unwrap().0);
    let names: Vec<String> = names.into_iter().map(|e| e.name).collect();
    assert!(names.contains(&"mine".into()) && !names.contains(&"stolen".into()), "{names:?}");
    master.stop().await.unwrap();
}
