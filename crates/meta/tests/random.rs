//! Seeded random operations against one `State`: invariants after every step, exactly-once
//! retries, then replay from scratch, the accumulated changes and a snapshot must all give
//! the same digest. Set `MFSHA_META_SEED=<n>` to rerun one seed; a failure prints its seed
//! and step.

mod common;

use common::*;
use mfsha_meta::{ClientTag, Entry, Op, Outcome, Record, State, Table};
use mfsha_proto::types::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};

const STEPS: usize = 2000;
const SEEDS: [u64; 3] = [1, 0xdead_beef, 20_240_601];
const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const SESSIONS: [SessionId; 3] = [1, 2, 3];

/// Prints the seed and step if the step panics (invariant broken, assertion in apply, …).
struct Tripwire {
    seed: u64,
    step: usize,
}

impl Drop for Tripwire {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "random ops failed: seed {} step {} (rerun: MFSHA_META_SEED={})",
                self.seed, self.step, self.seed
            );
        }
    }
}

/// What the test knows about the filesystem, gathered through the public read API.
struct View {
    dirs: Vec<Ino>,
    /// Every (parent, name, ino) reachable from the root.
    entries: Vec<(Ino, String, Ino)>,
    files: Vec<Ino>,
    trash: Vec<Ino>,
    chunks: Vec<ChunkId>,
    /// Inodes with extended attributes.
    xattrs: Vec<Ino>,
    /// (session, inode) pairs currently acquired.
    acquired: Vec<(SessionId, Ino)>,
}

