//! The operator's views of a [`ClusterStatus`]: chunkservers, disks, chunk health and
//! sessions, as `mfscli -SCS/-SHD/-SIC/-SMS` show them. `mfsha status --servers` (and
//! `--disks`, `--chunks`, `--sessions`) and the status page's `/api/...` give the same rows,
//! so a script reads one shape whichever it asks.

use crate::client::{ChunkMatrix, ClusterStatus};
use serde::{Deserialize, Serialize};

/// One chunkserver (`--servers`, `/api/servers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRow {
    pub addr: String,
    pub labels: Vec<String>,
    pub chunks: u64,
    pub used_bytes: u64,
    pub total_bytes: u64,
    /// Disks that returned I/O errors.
    pub damaged_disks: usize,
    /// Disks the operator marked for removal.
    pub marked_disks: usize,
}

/// One data directory of a chunkserver (`--disks`, `/api/disks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRow {
    pub server: String,
    pub path: String,
    pub chunks: u64,
    pub used_bytes: u64,
    pub total_bytes: u64,
    pub damaged: bool,
    pub marked_for_removal: bool,
    /// Marked, and every chunk on it has its goal elsewhere: it can be pulled.
    pub safe_to_remove: bool,
}

/// Chunks by how their valid copies compare with their goal (`--chunks`, `/api/chunks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHealth {
    pub total: u64,
    /// No valid copy: the data is unreadable until a copy comes back.
    pub missing: u64,
    /// One valid copy left (counted in `undergoal` too).
    pub endangered: u64,
    pub undergoal: u64,
    pub stable: u64,
    pub overgoal: u64,
    /// `matrix[goal][valid copies]`; the last row and column count 10 and more.
    pub matrix: ChunkMatrix,
}

/// One client session (`--sessions`, `/api/sessions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    pub session: u64,
    /// Where it connects from.
    pub peer: String,
    /// Host and mount point, as the mount announced them.
    pub info: String,
    pub open_files: u64,
}

pub fn servers(status: &ClusterStatus) -> Vec<ServerRow> {
    let row = |cs: &crate::client::ChunkserverStatus| ServerRow {
        addr: cs.addr.clone(),
        labels: cs.labels.clone(),
        chunks: cs.chunks,
        used_bytes: cs.used_bytes,
        total_bytes: cs.total_bytes,
        damaged_disks: cs.disks.iter().filter(|d| d.damaged).count(),
        marked_disks: cs.disks.iter().filter(|d| d.marked_for_removal).count(),
    };
    status.chunkservers.iter().map(row).collect()
}

pub fn disks(status: &ClusterStatus) -> Vec<DiskRow> {
    let mut rows = Vec::new();
    for cs in &status.chunkservers {
        for d in &cs.disks {
            rows.push(DiskRow {
                server: cs.addr.clone(),
                path: d.path.clone(),
                chunks: d.chunks,
                used_bytes: d.used_bytes,
                total_bytes: d.total_bytes,
                damaged: d.damaged,
                marked_for_removal: d.marked_for_removal,
                safe_to_remove: d.safe_to_remove,
            });
        }
    }
    rows
}

pub fn chunks(status: &ClusterStatus) -> ChunkHealth {
    ChunkHealth {
        total: status.chunks,
        missing: status.chunks_missing,
        endangered: status.chunks_endangered,
        undergoal: status.chunks_undergoal,
        stable: status.chunks_stable,
        overgoal: status.chunks_overgoal,
        matrix: status.chunk_matrix,
    }
}

pub fn sessions(status: &ClusterStatus) -> Vec<SessionRow> {
    let row = |c: &crate::client::ClientStatus| SessionRow {
        session: c.session,
        peer: c.peer.clone(),
        info: c.info.clone(),
        open_files: c.open_files,
    };
    status.clients.iter().map(row).collect()
}

