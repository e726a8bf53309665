//! The exports file: which client addresses may open a session on which directory, and how
//! (MooseFS's `mfsexports.cfg` grammar, see `deploy/mfsexports.cfg`).
//!
//! One rule a line, `ADDRESS PATH [OPTIONS]`, `#` starting a comment:
//! * ADDRESS: `*`, `A.B.C.D`, `A.B.C.D/BITS`, `A.B.C.D/E.F.G.H` (a netmask) or
//!   `A.B.C.D-E.F.G.H` (a range, both ends included). IPv4 only, as MooseFS; a client
//!   connecting over IPv6 matches only `*` (an IPv4-mapped address counts as IPv4).
//! * PATH: `/`, a subdirectory (`/a/b`), or `.` for the meta filesystem (parsed; sessions on
//!   it are refused for now).
//! * OPTIONS, comma-separated: `ro`/`readonly`/`rdonly` (the default), `rw`/`readwrite`,
//!   `alldirs`, `maproot=USER[:GROUP]` (default 999:999), `mapall=USER[:GROUP]`,
//!   `password=PASS`, `md5pass=HEX`, `ignoregid`, `admin`, `dynamicip`, `nonrootmeta`,
//!   `umask=OCTAL`, `mingoal=N`, `maxgoal=N`, `mintrashtime=TDUR`, `maxtrashtime=TDUR`,
//!   `minversion=X.Y.Z`. USER and GROUP are names (resolved from /etc/passwd and /etc/group
//!   when the file is read) or numbers; a USER without GROUP takes the user's primary group.
//!
//! The first line whose address holds the client's and whose path fits the requested
//! directory wins (MooseFS's order): the path itself, or with `alldirs` any directory below.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// The uid and gid MooseFS maps root to when an export says nothing (`maproot` default).
pub const DEFAULT_MAP: Ids = Ids { uid: 999, gid: 999 };

/// A uid and a gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// The parsed exports file.
#[derive(Debug, Clone, PartialEq)]
pub struct Exports {
    pub file: PathBuf,
    pub rules: Vec<Rule>,
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its line number in the file (1-based), for log lines.
    pub line: usize,
    pub from: AddrRange,
    pub path: ExportPath,
    pub options: ExportOptions,
}

/// The client addresses a line admits, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRange {
    pub first: u32,
    pub last: u32,
}

/// What a line exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportPath {
    /// `.`: the meta filesystem (trash, reserved files).
    Meta,
    /// A directory, normalised: `/` or `/a/b` (no trailing slash, no empty component).
    Dir(String),
}

/// A password an export asks for.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// `password=`: the cleartext is in the file.
    Plain(String),
    /// `md5pass=`: only its MD5 is.
    Md5([u8; 16]),
}

impl fmt::Debug for Password {
    /// Never the password itself (configs end up in logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::Plain(_) => f.write_str("Plain(..)"),
            Password::Md5(_) => f.write_str("Md5(..)"),
        }
    }
}

/// What one line allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    pub read_only: bool,
    pub alldirs: bool,
    /// What uid 0 becomes (`maproot`); `None` where `maproot` was not given (root is then
    /// mapped to `mapall` if set, else to [`DEFAULT_MAP`]).
    pub maproot: Option<Ids>,
    /// What every uid becomes (`mapall`).
    pub mapall: Option<Ids>,
    pub password: Option<Password>,
    pub ignoregid: bool,
    pub admin: bool,
    pub dynamicip: bool,
    pub nonrootmeta: bool,
    pub umask: Option<u32>,
    /// Goals users may set, `mingoal..=maxgoal`.
    pub goals: (u8, u8),
    /// Trash times in seconds users may set, `mintrashtime..=maxtrashtime`.
    pub trash_times: (u32, u32),
    /// Oldest client version admitted, as (major, minor, patch).
    pub min_version: Option<(u32, u32, u32)>,
}

