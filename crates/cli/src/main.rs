//! `mfsha`: the one operator binary.
//!
//! Every daemon and tool is a subcommand (`mfsha master`, `mfsha chunkserver`, `mfsha mount`,
//! `mfsha status`, …), as operators of etcd- or consul-style tools expect; `mfsha demo` uses the
//! same executable to start a whole local cluster. This crate holds no logic: it parses
//! arguments, sets up logging and calls into the crate that owns the work.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod bench_fuse;
mod bench_io;
mod bench_meta;
mod demo;
mod exports;
mod leader;
mod member;
mod meta_check;
mod meta_restore;
mod meta_synth;
mod status;
mod supervise;
mod tools;
mod trash;
mod views;

/// Default master address for tools run on or near the master. Override with `-H` or
/// `MFSHA_MASTER` (the VIP, once the cluster has one).
const DEFAULT_MASTER: &str = "127.0.0.1:9421";

#[derive(Parser)]
#[command(
    name = "mfsha",
    version,
    about = "mfsha: a highly available MooseFS-style filesystem",
    long_about = "mfsha: a highly available MooseFS-style filesystem.\n\n\
        One binary for every daemon (master, chunkserver, logger, mount) and every tool. \
        Started as mount.mfsha it is the mount(8) helper for `mount -t mfsha` and fstab.",
    after_help = "Files: /etc/mfsha/{master,chunkserver,logger}.yaml (commented, every default \
        shown); data in /var/lib/mfsha.\n\
        Daemons under systemd: mfsha-master, mfsha-chunkserver, mfsha-logger.\n\
        Tools ask the master given with -H or MFSHA_MASTER, or the one a mounted path names.\n\
        More: `mfsha COMMAND --help`, man mfsha, /usr/share/doc/mfsha/install.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a master (metadata server, Raft replica).
    Master {
        /// YAML configuration file (see deploy/master.yaml).
        #[arg(short, long, default_value = "/etc/mfsha/master.yaml")]
        config: PathBuf,
    },
    /// Make a new metadata group in this master's empty data directory. Run once, on one
    /// master, when a cluster is created; the other members join it when they start. Makes
    /// the cluster key too when the config names a `secret_file` that does not exist yet.
    Bootstrap {
        /// The master's YAML configuration file (its node_id, cluster_id, data_dir and peers).
        #[arg(short, long, default_value = "/etc/mfsha/master.yaml")]
        config: PathBuf,
    },
    /// Print a new random cluster id for `cluster_id:` in every node's configuration.
    ClusterId,
    /// Run a chunkserver (stores chunk copies on local disks).
    Chunkserver {
        /// YAML configuration file (see deploy/chunkserver.yaml).
        #[arg(short, long, default_value = "/etc/mfsha/chunkserver.yaml")]
        config: PathBuf,
    },
    /// Mount the filesystem with FUSE (blocks until unmounted; Ctrl-C or SIGTERM unmounts).
    Mount(mfsha_mount::MountOptions),
    /// Start a whole local cluster (master, three chunkservers, a mount) under one directory.
    Demo {
        /// Where the demo keeps its data; the mount point is DIR/mnt.
        #[arg(default_value = "mfsha-demo")]
        dir: PathBuf,
    },
    /// Run a metalogger: keeps restorable copies of the metadata (snapshot + changelog).
    Logger {
        /// YAML configuration file (see deploy/logger.yaml).
        #[arg(short, long, default_value = "/etc/mfsha/logger.yaml")]
        config: PathBuf,
    },
    /// Every node of the master group (role, term, indexes, lag, last contact, the leader
    /// and the witness), then the leader's view: counts, chunk health, connected daemons.
    Status {
        /// Every master, comma-separated (the leader a hint names is asked too).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// A path in a mounted mfsha filesystem: ask that mount's masters instead of -H.
        path: Option<String>,
        /// Print JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
        /// Only the chunkservers: chunks, space, damaged and marked disks (mfscli -SCS).
        #[arg(long)]
        servers: bool,
        /// Only the disks of every chunkserver and their state (mfscli -SHD).
        #[arg(long)]
        disks: bool,
        /// Only chunk health and the matrix of valid copies against goal.
        #[arg(long)]
        chunks: bool,
        /// Only the client sessions: address, mount, open files (mfscli -SMS).
        #[arg(long)]
        sessions: bool,
    },
    /// The members of the master group: list them, add or remove one, hand leadership over.
    Member {
        #[command(subcommand)]
        which: Member,
    },
    /// The exports file (MooseFS `mfsexports.cfg`): have every master re-read it, or check one.
    Exports {
        #[command(subcommand)]
        which: ExportsCommand,
    },
    /// Every chunk of a file with its copies and their state (MooseFS `mfsfileinfo`).
    Fileinfo {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// A path on a mounted mfsha filesystem, or from the filesystem root on the master.
        path: String,
    },
    /// A file's chunks counted by number of valid copies (MooseFS `mfscheckfile`).
    Checkfile {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// A path on a mounted mfsha filesystem, or from the filesystem root with -H.
        path: String,
    },
    /// Recursive totals of a directory: inodes, files, chunks, length, size, realsize
    /// (MooseFS `mfsdirinfo`).
    Dirinfo {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// A path on a mounted mfsha filesystem, or from the filesystem root with -H.
        path: String,
    },
    /// The goal (number of copies) of a file or directory (MooseFS `mfsgetgoal`).
    Getgoal {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// A path on a mounted mfsha filesystem, or from the filesystem root with -H.
        path: String,
    },
    /// Set the goal of a file or directory; `-r` for everything below it (MooseFS `mfssetgoal`).
    Setgoal {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// Also every file and directory below PATH.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Copies to keep, 1 to 9.
        goal: u8,
        /// A path on a mounted mfsha filesystem, or from the filesystem root with -H.
        path: String,
    },
    /// The trash time of a file or directory in seconds (MooseFS `mfsgettrashtime`).
    Gettrashtime {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// A path on a mounted mfsha filesystem, or from the filesystem root with -H.
        path: String,
    },
    /// How long deleted files stay in the trash; `-r` for everything below a directory
    /// (MooseFS `mfssettrashtime`). 0 frees deleted files at once.
    Settrashtime {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// Also every file and directory below PATH.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Seconds a deleted file is kept before it is purged.
        seconds: u32,
        /// A path on a mounted mfsha filesystem, or from the filesystem root with -H.
        path: String,
    },
    /// Deleted files kept for their trash time: list, undelete, purge (what MooseFS shows
    /// in its meta mount, `mfsmount -m`).
    Trash {
        #[command(subcommand)]
        which: Trash,
    },
    /// Offline tools for a stopped master's data directory.
    Meta {
        #[command(subcommand)]
        which: Meta,
    },
    /// Benchmarks that drive a running cluster and print figures.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Trash {
    /// Every file in the trash: inode, when deleted, when it will be purged, original path.
    List {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// Print JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put a deleted file back under its original name (in / if its directory is gone).
    Undelete {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// The file's inode number, or its original path if only one deleted file had it.
        file: String,
    },
    /// Free a deleted file now, without waiting for its trash time.
    Purge {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// The file's inode number (see `mfsha trash list`).
        inode: u64,
    },
}