fn view(state: &State) -> View {
    let mut v = View {
        dirs: vec![],
        entries: vec![],
        files: vec![],
        trash: vec![],
        chunks: vec![],
        xattrs: vec![],
        acquired: vec![],
    };
    let mut stack = vec![ROOT_INO];
    while let Some(dir) = stack.pop() {
        v.dirs.push(dir);
        let (list, _) = state.readdir(dir, 0, u32::MAX).unwrap();
        for entry in list {
            match entry.attr.kind {
                FileKind::Directory => stack.push(entry.attr.ino),
                FileKind::File => v.files.push(entry.attr.ino),
                _ => {}
            }
            v.entries.push((dir, entry.name, entry.attr.ino));
        }
    }
    v.trash = state.trash().map(|(ino, _, _)| ino).collect();
    v.files.extend(state.sustained());
    v.files.extend(&v.trash);
    v.files.sort_unstable();
    v.files.dedup();
    v.chunks = state.chunks().map(|(id, _)| id).collect();
    v.chunks.sort_unstable();
    let inodes = v.entries.iter().map(|e| e.2).chain(v.files.iter().copied());
    v.xattrs = inodes.filter(|i| state.listxattr(*i).is_ok_and(|x| !x.is_empty())).collect();
    for (session, _, _) in state.sessions() {
        v.acquired.extend(state.acquired(session).map(|(ino, _)| (session, ino)));
    }
    v
}

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.rng.gen_range(0..items.len())].clone())
    }

    fn name(&mut self) -> String {
        match self.rng.gen_range(0..40) {
            0 => String::new(),
            1 => "..".into(),
            2 => "x".repeat(NAME_MAX + 1),
            _ => self.pick(&NAMES).unwrap().to_string(),
        }
    }

    /// Mostly a fresh id, sometimes one in use.
    fn ino(&mut self, state: &State, v: &View) -> Ino {
        match self.rng.gen_range(0..20) {
            0 => self.pick(&v.files).unwrap_or(ROOT_INO),
            _ => state.next_free_ino() + self.rng.gen_range(0..3),
        }
    }

    fn chunk_id(&mut self, state: &State, v: &View) -> ChunkId {
        match self.rng.gen_range(0..20) {
            0 => self.pick(&v.chunks).unwrap_or(0),
            _ => state.next_free_chunk_id(),
        }
    }

    fn dir(&mut self, v: &View) -> Ino {
        if self.rng.gen_range(0..30) == 0 {
            return self.pick(&v.files).unwrap_or(ROOT_INO);
        }
        self.pick(&v.dirs).unwrap()
    }

    /// An existing name mostly, sometimes a random one.
    fn place(&mut self, v: &View) -> (Ino, String) {
        match self.pick(&v.entries) {
            Some((parent, name, _)) if self.rng.gen_bool(0.8) => (parent, name),
            _ => (self.dir(v), self.name()),
        }
    }

    fn any_ino(&mut self, v: &View) -> Ino {
        let all: Vec<Ino> = v.entries.iter().map(|e| e.2).chain(v.trash.iter().copied()).collect();
        self.pick(&all).unwrap_or(ROOT_INO)
    }

    fn size(&mut self) -> u64 {
        let sizes = [0, 1, 100, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 5, 3 * CHUNK_BYTES + 7];
        self.pick(&sizes).unwrap()
    }

    fn time(&mut self) -> Option<TimeSet> {
        match self.rng.gen_range(0..4) {
            0 => Some(TimeSet::Now),
            1 => Some(TimeSet::At(Timestamp::new(self.rng.gen_range(-100..1 << 35), 7))),
            _ => None,
        }
    }

    fn op(&mut self, state: &State, v: &View) -> Op {
        match self.rng.gen_range(0..100) {
            0..=11 => self.create(state, v),
            12..=17 => Op::Mkdir {
                parent: self.dir(v),
                name: self.name(),
                ino: self.ino(state, v),
                mode: self.rng.gen_range(0..0o10000),
                umask: 0o022,
                uid: 1,
                gid: self.rng.gen_range(0..3),
            },
            18..=20 => Op::Symlink {
                parent: self.dir(v),
                name: self.name(),
                ino: self.ino(state, v),
                target: "t".repeat(self.rng.gen_range(0..5)),
                uid: 0,
                gid: 0,
            },
            21..=24 => Op::Link { ino: self.any_ino(v), parent: self.dir(v), name: self.name() },
            25..=31 => {
                let (parent, name) = self.place(v);
                Op::Unlink { parent, name }
            }
            32..=35 => {
                let (parent, name) = self.place(v);
                Op::Rmdir { parent, name }
            }
            36..=45 => self.rename(v),
            46..=53 => self.setattr(state, v),
            54..=58 => self.xattr(v),
            59..=70 => self.write(state, v),
            71..=73 => Op::SetGoal {
                ino: self.any_ino(v),
                goal: self.rng.gen_range(0..=MAX_GOAL + 1),
                recursive: self.rng.gen_bool(0.5),
            },
            74..=77 => Op::SetTrashTime {
                ino: self.any_ino(v),
                seconds: self.pick(&[0, 0, 60, 86_400]).unwrap(),
                recursive: self.rng.gen_bool(0.5),
            },
            78..=80 => Op::Purge { ino: self.pick(&v.trash).unwrap_or(ROOT_INO) },
            81..=83 => Op::Undelete { ino: self.pick(&v.trash).unwrap_or(ROOT_INO) },
            84..=92 => self.session_op(state, v),
            93..=94 => Op::SetChunkVersion {
                chunk_id: self.pick(&v.chunks).unwrap_or(1),
                version: self.rng.gen_range(1..5),
            },
            95 => self.member_op(),
            _ => Op::Noop,
        }
    }

    /// Few ids, so that removals of present members happen.
    fn member_op(&mut self) -> Op {
        let id = self.rng.gen_range(1..=3);
        if self.rng.gen_bool(0.5) {
            return Op::RemoveMember { id };
        }
        let port = self.rng.gen_range(1..100);
        let member = mfsha_meta::Member {
            peer: format!("m{id}:{port}"),
            client: Some(format!("m{id}:9421")),
            chunkserver: None,
            logger: None,
        };
        Op::SetMember { id, member }
    }

    fn create(&mut self, state: &State, v: &View) -> Op {
        let kinds =
            [FileKind::File, FileKind::File, FileKind::File, FileKind::Fifo, FileKind::CharDevice];
        Op::Create {
            parent: self.dir(v),
            name: self.name(),
            ino: self.ino(state, v),
            kind: self.pick(&kinds).unwrap(),
            mode: self.rng.gen_range(0..0o10000),
            umask: 0o022,
            uid: 1,
            gid: 1,
            rdev: 5,
        }
    }

    fn rename(&mut self, v: &View) -> Op {
        let (parent, name) = self.place(v);
        let (new_parent, new_name) = self.place(v);
        let flags = self.pick(&[0, 0, 0, 1, 2, 3]).unwrap();
        Op::Rename { parent, name, new_parent, new_name, flags }
    }

    fn setattr(&mut self, state: &State, v: &View) -> Op {
        let set = SetAttr {
            mode: self.rng.gen_bool(0.3).then(|| self.rng.gen_range(0..0o10000)),
            uid: self.rng.gen_bool(0.2).then_some(3),
            gid: self.rng.gen_bool(0.2).then_some(4),
            size: self.rng.gen_bool(0.6).then(|| self.size()),
            atime: self.time(),
            mtime: self.time(),
        };
        let ino = if self.rng.gen_bool(0.8) { self.pick(&v.files) } else { None };
        Op::SetAttr {
            ino: ino.unwrap_or_else(|| self.any_ino(v)),
            set,
            cow_chunk_id: self.chunk_id(state, v),
        }
    }

    fn xattr(&mut self, v: &View) -> Op {
        let ino = match self.pick(&v.xattrs) {
            Some(ino) if self.rng.gen_bool(0.5) => ino,
            _ => self.any_ino(v),
        };
        let name = self.pick(&["user.a", "user.b", ""]).unwrap().to_string();
        if self.rng.gen_bool(0.3) {
            return Op::RemoveXattr { ino, name };
        }
        let value = serde_bytes::ByteBuf::from(vec![7; self.rng.gen_range(0..10)]);
        Op::SetXattr { ino, name, value, flags: self.rng.gen_range(0..4) }
    }

    fn write(&mut self, state: &State, v: &View) -> Op {
        let ino = self.pick(&v.files).unwrap_or(ROOT_INO);
        let index = self.rng.gen_range(0..4);
        if self.rng.gen_bool(0.5) {
            return Op::WriteChunk { ino, index, new_chunk_id: self.chunk_id(state, v) };
        }
        let mut chunk_id = state.file_chunk(ino, index).unwrap_or(0);
        if self.rng.gen_range(0..10) == 0 {
            chunk_id = self.pick(&v.chunks).unwrap_or(0);
        }
        let file_size = u64::from(index) * CHUNK_BYTES + self.rng.gen_range(0..=CHUNK_BYTES);
        Op::WriteChunkEnd { ino, index, chunk_id, file_size }
    }

    fn session_op(&mut self, state: &State, v: &View) -> Op {
        let session = self.pick(&SESSIONS).unwrap();
        match self.rng.gen_range(0..10) {
            0 => {
                let root = if self.rng.gen_bool(0.3) { self.dir(v) } else { ROOT_INO };
                // Few tokens, so that opens with a token of a live session happen.
                let token = if self.rng.gen_bool(0.5) { 0 } else { self.rng.gen_range(1..=3) };
                Op::OpenSession { session, info: format!("s{session}"), root, token }
            }
            1 if self.rng.gen_bool(0.5) => Op::CloseSession { session },
            1 => Op::ExpireSession { session },
            2..=4 => Op::Acquire { session, ino: self.pick(&v.files).unwrap_or(ROOT_INO) },
            5 => Op::CreateOpen {
                session,
                parent: self.dir(v),
                name: self.name(),
                ino: self.ino(state, v),
                mode: self.rng.gen_range(0..0o10000),
                umask: 0o022,
                uid: 2,
                gid: 2,
            },
            6 => {
                // The leader frees sustained files, now and then naming others too.
                let mut inos: Vec<Ino> = state.sustained().collect();
                if let Some(other) = self.pick(&v.files) {
                    inos.push(other);
                }
                Op::Free { inos }
            }
            _ => match self.pick(&v.acquired) {
                Some((session, ino)) if self.rng.gen_bool(0.8) => Op::Release { session, ino },
                _ => Op::Release { session, ino: self.pick(&v.files).unwrap_or(ROOT_INO) },
            },
        }
    }
}

