//! Client sessions: opening, resuming, and which are connected right now.
//!
//! A session is replicated metadata (`Op::OpenSession`), so it survives a master restart or a
//! leader change and a client can resume it. Which *connection* carries a session is local to
//! this master: `mfsha status` shows it, and session expiry (see [`super::expiry`]) keeps
//! every connected session and counts a detached one's idle time from when its last
//! connection closed here. That is leader memory, not replicated: a new leader has seen no
//! connection yet and counts from the start of its leadership, so it never expires a session
//! for activity it did not see.

use mfsha_proto::client::ClientStatus;
use mfsha_proto::types::{Ino, SessionId};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// One client connection, as seen by its request handlers.
#[derive(Debug)]
pub struct Connection {
    pub id: u64,
    pub peer: String,
    /// The session this connection opened or resumed, with its root inode.
    pub session: Mutex<Option<(SessionId, Ino)>>,
    /// A request naming another session was refused (and logged) on this connection.
    pub refused: std::sync::atomic::AtomicBool,
    /// The nonce of the last `Challenge` answered here, for the next `Hello` only.
    pub challenge: Mutex<Option<[u8; mfsha_proto::auth::NONCE_BYTES]>>,
    /// What the exports let this connection do, decided by its last `Hello`.
    pub grant: Mutex<super::access::Grant>,
}

/// Local bookkeeping of sessions: the id allocator, connected clients, session roots.
pub struct Sessions {
    next_id: AtomicU64,
    next_connection: AtomicU64,
    connected: Mutex<HashMap<u64, ClientStatus>>,
    /// Root inode per session, so requests need not search the replicated session table.
    roots: parking_lot::RwLock<HashMap<SessionId, Ino>>,
    /// When the last connection carrying each session closed (sessions attached here only).
    detached: Mutex<HashMap<SessionId, Instant>>,
    /// The term in which this master opened each session it opened (for the lock grace:
    /// such a session cannot hold locks from an earlier leader).
    opened_in: Mutex<HashMap<SessionId, u64>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

impl Sessions {
    pub fn new() -> Self {
        Sessions {
            next_id: AtomicU64::new(0),
            next_connection: AtomicU64::new(1),
            connected: Mutex::new(HashMap::new()),
            roots: parking_lot::RwLock::new(HashMap::new()),
            detached: Mutex::new(HashMap::new()),
            opened_in: Mutex::new(HashMap::new()),
        }
    }