impl Default for ExportOptions {
    /// MooseFS's defaults: `ro,maproot=999:999`, every goal and trash time.
    fn default() -> Self {
        ExportOptions {
            read_only: true,
            alldirs: false,
            maproot: None,
            mapall: None,
            password: None,
            ignoregid: false,
            admin: false,
            dynamicip: false,
            nonrootmeta: false,
            umask: None,
            goals: (1, mfsha_proto::types::MAX_GOAL),
            trash_times: (0, u32::MAX),
            min_version: None,
        }
    }
}

impl ExportOptions {
    /// The uid and gid a request claiming `ids` acts as: root becomes `maproot` (or
    /// `mapall`, or 999:999), anyone else `mapall` if set.
    pub fn map(&self, ids: Ids) -> Ids {
        if ids.uid == 0 {
            return self.maproot.or(self.mapall).unwrap_or(DEFAULT_MAP);
        }
        self.mapall.unwrap_or(ids)
    }
}

/// A line of the file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {reason}", .file.display())]
pub struct ExportsError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

/// Why a client may not open a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No line admits this address at all.
    Address,
    /// Lines admit the address, but none exports this directory.
    Path,
    /// The matching line exports the meta filesystem, which sessions cannot use yet.
    Meta { line: usize },
}

/// User and group names, as /etc/passwd and /etc/group list them.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    /// (name, uid, primary gid)
    users: Vec<(String, u32, u32)>,
    /// (name, gid)
    groups: Vec<(String, u32)>,
}

impl Accounts {
    /// This machine's accounts; an unreadable file counts as empty (numbers still work).
    pub fn system() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Accounts::from_text(&read("/etc/passwd"), &read("/etc/group"))
    }

    /// Accounts from the text of a passwd and a group file.
    pub fn from_text(passwd: &str, group: &str) -> Self {
        let fields = |line: &str| line.split(':').map(str::to_string).collect::<Vec<_>>();
        let users = passwd
            .lines()
            .map(fields)
            .filter_map(|f| {
                Some((f.first()?.clone(), f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
            })
            .collect();
        let groups = group
            .lines()
            .map(fields)
            .filter_map(|f| Some((f.first()?.clone(), f.get(2)?.parse().ok()?)))
            .collect();
        Accounts { users, groups }
    }

    fn user(&self, name: &str) -> Option<(u32, u32)> {
        self.users.iter().find(|u| u.0 == name).map(|u| (u.1, u.2))
    }

    fn group(&self, name: &str) -> Option<u32> {
        self.groups.iter().find(|g| g.0 == name).map(|g| g.1)
    }

    /// `USER[:GROUP]` as uid and gid.
    fn ids(&self, spec: &str) -> Result<Ids, String> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let (uid, primary) = match user.parse::<u32>() {
            Ok(uid) => (uid, self.users.iter().find(|u| u.1 == uid).map(|u| u.2)),
            Err(_) => {
                let (uid, gid) = self.user(user).ok_or_else(|| {
                    format!("no user {user:?} in /etc/passwd on this master (create it, or give a number)")
                })?;
                (uid, Some(gid))
            }
        };
        let gid = match group {
            None => primary.unwrap_or(uid),
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => self.group(g).ok_or_else(|| {
                    format!(
                        "no group {g:?} in /etc/group on this master (create it, or give a number)"
                    )
                })?,
            },
        };
        Ok(Ids { uid, gid })
    }
}

