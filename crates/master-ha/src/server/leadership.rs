//! Who leads, and where the masters are: the address book, leader hints, and the step-down
//! signal that makes this master close its client, chunkserver and logger connections.
//!
//! The address book maps each master's node id to where clients, chunkservers and metaloggers
//! reach it. It starts from the configuration (this master's `advertise`, each peer's
//! `client`/`chunkserver`/`logger`) and learns, from the replicated address book in the
//! metadata (changed by `mfsha member add|remove` in the same entry as the membership), the
//! members this master's configuration does not name. For the members it names, the
//! configuration wins: an operator's file is what this host can reach.
//!
//! [`Leadership`] polls the Raft node every [`POLL`] (the node offers no change
//! notification) and publishes `(term, leader, leading)`; a connection accepted while this
//! master led at term T waits on [`Leadership::ended`] and is closed as soon as this master
//! no longer leads at T, so its peer reconnects to the new leader at once instead of
//! learning it request by request.
//!
//! "No longer leads" means Raft made another node leader or this one stepped down, or its
//! lease has been out for an election timeout. A lease that lapses for a moment while this
//! node is still Raft's leader (its thread waited for a core, or a quorum answered late, on a
//! busy machine) stops reads at once but closes nothing: a master that recovers its lease
//! keeps its clients instead of sending them all to reconnect, and the requests that arrive
//! meanwhile wait for it ([`super::client`]). One election timeout bounds that wait: by then
//! raft-rs's `check_quorum` has made a leader without a quorum step down anyway.
//!
//! [`Leadership::epoch`] says since when this master leads in its current term (as first seen
//! here, by the poller or a request, whichever looks first): the lock table's reclaim grace
//! and session expiry count from there, since what happened before belongs to another leader.

use super::Shutdown;
use crate::config::{Advertise, MasterConfig};
use crate::node::MetaHandle;
use mfsha_meta::Member;
use mfsha_proto::types::LeaderHint;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often the Raft node's leadership is looked at.
pub const POLL: Duration = Duration::from_millis(20);

/// Where one master is reached (`HOST:PORT` each; `None` when its configuration does not say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterAddrs {
    pub client: Option<String>,
    pub chunkserver: Option<String>,
    pub logger: Option<String>,
}

/// Node id → addresses, for every master of the group (this one included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressBook {
    masters: BTreeMap<u64, MasterAddrs>,
    /// The ids the configuration named; the others were learned from the replicated book.
    configured: BTreeSet<u64>,
}

impl From<&Member> for MasterAddrs {
    fn from(member: &Member) -> MasterAddrs {
        MasterAddrs {
            client: member.client.clone(),
            chunkserver: member.chunkserver.clone(),
            logger: member.logger.clone(),
        }
    }
}

/// The addresses this master's listeners were bound to (ports resolved).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub client: SocketAddr,
    pub chunkserver: SocketAddr,
    pub logger: SocketAddr,
}

impl AddressBook {
    /// The book of `config`'s group: this master at its advertised addresses (defaults from
    /// `bound`, see [`Advertise::resolve`]) and each peer at the addresses its entry gives.
    pub fn from_config(config: &MasterConfig, bound: Bound) -> AddressBook {
        let host = host_name();
        let own = &config.advertise;
        let mut masters = BTreeMap::new();
        masters.insert(
            config.node_id,
            MasterAddrs {
                client: Some(Advertise::resolve(&own.client, bound.client, &host)),
                chunkserver: Some(Advertise::resolve(&own.chunkserver, bound.chunkserver, &host)),
                logger: Some(Advertise::resolve(&own.logger, bound.logger, &host)),
            },
        );
        for peer in &config.peers {
            let addrs = MasterAddrs {
                client: peer.client.clone(),
                chunkserver: peer.chunkserver.clone(),
                logger: peer.logger.clone(),
            };
            masters.insert(peer.id, addrs);
        }
        let configured = masters.keys().copied().collect();
        AddressBook { masters, configured }
    }

    /// A book with the given entries (tests).
    pub fn of(entries: impl IntoIterator<Item = (u64, MasterAddrs)>) -> AddressBook {
        let masters: BTreeMap<u64, MasterAddrs> = entries.into_iter().collect();
        let configured = masters.keys().copied().collect();
        AddressBook { masters, configured }
    }

