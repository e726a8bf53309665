//! The chunkserver's YAML configuration (`/etc/mfsha/chunkserver.yaml`).
//!
//! ```yaml
//! data_dirs:                       # the mfshdd.cfg equivalent
//!   - /srv/mfs/disk1
//!   - path: /srv/mfs/disk2
//!     marked_for_removal: true     # drained by the master ("*" in mfshdd.cfg)
//! master: mfsmaster:9420           # or a list: [m1:9420, m2:9420]
//! cluster_id: mfsha                # the masters' cluster_id; masters of another are refused
//! secret_file: /etc/mfsha/cluster.key  # the cluster secret (the masters' secret_file)
//! listen: 0.0.0.0:9422
//! http: 0.0.0.0:9427               # Prometheus /metrics
//! labels: [A]
//! scrub_mib_per_sec: 1.0           # background CRC check per disk; 0 turns it off
//! fsync: on_sync                   # or every_write
//! leave_free_mib: 256              # kept free on every disk (MooseFS HDD_LEAVE_SPACE_DEFAULT)
//! ```
//!
//! Unknown keys are errors (`deny_unknown_fields`): a misspelt key silently falling back to its
//! default is how operators lose a day. Errors name the file, the key and its position.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole chunkserver configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkserverConfig {
    /// Data directories, one per disk. At least one.
    pub data_dirs: Vec<DataDir>,
    /// Master addresses (`HOST:PORT`, a VIP or several masters), tried in turn.
    #[serde(default = "default_master", deserialize_with = "one_or_many")]
    pub master: Vec<String>,
    /// The masters' `cluster_id`. When set, a master of another cluster is refused (and
    /// refuses this server). Default: unset, any cluster is accepted.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// The cluster's key file (the masters' `secret_file`, copied here, mode 0600): this
    /// server proves it to every master it registers with, and a master must prove it back.
    /// Default: unset (a master without a secret is expected).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Where clients and other chunkservers reach this server. Default `0.0.0.0:9422`.
    #[serde(default = "default_listen", deserialize_with = "mfsha_yamlconf::socket_addr")]
    pub listen: SocketAddr,
    /// Where Prometheus scrapes `/metrics`. Default `0.0.0.0:9427`.
    #[serde(default = "default_http", deserialize_with = "mfsha_yamlconf::socket_addr")]
    pub http: SocketAddr,
    /// Host name or IP to announce to the master; default: the listen IP, or (for `0.0.0.0`)
    /// the address the master sees the connection coming from.
    #[serde(default)]
    pub advertise_host: Option<String>,
    /// Labels (letters A–Z) for placement.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Background CRC verification speed per disk in MiB/s (MooseFS `HDD_TEST_SPEED`).
    /// 0 turns the scrub off. Default 1.
    #[serde(default = "default_scrub")]
    pub scrub_mib_per_sec: f64,
    /// When chunk data is fsynced. Default `on_sync`.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// Milliseconds between heartbeats to the master. Default 1000.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// Space kept free on every disk, in MiB (MooseFS's `HDD_LEAVE_SPACE_DEFAULT`): it counts
    /// as used in what the master is told, so no new chunk goes to a disk with less than a
    /// chunk's worth free beyond it, and the disk is reported full before it is. Default 256.
    #[serde(default = "default_leave_free")]
    pub leave_free_mib: u64,
}

/// When written chunk data reaches the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// When a client sends `Sync` (on close/fsync), on every server of the chain.
    #[default]
    OnSync,
    /// After every write, before it is acknowledged (slower; for paranoid setups).
    EveryWrite,
}

/// One data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    pub path: PathBuf,
    /// Being drained: no new chunks go here and the master copies its chunks elsewhere.
    pub marked_for_removal: bool,
}

fn default_master() -> Vec<String> {
    vec![format!("mfsmaster:{}", mfsha_proto::ports::MASTER_CHUNKSERVER)]
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], mfsha_proto::ports::CHUNKSERVER))
}

fn default_http() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], mfsha_proto::ports::CHUNKSERVER_HTTP))
}

fn default_scrub() -> f64 {
    1.0
}

fn default_heartbeat() -> u64 {
    1000
}

fn default_leave_free() -> u64 {
    256
}

/// The largest `leave_free_mib` taken (1 EiB): past it the figure is a typo.
const LEAVE_FREE_MAX_MIB: u64 = 1 << 40;

impl ChunkserverConfig {
    /// A configuration with defaults for everything but the data directories.
    pub fn with_dirs(dirs: Vec<PathBuf>) -> Self {
        ChunkserverConfig {
            data_dirs: dirs
                .into_iter()
                .map(|path| DataDir { path, marked_for_removal: false })
                .collect(),
            master: default_master(),
            cluster_id: None,
            secret_file: None,
            listen: default_listen(),
            http: default_http(),
            advertise_host: None,
            labels: Vec::new(),
            scrub_mib_per_sec: default_scrub(),
            fsync: FsyncPolicy::default(),
            heartbeat_ms: default_heartbeat(),
            leave_free_mib: default_leave_free(),
        }
    }
}

pub use mfsha_yamlconf::ConfigError;

/// Reads, parses and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<ChunkserverConfig, ConfigError> {
    mfsha_yamlconf::load(path, validate)
}

/// Parses and checks configuration text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<ChunkserverConfig, ConfigError> {
    mfsha_yamlconf::parse(path, text, validate)
}

