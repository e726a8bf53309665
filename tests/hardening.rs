//! Hostile clients against real daemons (issue 12, "bounded resources"): a flood of idle
//! connections, slow-loris senders and maximum-length garbage frames. Each attack comes from
//! its own loopback address (127.0.0.2 and up; all of 127/8 is the loopback interface), so the
//! per-address caps hit the attacker and not the legitimate client on 127.0.0.1. After each,
//! the test checks that the cluster kept serving: a file written before the attack reads back,
//! a new one is written and read, and no chunkserver took its disk for failed.

use crate::chunks::scenario::*;
use crate::util::Cluster;
use mfsha_proto::frame::{HEADER_BYTES, MAX_FRAME_BYTES};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Every port an attacker can reach: the master's client, chunkserver and logger ports, and
/// each chunkserver's data port. (A master alone has no peer port; the peer port's gate and
/// deadlines are the same code, `mfsha_proto::gate` and `FrameReader::read_within`.)
fn attack_ports(cluster: &Cluster) -> Vec<(&'static str, u16)> {
    let p = &cluster.ports;
    let mut ports =
        vec![("client", p.client), ("chunkserver", p.chunkserver), ("logger", p.logger)];
    ports.extend(cluster.chunkservers.iter().map(|cs| ("data", cs.port)));
    ports
}

