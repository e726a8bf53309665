//! Exports with a real master process and clients from several loopback addresses
//! (127.0.0.2-4, each bound before connecting): a foreign address, a missing or wrong
//! password and a write on a read-only export are each refused, and the master's log names
//! the address; the mount's own session code proves its password (and says what to fix
//! when it is wrong); SIGHUP with a broken file keeps the old exports, a good one applies.

use crate::session::Client;
use crate::util::{signal, Cluster};
use mfsha_mount::client::master::MasterLink;
use mfsha_mount::{ConnectError, MasterConfig};
use mfsha_proto::auth;
use mfsha_proto::client::{ClientOp, ClientReply, MasterRpc, Request};
use mfsha_proto::types::{Reply, Status, ROOT_INO};
use std::time::{Duration, Instant};

const EXPORTS: &str = "\
127.0.0.1   /   rw,maproot=0,password=pw-one
127.0.0.2   /   ro
127.0.0.3   /   rw,password=secret
";

async fn client_from(local: &str, master: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).expect("bind a loopback address");
    let stream = socket.connect(master.parse().unwrap()).await.expect("connect to the master");
    mfsha_proto::client::MasterClient(MasterRpc::from_stream(stream, master.to_string()))
}

fn request(session: u64, seq: u64, op: ClientOp) -> Request {
    Request { session, seq, uid: 1000, gid: 1000, groups: Vec::new(), op }
}

/// A new session's Hello, proving `password` if given; retried while no leader is elected.
async fn hello(client: &Client, password: Option<&str>) -> Reply<ClientReply> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let token = rand::random::<u64>() | 1;
    loop {
        let proof = match password {
            None => None,
            Some(password) => {
                let op = ClientOp::Challenge { subdir: "/".into() };
                let Ok(ClientReply::Challenge { nonce, md5 }) =
                    client.call(request(0, 0, op)).await.unwrap()
                else {
                    panic!("no challenge answered")
                };
                let key = auth::password_key(password, md5);
                Some(auth::hello_proof(&key, &nonce, 0, token, "/", "exports test"))
            }
        };
        let op = ClientOp::Hello {
            session: None,
            client_info: "exports test".into(),
            subdir: "/".into(),
            proof,
            token,
            version: mfsha_proto::client::VERSION,
        };
        match client.call(request(0, 0, op)).await.unwrap() {
            Err(Status::NotLeader | Status::Unavailable) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => return other,
        }
    }
}

fn session_of(reply: Reply<ClientReply>) -> u64 {
    match reply {
        Ok(ClientReply::Session { session, .. }) => session,
        other => panic!("expected a session, got {other:?}"),
    }
}

/// The mount's session code (what `mfsha mount` runs) with `password`.
async fn mount_link(
    addr: &str,
    password: &str,
) -> Result<std::sync::Arc<MasterLink>, ConnectError> {
    let mut cfg = MasterConfig::new(vec![addr.to_string()]);
    cfg.password = Some(password.to_string());
    cfg.io_timeout = Duration::from_secs(20);
    MasterLink::connect(cfg).await
}

/// A master started with `exports` as its exports file (returned, for rewriting).
fn master_with_exports(exports: &str) -> (Cluster, std::path::PathBuf) {
    let mut cluster = Cluster::new();
    let file = cluster.path().join("mfsexports.cfg");
    std::fs::write(&file, exports).unwrap();
    cluster.master_extra_yaml = format!("exports: {}\n", file.display());
    cluster.start_master();
    (cluster, file)
}