/// The test's own record of each session's last tagged request, to check retries against.
/// A tagged entry that was applied, and its reply.
type Sent = (Entry, Result<Outcome, Status>);

#[derive(Default)]
struct Retries {
    next_seq: HashMap<SessionId, u64>,
    /// Every tagged entry applied per live session, by seq, with its reply.
    sent: HashMap<SessionId, BTreeMap<u64, Sent>>,
    /// Retries answered from the stored reply, and stale ones refused.
    answered: u32,
    refused: u32,
}

/// Per operation kind: (succeeded, failed).
type Tally = BTreeMap<&'static str, (u32, u32)>;

fn run_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut g = Gen { rng: StdRng::seed_from_u64(seed ^ 0x5eed) };
    let mut state = State::new(T0);
    let mut now = T0;
    let mut log: Vec<Entry> = Vec::new();
    let mut store: BTreeMap<(Table, Vec<u8>), Vec<u8>> = BTreeMap::new();
    let mut retries = Retries::default();
    let mut tally = Tally::new();
    for step in 0..STEPS {
        let _tripwire = Tripwire { seed, step };
        now = Timestamp::new(now.secs + rng.gen_range(0..3), rng.gen_range(0..1_000_000_000));
        let retry = if rng.gen_range(0..20) == 0 {
            retry_entry(&mut rng, &retries, &state, now)
        } else {
            None
        };
        let entry = retry.unwrap_or_else(|| {
            let op = g.op(&state, &view(&state));
            tag(&mut rng, &mut retries, &state, Entry { now, client: None, op })
        });
        let before = Before::capture(&state, &entry, &retries);
        let reply = state.apply(state.applied_index() + 1, &entry);
        log.push(entry.clone());
        if let Err(problems) = state.check_invariants() {
            panic!("seed {seed} step {step}: {entry:?} broke invariants: {problems:#?}");
        }
        let counter = tally.entry(op_name(&entry.op)).or_insert((0, 0));
        if reply.is_ok() {
            counter.0 += 1;
        } else {
            counter.1 += 1;
        }
        check_step(&before, &state, &entry, &reply, &mut retries, (seed, step));
        for change in state.take_changes() {
            match change.value {
                Some(value) => store.insert((change.table, change.key), value),
                None => store.remove(&(change.table, change.key)),
            };
        }
        if step % 500 == 499 {
            check_reload(&state, &store, seed, step);
        }
    }
    check_reload(&state, &store, seed, STEPS);
    let mut replay = State::new(T0);
    for (i, entry) in log.iter().enumerate() {
        replay.apply(i as u64 + 1, entry).ok();
    }
    assert_eq!(replay.digest(), state.digest(), "seed {seed}: replay from scratch diverged");
    check_coverage(seed, &tally, &retries, &state);
}

