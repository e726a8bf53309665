//! The metalogger as a process: it follows a real master, survives SIGKILL, and what it keeps
//! restores to the master's metadata.

use crate::session::Session;
use crate::util::{mfsha, Cluster, Daemon};
use mfsha_proto::client::ClusterStatus;
use mfsha_proto::types::ROOT_INO;
use std::path::Path;
use std::time::{Duration, Instant};

/// Makes `n` directories `{prefix}0..` in the root.
async fn mkdirs(session: &mut Session, prefix: &str, n: usize) {
    for i in 0..n {
        session.mkdir(ROOT_INO, &format!("{prefix}{i}")).await;
    }
}

fn master_status(cluster: &Cluster) -> ClusterStatus {
    let out = mfsha(&["status", "-H", &cluster.master_addr(), "--json"]);
    assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (restored index, directories) according to `mfsha meta from-logger`, if it can restore yet.
fn restorable(dir: &Path) -> Option<(u64, u64)> {
    let out = mfsha(&["meta", "from-logger", dir.to_str().unwrap()]);
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |name: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"));
        line[name.len()..].trim().parse().unwrap()
    };
    Some((field("restored up to:"), field("directories:")))
}

fn wait_restorable(cluster: &Cluster, dir: &Path, directories: u64, logger: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        let applied = master_status(cluster).applied_index;
        last = restorable(dir);
        if let Some((index, dirs)) = last {
            if index == applied && dirs == directories {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "logger never caught up to {directories} directories (last restorable {last:?}); logger log:\n{}",
        crate::util::tail(&logger.log, 30)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logger_follows_the_master_and_restores_its_metadata() {
    let mut cluster = Cluster::new();
    cluster.start_master();
    let mut session = Session::open(&cluster.master_addr()).await;
    mkdirs(&mut session, "before", 40).await;

    let logger_dir = cluster.path().join("logger");
    let config = cluster.path().join("logger.yaml");
    let yaml = format!(
        "name: test-logger\ndata_dir: {}\nmasters: [\"127.0.0.1:{}\"]\nsnapshot_every_s: 1\nhttp: 127.0.0.1:0\n",
        logger_dir.display(),
        cluster.ports.logger
    );
    std::fs::write(&config, yaml).unwrap();
    let mut logger =
        Daemon::spawn(cluster.path(), "logger", &["logger", "-c", config.to_str().unwrap()]);
    mkdirs(&mut session, "during", 40).await;
    wait_restorable(&cluster, &logger_dir, 81, &logger);
    let status = master_status(&cluster);
    assert!(
        status.loggers.iter().any(|l| l.contains("test-logger")),
        "status lists the logger: {:?}",
        status.loggers
    );

    // Let a snapshot refresh (every second) rotate the files, then kill the logger mid-stream.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        logger_dir.join("metadata_ml.back.mfsha").exists(),
        "a refreshed snapshot keeps a back copy"
    );
    logger.kill();
    mkdirs(&mut session, "while-down", 10).await;
    let mut logger =
        Daemon::spawn(cluster.path(), "logger", &["logger", "-c", config.to_str().unwrap()]);
    wait_restorable(&cluster, &logger_dir, 91, &logger);
    assert_eq!(
        logger.stop(Duration::from_secs(10)).code(),
        Some(0),
        "logger stops cleanly on SIGTERM"
    );
}

#[test]
fn restoring_from_an_empty_directory_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = mfsha(&["meta", "from-logger", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no usable snapshot") && err.contains("metadata_ml.mfsha"), "{err}");
}

/// A metalogger configured for another cluster is refused by the master (and gets nothing);
/// with the master's cluster_id it is served.
#[tokio::test(flavor = "multi_thread")]
async fn a_logger_of_another_cluster_is_refused() {
    let mut cluster = Cluster::new();
    cluster.start_master();
    let mut session = Session::open(&cluster.master_addr()).await;
    mkdirs(&mut session, "d", 3).await;
    let logger_dir = cluster.path().join("logger");
    let config = cluster.path().join("logger.yaml");
    let yaml = |cluster_id: &str| {
        format!(
            "name: test-logger\ndata_dir: {}\nmasters: [\"127.0.0.1:{}\"]\ncluster_id: {cluster_id}\nhttp: 127.0.0.1:0\n",
            logger_dir.display(),
            cluster.ports.logger
        )
    };
    std::fs::write(&config, yaml("other")).unwrap();
    let mut logger =
        Daemon::spawn(cluster.path(), "logger", &["logger", "-c", config.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.master_log().contains("belongs to cluster \"other\"") {
        assert!(Instant::now() < deadline, "master log:\n{}", cluster.master_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(restorable(&logger_dir), None, "a refused logger got metadata");
    logger.stop(Duration::from_secs(10));
    std::fs::write(&config, yaml("test")).unwrap();
    let logger =
        Daemon::spawn(cluster.path(), "logger", &["logger", "-c", config.to_str().unwrap()]);
    wait_restorable(&cluster, &logger_dir, 4, &logger);
}