/// Checks what serde cannot express. Returns the offending key and why.
pub fn validate(config: &ChunkserverConfig) -> Result<(), (&'static str, String)> {
    if config.data_dirs.is_empty() {
        return Err(("data_dirs", "list at least one data directory".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for dir in &config.data_dirs {
        if !dir.path.is_absolute() {
            return Err(("data_dirs", format!("{} is not an absolute path", dir.path.display())));
        }
        if !seen.insert(&dir.path) {
            return Err(("data_dirs", format!("{} is listed twice", dir.path.display())));
        }
    }
    if config.master.is_empty() {
        return Err(("master", "name at least one master address HOST:PORT".into()));
    }
    if let Some(id) = &config.cluster_id {
        let ok = (1..=64).contains(&id.len())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(("cluster_id", format!("{id:?} must be 1-64 of [A-Za-z0-9_-]")));
        }
    }
    for label in &config.labels {
        if label.len() != 1 || !label.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(("labels", format!("{label:?} is not a single letter A-Z")));
        }
    }
    if !(0.0..=10_000.0).contains(&config.scrub_mib_per_sec) {
        return Err(("scrub_mib_per_sec", "must be between 0 (off) and 10000".into()));
    }
    if config.heartbeat_ms == 0 || config.heartbeat_ms > 60_000 {
        return Err(("heartbeat_ms", "must be in 1..=60000".into()));
    }
    if config.leave_free_mib > LEAVE_FREE_MAX_MIB {
        return Err(("leave_free_mib", format!("must be at most {LEAVE_FREE_MAX_MIB} (1 EiB)")));
    }
    Ok(())
}

/// `master: host:port` or `master: [a:9420, b:9420]`.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("HOST:PORT or a list of HOST:PORT")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            mfsha_yamlconf::check_host_port(v).map_err(E::custom)?;
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                mfsha_yamlconf::check_host_port(&item).map_err(de::Error::custom)?;
                out.push(item);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_any(V)
}

/// A data directory as a bare path or as `{path, marked_for_removal}`.
impl<'de> Deserialize<'de> for DataDir {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DataDir;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path or {path: PATH, marked_for_removal: BOOL}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(DataDir { path: PathBuf::from(v), marked_for_removal: false })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                DataDirFull::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|d| DataDir { path: d.path, marked_for_removal: d.marked_for_removal })
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The map form of a data directory.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataDirFull {
    path: PathBuf,
    #[serde(default)]
    marked_for_removal: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<ChunkserverConfig, ConfigError> {
        parse(Path::new("/etc/mfsha/chunkserver.yaml"), text)
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let c = parse_str("data_dirs: [/srv/d1]\n").unwrap();
        assert_eq!(
            c.data_dirs,
            vec![DataDir { path: "/srv/d1".into(), marked_for_removal: false }]
        );
        assert_eq!(c.master, vec!["mfsmaster:9420".to_string()]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:9422");
        assert_eq!(c.http.to_string(), "0.0.0.0:9427");
        assert_eq!(c.scrub_mib_per_sec, 1.0);
        assert_eq!(c.fsync, FsyncPolicy::OnSync);
        assert_eq!(c.heartbeat_ms, 1000);
        assert_eq!(c, ChunkserverConfig::with_dirs(vec!["/srv/d1".into()]));
    }

    #[test]
    fn full_file_with_both_dir_forms_and_master_list() {
        let c = parse_str(
            "data_dirs:\n  - /a\n  - path: /b\n    marked_for_removal: true\n\
             master: [m1:9420, \"10.0.0.2:9420\"]\nlisten: 127.0.0.1:9500\nlabels: [A, B]\n\
             scrub_mib_per_sec: 0\nfsync: every_write\n",
        )
        .unwrap();
        assert_eq!(c.data_dirs[1], DataDir { path: "/b".into(), marked_for_removal: true });
        assert_eq!(c.master, vec!["m1:9420", "10.0.0.2:9420"]);
        assert_eq!(c.listen.port(), 9500);
        assert_eq!(c.labels, vec!["A", "B"]);
        assert_eq!(c.fsync, FsyncPolicy::EveryWrite);
        let c = parse_str("data_dirs: [/a]\nmaster: vip:9420\n").unwrap();
        assert_eq!(c.master, vec!["vip:9420"]);
    }

    #[test]
    fn shipped_example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/chunkserver.yaml");
        let c = load(&path).unwrap();
        assert_eq!(c.data_dirs[0].path, PathBuf::from("/var/lib/mfsha/chunks"));
        assert_eq!(c.master, vec!["mfsmaster:9420"]);
        assert_eq!(c.listen.port(), 9422);
        assert_eq!(c.fsync, FsyncPolicy::OnSync);
    }

    #[test]
    fn errors_name_file_and_key() {
        let err = parse_str("data_dirs: [/a]\nmastr: x:1\n").unwrap_err().to_string();
        assert!(err.contains("/etc/mfsha/chunkserver.yaml") && err.contains("mastr"), "{err}");
        let err = parse_str("data_dirs: [/a]\nmaster: nohost\n").unwrap_err().to_string();
        assert!(err.contains("HOST:PORT"), "{err}");
        let err = parse_str("data_dirs:\n  - path: /a\n    marked: true\n").unwrap_err();
        assert!(err.to_string().contains("marked"), "{err}");
        let err = parse_str("data_dirs: []\n").unwrap_err().to_string();
        assert!(err.contains("data_dirs"), "{err}");
        let err = parse_str("data_dirs: [relative]\n").unwrap_err().to_string();
        assert!(err.contains("absolute"), "{err}");
        let err = parse_str("data_dirs: [/a]\nlabels: [ab]\n").unwrap_err().to_string();
        assert!(err.contains("labels"), "{err}");
        let err = parse_str("data_dirs: [/a]\nlisten: 9422\n").unwrap_err().to_string();
        assert!(err.contains("IP:PORT"), "{err}");
    }
}