    /// Takes in the replicated address book: members the configuration does not name are
    /// added (or updated), learned members the book no longer has are forgotten. True if
    /// anything changed.
    pub fn learn(&mut self, members: &BTreeMap<u64, Member>) -> bool {
        let before = self.masters.clone();
        let configured = &self.configured;
        self.masters.retain(|id, _| configured.contains(id) || members.contains_key(id));
        for (id, member) in members.iter().filter(|(id, _)| !configured.contains(id)) {
            self.masters.insert(*id, member.into());
        }
        self.masters != before
    }

    pub fn get(&self, node_id: u64) -> Option<&MasterAddrs> {
        self.masters.get(&node_id)
    }

    /// `(node id, chunkserver address)` of every master whose address is known.
    pub fn chunkserver_addrs(&self) -> Vec<(u64, String)> {
        let known = self.masters.iter().filter_map(|(id, a)| Some((*id, a.chunkserver.clone()?)));
        known.collect()
    }

    /// `id@client-address` of every master, for `mfsha status`.
    pub fn describe(&self) -> Vec<String> {
        let show = |a: &Option<String>| a.clone().unwrap_or_else(|| "?".into());
        self.masters.iter().map(|(id, a)| format!("{id}@{}", show(&a.client))).collect()
    }
}

/// This host's name, for advertised addresses of ports that listen on every interface.
pub(crate) fn host_name() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(name) if !name.trim().is_empty() => name.trim().to_string(),
        other => {
            tracing::warn!(result = ?other.map_err(|e| e.to_string()),
                "cannot read this host's name from /proc/sys/kernel/hostname; advertising \
                 localhost (set advertise.client/chunkserver/logger in the config)");
            "localhost".into()
        }
    }
}

/// One look at the Raft node: its term, the leader it knows (0: none), whether it leads
/// (serves: caught up, lease valid) and whether Raft has it as leader (lease or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lead {
    pub term: u64,
    pub leader_id: u64,
    pub leading: bool,
    pub raft_leader: bool,
}

/// What the poller publishes: the last look, and whether this master still holds office in
/// its term (leading, or Raft's leader with a lease out for less than the grace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Office {
    lead: Lead,
    holds: bool,
}

type Source = Arc<dyn Fn() -> Lead + Send + Sync>;

/// One leadership of this master: the term, and when this master was first seen leading in
/// it (within one [`POLL`] of the election).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    pub term: u64,
    pub since: Instant,
}

/// The current epoch, if this master leads now; remembers it the first time it is seen.
fn note_epoch(epochs: &Mutex<Option<Epoch>>, lead: Lead) -> Option<Epoch> {
    if !lead.leading {
        return None;
    }
    let mut known = epochs.lock();
    match *known {
        Some(epoch) if epoch.term == lead.term => Some(epoch),
        _ => {
            let epoch = Epoch { term: lead.term, since: Instant::now() };
            *known = Some(epoch);
            Some(epoch)
        }
    }
}

/// This master's leadership as connections need it. Cheap to clone.
#[derive(Clone)]
pub struct Leadership {
    source: Source,
    changes: watch::Receiver<Office>,
    book: Arc<RwLock<AddressBook>>,
    epoch: Arc<Mutex<Option<Epoch>>>,
}

impl Leadership {
    /// Watches `meta` until `shutdown`.
    pub fn watch(meta: MetaHandle, book: AddressBook, shutdown: Shutdown) -> Leadership {
        let watched = meta.clone();
        let source = move || {
            let status = watched.raft_status();
            Lead {
                term: status.term,
                leader_id: status.leader_id,
                leading: watched.is_leader(),
                raft_leader: status.role == mfsha_raft::Role::Leader,
            }
        };
        let grace = meta.raft().election_timeout();
        let leadership = Self::from_fn(Arc::new(source), grace, book, shutdown.clone());
        tokio::spawn(follow_book(meta, leadership.book.clone(), shutdown));
        leadership
    }

    /// Watches whatever `source` reports (tests give a fake); a lapsed lease ends this
    /// master's office after `grace`.
    pub fn from_fn(
        source: Source,
        grace: Duration,
        book: AddressBook,
        shutdown: Shutdown,
    ) -> Leadership {
        let first = source();
        let (tx, changes) = watch::channel(Office { lead: first, holds: first.leading });
        let epoch = Arc::new(Mutex::new(None));
        tokio::spawn(poll(source.clone(), grace, tx, epoch.clone(), shutdown));
        Leadership { source, changes, book: Arc::new(RwLock::new(book)), epoch }
    }

