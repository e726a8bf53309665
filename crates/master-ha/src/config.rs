//! The master's YAML configuration (`/etc/mfsha/master.yaml`, see `deploy/master.yaml`).
//!
//! Every field has a default except `cluster_id`, which every node of a cluster must name, so an
//! empty file is an error rather than a silent "all defaults". Unknown keys are errors (`deny_unknown_fields`): a misspelt key silently falling back to its default
//! is how operators lose a day. Every error names the file, the key with its line and column,
//! and what is allowed there.

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole master configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MasterConfig {
    /// This master's Raft node id: unique in the group, never 0, never reused for a different
    /// data directory. Default 1.
    pub node_id: u64,
    /// The cluster this master belongs to: the same on every node of the group (masters and
    /// the witness logger), stored in the data directory at first start and checked on every
    /// handshake. Required.
    pub cluster_id: String,
    /// Where the Raft log and the metadata live (one RocksDB). Default `/var/lib/mfsha/master`.
    pub data_dir: PathBuf,
    /// Addresses this master listens on.
    pub listen: ListenConfig,
    /// Addresses (`HOST:PORT`) other daemons reach this master at, sent in leader hints.
    /// Each defaults to its `listen` address, or to this host's name and the listen port
    /// when that listens on every interface (`0.0.0.0` / `[::]`).
    pub advertise: Advertise,
    /// The other masters of the Raft group as `{id, addr}` (their peer port), and where
    /// clients, chunkservers and metaloggers reach each (`client`, `chunkserver`, `logger`;
    /// optional, needed for hints naming that master). Empty (the default) means a group
    /// of one.
    pub peers: Vec<PeerConfig>,
    /// Raft timing and log retention.
    pub raft: RaftTiming,
    /// Client connection limits and how long a session outlives its connection.
    pub client: ClientLimits,
    /// Chunk copy management (replication, deletion).
    pub chunks: ChunksConfig,
    /// Emptying the trash: how often and how much the leader purges.
    pub trash: TrashConfig,
    /// The cluster's virtual IP, held by the leader (see `mfsha_vip::VipConfig`); none when
    /// absent (the default): daemons then list every master's address.
    pub vip: Option<mfsha_vip::VipConfig>,
    /// The exports file (`mfsexports.cfg` grammar, see `deploy/mfsexports.cfg`): which client
    /// addresses may open sessions on which directories, how (read-only, uid mapping,
    /// password). Re-read on SIGHUP. Absent (the default): every client may open a session
    /// on any directory and act as the uid it claims, as before exports existed.
    pub exports: Option<PathBuf>,
    /// The cluster's key file (`mfsha_proto::cluster_key`), the same on every master,
    /// chunkserver and metalogger: callers of the chunkserver, metalogger and peer ports must
    /// prove it, and this master proves it to its peers. `mfsha bootstrap` makes it when it
    /// is named here and does not exist. Absent (the default): those ports trust any caller.
    pub secret_file: Option<PathBuf>,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            node_id: 1,
            cluster_id: String::new(),
            data_dir: PathBuf::from("/var/lib/mfsha/master"),
            listen: ListenConfig::default(),
            advertise: Advertise::default(),
            peers: Vec::new(),
            raft: RaftTiming::default(),
            client: ClientLimits::default(),
            chunks: ChunksConfig::default(),
            trash: TrashConfig::default(),
            vip: None,
            exports: None,
            secret_file: None,
        }
    }
}

/// Listening addresses, each `IP:PORT` (use `0.0.0.0` for every interface, port 0 to let the
/// kernel pick a free port — tests do).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Mounts and tools (`mfsha status`). Default `0.0.0.0:9421`.
    #[serde(deserialize_with = "mfsha_yamlconf::socket_addr")]
    pub client: SocketAddr,
    /// Chunkservers. Default `0.0.0.0:9420`.
    #[serde(deserialize_with = "mfsha_yamlconf::socket_addr")]
    pub chunkserver: SocketAddr,
    /// Metaloggers. Default `0.0.0.0:9419`.
    #[serde(deserialize_with = "mfsha_yamlconf::socket_addr")]
    pub logger: SocketAddr,
    /// Other masters (Raft messages). Default `0.0.0.0:9423`.
    #[serde(deserialize_with = "mfsha_yamlconf::socket_addr")]
    pub peer: SocketAddr,
    /// HTTP status page and Prometheus `/metrics`. Default `0.0.0.0:9425`.
    #[serde(deserialize_with = "mfsha_yamlconf::socket_addr")]
    pub http: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        use mfsha_proto::ports;
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        ListenConfig {
            client: any(ports::MASTER_CLIENT),
            chunkserver: any(ports::MASTER_CHUNKSERVER),
            logger: any(ports::MASTER_LOGGER),
            peer: any(ports::MASTER_PEER),
            http: any(ports::MASTER_HTTP),
        }
    }
}

