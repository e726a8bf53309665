//! `mfsha status [-H host:port[,host:port...]] [PATH] [--json]`: every node of the master
//! group on one line each, then the leader's view of the cluster (a follower's if none leads).
//!
//! Every listed master is asked at once, each within [`ASK_LIMIT`], so a dead or hung node is
//! shown as unreachable instead of holding up the command. A leader named by a hint but not
//! listed is asked too, so `mfsha status` with one address still finds the whole group. The
//! witness serves no client: it appears from the leader's view of its members.

use anyhow::Context;
use mfsha_proto::client::{
    ClientOp, ClientReply, ClusterStatus, MasterClient, MemberKind, Request, VipState,
};
use mfsha_proto::types::LeaderHint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// How long one master may take to answer (connect included) before it counts as unreachable.
pub const ASK_LIMIT: Duration = Duration::from_secs(1);

/// Asks the master(s) at `masters` and prints every node and the cluster (JSON with `json`).
pub async fn run(masters: &str, json: bool, which: crate::views::Which) -> anyhow::Result<()> {
    let survey = survey(&crate::leader::master_list(masters)).await;
    let Some((master, status)) = survey.detail() else {
        anyhow::bail!("no master answered the status request: {}", survey.failures());
    };
    if which.any() {
        match json {
            true => println!("{}", crate::views::json(status, which)?),
            false => print!("{}", crate::views::text(status, which)),
        }
        return Ok(());
    }
    if json {
        let report = JsonReport {
            status: status.clone(),
            answered_by: master.to_string(),
            nodes: survey.nodes(),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", format_nodes(&survey));
        println!();
        print!("{}", format_status(master, status));
    }
    Ok(())
}

/// `--json`: the detailed status (as before, so scripts keep working) plus the node table.
#[derive(Serialize)]
struct JsonReport {
    #[serde(flatten)]
    status: ClusterStatus,
    /// The master whose status the top-level fields are.
    answered_by: String,
    nodes: Vec<NodeReport>,
}

/// What one master said, or why it said nothing.
#[derive(Debug, Clone)]
pub struct Answer {
    pub addr: String,
    pub said: Result<(ClusterStatus, Option<LeaderHint>), String>,
}

/// Every answer of one round of questions.
#[derive(Debug, Clone, Default)]
pub struct Survey {
    pub answers: Vec<Answer>,
}

/// One node of the group, as `mfsha status` and `mfsha member list` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// `None` for an address that did not answer and that no leader names.
    pub id: Option<u64>,
    /// "master", "witness", "learner" (from the leader's view), when known.
    pub kind: Option<MemberKind>,
    /// Its client address (asked, or from the leader's configuration).
    pub client: Option<String>,
    /// Its own answer: "leader", "follower", ...; `None` when it was not asked or did not answer.
    pub role: Option<String>,
    pub term: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The leader it knows; `Some(0)` when it knows none.
    pub leader_id: Option<u64>,
    /// Entries the leader has that it does not (leader's view).
    pub lag: Option<u64>,
    /// ms since the leader last heard from it (leader's view).
    pub last_contact_ms: Option<u64>,
    /// Why it did not answer.
    pub unreachable: Option<String>,
}

impl Survey {
    /// The answer of the node that says it leads, if any.
    pub fn leader(&self) -> Option<(&str, &ClusterStatus, Option<&LeaderHint>)> {
        self.answered().find(|(_, s, _)| s.role == "leader")
    }

    fn answered(&self) -> impl Iterator<Item = (&str, &ClusterStatus, Option<&LeaderHint>)> {
        self.answers.iter().filter_map(|a| match &a.said {
            Ok((status, hint)) => Some((a.addr.as_str(), status, hint.as_ref())),
            Err(_) => None,
        })
    }

    /// The status to show in detail: the leader's, else the first that answered.
    pub fn detail(&self) -> Option<(&str, &ClusterStatus)> {
        let (addr, status, _) = self.leader().or_else(|| self.answered().next())?;
        Some((addr, status))
    }

    /// The hint naming the leader's addresses: the leader's own, else any that names one.
    pub fn leader_hint(&self) -> Option<&LeaderHint> {
        let own = self.leader().and_then(|(_, _, hint)| hint);
        own.or_else(|| self.answered().filter_map(|(_, _, h)| h).find(|h| h.leader_id != 0))
    }

