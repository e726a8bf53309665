//! Finding the leader among the masters a tool was given (`-H a,b,c`, or every master of a
//! mount's source `a+b+c`), in any order.
//!
//! Each master is asked for its status (any master answers, leader or follower); the one
//! that says it leads wins. A follower that knows the leader is also asked `WhoLeads`, and
//! the leader's client address it names is tried next, so a list holding only followers (or
//! one name of a virtual IP) still gets to the leader.

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
        match ask_status(&client).await {
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

/// The status of the master behind `client`.
pub async fn ask_status(client: &MasterClient) -> anyhow::Result<ClusterStatus> {
    let request = Request { session: 0, seq: 0, uid: 0, gid: 0, op: ClientOp::Status };
    match client.call_timeout(request, ASK_MS).await? {
        Ok(ClientReply::Status(status)) => Ok(status),
        Ok(other) => bail!("answered a status request with {other:?}"),
        Err(status) => bail!("refused the status request: {status}"),
    }
}

/// The leader's client address as the master behind `client` knows it.
async fn who_leads(client: &MasterClient) -> Option<String> {
    let request = Request { session: 0, seq: 0, uid: 0, gid: 0, op: ClientOp::WhoLeads };
    match client.call_timeout(request, ASK_MS).await {
        Ok(Ok(ClientReply::Leader(hint))) => hint.client,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_from_flags_and_from_mount_sources_name_the_same_masters() {
        assert_eq!(master_list("a,b:7000"), vec!["a:9421", "b:7000"]);
        assert_eq!(master_list("a:9421+b:7000"), vec!["a:9421", "b:7000"]);
        assert_eq!(master_list("127.0.0.1:9421"), vec!["127.0.0.1:9421"]);
    }
}
