//! Command-line interface: argument parsing and dispatch. Thin: every subcommand calls the
//! library and maps its errors to an exit code (see [`base::exit`]). The `shore` subcommands
//! are in [`shore`], the `users` ones in [`users`].

pub mod keys;
pub mod report;
pub mod shore;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use base::clock::Clock;
use base::exit::{self, fail};
use vessel::agent::{Agent, AgentError};
use vessel::config::{Config, DEFAULT_PATH};
use wire::envelope::{self, Keyring, PublicKey, SecretKey, VerifyError};

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
    /// Make an Ed25519 key pair for signing bundles: PREFIX.key (private, mode 0600) and PREFIX.pub.
    ///
    /// Keep the .key file on the operator's machine ashore; copy the .pub file to every vessel
    /// and list it under [keyring] trusted in the agent's config. Existing files are never
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
    Bundle(BundleCmd),
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

/// Bundle subcommands.
#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Build and sign a bundle from a spec file (TOML; see docs/bundle-format.md, "Spec").
    ///
    /// The output is written atomically (a temporary .part name, then renamed), so it is safe to
    /// write straight into an outbound carrier folder.
    Build {
        /// The spec: recipient, sequence, optional not_before/expires, and [[command]] entries.
        #[arg(long, value_name = "SPEC.toml")]
        spec: PathBuf,
        /// The operator's private key (from `vessel-sync keygen`).
        #[arg(long, value_name = "PREFIX.key")]
        key: PathBuf,
        /// Where to write the bundle (conventionally NAME.vsb).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The key's certificate from the fleet root (`key certify`), carried in the bundle;
        /// default: PREFIX.cert beside PREFIX.key, when it exists.
        #[arg(long, value_name = "FILE.cert")]
        cert: Option<PathBuf>,
        /// A course backup the recipients already hold (the previous version): content files
        /// it has are listed but not carried, so only what changed crosses the link. Repeat
        /// for several. Without it, every content file is carried and shore can still leave
        /// out, per vessel, what that vessel holds.
        #[arg(long, value_name = "OLD.mbz")]
        base: Vec<PathBuf>,
        /// Carry course backups as they are (one .mbz member), for agents that predate delta bundles.
        #[arg(long, conflicts_with = "base")]
        whole: bool,
    },
    /// Show a bundle's manifest: issuer, recipient, sequence, validity, commands and files.
    /// This reads the manifest without checking the signature; use `verify` for that.
    Inspect {
        /// The bundle file.
        file: PathBuf,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle completely: signature against the given keys, recipient, validity
    /// window, and every member's size and SHA-256. Exit 0 only when valid; otherwise the
    /// reason is printed and the exit status is 65.
    Verify {
        /// The bundle file.
        file: PathBuf,
        /// Trusted public key files (.pub); repeat for several.
        #[arg(long = "trust", value_name = "PUB", required = true)]
        trust: Vec<PathBuf>,
        /// Also check that the bundle is addressed to this vessel (or the fleet).
        #[arg(long, value_name = "ID")]
        vessel: Option<String>,
    },
}

