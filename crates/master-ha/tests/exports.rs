//! Exports in process: a real master with an exports file, and clients connecting from
//! several loopback addresses (127.0.0.x, each bound before connecting). A foreign address
//! is refused, a read-only export refuses changes, maproot and mapall map the uid a request
//! claims, a wrong or missing password is refused, a resume re-checks the export, and a
//! reload with an error keeps the old exports.

use mfsha_proto::auth;
use mfsha_proto::client::{ClientOp, ClientReply, MasterClient, MasterRpc};
use mfsha_proto::types::{Reply, Status, ROOT_INO};

mod common;
use common::*;

const EXPORTS: &str = "\
# the test's exports
127.0.0.1          /     rw,maproot=0
127.0.0.2          /     ro
127.0.0.3          /     rw,maproot=1234:1234,password=secret
127.0.0.4/32       /pub  rw,alldirs,mapall=2000:2000,md5pass=MD5
";

/// A connection to the master at `master` from local address `local`.
async fn client_from(local: &str, master: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).expect("bind a loopback address");
    let stream = socket.connect(master.parse().unwrap()).await.expect("connect to the master");
    MasterClient(MasterRpc::from_stream(stream, master.to_string()))
}

struct Hello<'a> {
    session: Option<u64>,
    token: u64,
    subdir: &'a str,
    password: Option<&'a str>,
}

/// Sends a Hello, proving `password` over a fresh challenge when one is given.
async fn hello(client: &Client, h: &Hello<'_>) -> Reply<ClientReply> {
    let proof = prove(client, h).await;
    send_hello(client, h, proof).await
}

const INFO: &str = "exports test";

/// A Challenge on `client` and the proof of `h.password` over it.
async fn prove(client: &Client, h: &Hello<'_>) -> Option<[u8; 32]> {
    let info = INFO;
    match h.password {
        None => None,
        Some(password) => {
            let op = ClientOp::Challenge { subdir: h.subdir.into() };
            let Ok(ClientReply::Challenge { nonce, md5 }) =
                client.call(request(0, 0, op)).await.unwrap()
            else {
                panic!("no challenge answered")
            };
            let key = auth::password_key(password, md5);
            let session = h.session.unwrap_or(0);
            Some(auth::hello_proof(&key, &nonce, session, h.token, h.subdir, info))
        }
    }
}

async fn send_hello(client: &Client, h: &Hello<'_>, proof: Option<[u8; 32]>) -> Reply<ClientReply> {
    let op = ClientOp::Hello {
        session: h.session,
        client_info: INFO.into(),
        subdir: h.subdir.into(),
        proof,
        token: h.token,
        version: mfsha_proto::client::VERSION,
    };
    client.call(request(0, 0, op)).await.unwrap()
}

fn new<'a>(subdir: &'a str, password: Option<&'a str>) -> Hello<'a> {
    Hello { session: None, token: rand::random::<u64>() | 1, subdir, password }
}

fn session_of(reply: Reply<ClientReply>) -> (u64, u64) {
    match reply {
        Ok(ClientReply::Session { session, root }) => (session, root),
        other => panic!("expected a session, got {other:?}"),
    }
}

async fn mkdir(
    client: &Client,
    session: u64,
    seq: u64,
    uid: u32,
    parent: u64,
    name: &str,
) -> Reply<ClientReply> {
    let op = ClientOp::Mkdir { parent, name: name.into(), mode: 0o777, umask: 0 };
    let req = mfsha_proto::client::Request { session, seq, uid, gid: uid, groups: Vec::new(), op };
    client.call(req).await.unwrap()
}