/// Connects from `source` (a loopback address of the attacker's own) to `port`.
async fn connect_from(source: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    match tokio::time::timeout(Duration::from_secs(5), socket.connect(target)).await {
        Ok(connected) => connected,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// True when the server has closed `stream` (EOF or reset) within `limit`.
/// How many of the connections `open` (indices into `held`) go to `port`.
fn open_on(held: &[(&str, TcpStream)], open: &[usize], port: &str) -> usize {
    open.iter().filter(|i| held[**i].0 == port).count()
}

async fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut byte = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut byte)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A greeting (the chunkserver port says Hello first): keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

/// The cluster still serves: `before` reads back, a new file is written and read, and every
/// chunkserver is registered with no damaged disk.
async fn still_serving(cluster: &Cluster, before: &[u8], name: &str) {
    let client = connect(cluster).await;
    assert_eq!(
        sha256(&client.read_file("/before").await.expect("reading the file written before")),
        sha256(before)
    );
    let fresh = random_data(1 << 20);
    write(&client, name, &fresh).await;
    assert_eq!(sha256(&client.read_file(name).await.unwrap()), sha256(&fresh));
    let status = status(&client).await;
    assert_eq!(status.chunkservers.len(), cluster.chunkservers.len(), "{status:?}");
    for cs in &status.chunkservers {
        assert!(cs.disks.iter().all(|d| !d.damaged), "a disk was taken for failed: {cs:?}");
    }
    close(&client).await;
}

async fn cluster_with_a_file() -> (Cluster, Vec<u8>) {
    let cluster = cluster(2).await;
    let client = connect(&cluster).await;
    let before = random_data(1 << 20);
    write(&client, "/before", &before).await;
    close(&client).await;
    (cluster, before)
}

/// The test process holds 10,000 sockets; the daemons it starts inherit the raised limit,
/// as systemd's `LimitNOFILE` gives them in production.
fn descriptors_for(connections: u64) {
    let limit = mfsha_proto::gate::raise_fd_limit().expect("raising the open-file limit");
    assert!(
        limit >= connections + 2_000,
        "this test needs an open-file limit of at least {} (hard limit is {limit}): raise it \
         with `ulimit -Hn` or in /etc/security/limits.conf",
        connections + 2_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_idle_connections_leave_the_cluster_serving() {
    const CONNECTIONS: usize = 10_000;
    descriptors_for(CONNECTIONS as u64);
    let (cluster, before) = cluster_with_a_file().await;
    let ports = attack_ports(&cluster);
    let mut held: Vec<(&str, TcpStream)> = Vec::with_capacity(CONNECTIONS);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CONNECTIONS {
        let (name, port) = ports[i % ports.len()];
        tasks.spawn(async move { (name, connect_from([127, 0, 0, 2], port).await) });
        if tasks.len() >= 256 {
            if let Some(Ok((name, Ok(stream)))) = tasks.join_next().await {
                held.push((name, stream));
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok((name, Ok(stream))) = joined {
            held.push((name, stream));
        }
    }
    assert!(held.len() >= CONNECTIONS * 9 / 10, "only {} connections were made", held.len());

    // While the flood is held open, the cluster serves the legitimate client.
    still_serving(&cluster, &before, "/during").await;

    // Each port kept at most its per-address cap of the attacker's connections; it closed
    // the others as it accepted them, and closes the rest at the 10 s handshake deadline.
    // On a loaded machine a port may not have accepted (and closed) the last of the excess
    // yet: those are looked at again, for up to 2 s, far below the handshake deadline.
    let started = Instant::now();
    let data_cap = 256 * cluster.chunkservers.len();
    let caps = [("client", 512), ("chunkserver", 64), ("logger", 8), ("data", data_cap)];
    let mut open: Vec<usize> = Vec::new();
    for (i, (_, stream)) in held.iter_mut().enumerate() {
        if !closed_by_server(stream, Duration::from_millis(1)).await {
            open.push(i);
        }
    }
    for _ in 0..4 {
        let over: Vec<&str> = caps
            .iter()
            .filter(|(port, cap)| open_on(&held, &open, port) > *cap)
            .map(|c| c.0)
            .collect();
        if over.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut still = Vec::new();
        for i in open {
            let (name, stream) = &mut held[i];
            let recheck = over.contains(name);
            if !recheck || !closed_by_server(stream, Duration::from_millis(1)).await {
                still.push(i);
            }
        }
        open = still;
    }
    for (name, cap) in caps {
        let open = open_on(&held, &open, name);
        assert!(
            open <= cap,
            "{open} attacker connections stayed open on the {name} port (cap {cap})"
        );
    }
    let deadline = Duration::from_secs(25).saturating_sub(started.elapsed());
    for (name, stream) in held.iter_mut() {
        assert!(
            closed_by_server(stream, deadline).await,
            "an idle connection to the {name} port was still open 25 s after the flood"
        );
    }
    let log = std::fs::read_to_string(cluster.path().join("master.log")).unwrap();
    let refusals = log.lines().filter(|l| l.contains("refused a connection")).count();
    assert!(refusals > 0, "the master logs refusals:\n{}", cluster.master_log());
    // At most a line a second per port, not one per refused connection.
    assert!(refusals < 100, "{refusals} refusal lines: the warning is not rate-limited");
    drop(held);
    still_serving(&cluster, &before, "/after").await;
}

/// The attack of the issue, at the limit systemd and containers give: every daemon started
/// with 1,024 descriptors (soft and hard, so none can raise it), 5,500 idle connections from
/// 50 source addresses spread over every port (so the per-address caps alone do not save
/// anyone). The ports' global caps follow the descriptor limit: the cluster keeps serving,
/// the file written before reads back, and no chunkserver takes a disk for failed for want
/// of a descriptor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_at_a_1024_descriptor_limit_leave_the_cluster_serving() {
    const CONNECTIONS: usize = 5_500;
    descriptors_for(CONNECTIONS as u64);
    let mut cluster = Cluster::new();
    cluster.daemon_fd_limit = Some(1_024);
    cluster.master_extra_yaml = crate::chunks::scenario::FAST_MASTER_YAML.to_string();
    cluster.start_master();
    for _ in 0..2 {
        cluster.start_chunkserver(1);
    }
    let client = connect(&cluster).await;
    wait_for(&cluster, "both chunkservers to register", Duration::from_secs(30), || async {
        client.cluster_status().await.map(|s| s.chunkservers.len() == 2).unwrap_or(false)
    })
    .await;
    let before = random_data(1 << 20);
    write(&client, "/before", &before).await;
    close(&client).await;
    let pids = std::iter::once(cluster.master.as_ref().and_then(|d| d.pid()))
        .chain(cluster.chunkservers.iter().map(|cs| cs.daemon.as_ref().and_then(|d| d.pid())));
    for pid in pids {
        let pid = pid.expect("a running daemon");
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&fields[3..5], ["1024", "1024"], "daemon {pid} runs at 1,024: {line}");
    }

    let ports = attack_ports(&cluster);
    let mut held: Vec<TcpStream> = Vec::with_capacity(CONNECTIONS);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CONNECTIONS {
        let (_, port) = ports[i % ports.len()];
        let source = [127, 0, 1, 10 + (i % 50) as u8];
        tasks.spawn(async move { connect_from(source, port).await });
        if tasks.len() >= 256 {
            if let Some(Ok(Ok(stream))) = tasks.join_next().await {
                held.push(stream);
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Ok(stream)) = joined {
            held.push(stream);
        }
    }
    // Connections the kernel accepted (the listen backlog) count even if a daemon refused
    // them at once: what matters is what the daemons do meanwhile.
    assert!(held.len() >= CONNECTIONS / 2, "only {} connections were made", held.len());
    println!("{} attacker connections made", held.len());
    let refused = |cluster: &Cluster| cluster.master_log().contains("refused a connection");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !refused(&cluster) {
        assert!(Instant::now() < deadline, "the master refused nothing:\n{}", cluster.master_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    still_serving(&cluster, &before, "/during").await;
    drop(held);
    still_serving(&cluster, &before, "/after").await;
    for name in ["master.log", "chunkserver0.log", "chunkserver1.log"] {
        let log = std::fs::read_to_string(cluster.path().join(name)).unwrap_or_default();
        assert!(!log.contains("panicked"), "{name} shows a panic:\n{log}");
        assert!(
            !log.contains("Too many open files") || log.contains("refused a connection"),
            "{name} ran out of descriptors without refusing connections:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_loris_is_cut_off_and_others_are_served() {
    const LORISES: usize = 64;
    let (cluster, before) = cluster_with_a_file().await;
    let data_port = cluster.chunkservers[0].port;
    let mut lorises = Vec::new();
    for i in 0..LORISES {
        let port = if i % 2 == 0 { cluster.ports.client } else { data_port };
        let stream = connect_from([127, 0, 0, 3], port).await.expect("connecting a loris");
        lorises.push(stream);
    }
    // Each announces a 1 MiB frame and then sends a byte every 500 ms.
    let started = Instant::now();
    let mut dripping = tokio::task::JoinSet::new();
    for mut stream in lorises {
        dripping.spawn(async move {
            let len = (1u32 << 20).to_be_bytes();
            if stream.write_all(&len).await.is_err() {
                return None;
            }
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if stream.write_all(&[0u8]).await.is_err() {
                    return Some(started.elapsed());
                }
            }
            None
        });
    }
    // Meanwhile the cluster serves.
    still_serving(&cluster, &before, "/during").await;
    let mut cut_at = Vec::new();
    while let Some(joined) = dripping.join_next().await {
        let elapsed = joined.unwrap().expect("a loris was never cut off (100 s of dripping)");
        cut_at.push(elapsed);
    }
    let latest = cut_at.iter().max().unwrap();
    // The frame deadline is 30 s; the writer notices on the write after the reset.
    assert!(*latest < Duration::from_secs(45), "the slowest loris was cut off after {latest:?}");
    assert!(cut_at.iter().min().unwrap() >= &Duration::from_secs(25), "cut before the deadline");
    let log = std::fs::read_to_string(cluster.path().join("master.log")).unwrap();
    let cut = log.lines().any(|l| l.contains("127.0.0.3") && l.contains("not complete within"));
    assert!(cut, "the master names the loris it cut off:\n{}", cluster.master_log());
    still_serving(&cluster, &before, "/after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maximum_length_garbage_closes_only_its_connection() {
    let (cluster, before) = cluster_with_a_file().await;
    let ports = attack_ports(&cluster);
    let garbage = random_data(MAX_FRAME_BYTES);
    let len = (MAX_FRAME_BYTES as u32).to_be_bytes();
    let mut attacks = tokio::task::JoinSet::new();
    for round in 0..3 {
        for &(name, port) in &ports {
            let garbage = garbage.clone();
            attacks.spawn(async move {
                let mut stream = connect_from([127, 0, 0, 4], port).await?;
                stream.write_all(&len).await?;
                // Random bytes: a wrong version byte, or (one time in 256) an undecodable body.
                let _ = stream.write_all(&garbage).await;
                let closed = closed_by_server(&mut stream, Duration::from_secs(20)).await;
                Ok::<_, std::io::Error>((round, name, closed))
            });
        }
    }
    still_serving(&cluster, &before, "/during").await;
    while let Some(joined) = attacks.join_next().await {
        let (round, name, closed) = joined.unwrap().expect("sending garbage");
        assert!(closed, "round {round}: the {name} port kept a connection that sent garbage");
    }
    let log = std::fs::read_to_string(cluster.path().join("master.log")).unwrap();
    assert!(
        log.contains("127.0.0.4"),
        "the master names the garbage's sender:\n{}",
        cluster.master_log()
    );
    const _: () = assert!(HEADER_BYTES < MAX_FRAME_BYTES);
    still_serving(&cluster, &before, "/after").await;
}
