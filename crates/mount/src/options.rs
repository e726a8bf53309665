//! Mount options: command-line flags (`mfsha mount`), `-o` options as `mount(8)` and fstab
//! pass them (MooseFS spellings accepted), and turning both into client settings.

use crate::client::{ClientConfig, MasterConfig};
use crate::fuse::{CacheTimes, PermissionChecks};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Options of `mfsha mount` and `mount.mfsha`.
#[derive(Debug, Clone, clap::Args)]
pub struct MountOptions {
    /// Directory to mount the filesystem on.
    pub mountpoint: PathBuf,
    /// Master address HOST[:PORT]; several, comma-separated, for a group of masters (the
    /// leader is found whatever the order).
    #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = "mfsmaster")]
    pub master: String,
    /// Master client port, for addresses given without one.
    #[arg(short = 'P', long, default_value_t = mfsha_proto::ports::MASTER_CLIENT)]
    pub port: u16,
    /// Subdirectory of the filesystem to mount.
    #[arg(short = 'S', long, default_value = "/")]
    pub subfolder: String,
    /// Password for the export (visible in `ps`: prefer --password-file or -p).
    #[arg(long)]
    pub password: Option<String>,
    /// Read the password from the first line of this file.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Ask for the password on the terminal.
    #[arg(short = 'p', long)]
    pub password_prompt: bool,
    /// Seconds the kernel may cache attributes.
    #[arg(long, default_value_t = 1.0)]
    pub attr_cache: f64,
    /// Seconds the kernel may cache name lookups.
    #[arg(long, default_value_t = 0.5)]
    pub entry_cache: f64,
    /// Mount read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Leave every permission check to the master (no `default_permissions`): the kernel
    /// asks for access(2) and opendir, and the mount caches no names (a cached name would
    /// skip the master's search-permission check). Slower; for clients whose kernel view of
    /// permissions cannot be trusted to match the master's.
    #[arg(long)]
    pub no_default_permissions: bool,
    /// Let users other than the one mounting use the filesystem (permissions still apply;
    /// always on when root mounts, as with mfsmount).
    #[arg(long)]
    pub allow_other: bool,
    /// Seconds an operation waits for an unreachable master before failing with EIO.
    #[arg(long, default_value_t = 60)]
    pub io_timeout: u64,
    /// MiB of buffered writes per file before writers wait for the chunkservers.
    #[arg(long, default_value_t = 64)]
    pub write_buffer_mb: usize,
    /// MiB of read-ahead for sequential readers.
    #[arg(long, default_value_t = 8)]
    pub read_ahead_mb: u32,
    /// The masters' `cluster_id`: a master of another cluster is never used. Without it, the
    /// mount stays with the cluster of the first master it opened a session with.
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// Serve Prometheus `/metrics` on this IP:PORT (e.g. 127.0.0.1:9429). Default: off.
    #[arg(long)]
    pub metrics: Option<String>,
    /// mount(8)-style options, comma-separated: ro, rw, allow_other, default_permissions (the
    /// default), nodefault_permissions, mfsmaster=, mfsport=,
    /// mfssubfolder=, mfspassword= (or password=), mfspassfile= (or passwordfile=),
    /// mfsattrcacheto=, mfsentrycacheto=,
    /// mfsiotimeout=, cluster_id=, metrics=IP:PORT (fstab keywords such as _netdev, defaults, noauto are
    /// accepted and ignored).
    #[arg(short = 'o', value_delimiter = ',')]
    pub options: Vec<String>,
}

impl MountOptions {
    /// Options for `mountpoint` with every default, talking to `master`.
    pub fn new(mountpoint: PathBuf, master: &str) -> Self {
        MountOptions {
            mountpoint,
            master: master.to_string(),
            port: mfsha_proto::ports::MASTER_CLIENT,
            subfolder: "/".into(),
            password: None,
            password_file: None,
            password_prompt: false,
            attr_cache: 1.0,
            entry_cache: 0.5,
            read_only: false,
            no_default_permissions: false,
            allow_other: false,
            io_timeout: 60,
            write_buffer_mb: 64,
            read_ahead_mb: 8,
            cluster_id: None,
            metrics: None,
            options: Vec::new(),
        }
    }
}

