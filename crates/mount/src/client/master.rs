//! The session with the master: one connection at a time, replaced on failure, same session.
//!
//! Every request goes through [`MasterLink::call`]. When the connection drops, the master
//! answers `NotLeader`/`Unavailable`, or a call gets no answer within the attempt timeout, the
//! connection is marked dead, and every caller — those in flight and new ones — waits while
//! one of them reconnects (to each configured master in turn, every `reconnect_interval`) and
//! resumes the *same* session with `Hello { session: Some(id), token }`, the token being the
//! random one the session was opened with: the master resumes a session only for its secret.
//! Then each caller retries.
//!
//! Mutations carry `(session, seq)`. The master keeps the replies of a session's last
//! [`REPLY_WINDOW`] seqs, so up to that many mutations may be in flight at once (several
//! threads of one program, several programs on one mount): the "lane" hands out seqs and
//! holds back a new one until every seq `REPLY_WINDOW` below it was answered. A retry reuses
//! its seq; a retried mutation that was already applied gets the stored reply, so it takes
//! effect exactly once.
//!
//! Only after `io_timeout` without success does a caller get `Status::Io` (EIO).
//!
//! Finding the leader: a reconnect tries the last known (or hinted) leader first, then the
//! configured masters in order. A master that refuses `Hello` with `NotLeader` is asked
//! `WhoLeads` on the same connection, and the leader's client address it names is tried
//! next. Connects time out after `connect_timeout` (1 s) and the socket has keepalive and
//! `TCP_USER_TIMEOUT` at 1 s; an idle connection is pinged every `ping_interval` (500 ms)
//! with a `ping_timeout` of 1 s. So a dead or silent leader is noticed in about a second.
//!
//! A leader whose host dies sends no reset: the connection looks alive until TCP gives up.
//! When a master address is a VIP, the new leader holds it within about half a second, so
//! while a request has waited longer than `probe_after` the link probes: every
//! `probe_interval` it opens a fresh connection to the same address and asks `WhoLeads`
//! (each probe within `probe_timeout`). An answer of this cluster at a higher term than the
//! connection's means another master now answers there: the old connection is replaced at
//! once instead of after TCP's next retransmission (200, 400, 800 ms after the loss).
//!
//! One cluster: a master's first answer on a connection (`WhoLeads`) names its `cluster_id`.
//! The link uses only masters of one cluster — the configured `cluster_id`, else that of the
//! first master it opened a session with — and refuses any other (a stale address in the
//! list now pointing at another cluster's master) before opening a session there or
//! believing its term; it goes on trying the other addresses.
//!
//! Fencing: every answer carries the master's Raft term. The link remembers the highest term
//! it has seen ([`TermFloor`]) and treats an answer with a lower term as coming from a
//! deposed master: the connection is dropped and the request retried elsewhere.

use super::Caller;
use mfsha_proto::client::{
    Answer, ClientOp, ClientReply, FileLock, MasterRpc, OwnerLocks, Request, REPLY_WINDOW,
};
use mfsha_proto::types::{Attr, FileKind, Ino, Reply, SessionId, Status};
use parking_lot::Mutex as SyncMutex;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;

type Rpc = MasterRpc;

/// How to reach the master and how long to wait for it.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Masters to try, in order, as "host:port" (a VIP is just a one-element list).
    pub masters: Vec<String>,
    /// Subdirectory to use as this session's root ("/" for the whole filesystem).
    pub subdir: String,
    pub password: Option<String>,
    /// Free text shown by `mfsha status`: host name and mount point.
    pub info: String,
    /// How long an operation may wait for the master before it fails with EIO.
    pub io_timeout: Duration,
    /// How long one attempt on one connection may take before the connection is replaced
    /// (a slow mutation may wait this long; a dead master is found by the ping first).
    pub attempt_timeout: Duration,
    /// How long connecting to one master may take.
    pub connect_timeout: Duration,
    /// Pause between rounds of connection attempts.
    pub reconnect_interval: Duration,
    /// The connection is checked this often (a lost master is noticed within about this
    /// plus `ping_timeout`).
    pub ping_interval: Duration,
    /// A ping not answered within this long means the master is gone.
    pub ping_timeout: Duration,
    /// A request unanswered this long starts probes of its connection's address.
    pub probe_after: Duration,
    /// How often a probe starts while a request waits (probes overlap: each may wait for a
    /// connection to an address nobody holds yet).
    pub probe_interval: Duration,
    /// How long one probe (connect and `WhoLeads`) may take.
    pub probe_timeout: Duration,
    /// The masters' `cluster_id`, if configured; else the first session's master sets it.
    pub cluster_id: Option<String>,
    /// How long a directory's attributes sent with a change may answer the kernel's next
    /// GETATTR of it (see `fresh.rs`; the mount's attribute cache time, 0: never).
    pub dir_attr_ttl: Duration,
}

impl MasterConfig {
    /// Defaults for `masters`: 60 s I/O timeout, reconnect every 200 ms.
    pub fn new(masters: Vec<String>) -> Self {
        MasterConfig {
            masters,
            subdir: "/".into(),
            password: None,
            info: String::new(),
            io_timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(10),
            connect_timeout: mfsha_proto::net::CONNECT_TIMEOUT,
            // A new leader is usually elected within 250-400 ms; poll often enough not to add
            // much to that.
            reconnect_interval: Duration::from_millis(50),
            ping_interval: Duration::from_millis(500),
            ping_timeout: Duration::from_secs(1),
            // Well above a commit's time under load, well below an election's.
            probe_after: Duration::from_millis(150),
            probe_interval: Duration::from_millis(30),
            probe_timeout: Duration::from_millis(300),
            cluster_id: None,
            dir_attr_ttl: Duration::from_secs(1),
        }
    }
}

/// Why the first session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no master configured")]
    NoMasters,
    /// `said`: what each master of the last round said.
    #[error("no master among {masters} took the session within {secs} s ({said})")]
    Unreachable { masters: String, secs: u64, said: String },
    #[error("master {master} refused the session: {status}{}", refusal_hint(*.status))]
    Refused { master: String, status: Status },
}