impl Exports {
    /// Reads and parses the file at `path`, resolving names with this machine's accounts.
    pub fn load(path: &Path) -> Result<Exports, ExportsError> {
        let text = std::fs::read_to_string(path).map_err(|e| ExportsError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            reason: format!("cannot read the exports file: {e}"),
        })?;
        let exports = Exports::parse(path, &text, &Accounts::system())?;
        exports.warn_if_readable();
        Ok(exports)
    }

    /// Passwords in a file anyone on the master can read are no secret: say so.
    fn warn_if_readable(&self) {
        use std::os::unix::fs::PermissionsExt;
        let has_password = self.rules.iter().any(|r| r.options.password.is_some());
        let mode = std::fs::metadata(&self.file).map(|m| m.permissions().mode()).unwrap_or(0);
        if has_password && mode & 0o004 != 0 {
            tracing::warn!(file = %self.file.display(), mode = format!("{:o}", mode & 0o777),
                "the exports file holds passwords and every user of this host may read it: \
                 chmod 0640 (owner root, group mfsha) or 0600");
        }
    }

    /// Parses exports text; `file` names it in errors.
    pub fn parse(file: &Path, text: &str, accounts: &Accounts) -> Result<Exports, ExportsError> {
        let mut rules = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("");
            let fail = |column: usize, reason: String| ExportsError {
                file: file.to_path_buf(),
                line,
                column,
                reason,
            };
            let words = words(content);
            if words.is_empty() {
                continue;
            }
            if words.len() < 2 || words.len() > 3 {
                let column = words.get(3).map_or(1, |w| w.0);
                let reason =
                    format!("expected ADDRESS PATH [OPTIONS], found {} field(s)", words.len());
                return Err(fail(column, reason));
            }
            let from = parse_address(words[0].1).map_err(|r| fail(words[0].0, r))?;
            let path = parse_path(words[1].1).map_err(|r| fail(words[1].0, r))?;
            let options = match words.get(2) {
                Some(&(column, text)) => {
                    parse_options(text, accounts).map_err(|(offset, r)| fail(column + offset, r))?
                }
                None => ExportOptions::default(),
            };
            rules.push(Rule { line, from, path, options });
        }
        Ok(Exports { file: file.to_path_buf(), rules })
    }

    /// The first line admitting a client at `ip` to directory `subdir` (as the client asked
    /// for it; "." for the meta filesystem).
    pub fn find(&self, ip: IpAddr, subdir: &str) -> Result<&Rule, Refusal> {
        let Some(ip) = ipv4(ip) else {
            return self.find_v6(subdir);
        };
        let wanted = requested(subdir);
        let mut address_matched = false;
        for rule in self.rules.iter().filter(|r| r.from.first <= ip && ip <= r.from.last) {
            address_matched = true;
            if rule.admits(&wanted) {
                return match rule.path {
                    ExportPath::Meta => Err(Refusal::Meta { line: rule.line }),
                    ExportPath::Dir(_) => Ok(rule),
                };
            }
        }
        Err(if address_matched { Refusal::Path } else { Refusal::Address })
    }

    /// An IPv6 client: only `*` lines apply.
    fn find_v6(&self, subdir: &str) -> Result<&Rule, Refusal> {
        let wanted = requested(subdir);
        let any = |r: &&Rule| r.from == AddrRange { first: 0, last: u32::MAX };
        let mut lines = self.rules.iter().filter(any).peekable();
        if lines.peek().is_none() {
            return Err(Refusal::Address);
        }
        match lines.find(|r| r.admits(&wanted)) {
            Some(rule) if rule.path == ExportPath::Meta => Err(Refusal::Meta { line: rule.line }),
            Some(rule) => Ok(rule),
            None => Err(Refusal::Path),
        }
    }
}

impl Rule {
    fn admits(&self, wanted: &ExportPath) -> bool {
        match (&self.path, wanted) {
            (ExportPath::Meta, ExportPath::Meta) => true,
            (ExportPath::Dir(path), ExportPath::Dir(want)) => {
                path == want || (self.options.alldirs && is_below(want, path))
            }
            _ => false,
        }
    }
}

/// True if `dir` lies strictly below `top` (whole components: /ab is not below /a).
fn is_below(dir: &str, top: &str) -> bool {
    if top == "/" {
        return dir != "/";
    }
    dir.strip_prefix(top).is_some_and(|rest| rest.starts_with('/'))
}

