//! The logger as the Raft group's witness: a full voting member with its own RocksDB store
//! (`DATA_DIR/witness`), applying every committed entry, keeping snapshots, serving no client.
//!
//! Why a real voter: the default appliance is two masters plus this logger, three voters, so
//! the group survives the loss of any one. raft-rs has no witness role, and a voter that never
//! led could strand an acknowledged entry that only it and a dead leader hold; so it may win an
//! election, and then hands leadership to the first master that has caught up (the node's
//! `witness` setting).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread::JoinHandle;

use mfsha_meta::State;
use mfsha_raft::transport::tcp::{self, PeerIdentity, TcpTransport};
use mfsha_raft::{Handle, Members, RaftConfig, RaftTiming, Shutdown};
use serde::Deserialize;
use tokio::net::TcpListener;
use tracing::Instrument;

/// The `witness:` section of `logger.yaml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// This node's Raft id: unique in the group, never 0.
    pub node_id: u64,
    /// The cluster id every member names (the masters' `cluster_id`).
    pub cluster_id: String,
    /// The peer port to listen on, `IP:PORT`. Default `0.0.0.0:9423`.
    #[serde(default = "default_listen", deserialize_with = "mfsha_yamlconf::socket_addr")]
    pub listen: SocketAddr,
    /// The other members (the masters), `{id, addr}` with their peer addresses.
    pub peers: Vec<WitnessPeer>,
    /// Raft timing: must match the masters'.
    #[serde(default)]
    pub raft: RaftTiming,
}

/// A master as the witness knows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessPeer {
    pub id: u64,
    #[serde(deserialize_with = "mfsha_yamlconf::host_port")]
    pub addr: String,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], mfsha_proto::ports::MASTER_PEER))
}

impl WitnessConfig {
    /// What is wrong, as (key, why).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.node_id == 0 {
            return Err(("witness.node_id", "must be at least 1".into()));
        }
        if self.cluster_id.is_empty() {
            return Err(("witness.cluster_id", "is required: the masters' cluster_id".into()));
        }
        if self.peers.iter().any(|peer| peer.id == self.node_id || peer.id == 0) {
            return Err(("witness.peers", "ids must be above 0 and differ from node_id".into()));
        }
        self.raft.validate().map_err(|reason| ("witness.raft", reason))?;
        let mut voters: Vec<u64> = self.peers.iter().map(|peer| peer.id).collect();
        voters.push(self.node_id);
        mfsha_raft::check_voters(&voters).map_err(|reason| ("witness.peers", reason))
    }

    fn raft_config(&self, data_dir: PathBuf) -> RaftConfig {
        let peers = self.peers.iter().map(|peer| (peer.id, peer.addr.clone())).collect();
        let members = Members { peers, learners: Vec::new() };
        RaftConfig::new(self.node_id, &self.cluster_id, data_dir, members, &self.raft, true)
    }
}

/// A running witness node.
pub struct Witness {
    pub handle: Handle<State>,
    thread: JoinHandle<()>,
    shutdown: Shutdown,
}

/// Why the witness could not start.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("witness: cannot listen on {addr} for peers: {cause} (is another node using it?)")]
    Bind { addr: SocketAddr, cause: std::io::Error },
    #[error("witness: cannot start the Raft node: {0}")]
    Start(String),
}

/// Starts the witness node: binds the peer port, opens (or creates) its store, joins the group.
pub async fn start(
    config: &WitnessConfig,
    data_dir: PathBuf,
    key: Option<mfsha_proto::cluster_key::ClusterKey>,
) -> Result<Witness, WitnessError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|cause| WitnessError::Bind { addr: config.listen, cause })?;
    let raft = config.raft_config(data_dir);
    let me = PeerIdentity { node_id: raft.node_id, cluster_id: raft.cluster_id.clone(), key };
    let shutdown = Shutdown::new();
    let transport = TcpTransport::start(me, &raft.peers, shutdown.clone());
    // Follows the replicated address book: members added later may call too.
    let policy = transport.policy(mfsha_raft::MAX_PEER_MESSAGE_BYTES as u64);
    let transport = Box::new(transport);
    let (handle, thread) =
        tokio::task::spawn_blocking(move || mfsha_raft::driver::start::<State>(raft, transport))
            .await
            .map_err(|e| WitnessError::Start(e.to_string()))?
            .map_err(|e| WitnessError::Start(e.to_string()))?;
    let serve = tcp::serve_peers(listener, handle.clone(), policy, shutdown.clone());
    tokio::spawn(serve.instrument(tracing::info_span!("witness", node = config.node_id)));
    tracing::info!(node = config.node_id, listen = %config.listen, "witness node running");
    Ok(Witness { handle, thread, shutdown })
}

impl Witness {
    /// Stops the peer port and the Raft node (its current Ready finishes first).
    pub async fn stop(self) {
        self.shutdown.trigger();
        self.handle.shutdown();
        let thread = self.thread;
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => tracing::info!("witness node stopped"),
            _ => tracing::error!("the witness's Raft thread panicked; see the log above"),
        }
    }
}