    /// The node's leadership right now (not the last poll).
    pub fn now(&self) -> Lead {
        (self.source)()
    }

    /// The term in which this master leads now, if it does.
    pub fn leading_term(&self) -> Option<u64> {
        let lead = self.now();
        lead.leading.then_some(lead.term)
    }

    /// Since when this master leads in the term it leads in now (`None`: it does not lead).
    pub fn epoch(&self) -> Option<Epoch> {
        note_epoch(&self.epoch, self.now())
    }

    /// Who leads as this master sees it now, with the leader's addresses from the book.
    pub fn hint(&self) -> LeaderHint {
        let lead = self.now();
        let addrs = match lead.leader_id {
            0 => None,
            id => self.book.read().get(id).cloned(),
        };
        let addrs = addrs.unwrap_or_default();
        LeaderHint {
            term: lead.term,
            leader_id: lead.leader_id,
            client: addrs.client,
            chunkserver: addrs.chunkserver,
            logger: addrs.logger,
            // Said where a hint leaves for a client (`WhoLeads`), by the service that knows it.
            cluster_id: String::new(),
        }
    }

    /// The address book as it is now.
    pub fn book(&self) -> AddressBook {
        self.book.read().clone()
    }

    /// Resolves once this master no longer leads in `term` (at once if it does not now).
    pub async fn ended(&self, term: u64) {
        let mut changes = self.changes.clone();
        // Fails only when the poller stopped (shutdown): then the connection ends anyway.
        let _ = changes.wait_for(|office| !(office.holds && office.lead.term == term)).await;
    }

    /// Resolves the next time this master stops leading: after the current term if it leads
    /// now, otherwise after the next term it leads in.
    pub async fn next_step_down(&self) {
        let mut changes = self.changes.clone();
        let term = changes.wait_for(|office| office.holds).await.map(|office| office.lead.term);
        match term {
            Ok(term) => self.ended(term).await,
            // The poller stopped (shutdown): the connection ends through its own shutdown.
            Err(_) => std::future::pending().await,
        }
    }
}

/// How often the replicated address book is looked at (it changes only with membership).
const BOOK_POLL: Duration = Duration::from_millis(500);

/// Keeps `book` in step with the replicated address book in the metadata.
async fn follow_book(meta: MetaHandle, book: Arc<RwLock<AddressBook>>, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(BOOK_POLL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.triggered() => return,
        }
        let members = meta.read(|state| state.members().clone());
        let mut book = book.write();
        if book.learn(&members) {
            tracing::info!(masters = ?book.describe(), "address book changed (replicated book)");
        }
    }
}

async fn poll(
    source: Source,
    grace: Duration,
    tx: watch::Sender<Office>,
    epoch: Arc<Mutex<Option<Epoch>>>,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was = *tx.borrow();
    let mut lapsed_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.triggered() => return,
        }
        let lead = source();
        note_epoch(&epoch, lead);
        lapsed_since = match lead.leading || !lead.raft_leader {
            true => None,
            false => Some(lapsed_since.unwrap_or_else(Instant::now)),
        };
        let office = Office { lead, holds: holds_office(was, lead, lapsed_since, grace) };
        if office == was {
            continue;
        }
        log_change(was, office, grace);
        was = office;
        tx.send_replace(office);
    }
}

/// True while this master leads, or is still Raft's leader in the term it held office in and
/// its lease has been out for less than `grace` (see the module documentation).
fn holds_office(was: Office, lead: Lead, lapsed_since: Option<Instant>, grace: Duration) -> bool {
    let same_term = was.holds && was.lead.term == lead.term && lead.raft_leader;
    lead.leading || (same_term && lapsed_since.is_some_and(|since| since.elapsed() < grace))
}

