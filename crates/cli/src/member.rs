//! `mfsha member list` (the node table of `mfsha status`), `mfsha member transfer-leader ID`
//! (ask the leader to hand leadership to master ID, then wait until ID says it leads), and
//! `mfsha member add|remove` (one membership change, then wait until a new member is current).

use crate::status::{self, Survey};
use anyhow::{bail, Context};
use mfsha_proto::client::{ClientOp, ClientReply, MemberChangeRequest, MemberKind, Request};
use mfsha_proto::types::Status;
use std::time::{Duration, Instant};

/// How long the new leader may take to say it leads after the last ask (raft-rs gives up a
/// transfer after an election timeout, well below this).
const SWITCH_LIMIT: Duration = Duration::from_secs(5);
/// How long one ask may take before it is repeated, and how many asks at most.
const ATTEMPT_LIMIT: Duration = Duration::from_millis(1500);
const ATTEMPTS: u32 = 3;
/// How long to look for the current leader.
const FIND_LEADER: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

/// Prints one line per node of the group (JSON with `json`).
pub async fn list(masters: &str, json: bool) -> anyhow::Result<()> {
    let survey = status::survey(&crate::leader::master_list(masters)).await;
    if survey.answers.iter().all(|a| a.said.is_err()) {
        bail!("no master at {masters} answered (is the group running? give every master with -H)");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&survey.nodes())?);
    } else {
        print!("{}", status::format_nodes(&survey));
    }
    Ok(())
}

