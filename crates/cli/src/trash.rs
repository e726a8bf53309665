//! The trash tools: `mfsha trash list|undelete|purge` and `mfsha settrashtime|gettrashtime`.
//!
//! MooseFS shows its trash as a special meta mount (`mfsmount -m`), where a deleted file is
//! `trash/INODE|path`, moving it to `undel/` undeletes it and removing it purges it. These
//! commands do the same against the master directly: list (inode, deleted at, expires at,
//! path), undelete by inode or original path, purge by inode. `settrashtime` and
//! `gettrashtime` mirror `mfssettrashtime` and `mfsgettrashtime`.

use crate::tools::{ask_about, format_set, Session};
use anyhow::{bail, Context};
use mfsha_proto::client::{ClientOp, ClientReply, TrashEntry};
use mfsha_proto::types::{Ino, Status, Timestamp};
use std::fmt::Write as _;

/// Entries asked for per page (the master caps pages to fit a frame).
const PAGE: u32 = 1000;

/// Every file in the trash, in inode order.
async fn fetch_all(s: &mut Session) -> anyhow::Result<Vec<TrashEntry>> {
    let mut all: Vec<TrashEntry> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.ino);
        match s.call(ClientOp::TrashList { after, max: PAGE }, false).await? {
            ClientReply::Trash { entries, more } => {
                let empty = entries.is_empty();
                all.extend(entries);
                if !more || empty {
                    return Ok(all);
                }
            }
            other => bail!("unexpected answer to TrashList: {other:?}"),
        }
    }
}

/// `mfsha trash list`: one line per trashed file, or JSON for scripts.
pub async fn list(master: &str, json: bool) -> anyhow::Result<()> {
    let mut s = Session::open(master).await?;
    let entries = fetch_all(&mut s).await;
    s.close().await;
    let entries = entries.context("listing the trash")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        print!("{}", format_list(&entries));
    }
    Ok(())
}

/// `mfsha trash undelete INODE|PATH`: puts a trashed file back under its original name.
pub async fn undelete(master: &str, which: &str) -> anyhow::Result<()> {
    let mut s = Session::open(master).await?;
    let result = undelete_in(&mut s, which).await;
    s.close().await;
    let (entry, attr_ino) = result?;
    println!("{}: undeleted (inode {attr_ino})", entry.path);
    Ok(())
}

async fn undelete_in(s: &mut Session, which: &str) -> anyhow::Result<(TrashEntry, Ino)> {
    let entry = find(&fetch_all(s).await?, which)?;
    match s.call(ClientOp::Undelete { ino: entry.ino }, true).await {
        Ok(ClientReply::Attr(attr)) => Ok((entry, attr.ino)),
        Ok(other) => bail!("unexpected answer to Undelete: {other:?}"),
        Err(e) if is_status(&e, Status::Exists) => bail!(
            "cannot undelete inode {} to {}: that name is taken; rename or remove what is \
             there, then try again",
            entry.ino,
            entry.path
        ),
        Err(e) => Err(e.context(format!("undeleting inode {} ({})", entry.ino, entry.path))),
    }
}

/// `mfsha trash purge INODE`: frees a trashed file now.
pub async fn purge(master: &str, ino: Ino) -> anyhow::Result<()> {
    let mut s = Session::open(master).await?;
    let reply = s.call(ClientOp::Purge { ino }, true).await;
    s.close().await;
    match reply {
        Ok(ClientReply::Unit) => println!("inode {ino}: purged"),
        Ok(other) => bail!("unexpected answer to Purge: {other:?}"),
        Err(e) if is_status(&e, Status::NotFound) => {
            bail!("inode {ino} is not in the trash (see mfsha trash list)")
        }
        Err(e) => return Err(e.context(format!("purging inode {ino}"))),
    }
    Ok(())
}

/// `mfsgettrashtime PATH`.
pub async fn gettrashtime(master: &str, path: &str) -> anyhow::Result<()> {
    match ask_about(master, path, false, |ino| ClientOp::GetTrashTime { ino }).await?.1 {
        ClientReply::TrashTime(seconds) => println!("{path}: {seconds}"),
        other => bail!("unexpected answer to GetTrashTime: {other:?}"),
    }
    Ok(())
}

