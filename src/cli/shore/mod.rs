//! The shore's command line (`vessel-sync shore ...`): argument definitions, dispatch to
//! [`shore`], and the exit code of each error kind; `render` prints the reports. Split from
//! [`crate::cli`], which keeps the vessel and operator commands.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};

pub(crate) mod render;

use super::fail;
use base::clock::Clock;
use base::exit;

/// The --config option of the shore commands.
#[derive(Debug, Args)]
pub struct ShoreConfigArg {
    /// The shore's config file.
    #[arg(
        long,
        short = 'c',
        env = "VESSEL_SYNC_SHORE_CONFIG",
        default_value = "/etc/vessel-sync/shore.toml",
        value_name = "FILE"
    )]
    pub config: PathBuf,
}

/// `shore crew` subcommands.
#[derive(Debug, Subcommand)]
pub enum CrewCmd {
    /// Queue for VESSEL an import_progress bundle with USER's activity completions from the
    /// cloud Moodle, in the courses that vessel has (those it sent progress of, and --course),
    /// leaving out what the vessel itself sent. Signed with [shore] signing_key.
    Move {
        /// The config file option.
        #[command(flatten)]
        config: ShoreConfigArg,
        /// The seafarer's idnumber (or username), as in the cloud Moodle.
        user: String,
        /// The vessel they join.
        #[arg(long = "to", value_name = "VESSEL")]
        to: String,
        /// A course the vessel has although it sent no progress of it yet.
        #[arg(long = "course", value_name = "COURSE")]
        courses: Vec<String>,
    },
}

