//! The child daemons of `mfsha demo` (and of the benches' local cluster): started with their
//! output in a log file, watched, and — once the demo is up — started again when they die, as
//! systemd's `Restart=on-failure` with `RestartSec=2` would: the demo is an appliance, and a
//! killed master must come back (as a follower) instead of taking everything down with it.

use anyhow::{bail, Context};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a dead daemon stays down before it is started again (systemd's `RestartSec`).
pub const RESTART_DELAY: Duration = Duration::from_secs(2);
/// A daemon that dies this often within [`RESTART_WINDOW`] is left down (systemd's start
/// limit): restarting something that cannot run only buries its first error in the log.
const RESTART_BURST: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How long each daemon may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines shown when a daemon dies.
const TAIL_LINES: usize = 12;

/// What a daemon is doing, as its supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Running,
    /// Dead; started again at this instant.
    RestartAt(Instant),
    /// Exited cleanly, or died too often: left down.
    Down,
}

/// One child daemon: `exe ARGS`, output appended to `DIR/NAME.log`.
pub struct Daemon {
    pub name: String,
    exe: PathBuf,
    args: Vec<String>,
    child: Child,
    pub log: PathBuf,
    life: Life,
    deaths: Vec<Instant>,
    /// Called before each restart (the mount: release the dead FUSE connection).
    before_restart: Option<fn(&Daemon)>,
    /// A mount point this daemon owns, for `before_restart`.
    pub mount_point: Option<PathBuf>,
}

impl Daemon {
    pub fn start(exe: &Path, dir: &Path, name: &str, args: &[String]) -> anyhow::Result<Daemon> {
        let log = dir.join(format!("{name}.log"));
        let child = spawn(exe, &log, name, args)?;
        Ok(Daemon {
            name: name.to_string(),
            exe: exe.to_path_buf(),
            args: args.to_vec(),
            child,
            log,
            life: Life::Running,
            deaths: Vec::new(),
            before_restart: None,
            mount_point: None,
        })
    }

    /// A mount's daemon: before a restart its dead mount is released from `mount_point`.
    pub fn with_mount_point(mut self, mount_point: &Path) -> Daemon {
        self.mount_point = Some(mount_point.to_path_buf());
        self.before_restart = Some(release_dead_mount);
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails (with the end of its log) if the daemon has exited: while the demo starts, a
    /// daemon that dies is an error to report, not to paper over.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "the {} exited ({status}); its log {} ends with:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 20)
            ),
            Err(e) => bail!("cannot check on the {}: {e}", self.name),
        }
    }

    /// One look: notices a death, restarts when its delay has passed.
    pub fn supervise(&mut self) {
        match self.life {
            Life::Running => match self.child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => self.died(status),
                Err(e) => eprintln!("demo: cannot check on the {}: {e}", self.name),
            },
            Life::RestartAt(at) if Instant::now() >= at => self.restart(),
            Life::RestartAt(_) | Life::Down => {}
        }
    }

    fn died(&mut self, status: ExitStatus) {
        let now = Instant::now();
        self.deaths.retain(|at| now.duration_since(*at) < RESTART_WINDOW);
        self.deaths.push(now);
        println!(
            "\ndemo: the {} (pid {}) died: {status}; the end of its log {}:\n{}",
            self.name,
            self.child.id(),
            self.log.display(),
            indent(&tail(&self.log, TAIL_LINES))
        );
        self.life = if status.success() {
            println!("demo: it exited cleanly, so it is left stopped (as Restart=on-failure does)");
            Life::Down
        } else if self.deaths.len() >= RESTART_BURST {
            println!(
                "demo: it died {RESTART_BURST} times within {RESTART_WINDOW:?}; left stopped. \
                 Fix what its log says, then restart the demo"
            );
            Life::Down
        } else {
            println!("demo: restarting the {} in {RESTART_DELAY:?}", self.name);
            Life::RestartAt(now + RESTART_DELAY)
        };
    }

    fn restart(&mut self) {
        if let Some(prepare) = self.before_restart {
            prepare(self);
        }
        match spawn(&self.exe, &self.log, &self.name, &self.args) {
            Ok(child) => {
                self.child = child;
                self.life = Life::Running;
                println!("demo: restarted the {} (pid {})", self.name, self.child.id());
            }
            Err(e) => {
                println!("demo: {e:#}; trying again in {RESTART_DELAY:?}");
                self.life = Life::RestartAt(Instant::now() + RESTART_DELAY);
            }
        }
    }

    /// SIGTERM, wait, and SIGKILL if it does not stop in time; nothing if it is not running.
    pub fn stop(&mut self) {
        if self.life != Life::Running || matches!(self.child.try_wait(), Ok(Some(_))) {
            self.life = Life::Down;
            return;
        }
        self.life = Life::Down;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        if unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) } != 0 {
            eprintln!("demo: cannot signal the {}: {}", self.name, std::io::Error::last_os_error());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return println!("  stopped {}", self.name),
                Ok(Some(status)) => {
                    return println!(
                        "  stopped {} ({status}; see {})",
                        self.name,
                        self.log.display()
                    )
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return eprintln!("demo: cannot wait for the {}: {e}", self.name),
            }
        }
        eprintln!("demo: the {} did not stop within {STOP_TIMEOUT:?}; killing it", self.name);
        if let Err(e) = self.child.kill().and_then(|_| self.child.wait().map(|_| ())) {
            eprintln!("demo: cannot kill the {}: {e}", self.name);
        }
    }
}

fn spawn(exe: &Path, log: &Path, name: &str, args: &[String]) -> anyhow::Result<Child> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open the log file {}", log.display()))?;
    let err = out.try_clone().with_context(|| format!("cannot share {}", log.display()))?;
    let mut command = Command::new(exe);
    command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    // Own process group: Ctrl-C reaches only the demo, which stops the daemons in order.
    command.process_group(0);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to send SIGTERM to the
    // child if the demo dies, so no daemon outlives a killed demo.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().with_context(|| format!("cannot start the {name}"))
}

/// A FUSE daemon that died leaves its mount behind, answering "Transport endpoint is not
/// connected"; it must go before a new mount can take the mount point.
fn release_dead_mount(daemon: &Daemon) {
    let Some(mnt) = &daemon.mount_point else { return };
    if !mfsha_mount::helper::is_mounted_anything(mnt) {
        return;
    }
    match mfsha_mount::unmount(mnt) {
        Ok(()) => println!("demo: released the dead mount on {}", mnt.display()),
        Err(e) => println!(
            "demo: cannot release the dead mount on {} ({e}); `umount -l {}` by hand",
            mnt.display(),
            mnt.display()
        ),
    }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// `text` indented, without the colour codes the daemons' logs carry.
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {}", strip_ansi(l))).collect::<Vec<_>>().join("\n")
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_codes_are_stripped_from_log_lines() {
        let line = "\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m started";
        assert_eq!(super::strip_ansi(line), "2026  INFO started");
    }
}