fn log_change(was: Office, now: Office, grace: Duration) {
    let (term, new_term, leader) = (was.lead.term, now.lead.term, now.lead.leader_id);
    if was.holds && !now.holds {
        match now.lead.raft_leader && now.lead.term == was.lead.term {
            true => tracing::warn!(
                term,
                ?grace,
                "the lease has been out for an election timeout (this master's Raft thread or \
                 its quorum is too slow: check the load and the peers): closing client, \
                 chunkserver and metalogger connections"
            ),
            false => tracing::warn!(
                term,
                new_term,
                leader,
                "no longer leader: closing client, chunkserver and metalogger connections"
            ),
        }
    } else if now.holds && was.lead.leading && !now.lead.leading {
        tracing::debug!(term, "lease lapsed while still leader: requests wait for it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_millis(300);

    fn addrs(n: u16) -> MasterAddrs {
        MasterAddrs {
            client: Some(format!("m{n}:9421")),
            chunkserver: Some(format!("m{n}:9420")),
            logger: None,
        }
    }

    /// A look at a node that Raft has as leader exactly when it serves.
    fn lead_of(term: u64, leader_id: u64, leading: bool) -> Lead {
        Lead { term, leader_id, leading, raft_leader: leading }
    }

    fn fake(first: Lead) -> (Arc<Mutex<Lead>>, Leadership) {
        let state = Arc::new(Mutex::new(first));
        let source = {
            let state = state.clone();
            Arc::new(move || *state.lock())
        };
        let book = AddressBook::of([(1, addrs(1)), (2, addrs(2))]);
        (state, Leadership::from_fn(source, GRACE, book, Shutdown::new()))
    }

    #[tokio::test]
    async fn hints_name_the_leaders_addresses_and_step_down_is_signalled() {
        let (state, lead) = fake(lead_of(3, 2, false));
        let hint = lead.hint();
        assert_eq!((hint.term, hint.leader_id), (3, 2));
        assert_eq!(hint.client.as_deref(), Some("m2:9421"));
        assert_eq!(hint.chunkserver.as_deref(), Some("m2:9420"));
        assert_eq!(hint.logger, None);
        *state.lock() = lead_of(4, 0, false);
        assert_eq!(lead.hint().client, None, "no leader, no address");
        assert_eq!(lead.epoch(), None, "not leading: no epoch");
        *state.lock() = lead_of(5, 1, true);
        assert_eq!(lead.leading_term(), Some(5));
        let epoch = lead.epoch().expect("leading in term 5");
        assert_eq!(epoch.term, 5);
        tokio::time::sleep(POLL * 2).await;
        assert_eq!(lead.epoch(), Some(epoch), "the epoch starts when leadership was first seen");
        let step_down = tokio::spawn({
            let lead = lead.clone();
            async move { lead.next_step_down().await }
        });
        tokio::time::sleep(POLL * 5).await;
        assert!(!step_down.is_finished(), "still leading in term 5");
        *state.lock() = lead_of(6, 2, false);
        tokio::time::timeout(Duration::from_secs(2), step_down)
            .await
            .expect("step-down noticed within a few polls")
            .unwrap();
    }

    #[tokio::test]
    async fn a_lapsed_lease_ends_office_only_after_the_grace_or_when_raft_moves_on() {
        let (state, lead) = fake(lead_of(5, 1, true));
        let ended = |lead: &Leadership| {
            let lead = lead.clone();
            tokio::spawn(async move { lead.ended(5).await })
        };
        // A lapse shorter than the grace: the connections stay.
        let waiting = ended(&lead);
        *state.lock() = Lead { leading: false, ..lead_of(5, 1, true) };
        tokio::time::sleep(GRACE / 2).await;
        assert!(!waiting.is_finished(), "a short lapse must not end the office");
        *state.lock() = lead_of(5, 1, true);
        tokio::time::sleep(POLL * 3).await;
        assert!(!waiting.is_finished(), "the lease came back");
        // A lapse that lasts: the office ends after the grace, not before.
        let started = Instant::now();
        *state.lock() = Lead { leading: false, ..lead_of(5, 1, true) };
        tokio::time::timeout(GRACE * 3, waiting).await.expect("ended after the grace").unwrap();
        assert!(started.elapsed() >= GRACE, "ended after {:?}", started.elapsed());
        // Raft moving on (another leader, same term seen as follower) ends it at once.
        *state.lock() = lead_of(6, 1, true);
        tokio::time::sleep(POLL * 3).await;
        let waiting = tokio::spawn({
            let lead = lead.clone();
            async move { lead.ended(6).await }
        });
        tokio::time::sleep(POLL * 3).await;
        assert!(!waiting.is_finished());
        let started = Instant::now();
        *state.lock() = lead_of(6, 2, false);
        tokio::time::timeout(GRACE, waiting).await.expect("ended at once").unwrap();
        assert!(started.elapsed() < GRACE / 2, "took {:?}", started.elapsed());
    }
}