/// Every kind of operation must have succeeded sometimes, or this test proves little.
fn check_coverage(seed: u64, tally: &Tally, retries: &Retries, state: &State) {
    if std::env::var_os("MFSHA_META_VERBOSE").is_some() {
        eprintln!("seed {seed}: (ok, err) per op: {tally:?}; final {:?}", state.counts());
        eprintln!(
            "seed {seed}: retries answered {}, refused {}",
            retries.answered, retries.refused
        );
    }
    for name in ALL_OPS {
        let (ok, err) = tally.get(name).copied().unwrap_or((0, 0));
        assert!(ok > 0, "seed {seed}: {name} never succeeded ({err} errors): {tally:?}");
    }
    assert!(retries.answered > 0 && retries.refused > 0, "seed {seed}: no retries exercised");
}

const ALL_OPS: [&str; 28] = [
    "Noop",
    "OpenSession",
    "CloseSession",
    "ExpireSession",
    "Create",
    "CreateOpen",
    "Mkdir",
    "Symlink",
    "Link",
    "Unlink",
    "Rmdir",
    "Rename",
    "RenameExchange",
    "SetAttr",
    "SetXattr",
    "RemoveXattr",
    "SetGoal",
    "SetTrashTime",
    "Acquire",
    "Release",
    "WriteChunk",
    "WriteChunkEnd",
    "Purge",
    "Undelete",
    "SetChunkVersion",
    "SetMember",
    "RemoveMember",
    "Free",
];

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Noop => "Noop",
        Op::OpenSession { .. } => "OpenSession",
        Op::CloseSession { .. } => "CloseSession",
        Op::ExpireSession { .. } => "ExpireSession",
        Op::Create { .. } => "Create",
        Op::CreateOpen { .. } => "CreateOpen",
        Op::Mkdir { .. } => "Mkdir",
        Op::Symlink { .. } => "Symlink",
        Op::Link { .. } => "Link",
        Op::Unlink { .. } => "Unlink",
        Op::Rmdir { .. } => "Rmdir",
        Op::Rename { flags: 2, .. } => "RenameExchange",
        Op::Rename { .. } => "Rename",
        Op::SetAttr { .. } => "SetAttr",
        Op::SetXattr { .. } => "SetXattr",
        Op::RemoveXattr { .. } => "RemoveXattr",
        Op::SetGoal { .. } => "SetGoal",
        Op::SetTrashTime { .. } => "SetTrashTime",
        Op::Acquire { .. } => "Acquire",
        Op::Release { .. } => "Release",
        Op::WriteChunk { .. } => "WriteChunk",
        Op::WriteChunkEnd { .. } => "WriteChunkEnd",
        Op::Purge { .. } => "Purge",
        Op::Undelete { .. } => "Undelete",
        Op::SetChunkVersion { .. } => "SetChunkVersion",
        Op::SetMember { .. } => "SetMember",
        Op::RemoveMember { .. } => "RemoveMember",
        Op::Free { .. } => "Free",
    }
}