/// Why the options cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("unknown mount option '{0}' (see `mfsha mount --help`)")]
    Unknown(String),
    #[error("mount option '{option}': {why}")]
    Bad { option: String, why: String },
    // `error`, not `source`: the message already says it, and a linked source would repeat it.
    #[error("cannot read the password file {path}: {error}")]
    PasswordFile { path: String, error: std::io::Error },
    #[error("cannot read the password from the terminal: {0}")]
    Prompt(std::io::Error),
}

/// Everything `mount` needs, after `-o` options were applied.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub mountpoint: PathBuf,
    pub client: ClientConfig,
    pub times: CacheTimes,
    pub read_only: bool,
    pub allow_other: bool,
    pub checks: PermissionChecks,
    /// What `df` shows as the source: "host:port[+host:port...][/subfolder]" (every master,
    /// so tools that find the master from the mount know them all).
    pub fsname: String,
    /// Where to serve `/metrics`, if asked to.
    pub metrics: Option<std::net::SocketAddr>,
}

/// fstab and mount(8) keywords that are not ours to act on.
const IGNORED: &[&str] = &[
    "_netdev",
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "nofail",
    "owner",
    "group",
    "comment",
    "nodev",
    "dev",
    "nosuid",
    "suid",
    "exec",
    "noexec",
    "async",
    "sync",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "diratime",
    "nodiratime",
];

impl MountOptions {
    /// Applies `-o` options over the flags and reads the password if asked to.
    pub fn resolve(&self) -> Result<Resolved, OptionError> {
        let mut o = self.clone();
        for opt in self.options.iter().filter(|s| !s.is_empty()) {
            o.apply(opt)?;
        }
        let password = o.password()?;
        let masters = masters(&o.master, o.port);
        let all = masters.join(FSNAME_MASTER_SEPARATOR);
        let fsname = if o.subfolder == "/" || o.subfolder.is_empty() {
            all
        } else {
            format!("{all}{}", normalise_subfolder(&o.subfolder))
        };
        let mut master = MasterConfig::new(masters);
        master.subdir = normalise_subfolder(&o.subfolder);
        master.password = password;
        // Host, mount point and version, as MooseFS lists mounts (`mfscli -SMS`).
        master.info = format!(
            "{}:{} (mfsha {})",
            hostname(),
            o.mountpoint.display(),
            env!("CARGO_PKG_VERSION")
        );
        master.io_timeout = Duration::from_secs(o.io_timeout.max(1));
        master.cluster_id = o.cluster_id.map(checked_cluster_id).transpose()?;
        let mut client = ClientConfig::new(master);
        client.max_dirty_bytes = o.write_buffer_mb.max(1) << 20;
        client.flush_bytes = (client.max_dirty_bytes / 4).max(1 << 20);
        client.read_ahead_bytes = o.read_ahead_mb.clamp(1, 64) << 20;
        let checks = if o.no_default_permissions {
            PermissionChecks::Master
        } else {
            PermissionChecks::Kernel
        };
        // The kernel walks cached names without asking anyone: only the master can check
        // search permission, so it must see every lookup.
        let entry = match checks {
            PermissionChecks::Kernel => seconds(o.entry_cache),
            PermissionChecks::Master => Duration::ZERO,
        };
        let times = CacheTimes { attr: seconds(o.attr_cache), entry };
        client.no_capability_ttl = times.attr;
        client.master.dir_attr_ttl = times.attr;
        let metrics = o.metrics.as_deref().map(metrics_addr).transpose()?;
        Ok(Resolved {
            mountpoint: o.mountpoint,
            client,
            times,
            read_only: o.read_only,
            checks,
            // SAFETY: geteuid has no preconditions.
            allow_other: o.allow_other || unsafe { libc::geteuid() } == 0,
            fsname,
            metrics,
        })
    }

