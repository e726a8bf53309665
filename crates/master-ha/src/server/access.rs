//! The exports enforced: which address may open a session on which directory, proving which
//! password, acting as which uid, read-only or not.
//!
//! A connection's [`Grant`] is decided by its `Hello` (open or resume) from the exports in
//! force then, and kept in this master's memory with the connection — never in replicated
//! state: after a failover the mount resumes on the new leader, whose `Hello` decides again
//! from the same source address. A reload therefore applies to every session at its next
//! `Hello` (a new mount, or a reconnect); connections open now keep what they were given.

use super::session::Connection;
use super::Service;
use crate::exports::{ExportOptions, Ids, Password, Refusal};
use mfsha_proto::auth;
use mfsha_proto::client::{ClientOp, ClientReply, Request, MAX_GROUPS};
use mfsha_proto::types::{Reply, SessionId, Status};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What a connection may do.
#[derive(Debug, Clone, Default)]
pub enum Grant {
    /// No `Hello` yet: with exports in force only `Status`, `WhoLeads`, `Challenge` and
    /// `Hello` are answered.
    #[default]
    NoHello,
    /// The `Hello` came while no exports file was in force: everything, as before exports.
    Open,
    /// Admitted by line `line` of the exports file, with its options.
    Export { line: usize, options: Arc<ExportOptions> },
}

/// The fields of a `Hello` that the exports and the password proof look at.
pub struct HelloFields<'a> {
    /// The session resumed; 0 for a new one.
    pub session: SessionId,
    pub token: u64,
    pub subdir: &'a str,
    pub client_info: &'a str,
    pub proof: Option<[u8; 32]>,
    /// The client's version, for `minversion=`.
    pub version: [u32; 3],
}

/// Answers `Challenge`: a fresh nonce for the next `Hello` on this connection, and whether
/// the export `subdir` falls under keys its password by MD5.
pub fn challenge(service: &Service, connection: &Connection, subdir: &str) -> Reply<ClientReply> {
    let nonce: [u8; auth::NONCE_BYTES] = rand::random();
    *connection.challenge.lock() = Some(nonce);
    let exports = service.exports.read().clone();
    let md5 = match (exports, peer_ip(&connection.peer)) {
        (Some(exports), Some(ip)) => exports
            .find(ip, subdir)
            .is_ok_and(|rule| matches!(rule.options.password, Some(Password::Md5(_)))),
        _ => false,
    };
    Ok(ClientReply::Challenge { nonce, md5 })
}

/// Decides what a `Hello` from this connection is given, or why it is refused (logged with
/// the peer's address). The connection's nonce is used up, whatever the outcome.
pub fn check_hello(
    service: &Service,
    connection: &Connection,
    hello: &HelloFields,
) -> Result<Grant, Status> {
    let nonce = connection.challenge.lock().take();
    let Some(exports) = service.exports.read().clone() else {
        return Ok(Grant::Open);
    };
    let (peer, subdir, file) = (&connection.peer, hello.subdir, exports.file.display());
    let Some(ip) = peer_ip(peer) else {
        tracing::warn!(%peer, "refused a session: the peer address is no IP address");
        return Err(Status::Access);
    };
    let rule = match exports.find(ip, subdir) {
        Ok(rule) => rule,
        Err(Refusal::Address) => {
            tracing::warn!(%peer, subdir, exports = %file,
                "refused a session: no line of the exports file admits this address");
            return Err(Status::Access);
        }
        Err(Refusal::Path) => {
            tracing::warn!(%peer, subdir, exports = %file,
                "refused a session: lines of the exports file admit this address, but none \
                 exports this directory (a line for it, or alldirs on one above it)");
            return Err(Status::Access);
        }
        Err(Refusal::Meta { line }) => {
            tracing::warn!(%peer, line, exports = %file,
                "refused a session on the meta filesystem (.): mfsha does not serve it yet");
            return Err(Status::NotSupported);
        }
    };
    if let Some((major, minor, patch)) = rule.options.min_version {
        if hello.version < [major, minor, patch] {
            let [a, b, c] = hello.version;
            tracing::warn!(%peer, subdir, line = rule.line, exports = %file,
                "refused a session: the client is version {a}.{b}.{c}, the export's minversion \
                 is {major}.{minor}.{patch} (upgrade the client)");
            return Err(Status::Access);
        }
    }
    if let Some(password) = &rule.options.password {
        if let Err(why) = check_password(password, nonce, hello) {
            tracing::warn!(%peer, subdir, line = rule.line, exports = %file,
                "refused a session: {why}");
            return Err(Status::BadPassword);
        }
    }
    tracing::debug!(%peer, subdir, line = rule.line, "session admitted by the exports");
    Ok(Grant::Export { line: rule.line, options: Arc::new(rule.options.clone()) })
}