fn wait_log(cluster: &Cluster, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.master_log().contains(line) {
        assert!(
            Instant::now() < deadline,
            "the master log lacks {line:?}:\n{}",
            cluster.master_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn exports_refuse_and_log_foreign_addresses_and_wrong_passwords() {
    let (mut cluster, file) = master_with_exports(EXPORTS);
    let addr = cluster.master_addr();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        // The mount's code proves its password; a wrong one is refused with what to fix.
        let link = mount_link(&addr, "pw-one").await.expect("the right password opens a session");
        assert_ne!(link.session(), 0);
        let err = mount_link(&addr, "pw-two").await.err().expect("a wrong password is refused");
        let text = err.to_string();
        assert!(matches!(err, ConnectError::Refused { status: Status::BadPassword, .. }), "{text}");
        assert!(text.contains("mfspassword"), "the message says how to give it: {text}");

        let foreign = client_from("127.0.0.4", &addr).await;
        assert_eq!(hello(&foreign, None).await, Err(Status::Access));
        let read = ClientOp::GetAttr { ino: ROOT_INO };
        assert_eq!(foreign.call(request(0, 0, read)).await.unwrap(), Err(Status::Access));

        let three = client_from("127.0.0.3", &addr).await;
        assert_eq!(hello(&three, None).await, Err(Status::BadPassword));
        assert_eq!(hello(&three, Some("guess")).await, Err(Status::BadPassword));
        session_of(hello(&three, Some("secret")).await);

        let two = client_from("127.0.0.2", &addr).await;
        let s2 = session_of(hello(&two, None).await);
        let mkdir = ClientOp::Mkdir { parent: ROOT_INO, name: "no".into(), mode: 0o755, umask: 0 };
        assert_eq!(two.call(request(s2, 1, mkdir)).await.unwrap(), Err(Status::ReadOnly));
    });
    // The tools prove MFSHA_PASSWORD; without it they say to set it.
    let getgoal = |password: Option<&str>| {
        let mut command = std::process::Command::new(crate::util::mfsha_bin());
        command.args(["getgoal", "-H", &addr, "/"]).env_remove("MFSHA_PASSWORD");
        if let Some(password) = password {
            command.env("MFSHA_PASSWORD", password);
        }
        command.output().unwrap()
    };
    let out = getgoal(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("MFSHA_PASSWORD"), "{err}");
    let out = getgoal(Some("pw-one"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/: 2\n", "the default goal");

    let log = cluster.master_log();
    for (line, peer) in [
        ("refused a session: no line of the exports file admits this address", "127.0.0.4:"),
        ("refused a request before Hello", "127.0.0.4:"),
        ("refused a session: the export needs a password and the client proved none", "127.0.0.3:"),
        ("refused a session: wrong password", "127.0.0.3:"),
        ("refused a session: wrong password", "127.0.0.1:"),
    ] {
        assert!(
            log.lines().any(|l| l.contains(line) && l.contains(peer)),
            "the master log lacks {line:?} naming {peer}:\n{log}"
        );
    }

    // SIGHUP: a broken file is refused and the old exports stay; a good one applies.
    let pid = cluster.master.as_ref().unwrap().pid().unwrap();
    std::fs::write(&file, "127.0.0.2 / rw\n127.0.0.3 / rw,nosuchoption\n").unwrap();
    signal(pid, libc::SIGHUP);
    wait_log(&cluster, "exports not reloaded");
    assert!(cluster.master_log().contains("mfsexports.cfg:2:"), "{}", cluster.master_log());
    rt.block_on(async {
        let two = client_from("127.0.0.2", &addr).await;
        let s2 = session_of(hello(&two, None).await);
        let mkdir = ClientOp::Mkdir { parent: ROOT_INO, name: "no".into(), mode: 0o755, umask: 0 };
        assert_eq!(
            two.call(request(s2, 1, mkdir)).await.unwrap(),
            Err(Status::ReadOnly),
            "old exports"
        );
    });
    std::fs::write(&file, "127.0.0.2 / rw,maproot=0\n").unwrap();
    signal(pid, libc::SIGHUP);
    wait_log(&cluster, "exports reloaded");
    rt.block_on(async {
        let two = client_from("127.0.0.2", &addr).await;
        let s2 = session_of(hello(&two, None).await);
        let mkdir = ClientOp::Mkdir { parent: ROOT_INO, name: "yes".into(), mode: 0o755, umask: 0 };
        // As root (kept by maproot=0): the root directory is root's, 0755.
        let as_root = Request { uid: 0, gid: 0, ..request(s2, 1, mkdir) };
        assert!(matches!(two.call(as_root).await.unwrap(), Ok(ClientReply::Attr(_))));
        let three = client_from("127.0.0.3", &addr).await;
        assert_eq!(hello(&three, Some("secret")).await, Err(Status::Access), "no longer exported");
    });
    assert!(cluster.master.as_mut().unwrap().is_running());
}

/// `mfsha exports reload` (the tool, against the real master): a good file applies, a bad
/// one is refused with file:line:column while the old exports stay in force, and an address
/// whose line lacks `admin` may not reload. `umask=` masks new inodes; `ignoregid` gives
/// a non-owner the group's or the others' bits, whatever its groups.
#[test]
fn exports_reload_by_the_tool_umask_and_ignoregid() {
    let good = "127.0.0.1 / rw,maproot=0,admin,umask=027\n127.0.0.2 / rw,ignoregid\n";
    let (mut cluster, file) = master_with_exports(good);
    let addr = cluster.master_addr();
    let text = |out: &std::process::Output| {
        let (stdout, stderr) = (&out.stdout, &out.stderr);
        format!("{}{}", String::from_utf8_lossy(stdout), String::from_utf8_lossy(stderr))
    };
    let out = crate::util::mfsha(&["exports", "reload", "-H", &addr]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("exports reloaded (2 lines)"), "{}", text(&out));

    std::fs::write(&file, "127.0.0.1 / rw,admin\n10.0.0.0/33 / rw\n").unwrap();
    let out = crate::util::mfsha(&["exports", "reload", "-H", &addr]);
    assert!(!out.status.success(), "a bad file must fail the command:\n{}", text(&out));
    let where_ = format!("{}:2:", file.display());
    assert!(text(&out).contains(&where_), "names file and line: {}", text(&out));
    let check = crate::util::mfsha(&["exports", "check", file.to_str().unwrap()]);
    assert!(!check.status.success() && text(&check).contains(&where_), "{}", text(&check));

    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        // The good file is still in force: umask=027 from 127.0.0.1, root kept (maproot=0).
        let one = client_from("127.0.0.1", &addr).await;
        let s1 = session_of(hello(&one, None).await);
        let op = ClientOp::Mkdir { parent: ROOT_INO, name: "g".into(), mode: 0o770, umask: 0 };
        let as_root = Request { uid: 0, gid: 0, ..request(s1, 1, op) };
        let Ok(ClientReply::Attr(dir)) = one.call(as_root).await.unwrap() else {
            panic!("root's mkdir")
        };
        assert_eq!(dir.mode & 0o777, 0o750, "the export's umask 027 masks the new directory");
        // ignoregid from 127.0.0.2: uid 1000 (no groups; the directory is root's group 0)
        // gets the group's r-x in /g: it may look up there, not create.
        let two = client_from("127.0.0.2", &addr).await;
        let s2 = session_of(hello(&two, None).await);
        let lookup = ClientOp::Lookup { parent: dir.ino, name: "none".into() };
        assert_eq!(two.call(request(s2, 0, lookup.clone())).await.unwrap(), Err(Status::NotFound));
        let mknod = ClientOp::Mknod {
            parent: dir.ino,
            name: "f".into(),
            kind: mfsha_proto::types::FileKind::File,
            mode: 0o644,
            umask: 0,
            rdev: 0,
        };
        assert_eq!(two.call(request(s2, 1, mknod)).await.unwrap(), Err(Status::Access));
        // Without ignoregid (127.0.0.1 as uid 1000) the other class (---) applies.
        assert_eq!(one.call(request(s1, 0, lookup)).await.unwrap(), Err(Status::Access));
    });

    // 127.0.0.2's line lacks admin: no reload from there, even as root.
    std::fs::write(&file, good).unwrap();
    rt.block_on(async {
        let two = client_from("127.0.0.2", &addr).await;
        session_of(hello(&two, None).await);
        let reload = Request { uid: 0, gid: 0, ..request(0, 0, ClientOp::ReloadExports) };
        assert_eq!(two.call(reload).await.unwrap(), Err(Status::Perm));
    });
    wait_log(&cluster, "needs an export line with the admin option");
    assert!(cluster.master.as_mut().unwrap().is_running());
}

/// `minversion=`: a client older than the line's version is refused (and the master names
/// both versions); one at least as new is admitted.
#[test]
fn minversion_refuses_older_clients() {
    let [a, b, c] = mfsha_proto::client::VERSION;
    let lines =
        format!("127.0.0.4 / rw,minversion=99.0.0\n127.0.0.5 / rw,minversion={a}.{b}.{c}\n");
    let (cluster, _) = master_with_exports(&lines);
    let addr = cluster.master_addr();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let old = client_from("127.0.0.4", &addr).await;
        assert_eq!(hello(&old, None).await, Err(Status::Access));
        let new = client_from("127.0.0.5", &addr).await;
        session_of(hello(&new, None).await);
    });
    wait_log(
        &cluster,
        &format!("the client is version {a}.{b}.{c}, the export's minversion is 99.0.0"),
    );
}