    fn apply(&mut self, opt: &str) -> Result<(), OptionError> {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let need =
            || value.map(str::to_string).ok_or_else(|| bad(opt, "needs a value (KEY=VALUE)"));
        match key {
            "ro" => self.read_only = true,
            "rw" => self.read_only = false,
            "allow_other" => self.allow_other = true,
            "default_permissions" => self.no_default_permissions = false,
            "nodefault_permissions" => self.no_default_permissions = true,
            "mfsmaster" => self.master = need()?,
            "mfsport" => self.port = need()?.parse().map_err(|e| bad(opt, e))?,
            "mfssubfolder" => self.subfolder = need()?,
            "mfspassword" | "password" => self.password = Some(need()?),
            "mfspassfile" | "passwordfile" => self.password_file = Some(PathBuf::from(need()?)),
            "mfsattrcacheto" => self.attr_cache = need()?.parse().map_err(|e| bad(opt, e))?,
            "mfsentrycacheto" => self.entry_cache = need()?.parse().map_err(|e| bad(opt, e))?,
            "mfsiotimeout" | "mfstimeout" => {
                self.io_timeout = need()?.parse().map_err(|e| bad(opt, e))?
            }
            "cluster_id" => self.cluster_id = Some(need()?),
            "metrics" => self.metrics = Some(need()?),
            k if IGNORED.contains(&k) || k.starts_with("x-") => {}
            _ => return Err(OptionError::Unknown(opt.to_string())),
        }
        Ok(())
    }

    fn password(&self) -> Result<Option<String>, OptionError> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|error| {
                OptionError::PasswordFile { path: path.display().to_string(), error }
            })?;
            return Ok(Some(text.lines().next().unwrap_or("").to_string()));
        }
        if self.password_prompt {
            return prompt_password().map(Some).map_err(OptionError::Prompt);
        }
        Ok(None)
    }
}

/// The `/metrics` address: an IP and port (a mount serves it on one interface only).
fn metrics_addr(addr: &str) -> Result<std::net::SocketAddr, OptionError> {
    addr.parse().map_err(|_| {
        bad(&format!("metrics={addr}"), "must be IP:PORT, e.g. 127.0.0.1:9429 (off by default)")
    })
}

/// A `cluster_id` as the masters' configuration allows it: 1-64 of `[A-Za-z0-9_-]`.
fn checked_cluster_id(id: String) -> Result<String, OptionError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if id.is_empty() || id.len() > 64 || !id.chars().all(allowed) {
        let why = "must be the masters' cluster_id: 1-64 of [A-Za-z0-9_-]";
        return Err(bad(&format!("cluster_id={id}"), why));
    }
    Ok(id)
}

fn bad(option: &str, why: impl ToString) -> OptionError {
    OptionError::Bad { option: option.to_string(), why: why.to_string() }
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() { s.clamp(0.0, 3600.0) } else { 0.0 })
}

/// Separates the masters in a mount's fsname. Not a comma: fusermount splits its `-o`
/// options (fsname among them) at commas unless escaped, while a mount made directly by root
/// passes the source unparsed, so a comma would need escaping on one path and not the other.
pub const FSNAME_MASTER_SEPARATOR: &str = "+";

