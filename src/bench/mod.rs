//! Benchmarks an IT officer can run on the ship's own hardware: `vessel-sync bench NAME [--json]`.
//!
//! `link` ([`link`]): what the uplink costs with this agent's settings, against a shore of this
//! binary on loopback. `bundle`: builds a bundle with one generated file of `--size-mb` MB (partly
//! compressible data, like a course backup), then measures verify-and-extract throughput and the process's
//! peak resident memory while doing it; the same is measured for a bundle a tenth of the size, to
//! show that memory does not grow with the bundle.
//!
//! With the `lab` feature (a build from a checkout, not the Debian package, which carries no
//! stand-in): `users` ([`users`]), `wire`, `outbox` and `dictionary` ([`progress`]), which need
//! the test kit's stand-in Moodle, fault proxy or throwaway PostgreSQL, and `delta`
//! ([`delta`]: course updates by content, with the test kit's generated course), and `forward`
//! ([`forward`]: shore's forwarding into the test kit's real Moodle).

#[cfg(feature = "lab")]
pub mod delta;
#[cfg(feature = "lab")]
pub mod forward;
pub mod hostile;
pub mod link;
#[cfg(feature = "lab")]
pub mod progress;
pub mod rss;
pub mod shore;
#[cfg(feature = "lab")]
pub mod users;
pub mod users_real;

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use base::exit;
use wire::envelope::{self, Draft, Keyring, Kind, Limits, SecretKey, Source};

use rss::{peak_rss_mb, reset_peak_rss};

#[derive(Debug, Serialize)]
struct BundleFigures {
    benchmark: &'static str,
    bundle_mb: u64,
    compressed_mb: f64,
    verify_extract_mb_per_s: f64,
    verify_only_mb_per_s: f64,
    peak_rss_mb: f64,
    small_bundle_mb: u64,
    small_peak_rss_mb: f64,
}

/// What the packaged binary says for a benchmark that needs the test kit.
#[cfg(not(feature = "lab"))]
pub const LAB_ONLY: &str = "vessel-sync: bench NAME needs a stand-in Moodle, a fault proxy or a \
throwaway database, which this packaged build does not carry (it has 'bench bundle', \
'bench shore' and 'bench users --config FILE'). Run it from a checkout with \
'cargo run --release -- bench NAME', or build the lab binary for this ship with \
'packaging/cross-build.sh lab' and copy it on board (README: Benchmarks).";

/// `vessel-sync bench NAME`'s arguments.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which benchmark: `bundle` (verify-and-extract throughput, peak memory), `shore` (N
    /// vessels sending a 1,000-record batch at once to shore serve, one receiver on SQLite and
    /// on PostgreSQL, and two on PostgreSQL: batches/s, records/s, p50/p99, receiver memory,
    /// every record stored once), `link` (what the uplink costs with this agent's settings, or
    /// the defaults: bytes and round trips of an empty poll, first and resumed, of 1 and 300
    /// records, and of an idle day on the agent's schedule, priced with `[uplink]
    /// price_per_mb`; `--config` takes an agent config), `wire` (bytes per record on the link,
    /// round trips), `outbox`
    /// (capture and enqueue rate), `users` (an 80,000-row CSV validated, the importer's time per
    /// chunk; with --config: --rows new users into that real Moodle against its upload CLI),
    /// `delta` (a course update by content), `forward` (shore forwarding --rows records into a
    /// real Moodle it brings up).
    pub name: String,
    /// Print one JSON object of figures on stdout.
    #[arg(long)]
    pub json: bool,
    /// Size of the generated bundle in MB.
    #[arg(long, default_value_t = 200)]
    pub size_mb: u64,
    /// `bench users` against the real Moodle of this agent config (its [moodle] url,
    /// token_file and moodle_dir). Creates 3 x --rows accounts named vsbench... and deletes
    /// them afterwards: run it on a site where that is acceptable. `bench link`: the
    /// [uplink] settings of this agent config (interval, idle_interval, batch_records,
    /// price_per_mb, currency); nothing of it is contacted.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// `bench users --config`: new users per import; `bench forward`: records forwarded.
    #[arg(long, default_value_t = 2000)]
    pub rows: u64,
    /// `bench users --config`: leave the benchmark's accounts in Moodle.
    #[arg(long)]
    pub keep: bool,
    /// `bench forward`: the database of the real Moodle it brings up, mariadb or postgres.
    #[arg(long = "db", value_name = "DB", default_value = "mariadb")]
    pub moodle_db: String,
    /// `bench forward`: the Moodle it brings up, 5.0 or 4.5.
    #[arg(long = "moodle", value_name = "VERSION", default_value = "5.0")]
    pub moodle_version: String,
    /// `bench shore`: vessels syncing at once (default: runs of 10, 100 and 1,000).
    #[arg(long, value_name = "N")]
    pub vessels: Option<usize>,
    /// `bench shore`: only this store, `sqlite` or `postgres` (default: both).
    #[arg(long, value_name = "STORE")]
    pub store: Option<String>,
    /// `bench shore`: receivers sharing the store, 1 or 2 (default: 1, and 2 on PostgreSQL).
    #[arg(long, value_name = "N")]
    pub receivers: Option<usize>,
    /// `bench shore`: the PostgreSQL server to use (`postgres://USER@HOST/DB`, password in
    /// $PGPASSWORD); each run works in a schema of its own, dropped afterwards. Without it a
    /// lab build starts a throwaway server, and the packaged build runs SQLite only.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// `bench shore --hostile`: the same fleet (default 1,000 vessels) on SQLite while 1,000
    /// slow connections are held open and one vessel sends decoder bombs and oversized bodies;
    /// fails unless every vessel is acknowledged within 60 s with the receiver under 256 MB.
    #[arg(long)]
    pub hostile: bool,
}