    fn failures(&self) -> String {
        let failed = self.answers.iter().filter_map(|a| a.said.as_ref().err());
        failed.cloned().collect::<Vec<_>>().join("; ")
    }

    /// One line per node, by id; unreachable addresses nobody names come last.
    pub fn nodes(&self) -> Vec<NodeReport> {
        let mut by_id: BTreeMap<u64, NodeReport> = BTreeMap::new();
        let leader = self.leader().map(|(_, s, _)| s);
        let last_index = leader.and_then(|l| l.members.iter().find(|m| m.id == l.node_id));
        for m in leader.map(|l| l.members.as_slice()).unwrap_or_default() {
            let node = by_id.entry(m.id).or_default();
            node.id = Some(m.id);
            node.kind = Some(m.kind);
            node.client = m.client.clone();
            node.lag = last_index.map(|own| own.matched.saturating_sub(m.matched));
            node.last_contact_ms =
                m.last_contact_ms.filter(|_| Some(m.id) != leader.map(|l| l.node_id));
        }
        let mut unknown = Vec::new();
        for answer in &self.answers {
            match &answer.said {
                Ok((s, _)) => {
                    let node = by_id.entry(s.node_id).or_default();
                    node.id = Some(s.node_id);
                    node.client.get_or_insert_with(|| answer.addr.clone());
                    node.role = Some(s.role.clone());
                    node.term = Some(s.term);
                    node.commit_index = Some(s.commit_index);
                    node.applied_index = Some(s.applied_index);
                    node.leader_id = Some(s.leader_id);
                }
                Err(why) => {
                    let named =
                        by_id.values_mut().find(|n| n.client.as_deref() == Some(&answer.addr));
                    match named {
                        Some(node) if node.role.is_none() => node.unreachable = Some(why.clone()),
                        Some(_) => {}
                        None => unknown.push(NodeReport {
                            client: Some(answer.addr.clone()),
                            unreachable: Some(why.clone()),
                            ..NodeReport::default()
                        }),
                    }
                }
            }
        }
        by_id.into_values().chain(unknown).collect()
    }
}

/// Asks every master in `list` at once, then the masters they name that were not listed:
/// the leader a hint names, and the members the leader knows a client address of.
pub async fn survey(list: &[String]) -> Survey {
    let mut survey = Survey { answers: ask_all(list).await };
    let asked: Vec<String> = survey.answers.iter().map(|a| a.addr.clone()).collect();
    let hinted = survey.leader_hint().and_then(|hint| hint.client.clone());
    let members = survey.leader().map(|(_, s, _)| s.members.clone()).unwrap_or_default();
    let mut more: Vec<String> = Vec::new();
    for addr in hinted.into_iter().chain(members.into_iter().filter_map(|m| m.client)) {
        if !asked.contains(&addr) && !more.contains(&addr) {
            more.push(addr);
        }
    }
    if !more.is_empty() {
        survey.answers.extend(ask_all(&more).await);
    }
    survey
}