/// What to do about a refused session, for the refusals the exports give.
fn refusal_hint(status: Status) -> &'static str {
    match status {
        Status::Access => {
            " (the master's exports file admits neither this client's address nor this \
             subfolder: ask its operator for a line, or mount a subfolder that is exported)"
        }
        Status::BadPassword => {
            " (give the export's password: --password-file, -p, or -o \
             mfspassword=/mfspassfile=)"
        }
        Status::NotSupported => " (the meta filesystem cannot be mounted yet)",
        _ => "",
    }
}

/// One connection carrying the session.
struct Conn {
    rpc: Rpc,
    /// The address it was opened to, as configured or hinted (a VIP stays a VIP).
    addr: String,
    session: SessionId,
    /// The master's term when the session was taken up here: a leader keeps its term, so an
    /// answer at this address at a higher term comes from another (newer) leader.
    term: u64,
    dead: watch::Sender<bool>,
}

impl Conn {
    fn alive(&self) -> bool {
        !self.rpc.is_closed() && !*self.dead.borrow()
    }

    fn kill(&self) {
        self.dead.send_replace(true);
    }
}

/// The highest master term this client has seen. An answer from an older term comes from a
/// master that has been deposed (it may not know yet): it must not be believed.
#[derive(Debug, Default)]
pub struct TermFloor(AtomicU64);

impl TermFloor {
    /// Remembers `term` if it is the highest yet; `Err(highest)` if it is older than that.
    pub fn admit(&self, term: u64) -> Result<(), u64> {
        let highest = self.0.fetch_max(term, Ordering::AcqRel);
        if term < highest {
            return Err(highest);
        }
        Ok(())
    }

    pub fn highest(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Forgets every term seen: only for a link that has no session yet, whose terms came
    /// from a master it then did not use (perhaps of another cluster).
    fn forget(&self) {
        self.0.store(0, Ordering::Release);
    }
}

/// What an answer means for the attempt that got it: the reply, or why the connection it
/// came on must be replaced (an older term, or a master that is not the leader or not
/// ready), or that the session is gone.
fn judge(floor: &TermFloor, answer: Answer) -> Attempt {
    if let Err(highest) = floor.admit(answer.term) {
        return Attempt::Broken(format!(
            "answer from term {} but term {highest} was already seen: a deposed master",
            answer.term
        ));
    }
    match answer.reply {
        Err(Status::NotLeader) => Attempt::Broken("master is not the leader".into()),
        Err(Status::Unavailable) => Attempt::Broken("master is not ready".into()),
        Err(Status::BadSession) => Attempt::SessionLost,
        reply => Attempt::Done(Box::new(reply)),
    }
}

/// The mutation lane: which session the seq counter belongs to, the last seq used, and the
/// seqs sent and not yet answered.
struct Lane {
    session: SessionId,
    last_seq: u64,
    open: BTreeSet<u64>,
}

impl Lane {
    fn new(session: SessionId, last_seq: u64) -> Lane {
        Lane { session, last_seq, open: BTreeSet::new() }
    }

    /// The next seq, if the window allows it: every seq `REPLY_WINDOW` below it answered.
    fn take_next(&mut self) -> Option<u64> {
        let next = self.last_seq + 1;
        let oldest_open = self.open.first().copied().unwrap_or(next);
        if next >= oldest_open + REPLY_WINDOW {
            return None;
        }
        self.last_seq = next;
        self.open.insert(next);
        Some(next)
    }
}

/// The client's session with the master. See the module documentation.
pub struct MasterLink {
    cfg: MasterConfig,
    current: Mutex<Option<Arc<Conn>>>,
    lane: SyncMutex<Lane>,
    /// Signalled whenever a seq is answered (the window may have moved).
    lane_moved: tokio::sync::Notify,
    session: AtomicU64,
    root: AtomicU64,
    /// Inodes this session holds open on the master (`Open` minus `Release`), re-registered
    /// (`Reopen`) with every master the session is taken up with.
    held: SyncMutex<HashMap<Ino, u32>>,
    /// File locks this client holds, per (inode, owner): re-taken after every reconnect,
    /// since a restarted master or a new leader starts with an empty lock table.
    locks: SyncMutex<HashMap<(Ino, u64), OwnerLocks>>,
    /// The highest master term seen (see [`TermFloor`]).
    terms: TermFloor,
    /// Directory attributes the master sent with changes (see `fresh.rs`).
    fresh: super::fresh::FreshDirs,
    /// Client address of the last leader connected to or named by a hint: tried first.
    leader: SyncMutex<Option<String>>,
    /// The token of the session open under way (0: none): the same for every attempt until
    /// one answers, so an attempt that committed unseen does not leave a second session.
    open_token: SyncMutex<u64>,
    /// The token the current session was opened with: its secret, shown to resume it.
    secret: AtomicU64,
    /// The cluster this link uses and where that came from (see the module documentation);
    /// `None` until the first session opens, unless configured.
    cluster: SyncMutex<Option<Cluster>>,
    metrics: crate::metrics::LinkMetrics,
    /// Attempts on a connection under way, for the probe.
    waiting: SyncMutex<Waiting>,
}

/// Attempts under way and when each started.
#[derive(Default)]
struct Waiting {
    next: u64,
    since: std::collections::BTreeMap<u64, Instant>,
}

/// Removes its attempt from [`Waiting`] when the attempt ends, also when it is cancelled.
struct WaitingGuard<'a> {
    waiting: &'a SyncMutex<Waiting>,
    id: u64,
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.waiting.lock().since.remove(&self.id);
    }
}

/// The cluster a link uses.
#[derive(Debug, Clone)]
struct Cluster {
    id: String,
    /// "the cluster_id option" or "master HOST:PORT", for error messages.
    from: String,
}

/// What one attempt on one connection produced.
#[derive(Debug)]
enum Attempt {
    Done(Box<Reply<ClientReply>>),
    /// The connection is unusable (closed, silent, or the master is not the leader).
    Broken(String),
    /// The master no longer knows our session.
    SessionLost,
}