fn check_password(
    password: &Password,
    nonce: Option<[u8; auth::NONCE_BYTES]>,
    hello: &HelloFields,
) -> Result<(), &'static str> {
    let proof = hello.proof.ok_or("the export needs a password and the client proved none")?;
    let nonce = nonce
        .ok_or("a password proof without a Challenge answered before it on this connection")?;
    let key = match password {
        Password::Plain(p) => p.as_bytes().to_vec(),
        Password::Md5(digest) => digest.to_vec(),
    };
    let expected = auth::hello_proof(
        &key,
        &nonce,
        hello.session,
        hello.token,
        hello.subdir,
        hello.client_info,
    );
    match auth::constant_time_eq(&expected, &proof) {
        true => Ok(()),
        false => Err("wrong password"),
    }
}

/// Applies the connection's grant to a request before it is answered: refuses it without a
/// session under exports, refuses a change on a read-only export (`ReadOnly`) or a goal or
/// trash time outside the export's range (`Perm`), and maps the uid and gid it claims
/// (`maproot`, `mapall`).
pub fn admit(service: &Service, connection: &Connection, request: &mut Request) -> Reply<()> {
    use ClientOp::{Challenge, Hello, WhoLeads};
    if request.groups.len() > MAX_GROUPS {
        return Err(Status::Invalid);
    }
    if matches!(request.op, ClientOp::Status | WhoLeads | Hello { .. } | Challenge { .. }) {
        return Ok(());
    }
    let options = match &*connection.grant.lock() {
        Grant::Open => return Ok(()),
        Grant::NoHello if service.exports.read().is_none() => return Ok(()),
        Grant::NoHello => {
            if !connection.refused.swap(true, Ordering::Relaxed) {
                tracing::warn!(peer = %connection.peer,
                    "refused a request before Hello: with exports in force a client must open \
                     a session first; further ones on this connection are refused without a \
                     log line");
            }
            return Err(Status::Access);
        }
        Grant::Export { options, .. } => options.clone(),
    };
    if administers(&request.op) && !options.admin {
        tracing::warn!(peer = %connection.peer, op = request.op.name(),
            "refused: changing the master group or reloading the exports needs an export \
             line with the admin option");
        return Err(Status::Perm);
    }
    if options.read_only && writes(&request.op) {
        return Err(Status::ReadOnly);
    }
    within_limits(&options, &request.op)?;
    apply_umask(&options, &mut request.op);
    let claimed = Ids { uid: request.uid, gid: request.gid };
    let ids = options.map(claimed);
    if ids != claimed {
        // Mapped (maproot, mapall): the caller acts as that user and group alone.
        request.groups.clear();
    }
    (request.uid, request.gid) = (ids.uid, ids.gid);
    Ok(())
}

/// Linux open(2) flags (the mount sends the kernel's).
const O_ACCMODE: i32 = 0o3;
const O_TRUNC: i32 = 0o1000;