/// Where this master is reached, `HOST:PORT` each; `None` takes the default from `listen`
/// (see [`MasterConfig::advertise`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Advertise {
    #[serde(deserialize_with = "mfsha_yamlconf::opt_host_port")]
    pub client: Option<String>,
    #[serde(deserialize_with = "mfsha_yamlconf::opt_host_port")]
    pub chunkserver: Option<String>,
    #[serde(deserialize_with = "mfsha_yamlconf::opt_host_port")]
    pub logger: Option<String>,
    /// The peer (Raft) port as the other members reach it; recorded in the replicated address
    /// book when this master bootstraps a group.
    #[serde(deserialize_with = "mfsha_yamlconf::opt_host_port")]
    pub peer: Option<String>,
}

impl Advertise {
    /// The address to advertise for a port listening on `listen`: the configured one, else
    /// `listen` itself, else (every interface) `host` with the bound port.
    pub fn resolve(configured: &Option<String>, listen: SocketAddr, host: &str) -> String {
        match configured {
            Some(addr) => addr.clone(),
            None if listen.ip().is_unspecified() => format!("{host}:{}", listen.port()),
            None => listen.to_string(),
        }
    }
}

/// Another master of the Raft group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its `node_id`.
    pub id: u64,
    /// Its peer address, `HOST:PORT` (a host name is resolved at connect time).
    #[serde(deserialize_with = "mfsha_yamlconf::host_port")]
    pub addr: String,
    /// A non-voting member (the metalogger beside three masters). Default false.
    #[serde(default)]
    pub learner: bool,
    /// Its client port as clients reach it, `HOST:PORT`.
    #[serde(default, deserialize_with = "mfsha_yamlconf::opt_host_port")]
    pub client: Option<String>,
    /// Its chunkserver port as chunkservers reach it, `HOST:PORT`.
    #[serde(default, deserialize_with = "mfsha_yamlconf::opt_host_port")]
    pub chunkserver: Option<String>,
    /// Its metalogger port as metaloggers reach it, `HOST:PORT`.
    #[serde(default, deserialize_with = "mfsha_yamlconf::opt_host_port")]
    pub logger: Option<String>,
    /// Its status page as operators' browsers reach it, `HOST:PORT`; a follower's page links
    /// there. Default: its client host with this master's HTTP port.
    #[serde(default, deserialize_with = "mfsha_yamlconf::opt_host_port")]
    pub http: Option<String>,
}

pub use mfsha_raft::RaftTiming;

/// Limits on client (mount and tool) connections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientLimits {
    /// Requests one connection may have in progress at once; further frames wait in the
    /// socket (backpressure). Default 64.
    pub max_in_flight_per_connection: usize,
    /// Client connections accepted at once; more are refused with a log line. Default 4096
    /// (and at most half the descriptors the master may open).
    pub max_connections: usize,
    /// Client connections accepted at once from one address. Default 512: enough for a
    /// NAT'd office of mounts, not enough for one host to take the port.
    pub max_connections_per_address: usize,
    /// Files one session (one mount) may hold open at once; an open beyond it fails with
    /// ENFILE. Open files are replicated state, so this bounds what one mount can make
    /// every master keep. Default 1,000,000.
    pub max_open_files_per_session: usize,
    /// Seconds a session lives on with no connection (MooseFS's `SESSION_SUSTAIN_TIME`):
    /// then the leader ends it, releasing its open files (freeing the unlinked ones nobody
    /// else holds) and its locks. A new leader counts from the start of its leadership.
    /// Default 86400 (one day).
    pub session_sustain_secs: u64,
}

/// The longest session sustain time accepted: a year.
pub const SESSION_SUSTAIN_MAX_SECS: u64 = 365 * 86_400;

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_in_flight_per_connection: 64,
            max_connections: 4096,
            max_connections_per_address: 512,
            max_open_files_per_session: 1_000_000,
            session_sustain_secs: 86_400,
        }
    }
}