/// `vessel-sync retry COMMAND`.
fn retry(path: &Path, command: &str, clock: &dyn base::clock::Clock) -> i32 {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _work = match work_lock(&cfg) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let done = vessel::store::Store::open(&cfg.paths.database(), &cfg.vessel_id)
        .and_then(|mut store| store.write(|tx| tx.retry_command(command, "on-board", clock.now())));
    match done {
        Ok(Some(bundle)) => {
            println!(
                "command {} of bundle {bundle} is ready again; the agent runs it at its next pass (within [inbox] scan_interval)",
                base::text::clean(command)
            );
            exit::OK
        }
        Ok(None) => fail(
            exit::NOINPUT,
            format!(
                "no failed command has id {:?}; 'vessel-sync status' lists the failed ones",
                base::text::clip(command, 80)
            ),
        ),
        Err(e) => fail(exit::FAILURE, e),
    }
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
        Command::Keygen { out, comment, root } => keys::keygen(&out, &comment, root),
        Command::Key(cmd) => keys::run(cmd, clock.as_ref()),
        Command::RotateKey { config, json } => keys::rotate(&config.config, json, clock.as_ref()),
        Command::Bundle(b) => bundle(b, clock.as_ref()),
        Command::Agent { config, once } => agent(&config.config, once, clock),
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
        Command::Capture { config, json } => capture(&config.config, json, clock),
        Command::Sync { config, json } => sync(&config.config, json, clock),
        Command::Retry { command, config } => retry(&config.config, &command, clock.as_ref()),
        Command::Shore(cmd) => shore::run(cmd, clock),
        Command::Users(cmd) => users::run(cmd),
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

/// ": ID (NAME), ..." for a non-empty keyring, nothing for an empty one.
fn key_names(k: &Keyring) -> String {
    if k.is_empty() {
        return String::new();
    }
    let names: Vec<String> = k.iter().map(|k| format!("{} ({})", k.id, k.name)).collect();
    format!(": {}", names.join(", "))
}

fn bundle(cmd: BundleCmd, clock: &dyn Clock) -> i32 {
    match cmd {
        BundleCmd::Build {
            spec,
            key: key_path,
            out,
            cert,
            base,
            whole,
        } => {
            let key = match SecretKey::load(&key_path) {
                Ok(k) => k,
                Err(e) => return fail(exit::NOINPUT, e),
            };
            let certificate = match keys::certificate_for(&key_path, &key, cert.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let built = ::shore::build::build(
                ::shore::build::BuildSpec {
                    spec: &spec,
                    key: &key,
                    certificate,
                    base: &base,
                    whole,
                    out: &out,
                },
                clock.now(),
            );
            match built {
                Ok(b) => render_built(&out, &b),
                Err(e) => {
                    eprintln!("vessel-sync: {e}");
                    shore::exit_code(&e)
                }
            }
        }
        BundleCmd::Inspect { file, json } => crate::cli::report::inspect(&file, json),
        BundleCmd::Verify {
            file,
            trust,
            vessel,
        } => {
            let mut keys = Vec::new();
            for p in &trust {
                match PublicKey::load(p) {
                    Ok(k) => keys.push(k),
                    Err(e) => return fail(exit::NOINPUT, e),
                }
            }
            let keyring = Keyring::new(keys);
            let limits = envelope::Limits::default();
            // The keys given are trusted outright and as roots: a bundle carrying a
            // certificate by one of them verifies too (its grant is not applied here).
            let resolve = |bytes: &[u8]| {
                envelope::trust::keyring_with_carried(
                    bytes,
                    keyring.iter().cloned().collect(),
                    &keyring,
                )
            };
            let result = envelope::open_with(&file, &resolve, &limits).and_then(|o| {
                if let Some(v) = &vessel {
                    envelope::check_policy(&o.manifest, v, clock.now(), 0)?;
                } else if let Some(exp) = o
                    .manifest
                    .expires
                    .as_deref()
                    .and_then(base::clock::parse_time)
                {
                    if clock.now() > exp {
                        return Err(envelope::Rejection::Expired {
                            expires: base::clock::format_time(exp),
                            now: base::clock::format_time(clock.now()),
                        }
                        .into());
                    }
                }
                let m = o.manifest.clone();
                let signer = o.signer.clone();
                o.extract(None).map(|x| (m, signer, x))
            });
            match result {
                Ok((m, signer, x)) => {
                    println!(
                        "valid: bundle {} signed by {} ({}), for {:?}, sequence {}, {} file(s), {} bytes verified",
                        m.id, signer.id, signer.name, m.recipient, m.sequence, x.members, x.bytes
                    );
                    exit::OK
                }
                Err(VerifyError::Rejected(r)) => fail(
                    exit::DATAERR,
                    format!("{}: INVALID ({}): {r}", file.display(), r.code()),
                ),
                Err(VerifyError::Local(e)) => fail(exit::NOINPUT, e),
            }
        }
    }
}

/// `bundle build`'s report: each backup split by content, a warning for a command type this
/// build does not know, and the bundle written.
fn render_built(out: &Path, b: &::shore::build::Built) -> i32 {
    for n in &b.splits {
        println!(
            "{}: {} bytes whole; by content: {} content file(s), {} carried ({} bytes), {} held by the recipients",
            n.member,
            n.whole_bytes,
            n.content,
            n.carried,
            n.carried_bytes,
            n.content - n.carried
        );
    }
    let m = &b.manifest;
    for c in &m.commands {
        if vessel::commands::find(&c.kind).is_none() {
            eprintln!(
                "vessel-sync: warning: command type {:?} is unknown to this build ({}); agents of the same version will fail that command",
                c.kind,
                vessel::commands::known_kinds().join(", ")
            );
        }
    }
    println!(
        "wrote {} ({} bytes): bundle {} for {:?}, sequence {}, {} command(s), {} file(s), signed by {}",
        out.display(),
        b.bytes,
        m.id,
        m.recipient,
        m.sequence,
        m.commands.len(),
        m.files.len(),
        m.issuer
    );
    exit::OK
}

/// Takes the journal's work lock for an operator's command while the agent may be running:
/// waits for the agent's current step (a command, a capture, a sync), and says so.
pub(crate) fn work_lock(cfg: &Config) -> Result<vessel::agent::WorkLock, i32> {
    std::fs::create_dir_all(&cfg.paths.state_dir).map_err(|e| {
        fail(
            exit::IOERR,
            format!("{}: {e}", cfg.paths.state_dir.display()),
        )
    })?;
    vessel::agent::check_owner(&cfg.paths.state_dir).map_err(|e| fail(exit::NOPERM, e))?;
    vessel::agent::WorkLock::acquire(&cfg.paths.state_dir, || {
        eprintln!(
            "vessel-sync: the agent is working on the journal (a command, a capture or a sync); waiting for it to finish that step..."
        );
    })
    .map_err(|e| fail(exit::IOERR, e))
}

fn check_config(path: &Path) -> i32 {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut problems = cfg.check_directories();
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
        key_names(&cfg.keyring),
        cfg.roots.len(),
        key_names(&cfg.roots),
        cfg.paths.inbox.display()
    );
    exit::OK
}

fn agent(path: &Path, once: bool, clock: Arc<dyn Clock>) -> i32 {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    base::service::init_logging(&cfg.log_level);
    let mut agent = match Agent::start(cfg, clock) {
        Ok(a) => a,
        Err(e) => return agent_error(&e),
    };
    if once {
        return match agent.run_once() {
            Ok(report) => {
                crate::cli::report::print_pass(&report);
                exit::OK
            }
            Err(e) => agent_error(&e),
        };
    }
    let inbox = agent.config().paths.inbox.clone();
    let (wake, _watcher) = match vessel::agent::wake_sources(&inbox, agent.stop_flag()) {
        Ok(w) => w,
        Err(e) => return agent_error(&e),
    };
    match agent.run(&wake) {
        Ok(()) => exit::OK,
        Err(e) => agent_error(&e),
    }
}

fn agent_error(e: &AgentError) -> i32 {
    tracing::error!(error = %e, "agent stopped on an error");
    let code = match e {
        AgentError::Locked(_) => exit::TEMPFAIL,
        AgentError::Setup(_) => exit::CONFIG,
        AgentError::WrongUser(..) => exit::NOPERM,
        AgentError::Store(vessel::store::StoreError::WrongVessel { .. }) => exit::CONFIG,
        _ => exit::IOERR,
    };
    fail(code, e)
}

fn capture(path: &Path, json: bool, clock: Arc<dyn Clock>) -> i32 {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    base::service::init_logging(&cfg.log_level);
    let Some(settings) = cfg.moodle_db.clone() else {
        return fail(
            exit::CONFIG,
            format!(
                "{}: no [moodle] database configured (db_type, db_host, db_name, db_user...)",
                path.display()
            ),
        );
    };
    let _work = match work_lock(&cfg) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let run = || -> Result<vessel::capture::CaptureReport, String> {
        std::fs::create_dir_all(&cfg.paths.state_dir)
            .map_err(|e| format!("{}: {e}", cfg.paths.state_dir.display()))?;
        let mut store = vessel::store::Store::open(&cfg.paths.database(), &cfg.vessel_id)
            .map_err(|e| e.to_string())?;
        let mut db = moodle::db::Database::connect(&settings).map_err(|e| e.to_string())?;
        let t = std::time::Instant::now();
        let snap = moodle::db::Source::snapshot(&mut db).map_err(|e| e.to_string())?;
        let read_ms = t.elapsed().as_millis();
        let r = vessel::capture::apply_snapshot(
            &mut store,
            &snap,
            &cfg.vessel_id,
            cfg.capture.require,
            clock.now(),
        )
        .map_err(|e| e.to_string())?;
        tracing::debug!(read_ms, "snapshot read");
        Ok(r)
    };
    match run() {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                println!(
                    "captured {} progress rows: {} changed, {} queued for shore, {} recognised as imported from shore, {} quarantined, {} released from quarantine, {} removed",
                    r.rows, r.changes, r.queued, r.echoes, r.quarantined, r.released, r.removed
                );
            }
            exit::OK
        }
        Err(e) => fail(exit::TEMPFAIL, e),
    }
}