/// Runs `vessel-sync bench`.
pub fn run_args(a: BenchArgs) -> i32 {
    run(
        &a.name,
        a.json,
        a.size_mb,
        &Against {
            config: a.config,
            rows: a.rows,
            keep: a.keep,
            moodle_db: a.moodle_db,
            moodle_version: a.moodle_version,
            vessels: a.vessels,
            store: a.store,
            receivers: a.receivers,
            postgres: a.postgres,
            hostile: a.hostile,
        },
    )
}

/// What `bench users` is pointed at.
#[derive(Debug, Clone, Default)]
pub struct Against {
    /// An agent config whose `[moodle]` is a real Moodle (`bench users --config`).
    pub config: Option<std::path::PathBuf>,
    /// New users per import.
    pub rows: u64,
    /// Leave the benchmark's accounts in Moodle.
    pub keep: bool,
    /// `bench forward`: the real Moodle's database, `mariadb` or `postgres`.
    pub moodle_db: String,
    /// `bench forward`: the real Moodle's version, `5.0` or `4.5`.
    pub moodle_version: String,
    /// `bench shore`: vessels syncing at once (none: 10, 100 and 1,000).
    pub vessels: Option<usize>,
    /// `bench shore`: only this store.
    pub store: Option<String>,
    /// `bench shore`: receivers.
    pub receivers: Option<usize>,
    /// `bench shore`: a PostgreSQL server's URL.
    pub postgres: Option<String>,
    /// `bench shore --hostile`.
    pub hostile: bool,
}

/// Runs benchmark `name`.
pub fn run(name: &str, json: bool, size_mb: u64, against: &Against) -> i32 {
    if let ("users", Some(config)) = (name, against.config.as_ref()) {
        return report_json(
            json,
            users_real::run(config, against.rows.max(1), against.keep),
        );
    }
    match name {
        "bundle" => match bench_bundle(size_mb.max(1)) {
            Ok(f) => {
                if json {
                    match serde_json::to_string(&f) {
                        Ok(s) => println!("{s}"),
                        Err(e) => eprintln!("vessel-sync: {e}"),
                    }
                } else {
                    println!(
                        "bench bundle: {} MB bundle ({:.1} MB compressed)",
                        f.bundle_mb, f.compressed_mb
                    );
                    println!(
                        "  verify + extract  {:>8.1} MB/s",
                        f.verify_extract_mb_per_s
                    );
                    println!("  verify only       {:>8.1} MB/s", f.verify_only_mb_per_s);
                    println!(
                        "  peak RSS          {:>8.1} MB   (for a {} MB bundle: {:.1} MB)",
                        f.peak_rss_mb, f.small_bundle_mb, f.small_peak_rss_mb
                    );
                }
                exit::OK
            }
            Err(e) => {
                eprintln!("vessel-sync: bench bundle: {e}");
                exit::IOERR
            }
        },
        #[cfg(feature = "lab")]
        "wire" => report_json(json, progress::wire()),
        #[cfg(feature = "lab")]
        "delta" => report_json(json, delta::run(size_mb)),
        #[cfg(feature = "lab")]
        "dictionary" => match progress::train_dictionary() {
            Ok(d) => {
                use std::io::Write as _;
                let _ = std::io::stdout().write_all(&d);
                exit::OK
            }
            Err(e) => {
                eprintln!("vessel-sync: bench dictionary: {e}");
                exit::IOERR
            }
        },
        "shore" if against.hostile => match hostile::run(against) {
            // Figures are printed either way; a missed target is exit status 1.
            Ok((v, text, met)) => {
                let code = report_json(json, Ok((v, text)));
                if met { code } else { exit::FAILURE }
            }
            Err(e) => report_json(json, Err(e)),
        },
        "shore" => report_json(json, shore::run(against)),
        "link" => report_json(
            json,
            link::run(
                against.config.as_deref(),
                base::clock::Clock::now(&base::clock::SystemClock),
            ),
        ),
        #[cfg(feature = "lab")]
        "outbox" => report_json(json, progress::outbox()),
        #[cfg(feature = "lab")]
        "users" => report_json(json, users::run()),
        #[cfg(feature = "lab")]
        "forward" => {
            let db = match against.moodle_db.as_str() {
                "postgres" | "postgresql" | "pg" => testkit::realmoodle::Db::Postgres,
                "mariadb" | "mysql" => testkit::realmoodle::Db::MariaDb,
                other => {
                    eprintln!("vessel-sync: --db {other:?}: give mariadb or postgres");
                    return exit::USAGE;
                }
            };
            let version = match against.moodle_version.as_str() {
                "5.0" | "5" | "50" => testkit::realmoodle::Version::V50,
                "4.5" | "45" => testkit::realmoodle::Version::V45,
                other => {
                    eprintln!("vessel-sync: --moodle {other:?}: give 5.0 or 4.5");
                    return exit::USAGE;
                }
            };
            report_json(json, forward::run(against.rows, db, version))
        }
        #[cfg(not(feature = "lab"))]
        "wire" | "dictionary" | "outbox" | "users" | "delta" | "forward" => {
            eprintln!("{}", LAB_ONLY.replace("NAME", name));
            exit::UNAVAILABLE
        }
        other => {
            eprintln!(
                "vessel-sync: unknown benchmark {other:?}; available: bundle, shore, link, wire, outbox, users, delta, forward"
            );
            exit::USAGE
        }
    }
}