/// Tags half the entries with a live session and its next sequence number.
fn tag(rng: &mut StdRng, retries: &mut Retries, state: &State, mut entry: Entry) -> Entry {
    let live: Vec<SessionId> = state.sessions().map(|(id, _, _)| id).collect();
    if live.is_empty() || rng.gen_bool(0.5) || matches!(entry.op, Op::OpenSession { .. }) {
        return entry;
    }
    let session = live[rng.gen_range(0..live.len())];
    let seq = retries.next_seq.entry(session).or_insert(0);
    *seq += 1;
    entry.client = Some(ClientTag { session, seq: *seq });
    entry
}

/// A retry of a live session's last request, or of an older one (with a later clock, as a
/// new leader would propose it).
fn retry_entry(
    rng: &mut StdRng,
    retries: &Retries,
    state: &State,
    now: Timestamp,
) -> Option<Entry> {
    let live: Vec<SessionId> = state.sessions().map(|(id, _, _)| id).collect();
    let session = *live.get(rng.gen_range(0..live.len().max(1)))?;
    let sent = retries.sent.get(&session)?;
    let (first, last) = (*sent.keys().next()?, *sent.keys().next_back()?);
    // Mostly the last request; sometimes any earlier one, inside the window or not.
    let seq = if rng.gen_bool(0.6) { last } else { rng.gen_range(first..=last) };
    sent.range(seq..).next().map(|(_, (entry, _))| Entry { now, ..entry.clone() })
}

/// What a step needs to remember from before it ran.
struct Before {
    /// The records, when the entry retries its session's last request (must not mutate).
    records: Option<Vec<Record>>,
    /// The file size, for a SetAttr that sets one.
    size: Option<u64>,
    /// The entry opens a session whose id is not in use (it may still find its token's).
    opens_new_id: bool,
}

impl Before {
    fn capture(state: &State, entry: &Entry, retries: &Retries) -> Before {
        let retry = entry.client.is_some_and(|tag| retries.kind(tag) == SeqKind::InWindow);
        let size = match entry.op {
            Op::SetAttr { ino, set: SetAttr { size: Some(_), .. }, .. } => {
                state.getattr(ino).ok().map(|a| a.size)
            }
            _ => None,
        };
        let opens_new_id = matches!(entry.op,
            Op::OpenSession { session, .. } if state.session_root(session).is_none());
        Before { records: retry.then(|| logical_records(state)), size, opens_new_id }
    }
}