/// Hands leadership to master `to` and waits until it leads. raft-rs abandons a transfer
/// whose target does not win at once (a busy machine, an append still in flight): when the
/// old leader still leads in its term after [`ATTEMPT_LIMIT`], the transfer is asked again,
/// up to [`ATTEMPTS`] times in all.
pub async fn transfer_leader(masters: &str, to: u64) -> anyhow::Result<()> {
    let list = crate::leader::master_list(masters);
    let (client, addr, leader) = crate::leader::connect(&list, FIND_LEADER)
        .await
        .with_context(|| format!("cannot find the leader among {masters}"))?;
    if leader.node_id == to {
        println!("node {to} already leads (term {})", leader.term);
        return Ok(());
    }
    check_target(&leader.members, to)?;
    let started = Instant::now();
    for attempt in 1..=ATTEMPTS {
        ask_transfer(&client, &addr, to).await?;
        let limit = if attempt == ATTEMPTS { SWITCH_LIMIT } else { ATTEMPT_LIMIT };
        match wait_for_leader(&list, to, leader.term, limit).await {
            Ok(term) => {
                let took = started.elapsed();
                println!(
                    "node {to} leads now (term {term}); the switch took {} ms",
                    took.as_millis()
                );
                return Ok(());
            }
            Err(_)
                if attempt < ATTEMPTS && still_leads(&list, leader.node_id, leader.term).await =>
            {
                eprintln!(
                    "mfsha: node {to} did not take over within {} ms and node {} still leads \
                     term {}: asking again ({}/{ATTEMPTS})",
                    ATTEMPT_LIMIT.as_millis(),
                    leader.node_id,
                    leader.term,
                    attempt + 1
                );
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the last attempt returns")
}

/// Asks the leader at `addr` (connected as `client`) to hand leadership to `to`.
async fn ask_transfer(
    client: &mfsha_proto::client::MasterClient,
    addr: &str,
    to: u64,
) -> anyhow::Result<()> {
    let request = Request::anonymous(ClientOp::TransferLeader { to });
    let limit = status::ASK_LIMIT.as_millis() as u64;
    let mut reply = client.call_timeout(request.clone(), limit).await;
    if let Ok(Err(Status::Access)) = reply {
        // Exports in force: the connection must open a session first (its export decides).
        admitted(client, addr, limit).await?;
        reply = client.call_timeout(request, limit).await;
    }
    let reply = match reply {
        Ok(reply) => reply,
        // A leader with a VIP may release it (and step down, closing this connection) before
        // its answer arrives: whether the transfer happened is what the wait checks.
        Err(error) => {
            eprintln!("mfsha: no answer from {addr} ({error}); checking whether node {to} leads");
            Ok(ClientReply::Unit)
        }
    };
    match reply {
        Ok(ClientReply::Unit) => Ok(()),
        Ok(other) => bail!("the leader at {addr} answered the transfer with {other:?}"),
        Err(Status::Perm) => bail!("the leader refused: only root may transfer leadership"),
        Err(Status::NotLeader) => {
            bail!("{addr} stopped leading before the transfer started; run the command again")
        }
        Err(why) => bail!("the leader at {addr} refused to hand leadership to node {to}: {why}"),
    }
}

/// Whether node `id` still says it leads in `term` (a transfer abandoned, nothing else).
async fn still_leads(list: &[String], id: u64, term: u64) -> bool {
    let survey = status::survey(list).await;
    survey.answers.iter().any(|a| {
        a.said.as_ref().is_ok_and(|(s, _)| s.node_id == id && s.role == "leader" && s.term == term)
    })
}

/// `to` must be a master of the group: the witness would hand leadership straight back.
fn check_target(members: &[mfsha_proto::client::MemberStatus], to: u64) -> anyhow::Result<()> {
    let ids: Vec<String> = members.iter().map(|m| m.id.to_string()).collect();
    match members.iter().find(|m| m.id == to) {
        None => bail!("node {to} is not a member of the group (members: {})", ids.join(", ")),
        Some(m) if m.kind != MemberKind::Master => bail!(
            "node {to} is the group's {}: it never stays leader; name a master",
            m.kind.as_str()
        ),
        Some(_) => Ok(()),
    }
}

/// Polls every master (and the ones the leader's view names) until node `to` says it leads
/// in a term after `from_term`; returns that term.
async fn wait_for_leader(
    list: &[String],
    to: u64,
    from_term: u64,
    limit: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + limit;
    let mut asked: Vec<String> = list.to_vec();
    loop {
        let survey = status::survey(&asked).await;
        if let Some(term) = leads(&survey, to, from_term) {
            return Ok(term);
        }
        for node in survey.nodes() {
            if let Some(client) = node.client.filter(|c| !asked.contains(c)) {
                asked.push(client);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "node {to} did not take over within {limit:?} (raft-rs gives a transfer up \
                 when the target does not win at once: is node {to} up and caught up? see \
                 `mfsha member list`):\n{}",
                status::format_nodes(&survey)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The term in which node `to` says it leads, if it does in a term after `from_term`.
fn leads(survey: &Survey, to: u64, from_term: u64) -> Option<u64> {
    survey.answers.iter().find_map(|a| {
        let (status, _) = a.said.as_ref().ok()?;
        let new = status.node_id == to && status.role == "leader" && status.term > from_term;
        new.then_some(status.term)
    })
}

/// A member to add, as `mfsha member add` names it.
pub struct NewMember {
    pub id: u64,
    pub learner: bool,
    pub peer: String,
    pub client: Option<String>,
    pub chunkserver: Option<String>,
    pub logger: Option<String>,
    /// How long to wait for the new member to catch up with the leader.
    pub wait: Duration,
}

/// Adds a member (it must be running with an empty data directory and this group's
/// `cluster_id`), then waits until it holds the leader's log.
pub async fn add(masters: &str, new: NewMember) -> anyhow::Result<()> {
    let what = match (new.learner, new.client.is_some()) {
        (true, _) => "learner (non-voting)",
        (false, true) => "master (voter)",
        (false, false) => "witness (voter without clients)",
    };
    let request = MemberChangeRequest::Add {
        id: new.id,
        voter: !new.learner,
        peer: new.peer.clone(),
        client: new.client,
        chunkserver: new.chunkserver,
        logger: new.logger,
    };
    let list = crate::leader::master_list(masters);
    let target = change(&list, new.id, request).await?;
    println!(
        "node {} added as a {what}, reached at {}; waiting for it to catch up",
        new.id, new.peer
    );
    let started = Instant::now();
    let deadline = started + new.wait;
    loop {
        let survey = status::survey(&list).await;
        let leader = survey.leader().map(|(_, s, _)| s.clone());
        let matched = leader.as_ref().and_then(|l| l.members.iter().find(|m| m.id == new.id));
        if let (Some(leader), Some(member)) = (&leader, matched) {
            if member.matched >= target {
                let took = started.elapsed().as_millis();
                println!(
                    "node {} is current: it holds the log up to index {} (leader at {}; took {took} ms)",
                    new.id, member.matched, leader.commit_index
                );
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "node {} is a member but did not catch up within {:?} (is it running, with an \
                 empty data directory and this cluster_id, and can the leader reach {}?):\n{}",
                new.id,
                new.wait,
                new.peer,
                status::format_nodes(&survey)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Removes member `id` from the group; it stops once it has applied its removal.
pub async fn remove(masters: &str, id: u64) -> anyhow::Result<()> {
    let list = crate::leader::master_list(masters);
    change(&list, id, MemberChangeRequest::Remove { id }).await?;
    println!(
        "node {id} removed from the group; it stops by itself (move its data directory aside \
         before it joins again)"
    );
    Ok(())
}

/// Sends one change to the leader; returns the leader's commit index once it is applied.
async fn change(list: &[String], id: u64, request: MemberChangeRequest) -> anyhow::Result<u64> {
    let masters = list.join(",");
    let (client, addr, leader) = crate::leader::connect(list, FIND_LEADER)
        .await
        .with_context(|| format!("cannot find the leader among {masters}"))?;
    let removing = matches!(request, MemberChangeRequest::Remove { .. });
    if removing && leader.node_id == id {
        bail!(
            "node {id} leads: hand leadership to another master first (`mfsha member \
             transfer-leader`), then remove it"
        );
    }
    let op = ClientOp::ChangeMember { change: request };
    let request = Request::anonymous(op);
    // `Busy` is transient (the previous change is not in every member's log yet): ask again
    // for a while before saying so.
    let busy_until = Instant::now() + BUSY_PATIENCE;
    let mut hello_done = false;
    let reply = loop {
        let reply = client.call_timeout(request.clone(), CHANGE_LIMIT.as_millis() as u64).await;
        let reply = reply.with_context(|| format!("no answer from the leader at {addr}"))?;
        if reply == Err(Status::Access) && !hello_done {
            // Exports in force: the connection must open a session first.
            admitted(&client, &addr, CHANGE_LIMIT.as_millis() as u64).await?;
            hello_done = true;
            continue;
        }
        if reply != Err(Status::Busy) || Instant::now() >= busy_until {
            break reply;
        }
        tokio::time::sleep(POLL).await;
    };
    let ids: Vec<String> = leader.members.iter().map(|m| m.id.to_string()).collect();
    let ids = ids.join(", ");
    match reply {
        Ok(ClientReply::Unit) => {}
        Ok(other) => bail!("the leader at {addr} answered the change with {other:?}"),
        Err(Status::Perm) => bail!("the leader refused: only root may change the membership"),
        Err(Status::Busy) => bail!(
            "the leader at {addr} is still applying the previous membership change; run the \
             command again in a moment"
        ),
        Err(Status::Exists) => bail!("node {id} is already a member (members: {ids})"),
        Err(Status::NotFound) => bail!("node {id} is not a member (members: {ids})"),
        Err(Status::Invalid) => bail!(
            "the leader at {addr} refused the change: a group must not be left with exactly two \
             voters (add a voter first, or remove two), and the leader cannot remove itself \
             (members: {ids})"
        ),
        Err(Status::NotLeader) => {
            bail!("{addr} stopped leading before the change was made; run the command again")
        }
        Err(why) => bail!("the leader at {addr} did not make the change: {why}"),
    }
    let after = crate::leader::connect(list, FIND_LEADER).await;
    Ok(after.map_or(leader.commit_index, |(_, _, status)| status.commit_index))
}

/// How long to keep asking while the leader answers `Busy`.
const BUSY_PATIENCE: Duration = Duration::from_secs(5);
/// How long the leader may take to commit and apply a membership change.
const CHANGE_LIMIT: Duration = Duration::from_secs(10);

/// Opens a one-shot session on `client`, so that a master with exports lets its root-only
/// requests through (as the export's `maproot` maps root).
async fn admitted(
    client: &mfsha_proto::client::MasterClient,
    addr: &str,
    limit_ms: u64,
) -> anyhow::Result<()> {
    let info = format!("mfsha member (pid {})", std::process::id());
    match crate::leader::tool_hello(client, 0, info, limit_ms).await? {
        Ok(ClientReply::Session { .. }) => Ok(()),
        Err(status) => {
            bail!(
                "the leader at {addr} refused a session: {status}{}",
                crate::leader::exports_hint(status)
            )
        }
        Ok(other) => bail!("the leader at {addr} answered Hello with {other:?}"),
    }
}