fn report_json(json: bool, r: Result<(serde_json::Value, String), String>) -> i32 {
    match r {
        Ok((v, text)) => {
            if json {
                println!("{v}");
            } else {
                print!("{text}");
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("vessel-sync: bench: {e}");
            exit::IOERR
        }
    }
}

fn generate(path: &Path, bytes: u64) -> std::io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Half the bytes random, half repetitive: zstd gets it to about 70 %, like a course
            // backup full of already-compressed media.
            let v = state.to_le_bytes();
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = if i % 2 == 0 { v[i] } else { b'a' + (i as u8) };
            }
        }
        let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

fn one(
    dir: &Path,
    mb: u64,
    key: &SecretKey,
    keyring: &Keyring,
) -> Result<(f64, f64, f64, f64), String> {
    let data = dir.join(format!("payload-{mb}.bin"));
    let bundle = dir.join(format!("bench-{mb}.vsb"));
    let bytes = mb * 1_000_000;
    generate(&data, bytes).map_err(|e| e.to_string())?;
    let draft = Draft {
        kind: Kind::Commands,
        sender: "bench".into(),
        recipient: "*".into(),
        sequence: 1,
        not_before: None,
        expires: None,
        commands: Vec::new(),
        files: vec![("files/payload.bin".into(), Source::Path(data.clone()))],
        id: None,
    };
    envelope::write_envelope(&draft, key, 0, &bundle).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&data);
    let compressed = std::fs::metadata(&bundle).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let limits = Limits::default();

    reset_peak_rss();
    let out = dir.join(format!("extract-{mb}"));
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let t = Instant::now();
    envelope::open(&bundle, keyring, &limits)
        .and_then(|o| o.extract(Some(&out)))
        .map_err(|e| e.to_string())?;
    let extract_secs = t.elapsed().as_secs_f64();
    let peak = peak_rss_mb().unwrap_or(0.0);
    let _ = std::fs::remove_dir_all(&out);

    let t = Instant::now();
    envelope::open(&bundle, keyring, &limits)
        .and_then(|o| o.extract(None))
        .map_err(|e| e.to_string())?;
    let verify_secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&bundle);
    let mbf = bytes as f64 / 1e6;
    Ok((compressed, mbf / extract_secs, mbf / verify_secs, peak))
}

fn bench_bundle(size_mb: u64) -> Result<BundleFigures, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let key = SecretKey::from_seed([7u8; 32]);
    let keyring = Keyring::new([wire::envelope::PublicKey {
        key: key.key.verifying_key(),
        id: key.id.clone(),
        name: "bench".into(),
    }]);
    let small_mb = (size_mb / 10).max(1);
    let (_, _, _, small_peak) = one(dir.path(), small_mb, &key, &keyring)?;
    let (compressed, extract, verify, peak) = one(dir.path(), size_mb, &key, &keyring)?;
    Ok(BundleFigures {
        benchmark: "bundle",
        bundle_mb: size_mb,
        compressed_mb: (compressed * 10.0).round() / 10.0,
        verify_extract_mb_per_s: (extract * 10.0).round() / 10.0,
        verify_only_mb_per_s: (verify * 10.0).round() / 10.0,
        peak_rss_mb: (peak * 10.0).round() / 10.0,
        small_bundle_mb: small_mb,
        small_peak_rss_mb: (small_peak * 10.0).round() / 10.0,
    })
}