/// Chunk copy management. The chunks engine reads this; add fields here as it grows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunksConfig {
    /// After becoming leader, wait this long for chunkservers to (re-)register before treating
    /// unreported copies as missing and replicating. Default 5000.
    pub replication_delay_init_ms: u64,
    /// Replications one chunkserver takes part in at once (as source or target). Default 2.
    pub replications_per_server_max: usize,
    /// Copy deletions sent to one chunkserver at once. Default 10.
    pub deletions_per_server_max: usize,
    /// Milliseconds between two passes of the replication engine. Default 1000.
    pub replication_loop_ms: u64,
    /// A command a chunkserver has not answered within this long counts as failed (its
    /// replication slot is freed). Default 120000.
    pub command_timeout_ms: u64,
    /// A chunk write not ended by its client within this long stops blocking replication
    /// and deletion of that chunk. Default 120000 (MooseFS's chunk lock time).
    pub write_lock_timeout_ms: u64,
    /// Rebalance when the fullest and the emptiest chunkserver's used space differ by more
    /// than this many percentage points. Default 10.
    pub rebalance_threshold_percent: u32,
}

impl Default for ChunksConfig {
    fn default() -> Self {
        ChunksConfig {
            replication_delay_init_ms: 5000,
            replications_per_server_max: 2,
            deletions_per_server_max: 10,
            replication_loop_ms: 1000,
            command_timeout_ms: 120_000,
            write_lock_timeout_ms: 120_000,
            rebalance_threshold_percent: 10,
        }
    }
}

/// Emptying the trash. The leader purges files whose trash time has passed, at most
/// `purge_batch` every `purge_interval_ms`, so the purge rate is bounded by
/// `purge_batch * 1000 / purge_interval_ms` files per second (default 1000/s).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrashConfig {
    /// Milliseconds between two looks at the trash. Default 1000.
    pub purge_interval_ms: u64,
    /// Most files purged in one round (one Raft entry each, committed together). Default 1000.
    pub purge_batch: usize,
}

impl Default for TrashConfig {
    fn default() -> Self {
        TrashConfig { purge_interval_ms: 1000, purge_batch: 1000 }
    }
}

pub use mfsha_yamlconf::ConfigError;

/// Reads, parses and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<MasterConfig, ConfigError> {
    mfsha_yamlconf::load(path, validate)
}

/// Parses and checks configuration text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<MasterConfig, ConfigError> {
    mfsha_yamlconf::parse(path, text, validate)
}

/// Checks relationships serde cannot express. Returns the offending key and why.
fn validate(config: &MasterConfig) -> Result<(), (&'static str, String)> {
    if config.node_id == 0 {
        return Err(("node_id", "must be at least 1 (raft reserves 0 for \"no node\")".into()));
    }
    validate_cluster_id(&config.cluster_id)?;
    if config.data_dir.as_os_str().is_empty() {
        return Err(("data_dir", "must name a directory".into()));
    }
    validate_peers(config)?;
    config.raft.validate().map_err(|reason| ("raft", reason))?;
    let client = &config.client;
    if client.max_in_flight_per_connection == 0 || client.max_in_flight_per_connection > 4096 {
        return Err(("client.max_in_flight_per_connection", "must be in 1..=4096".into()));
    }
    if client.max_connections == 0 {
        return Err(("client.max_connections", "must be at least 1".into()));
    }
    if client.max_connections_per_address == 0
        || client.max_connections_per_address > client.max_connections
    {
        return Err((
            "client.max_connections_per_address",
            format!("must be in 1..=client.max_connections ({})", client.max_connections),
        ));
    }
    if client.max_open_files_per_session == 0 {
        return Err(("client.max_open_files_per_session", "must be at least 1".into()));
    }
    let sustain = client.session_sustain_secs;
    if sustain == 0 || sustain > SESSION_SUSTAIN_MAX_SECS {
        return Err((
            "client.session_sustain_secs",
            format!("{sustain} is outside 1..={SESSION_SUSTAIN_MAX_SECS} (one year)"),
        ));
    }
    validate_trash(&config.trash)?;
    if config.secret_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        return Err(("secret_file", "must name a file (or leave the key out: no secret)".into()));
    }
    if config.exports.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        return Err(("exports", "must name a file (or leave the key out: no exports)".into()));
    }
    match &config.vip {
        Some(vip) => vip.validate().map_err(|reason| ("vip", reason)),
        None => Ok(()),
    }
}