fn sync(path: &Path, json: bool, clock: Arc<dyn Clock>) -> i32 {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    base::service::init_logging(&cfg.log_level);
    let _work = match work_lock(&cfg) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let run = || -> Result<vessel::uplink::CycleReport, String> {
        let mut uplink = vessel::uplink::Uplink::new(&cfg)
            .map_err(|e| e.to_string())?
            .ok_or("uplink.mode is \"off\": set [uplink] mode = \"https\" or \"files\"")?;
        std::fs::create_dir_all(&cfg.paths.state_dir)
            .map_err(|e| format!("{}: {e}", cfg.paths.state_dir.display()))?;
        let mut store = vessel::store::Store::open(&cfg.paths.database(), &cfg.vessel_id)
            .map_err(|e| e.to_string())?;
        uplink
            .cycle(&mut store, clock.now())
            .map_err(|e| e.to_string())
    };
    match run() {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                println!(
                    "sync: {} batch(es) built, {} exchange(s), acknowledged up to batch {}, {} bundle(s) downloaded",
                    r.built, r.exchanges, r.acked_seq, r.downloaded
                );
                if let Some(h) = &r.held {
                    println!("held: {h}");
                }
                println!("next attempt: {}", base::clock::format_time(r.next_attempt));
            }
            if r.held.is_some() {
                exit::TEMPFAIL
            } else {
                exit::OK
            }
        }
        Err(e) => fail(exit::CONFIG, e),
    }
}