/// True for requests a read-only export refuses: every mutation but opening for reading,
/// closing and ending the session; and changes of the master group.
fn writes(op: &ClientOp) -> bool {
    match op {
        ClientOp::Open { flags, .. } => flags & O_ACCMODE != 0 || flags & O_TRUNC != 0,
        ClientOp::Release { .. } | ClientOp::Goodbye => false,
        ClientOp::TransferLeader { .. } | ClientOp::ChangeMember { .. } => true,
        ClientOp::ReloadExports => false,
        // access(W_OK) on a read-only export says EROFS, as on a read-only mount.
        ClientOp::Access { mask, .. } => mask & 0o2 != 0,
        op => op.is_mutation(),
    }
}

/// Requests about the cluster rather than the filesystem: under exports only an export with
/// `admin` may make them (and root, after mapping, as without exports).
fn administers(op: &ClientOp) -> bool {
    matches!(
        op,
        ClientOp::TransferLeader { .. } | ClientOp::ChangeMember { .. } | ClientOp::ReloadExports
    )
}

/// `umask=`: masked off whatever the client's own umask leaves (the stricter of the two).
fn apply_umask(options: &ExportOptions, op: &mut ClientOp) {
    let Some(export_umask) = options.umask else { return };
    match op {
        ClientOp::Mknod { umask, .. }
        | ClientOp::Mkdir { umask, .. }
        | ClientOp::Create { umask, .. } => *umask |= export_umask,
        _ => {}
    }
}

/// True if the connection's export says `ignoregid` (see [`super::perm::Caller`]).
pub fn ignores_gid(connection: &Connection) -> bool {
    matches!(&*connection.grant.lock(), Grant::Export { options, .. } if options.ignoregid)
}

/// `mingoal`/`maxgoal`, `mintrashtime`/`maxtrashtime`.
fn within_limits(options: &ExportOptions, op: &ClientOp) -> Reply<()> {
    let (goals, times) = (options.goals, options.trash_times);
    match *op {
        ClientOp::SetGoal { goal, .. } if goal < goals.0 || goal > goals.1 => Err(Status::Perm),
        ClientOp::SetTrashTime { seconds, .. } if seconds < times.0 || seconds > times.1 => {
            Err(Status::Perm)
        }
        _ => Ok(()),
    }
}

/// The IP of a peer written as `IP:PORT`.
fn peer_ip(peer: &str) -> Option<IpAddr> {
    peer.parse::<SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_refuses_changes_but_not_reading_opens_or_closing() {
        assert!(!writes(&ClientOp::Open { ino: 5, flags: 0 }));
        assert!(writes(&ClientOp::Open { ino: 5, flags: 1 }));
        assert!(writes(&ClientOp::Open { ino: 5, flags: 2 }));
        assert!(writes(&ClientOp::Open { ino: 5, flags: O_TRUNC }));
        assert!(!writes(&ClientOp::Release { ino: 5 }));
        assert!(!writes(&ClientOp::Goodbye));
        assert!(!writes(&ClientOp::GetAttr { ino: 1 }));
        assert!(writes(&ClientOp::Mkdir { parent: 1, name: "d".into(), mode: 0o755, umask: 0 }));
        assert!(writes(&ClientOp::TransferLeader { to: 2 }));
    }

    #[test]
    fn goals_and_trash_times_stay_in_the_exports_range() {
        let o = ExportOptions { goals: (2, 3), trash_times: (60, 3600), ..Default::default() };
        let goal = |goal| ClientOp::SetGoal { ino: 1, goal, recursive: false };
        let trash = |seconds| ClientOp::SetTrashTime { ino: 1, seconds, recursive: false };
        assert_eq!(within_limits(&o, &goal(1)), Err(Status::Perm));
        assert_eq!(within_limits(&o, &goal(2)), Ok(()));
        assert_eq!(within_limits(&o, &goal(4)), Err(Status::Perm));
        assert_eq!(within_limits(&o, &trash(59)), Err(Status::Perm));
        assert_eq!(within_limits(&o, &trash(3600)), Ok(()));
    }
}