/// Every master of `list` asked in its own task, answers in the order of `list`.
async fn ask_all(list: &[String]) -> Vec<Answer> {
    let mut asks = tokio::task::JoinSet::new();
    for (i, addr) in list.iter().cloned().enumerate() {
        asks.spawn(async move {
            let said = match tokio::time::timeout(ASK_LIMIT, ask(&addr)).await {
                Ok(Ok(found)) => Ok(found),
                Ok(Err(e)) => Err(format!("{addr}: {e:#}")),
                Err(_) => Err(format!("{addr}: no answer within {ASK_LIMIT:?}")),
            };
            (i, Answer { addr, said })
        });
    }
    let mut answers: Vec<(usize, Answer)> = Vec::new();
    while let Some(joined) = asks.join_next().await {
        match joined {
            Ok(answer) => answers.push(answer),
            // Only a panic in `ask` gets here; the others' answers still count.
            Err(e) => tracing::error!(error = %e, "a status question failed"),
        }
    }
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

/// One master's status and whom it names as leader (asked together on one connection).
async fn ask(addr: &str) -> anyhow::Result<(ClusterStatus, Option<LeaderHint>)> {
    let client = MasterClient::connect_within(addr, ASK_LIMIT)
        .await
        .context("cannot reach the master (is it running?)")?;
    let ms = ASK_LIMIT.as_millis() as u64;
    let status = crate::leader::ask_status(&client);
    let who = Request::anonymous(ClientOp::WhoLeads);
    let (status, hint) = tokio::join!(status, client.call_timeout(who, ms));
    let hint = match hint {
        Ok(Ok(ClientReply::Leader(hint))) => Some(hint),
        _ => None,
    };
    Ok((status?, hint))
}

/// The node table, then who leads and where.
pub fn format_nodes(survey: &Survey) -> String {
    let mut out = String::new();
    let dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let _ = writeln!(
        out,
        "{:<5} {:<8} {:<13} {:<6} {:<8} {:<8} {:<6} {:<7} {:<9} address",
        "node", "kind", "role", "term", "commit", "applied", "lag", "leader", "contact"
    );
    let nodes = survey.nodes();
    for n in &nodes {
        let role = match (&n.role, &n.unreachable) {
            (Some(role), _) => role.clone(),
            (None, Some(_)) => "unreachable".into(),
            (None, None) => "-".into(),
        };
        let leader = match n.leader_id {
            Some(0) => "none".to_string(),
            other => dash(other),
        };
        let contact = n.last_contact_ms.map_or("-".into(), |ms| format!("{ms} ms"));
        let address = match (&n.client, n.kind) {
            (Some(addr), _) => addr.clone(),
            (None, Some(MemberKind::Witness)) => "(no client port)".into(),
            (None, _) => "-".into(),
        };
        let kind = n.kind.map_or("-", MemberKind::as_str);
        let _ = writeln!(
            out,
            "{:<5} {:<8} {:<13} {:<6} {:<8} {:<8} {:<6} {:<7} {:<9} {address}",
            dash(n.id),
            kind,
            role,
            dash(n.term),
            dash(n.commit_index),
            dash(n.applied_index),
            dash(n.lag),
            leader,
            contact
        );
        if let Some(why) = &n.unreachable {
            let _ = writeln!(out, "      unreachable: {why}");
        }
    }
    let _ = writeln!(out, "{}", leader_line(survey));
    if let Some(line) = vip_line(survey, now_unix_ms()) {
        let _ = writeln!(out, "{line}");
    }
    if let Some(w) = nodes.iter().find(|n| n.kind == Some(MemberKind::Witness)) {
        let _ = writeln!(out, "witness: node {}", dash(w.id));
    }
    out
}

fn leader_line(survey: &Survey) -> String {
    let Some(hint) = survey.leader_hint() else {
        return "leader: none known (an election may be running, or too few nodes are up)".into();
    };
    let show = |a: &Option<String>| a.clone().unwrap_or_else(|| "?".into());
    let confirmed =
        if survey.leader().is_some() { "" } else { " (not confirmed: it did not answer)" };
    format!(
        "leader: node {} in term {}{confirmed}: client {}, chunkserver {}, logger {}",
        hint.leader_id,
        hint.term,
        show(&hint.client),
        show(&hint.chunkserver),
        show(&hint.logger)
    )
}

/// The human-readable report of one master's status.
/// Who holds the VIP, since when and when it was last announced, from every master that
/// answered; `None` when no master has a `vip:` section.
pub fn vip_line(survey: &Survey, now_ms: u64) -> Option<String> {
    let mut vips: Vec<(u64, &VipState)> = survey
        .answered()
        .filter_map(|(_, s, _)| s.vip.as_deref().map(|v| (s.node_id, v)))
        .collect();
    // A master asked twice (by the VIP's name and by its own address) is one holder.
    vips.sort_by_key(|(id, _)| *id);
    vips.dedup_by_key(|(id, _)| *id);
    let (_, first) = vips.first()?;
    let holders: Vec<String> = vips
        .iter()
        .filter(|(_, v)| v.held)
        .map(|(id, v)| {
            let announced = v
                .last_announcement_unix_ms
                .map_or("never announced".into(), |t| format!("last announced {}", ago(now_ms, t)));
            format!("node {id} since {}, {announced}", ago(now_ms, v.since_unix_ms))
        })
        .collect();
    let held = match holders.len() {
        0 => "held by no master".to_string(),
        1 => format!("held by {}", holders[0]),
        _ => format!("HELD BY MORE THAN ONE MASTER: {}", holders.join("; ")),
    };
    let errors =
        vips.iter().filter_map(|(id, v)| v.last_error.as_ref().map(|e| format!("node {id}: {e}")));
    let errors: Vec<String> = errors.collect();
    let errors =
        if errors.is_empty() { String::new() } else { format!(" (errors: {})", errors.join("; ")) };
    Some(format!("vip {} on {}: {held}{errors}", first.address, first.interface))
}

/// `unix_ms` as UTC time of day with how long ago it was.
fn ago(now_ms: u64, unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let (h, m, s) = ((seconds / 3600) % 24, (seconds / 60) % 60, seconds % 60);
    let ago = now_ms.saturating_sub(unix_ms) as f64 / 1000.0;
    format!("{h:02}:{m:02}:{s:02}.{:03} UTC ({ago:.1} s ago)", unix_ms % 1000)
}

fn now_unix_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_millis() as u64)
}