/// A cluster id travels in every handshake and names the cluster in logs: printable, short.
pub fn validate_cluster_id(id: &str) -> Result<(), (&'static str, String)> {
    if id.is_empty() {
        return Err((
            "cluster_id",
            "is required: every node of a cluster (masters and the witness logger) names the \
             same id; `mfsha cluster-id` prints a new one"
                .into(),
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if id.len() > 64 || !id.chars().all(allowed) {
        return Err(("cluster_id", format!("{id:?} must be 1-64 of [A-Za-z0-9_-]")));
    }
    Ok(())
}

fn validate_trash(trash: &TrashConfig) -> Result<(), (&'static str, String)> {
    if trash.purge_interval_ms == 0 || trash.purge_interval_ms > 3_600_000 {
        let ms = trash.purge_interval_ms;
        return Err(("trash.purge_interval_ms", format!("{ms} is outside 1..=3600000")));
    }
    if trash.purge_batch == 0 || trash.purge_batch > 100_000 {
        let batch = trash.purge_batch;
        return Err(("trash.purge_batch", format!("{batch} is outside 1..=100000")));
    }
    Ok(())
}

fn validate_peers(config: &MasterConfig) -> Result<(), (&'static str, String)> {
    let mut seen = std::collections::BTreeSet::new();
    for peer in &config.peers {
        if peer.id == 0 {
            return Err(("peers", format!("peer {} has id 0; ids start at 1", peer.addr)));
        }
        if peer.id == config.node_id {
            return Err((
                "peers",
                format!("peer {} has this master's own node_id {}", peer.addr, peer.id),
            ));
        }
        if !seen.insert(peer.id) {
            return Err(("peers", format!("node id {} is listed twice", peer.id)));
        }
    }
    Ok(())
}

impl fmt::Display for MasterConfig {
    /// One line for the startup log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} data_dir {} client {} chunkserver {} peers {}",
            self.node_id,
            self.data_dir.display(),
            self.listen.client,
            self.listen.chunkserver,
            self.peers.len()
        )?;
        match &self.vip {
            Some(vip) => write!(f, " vip {} on {}", vip.address, vip.interface),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` with a `cluster_id` added at the end when it has none, so that each test
    /// sees the error it is about (line numbers stay as written).
    fn parse_str(text: &str) -> Result<MasterConfig, ConfigError> {
        let path = Path::new("/etc/mfsha/master.yaml");
        match text.contains("cluster_id") {
            true => parse(path, text),
            false => parse(path, &format!("{text}\ncluster_id: test\n")),
        }
    }

    #[test]
    fn an_empty_file_is_an_error_naming_cluster_id() {
        let err = parse(Path::new("/etc/mfsha/master.yaml"), "# nothing set\n").unwrap_err();
        let err = err.to_string();
        assert!(err.contains("cluster_id") && err.contains("is required"), "{err}");
    }

    #[test]
    fn a_file_with_only_cluster_id_gives_documented_defaults() {
        let config = parse_str("cluster_id: c1\n").unwrap();
        assert_eq!(config.cluster_id, "c1");
        assert_eq!(config.node_id, 1);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/mfsha/master"));
        assert_eq!(config.listen.client.to_string(), "0.0.0.0:9421");
        assert_eq!(config.listen.chunkserver.to_string(), "0.0.0.0:9420");
        assert_eq!(config.listen.logger.to_string(), "0.0.0.0:9419");
        assert_eq!(config.listen.peer.to_string(), "0.0.0.0:9423");
        assert_eq!(config.listen.http.to_string(), "0.0.0.0:9425");
        assert!(config.peers.is_empty());
        assert_eq!(config.raft, RaftTiming::default());
        assert_eq!(config.raft.tick_ms, 50);
        assert_eq!(config.raft.election_ticks, 5);
        assert_eq!(config.raft.max_election_ticks, 8);
        assert_eq!(config.raft.heartbeat_ticks, 1);
        assert_eq!(config.raft.snapshot_every_entries, 100_000);
        assert_eq!(config.raft.log_tail_entries, 10_000);
        assert_eq!(config.chunks.replication_delay_init_ms, 5000);
        assert_eq!(config.chunks.replications_per_server_max, 2);
        assert_eq!(config.chunks.deletions_per_server_max, 10);
        assert_eq!(config.client.max_in_flight_per_connection, 64);
        assert_eq!(config.trash.purge_interval_ms, 1000);
        assert_eq!(config.trash.purge_batch, 1000);
    }

    #[test]
    fn partial_sections_keep_other_defaults() {
        let config =
            parse_str("node_id: 3\ncluster_id: c\nraft:\n  tick_ms: 70\npeers:\n  - {id: 1, addr: \"m1:9423\"}\n")
                .unwrap();
        assert_eq!(config.node_id, 3);
        assert_eq!(config.raft.tick_ms, 70);
        assert_eq!(config.raft.election_ticks, 5);
        let peer = PeerConfig {
            id: 1,
            addr: "m1:9423".into(),
            learner: false,
            client: None,
            chunkserver: None,
            logger: None,
            http: None,
        };
        assert_eq!(config.peers, vec![peer]);
    }

    #[test]
    fn shipped_example_file_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/master.yaml");
        let config = load(&path).unwrap();
        assert_eq!(config, MasterConfig { cluster_id: "mfsha".into(), ..MasterConfig::default() });
    }

    #[test]
    fn vip_appliance_example_files_hold_the_same_vip_with_the_default_timing() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/appliance-vip");
        for (file, node_id) in [("master1.yaml", 1), ("master2.yaml", 2)] {
            let config = load(&dir.join(file)).unwrap();
            assert_eq!(config.node_id, node_id, "{file}");
            let vip = config.vip.expect("a vip section");
            let expected = mfsha_vip::VipConfig::new("192.168.10.100/24".parse().unwrap(), "eth0");
            assert_eq!(vip, expected, "{file}");
            let advertised = config.advertise.client.unwrap();
            assert_eq!(advertised, format!("master{node_id}:9421"), "{file}");
        }
    }

    #[test]
    fn a_vip_section_with_a_bad_address_or_unknown_key_is_named() {
        let err =
            parse_str("vip:\n  address: 10.0.0.1\n  interface: eth0\n").unwrap_err().to_string();
        assert!(err.contains("vip") && err.contains("prefix"), "{err}");
        let err = parse_str("vip:\n  address: 10.0.0.1/24\n  interface: eth0\n  burst: 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("burst"), "{err}");
        let err = parse_str("vip:\n  address: 10.0.0.1/24\n  interface: eth0\n  refresh_ms: 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("vip.refresh_ms"), "{err}");
    }

    #[test]
    fn appliance_example_files_parse_as_two_masters_and_a_witness() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/appliance");
        for (file, node_id, other) in [("master1.yaml", 1, 2), ("master2.yaml", 2, 1)] {
            let config = load(&dir.join(file)).unwrap();
            assert_eq!(config.node_id, node_id, "{file}");
            let ids: Vec<u64> = config.peers.iter().map(|peer| peer.id).collect();
            assert_eq!(ids, vec![other, 3], "{file}");
            assert!(config.peers[0].client.is_some(), "{file}: the other master's client port");
            assert!(config.peers[1].client.is_none(), "{file}: the witness serves no client");
            let key = config.secret_file.as_deref().map(|p| p.to_string_lossy().into_owned());
            assert_eq!(
                key.as_deref(),
                Some("/etc/mfsha/cluster.key"),
                "{file}: the cluster secret"
            );
        }
    }

    #[test]
    fn unknown_key_names_file_key_position_and_allowed_keys() {
        let err =
            parse_str("node_id: 2\nraft:\n  tick_ms: 100\n  elektion_ticks: 5\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/etc/mfsha/master.yaml"), "{text}");
        assert!(text.contains("elektion_ticks"), "{text}");
        assert!(text.contains("election_ticks"), "should list allowed keys: {text}");
        match err {
            ConfigError::Parse { key, line, .. } => {
                assert_eq!(key, "raft.elektion_ticks");
                assert_eq!(line, 4);
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let err = parse_str("node_id: 1\nnod_id: 2\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("nod_id (line 2"), "{text}");
        assert!(text.contains("node_id"), "{text}");
    }

    #[test]
    fn wrong_value_type_names_key_and_expected_type() {
        let err = parse_str("raft:\n  tick_ms: fast\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("raft.tick_ms"), "{text}");
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("u64") || text.contains("integer"), "{text}");
    }

    #[test]
    fn bad_listen_address_names_key_and_form() {
        let err = parse_str("listen:\n  client: 0.0.0.0\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("listen.client"), "{text}");
        assert!(text.contains("IP:PORT"), "{text}");
        let err = parse_str("peers:\n  - id: 2\n    addr: m2\n").unwrap_err();
        assert!(err.to_string().contains("HOST:PORT"), "{err}");
    }

    #[test]
    fn inconsistent_values_are_rejected() {
        let err = parse_str("raft:\n  heartbeat_ticks: 10\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("raft") && text.contains("heartbeat_ticks 10"), "{text}");
        let err = parse_str("raft:\n  max_election_ticks: 5\n").unwrap_err();
        assert!(err.to_string().contains("max_election_ticks 5 must be above"), "{err}");
        let err = parse_str("node_id: 0\n").unwrap_err();
        assert!(err.to_string().contains("node_id"), "{err}");
        let err = parse_str("node_id: 2\npeers:\n  - {id: 2, addr: \"m2:9423\"}\n").unwrap_err();
        assert!(err.to_string().contains("own node_id"), "{err}");
    }

    #[test]
    fn trash_keys_parse_and_out_of_range_values_are_named() {
        let config = parse_str("trash:\n  purge_interval_ms: 250\n").unwrap();
        assert_eq!(config.trash, TrashConfig { purge_interval_ms: 250, purge_batch: 1000 });
        let err = parse_str("trash:\n  purge_interval_ms: 0\n").unwrap_err();
        assert!(err.to_string().contains("trash.purge_interval_ms: 0 is outside"), "{err}");
        let err = parse_str("trash:\n  purge_batch: 0\n").unwrap_err();
        assert!(err.to_string().contains("trash.purge_batch: 0 is outside"), "{err}");
        let err = parse_str("trash:\n  purge_every: 5\n").unwrap_err();
        assert!(err.to_string().contains("trash.purge_every"), "{err}");
    }

    #[test]
    fn advertised_and_peer_addresses_parse_and_bad_ones_are_named_with_their_line() {
        let config = parse_str(
            "advertise:\n  client: vip.example:9421\npeers:\n  - id: 2\n    addr: m2:9423\n    client: m2:9421\n    chunkserver: m2:9420\n    logger: m2:9419\n",
        )
        .unwrap();
        assert_eq!(config.advertise.client.as_deref(), Some("vip.example:9421"));
        assert_eq!(config.advertise.chunkserver, None);
        let peer = &config.peers[0];
        assert_eq!(peer.client.as_deref(), Some("m2:9421"));
        assert_eq!(peer.chunkserver.as_deref(), Some("m2:9420"));
        assert_eq!(peer.logger.as_deref(), Some("m2:9419"));
        let err = parse_str("advertise:\n  chunkserver: m1\n").unwrap_err();
        match &err {
            ConfigError::Parse { key, line, reason, .. } => {
                assert_eq!((key.as_str(), *line), ("advertise.chunkserver", 2));
                assert!(reason.contains("HOST:PORT"), "{reason}");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        assert!(err.to_string().contains("/etc/mfsha/master.yaml"), "{err}");
        let err = parse_str("peers:\n  - id: 2\n    addr: m2:9423\n    logger: m2:0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("logger") && err.contains("line 4") && err.contains("HOST:PORT"),
            "{err}"
        );
        let err = parse_str("advertise:\n  clients: m1:9421\n").unwrap_err().to_string();
        assert!(err.contains("advertise.clients"), "{err}");
    }

    #[test]
    fn advertised_addresses_default_to_the_listen_address_or_the_host_name() {
        let any: SocketAddr = "0.0.0.0:9421".parse().unwrap();
        let one: SocketAddr = "10.1.2.3:9421".parse().unwrap();
        let six: SocketAddr = "[::]:9420".parse().unwrap();
        assert_eq!(Advertise::resolve(&None, any, "m1"), "m1:9421");
        assert_eq!(Advertise::resolve(&None, six, "m1"), "m1:9420");
        assert_eq!(Advertise::resolve(&None, one, "m1"), "10.1.2.3:9421");
        assert_eq!(Advertise::resolve(&Some("vip:1".into()), one, "m1"), "vip:1");
    }

    #[test]
    fn missing_file_is_named() {
        let err = load(Path::new("/nonexistent/mfsha.yaml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/mfsha.yaml"), "{err}");
    }
}