/// "HOST[:PORT],HOST[:PORT]" → ["host:port", …] with `port` where none is given. The masters
/// may also be joined by `+`, as a mount's source shows them in `/proc/mounts` and `findmnt`,
/// so that a source copied from there into fstab or `mount` works.
pub fn masters(list: &str, port: u16) -> Vec<String> {
    list.split([',', '+'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.rsplit_once(':') {
            Some((_, p)) if p.parse::<u16>().is_ok() => s.to_string(),
            _ => format!("{s}:{port}"),
        })
        .collect()
}

fn normalise_subfolder(s: &str) -> String {
    let trimmed = s.trim_matches('/');
    format!("/{trimmed}")
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Reads one line from the terminal with echo off.
fn prompt_password() -> std::io::Result<String> {
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    use std::os::fd::AsRawFd;
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it for an open terminal fd.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    // SAFETY: same fd, a termios derived from the one the kernel gave us.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = &tty;
    let asked = out.write_all(b"mfsha password: ").and_then(|_| out.flush());
    let mut line = String::new();
    let read = asked.and_then(|_| std::io::BufReader::new(&tty).read_line(&mut line));
    // SAFETY: restores the settings read above.
    let restored = unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    let newline = out.write_all(b"\n");
    read?;
    newline?;
    if restored != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_get_the_default_port() {
        assert_eq!(masters("a,b:1234, c ", 9421), vec!["a:9421", "b:1234", "c:9421"]);
        assert_eq!(
            masters("a+b:1234+c", 9421),
            vec!["a:9421", "b:1234", "c:9421"],
            "findmnt's form"
        );
    }

    #[test]
    fn the_fsname_names_every_master() {
        let o = MountOptions::new("/mnt/x".into(), "m1,m2:7000, m3");
        let r = o.resolve().unwrap();
        assert_eq!(r.fsname, "m1:9421+m2:7000+m3:9421");
        let back: Vec<&str> = r.fsname.split(FSNAME_MASTER_SEPARATOR).collect();
        assert_eq!(back, ["m1:9421", "m2:7000", "m3:9421"]);
        assert_eq!(r.client.master.masters, back);
    }

    #[test]
    fn dash_o_options_override_flags() {
        let mut o = MountOptions::new("/mnt/x".into(), "m1");
        o.options =
            ["rw", "_netdev", "mfsport=7000", "mfssubfolder=data/", "ro", "mfsattrcacheto=2.5"]
                .map(String::from)
                .to_vec();
        let r = o.resolve().unwrap();
        assert!(r.read_only);
        assert_eq!(r.client.master.masters, vec!["m1:7000"]);
        assert_eq!(r.client.master.subdir, "/data");
        assert_eq!(r.fsname, "m1:7000/data");
        assert_eq!(r.times.attr, Duration::from_millis(2500));
    }

    #[test]
    fn without_default_permissions_the_master_checks_and_no_name_is_cached() {
        let mut o = MountOptions::new("/mnt/x".into(), "m1");
        let r = o.resolve().unwrap();
        assert_eq!(
            (r.checks, r.times.entry),
            (PermissionChecks::Kernel, Duration::from_millis(500))
        );
        o.options = vec!["nodefault_permissions".into()];
        let r = o.resolve().unwrap();
        assert_eq!((r.checks, r.times.entry), (PermissionChecks::Master, Duration::ZERO));
        o.options.push("default_permissions".into());
        assert_eq!(o.resolve().unwrap().checks, PermissionChecks::Kernel, "the last one wins");
    }

    #[test]
    fn unknown_and_malformed_options_are_refused() {
        let mut o = MountOptions::new("/mnt/x".into(), "m1");
        o.options = vec!["bogus".into()];
        assert!(matches!(o.resolve(), Err(OptionError::Unknown(s)) if s == "bogus"));
        o.options = vec!["mfsport=notaport".into()];
        assert!(matches!(o.resolve(), Err(OptionError::Bad { .. })));
        o.options = vec!["cluster_id=no spaces".into()];
        assert!(
            matches!(o.resolve(), Err(OptionError::Bad { option, .. }) if option.contains("cluster_id"))
        );
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given_by_flag_or_option() {
        let mut o = MountOptions::new("/mnt/x".into(), "m1");
        assert_eq!(o.resolve().unwrap().metrics, None);
        o.metrics = Some("127.0.0.1:9500".into());
        assert_eq!(o.resolve().unwrap().metrics, Some("127.0.0.1:9500".parse().unwrap()));
        o.options = vec!["metrics=127.0.0.1:9429".into()];
        assert_eq!(o.resolve().unwrap().metrics, Some("127.0.0.1:9429".parse().unwrap()));
        o.options = vec!["metrics=localhost".into()];
        let err = o.resolve().expect_err("not IP:PORT").to_string();
        assert!(err.contains("metrics=localhost") && err.contains("IP:PORT"), "{err}");
    }

    #[test]
    fn the_cluster_id_comes_from_the_flag_or_the_option() {
        let mut o = MountOptions::new("/mnt/x".into(), "m1");
        assert_eq!(o.resolve().unwrap().client.master.cluster_id, None);
        o.cluster_id = Some("flag".into());
        assert_eq!(o.resolve().unwrap().client.master.cluster_id.as_deref(), Some("flag"));
        o.options = vec!["cluster_id=prod-1".into()];
        assert_eq!(o.resolve().unwrap().client.master.cluster_id.as_deref(), Some("prod-1"));
    }

    #[test]
    fn password_comes_from_the_file_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "secret\nignored\n").unwrap();
        let mut o = MountOptions::new("/mnt/x".into(), "m1");
        o.options = vec![format!("mfspassfile={}", path.display())];
        assert_eq!(o.resolve().unwrap().client.master.password.as_deref(), Some("secret"));
        o.options = vec![format!("passwordfile={}", path.display())];
        assert_eq!(o.resolve().unwrap().client.master.password.as_deref(), Some("secret"));
        o.options = vec!["password=111111".into()];
        assert_eq!(o.resolve().unwrap().client.master.password.as_deref(), Some("111111"));
    }
}