#[derive(Subcommand)]
enum ExportsCommand {
    /// Every master re-reads its exports file (as SIGHUP does; MooseFS `mfsmaster reload`).
    /// Sessions that still match keep working; new ones and reconnects get the new rules. A
    /// file with an error is refused with its file:line:column and the old exports stay.
    /// Root only; under exports, from an address whose line says `admin`.
    Reload {
        /// Every master, comma-separated (each reads its own file), or one of them.
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
    },
    /// Parses an exports file as a master would, without one: its line count or first error.
    Check {
        /// The exports file.
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum Member {
    /// One line per node: role, term, commit and applied index, lag, last contact.
    List {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// Print JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask the leader to hand leadership to master ID, and wait (up to 5 s) until it leads.
    TransferLeader {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// The node id of the master to lead.
        id: u64,
    },
    /// Add node ID to the group, then wait until it has caught up. Start it first, with an
    /// empty data directory, this group's cluster_id, and the current members as its peers:
    /// it gets the leader's snapshot, then the log. Without --client it joins as a witness.
    Add {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// The new member's node id.
        id: u64,
        /// Its peer (Raft) port as the other members reach it, HOST:PORT.
        #[arg(long)]
        peer: String,
        /// Its client port (a master), HOST:PORT.
        #[arg(long)]
        client: Option<String>,
        /// Its chunkserver port (a master), HOST:PORT.
        #[arg(long)]
        chunkserver: Option<String>,
        /// Its metalogger port (a master), HOST:PORT.
        #[arg(long)]
        logger: Option<String>,
        /// Join as a non-voting learner (the metalogger beside three masters).
        #[arg(long)]
        learner: bool,
        /// Seconds to wait for it to catch up.
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Remove node ID from the group (not the leader: transfer leadership first). The removed
    /// node stops once it has applied its removal.
    Remove {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// The node id of the member to remove.
        id: u64,
    },
}

#[derive(Subcommand)]
enum Meta {
    /// Rebuild the metadata from a metalogger's directory and report what it holds.
    FromLogger {
        /// The logger's data_dir.
        logger_dir: PathBuf,
    },
    /// Check a stopped master's metadata: record checksums and invariants; prints counts.
    Check {
        /// The master's data_dir.
        data_dir: PathBuf,
    },
    /// Every master lost: make a new group in this master's empty data_dir from a
    /// metalogger's or the witness's copy (or a copy of a master's data_dir). See
    /// docs/runbook-restore.md.
    Restore {
        /// A metalogger's data_dir (its witness/ store is used too), or a master data_dir copy.
        #[arg(long)]
        from: PathBuf,
        /// The master's YAML configuration (its node_id, cluster_id, data_dir and peers).
        #[arg(short, long, default_value = "/etc/mfsha/master.yaml")]
        config: PathBuf,
    },
    /// Development aid: make a new group in this master's empty data_dir whose namespace
    /// already holds FILES empty files (tests and benchmarks at scale).
    #[command(hide = true)]
    Synth {
        #[arg(long)]
        files: u64,
        /// The master's YAML configuration.
        #[arg(short, long, default_value = "/etc/mfsha/master.yaml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Metadata operations per second over the client protocol (create, mkdir, lookup, getattr, unlink).
    Meta {
        /// The master to ask, HOST:PORT (the VIP, or every master comma-separated).
        #[arg(short = 'H', long = "master", env = "MFSHA_MASTER", default_value = DEFAULT_MASTER)]
        master: String,
        /// Concurrent client sessions.
        #[arg(long, default_value_t = 32)]
        sessions: usize,
        /// Operations per phase.
        #[arg(long, default_value_t = 100_000)]
        ops: usize,
    },
    /// Chunk I/O through the client library: write then read a file with goal 1, 2 and 3,
    /// next to the local disk's own sequential figures. Without -H it starts its own master
    /// and three chunkservers under DIR.
    Io {
        /// Use this running master instead of starting a local cluster.
        #[arg(short = 'H', long = "master")]
        master: Option<String>,
        /// File size in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Work directory (local-disk test file, and the local cluster's data).
        #[arg(long, default_value = "mfsha-bench-io")]
        dir: PathBuf,
    },
    /// Through the FUSE mount and on a local directory in the same run: fio (sequential
    /// write with end_fsync, cold sequential read, 4 KiB random read with 1 and 4 jobs), one
    /// syscall at a time metadata (create, stat, ls -l, rename, unlink, mkdir, rmdir), small
    /// files, and a tarball of /usr/include and /usr/share extracted, stat'ed and removed.
    /// Without --mount it starts its own local cluster (goal 2) under DIR.
    Fuse(bench_fuse::FuseBench),
}

fn main() -> ExitCode {
    keep_big_buffers_in_the_heap();
    // `mount -t mfsha host:/ /mnt` runs us as `mount.mfsha` (a symlink to this binary).
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    if mfsha_mount::helper::invoked_as_helper(&argv0) {
        let code = mfsha_mount::helper::main(args.collect());
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = Cli::parse();
    if !cli.command.is_daemon() {
        die_quietly_on_a_closed_pipe();
    }
    init_logging();
    // Daemons hold many sockets and chunk files; the ports' connection caps are sized from
    // this limit (see `mfsha_proto::gate`).
    match mfsha_proto::gate::raise_fd_limit() {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e,
            "could not raise the open-file limit; the ports' connection caps shrink to fit the current one"),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mfsha: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The data path moves 1 MiB buffers (chunk pieces, frames). By default glibc serves each
/// from a fresh mmap and unmaps it on free, so every buffer costs 256 page faults and zeroed
/// pages; raising the mmap threshold keeps them in the reusable heap instead.
fn keep_big_buffers_in_the_heap() {
    const THRESHOLD: libc::c_int = 64 << 20;
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
    }
}

impl Command {
    /// Long-running processes (which must survive a peer closing a socket) as opposed to tools.
    fn is_daemon(&self) -> bool {
        matches!(
            self,
            Command::Master { .. }
                | Command::Chunkserver { .. }
                | Command::Logger { .. }
                | Command::Mount(_)
                | Command::Demo { .. }
        )
    }
}

/// `mfsha status | head` should stop when `head` does, as `ls | head` does, not panic on
/// "Broken pipe": Rust ignores SIGPIPE, so println! to a closed pipe panics. Tools get the
/// default action back; daemons keep ignoring it (a write to a closed socket is an error).
fn die_quietly_on_a_closed_pipe() {
    // SAFETY: restores the default disposition of one signal before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Master { config } => mfsha_master_ha::daemon::run_blocking(&config)
            .with_context(|| format!("master with config {} failed", config.display())),
        Command::Bootstrap { config } => bootstrap(&config),
        Command::ClusterId => {
            println!("{}", new_cluster_id());
            Ok(())
        }
        Command::Chunkserver { config } => run_chunkserver(&config),
        Command::Fileinfo { master, path } => block_on(tools::fileinfo(&master, &path)),
        Command::Checkfile { master, path } => block_on(tools::checkfile(&master, &path)),
        Command::Dirinfo { master, path } => block_on(tools::dirinfo(&master, &path)),
        Command::Getgoal { master, path } => block_on(tools::getgoal(&master, &path)),
        Command::Setgoal { master, recursive, goal, path } => {
            block_on(tools::setgoal(&master, &path, goal, recursive))
        }
        Command::Gettrashtime { master, path } => block_on(trash::gettrashtime(&master, &path)),
        Command::Settrashtime { master, recursive, seconds, path } => {
            block_on(trash::settrashtime(&master, &path, seconds, recursive))
        }
        Command::Trash { which: Trash::List { master, json } } => {
            block_on(trash::list(&master, json))
        }
        Command::Trash { which: Trash::Undelete { master, file } } => {
            block_on(trash::undelete(&master, &file))
        }
        Command::Trash { which: Trash::Purge { master, inode } } => {
            block_on(trash::purge(&master, inode))
        }
        Command::Bench { which: Bench::Io { master, size_mib, dir } } => {
            bench_io::run(master.as_deref(), size_mib, &dir)
        }
        Command::Bench { which: Bench::Fuse(bench) } => bench_fuse::run(&bench),
        Command::Mount(opts) => Ok(mfsha_mount::mount(opts)?),
        Command::Demo { dir } => demo::run(&dir),
        Command::Logger { config } => run_logger(&config),
        Command::Meta { which: Meta::FromLogger { logger_dir } } => logger_report(&logger_dir),
        Command::Status { master, path, json, servers, disks, chunks, sessions } => {
            let masters = match path {
                Some(path) => tools::target(&master, &path).master,
                None => master,
            };
            let which = views::Which { servers, disks, chunks, sessions };
            block_on(status::run(&masters, json, which))
        }
        Command::Exports { which: ExportsCommand::Reload { master } } => {
            block_on(exports::reload(&master))
        }
        Command::Exports { which: ExportsCommand::Check { file } } => exports::check(&file),
        Command::Member { which: Member::List { master, json } } => {
            block_on(member::list(&master, json))
        }
        Command::Member { which: Member::TransferLeader { master, id } } => {
            block_on(member::transfer_leader(&master, id))
        }
        Command::Member {
            which: Member::Add { master, id, peer, client, chunkserver, logger, learner, wait },
        } => {
            let wait = std::time::Duration::from_secs(wait);
            let new = member::NewMember { id, learner, peer, client, chunkserver, logger, wait };
            block_on(member::add(&master, new))
        }
        Command::Member { which: Member::Remove { master, id } } => {
            block_on(member::remove(&master, id))
        }
        Command::Meta { which: Meta::Check { data_dir } } => meta_check::run(&data_dir),
        Command::Meta { which: Meta::Restore { from, config } } => {
            meta_restore::run(&from, &config)
        }
        Command::Meta { which: Meta::Synth { files, config } } => meta_synth::run(files, &config),
        Command::Bench { which: Bench::Meta { master, sessions, ops } } => {
            block_on(bench_meta::run(&master, sessions, ops))
        }
    }
}

fn run_chunkserver(config: &std::path::Path) -> anyhow::Result<()> {
    let config = mfsha_chunk::config::load(config)?;
    block_on(async move { Ok(mfsha_chunk::run(config).await?) })
}

fn run_logger(config: &std::path::Path) -> anyhow::Result<()> {
    let config = mfsha_logger::config::load(config)?;
    block_on(async move { Ok(mfsha_logger::run(config).await?) })
}

/// `mfsha meta from-logger DIR`: what an operator can restore from a metalogger.
fn logger_report(dir: &std::path::Path) -> anyhow::Result<()> {
    let restored = mfsha_logger::restore::load(dir)?;
    for warning in &restored.warnings {
        eprintln!("warning: {warning}");
    }
    let counts = restored.state.counts();
    println!("snapshot index:  {}", restored.snapshot_index);
    println!("restored up to:  {}", restored.state.applied_index());
    println!("inodes:          {}", counts.inodes);
    println!("directories:     {}", counts.directories);
    println!("files:           {}", counts.files);
    println!("chunks:          {}", counts.chunks);
    if let Err(problems) = restored.state.check_invariants() {
        anyhow::bail!(
            "restored metadata breaks {} invariants: {}",
            problems.len(),
            problems.join("; ")
        );
    }
    println!("invariants:      ok");
    Ok(())
}

/// Runs a tool's future on a fresh runtime.
fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// `mfsha bootstrap`: a new group in the empty data directory named by the configuration.
fn bootstrap(config_path: &std::path::Path) -> anyhow::Result<()> {
    let config = mfsha_master_ha::config::load(config_path)?;
    if let Some(path) = &config.secret_file {
        make_or_check_key(path)?;
    }
    mfsha_master_ha::daemon::bootstrap(&config)
        .with_context(|| format!("bootstrap with config {} failed", config_path.display()))?;
    println!(
        "bootstrapped cluster {} in {} (node {}); start the masters now",
        config.cluster_id,
        config.data_dir.display(),
        config.node_id
    );
    Ok(())
}

/// The cluster key named by `secret_file`: made if absent, else checked readable and private.
fn make_or_check_key(path: &std::path::Path) -> anyhow::Result<()> {
    use mfsha_proto::cluster_key::ClusterKey;
    if path.exists() {
        ClusterKey::load(path)?;
        println!("using the cluster key in {}", path.display());
        return Ok(());
    }
    ClusterKey::generate().write_new(path)?;
    println!(
        "made the cluster key {}: copy it (mode 0600) to every master, chunkserver and \
         metalogger and name it as secret_file in their configs",
        path.display()
    );
    Ok(())
}

/// 128 random bits in hex: unique without coordination.
fn new_cluster_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