/// `shore course` subcommands.
#[derive(Debug, Subcommand)]
pub enum CourseCmd {
    /// Hide COURSE in the cloud Moodle (kept for reporting) and queue a guarded delete_course,
    /// signed with [shore] signing_key, for every vessel that sent progress of it: each deletes
    /// it (after a final backup) only once shore has acknowledged all progress captured for it.
    /// Running it again queues only for vessels not yet asked.
    Retire {
        /// The config file option.
        #[command(flatten)]
        config: ShoreConfigArg,
        /// The course's idnumber (or shortname).
        course: String,
        /// Also ask this vessel (it may have the course without having sent progress of it).
        #[arg(long = "vessel", value_name = "ID")]
        vessels: Vec<String>,
    },
    /// Per vessel asked to delete COURSE: when and by whom, whether it fetched the bundle, and
    /// where it stands by its own last report: waiting for shore's acknowledgement (with the
    /// learners whose records are still unacknowledged), backed up, deleted, or never had the
    /// course; then what shore received of the course from it.
    Status {
        /// The config file option.
        #[command(flatten)]
        config: ShoreConfigArg,
        /// The course's idnumber (or shortname).
        course: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `shore forward` subcommands.
#[derive(Debug, Subcommand)]
pub enum ForwardCmd {
    /// Say that a ship's key for a learner, course or activity is another key in the cloud
    /// Moodle (records held for want of it are retried at the next pass).
    Map {
        /// What the key names.
        #[arg(value_parser = ["user", "course", "activity"])]
        what: String,
        /// The key as ships send it.
        from: String,
        /// The key in the cloud Moodle (idnumber or username / shortname / activity key).
        #[arg(long = "to")]
        to: String,
    },
}

/// Shore subcommands.
#[derive(Debug, Subcommand)]
pub enum ShoreCmd {
    /// Run the HTTPS receiver (normally started by systemd as vessel-sync-shore.service).
    Serve {
        /// The config file option.
        #[command(flatten)]
        config: ShoreConfigArg,
    },
    /// Register, list and revoke vessels.
    #[command(subcommand)]
    Vessel(VesselCmd),
    /// Queue a signed command bundle for its recipient vessel (or every vessel for `*`); it is
    /// offered in the reply to the vessel's next sync and served with Range support.
    Push {
        /// The config file option.
        #[command(flatten)]
        config: ShoreConfigArg,
        /// The bundle (from `vessel-sync bundle build`).
        bundle: PathBuf,
    },
    /// File mode: take the batch files a carrier delivered into DIR, store them, and write a
    /// signed `ack` bundle per vessel into --out for the carrier to take back. Processed files
    /// move to DIR/done, refused ones to DIR/refused with a .reason.txt.
    Ingest {
        /// The config file option.
        #[command(flatten)]
        config: ShoreConfigArg,
        /// Where the carrier delivers vessel batches.
        dir: PathBuf,
        /// Where to write the ack bundles (default: DIR/acks).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Export records as CSV for the legacy training-records system: those no earlier export
    /// wrote (each record once across runs), or with --since every record received since a
    /// time, again. Cells a spreadsheet would run as formulas are made safe.
    Export {
        /// The config file option.
        #[command(flatten)]
        config: ShoreConfigArg,
        /// RFC 3339 time (2026-11-01T00:00:00Z) or Unix seconds: export again every record
        /// received at or after it (does not move the export cursor).
        #[arg(long)]
        since: Option<String>,
        /// The CSV file to write (atomically).
        #[arg(long, value_name = "FILE.csv")]
        out: PathBuf,
    },
    /// Forward received progress into the cloud Moodle ([cloud] in shore.toml) now: one pass
    /// over the held records and those not yet forwarded (`shore serve` runs passes by itself
    /// when [cloud] is set). Newer wins: a record older than the cloud's value is kept out and
    /// listed by --conflicts. Exit 75 if the cloud could not be reached (run again later).
    Forward {
        /// The config file option.
        #[command(flatten)]
        config: ShoreConfigArg,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Do not forward: list the records the cloud kept a newer or equally new value for,
        /// as CSV.
        #[arg(long)]
        conflicts: bool,
        #[command(subcommand)]
        /// `map`: a key mapping instead of a pass.
        map: Option<ForwardCmd>,
    },
    /// Crew change: send a seafarer's progress from the cloud Moodle to the vessel they join.
    #[command(subcommand)]
    Crew(CrewCmd),
    /// Retire a course fleet-wide, and follow it.
    #[command(subcommand)]
    Course(CourseCmd),
    /// Move this shore from its SQLite file to the PostgreSQL database [store] names (set
    /// backend = "postgres", url and password_file first). Copies every row in one
    /// transaction into an empty database, counts each table on both sides, and leaves the
    /// SQLite file as it was. Stop `shore serve` first; start it again after.
    Migrate {
        /// The config file option.
        #[command(flatten)]
        config: ShoreConfigArg,
        /// Where the shore's records are now: `sqlite`.
        #[arg(long, value_parser = ["sqlite"])]
        from: String,
        /// The SQLite file (default STATE_DIR/shore.db).
        #[arg(long, value_name = "FILE")]
        path: Option<PathBuf>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every vessel, worst first: last contact, acknowledged batch, records received, oldest
    /// unsent record and backlog as last reported, time to drain it at the vessel's observed
    /// link rate, whether it is behind, course deletions it holds; then the cloud forwarding
    /// summary (with held records and why) and recent refusals. --json prints what the fleet
    /// dashboard serves.
    Status {
        /// The config file option.
        #[command(flatten)]
        config: ShoreConfigArg,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make a private CA and a TLS certificate for the receiver (for fleets without a PKI):
    /// PREFIX-ca.pem (give to vessels as [uplink] ca_file), PREFIX-cert.pem, PREFIX-key.pem.
    /// Prints the certificate's SHA-256 for [uplink] pin_sha256.
    GenCert {
        /// Path prefix of the three files.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// Host names or IP addresses the certificate is valid for; repeat for several.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
}

/// Vessel registry subcommands.
#[derive(Debug, Subcommand)]
pub enum VesselCmd {
    /// Register a vessel with its public key (its `[uplink] signing_key`'s .pub) and write a new
    /// random token for it (mode 0600, never overwritten). Running it again replaces the key
    /// and token and lifts a revocation.
    Add {
        /// The config file option.
        #[command(flatten)]
        config: ShoreConfigArg,
        /// Vessel id (as in the vessel's [vessel] id).
        id: String,
        /// The vessel's public key file.
        #[arg(long, value_name = "FILE.pub")]
        pubkey: PathBuf,
        /// Where to write the vessel's token.
        #[arg(long, value_name = "FILE")]
        token_out: PathBuf,
    },
    /// List vessels (the same table as `shore status`).
    List {
        /// The config file option.
        #[command(flatten)]
        config: ShoreConfigArg,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Force a vessel's signing key: from now on only this key is accepted from the vessel,
    /// whatever sequence its batches carry (a vessel reinstalled, or its key lost). A vessel
    /// that only wants a fresh key runs `vessel-sync rotate-key` on board instead: shore learns
    /// that key from its next batch and nothing needs doing ashore.
    Rekey {
        /// The config file option.
        #[command(flatten)]
        config: ShoreConfigArg,
        /// Vessel id.
        id: String,
        /// The vessel's new public key file.
        #[arg(long, value_name = "FILE.pub")]
        pubkey: PathBuf,
    },
    /// Revoke a vessel: its token and key are refused from now on.
    Revoke {
        /// The config file option.
        #[command(flatten)]
        config: ShoreConfigArg,
        /// Vessel id.
        id: String,
    },
}

fn load_shore(path: &Path) -> Result<shore::ShoreConfig, i32> {
    shore::ShoreConfig::load(path).map_err(|e| fail(exit::CONFIG, e))
}

/// Runs a shore subcommand; returns the exit code.
pub fn run(cmd: ShoreCmd, clock: Arc<dyn Clock>) -> i32 {
    let now = clock.now();
    let with = |config: &ShoreConfigArg, f: &dyn Fn(&shore::ShoreConfig) -> i32| match load_shore(
        &config.config,
    ) {
        Ok(cfg) => f(&cfg),
        Err(code) => code,
    };
    match cmd {
        ShoreCmd::Serve { config } => with(&config, &|cfg| {
            base::service::init_logging("info");
            match shore::serve::run(cfg.clone(), clock.clone(), |addr| {
                println!("listening on {addr}")
            }) {
                Ok(()) => exit::OK,
                Err(e) => fail(exit::CONFIG, e),
            }
        }),
        ShoreCmd::Vessel(VesselCmd::Add {
            config,
            id,
            pubkey,
            token_out,
        }) => with(&config, &|cfg| {
            done(
                shore::vessel_add(cfg, &id, &pubkey, &token_out, now),
                |key| render::vessel_added(&id, key, &token_out),
            )
        }),
        ShoreCmd::Vessel(VesselCmd::List { config, json }) | ShoreCmd::Status { config, json } => {
            with(&config, &|cfg| {
                exit::quiet_on_closed_pipe();
                done(shore::status(cfg, now), |(fleet, doc)| {
                    if json {
                        render::json(doc)
                    } else {
                        render::fleet(fleet)
                    }
                })
            })
        }
        ShoreCmd::Vessel(VesselCmd::Rekey { config, id, pubkey }) => with(&config, &|cfg| {
            done(shore::vessel_rekey(cfg, &id, &pubkey, now), |r| {
                println!(
                    "vessel {id}: key {} is now its only key; batches signed by {} or any earlier key are refused from now on",
                    r.new_key, r.old_key
                );
                exit::OK
            })
        }),
        ShoreCmd::Vessel(VesselCmd::Revoke { config, id }) => with(&config, &|cfg| {
            done(shore::vessel_revoke(cfg, &id, now), |()| {
                println!("vessel {id} revoked: its token and key are refused from now on");
                exit::OK
            })
        }),
        ShoreCmd::Push { config, bundle } => with(&config, &|cfg| {
            done(shore::push::push(cfg, &bundle, now), render::pushed)
        }),
        ShoreCmd::Ingest { config, dir, out } => with(&config, &|cfg| {
            let out = out.clone().unwrap_or_else(|| dir.join("acks"));
            done(
                shore::ingest::ingest(cfg, &dir, &out, clock.as_ref()),
                render::ingested,
            )
        }),
        ShoreCmd::Export { config, since, out } => with(&config, &|cfg| {
            done(
                shore::export::export(cfg, since.as_deref(), &out, now),
                |n| {
                    println!("{n} records written to {}", out.display());
                    exit::OK
                },
            )
        }),
        ShoreCmd::Forward {
            config,
            json,
            conflicts,
            map,
        } => with(&config, &|cfg| match &map {
            Some(ForwardCmd::Map { what, from, to }) => {
                done(shore::forward::map(cfg, what, from, to, now), |()| {
                    println!(
                        "{what} {from} is {to} in the cloud Moodle; held records are retried at the next pass"
                    );
                    exit::OK
                })
            }
            None if conflicts => done(shore::forward::conflicts(cfg), render::conflicts),
            None => done(shore::forward::run_once(cfg, clock.as_ref()), |r| {
                render::forwarded(r, json)
            }),
        }),
        ShoreCmd::Migrate {
            config,
            from: _,
            path,
            json,
        } => with(&config, &|cfg| {
            done(
                shore::migrate::from_sqlite(cfg, path.as_deref(), now),
                |m| render::migrated(m, json),
            )
        }),
        ShoreCmd::Crew(CrewCmd::Move {
            config,
            user,
            to,
            courses,
        }) => with(&config, &|cfg| {
            done(shore::crew::move_to(cfg, &user, &to, &courses, now), |m| {
                println!("{}", m.summary);
                exit::OK
            })
        }),
        ShoreCmd::Course(CourseCmd::Retire {
            config,
            course,
            vessels,
        }) => with(&config, &|cfg| {
            done(shore::course::retire(cfg, &course, &vessels, now), |r| {
                render::retired(&course, r)
            })
        }),
        ShoreCmd::Course(CourseCmd::Status {
            config,
            course,
            json,
        }) => with(&config, &|cfg| {
            exit::quiet_on_closed_pipe();
            done(shore::course::retirement(cfg, &course), |rows| {
                render::retirement(&course, rows, json)
            })
        }),
        ShoreCmd::GenCert { out, names } => gen_cert(&out, &names, now),
    }
}

/// Renders a command's report, or prints its error and picks the exit code from its kind.
fn done<T>(r: Result<T, shore::Error>, render: impl FnOnce(T) -> i32) -> i32 {
    match r {
        Ok(t) => render(t),
        Err(e) => {
            eprintln!("error: {e}");
            exit_code(&e)
        }
    }
}

/// The exit code of a shore error (sysexits.h, as `base::exit` names them).
pub fn exit_code(e: &shore::Error) -> i32 {
    use base::retry::Retriable as _;
    use shore::Error as E;
    match e {
        E::Config(_) => exit::CONFIG,
        E::Usage(_) => exit::USAGE,
        E::NotFound(_) | E::Refused(_) | E::Bundle(_) => exit::DATAERR,
        e if e.is_retriable() => exit::TEMPFAIL,
        E::Cloud(_) => exit::UNAVAILABLE,
        E::Store(_) | E::Io { .. } => exit::IOERR,
        E::Failed(_) => exit::FAILURE,
    }
}

fn gen_cert(prefix: &Path, names: &[String], now: i64) -> i32 {
    let (ca, chain, key) = match wire::net::generate_server_cert(names, now) {
        Ok(x) => x,
        Err(e) => return fail(exit::SOFTWARE, e),
    };
    let with = |suffix: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    let files = [
        (with("-ca.pem"), ca, 0o644),
        (with("-cert.pem"), chain.clone(), 0o644),
        (with("-key.pem"), key, 0o600),
    ];
    for (p, _, _) in &files {
        if p.exists() {
            return fail(
                exit::USAGE,
                format!("{} exists; it is never overwritten", p.display()),
            );
        }
    }
    for (p, text, mode) in &files {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let r = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(*mode)
            .open(p)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = r {
            return fail(exit::IOERR, format!("{}: {e}", p.display()));
        }
    }
    let pin = wire::net::load_certs(&with("-cert.pem"))
        .ok()
        .and_then(|c| c.first().map(|c| wire::net::cert_pin(c)))
        .unwrap_or_default();
    println!(
        "CA certificate:     {} (vessels: [uplink] ca_file)",
        with("-ca.pem").display()
    );
    println!(
        "server certificate: {} ([shore] tls_cert)",
        with("-cert.pem").display()
    );
    println!(
        "server key:         {} (mode 0600; [shore] tls_key)",
        with("-key.pem").display()
    );
    println!("pin_sha256:         {pin}");
    exit::OK
}