pub fn format_status(master: &str, s: &ClusterStatus) -> String {
    let mut out = String::new();
    let leader = if s.leader_id == 0 { "none".to_string() } else { s.leader_id.to_string() };
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "master {master}: node {} is {}, leader {leader}, term {}",
        s.node_id, s.role, s.term
    );
    let _ = writeln!(out, "cluster: {}", s.cluster_id);
    let _ =
        writeln!(out, "raft: commit index {}, applied index {}", s.commit_index, s.applied_index);
    let _ = writeln!(
        out,
        "metadata: {} inodes, {} directories, {} files, {} chunks, {} in trash, {} reserved \
         (unlinked, still open)",
        s.inodes, s.directories, s.files, s.chunks, s.trash_inodes, s.sustained_inodes
    );
    let _ = writeln!(
        out,
        "chunk health: {} missing, {} endangered, {} undergoal, {} stable, {} overgoal",
        s.chunks_missing,
        s.chunks_endangered,
        s.chunks_undergoal,
        s.chunks_stable,
        s.chunks_overgoal
    );
    for work in &s.long_work {
        let _ = writeln!(out, "under way: {}", mfsha_proto::views::long_work_line(work));
    }
    let _ = writeln!(out, "chunkservers: {}", s.chunkservers.len());
    for cs in &s.chunkservers {
        let _ = writeln!(
            out,
            "  {}  {} chunks, {} of {} bytes used, {} disks{}",
            cs.addr,
            cs.chunks,
            cs.used_bytes,
            cs.total_bytes,
            cs.disks.len(),
            labels(&cs.labels)
        );
    }
    let _ = writeln!(out, "clients: {}", s.clients.len());
    for c in &s.clients {
        let _ = writeln!(
            out,
            "  session {}  {}  {}  {} open files",
            c.session, c.peer, c.info, c.open_files
        );
    }
    let _ = writeln!(out, "loggers: {}", s.loggers.len());
    for logger in &s.loggers {
        let _ = writeln!(out, "  {logger}");
    }
    let _ = writeln!(
        out,
        "peers: {}",
        if s.peers.is_empty() { "none".into() } else { s.peers.join(", ") }
    );
    out
}

