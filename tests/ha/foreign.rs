//! Clients check the cluster id (issue 9): a mount whose master list also names masters of
//! another cluster (a stale address) never uses them. One mount learns its cluster from the
//! first master it opened a session with; the other lists the foreign masters first and is
//! given `cluster_id`. With their own cluster's masters all down, both refuse the other
//! cluster's masters (the log names both ids and the address) instead of moving there, and
//! they go on with their own cluster once it is back. A tool given masters of both stays with
//! the cluster of the first that answers.

use super::cluster::HaCluster;
use crate::mount::Mount;
use crate::util::{mfsha, tail};
use std::time::{Duration, Instant};

/// Every client address of `clusters`, in order, as `-H` takes them.
fn addrs(clusters: &[&HaCluster]) -> String {
    clusters.iter().map(|c| c.client_addrs()).collect::<Vec<_>>().join(",")
}

fn mount(ours: &HaCluster, name: &str, masters: &str, extra: &[&str]) -> Mount {
    Mount::start_in(ours.path(), name, masters, extra, &masters.replace(',', "+"))
}

/// Sessions in `cluster`'s replicated state, as its leader reports them.
fn sessions(cluster: &HaCluster) -> u64 {
    let leader = cluster.wait_leader(Duration::from_secs(30));
    cluster.status(leader).expect("the leader answers").sessions
}

/// Waits until `mount`'s log says it refused `master` of cluster `theirs`, this mount being
/// of cluster `ours` (from one of `from`: how the mount came to that cluster).
fn wait_refused(mount: &Mount, master: &str, theirs: &str, ours: &str, from: &[String]) {
    let expected: Vec<String> = from
        .iter()
        .map(|from| format!(
            "not using master {master}: it belongs to cluster \"{theirs}\", this mount to cluster \"{ours}\" (from {from})"
        ))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = tail(&mount.daemon.log, 200);
        if expected.iter().any(|line| log.contains(line)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the mount did not refuse the foreign master: none of {expected:?} in its log:\n{}",
            mount.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A tool given alpha's follower first, then beta's masters, stays with alpha (the first to
/// answer): with no alpha leader it fails naming beta's masters as foreign, and beta's
/// leadership is not transferred.
fn tool_refuses_beta(alpha: &HaCluster, follower: usize, beta: &HaCluster) {
    let list =
        format!("127.0.0.1:{},{}", alpha.masters[follower].ports.client, beta.client_addrs());
    let beta_leader = beta.wait_leader(Duration::from_secs(30));
    let before = beta.status(beta_leader).expect("beta's leader answers");
    let other = beta.masters[1 - beta_leader].id.to_string();
    let out = mfsha(&["member", "transfer-leader", "-H", &list, &other]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the tool must not use beta's leader:\n{stderr}");
    let beta_leader_addr = format!("127.0.0.1:{}", beta.masters[beta_leader].ports.client);
    let expected =
        format!("{beta_leader_addr} belongs to cluster \"beta\", not to cluster \"alpha\"");
    assert!(stderr.contains(&expected), "the tool should say {expected:?}:\n{stderr}");
    std::thread::sleep(Duration::from_secs(1));
    let after = beta.status(beta_leader).expect("beta's leader answers");
    assert_eq!((after.role.as_str(), after.term), ("leader", before.term), "beta was left alone");
}

#[test]
fn mounts_never_use_a_master_of_another_cluster_named_in_their_list() {
    let mut alpha = HaCluster::start_named("alpha", 1);
    let beta = HaCluster::start_named("beta", 1);
    let alpha_first = addrs(&[&alpha, &beta]);
    let mut learnt = mount(&alpha, "learnt", &alpha_first, &[]);
    let beta_first = addrs(&[&beta, &alpha]);
    let mut told = mount(&alpha, "told", &beta_first, &["-o", "cluster_id=alpha"]);
    let beta_master = format!("127.0.0.1:{}", beta.masters[0].ports.client);
    wait_refused(&told, &beta_master, "beta", "alpha", &["the cluster_id option".into()]);
    for m in [&learnt, &told] {
        std::fs::write(m.path("before"), b"alpha").expect("write through the mount");
    }
    assert_eq!((sessions(&alpha), sessions(&beta)), (2, 0), "both mounts use alpha only");
    // Alpha without a leader (its leader and witness down): only beta's masters lead.
    let alpha_leader = alpha.wait_leader(Duration::from_secs(30));
    alpha.kill_master(alpha_leader);
    alpha.stop_witness();
    let alpha_masters: Vec<String> =
        alpha.masters.iter().map(|m| format!("master 127.0.0.1:{}", m.ports.client)).collect();
    wait_refused(&learnt, &beta_master, "beta", "alpha", &alpha_masters);
    assert_eq!(sessions(&beta), 0, "no mount opened a session on beta while alpha was down");
    tool_refuses_beta(&alpha, 1 - alpha_leader, &beta);
    alpha.start_master(alpha_leader);
    alpha.start_witness();
    for m in [&learnt, &told] {
        std::fs::write(m.path("after"), b"alpha again").expect("write once alpha is back");
        assert_eq!(std::fs::read(m.path("before")).unwrap(), b"alpha");
    }
    assert_eq!(sessions(&beta), 0, "beta never served the mounts");
    learnt.stop();
    told.stop();
}
