//! `mfsha exports reload` against the appliance (issue 12): each master reads its own
//! exports file, so the tool asks every one, the follower too (its Hello is judged by its
//! exports although it opens no session); a master whose file has an error refuses with
//! file:line:column and keeps its old exports, and the tool fails naming it.

use super::cluster::HaCluster;
use crate::util::mfsha;
use std::time::Duration;

#[test]
fn every_master_reloads_its_exports_and_a_bad_file_is_named() {
    let staged = tempfile::tempdir().unwrap();
    let file = staged.path().join("mfsexports.cfg");
    std::fs::write(&file, "127.0.0.1 / rw,maproot=0,admin\n").unwrap();
    let extra = format!("exports: {}\n", file.display());
    let cluster = HaCluster::configured(super::cluster::CLUSTER_ID, &extra);
    crate::util::bootstrap(cluster.path(), &cluster.master_config_path(0));
    let cluster = cluster.started(0);
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let text = |out: &std::process::Output| {
        let (stdout, stderr) = (&out.stdout, &out.stderr);
        format!("{}{}", String::from_utf8_lossy(stdout), String::from_utf8_lossy(stderr))
    };
    std::fs::write(&file, "127.0.0.1 / rw,maproot=0,admin\n* / ro\n").unwrap();
    let out = mfsha(&["exports", "reload", "-H", &cluster.client_addrs()]);
    assert!(out.status.success(), "{}", text(&out));
    let reloaded = text(&out).matches("exports reloaded (2 lines)").count();
    assert_eq!(reloaded, 2, "both masters, the follower too:\n{}", text(&out));

    std::fs::write(&file, "127.0.0.1 / rw,maproot=0,admin\n10.0.0.0/33 / rw\n").unwrap();
    let out = mfsha(&["exports", "reload", "-H", &cluster.client_addrs()]);
    assert!(!out.status.success(), "{}", text(&out));
    let refused = text(&out).matches(&format!("{}:2:", file.display())).count();
    assert_eq!(refused, 2, "each master names the bad line:\n{}", text(&out));
    // The old exports stay: the leader still admits this address and serves it.
    let leader_addr = super::retry::addr(&cluster, leader);
    let out = mfsha(&["member", "list", "-H", &leader_addr]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(cluster.logs().contains("exports not reloaded"), "{}", cluster.logs());
}