/// The directory a client asks for, normalised as export paths are.
fn requested(subdir: &str) -> ExportPath {
    if subdir.trim() == "." {
        return ExportPath::Meta;
    }
    ExportPath::Dir(normalise(subdir))
}

/// `a//b/` → `/a/b`; empty → `/`; `.` dropped and `..` taken back lexically (never above
/// `/`), as `State::resolve_path` walks it (it follows no symlink): so `/pub/../home` is
/// matched as `/home`, and a session root is resolved from this same string.
pub fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        match part {
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    format!("/{}", parts.join("/"))
}

fn ipv4(ip: IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(v4) => Some(u32::from(v4)),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(u32::from),
    }
}

/// The whitespace-separated fields of a line, each with its 1-based column.
fn words(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s + 1, &line[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s + 1, &line[s..]));
    }
    out
}

fn parse_ip(text: &str) -> Result<u32, String> {
    text.parse::<Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| format!("{text:?} is no IPv4 address (A.B.C.D)"))
}

/// `*`, `A.B.C.D`, `A.B.C.D/BITS`, `A.B.C.D/E.F.G.H`, `A.B.C.D-E.F.G.H`.
fn parse_address(text: &str) -> Result<AddrRange, String> {
    let form = "the address must be *, A.B.C.D, A.B.C.D/BITS, A.B.C.D/NETMASK or A.B.C.D-E.F.G.H";
    let with_form = |e: String| format!("{e}; {form}");
    if text == "*" {
        return Ok(AddrRange { first: 0, last: u32::MAX });
    }
    if let Some((a, b)) = text.split_once('-') {
        let (first, last) = (parse_ip(a).map_err(with_form)?, parse_ip(b).map_err(with_form)?);
        if first > last {
            return Err(format!("range {text}: its first address is above its last"));
        }
        return Ok(AddrRange { first, last });
    }
    if let Some((a, m)) = text.split_once('/') {
        let base = parse_ip(a).map_err(with_form)?;
        let mask = match m.parse::<u32>() {
            Ok(bits) if bits <= 32 => u32::MAX.checked_shl(32 - bits).unwrap_or(0),
            Ok(bits) => return Err(format!("/{bits}: a prefix has at most 32 bits")),
            Err(_) => {
                let mask = parse_ip(m).map_err(with_form)?;
                if mask.leading_ones() + mask.trailing_zeros() != 32 {
                    return Err(format!("{m} is no netmask (ones then zeros)"));
                }
                mask
            }
        };
        return Ok(AddrRange { first: base & mask, last: (base & mask) | !mask });
    }
    let ip = parse_ip(text).map_err(with_form)?;
    Ok(AddrRange { first: ip, last: ip })
}

fn parse_path(text: &str) -> Result<ExportPath, String> {
    if text == "." {
        return Ok(ExportPath::Meta);
    }
    if !text.starts_with('/') {
        return Err(format!(
            "path {text:?} must be absolute (/, /dir) or . for the meta filesystem"
        ));
    }
    if text.split('/').any(|p| p == ".." || p == ".") {
        return Err(format!("path {text:?} must not contain . or .. components"));
    }
    Ok(ExportPath::Dir(normalise(text)))
}

/// Parses the options field; an error carries the offset of the bad option in the field.
fn parse_options(text: &str, accounts: &Accounts) -> Result<ExportOptions, (usize, String)> {
    let mut o = ExportOptions::default();
    let mut offset = 0;
    for option in text.split(',') {
        parse_option(&mut o, option, accounts).map_err(|r| (offset, r))?;
        offset += option.len() + 1;
    }
    if o.goals.0 > o.goals.1 {
        return Err((0, format!("mingoal {} is above maxgoal {}", o.goals.0, o.goals.1)));
    }
    if o.trash_times.0 > o.trash_times.1 {
        let (min, max) = o.trash_times;
        return Err((0, format!("mintrashtime {min} s is above maxtrashtime {max} s")));
    }
    Ok(o)
}