/// Bytes in binary units, as `df -h` shows them.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// `part` of `whole` in percent with one decimal, `-` for an empty whole.
pub fn percent(part: u64, whole: u64) -> String {
    match whole {
        0 => "-".into(),
        _ => format!("{:.1}", part as f64 * 100.0 / whole as f64),
    }
}

/// One line of long work: "re-replication: 30 of 50 chunks (60%), 12 s so far, about 8 s
/// left".
pub fn long_work_line(w: &crate::client::LongWork) -> String {
    let amount = |n: u64| match w.unit.as_str() {
        "bytes" => bytes(n),
        unit => format!("{n} {unit}"),
    };
    let left = w.eta_ms.map_or("time left unknown yet".into(), |ms| {
        format!("about {:.0} s left", ms as f64 / 1000.0)
    });
    format!(
        "{}: {} of {} ({}%), {:.0} s so far, {left}",
        w.what,
        amount(w.done),
        amount(w.total),
        w.done * 100 / w.total.max(1),
        w.elapsed_ms as f64 / 1000.0
    )
}

/// How a cell of the chunk matrix reads: the colour classes of mfscgiserv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellClass {
    Missing,
    Endangered,
    Undergoal,
    Stable,
    Overgoal,
    /// Goal 0: chunks of deleted files waiting to go.
    Deleted,
}

impl CellClass {
    /// The class of the cell for `goal` and `valid` copies.
    pub fn of(goal: usize, valid: usize) -> CellClass {
        match (goal, valid) {
            (0, _) => CellClass::Deleted,
            (_, 0) => CellClass::Missing,
            (_, 1) if goal > 1 => CellClass::Endangered,
            _ if valid < goal => CellClass::Undergoal,
            _ if valid == goal => CellClass::Stable,
            _ => CellClass::Overgoal,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CellClass::Missing => "missing",
            CellClass::Endangered => "endangered",
            CellClass::Undergoal => "undergoal",
            CellClass::Stable => "stable",
            CellClass::Overgoal => "overgoal",
            CellClass::Deleted => "deleted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_cells_are_classed_as_mfscgiserv_colours_them() {
        assert_eq!(CellClass::of(2, 0), CellClass::Missing);
        assert_eq!(CellClass::of(2, 1), CellClass::Endangered);
        assert_eq!(CellClass::of(1, 1), CellClass::Stable, "goal 1 with its copy is stable");
        assert_eq!(CellClass::of(3, 2), CellClass::Undergoal);
        assert_eq!(CellClass::of(3, 3), CellClass::Stable);
        assert_eq!(CellClass::of(2, 3), CellClass::Overgoal);
        assert_eq!(CellClass::of(0, 2), CellClass::Deleted);
    }

    #[test]
    fn long_work_reads_as_a_sentence_with_amounts_in_their_unit() {
        let w = crate::client::LongWork {
            what: "snapshot to node 3".into(),
            done: 256 << 20,
            total: 1 << 30,
            unit: "bytes".into(),
            elapsed_ms: 4000,
            eta_ms: Some(12_000),
        };
        assert_eq!(
            long_work_line(&w),
            "snapshot to node 3: 256.0 MiB of 1.0 GiB (25%), 4 s so far, about 12 s left"
        );
    }

    #[test]
    fn disks_are_listed_per_server_with_their_state() {
        let mut status = ClusterStatus::default();
        let disk = |path: &str, damaged| crate::cs::DiskInfo {
            path: path.into(),
            total_bytes: 100,
            used_bytes: 10,
            chunks: 3,
            damaged,
            ..Default::default()
        };
        status.chunkservers.push(crate::client::ChunkserverStatus {
            addr: "10.0.0.1:9422".into(),
            disks: vec![disk("/a", false), disk("/b", true)],
            ..Default::default()
        });
        let rows = disks(&status);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].server.as_str(), rows[1].path.as_str()), ("10.0.0.1:9422", "/b"));
        assert!(rows[1].damaged && !rows[0].damaged);
        assert_eq!(servers(&status)[0].damaged_disks, 1);
    }
}