/// `mfssettrashtime [-r] SECONDS PATH`.
pub async fn settrashtime(
    master: &str,
    path: &str,
    seconds: u32,
    recursive: bool,
) -> anyhow::Result<()> {
    let op = |ino| ClientOp::SetTrashTime { ino, seconds, recursive };
    match ask_about(master, path, true, op).await? {
        (attr, ClientReply::Changed { inodes, not_changed, not_permitted }) => {
            let counts = (inodes, not_changed, not_permitted);
            print!("{}", format_set(path, "trashtime", seconds, &attr, recursive, counts));
        }
        (_, other) => bail!("unexpected answer to SetTrashTime: {other:?}"),
    }
    Ok(())
}

/// The trash entry `which` names: an inode number, or the original path of exactly one file.
fn find(entries: &[TrashEntry], which: &str) -> anyhow::Result<TrashEntry> {
    if let Ok(ino) = which.parse::<Ino>() {
        return match entries.iter().find(|e| e.ino == ino) {
            Some(entry) => Ok(entry.clone()),
            None => bail!("inode {ino} is not in the trash (see mfsha trash list)"),
        };
    }
    let matching: Vec<&TrashEntry> = entries.iter().filter(|e| e.path == which).collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no deleted file {which} in the trash (see mfsha trash list)"),
        several => {
            let inodes: Vec<String> = several.iter().map(|e| e.ino.to_string()).collect();
            bail!(
                "{} deleted files were {which} (inodes {}); undelete one by its inode",
                several.len(),
                inodes.join(", ")
            )
        }
    }
}

fn is_status(error: &anyhow::Error, status: Status) -> bool {
    error.root_cause().to_string().starts_with(&status.to_string())
}

/// The human listing: a header, then one line per file.
pub fn format_list(entries: &[TrashEntry]) -> String {
    let mut out =
        format!("{:>12}  {:<19}  {:<19}  PATH\n", "INODE", "DELETED AT (UTC)", "EXPIRES AT (UTC)");
    for e in entries {
        let expires = Timestamp::new(
            e.deleted_at.secs.saturating_add(i64::from(e.trash_seconds)),
            e.deleted_at.nanos,
        );
        writeln!(out, "{:>12}  {}  {}  {}", e.ino, utc(e.deleted_at), utc(expires), e.path)
            .expect("writing to a String cannot fail");
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (the proleptic Gregorian calendar; no time-zone database).
pub fn utc(t: Timestamp) -> String {
    let days = t.secs.div_euclid(86_400);
    let second_of_day = t.secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}")
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ino: Ino, path: &str) -> TrashEntry {
        let deleted_at = Timestamp::new(1_700_000_000, 0);
        TrashEntry { ino, path: path.into(), deleted_at, trash_seconds: 86_400, size: 0 }
    }

    #[test]
    fn utc_dates_match_the_calendar() {
        assert_eq!(utc(Timestamp::new(0, 0)), "1970-01-01 00:00:00");
        assert_eq!(utc(Timestamp::new(1_700_000_000, 5)), "2023-11-14 22:13:20");
        assert_eq!(utc(Timestamp::new(951_782_400, 0)), "2000-02-29 00:00:00");
        assert_eq!(utc(Timestamp::new(-1, 0)), "1969-12-31 23:59:59");
    }

    #[test]
    fn list_shows_inode_deletion_expiry_and_path() {
        let text = format_list(&[entry(17, "/dir/a file")]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("INODE") && lines[0].ends_with("PATH"), "{text}");
        assert_eq!(lines[1], "          17  2023-11-14 22:13:20  2023-11-15 22:13:20  /dir/a file");
    }

    #[test]
    fn find_by_inode_or_unique_path() {
        let entries = [entry(5, "/a"), entry(6, "/b"), entry(7, "/b")];
        assert_eq!(find(&entries, "5").unwrap().path, "/a");
        assert_eq!(find(&entries, "/a").unwrap().ino, 5);
        let err = find(&entries, "/b").unwrap_err().to_string();
        assert!(err.contains("inodes 6, 7"), "{err}");
        assert!(find(&entries, "/c").unwrap_err().to_string().contains("no deleted file /c"));
        assert!(find(&entries, "9").unwrap_err().to_string().contains("inode 9 is not"));
    }
}
