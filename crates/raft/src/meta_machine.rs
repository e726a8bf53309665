//! The metadata state machine ([`mfsha_meta::State`]) behind [`StateMachine`]: the only file
//! of this crate that names the `meta` crate. Commands are postcard-encoded `meta::Entry`s.

use mfsha_meta::{Entry, Op, Outcome, SnapshotWriter, State, Table};
use mfsha_proto::types::{Status, Timestamp};

use crate::state_machine::{SnapshotEncoder, StateMachine};
use crate::store::{RecordVisit, TableChange, TableRecord};

/// Column family names, in `Table::ALL` order; checked against meta at compile-test time.
const META_TABLES: [&str; 7] = ["inode", "dirent", "chunk", "xattr", "session", "trash", "meta"];

impl StateMachine for State {
    type Output = Result<Outcome, Status>;

    const TABLES: &'static [&'static str] = &META_TABLES;

    fn bootstrap(index: u64) -> State {
        let now = Timestamp::now();
        let mut state = State::new(now);
        let first = Entry { now, client: None, op: Op::Noop };
        let outcome = state.apply(index, &first);
        assert_eq!(outcome, Ok(Outcome::Unit), "bootstrap Noop");
        // Bootstrap writes every record; the change list would only repeat them.
        state.take_changes();
        state
    }

    fn empty() -> State {
        // A fixed time: nothing on this node's clock may enter a replica's state. (The state
        // is replaced by the first snapshot; its cluster time starts at 0 until then.)
        let mut state = State::new(Timestamp::new(0, 0));
        state.take_changes();
        state
    }

    fn applied_index(&self) -> u64 {
        State::applied_index(self)
    }

    fn apply(&mut self, index: u64, command: &[u8]) -> Result<Self::Output, String> {
        let entry = postcard::from_bytes::<Entry>(command).map_err(|error| {
            format!(
                "committed entry {index} does not decode as a metadata entry: {error}; it was \
                 probably written by a newer mfsha: upgrade this node to the version the \
                 leader runs (`mfsha status`) and start it again. If every member runs the \
                 same version, this node's log is damaged: remove the node from the group, \
                 wipe its data directory and add it again (docs/runbooks.md, runbook 5)"
            )
        })?;
        Ok(State::apply(self, index, &entry))
    }

    fn empty_command() -> Vec<u8> {
        // A fixed time: every replica must apply exactly the same entry.
        let noop = Entry { now: Timestamp::new(0, 0), client: None, op: Op::Noop };
        postcard::to_allocvec(&noop).expect("encoding a Noop entry")
    }

    fn take_changes(&mut self) -> Vec<TableChange> {
        let changes = State::take_changes(self);
        changes.into_iter().map(|c| (c.table.name(), c.key, c.value)).collect()
    }

    fn records(&self) -> Vec<TableRecord> {
        let records = self.all_records();
        records.into_iter().map(|(table, key, value)| (table.name(), key, value)).collect()
    }

    fn visit_records(&self, visit: &mut RecordVisit<'_>) {
        State::visit_records(self, &mut |table, key, value| visit(table.name(), key, value));
    }

    fn load(records: Vec<TableRecord>) -> Result<State, String> {
        let mut typed = Vec::with_capacity(records.len());
        for (name, key, value) in records {
            let table = Table::from_name(name).ok_or_else(|| format!("unknown table {name}"))?;
            typed.push((table, key, value));
        }
        State::load(typed).map_err(|error| error.to_string())
    }

    fn to_snapshot(&self) -> Vec<u8> {
        State::to_snapshot(self)
    }

    fn from_snapshot(data: &[u8]) -> Result<State, String> {
        State::from_snapshot(data).map_err(|error| error.to_string())
    }

    fn peer_addresses(&self) -> Vec<(u64, String)> {
        self.members().iter().map(|(id, member)| (*id, member.peer.clone())).collect()
    }

    fn snapshot_encoder(applied_index: u64, capacity: usize) -> Box<dyn SnapshotEncoder> {
        Box::new(MetaEncoder(SnapshotWriter::new(applied_index, capacity)))
    }
}

/// The meta snapshot format fed from the stored tables.
struct MetaEncoder(SnapshotWriter);

impl SnapshotEncoder for MetaEncoder {
    fn add(&mut self, table: &'static str, key: &[u8], value: &[u8]) -> Result<(), String> {
        let table = Table::from_name(table).ok_or_else(|| format!("unknown table {table}"))?;
        self.0.add(table, key, value);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Vec<u8> {
        self.0.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_families_are_meta_tables() {
        let names: Vec<&str> = Table::ALL.iter().map(|table| table.name()).collect();
        assert_eq!(names, META_TABLES);
    }
}
