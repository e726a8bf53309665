//! The logger's YAML configuration.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `logger.yaml`. Every field has a default; unknown keys are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggerConfig {
    /// Name shown by `mfsha status` on the master. Default: the host name.
    pub name: String,
    /// Where the snapshot and changelog files live. Default: /var/lib/mfsha/logger.
    pub data_dir: PathBuf,
    /// Master logger ports to try, in order ("host:port"). Default: ["mfsmaster:9419"].
    pub masters: Vec<String>,
    /// Seconds between fresh snapshot downloads (MooseFS: META_DOWNLOAD_FREQ). Default 3600.
    pub snapshot_every_s: u64,
    /// The masters' `cluster_id`: a master of another cluster refuses this logger. Default:
    /// the witness's `cluster_id`, or unset (any cluster).
    pub cluster_id: Option<String>,
    /// The cluster's key file (the masters' `secret_file`, copied here, mode 0600): proved to
    /// the masters' metalogger port and, for a witness, on the peer port both ways. Default:
    /// unset (masters without a secret are expected).
    pub secret_file: Option<PathBuf>,
    /// Run as the Raft group's witness too (see `witness.rs`). Default: not a witness.
    pub witness: Option<crate::witness::WitnessConfig>,
    /// Where Prometheus scrapes `/metrics`. Default `0.0.0.0:9428`.
    #[serde(deserialize_with = "mfsha_yamlconf::socket_addr")]
    pub http: SocketAddr,
}

impl LoggerConfig {
    /// The cluster this logger says it belongs to.
    pub fn cluster(&self) -> Option<String> {
        let witness = self.witness.as_ref().map(|w| w.cluster_id.clone());
        self.cluster_id.clone().or(witness)
    }
}

impl Default for LoggerConfig {
    fn default() -> Self {
        LoggerConfig {
            name: hostname(),
            data_dir: PathBuf::from("/var/lib/mfsha/logger"),
            masters: vec![format!("mfsmaster:{}", mfsha_proto::ports::MASTER_LOGGER)],
            snapshot_every_s: 3600,
            cluster_id: None,
            secret_file: None,
            witness: None,
            http: SocketAddr::from(([0, 0, 0, 0], mfsha_proto::ports::LOGGER_HTTP)),
        }
    }
}

pub use mfsha_yamlconf::ConfigError;

/// Reads and checks `path`.
pub fn load(path: &Path) -> Result<LoggerConfig, ConfigError> {
    mfsha_yamlconf::load(path, validate)
}

/// Parses config text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<LoggerConfig, ConfigError> {
    mfsha_yamlconf::parse(path, text, validate)
}

/// Checks what serde cannot express. Returns the offending key and why.
fn validate(config: &LoggerConfig) -> Result<(), (&'static str, String)> {
    if config.masters.is_empty() {
        return Err(("masters", "at least one \"host:port\" is needed".into()));
    }
    if config.snapshot_every_s == 0 {
        return Err(("snapshot_every_s", "must be at least 1".into()));
    }
    if let Some(witness) = &config.witness {
        witness.validate()?;
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "metalogger".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_appliance_example_is_a_witness_of_two_masters() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/appliance/logger.yaml");
        let config = load(&path).unwrap();
        let witness = config.witness.expect("the example has a witness section");
        assert_eq!(witness.node_id, 3);
        assert_eq!(witness.peers.iter().map(|peer| peer.id).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn the_vip_appliance_witness_reaches_the_leader_through_the_vip() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/appliance-vip/logger.yaml");
        let config = load(&path).unwrap();
        assert_eq!(config.witness.expect("a witness section").node_id, 3);
        assert_eq!(format!("{:?}", config.masters).matches("mfsmaster:9419").count(), 1);
    }

    #[test]
    fn the_shipped_example_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/logger.yaml");
        let config = load(&path).unwrap();
        let defaults = LoggerConfig::default();
        assert_eq!(config.http, defaults.http);
        assert_eq!((config.data_dir, config.masters), (defaults.data_dir, defaults.masters));
        assert_eq!(config.snapshot_every_s, defaults.snapshot_every_s);
    }

    #[test]
    fn a_witness_of_one_master_is_refused_as_a_two_voter_group() {
        let text =
            "witness:\n  node_id: 2\n  cluster_id: c\n  peers:\n    - {id: 1, addr: \"m1:9423\"}\n";
        let err = parse(Path::new("l.yaml"), text).unwrap_err().to_string();
        assert!(err.contains("exactly two voters"), "{err}");
    }

    #[test]
    fn defaults_and_overrides() {
        let c = parse(Path::new("l.yaml"), "masters: [\"m1:9419\", \"m2:9419\"]\n").unwrap();
        assert_eq!(c.masters, vec!["m1:9419", "m2:9419"]);
        assert_eq!(c.snapshot_every_s, 3600);
        assert_eq!(c.http.to_string(), "0.0.0.0:9428");
        let c = parse(Path::new("l.yaml"), "http: 127.0.0.1:9500\n").unwrap();
        assert_eq!(c.http.to_string(), "127.0.0.1:9500");
        assert_eq!(
            parse(Path::new("l.yaml"), "").unwrap().data_dir,
            PathBuf::from("/var/lib/mfsha/logger")
        );
    }

    #[test]
    fn unknown_key_and_bad_value_name_the_file_and_key() {
        let e = parse(Path::new("/etc/mfsha/logger.yaml"), "snapshot_evry_s: 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/mfsha/logger.yaml") && e.contains("snapshot_evry_s"), "{e}");
        let e = parse(Path::new("l.yaml"), "snapshot_every_s: soon\n").unwrap_err().to_string();
        assert!(e.contains("snapshot_every_s") || e.contains("invalid type"), "{e}");
        let e = parse(Path::new("l.yaml"), "snapshot_every_s: 0\n").unwrap_err().to_string();
        assert!(e.contains("at least 1"), "{e}");
    }
}
