//! Command-line interface: argument parsing and dispatch. Every subcommand calls the library,
//! renders its report and maps its errors to an exit code (see [`base::exit`]). One file per
//! family: [`agent`] (agent, capture, sync, retry), [`bundle`], [`keys`], [`moodle`] (the
//! companion plugin), [`report`] (status, audit, inspect), [`shore`], [`users`].

pub mod agent;
pub mod bundle;
pub mod keys;
pub mod moodle;
pub mod report;
pub mod shore;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use base::clock::Clock;
use base::exit;
use vessel::config::{Config, DEFAULT_PATH};

/// Ship-to-shore sync agent for Moodle.
///
/// On a vessel, `vessel-sync agent` runs as a systemd service: it takes signed command bundles
/// from an inbox directory (shared disk, store-and-forward carrier, USB stick) or from shore,
/// verifies them, records them in a crash-safe journal and applies each command exactly once; it
/// captures learner progress from Moodle's database and sends it home in signed batches until
/// shore acknowledges them. Ashore, `vessel-sync shore` receives the batches and queues bundles,
/// and operators use the same binary to make keys and to build, sign, inspect and verify bundles.
///
/// New here? Run `vessel-sync demo` to watch the whole flow in a temporary folder (in a build
/// from the source checkout, `cargo run --release -- demo`; the Debian package carries no demo).
#[derive(Debug, Parser)]
#[command(
    name = "vessel-sync",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make an Ed25519 key pair: PREFIX.key (private, mode 0600) and PREFIX.pub.
    ///
    /// An operator's (or shore's) key signs bundles: keep its .key ashore; copy the .pub to every
    /// vessel and list it under [keyring] trusted. A vessel's own key (`--vessel`) signs its
    /// progress batches: its .key stays on board ([uplink] signing_key, readable by the agent
    /// only) and its .pub goes ashore to 'shore vessel add --pubkey'. Existing files are never
    /// overwritten.
    Keygen {
        /// Path prefix of the two files, e.g. `keys/shore-ops`.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// A label stored in the .pub file (shown by `bundle inspect`).
        #[arg(long, default_value = "")]
        comment: String,
        /// Make the fleet root key: it certifies operator keys (`key certify`) and signs
        /// trust_key and revoke_key bundles, nothing else. Keep its .key offline; list its .pub
        /// under [keyring] root on every vessel.
        #[arg(long)]
        root: bool,
        /// Make this vessel's own key (its [uplink] signing_key): the advice printed is for a
        /// key that stays on board.
        #[arg(long, conflicts_with = "root")]
        vessel: bool,
    },
    /// Operator certificates from the fleet root key: certify, show.
    #[command(subcommand)]
    Key(keys::KeyCmd),
    /// On board: make a new signing key for this vessel. The next progress batch carries the
    /// new public key signed by the old one, so shore learns it without anyone ashore doing
    /// anything; batches already built keep the old signature and are still accepted.
    ///
    /// Run it as the agent's user, the owner of the state directory (`sudo -u www-data
    /// vessel-sync rotate-key`); the agent may keep running. The new key lives in STATE_DIR/keys/; the config's signing_key stays as it
    /// is (it signs nothing new).
    RotateKey {
        /// The config file option.
        #[command(flatten)]
        config: ConfigArg,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build, inspect and verify command bundles.
    #[command(subcommand)]
    Bundle(bundle::BundleCmd),
    /// Run the vessel agent (normally started by systemd).
    ///
    /// Watches the inbox, verifies and journals every bundle, and applies its commands exactly
    /// once. Under systemd it reports readiness, status and watchdog pings; SIGTERM stops it
    /// between two steps. With --once it works the inbox and journal until nothing more can be
    /// done now, prints what happened, and exits.
    Agent {
        /// The config file option.
        #[command(flatten)]
        config: ConfigArg,
        /// Work until idle, then exit (for cron, tests, or a manual run after plugging in a USB stick).
        #[arg(long)]
        once: bool,
    },
    /// Check a config file: syntax, every key, key files, directories. Exit 78 when invalid.
    CheckConfig {
        /// The config file option.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show what the agent is doing: bundles, waiting commands with reasons, sequence gaps,
    /// quarantined files, mappings, and progress: records not yet acknowledged, the uplink's
    /// last contact, next attempt and errors, budgets, the last capture and the progress
    /// quarantine.
    Status {
        /// The config file option.
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Export the audit trail: every bundle accepted, duplicated or rejected and every command
    /// transition, with time, actor (issuer key id) and outcome.
    Audit {
        /// The config file option.
        #[command(flatten)]
        config: ConfigArg,
        /// JSON lines, one object per event.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// CSV with a header row (cells that a spreadsheet would run as formulas are made safe).
        #[arg(long)]
        csv: bool,
        /// Only events after this audit id (for incremental export).
        #[arg(long, default_value_t = 0)]
        since_id: i64,
    },
    /// Show the whole flow in a temporary folder: keys, signed bundles, the agent applying a good
    /// bundle, ignoring a replayed one and quarantining a tampered one; then progress captured
    /// from a throwaway PostgreSQL and acknowledged by a shore receiver on loopback. Built from a
    /// source checkout only (the `lab` feature); the Debian package's binary says where it lives.
    Demo {
        /// Work in this directory instead of a temporary one (kept afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print the shell completion script for bash, zsh or fish.
    ///
    /// For example: `vessel-sync completions bash > /usr/share/bash-completion/completions/vessel-sync`.
    /// Packages install these for you.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (vessel-sync.1 and one page per subcommand) into a directory.
    Manpages {
        /// Where to write the .1 files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Capture learner progress from the Moodle database now and queue the changes for shore
    /// (the agent also does this every [capture] interval).
    Capture {
        /// The config file option.
        #[command(flatten)]
        config: ConfigArg,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a failed command again, on board, without a new bundle from shore: for one the agent
    /// gave up on after dying under it repeatedly (a power cut storm, a full disk since freed).
    ///
    /// The command becomes ready with fresh counts and runs at the agent's next pass; its
    /// files come from the bundle's work directory or, if that was cleaned up, from the
    /// bundle's archived copy (verified again). `vessel-sync status` lists failed commands.
    /// Run it as the agent's user (`sudo -u www-data vessel-sync retry ID`).
    Retry {
        /// The command's id (as `status` and `audit` show it).
        command: String,
        /// The config file option.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run one sync cycle now: send waiting progress batches to shore (or write them for the
    /// file carrier), take the acknowledgement, and fetch waiting bundles into the inbox.
    Sync {
        /// The config file option.
        #[command(flatten)]
        config: ConfigArg,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The shore side: the HTTPS receiver and the operator's tools for vessels, bundles and
    /// exports.
    #[command(subcommand)]
    Shore(shore::ShoreCmd),
    /// Seafarer accounts in bulk: validate a user CSV, import it into any Moodle.
    #[command(subcommand)]
    Users(users::UsersCmd),
    /// The companion Moodle plugin local_vesselsync: install it into a Moodle.
    #[command(subcommand)]
    Moodle(moodle::MoodleCmd),
    /// Benchmarks to run on the ship's own hardware.
    Bench(crate::bench::BenchArgs),
}

/// The --config option shared by the agent-side commands.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The agent's config file.
    #[arg(long, short = 'c', env = "VESSEL_SYNC_CONFIG", default_value = DEFAULT_PATH, value_name = "FILE")]
    pub config: PathBuf,
}

/// Prints `vessel-sync: MSG` on stderr and returns `code`, for `return fail(exit::USAGE, ...)`.
pub(crate) fn fail(code: i32, msg: impl std::fmt::Display) -> i32 {
    eprintln!("vessel-sync: {msg}");
    code
}

/// Parses the process arguments and runs; returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    run(cli)
}

fn load_config(path: &Path) -> Result<Config, i32> {
    Config::load(path).map_err(|e| {
        eprint!("{e}");
        exit::CONFIG
    })
}

/// What `vessel-sync demo` says in a build without the `lab` feature (the Debian package).
#[cfg(not(feature = "lab"))]
pub const NO_DEMO: &str = "the demo is not in this packaged build: it runs a stand-in Moodle and \
a throwaway database, which the package does not carry. Run it from a source checkout with \
'cargo run --release -- demo' (README, first command).";

/// Runs a parsed command line.
pub fn run(cli: Cli) -> i32 {
    let clock: Arc<dyn Clock> = base::clock::from_env();
    match cli.command {
        Command::Keygen {
            out,
            comment,
            root,
            vessel,
        } => keys::keygen(&out, &comment, root, vessel),
        Command::Key(cmd) => keys::run(cmd, clock.as_ref()),
        Command::RotateKey { config, json } => keys::rotate(&config.config, json, clock.as_ref()),
        Command::Bundle(b) => bundle::run(b, clock.as_ref()),
        Command::Agent { config, once } => agent::agent(&config.config, once, clock),
        Command::CheckConfig { config } => check_config(&config.config),
        Command::Status { config, json } => match load_config(&config.config) {
            Ok(cfg) => {
                exit::quiet_on_closed_pipe();
                crate::cli::report::status(&cfg, clock.as_ref(), json)
            }
            Err(code) => code,
        },
        Command::Audit {
            config,
            json,
            csv,
            since_id,
        } => match load_config(&config.config) {
            Ok(cfg) => {
                exit::quiet_on_closed_pipe();
                crate::cli::report::audit(&cfg, json, csv, since_id)
            }
            Err(code) => code,
        },
        #[cfg(feature = "lab")]
        Command::Demo { dir } => crate::demo::run(dir),
        #[cfg(not(feature = "lab"))]
        Command::Demo { .. } => fail(exit::UNAVAILABLE, NO_DEMO),
        Command::Capture { config, json } => agent::capture(&config.config, json, clock),
        Command::Sync { config, json } => agent::sync(&config.config, json, clock),
        Command::Retry { command, config } => {
            agent::retry(&config.config, &command, clock.as_ref())
        }
        Command::Shore(cmd) => shore::run(cmd, clock),
        Command::Users(cmd) => users::run(cmd),
        Command::Moodle(cmd) => moodle::run(cmd),
        Command::Bench(args) => crate::bench::run_args(args),
        Command::Completions { shell } => {
            exit::quiet_on_closed_pipe();
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "vessel-sync", &mut std::io::stdout());
            exit::OK
        }
        Command::Manpages { out } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match std::fs::create_dir_all(&out).and_then(|()| clap_mangen::generate_to(cmd, &out)) {
                Ok(()) => {
                    println!("manual pages written to {}", out.display());
                    exit::OK
                }
                Err(e) => fail(exit::IOERR, format!("{}: {e}", out.display())),
            }
        }
    }
}

fn check_config(path: &Path) -> i32 {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut problems = cfg.check_directories();
    // The secret files the agent reads at work, each checked here rather than at the first
    // capture or command hours later.
    let mut secrets: Vec<(&str, &Path)> = Vec::new();
    if let Some(f) = cfg
        .moodle_db
        .as_ref()
        .and_then(|d| d.password_file.as_deref())
    {
        secrets.push(("moodle.db_password_file", f));
    }
    if let Some(ws) = &cfg.moodle_ws {
        secrets.push(("moodle.token_file", &ws.token_file));
    }
    if cfg.uplink.mode != vessel::config::UplinkMode::Off {
        if let Some(f) = cfg.uplink.token_file.as_deref() {
            secrets.push(("uplink.token_file", f));
        }
        if let Some(f) = cfg.uplink.signing_key.as_deref() {
            secrets.push(("uplink.signing_key", f));
        }
    }
    for (key, file) in secrets {
        if let Err(e) = std::fs::File::open(file) {
            problems.push(format!(
                "{key} {}: {e} (the agent reads it as its own user: www-data under the packaged unit)",
                file.display()
            ));
        }
    }
    if let Err(e) = vessel::uplink::Uplink::new(&cfg) {
        problems.push(e.to_string());
    }
    if !problems.is_empty() {
        eprintln!(
            "{}: {} problem(s) with directories, keys or files:",
            path.display(),
            problems.len()
        );
        for p in problems {
            eprintln!("  {p}");
        }
        return exit::CONFIG;
    }
    println!(
        "{}: OK. vessel {:?}, {} trusted key(s){}, {} root key(s){}; inbox {}",
        path.display(),
        cfg.vessel_id,
        cfg.keyring.len(),
        bundle::key_names(&cfg.keyring),
        cfg.roots.len(),
        bundle::key_names(&cfg.roots),
        cfg.paths.inbox.display()
    );
    exit::OK
}