impl MasterLink {
    /// Opens a session, trying every master until one accepts or `cfg.io_timeout` passes.
    pub async fn connect(cfg: MasterConfig) -> Result<Arc<MasterLink>, ConnectError> {
        if cfg.masters.is_empty() {
            return Err(ConnectError::NoMasters);
        }
        let cluster = SyncMutex::new(configured_cluster(&cfg));
        let fresh = super::fresh::FreshDirs::new(cfg.dir_attr_ttl);
        let link = Arc::new(MasterLink {
            fresh,
            cfg,
            current: Mutex::new(None),
            lane: SyncMutex::new(Lane::new(0, 0)),
            lane_moved: tokio::sync::Notify::new(),
            session: AtomicU64::new(0),
            root: AtomicU64::new(0),
            held: SyncMutex::new(HashMap::new()),
            locks: SyncMutex::new(HashMap::new()),
            terms: TermFloor::default(),
            leader: SyncMutex::new(None),
            open_token: SyncMutex::new(0),
            secret: AtomicU64::new(0),
            cluster,
            metrics: crate::metrics::LinkMetrics::default(),
            waiting: SyncMutex::new(Waiting::default()),
        });
        link.first_session().await?;
        tokio::spawn(ping_loop(Arc::downgrade(&link)));
        tokio::spawn(probe_loop(Arc::downgrade(&link)));
        Ok(link)
    }

    async fn first_session(&self) -> Result<(), ConnectError> {
        let deadline = Instant::now() + self.cfg.io_timeout;
        let mut rounds = 0u64;
        loop {
            // The first round says what is wrong (a master down, of another cluster), then
            // one round in 50 (about every 10 s).
            let log = rounds.is_multiple_of(50);
            rounds += 1;
            let said = match self.round(log).await {
                Ok(conn) => {
                    *self.current.lock().await = Some(conn);
                    return Ok(());
                }
                Err(RoundError::Refused { master, status }) => {
                    return Err(ConnectError::Refused { master, status })
                }
                Err(RoundError::Failed(why)) => why,
            };
            if Instant::now() + self.cfg.reconnect_interval > deadline {
                return Err(ConnectError::Unreachable {
                    masters: self.cfg.masters.join(","),
                    secs: self.cfg.io_timeout.as_secs(),
                    said,
                });
            }
            tokio::time::sleep(self.cfg.reconnect_interval).await;
        }
    }

    /// The `cluster_id` of the masters this link uses (`None` before the first session,
    /// unless configured).
    pub fn cluster_id(&self) -> Option<String> {
        self.cluster.lock().as_ref().map(|c| c.id.clone())
    }

    /// The session id (changes only if the master lost the session).
    pub fn session(&self) -> SessionId {
        self.session.load(Ordering::Acquire)
    }

    /// The inode of this session's root directory.
    pub fn root(&self) -> Ino {
        self.root.load(Ordering::Acquire)
    }

    pub fn config(&self) -> &MasterConfig {
        &self.cfg
    }

    /// Records a successful `Open` so a replacement session can re-acquire it.
    pub fn note_acquired(&self, ino: Ino) {
        *self.held.lock().entry(ino).or_insert(0) += 1;
    }

