//! [`Ledger`]: the simulator's state machine. A command is a proposal id (u64); the state is
//! the sequence of (index, id) applied and a running digest of it, so two replicas that applied
//! the same commands at the same indexes have the same digest, and "applied exactly once" is a
//! question the state can answer.

use crate::state_machine::{SnapshotEncoder, StateMachine};
use crate::store::{TableChange, TableRecord};

const TABLE_LOG: &str = "log";
const TABLE_META: &str = "meta";
const KEY_APPLIED: &[u8] = b"applied";

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    applied: u64,
    digest: u64,
    /// (index, proposal id) of every non-empty command, in order.
    commands: Vec<(u64, u64)>,
    changes: Vec<TableChange>,
}

impl Ledger {
    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn commands(&self) -> &[(u64, u64)] {
        &self.commands
    }

    fn fold(digest: u64, index: u64, id: u64) -> u64 {
        // FNV-1a over the pair: cheap, deterministic, order-sensitive.
        let mut hash = digest ^ 0xcbf2_9ce4_8422_2325;
        for byte in index.to_le_bytes().into_iter().chain(id.to_le_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }

    fn meta_value(&self) -> Vec<u8> {
        let mut value = self.applied.to_le_bytes().to_vec();
        value.extend_from_slice(&self.digest.to_le_bytes());
        value
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = self.meta_value();
        for (index, id) in &self.commands {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64, String> {
    let slice = bytes.get(at..at + 8).ok_or("truncated ledger")?;
    Ok(u64::from_le_bytes(slice.try_into().expect("8 bytes")))
}

impl StateMachine for Ledger {
    type Output = u64;

    const TABLES: &'static [&'static str] = &[TABLE_LOG, TABLE_META];

    fn bootstrap(index: u64) -> Ledger {
        Ledger { applied: index, ..Ledger::default() }
    }

    fn empty() -> Ledger {
        Ledger::default()
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    /// The output is the index the command was applied at.
    fn apply(&mut self, index: u64, command: &[u8]) -> Result<u64, String> {
        assert_eq!(index, self.applied + 1, "ledger applied out of order");
        self.applied = index;
        if !command.is_empty() {
            let id = u64::from_le_bytes(command.try_into().map_err(|_| "not a proposal id")?);
            self.commands.push((index, id));
            self.digest = Ledger::fold(self.digest, index, id);
            self.changes.push((
                TABLE_LOG,
                index.to_be_bytes().to_vec(),
                Some(id.to_le_bytes().to_vec()),
            ));
        }
        self.changes.push((TABLE_META, KEY_APPLIED.to_vec(), Some(self.meta_value())));
        Ok(index)
    }

    fn empty_command() -> Vec<u8> {
        Vec::new()
    }

    fn take_changes(&mut self) -> Vec<TableChange> {
        std::mem::take(&mut self.changes)
    }

    fn records(&self) -> Vec<TableRecord> {
        let mut records = vec![(TABLE_META, KEY_APPLIED.to_vec(), self.meta_value())];
        for (index, id) in &self.commands {
            records.push((TABLE_LOG, index.to_be_bytes().to_vec(), id.to_le_bytes().to_vec()));
        }
        records
    }

    fn load(records: Vec<TableRecord>) -> Result<Ledger, String> {
        let mut ledger = Ledger::default();
        for (table, key, value) in records {
            match table {
                TABLE_META => {
                    ledger.applied = u64_at(&value, 0)?;
                    ledger.digest = u64_at(&value, 8)?;
                }
                TABLE_LOG => {
                    let index = u64::from_be_bytes(key.try_into().map_err(|_| "bad log key")?);
                    ledger.commands.push((index, u64_at(&value, 0)?));
                }
                other => return Err(format!("unknown table {other}")),
            }
        }
        ledger.commands.sort_unstable();
        Ok(ledger)
    }

    fn to_snapshot(&self) -> Vec<u8> {
        self.encode()
    }

    fn snapshot_encoder(applied_index: u64, _capacity: usize) -> Box<dyn SnapshotEncoder> {
        Box::new(LedgerEncoder { applied_index, meta: None, commands: Vec::new() })
    }

    fn from_snapshot(data: &[u8]) -> Result<Ledger, String> {
        let mut ledger =
            Ledger { applied: u64_at(data, 0)?, digest: u64_at(data, 8)?, ..Ledger::default() };
        let mut at = 16;
        while at < data.len() {
            ledger.commands.push((u64_at(data, at)?, u64_at(data, at + 8)?));
            at += 16;
        }
        Ok(ledger)
    }
}

/// The ledger's snapshot from its stored records: the commands (log table, in index order),
/// then the meta record that goes first in the blob.
struct LedgerEncoder {
    applied_index: u64,
    meta: Option<Vec<u8>>,
    commands: Vec<u8>,
}

impl SnapshotEncoder for LedgerEncoder {
    fn add(&mut self, table: &'static str, key: &[u8], value: &[u8]) -> Result<(), String> {
        match table {
            TABLE_META if value.len() == 16 => self.meta = Some(value.to_vec()),
            TABLE_LOG if key.len() == 8 && value.len() == 8 => {
                let index = u64::from_be_bytes(key.try_into().expect("8 bytes"));
                self.commands.extend_from_slice(&index.to_le_bytes());
                self.commands.extend_from_slice(value);
            }
            other => return Err(format!("bad ledger record in table {other}")),
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Vec<u8> {
        let mut out = self.meta.expect("a stored ledger has its meta record");
        assert_eq!(u64_at(&out, 0), Ok(self.applied_index), "ledger meta at the snapshot index");
        out.extend_from_slice(&self.commands);
        out
    }
}