fn parse_option(o: &mut ExportOptions, option: &str, accounts: &Accounts) -> Result<(), String> {
    let (key, value) = match option.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (option, None),
    };
    let need = || value.ok_or_else(|| format!("option {key} needs a value ({key}=...)"));
    let none = || match value {
        Some(_) => Err(format!("option {key} takes no value")),
        None => Ok(()),
    };
    match key {
        "ro" | "readonly" | "rdonly" => none().map(|()| o.read_only = true)?,
        "rw" | "readwrite" => none().map(|()| o.read_only = false)?,
        "alldirs" => none().map(|()| o.alldirs = true)?,
        "ignoregid" => none().map(|()| o.ignoregid = true)?,
        "admin" => none().map(|()| o.admin = true)?,
        "dynamicip" => none().map(|()| o.dynamicip = true)?,
        "nonrootmeta" => none().map(|()| o.nonrootmeta = true)?,
        "maproot" => o.maproot = Some(accounts.ids(need()?).map_err(|e| format!("maproot: {e}"))?),
        "mapall" => o.mapall = Some(accounts.ids(need()?).map_err(|e| format!("mapall: {e}"))?),
        "password" => {
            let pass = need()?;
            if pass.is_empty() {
                return Err("password= is empty".into());
            }
            o.password = Some(Password::Plain(pass.to_string()));
        }
        "md5pass" => o.password = Some(Password::Md5(parse_md5(need()?)?)),
        "umask" => {
            let v = need()?;
            o.umask = Some(
                u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| format!("umask={v}: an octal mask 000..777"))?,
            )
        }
        "mingoal" => o.goals.0 = parse_goal(key, need()?)?,
        "maxgoal" => o.goals.1 = parse_goal(key, need()?)?,
        "mintrashtime" => o.trash_times.0 = parse_duration(key, need()?)?,
        "maxtrashtime" => o.trash_times.1 = parse_duration(key, need()?)?,
        "minversion" => o.min_version = Some(parse_version(need()?)?),
        "" => return Err("empty option (two commas?)".into()),
        _ => {
            return Err(format!(
                "unknown option {key:?} (known: ro, rw, readonly, readwrite, alldirs, \
                 maproot=, mapall=, password=, md5pass=, ignoregid, admin, dynamicip, \
                 nonrootmeta, umask=, mingoal=, maxgoal=, mintrashtime=, maxtrashtime=, \
                 minversion=)"
            ))
        }
    }
    Ok(())
}

fn parse_md5(hex_text: &str) -> Result<[u8; 16], String> {
    let bytes = hex::decode(hex_text).ok().filter(|b| b.len() == 16);
    let bytes = bytes.ok_or_else(|| {
        format!(
            "md5pass={hex_text}: 32 hex digits expected (the output of `echo -n PASS | md5sum`)"
        )
    })?;
    let mut out = [0u8; 16];
    out.copy_from_slice(&bytes);
    Ok(out)
}

fn parse_goal(key: &str, v: &str) -> Result<u8, String> {
    let max = mfsha_proto::types::MAX_GOAL;
    v.parse::<u8>()
        .ok()
        .filter(|g| (1..=max).contains(g))
        .ok_or_else(|| format!("{key}={v}: a goal 1..={max}"))
}

