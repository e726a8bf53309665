//! `mfsha status --servers | --disks | --chunks | --sessions [--json]`: the `mfscli`-like
//! tables (`-SCS`, `-SHD`, chunk matrix, `-SMS`/`-SIC`) of the leader's status. The rows
//! are [`mfsha_proto::views`], the same the status page serves under `/api/...`.

use mfsha_proto::client::{ClusterStatus, CHUNK_MATRIX_SIDE};
use mfsha_proto::views::{self, bytes, percent, CellClass};
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// Which tables to print.
#[derive(Debug, Clone, Copy, Default)]
pub struct Which {
    pub servers: bool,
    pub disks: bool,
    pub chunks: bool,
    pub sessions: bool,
}

impl Which {
    pub fn any(self) -> bool {
        self.servers || self.disks || self.chunks || self.sessions
    }
}

/// The chosen tables as one JSON object, keyed `servers`, `disks`, `chunks`, `sessions`.
pub fn json(status: &ClusterStatus, which: Which) -> serde_json::Result<String> {
    let mut out = Map::new();
    let mut put = |key: &str, value: serde_json::Result<Value>| -> serde_json::Result<()> {
        out.insert(key.to_string(), value?);
        Ok(())
    };
    if which.servers {
        put("servers", serde_json::to_value(views::servers(status)))?;
    }
    if which.disks {
        put("disks", serde_json::to_value(views::disks(status)))?;
    }
    if which.chunks {
        put("chunks", serde_json::to_value(views::chunks(status)))?;
    }
    if which.sessions {
        put("sessions", serde_json::to_value(views::sessions(status)))?;
    }
    serde_json::to_string_pretty(&Value::Object(out))
}

/// The chosen tables as text, one after another.
pub fn text(status: &ClusterStatus, which: Which) -> String {
    let mut parts = Vec::new();
    if which.servers {
        parts.push(servers(status));
    }
    if which.disks {
        parts.push(disks(status));
    }
    if which.chunks {
        parts.push(chunks(status));
    }
    if which.sessions {
        parts.push(sessions(status));
    }
    parts.join("\n")
}

fn servers(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>9} {:>10} {:>10} {:>6} {:>7} {:>6}  labels",
        "chunkserver", "chunks", "used", "total", "used%", "damaged", "marked"
    );
    for s in views::servers(status) {
        let _ = writeln!(
            out,
            "{:<22} {:>9} {:>10} {:>10} {:>6} {:>7} {:>6}  {}",
            s.addr,
            s.chunks,
            bytes(s.used_bytes),
            bytes(s.total_bytes),
            percent(s.used_bytes, s.total_bytes),
            s.damaged_disks,
            s.marked_disks,
            if s.labels.is_empty() { "-".into() } else { s.labels.join(",") }
        );
    }
    out
}

fn disks(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:<28} {:>9} {:>10} {:>10} {:>6}  state",
        "chunkserver", "path", "chunks", "used", "total", "used%"
    );
    for d in views::disks(status) {
        let state = match (d.damaged, d.marked_for_removal, d.safe_to_remove) {
            (true, _, _) => "DAMAGED",
            (false, true, true) => "marked for removal, safe to remove",
            (false, true, false) => "marked for removal, still needed",
            (false, false, _) => "ok",
        };
        let _ = writeln!(
            out,
            "{:<22} {:<28} {:>9} {:>10} {:>10} {:>6}  {state}",
            d.server,
            d.path,
            d.chunks,
            bytes(d.used_bytes),
            bytes(d.total_bytes),
            percent(d.used_bytes, d.total_bytes)
        );
    }
    out
}

fn chunks(status: &ClusterStatus) -> String {
    let h = views::chunks(status);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "chunks: {} in all: {} missing, {} endangered, {} undergoal, {} stable, {} overgoal",
        h.total, h.missing, h.endangered, h.undergoal, h.stable, h.overgoal
    );
    let _ = writeln!(out, "valid copies (columns) against goal (rows):");
    let last = CHUNK_MATRIX_SIDE - 1;
    let label = |i: usize| if i == last { format!("{last}+") } else { i.to_string() };
    let header: String = (0..CHUNK_MATRIX_SIDE).map(|c| format!(" {:>8}", label(c))).collect();
    let _ = writeln!(out, "goal{header}");
    for (goal, row) in h.matrix.iter().enumerate() {
        if row.iter().all(|&n| n == 0) {
            continue;
        }
        let cells: String = row
            .iter()
            .enumerate()
            .map(|(valid, &n)| format!(" {:>8}", cell(n, CellClass::of(goal, valid))))
            .collect();
        let _ = writeln!(out, "{:<4}{cells}", label(goal));
    }
    out
}

/// A count, marked `!` where chunks lack copies so the eye finds them without colour.
fn cell(n: u64, class: CellClass) -> String {
    match (n, class) {
        (0, _) => "-".into(),
        (n, CellClass::Missing | CellClass::Endangered | CellClass::Undergoal) => format!("{n}!"),
        (n, _) => n.to_string(),
    }
}

fn sessions(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<20} {:<22} {:>10}  mount", "session", "from", "open files");
    for s in views::sessions(status) {
        let _ = writeln!(out, "{:<20} {:<22} {:>10}  {}", s.session, s.peer, s.open_files, s.info);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfsha_proto::client::{ChunkserverStatus, ClientStatus};

    fn status() -> ClusterStatus {
        let mut s = ClusterStatus {
            chunks: 7,
            chunks_stable: 5,
            chunks_undergoal: 2,
            ..Default::default()
        };
        s.chunk_matrix[2][2] = 5;
        s.chunk_matrix[2][1] = 2;
        s.chunks_endangered = 2;
        s.chunkservers.push(ChunkserverStatus {
            addr: "127.0.0.1:9422".into(),
            chunks: 9,
            used_bytes: 3 << 30,
            total_bytes: 12 << 30,
            disks: vec![mfsha_proto::cs::DiskInfo {
                path: "/srv/a".into(),
                damaged: true,
                ..Default::default()
            }],
            labels: vec![],
        });
        s.clients.push(ClientStatus {
            session: 42,
            peer: "127.0.0.1:5000".into(),
            info: "host:/mnt".into(),
            open_files: 3,
        });
        s
    }

    #[test]
    fn each_table_shows_the_rows_of_the_status() {
        let s = status();
        let all = Which { servers: true, disks: true, chunks: true, sessions: true };
        let text = text(&s, all);
        for part in [
            "127.0.0.1:9422",
            "3.0 GiB",
            "12.0 GiB",
            "25.0",
            "/srv/a",
            "DAMAGED",
            "2 endangered",
            "5 stable",
            "2!",
            "host:/mnt",
            "42",
        ] {
            assert!(text.contains(part), "{part:?} missing from\n{text}");
        }
        let json: Value = serde_json::from_str(&json(&s, all).unwrap()).unwrap();
        assert_eq!(json["servers"][0]["chunks"], 9);
        assert_eq!(json["disks"][0]["damaged"], true);
        assert_eq!(json["chunks"]["matrix"][2][1], 2);
        assert_eq!(json["sessions"][0]["open_files"], 3);
        let only: Value = serde_json::from_str(
            &super::json(&s, Which { disks: true, ..Which::default() }).unwrap(),
        )
        .unwrap();
        assert_eq!(only.as_object().unwrap().keys().collect::<Vec<_>>(), ["disks"]);
    }
}
