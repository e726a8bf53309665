//! `mfsha member add|remove` on the leader: one change at a time, checked against the group
//! as the leader tracks it, with the address book's update carried in the same Raft entry as
//! the membership change (so both change at one index, on every member, and in snapshots).

use super::Service;
use mfsha_meta::{Entry, Member, Op};
use mfsha_proto::client::{ClientReply, MemberChangeRequest};
use mfsha_proto::types::{Reply, Status};
use mfsha_raft::{MemberChange, PeerProgress};

/// Carries out `request` (root only) and answers once the change is applied on this leader.
pub async fn change(
    service: &Service,
    uid: u32,
    request: &MemberChangeRequest,
) -> Reply<ClientReply> {
    if uid != 0 {
        return Err(Status::Perm);
    }
    let members = service.meta.raft().progress();
    let me = service.meta.raft_status().node_id;
    let (change, op) = plan(&members, me, request)?;
    let entry = Entry { now: service.meta.cluster_now(), client: None, op };
    let command = postcard::to_allocvec(&entry).map_err(|error| {
        tracing::error!(%error, "cannot encode a membership change");
        Status::Invalid
    })?;
    tracing::info!(?change, "membership change asked for by a client");
    // The inner result is the address book's: a removed member it did not list is fine.
    let _book = service.meta.raft().change_members(change, command).await?;
    tracing::info!(?change, "membership change applied");
    Ok(ClientReply::Unit)
}

/// The Raft change and the address book operation for `request`, or why it is refused.
fn plan(
    members: &[PeerProgress],
    me: u64,
    request: &MemberChangeRequest,
) -> Result<(MemberChange, Op), Status> {
    if members.is_empty() {
        return Err(Status::NotLeader); // progress is tracked only while leading
    }
    let voters = members.iter().filter(|m| m.voter).count();
    let find = |id: u64| members.iter().find(|m| m.id == id);
    match request {
        MemberChangeRequest::Add { id, voter, peer, client, chunkserver, logger } => {
            let promotes = find(*id).is_some_and(|m| !m.voter && *voter);
            if find(*id).is_some() && !promotes {
                return Err(Status::Exists);
            }
            if *id == 0 || (*voter && voters + 1 == 2) {
                return Err(Status::Invalid);
            }
            let member = Member {
                peer: peer.clone(),
                client: client.clone(),
                chunkserver: chunkserver.clone(),
                logger: logger.clone(),
            };
            let change = match voter {
                true => MemberChange::AddVoter(*id),
                false => MemberChange::AddLearner(*id),
            };
            Ok((change, Op::SetMember { id: *id, member }))
        }
        MemberChangeRequest::Remove { id } => {
            let target = find(*id).ok_or(Status::NotFound)?;
            if *id == me || (target.voter && voters - 1 == 2) {
                return Err(Status::Invalid);
            }
            Ok((MemberChange::Remove(*id), Op::RemoveMember { id: *id }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, voter: bool) -> PeerProgress {
        PeerProgress { id, matched: 10, voter, last_contact_ms: Some(0) }
    }

    fn add(id: u64, voter: bool) -> MemberChangeRequest {
        MemberChangeRequest::Add {
            id,
            voter,
            peer: format!("m{id}:9423"),
            client: Some(format!("m{id}:9421")),
            chunkserver: None,
            logger: None,
        }
    }

    #[test]
    fn changes_that_leave_two_voters_or_remove_the_leader_are_refused() {
        let three = [member(1, true), member(2, true), member(3, true)];
        assert_eq!(
            plan(&three, 1, &MemberChangeRequest::Remove { id: 2 }).err(),
            Some(Status::Invalid)
        );
        assert_eq!(
            plan(&three, 1, &MemberChangeRequest::Remove { id: 1 }).err(),
            Some(Status::Invalid)
        );
        assert_eq!(
            plan(&three, 1, &MemberChangeRequest::Remove { id: 9 }).err(),
            Some(Status::NotFound)
        );
        let one = [member(1, true)];
        assert_eq!(plan(&one, 1, &add(2, true)).err(), Some(Status::Invalid));
        assert!(plan(&one, 1, &add(2, false)).is_ok(), "a learner beside one voter is fine");
    }

    #[test]
    fn adds_a_member_once_and_promotes_a_learner() {
        let group = [member(1, true), member(2, true), member(3, true), member(4, false)];
        assert_eq!(plan(&group, 1, &add(2, true)).err(), Some(Status::Exists));
        let (change, op) = plan(&group, 1, &add(4, true)).unwrap();
        assert_eq!(change, MemberChange::AddVoter(4));
        assert!(matches!(op, Op::SetMember { id: 4, .. }));
        let (change, _) = plan(&group, 1, &add(5, false)).unwrap();
        assert_eq!(change, MemberChange::AddLearner(5));
        let four = [member(1, true), member(2, true), member(3, true), member(4, true)];
        let (change, op) = plan(&four, 1, &MemberChangeRequest::Remove { id: 4 }).unwrap();
        assert_eq!((change, op), (MemberChange::Remove(4), Op::RemoveMember { id: 4 }));
    }
}