fn check_step(
    before: &Before,
    after: &State,
    entry: &Entry,
    reply: &Result<Outcome, Status>,
    retries: &mut Retries,
    (seed, step): (u64, usize),
) {
    if let (Op::OpenSession { session, token, .. }, Ok(outcome)) = (&entry.op, reply) {
        let Outcome::Session { session: opened, .. } = outcome else {
            panic!("seed {seed} step {step}: OpenSession answered {outcome:?}");
        };
        let by_token = (*token != 0).then(|| after.session_by_token(*token)).flatten();
        assert_eq!(by_token.map(|(id, _)| id).unwrap_or(*session), *opened, "seed {seed}");
        if before.opens_new_id && opened == session {
            // A new session with a reused id starts its sequence afresh.
            retries.sent.remove(session);
            retries.next_seq.remove(session);
        }
    }
    if let (Op::SetAttr { ino, set: SetAttr { size: Some(size), .. }, .. }, Ok(_)) =
        (&entry.op, reply)
    {
        // A shrink leaves no chunk past the end. (Growing keeps chunks a write in progress
        // put past the old end: its WriteChunkEnd will extend the size over them.)
        let last = after.file_chunk_list(*ino).unwrap().last().map(|(i, _)| u64::from(*i));
        // (A retry answered from its stored reply applies nothing: no shrink to check.)
        if before.records.is_none() && before.size.is_some_and(|old| old > *size) {
            let past_end = last.is_some_and(|i| i >= size.div_ceil(CHUNK_BYTES));
            assert!(!past_end, "seed {seed} step {step}: chunks past the end after truncate");
        }
    }
    let Some(tag) = entry.client else { return };
    match retries.kind(tag) {
        SeqKind::InWindow => {
            let stored = &retries.sent[&tag.session][&tag.seq].1;
            assert_eq!(reply, stored, "seed {seed} step {step}: retry answered differently");
            let unchanged = before.records.as_ref().is_some_and(|r| *r == logical_records(after));
            assert!(unchanged, "seed {seed} step {step}: retry mutated the state");
            retries.answered += 1;
        }
        SeqKind::BelowWindow => {
            assert_eq!(reply, &Err(Status::Invalid), "seed {seed} step {step}: stale seq");
            retries.refused += 1;
        }
        SeqKind::New => {
            let stored = after.session_reply(tag.session, tag.seq);
            let open = after.session_root(tag.session).is_some();
            assert_eq!(stored, open.then(|| reply.clone()), "seed {seed} step {step}: stored");
            let sent = retries.sent.entry(tag.session).or_default();
            sent.insert(tag.seq, (entry.clone(), reply.clone()));
        }
    }
}

/// Where a tagged entry's seq stands in the model of its session's reply window.
#[derive(Debug, PartialEq, Eq)]
enum SeqKind {
    New,
    InWindow,
    BelowWindow,
}

impl Retries {
    fn kind(&self, tag: ClientTag) -> SeqKind {
        let Some(sent) = self.sent.get(&tag.session) else { return SeqKind::New };
        let max = sent.keys().next_back().copied().unwrap_or(0);
        if tag.seq + mfsha_meta::REPLY_WINDOW <= max {
            SeqKind::BelowWindow
        } else if sent.contains_key(&tag.seq) {
            SeqKind::InWindow
        } else {
            SeqKind::New
        }
    }
}

fn check_reload(
    state: &State,
    store: &BTreeMap<(Table, Vec<u8>), Vec<u8>>,
    seed: u64,
    step: usize,
) {
    let records: Vec<_> = store.iter().map(|((t, k), v)| (*t, k.clone(), v.clone())).collect();
    assert!(
        records == state.all_records(),
        "seed {seed} step {step}: changes differ from the image"
    );
    let loaded =
        State::load(records).unwrap_or_else(|e| panic!("seed {seed} step {step}: load: {e}"));
    assert_eq!(loaded.digest(), state.digest(), "seed {seed} step {step}: load diverged");
    let restored = State::from_snapshot(&state.to_snapshot())
        .unwrap_or_else(|e| panic!("seed {seed} step {step}: snapshot: {e}"));
    assert_eq!(restored.digest(), state.digest(), "seed {seed} step {step}: snapshot diverged");
}

#[test]
fn random_operations_keep_invariants_and_replay_identically() {
    let seeds: Vec<u64> = match std::env::var("MFSHA_META_SEED") {
        Ok(seed) => vec![seed.parse().expect("MFSHA_META_SEED must be a number")],
        Err(_) => SEEDS.to_vec(),
    };
    for seed in seeds {
        run_seed(seed);
    }
}