/// Seconds, or MooseFS's TDUR: numbers with units w, d, h, m, s (`1d12h`, `90m`).
fn parse_duration(key: &str, v: &str) -> Result<u32, String> {
    let bad = || format!("{key}={v}: seconds, or a duration such as 1d12h, 90m, 2w");
    if let Ok(secs) = v.parse::<u32>() {
        return Ok(secs);
    }
    let (mut total, mut number) = (0u64, None::<u64>);
    for c in v.chars() {
        if let Some(d) = c.to_digit(10) {
            number = Some(number.unwrap_or(0).saturating_mul(10).saturating_add(u64::from(d)));
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            'w' => 604_800,
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        total = total.saturating_add(number.take().ok_or_else(bad)?.saturating_mul(unit));
    }
    if number.is_some() {
        return Err(bad()); // a number without a unit after one with
    }
    u32::try_from(total).map_err(|_| format!("{key}={v}: longer than {} s", u32::MAX))
}

fn parse_version(v: &str) -> Result<(u32, u32, u32), String> {
    let bad = || format!("minversion={v}: a version X.Y.Z (or X.Y)");
    let parts: Vec<u32> =
        v.split('.').map(|p| p.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    match parts[..] {
        [a, b] => Ok((a, b, 0)),
        [a, b, c] => Ok((a, b, c)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nmfs:x:120:130::/var/lib/mfs:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nmfs:x:130:\nstaff:x:50:\n";

    fn parse(text: &str) -> Result<Exports, ExportsError> {
        Exports::parse(
            Path::new("/etc/mfsha/mfsexports.cfg"),
            text,
            &Accounts::from_text(PASSWD, GROUP),
        )
    }

    fn one(text: &str) -> Rule {
        parse(text).unwrap().rules.remove(0)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_shipped_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/mfsexports.cfg");
        let exports = Exports::load(&path).unwrap();
        assert_eq!(exports.rules.len(), 1);
        assert!(exports.rules[0].options.read_only);
        let seed = std::fs::read_to_string(&path).unwrap();
        assert!(
            seed.contains("#192.168.200.0/24   /      rw,alldirs,mapall=mfs:mfs,password=111111")
        );
    }

    #[test]
    fn every_address_form_parses_to_its_range() {
        let range = |s: &str| one(&format!("{s} /")).from;
        let v = |s: &str| u32::from(s.parse::<Ipv4Addr>().unwrap());
        assert_eq!(range("*"), AddrRange { first: 0, last: u32::MAX });
        assert_eq!(range("10.1.2.3"), AddrRange { first: v("10.1.2.3"), last: v("10.1.2.3") });
        assert_eq!(
            range("192.168.200.7/24"),
            AddrRange { first: v("192.168.200.0"), last: v("192.168.200.255") }
        );
        assert_eq!(
            range("10.0.0.0/255.255.0.0"),
            AddrRange { first: v("10.0.0.0"), last: v("10.0.255.255") }
        );
        assert_eq!(
            range("10.0.0.5-10.0.0.9"),
            AddrRange { first: v("10.0.0.5"), last: v("10.0.0.9") }
        );
        assert_eq!(range("1.2.3.4/0"), AddrRange { first: 0, last: u32::MAX });
        assert_eq!(range("1.2.3.4/32"), AddrRange { first: v("1.2.3.4"), last: v("1.2.3.4") });
    }

    #[test]
    fn defaults_are_moosefs_ro_and_maproot_999() {
        let rule = one("* /");
        assert!(rule.options.read_only && !rule.options.alldirs);
        assert_eq!(rule.options.map(Ids { uid: 0, gid: 0 }), Ids { uid: 999, gid: 999 });
        assert_eq!(rule.options.map(Ids { uid: 1000, gid: 100 }), Ids { uid: 1000, gid: 100 });
        assert_eq!(rule.path, ExportPath::Dir("/".into()));
    }

    #[test]
    fn the_seed_tutorial_line_reads_as_it_says() {
        let rule = one("192.168.200.0/24 / rw,alldirs,mapall=mfs:mfs,password=111111");
        let o = &rule.options;
        assert!(!o.read_only && o.alldirs);
        assert_eq!(o.mapall, Some(Ids { uid: 120, gid: 130 }));
        assert_eq!(o.password, Some(Password::Plain("111111".into())));
        // everyone acts as mfs:mfs, root included
        assert_eq!(o.map(Ids { uid: 1000, gid: 1000 }), Ids { uid: 120, gid: 130 });
        assert_eq!(o.map(Ids { uid: 0, gid: 0 }), Ids { uid: 120, gid: 130 });
        let exports =
            parse("192.168.200.0/24 / rw,alldirs,mapall=mfs:mfs,password=111111").unwrap();
        assert!(exports.find(ip("192.168.200.45"), "/any/dir").is_ok());
        assert_eq!(exports.find(ip("192.168.201.1"), "/"), Err(Refusal::Address));
    }

    #[test]
    fn the_seed_line_on_this_machine_resolves_mfs_or_names_it() {
        let line = "192.168.200.0/24 / rw,alldirs,mapall=mfs:mfs,password=111111";
        let accounts = Accounts::system();
        match Exports::parse(Path::new("x.cfg"), line, &accounts) {
            Ok(e) => assert!(e.rules[0].options.mapall.is_some()),
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains("x.cfg:1:") && text.contains("\"mfs\""), "{text}");
                assert!(text.contains("/etc/passwd") || text.contains("/etc/group"), "{text}");
            }
        }
    }

    #[test]
    fn every_option_parses() {
        let o = one("* / readwrite,maproot=0,ignoregid,admin,dynamicip,nonrootmeta,umask=027,mingoal=2,maxgoal=3,mintrashtime=1h30m,maxtrashtime=2w,minversion=3.0.100").options;
        assert!(!o.read_only && o.ignoregid && o.admin && o.dynamicip && o.nonrootmeta);
        assert_eq!(o.maproot, Some(Ids { uid: 0, gid: 0 }));
        assert_eq!(o.map(Ids { uid: 0, gid: 0 }), Ids { uid: 0, gid: 0 });
        assert_eq!(o.umask, Some(0o027));
        assert_eq!(o.goals, (2, 3));
        assert_eq!(o.trash_times, (5400, 1_209_600));
        assert_eq!(o.min_version, Some((3, 0, 100)));
        assert!(one("* / readonly").options.read_only);
        assert!(one("* / rw,ro").options.read_only, "the last of ro/rw wins");
        assert_eq!(one("* / maxtrashtime=86400").options.trash_times.1, 86_400);
        let o = one("* / md5pass=96e79218965eb72c92a549dd5a330112").options;
        assert_eq!(
            o.password,
            Some(Password::Md5(
                hex::decode("96e79218965eb72c92a549dd5a330112").unwrap().try_into().unwrap()
            ))
        );
        assert!(!format!("{o:?}").contains("96e7"), "passwords stay out of Debug");
    }

    #[test]
    fn users_and_groups_resolve_by_name_or_number() {
        let o = one("* / maproot=mfs,mapall=1000:staff").options;
        assert_eq!(o.maproot, Some(Ids { uid: 120, gid: 130 }), "primary group");
        assert_eq!(o.mapall, Some(Ids { uid: 1000, gid: 50 }));
        assert_eq!(one("* / maproot=77").options.maproot, Some(Ids { uid: 77, gid: 77 }));
        assert_eq!(one("* / maproot=120").options.maproot, Some(Ids { uid: 120, gid: 130 }));
        let err = parse("* / maproot=nobody_here").unwrap_err().to_string();
        assert!(
            err.contains(":1:5:") && err.contains("nobody_here") && err.contains("/etc/passwd"),
            "{err}"
        );
        let err = parse("* / rw,mapall=mfs:nogroup").unwrap_err().to_string();
        assert!(err.contains(":1:8:") && err.contains("nogroup"), "{err}");
    }

    #[test]
    fn comments_blank_lines_and_meta_paths() {
        let e = parse("# all\n\n  * . rw # meta\n10.0.0.1 /a/b/ ro\n").unwrap();
        assert_eq!(e.rules.len(), 2);
        assert_eq!((e.rules[0].line, &e.rules[0].path), (3, &ExportPath::Meta));
        assert_eq!(e.rules[1].path, ExportPath::Dir("/a/b".into()));
        assert_eq!(e.find(ip("10.0.0.2"), "."), Err(Refusal::Meta { line: 3 }));
        assert_eq!(e.find(ip("10.0.0.2"), "/"), Err(Refusal::Path));
    }

    #[test]
    fn bad_lines_name_file_line_and_column() {
        let cases = [
            ("10.0.0.300 /", 1, "IPv4"),
            ("* / rw,frobnicate", 8, "unknown option \"frobnicate\""),
            ("*\n", 1, "ADDRESS PATH"),
            ("\n* / ro extra", 8, "ADDRESS PATH"),
            ("* relative", 3, "absolute"),
            ("* /a/../b", 3, ".."),
            ("10.0.0.9-10.0.0.1 /", 1, "above"),
            ("10.0.0.0/33 /", 1, "32 bits"),
            ("10.0.0.0/255.0.255.0 /", 1, "netmask"),
            ("* / umask=999", 5, "octal"),
            ("* / mingoal=0", 5, "goal"),
            ("* / mingoal=5,maxgoal=2", 5, "above maxgoal"),
            ("* / mintrashtime=1x", 5, "duration"),
            ("* / md5pass=abc", 5, "32 hex digits"),
            ("* / ro=1", 5, "takes no value"),
            ("* / maproot", 5, "needs a value"),
            ("* / rw,,ro", 8, "empty option"),
            ("* / minversion=1.x", 5, "version"),
        ];
        for (text, column, why) in cases {
            let err = parse(text).unwrap_err();
            let line = if text.starts_with('\n') { 2 } else { 1 };
            assert_eq!((err.line, err.column), (line, column), "{text}: {err}");
            assert!(err.reason.contains(why), "{text}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("/etc/mfsha/mfsexports.cfg:{line}:{column}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_first_line_matching_address_and_path_wins() {
        let e = parse(
            "10.0.0.1 / rw,maproot=0\n\
             10.0.0.0/24 /pub ro\n\
             10.0.0.0/24 /home rw,alldirs\n\
             * / ro\n",
        )
        .unwrap();
        assert_eq!(e.find(ip("10.0.0.1"), "/").unwrap().line, 1);
        assert_eq!(e.find(ip("10.0.0.1"), "/pub").unwrap().line, 2, "line 1 has no alldirs");
        assert_eq!(e.find(ip("10.0.0.2"), "/pub").unwrap().line, 2);
        assert_eq!(e.find(ip("10.0.0.2"), "/pub/sub").unwrap_err(), Refusal::Path);
        assert_eq!(e.find(ip("10.0.0.2"), "/home/ann/").unwrap().line, 3);
        assert_eq!(e.find(ip("10.0.0.2"), "/homework").unwrap_err(), Refusal::Path);
        assert_eq!(
            e.find(ip("10.0.0.2"), "/home/../pub/x").unwrap_err(),
            Refusal::Path,
            "no escape by .."
        );
        assert_eq!(e.find(ip("10.0.0.2"), "/home/a/../../pub").unwrap().line, 2);
        assert_eq!(normalise("/a/./b/../../../c/"), "/c");
        assert_eq!(e.find(ip("10.0.0.2"), "").unwrap().line, 4);
        assert_eq!(e.find(ip("172.16.0.1"), "/").unwrap().line, 4);
        assert_eq!(e.find(ip("::ffff:10.0.0.1"), "/").unwrap().line, 1, "IPv4-mapped");
        assert_eq!(e.find(ip("::1"), "/").unwrap().line, 4, "IPv6: only *");
        let only_v4 = parse("10.0.0.0/8 /").unwrap();
        assert_eq!(only_v4.find(ip("::1"), "/"), Err(Refusal::Address));
    }
}