async fn start_with_exports(
    dir: &std::path::Path,
) -> (mfsha_master_ha::daemon::Master, String, std::path::PathBuf) {
    let md5 = hex::encode(auth::md5_digest(b"pw4"));
    let file = dir.join("mfsexports.cfg");
    std::fs::write(&file, EXPORTS.replace("MD5", &md5)).unwrap();
    let mut config = config(dir);
    config.exports = Some(file.clone());
    let (master, addr) = start_with(config).await;
    (master, addr, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_refuse_foreign_addresses_writes_on_ro_and_wrong_passwords_and_map_uids() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr, file) = start_with_exports(dir.path()).await;

    // A foreign address: no session, and nothing but status without one.
    let foreign = client_from("127.0.0.9", &addr).await;
    assert_eq!(hello(&foreign, &new("/", None)).await, Err(Status::Access));
    let getattr = ClientOp::GetAttr { ino: ROOT_INO };
    assert_eq!(foreign.call(request(0, 0, getattr.clone())).await.unwrap(), Err(Status::Access));
    assert!(foreign.call(request(0, 0, ClientOp::Status)).await.unwrap().is_ok());

    // Root on 127.0.0.1 (maproot=0) makes /pub/sub.
    let admin = client_from("127.0.0.1", &addr).await;
    let (s1, _) = session_of(hello(&admin, &new("/", None)).await);
    let pub_dir = attr(mkdir(&admin, s1, 1, 0, ROOT_INO, "pub").await);
    assert_eq!(pub_dir.uid, 0, "maproot=0 keeps root");
    attr(mkdir(&admin, s1, 2, 0, pub_dir.ino, "sub").await);

    // Read-only: reads work, changes answer ReadOnly.
    let reader = client_from("127.0.0.2", &addr).await;
    let (s2, _) = session_of(hello(&reader, &new("/", None)).await);
    attr(reader.call(request(s2, 0, getattr.clone())).await.unwrap());
    assert_eq!(mkdir(&reader, s2, 1, 1000, ROOT_INO, "no").await, Err(Status::ReadOnly));
    let open_rw = ClientOp::Open { ino: pub_dir.ino, flags: 2 };
    assert_eq!(reader.call(request(s2, 1, open_rw)).await.unwrap(), Err(Status::ReadOnly));

    // A password: none, a wrong one and a replayed proof are refused; the right one works.
    let three = client_from("127.0.0.3", &addr).await;
    assert_eq!(hello(&three, &new("/", None)).await, Err(Status::BadPassword));
    assert_eq!(hello(&three, &new("/", Some("guess"))).await, Err(Status::BadPassword));
    let right = new("/", Some("secret"));
    let proof = prove(&three, &right).await;
    let (s3, _) = session_of(send_hello(&three, &right, proof).await);
    // The nonce is used up: the same proof again is refused, even on the same connection.
    assert_eq!(send_hello(&three, &right, proof).await, Err(Status::BadPassword));
    // A retried open (same token) gets the same session.
    assert_eq!(session_of(hello(&three, &right).await).0, s3);
    // maproot=1234:1234 maps root; others keep their uid.
    assert_eq!(attr(mkdir(&three, s3, 1, 0, ROOT_INO, "by-root").await).uid, 1234);
    assert_eq!(attr(mkdir(&three, s3, 2, 1000, ROOT_INO, "by-1000").await).uid, 1000);

    // A resume on a new connection needs the password again, and its own directory.
    let again = client_from("127.0.0.3", &addr).await;
    let resume =
        |subdir, password| Hello { session: Some(s3), token: right.token, subdir, password };
    assert_eq!(hello(&again, &resume("/", None)).await, Err(Status::BadPassword));
    assert_eq!(session_of(hello(&again, &resume("/", Some("secret"))).await).0, s3);
    let elsewhere = client_from("127.0.0.3", &addr).await;
    // (127.0.0.3 may use / only; asking for /pub finds no line)
    assert_eq!(hello(&elsewhere, &resume("/pub", Some("secret"))).await, Err(Status::Access));

    // md5pass, alldirs below /pub only, and mapall mapping everyone.
    let four = client_from("127.0.0.4", &addr).await;
    assert_eq!(hello(&four, &new("/", Some("pw4"))).await, Err(Status::Access));
    assert_eq!(hello(&four, &new("/pub/sub", Some("pw3"))).await, Err(Status::BadPassword));
    let opened = new("/pub/sub", Some("pw4"));
    let (s4, root4) = session_of(hello(&four, &opened).await);
    assert_ne!(root4, ROOT_INO);
    // A retried open naming another directory than the session's is refused.
    let retry = Hello { subdir: "/pub", ..opened };
    assert_eq!(hello(&four, &retry).await, Err(Status::Access));
    let made = attr(mkdir(&four, s4, 1, 0, root4, "r").await);
    assert_eq!((made.uid, made.gid), (2000, 2000), "mapall maps root too");
    assert_eq!(attr(mkdir(&four, s4, 2, 1000, root4, "u").await).uid, 2000);

    // A reload with an error keeps the exports in force; a good one applies at the next Hello.
    std::fs::write(&file, "127.0.0.2 / rw,bogus\n").unwrap();
    let err = master.reload_exports().unwrap_err().to_string();
    assert!(err.contains("mfsexports.cfg:1:") && err.contains("bogus"), "{err}");
    let reader2 = client_from("127.0.0.2", &addr).await;
    session_of(hello(&reader2, &new("/", None)).await);
    std::fs::write(&file, "127.0.0.1 / rw\n").unwrap();
    master.reload_exports().unwrap();
    let reader3 = client_from("127.0.0.2", &addr).await;
    assert_eq!(hello(&reader3, &new("/", None)).await, Err(Status::Access));
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_exports_everything_is_allowed_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let (master, addr) = start(dir.path()).await;
    let client = client_from("127.0.0.2", &addr).await;
    let (session, _) = session_of(hello(&client, &new("/", None)).await);
    assert_eq!(attr(mkdir(&client, session, 1, 0, ROOT_INO, "d").await).uid, 0);
    // A password proof is accepted and ignored when no export asks for one.
    let other = client_from("127.0.0.3", &addr).await;
    session_of(hello(&other, &new("/", Some("anything"))).await);
    master.stop().await.unwrap();
}
