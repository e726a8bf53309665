//! Finding the leader among the masters a tool was given (`-H a,b,c`, or every master of a
//! mount's source `a+b+c`), in any order.
//!
//! Each master is asked for its status (any master answers, leader or follower); the one
//! that says it leads wins. A follower that knows the leader is also asked `WhoLeads`, and
//! the leader's client address it names is tried next, so a list holding only followers (or
//! one name of a virtual IP) still gets to the leader.
//!
//! Every status names the master's `cluster_id`: the first master that answers sets the
//! cluster, and a master of another one (a stale address in the list) is passed over, never
//! taken for the leader.

use anyhow::bail;
use mfsha_proto::client::{ClientOp, ClientReply, ClusterStatus, MasterClient, Request};
use mfsha_proto::net::CONNECT_TIMEOUT;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long one question to one master may take.
const ASK_MS: u64 = 2_000;
/// Pause between rounds while no master leads (an election is running).
const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// The masters `list` names: comma- or `+`-separated `HOST[:PORT]`, default port 9421.
pub fn master_list(list: &str) -> Vec<String> {
    let commas = list.replace(mfsha_mount::FSNAME_MASTER_SEPARATOR, ",");
    mfsha_mount::masters(&commas, mfsha_proto::ports::MASTER_CLIENT)
}

/// A connection to the master that leads, its address and its status. Keeps asking for
/// up to `patience` while no master leads.
pub async fn connect(
    masters: &[String],
    patience: Duration,
) -> anyhow::Result<(MasterClient, String, ClusterStatus)> {
    if masters.is_empty() {
        bail!("no master address given (-H HOST[:PORT][,HOST[:PORT]...])");
    }
    let deadline = Instant::now() + patience;
    loop {
        let said = match round(masters).await {
            Ok(found) => return Ok(found),
            Err(said) => said,
        };
        if Instant::now() + ROUND_PAUSE >= deadline {
            bail!("no leader among the masters {}: {}", masters.join(","), said.join("; "));
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
}

/// One pass over the masters (and the leaders they name); `Err` has what each said.
async fn round(masters: &[String]) -> Result<(MasterClient, String, ClusterStatus), Vec<String>> {
    let mut queue: VecDeque<String> = masters.iter().cloned().collect();
    let mut tried: Vec<String> = Vec::new();
    let mut said = Vec::new();
    // The cluster of the first master that answered, and its address.
    let mut cluster: Option<(String, String)> = None;
    while let Some(addr) = queue.pop_front() {
        if tried.contains(&addr) {
            continue;
        }
        tried.push(addr.clone());
        let client = match MasterClient::connect_within(&addr, CONNECT_TIMEOUT).await {
            Ok(client) => client,
            Err(e) => {
                said.push(e.to_string());
                continue;
            }
        };
        let status = ask_status(&client).await;
        if let Ok(status) = &status {
            if let Err(foreign) = same_cluster(&mut cluster, &addr, &status.cluster_id) {
                said.push(foreign);
                continue;
            }
        }
        match status {
            Ok(status) if status.role == "leader" => return Ok((client, addr, status)),
            Ok(status) => said.push(format!("{addr} is node {} ({})", status.node_id, status.role)),
            Err(e) => {
                said.push(format!("{addr}: {e}"));
                continue;
            }
        }
        if let Some(leader) = who_leads(&client).await {
            queue.push_front(leader);
        }
    }
    Err(said)
}

/// Whether the master at `addr`, of cluster `theirs`, belongs to `cluster` (which the first
/// master to answer sets); `Err` says why not, for the operator.
fn same_cluster(
    cluster: &mut Option<(String, String)>,
    addr: &str,
    theirs: &str,
) -> Result<(), String> {
    let (ours, first) = cluster.get_or_insert_with(|| (theirs.to_string(), addr.to_string()));
    if ours == theirs {
        return Ok(());
    }
    Err(format!(
        "{addr} belongs to cluster {theirs:?}, not to cluster {ours:?} of {first} (the first \
         master that answered): not using it; remove it from the master list"
    ))
}

/// The status of the master behind `client`.
pub async fn ask_status(client: &MasterClient) -> anyhow::Result<ClusterStatus> {
    let request = Request::anonymous(ClientOp::Status);
    match client.call_timeout(request, ASK_MS).await? {
        Ok(ClientReply::Status(status)) => Ok(*status),
        Ok(other) => bail!("answered a status request with {other:?}"),
        Err(status) => bail!("refused the status request: {status}"),
    }
}

/// The leader's client address as the master behind `client` knows it.
async fn who_leads(client: &MasterClient) -> Option<String> {
    let request = Request::anonymous(ClientOp::WhoLeads);
    match client.call_timeout(request, ASK_MS).await {
        Ok(Ok(ClientReply::Leader(hint))) => hint.client,
        _ => None,
    }
}

/// Opens a session for a tool on `client` (`token` 0: a one-shot session that cannot be
/// resumed). With `MFSHA_PASSWORD` set, the export's password is proved by challenge–response
/// (see `mfsha_proto::auth`); it is never sent.
pub(crate) async fn tool_hello(
    client: &MasterClient,
    token: u64,
    client_info: String,
    limit_ms: u64,
) -> anyhow::Result<mfsha_proto::types::Reply<ClientReply>> {
    let subdir = "/".to_string();
    let proof = match std::env::var("MFSHA_PASSWORD") {
        Ok(password) if !password.is_empty() => {
            let op = ClientOp::Challenge { subdir: subdir.clone() };
            let request = Request::anonymous(op);
            match client.call_timeout(request, limit_ms).await? {
                Ok(ClientReply::Challenge { nonce, md5 }) => {
                    let key = mfsha_proto::auth::password_key(&password, md5);
                    let info = &client_info;
                    Some(mfsha_proto::auth::hello_proof(&key, &nonce, 0, token, &subdir, info))
                }
                Err(status) => return Ok(Err(status)),
                Ok(other) => bail!("the master answered Challenge with {other:?}"),
            }
        }
        _ => None,
    };
    let version = mfsha_proto::client::VERSION;
    let hello = ClientOp::Hello { session: None, client_info, subdir, proof, token, version };
    let request = Request::anonymous(hello);
    Ok(client.call_timeout(request, limit_ms).await?)
}

/// What to say when a master refuses a tool's session for its exports.
pub(crate) fn exports_hint(status: mfsha_proto::types::Status) -> &'static str {
    use mfsha_proto::types::Status;
    match status {
        Status::Access => {
            ": the master's exports file does not admit this host (a line for its address, \
             with maproot=0 for root-only commands)"
        }
        Status::BadPassword => ": the export needs a password: set MFSHA_PASSWORD",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_master_to_answer_sets_the_cluster() {
        let mut cluster = None;
        assert_eq!(same_cluster(&mut cluster, "a:1", "c1"), Ok(()));
        assert_eq!(same_cluster(&mut cluster, "b:1", "c1"), Ok(()));
        let refused = same_cluster(&mut cluster, "x:1", "c2").unwrap_err();
        for part in ["x:1", "\"c2\"", "\"c1\"", "a:1"] {
            assert!(refused.contains(part), "{refused:?} should name {part}");
        }
    }

    #[test]
    fn lists_from_flags_and_from_mount_sources_name_the_same_masters() {
        assert_eq!(master_list("a,b:7000"), vec!["a:9421", "b:7000"]);
        assert_eq!(master_list("a:9421+b:7000"), vec!["a:9421", "b:7000"]);
        assert_eq!(master_list("127.0.0.1:9421"), vec!["127.0.0.1:9421"]);
    }
}