fn labels(labels: &[String]) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!(", labels {}", labels.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfsha_proto::client::{ChunkserverStatus, ClientStatus, MemberStatus};

    #[test]
    fn the_vip_line_names_the_holder_since_when_and_the_last_announcement() {
        let vip = |held| VipState {
            address: "10.0.0.100/24".into(),
            interface: "eth0".into(),
            held,
            since_unix_ms: 3_600_000 + 1500,
            last_announcement_unix_ms: held.then_some(3_600_000 + 2500),
            announcements: 5,
            readded: 0,
            last_error: None,
        };
        let answer = |id, held| Answer {
            addr: format!("m{id}:9421"),
            said: Ok((
                ClusterStatus { node_id: id, vip: Some(Box::new(vip(held))), ..Default::default() },
                None,
            )),
        };
        let survey = Survey { answers: vec![answer(1, false), answer(2, true)] };
        let line = vip_line(&survey, 3_600_000 + 4500).unwrap();
        assert_eq!(line, "vip 10.0.0.100/24 on eth0: held by node 2 since 01:00:01.500 UTC (3.0 s ago), last announced 01:00:02.500 UTC (2.0 s ago)");
        let nobody = Survey { answers: vec![answer(1, false)] };
        assert!(vip_line(&nobody, 0).unwrap().contains("held by no master"));
        let two = Survey { answers: vec![answer(1, true), answer(2, true)] };
        assert!(vip_line(&two, 0).unwrap().contains("MORE THAN ONE"));
        // Node 2 asked through the VIP and through its own address: one holder.
        let mut twice = answer(2, true);
        twice.addr = "mfsmaster:9421".into();
        let same = Survey { answers: vec![answer(1, false), answer(2, true), twice] };
        let line = vip_line(&same, 3_600_000 + 4500).unwrap();
        assert!(line.contains("held by node 2") && !line.contains("MORE THAN ONE"), "{line}");
        assert_eq!(vip_line(&Survey::default(), 0), None, "no vip configured");
    }

    #[test]
    fn human_report_names_every_figure() {
        let status = ClusterStatus {
            node_id: 2,
            role: "leader".into(),
            leader_id: 2,
            term: 7,
            commit_index: 1234,
            applied_index: 1233,
            inodes: 10,
            directories: 3,
            files: 7,
            chunks: 5,
            chunkservers: vec![ChunkserverStatus {
                addr: "10.0.0.5:9422".into(),
                ..Default::default()
            }],
            clients: vec![ClientStatus {
                session: 99,
                peer: "10.0.0.9:4000".into(),
                info: "h:/mnt".into(),
                open_files: 1,
            }],
            loggers: vec!["10.0.0.7:4100".into()],
            cluster_id: "prod".into(),
            ..Default::default()
        };
        let text = format_status("m:9421", &status);
        for expected in [
            "node 2 is leader",
            "cluster: prod",
            "term 7",
            "commit index 1234",
            "applied index 1233",
            "10 inodes",
            "3 directories",
            "7 files",
            "5 chunks",
            "chunkservers: 1",
            "10.0.0.5:9422",
            "clients: 1",
            "session 99",
            "loggers: 1",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    fn member(id: u64, kind: MemberKind, matched: u64, client: Option<&str>) -> MemberStatus {
        let client = client.map(String::from);
        MemberStatus { id, kind, matched, last_contact_ms: Some(40), client }
    }

    #[test]
    fn the_node_table_joins_answers_the_leaders_view_and_the_unreachable() {
        let leader = ClusterStatus {
            node_id: 1,
            role: "leader".into(),
            leader_id: 1,
            term: 4,
            commit_index: 100,
            applied_index: 100,
            members: vec![
                member(1, MemberKind::Master, 100, Some("a:1")),
                member(2, MemberKind::Master, 90, Some("b:1")),
                member(3, MemberKind::Witness, 100, None),
            ],
            ..Default::default()
        };
        let hint =
            LeaderHint { term: 4, leader_id: 1, client: Some("a:1".into()), ..Default::default() };
        let survey = Survey {
            answers: vec![
                Answer { addr: "a:1".into(), said: Ok((leader, Some(hint))) },
                Answer { addr: "b:1".into(), said: Err("b:1: connection refused".into()) },
                Answer { addr: "c:1".into(), said: Err("c:1: no answer".into()) },
            ],
        };
        let nodes = survey.nodes();
        assert_eq!(nodes.len(), 4, "{nodes:?}");
        assert_eq!((nodes[0].role.as_deref(), nodes[0].lag), (Some("leader"), Some(0)));
        assert_eq!(nodes[1].lag, Some(10));
        assert!(nodes[1].unreachable.is_some(), "node 2 did not answer: {:?}", nodes[1]);
        assert_eq!(nodes[2].kind, Some(MemberKind::Witness));
        assert_eq!((nodes[3].id, nodes[3].client.as_deref()), (None, Some("c:1")));
        let text = format_nodes(&survey);
        for expected in
            ["unreachable", "witness: node 3", "leader: node 1 in term 4", "(no client port)"]
        {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn without_a_leader_the_table_says_so() {
        let follower =
            ClusterStatus { node_id: 2, role: "follower".into(), term: 5, ..Default::default() };
        let survey =
            Survey { answers: vec![Answer { addr: "b:1".into(), said: Ok((follower, None)) }] };
        let text = format_nodes(&survey);
        assert!(text.contains("leader: none known"), "{text}");
        assert!(text.contains("none"), "{text}");
    }
}