    /// Records a successful `Release`.
    pub fn note_released(&self, ino: Ino) {
        let mut held = self.held.lock();
        if let Some(n) = held.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                held.remove(&ino);
            }
        }
    }

    /// Records a lock request the master granted.
    pub fn note_lock(&self, ino: Ino, lock: FileLock) {
        let mut locks = self.locks.lock();
        let held = locks.entry((ino, lock.owner)).or_default();
        held.apply(lock);
        if held.is_empty() {
            locks.remove(&(ino, lock.owner));
        }
    }

    pub fn holds_locks(&self, ino: Ino, owner: u64) -> bool {
        self.locks.lock().contains_key(&(ino, owner))
    }

    pub fn forget_locks(&self, ino: Ino, owner: u64) {
        self.locks.lock().remove(&(ino, owner));
    }

    /// Sends `op` for caller `who` and returns the master's answer, retrying across
    /// reconnects until `io_timeout`. Mutations go through the lane (see module docs).
    pub async fn call(&self, who: Caller, op: ClientOp) -> Reply<ClientReply> {
        let started = Instant::now();
        let name = op.name();
        let deadline = started + self.cfg.io_timeout;
        let reply = if op.is_mutation() {
            self.mutate(deadline, who, op).await
        } else {
            self.retry(deadline, |session| request(who, session, 0, op.clone())).await
        };
        self.metrics.record(name, started.into_std(), &reply);
        reply
    }

    /// What this link records (requests by type, reconnects), for `/metrics`.
    pub fn metrics(&self) -> &crate::metrics::LinkMetrics {
        &self.metrics
    }

    async fn mutate(&self, deadline: Instant, who: Caller, op: ClientOp) -> Reply<ClientReply> {
        // The seq is chosen per session: a replacement session starts its own count.
        let mut sent: Option<(SessionId, u64)> = None;
        let result = loop {
            let conn = match self.connection(deadline).await {
                Ok(conn) => conn,
                Err(_) => break Err(self.gave_up(&op)),
            };
            let seq = match sent {
                Some((session, seq)) if session == conn.session => seq,
                _ => {
                    if let Some((old, _)) = sent {
                        tracing::warn!(
                            old,
                            new = conn.session,
                            op = op_name(&op),
                            "session was replaced while a change was in flight; \
                             retrying it in the new session (it may have been applied once)"
                        );
                    }
                    match self.next_seq(conn.session, deadline).await {
                        Some(seq) => seq,
                        None => break Err(self.gave_up(&op)),
                    }
                }
            };
            sent = Some((conn.session, seq));
            let req = request(who, conn.session, seq, op.clone());
            match self.attempt(&conn, req).await {
                Attempt::Done(reply) => break *reply,
                Attempt::Broken(why) => self.broken(&conn, &why),
                Attempt::SessionLost => self.session_lost(&conn),
            }
            if let Err(e) = self.pause(deadline, &op).await {
                break Err(e);
            }
        };
        if let Some((session, seq)) = sent {
            self.seq_answered(session, seq);
        }
        result
    }

    /// A fresh seq in `session`, waiting while the window is full; `None` at the deadline.
    async fn next_seq(&self, session: SessionId, deadline: Instant) -> Option<u64> {
        loop {
            // Created before the check, so an answer between check and wait is not missed.
            let moved = self.lane_moved.notified();
            {
                let mut lane = self.lane.lock();
                if lane.session != session {
                    *lane = Lane::new(session, 0);
                }
                if let Some(seq) = lane.take_next() {
                    return Some(seq);
                }
            }
            tokio::time::timeout_at(deadline, moved).await.ok()?;
        }
    }

    /// `seq` of `session` needs no retry any more (answered, or given up).
    fn seq_answered(&self, session: SessionId, seq: u64) {
        let mut lane = self.lane.lock();
        if lane.session == session {
            lane.open.remove(&seq);
        }
        drop(lane);
        self.lane_moved.notify_waiters();
    }

    async fn retry<F: Fn(SessionId) -> Request>(
        &self,
        deadline: Instant,
        make: F,
    ) -> Reply<ClientReply> {
        loop {
            let conn = self.connection(deadline).await.map_err(|_| Status::Io)?;
            let req = make(conn.session);
            let op_for_log = req.op.clone();
            match self.attempt(&conn, req).await {
                Attempt::Done(reply) => return *reply,
                Attempt::Broken(why) => self.broken(&conn, &why),
                Attempt::SessionLost => self.session_lost(&conn),
            }
            self.pause(deadline, &op_for_log).await?;
        }
    }

    /// Waits a little before the next attempt, or gives up at the deadline.
    async fn pause(&self, deadline: Instant, op: &ClientOp) -> Result<(), Status> {
        let wake = Instant::now() + self.cfg.reconnect_interval / 2;
        if wake >= deadline {
            return Err(self.gave_up(op));
        }
        tokio::time::sleep_until(wake).await;
        Ok(())
    }

    fn gave_up(&self, op: &ClientOp) -> Status {
        tracing::error!(
            op = op_name(op),
            masters = %self.cfg.masters.join(","),
            secs = self.cfg.io_timeout.as_secs(),
            "no master answered within the I/O timeout; the operation fails with EIO \
             (check that a master is running and reachable)"
        );
        Status::Io
    }

    async fn attempt(&self, conn: &Conn, req: Request) -> Attempt {
        self.attempt_within(conn, req, self.cfg.attempt_timeout).await
    }

    async fn attempt_within(&self, conn: &Conn, req: Request, limit: Duration) -> Attempt {
        let _waiting = self.waiting_from_now();
        let mut dead = conn.dead.subscribe();
        tokio::select! {
            result = tokio::time::timeout(limit, conn.rpc.call(req)) => match result {
                Ok(Ok(mut answer)) => {
                    let dirs = std::mem::take(&mut answer.dirs);
                    let attempt = judge(&self.terms, answer);
                    self.note_dirs(&attempt, dirs);
                    attempt
                }
                Ok(Err(e)) => Attempt::Broken(e.to_string()),
                Err(_) => Attempt::Broken(format!("no answer within {} ms", limit.as_millis())),
            },
            _ = dead.wait_for(|d| *d) => Attempt::Broken("connection replaced".into()),
        }
    }

    /// Keeps the directory attributes of an accepted answer; an accepted answer with other
    /// attributes of a directory (a chmod of it) makes any kept ones stale.
    fn note_dirs(&self, attempt: &Attempt, dirs: Vec<Attr>) {
        let Attempt::Done(reply) = attempt else { return };
        if let Ok(ClientReply::Attr(attr)) = reply.as_ref() {
            if attr.kind == FileKind::Directory {
                self.fresh.forget(attr.ino);
            }
        }
        self.fresh.note(dirs);
    }

    /// Attributes of directory `ino` the master sent with a change in it, once (`fresh.rs`).
    pub fn fresh_dir(&self, ino: Ino) -> Option<Attr> {
        self.fresh.take(ino)
    }

    fn waiting_from_now(&self) -> WaitingGuard<'_> {
        let mut waiting = self.waiting.lock();
        let id = waiting.next;
        waiting.next += 1;
        waiting.since.insert(id, Instant::now());
        WaitingGuard { waiting: &self.waiting, id }
    }

    /// The live connection, if a request on it has waited longer than `probe_after`.
    fn probe_target(&self) -> Option<Arc<Conn>> {
        let oldest = self.waiting.lock().since.values().min().copied()?;
        if oldest.elapsed() < self.cfg.probe_after {
            return None;
        }
        let current = self.current.try_lock().ok()?;
        current.as_ref().filter(|conn| conn.alive()).cloned()
    }

    /// Asks whoever answers at `conn`'s address now who leads; replaces `conn` if that is a
    /// master of this cluster at a newer term (see the module documentation).
    async fn probe(&self, conn: &Conn) {
        let probed = tokio::time::timeout(self.cfg.probe_timeout, async {
            let rpc = Rpc::connect_within(&conn.addr, self.cfg.probe_timeout).await.ok()?;
            let req = Request::anonymous(ClientOp::WhoLeads);
            rpc.call(req).await.ok()
        });
        let Ok(Some(answer)) = probed.await else { return };
        let Ok(ClientReply::Leader(hint)) = &answer.reply else { return };
        let ours = self.cluster.lock().as_ref().is_some_and(|c| c.id == hint.cluster_id);
        if !ours || answer.term <= conn.term {
            return;
        }
        // Raising the floor also makes any late answer on the old connection count as a
        // deposed master's.
        let _ = self.terms.admit(answer.term);
        let why = format!(
            "{} now answers at term {}, above this connection's term {}: its master is gone \
             or deposed",
            conn.addr, answer.term, conn.term
        );
        self.broken(conn, &why);
    }

    fn broken(&self, conn: &Conn, why: &str) {
        if conn.alive() {
            tracing::warn!(
                master = conn.rpc.peer(),
                session = conn.session,
                reason = why,
                "lost the master; operations wait while reconnecting"
            );
        }
        conn.kill();
    }

    fn session_lost(&self, conn: &Conn) {
        tracing::warn!(
            master = conn.rpc.peer(),
            session = conn.session,
            "the master no longer knows this session; opening a new one"
        );
        // Only forget the session it was about: a newer one may already be in place.
        let forgot =
            self.session.compare_exchange(conn.session, 0, Ordering::AcqRel, Ordering::Acquire);
        if forgot.is_err() {
            tracing::debug!(session = conn.session, "a newer session is already in place");
        }
        conn.kill();
    }

    /// The live connection, reconnecting first if needed. Fails at `deadline`.
    async fn connection(&self, deadline: Instant) -> Result<Arc<Conn>, ()> {
        let mut current =
            tokio::time::timeout_at(deadline, self.current.lock()).await.map_err(|_| ())?;
        if let Some(conn) = current.as_ref() {
            if conn.alive() {
                return Ok(conn.clone());
            }
        }
        *current = None;
        let mut rounds = 0u64;
        loop {
            // One line every ~10 s while the master stays away, not one per try.
            match self.round(rounds.is_multiple_of(50)).await {
                Ok(conn) => {
                    tracing::info!(
                        master = conn.rpc.peer(),
                        session = conn.session,
                        "connected to the master"
                    );
                    self.metrics.reconnects.inc();
                    *current = Some(conn.clone());
                    return Ok(conn);
                }
                Err(e) => tracing::debug!(error = %e, "no master accepted the session this round"),
            }
            rounds += 1;
            if Instant::now() + self.cfg.reconnect_interval >= deadline {
                return Err(());
            }
            tokio::time::sleep(self.cfg.reconnect_interval).await;
        }
    }

    /// Masters to try, best first: the last known or hinted leader, then the configured ones.
    fn candidates(&self) -> VecDeque<String> {
        let mut order: VecDeque<String> = self.cfg.masters.iter().cloned().collect();
        if let Some(leader) = self.leader.lock().clone() {
            order.retain(|addr| *addr != leader);
            order.push_front(leader);
        }
        order
    }

    /// Tries each candidate once, following leader hints at once; the first master that
    /// takes the session wins. `log` says whether failures are worth a warning this round.
    async fn round(&self, log: bool) -> Result<Arc<Conn>, RoundError> {
        let mut queue = self.candidates();
        let mut tried: Vec<String> = Vec::new();
        let mut said: Vec<String> = Vec::new();
        while let Some(addr) = queue.pop_front() {
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr.clone());
            match self.open(&addr).await {
                Ok(conn) => {
                    *self.leader.lock() = Some(addr);
                    return Ok(conn);
                }
                Err(OpenError::Redirect(to)) => {
                    tracing::debug!(master = %addr, leader = ?to, "not the leader; following its hint");
                    if let Some(to) = to.filter(|to| !tried.contains(to)) {
                        *self.leader.lock() = Some(to.clone());
                        queue.push_front(to);
                    }
                    said.push(format!("{addr} is not the leader"));
                }
                Err(OpenError::Refused(status)) => {
                    return Err(RoundError::Refused { master: addr, status })
                }
                Err(why @ OpenError::ForeignCluster(_)) => {
                    if log {
                        tracing::warn!(master = %addr, "{why}");
                    }
                    said.push(why.to_string());
                }
                Err(why @ (OpenError::Retry(_) | OpenError::NotLeader)) => {
                    if log {
                        tracing::warn!(master = %addr, error = %why, "cannot reach the master; retrying");
                    }
                    said.push(format!("{addr}: {why}"));
                }
            }
        }
        Err(RoundError::Failed(said.join("; ")))
    }

    /// Connects to `addr` and resumes our session there, or opens one if we have none (or the
    /// master lost ours). A master that is not the leader says who is.
    async fn open(&self, addr: &str) -> Result<Arc<Conn>, OpenError> {
        let rpc = Rpc::connect_within(addr, self.cfg.connect_timeout)
            .await
            .map_err(|e| OpenError::Retry(e.to_string()))?;
        let first = self.cluster.lock().is_none();
        let opened = self.open_checked(&rpc, addr).await;
        match (&opened, first) {
            (Ok(_), true) => tracing::info!(master = %addr, cluster_id = ?self.cluster_id(),
                "first session opened: only masters of this cluster will be used"),
            (Err(_), true) => {
                // No session yet: forget this master's cluster and term, so that a master of
                // another cluster listed first cannot keep the mount from its own.
                *self.cluster.lock() = None;
                self.terms.forget();
            }
            _ => {}
        }
        opened
    }

    async fn open_checked(&self, rpc: &Rpc, addr: &str) -> Result<Arc<Conn>, OpenError> {
        // A hung master's kernel still accepts connections: ask something any master answers
        // at once, within the ping timeout, before waiting on a Hello.
        let leader = self.who_leads(rpc, addr).await?;
        match self.open_on(rpc, addr).await {
            Err(OpenError::NotLeader) => Err(OpenError::Redirect(leader)),
            other => other,
        }
    }

    /// The leader's client address as the master behind `rpc` knows it (`None`: unknown),
    /// once its cluster is found to be ours: a master of another cluster is refused before
    /// its term counts.
    async fn who_leads(&self, rpc: &Rpc, addr: &str) -> Result<Option<String>, OpenError> {
        let req = Request::anonymous(ClientOp::WhoLeads);
        let answer = self.answer_within(rpc, req, self.cfg.ping_timeout).await?;
        if let Ok(ClientReply::Leader(hint)) = &answer.reply {
            self.same_cluster(addr, &hint.cluster_id)?;
        }
        match self.believe(answer)? {
            ClientReply::Leader(hint) => Ok(hint.client),
            other => Err(OpenError::Retry(format!("unexpected answer to WhoLeads: {other:?}"))),
        }
    }

    /// Whether the master at `addr`, of cluster `theirs`, may be used: it may if the link
    /// has no cluster yet (it then uses this one) or the same one.
    fn same_cluster(&self, addr: &str, theirs: &str) -> Result<(), OpenError> {
        let mut cluster = self.cluster.lock();
        match cluster.as_ref() {
            Some(ours) if ours.id != theirs => Err(OpenError::ForeignCluster(Box::new(Foreign {
                master: addr.to_string(),
                theirs: theirs.to_string(),
                ours: ours.clone(),
            }))),
            Some(_) => Ok(()),
            None => {
                let from = format!("master {addr}");
                *cluster = Some(Cluster { id: theirs.to_string(), from });
                Ok(())
            }
        }
    }

    async fn open_on(&self, rpc: &Rpc, addr: &str) -> Result<Arc<Conn>, OpenError> {
        let rpc = rpc.clone();
        let resume = self.session();
        if resume != 0 {
            match self.hello(&rpc, Some(resume)).await {
                Ok((session, _root)) => {
                    self.reopen(&rpc, session).await?;
                    self.reclaim_locks(&rpc, session).await?;
                    return Ok(self.conn(rpc, addr, session));
                }
                Err(OpenError::Refused(Status::BadSession)) => {
                    tracing::warn!(master = %addr, session = resume,
                        "the master lost this session; opening a new one (open files are re-registered)");
                }
                Err(e) => return Err(e),
            }
        }
        let (session, root) = self.hello(&rpc, None).await?;
        // Opened: the token is this session's secret (a resume must show it), and the next
        // new session gets a token of its own.
        let secret = std::mem::take(&mut *self.open_token.lock());
        self.secret.store(secret, Ordering::Release);
        let old_root = self.root.swap(root, Ordering::AcqRel);
        if old_root != 0 && old_root != root {
            tracing::error!(old_root, root, "the session root changed after reconnecting");
        }
        self.session.store(session, Ordering::Release);
        // A session this leader just opened is known to it; only held files need telling.
        if !self.held.lock().is_empty() {
            self.reopen(&rpc, session).await?;
        }
        self.reclaim_locks(&rpc, session).await?;
        Ok(self.conn(rpc, addr, session))
    }

    /// Re-takes every lock this client holds, before the connection carries anything else.
    /// A lock another client took meanwhile is lost: logged, and forgotten here.
    async fn reclaim_locks(&self, rpc: &Rpc, session: SessionId) -> Result<(), OpenError> {
        let held: Vec<((Ino, u64), OwnerLocks)> =
            self.locks.lock().iter().map(|(k, v)| (*k, v.clone())).collect();
        for ((ino, owner), locks) in held {
            for lock in locks.ranges() {
                let op = ClientOp::SetLock { ino, lock: *lock, reclaim: true };
                let req = Request { session, seq: 0, uid: 0, gid: 0, groups: Vec::new(), op };
                match self.one_call(rpc, req).await {
                    Ok(_) => {}
                    Err(OpenError::Refused(status)) => {
                        tracing::error!(ino, owner, start = lock.start, end = lock.end, %status,
                            "a file lock held before the master changed could not be re-taken \
                             (another client took it); the process holding it has lost it");
                        self.forget_locks(ino, owner);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn conn(&self, rpc: Rpc, addr: &str, session: SessionId) -> Arc<Conn> {
        let (dead, _) = watch::channel(false);
        let term = self.terms.highest();
        Arc::new(Conn { rpc, addr: addr.to_string(), session, term, dead })
    }

    async fn hello(
        &self,
        rpc: &Rpc,
        session: Option<SessionId>,
    ) -> Result<(SessionId, Ino), OpenError> {
        let token = match session {
            Some(_) => self.secret.load(Ordering::Acquire),
            None => self.open_token(),
        };
        let proof = match &self.cfg.password {
            Some(password) => Some(self.prove(rpc, password, session.unwrap_or(0), token).await?),
            None => None,
        };
        let op = ClientOp::Hello {
            session,
            client_info: self.cfg.info.clone(),
            subdir: self.cfg.subdir.clone(),
            proof,
            token,
            version: mfsha_proto::client::VERSION,
        };
        let req = Request::anonymous(op);
        match self.one_call(rpc, req).await? {
            ClientReply::Session { session, root } => Ok((session, root)),
            other => Err(OpenError::Retry(format!("unexpected answer to Hello: {other:?}"))),
        }
    }

    /// The proof of `password` for the `Hello` about to be sent on `rpc`: a `Challenge`
    /// first, then HMAC-SHA-256 over its nonce and the Hello's fields (see
    /// `mfsha_proto::auth`). The password itself never leaves this process.
    async fn prove(
        &self,
        rpc: &Rpc,
        password: &str,
        session: SessionId,
        token: u64,
    ) -> Result<[u8; 32], OpenError> {
        let subdir = self.cfg.subdir.clone();
        let op = ClientOp::Challenge { subdir: subdir.clone() };
        let req = Request::anonymous(op);
        match self.one_call(rpc, req).await? {
            ClientReply::Challenge { nonce, md5 } => {
                let key = mfsha_proto::auth::password_key(password, md5);
                let info = &self.cfg.info;
                Ok(mfsha_proto::auth::hello_proof(&key, &nonce, session, token, &subdir, info))
            }
            other => Err(OpenError::Retry(format!("unexpected answer to Challenge: {other:?}"))),
        }
    }

    /// The token of the session open under way, picked at random by the first attempt.
    fn open_token(&self) -> u64 {
        let mut token = self.open_token.lock();
        while *token == 0 {
            *token = rand::random();
        }
        *token
    }

    /// Tells the master the files this mount holds open, before the connection carries
    /// anything else: open files are the leader's memory, so after a failover (or a new
    /// session) the leader learns them here, and frees no unlinked file until it has.
    async fn reopen(&self, rpc: &Rpc, session: SessionId) -> Result<(), OpenError> {
        let files: Vec<(Ino, u32)> = self.held.lock().iter().map(|(i, n)| (*i, *n)).collect();
        let count = files.len();
        let op = ClientOp::Reopen { files };
        let req = Request { session, seq: 0, uid: 0, gid: 0, groups: Vec::new(), op };
        match self.one_call(rpc, req).await {
            Ok(_) => Ok(()),
            Err(OpenError::Refused(status)) => {
                tracing::error!(session, files = count, %status,
                    "the master refused this mount's open files; an unlinked file held open \
                     here may be freed while still in use");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn one_call(&self, rpc: &Rpc, req: Request) -> Result<ClientReply, OpenError> {
        self.one_call_within(rpc, req, self.cfg.attempt_timeout).await
    }

    async fn one_call_within(
        &self,
        rpc: &Rpc,
        req: Request,
        limit: Duration,
    ) -> Result<ClientReply, OpenError> {
        let answer = self.answer_within(rpc, req, limit).await?;
        self.believe(answer)
    }

    /// The answer to `req`, not judged yet.
    async fn answer_within(
        &self,
        rpc: &Rpc,
        req: Request,
        limit: Duration,
    ) -> Result<Answer, OpenError> {
        match tokio::time::timeout(limit, rpc.call(req)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(OpenError::Retry(e.to_string())),
            Err(_) => Err(OpenError::Retry(format!("no answer within {} ms", limit.as_millis()))),
        }
    }

    /// The reply in `answer` if its term is not older than one already seen (which it
    /// raises the floor to), and it is no refusal.
    fn believe(&self, answer: Answer) -> Result<ClientReply, OpenError> {
        if let Err(highest) = self.terms.admit(answer.term) {
            let term = answer.term;
            return Err(OpenError::Retry(format!(
                "a deposed master: its term {term} is below term {highest} already seen"
            )));
        }
        match answer.reply {
            Ok(reply) => Ok(reply),
            Err(Status::NotLeader) => Err(OpenError::NotLeader),
            Err(status @ Status::Unavailable) => Err(OpenError::Retry(status.to_string())),
            Err(status) => Err(OpenError::Refused(status)),
        }
    }

    /// Checks the connection with a cheap read; a silent master gets replaced. A lost
    /// connection is re-established here rather than at the next request, so an idle mount
    /// stays attached to its session and re-takes its file locks within the new leader's
    /// grace period (see `reclaim_locks`).
    async fn ping(&self) {
        let live = match self.current.try_lock() {
            Ok(current) => current.as_ref().filter(|conn| conn.alive()).cloned(),
            // Someone is reconnecting right now.
            Err(_) => return,
        };
        let Some(conn) = live else {
            let deadline = Instant::now() + self.cfg.ping_interval.max(self.cfg.reconnect_interval);
            if self.connection(deadline).await.is_err() {
                tracing::debug!("still no master; the next ping tries again");
            }
            return;
        };
        let req = Request {
            session: conn.session,
            seq: 0,
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            op: ClientOp::GetAttr { ino: self.root() },
        };
        match self.attempt_within(&conn, req, self.cfg.ping_timeout).await {
            Attempt::Done(_) => {}
            Attempt::Broken(why) => self.broken(&conn, &why),
            Attempt::SessionLost => self.session_lost(&conn),
        }
    }

    /// Ends the session cleanly (the master releases its open files). Best effort: a master
    /// that is away now will expire the session later.
    pub async fn goodbye(&self) -> Reply<()> {
        let deadline = Instant::now() + Duration::from_secs(5).min(self.cfg.io_timeout);
        self.mutate(deadline, Caller::ROOT, ClientOp::Goodbye).await.map(|_| ())
    }
}

#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("{0}")]
    Retry(String),
    #[error("refused: {0}")]
    Refused(Status),
    #[error("not the leader")]
    NotLeader,
    /// Not the leader; the leader's client address, if it knows one.
    #[error("not the leader (leader at {0:?})")]
    Redirect(Option<String>),
    #[error("{0}")]
    ForeignCluster(Box<Foreign>),
}

/// A master of another cluster than the link's.
#[derive(Debug, thiserror::Error)]
#[error(
    "not using master {master}: it belongs to cluster {theirs:?}, this mount to cluster {:?} \
     (from {}); remove {master} from the mount's master list, or fix the cluster_id option",
    .ours.id, .ours.from
)]
struct Foreign {
    master: String,
    theirs: String,
    ours: Cluster,
}

/// The cluster `cfg` names, if it does.
fn configured_cluster(cfg: &MasterConfig) -> Option<Cluster> {
    let id = cfg.cluster_id.clone()?;
    Some(Cluster { id, from: "the cluster_id option".into() })
}

/// Why no master took the session in one round.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("master {master} refused the session: {status}{}", refusal_hint(*.status))]
    Refused { master: String, status: Status },
    #[error("{0}")]
    Failed(String),
}

async fn ping_loop(link: std::sync::Weak<MasterLink>) {
    loop {
        let interval = match link.upgrade() {
            Some(l) => l.cfg.ping_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        match link.upgrade() {
            Some(l) => l.ping().await,
            None => return,
        }
    }
}

/// Starts a probe every `probe_interval` while a request waits too long (see the module
/// documentation); at most [`PROBES_MAX`] at once.
async fn probe_loop(link: std::sync::Weak<MasterLink>) {
    let running = Arc::new(tokio::sync::Semaphore::new(PROBES_MAX));
    loop {
        let interval = match link.upgrade() {
            Some(l) => l.cfg.probe_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        let Some(l) = link.upgrade() else { return };
        let Some(conn) = l.probe_target() else { continue };
        let Ok(permit) = running.clone().try_acquire_owned() else { continue };
        tokio::spawn(async move {
            l.probe(&conn).await;
            drop(permit);
        });
    }
}

/// Probes under way at most: each waits at most `probe_timeout`, so this bounds the
/// connections a mount opens to an address nobody holds.
const PROBES_MAX: usize = 16;

/// A short name of a request for log lines and metrics ([`ClientOp::name`]).
pub fn op_name(op: &ClientOp) -> &'static str {
    op.name()
}

/// A request from caller `who`.
fn request(who: Caller, session: SessionId, seq: u64, op: ClientOp) -> Request {
    let groups = who.groups.as_slice().to_vec();
    Request { session, seq, uid: who.uid, gid: who.gid, groups, op }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfsha_proto::types::LeaderHint;

    fn answer(term: u64) -> Answer {
        Answer::new(term, Ok(ClientReply::Unit))
    }

    #[test]
    fn an_answer_with_an_older_term_is_refused_and_a_newer_one_raises_the_floor() {
        let floor = TermFloor::default();
        assert!(matches!(judge(&floor, answer(3)), Attempt::Done(_)));
        assert!(matches!(judge(&floor, answer(3)), Attempt::Done(_)), "same term is fine");
        assert!(matches!(judge(&floor, answer(5)), Attempt::Done(_)));
        match judge(&floor, answer(4)) {
            Attempt::Broken(why) => assert!(why.contains("term 5"), "{why}"),
            other => panic!("a term-4 answer after term 5 must be refused, got {other:?}"),
        }
        assert_eq!(floor.highest(), 5, "a refused answer does not lower the floor");
        let not_leader = Answer::new(6, Err(Status::NotLeader));
        assert!(matches!(judge(&floor, not_leader), Attempt::Broken(_)));
        assert_eq!(floor.highest(), 6, "a follower's newer term counts too");
        let lost = Answer::new(6, Err(Status::BadSession));
        assert!(matches!(judge(&floor, lost), Attempt::SessionLost));
    }

    /// A fake master answering every request with `term` and `reply`.
    async fn fake_master(term: u64, reply: Reply<ClientReply>) -> String {
        fake_master_of("", term, reply).await
    }

    /// A fake master of cluster `cluster_id` answering every request with `term` and `reply`.
    async fn fake_master_of(cluster_id: &str, term: u64, reply: Reply<ClientReply>) -> String {
        let hint = LeaderHint { cluster_id: cluster_id.to_string(), ..Default::default() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let (reply, hint) = (reply.clone(), hint.clone());
                tokio::spawn(mfsha_proto::rpc::serve(
                    stream,
                    peer.to_string(),
                    4,
                    move |req: Request| {
                        let reply = match req.op {
                            ClientOp::Hello { .. } => {
                                Ok(ClientReply::Session { session: 9, root: 1 })
                            }
                            ClientOp::WhoLeads => Ok(ClientReply::Leader(hint.clone())),
                            _ => reply.clone(),
                        };
                        async move { Answer::new(term, reply) }
                    },
                ));
            }
        });
        addr
    }

    /// A master on `listener` at `term` that opens sessions and answers `WhoLeads` at once,
    /// and everything else after `delay` (`None`: never, as a dead host). Counts its `Hello`s.
    fn slow_master(
        listener: tokio::net::TcpListener,
        term: u64,
        delay: Option<Duration>,
        hellos: Arc<std::sync::atomic::AtomicUsize>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let hellos = hellos.clone();
                tokio::spawn(mfsha_proto::rpc::serve(
                    stream,
                    peer.to_string(),
                    4,
                    move |req: Request| {
                        let hellos = hellos.clone();
                        async move {
                            let reply = match req.op {
                                ClientOp::Hello { .. } => {
                                    hellos.fetch_add(1, Ordering::SeqCst);
                                    Ok(ClientReply::Session { session: 9, root: 1 })
                                }
                                ClientOp::WhoLeads => {
                                    Ok(ClientReply::Leader(LeaderHint::default()))
                                }
                                // Answered from memory by a real master, as Hello is.
                                ClientOp::Reopen { .. } => Ok(ClientReply::Unit),
                                _ => match delay {
                                    Some(delay) => {
                                        tokio::time::sleep(delay).await;
                                        Ok(ClientReply::Unit)
                                    }
                                    None => std::future::pending().await,
                                },
                            };
                            Answer::new(term, reply)
                        }
                    },
                ));
            }
        })
    }

    /// Probes alone can rescue a call here: no pings, no attempt timeout within the test.
    fn probing_only(addr: &str) -> MasterConfig {
        let mut cfg = MasterConfig::new(vec![addr.to_string()]);
        cfg.ping_interval = Duration::from_secs(600);
        cfg.attempt_timeout = Duration::from_secs(600);
        cfg
    }

    #[tokio::test]
    async fn a_newer_leader_at_the_same_address_replaces_a_silent_connection_by_probe() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hellos = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // The old leader's host dies: its connections stay open and say nothing more.
        let old = slow_master(listener, 4, None, hellos.clone());
        let link = MasterLink::connect(probing_only(&addr)).await.unwrap();
        old.abort(); // closes its listener (the VIP moves), not the connection it accepted
        let _ = old.await;
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        let _new = slow_master(listener, 8, Some(Duration::ZERO), hellos.clone());
        let call = tokio::time::timeout(
            Duration::from_secs(10),
            link.call(Caller::ROOT, ClientOp::StatFs),
        );
        assert_eq!(
            call.await.expect("the probe should replace the silent connection"),
            Ok(ClientReply::Unit)
        );
        assert_eq!(hellos.load(Ordering::SeqCst), 2, "the session was resumed on the new leader");
        assert_eq!(link.terms.highest(), 8);
    }

    #[tokio::test]
    async fn a_slow_answer_from_the_same_leader_keeps_its_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hellos = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let _master = slow_master(listener, 4, Some(Duration::from_millis(700)), hellos.clone());
        let link = MasterLink::connect(probing_only(&addr)).await.unwrap();
        // Probes run during most of the 700 ms; each finds the same leader at the same term.
        assert_eq!(link.call(Caller::ROOT, ClientOp::StatFs).await, Ok(ClientReply::Unit));
        assert_eq!(hellos.load(Ordering::SeqCst), 1, "the connection was never replaced");
    }

    #[tokio::test]
    async fn a_link_refuses_a_master_whose_term_is_older_than_one_seen() {
        let old = fake_master(4, Ok(ClientReply::Unit)).await;
        let mut cfg = MasterConfig::new(vec![old.clone()]);
        cfg.io_timeout = Duration::from_millis(600);
        let link = MasterLink::connect(cfg).await.unwrap();
        assert_eq!(link.call(Caller::ROOT, ClientOp::StatFs).await, Ok(ClientReply::Unit));
        // A newer leader was seen somewhere (e.g. its answer to WhoLeads): term 4 is stale.
        link.terms.admit(7).unwrap();
        assert_eq!(link.call(Caller::ROOT, ClientOp::StatFs).await, Err(Status::Io));
        assert_eq!(link.terms.highest(), 7);
    }

    #[tokio::test]
    async fn a_link_never_uses_a_master_of_another_cluster() {
        let other = fake_master_of("other", 90, Ok(ClientReply::Unit)).await;
        let ours = fake_master_of("ours", 3, Ok(ClientReply::Unit)).await;
        let mut cfg = MasterConfig::new(vec![other.clone(), ours.clone()]);
        cfg.cluster_id = Some("ours".into());
        cfg.io_timeout = Duration::from_millis(600);
        let link = MasterLink::connect(cfg.clone()).await.unwrap();
        assert_eq!(link.cluster_id().as_deref(), Some("ours"));
        assert_eq!(*link.leader.lock(), Some(ours), "the session is on our cluster's master");
        assert_eq!(link.terms.highest(), 3, "the other cluster's term 90 was not believed");
        cfg.masters = vec![other.clone()];
        let refused = MasterLink::connect(cfg).await.err().expect("only a foreign master");
        let said = refused.to_string();
        for part in [other.as_str(), "\"other\"", "\"ours\"", "cluster_id option"] {
            assert!(said.contains(part), "{said:?} should name {part}");
        }
    }

    #[tokio::test]
    async fn without_a_cluster_id_the_first_session_picks_the_cluster() {
        let first = fake_master_of("first", 5, Ok(ClientReply::Unit)).await;
        let link = MasterLink::connect(MasterConfig::new(vec![first.clone()])).await.unwrap();
        assert_eq!(link.cluster_id().as_deref(), Some("first"));
        let other = fake_master_of("other", 6, Ok(ClientReply::Unit)).await;
        match link.open(&other).await {
            Err(OpenError::ForeignCluster(foreign)) => {
                assert_eq!(foreign.ours.from, format!("master {first}"));
            }
            got => panic!("a master of another cluster must be refused, got {:?}", got.err()),
        }
        assert_eq!(link.terms.highest(), 5, "its term was not believed");
    }
}