    /// A session id not used before by any leader: at least `applied_max + 1`, and seeded from
    /// the wall clock in microseconds so that a new leader (whose applied state may lag the
    /// old leader's last proposals) does not reuse ids the old leader handed out. Apply still
    /// rejects an id in use, so a clash can cost a retry but never merges two sessions.
    pub fn allocate_id(&self, applied_max: SessionId) -> SessionId {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let floor = applied_max.saturating_add(1).max(now_us);
        // fetch_max then fetch_add: ids are strictly increasing across concurrent callers.
        self.next_id.fetch_max(floor, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        assert!(id > applied_max);
        id
    }

    /// Registers a new connection and returns its handle.
    pub fn connect(&self, peer: String) -> Connection {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        Connection {
            id,
            peer,
            session: Mutex::new(None),
            refused: Default::default(),
            challenge: Mutex::new(None),
            grant: Mutex::new(super::access::Grant::NoHello),
        }
    }

    /// Records that `connection` now carries `session` rooted at `root`.
    pub fn attach(&self, connection: &Connection, session: SessionId, root: Ino, info: &str) {
        *connection.session.lock() = Some((session, root));
        self.roots.write().insert(session, root);
        self.detached.lock().remove(&session);
        self.connected.lock().insert(
            connection.id,
            ClientStatus {
                session,
                peer: connection.peer.clone(),
                info: info.to_string(),
                open_files: 0,
            },
        );
    }

    /// Forgets a closed connection (its session stays open in the replicated state). A
    /// session no other connection carries is detached from now on.
    pub fn disconnect(&self, connection: &Connection) {
        let mut connected = self.connected.lock();
        let Some(gone) = connected.remove(&connection.id) else { return };
        if !connected.values().any(|c| c.session == gone.session) {
            self.detached.lock().insert(gone.session, Instant::now());
        }
    }

    /// When the last connection carrying `session` closed, if one did here and none carries
    /// it now.
    pub fn detached_since(&self, session: SessionId) -> Option<Instant> {
        self.detached.lock().get(&session).copied()
    }

    /// Forgets what this master noted about sessions that `live` says no longer exist (they
    /// ended while another master led), so the notes stay as few as the sessions.
    pub fn keep_only(&self, live: impl Fn(SessionId) -> bool) {
        self.detached.lock().retain(|id, _| live(*id));
        self.opened_in.lock().retain(|id, _| live(*id));
    }

    /// Notes that this master opened `session` while leading in `term`.
    pub fn opened(&self, session: SessionId, term: u64) {
        self.opened_in.lock().insert(session, term);
    }

    /// True if this master opened `session` while leading in `term`.
    pub fn opened_in(&self, session: SessionId, term: u64) -> bool {
        self.opened_in.lock().get(&session) == Some(&term)
    }

    /// True while some connection carries `session`.
    pub fn is_connected(&self, session: SessionId) -> bool {
        self.connected.lock().values().any(|c| c.session == session)
    }

    /// Forgets a session that ended (`Goodbye`, or expired).
    pub fn forget(&self, session: SessionId) {
        self.roots.write().remove(&session);
        self.detached.lock().remove(&session);
        self.opened_in.lock().remove(&session);
    }

    /// The cached root of `session`, if this master has seen it since it started.
    pub fn cached_root(&self, session: SessionId) -> Option<Ino> {
        self.roots.read().get(&session).copied()
    }

    /// Remembers a session root learnt from the replicated state.
    pub fn cache_root(&self, session: SessionId, root: Ino) {
        self.roots.write().insert(session, root);
    }

    /// Connected clients, ordered by session id.
    pub fn connected(&self) -> Vec<ClientStatus> {
        let mut clients: Vec<ClientStatus> = self.connected.lock().values().cloned().collect();
        clients.sort_by(|a, b| (a.session, &a.peer).cmp(&(b.session, &b.peer)));
        clients
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_exceed_applied_max() {
        let sessions = Sessions::new();
        let a = sessions.allocate_id(0);
        let b = sessions.allocate_id(0);
        assert!(b > a);
        let far = u64::MAX / 2;
        let c = sessions.allocate_id(far);
        assert!(c > far);
        assert!(sessions.allocate_id(0) > c);
    }

    #[test]
    fn connected_clients_follow_attach_and_disconnect() {
        let sessions = Sessions::new();
        let one = sessions.connect("10.0.0.1:5000".into());
        let two = sessions.connect("10.0.0.2:5000".into());
        sessions.attach(&one, 7, 1, "host1:/mnt");
        sessions.attach(&two, 3, 5, "host2:/mnt");
        let listed = sessions.connected();
        assert_eq!(listed.iter().map(|c| c.session).collect::<Vec<_>>(), vec![3, 7]);
        assert_eq!(sessions.cached_root(3), Some(5));
        sessions.disconnect(&two);
        assert_eq!(sessions.connected().len(), 1);
        sessions.forget(3);
        assert_eq!(sessions.cached_root(3), None);
    }

    #[tokio::test]
    async fn a_session_is_detached_once_its_last_connection_closes() {
        let sessions = Sessions::new();
        let one = sessions.connect("10.0.0.1:5000".into());
        let two = sessions.connect("10.0.0.1:5001".into());
        sessions.attach(&one, 7, 1, "h:/mnt");
        sessions.attach(&two, 7, 1, "h:/mnt");
        assert_eq!(sessions.detached_since(7), None);
        sessions.disconnect(&one);
        assert_eq!(sessions.detached_since(7), None, "still carried by the other connection");
        let before = Instant::now();
        sessions.disconnect(&two);
        let since = sessions.detached_since(7).expect("no connection carries 7");
        assert!(since >= before);
        assert!(!sessions.is_connected(7));
        let back = sessions.connect("10.0.0.1:5002".into());
        sessions.attach(&back, 7, 1, "h:/mnt");
        assert_eq!(sessions.detached_since(7), None, "attached again");
        sessions.opened(7, 4);
        assert!(sessions.opened_in(7, 4) && !sessions.opened_in(7, 5));
        sessions.forget(7);
        assert!(!sessions.opened_in(7, 4));
        sessions.opened(8, 4);
        sessions.disconnect(&back);
        sessions.keep_only(|id| id == 8);
        assert_eq!(sessions.detached_since(7), None, "7 ended elsewhere: forgotten");
        assert!(sessions.opened_in(8, 4));
    }
}
