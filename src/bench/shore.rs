//! `vessel-sync bench shore [--vessels N] [--json]`: N vessels syncing at once against one
//! `shore serve` (a child process of this binary, SQLite store, TLS on loopback), each sending
//! one real signed batch of 1,000 records over its own HTTPS connection. Reports batches/s,
//! records/s, the p50/p99 exchange time, the receiver's peak memory, and checks that every
//! record was stored exactly once and every batch acknowledged. Without `--vessels`: N = 10,
//! 100 and 1,000.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base::clock::{Clock, SystemClock};
use wire::envelope::{Draft, Extra, Kind, SecretKey, Source, write_envelope_with};
use wire::progress::{Record, RecordKind, codec};
use wire::{RECORDS_MEMBER, SHORE};

/// Records in each vessel's batch.
pub(super) const RECORDS: usize = 1_000;
/// Client threads: each syncs one vessel after another, a new TLS connection per vessel.
const CLIENTS: usize = 64;

/// One run's figures.
#[derive(Debug, serde::Serialize)]
struct Run {
    store: &'static str,
    receivers: usize,
    vessels: usize,
    records_per_batch: usize,
    client_threads: usize,
    seconds: f64,
    batches_per_s: f64,
    records_per_s: f64,
    exchange_p50_ms: f64,
    exchange_p99_ms: f64,
    receiver_peak_rss_mb: Option<f64>,
    stored_records: u64,
    acknowledged: usize,
    refused: usize,
}

pub(super) fn io(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A shore serve child; killed on drop if still running.
pub(super) struct Receiver(pub Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private CA and the receiver's certificate and key in `d` (`ca.pem`, `cert.pem`,
/// `key.pem`).
pub(super) fn write_tls(d: &Path) -> Result<(), String> {
    let (ca, chain, tls_key) = wire::net::generate_server_cert(
        &["127.0.0.1".into()],
        base::clock::Clock::now(&base::clock::SystemClock),
    )
    .map_err(io)?;
    for (name, body) in [("ca.pem", &ca), ("cert.pem", &chain), ("key.pem", &tls_key)] {
        base::fsutil::write_private(&d.join(name), body.as_bytes()).map_err(io)?;
    }
    Ok(())
}

/// Registers vessel `id` with a new key (kept in `d/kN.*`) and token: (token, key).
pub(super) fn register(
    db: &shore::store::ShoreStore,
    d: &Path,
    id: &str,
    n: usize,
    now: i64,
) -> Result<(String, SecretKey), String> {
    let key = SecretKey::generate().map_err(io)?;
    let (_, public) = key
        .write_pair(&d.join(format!("k{n}")), "bench")
        .map_err(io)?;
    let pub_text = std::fs::read_to_string(&public).map_err(io)?;
    let token = shore::new_token().map_err(|e| e.to_string())?;
    db.add_vessel(
        id,
        &shore::token_hash(&token),
        pub_text.trim(),
        &key.id,
        now,
    )
    .map_err(io)?;
    Ok((token, key))
}

/// `shore serve --config PATH` as a child of this binary; its stderr goes to `PATH.log`.
pub(super) fn start_receiver(config: &Path) -> Result<Receiver, String> {
    let exe = std::env::current_exe().map_err(io)?;
    let log = std::fs::File::create(config.with_extension("log")).map_err(io)?;
    Command::new(&exe)
        .args(["shore", "serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Receiver)
        .map_err(|e| format!("starting shore serve: {e}"))
}

/// How long receivers may take to answer `/v1/health`: a PostgreSQL store is migrated first,
/// and a CI machine runs many tests at once.
const HEALTHY_WITHIN: Duration = Duration::from_secs(120);

/// Why receivers did not come up.
pub(super) enum NotUp {
    /// A receiver ended before it answered (most often: its port was taken between
    /// [`free_port`] and its bind); its own words.
    Exited(String),
    /// Still running but silent past [`HEALTHY_WITHIN`].
    Silent,
}

/// Waits until every receiver answers `/v1/health`, noticing one that ended instead.
pub(super) fn wait_healthy(
    receivers: &mut [(Receiver, PathBuf)],
    urls: &[String],
    trust: &wire::net::Trust,
) -> Result<Result<(), NotUp>, String> {
    let probe = wire::net::http_client(trust, Duration::from_secs(2), Duration::from_secs(5))
        .map_err(io)?;
    let up = Instant::now();
    for ((receiver, config), url) in receivers.iter_mut().zip(urls) {
        while probe
            .get(format!("{url}/v1/health"))
            .send()
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
        {
            if let Ok(Some(status)) = receiver.0.try_wait() {
                let said =
                    std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
                return Ok(Err(NotUp::Exited(format!(
                    "shore serve ({status}) ended before it answered: {}",
                    said.trim()
                ))));
            }
            if up.elapsed() > HEALTHY_WITHIN {
                return Ok(Err(NotUp::Silent));
            }
            base::retry::pause(Duration::from_millis(20));
        }
    }
    Ok(Ok(()))
}

/// Starts one receiver per config body (`{port}` stands for its port), each on a free
/// loopback port, and waits until all answer. A receiver that ends before answering is
/// started again on new ports (at most three tries): a port picked free can be taken by
/// another program before the receiver binds it.
pub(super) fn launch(
    d: &Path,
    bodies: &[String],
    trust: &wire::net::Trust,
) -> Result<(Vec<Receiver>, Vec<String>), String> {
    let mut last = String::new();
    for _try in 0..3 {
        let mut running = Vec::with_capacity(bodies.len());
        let mut urls = Vec::with_capacity(bodies.len());
        for (r, body) in bodies.iter().enumerate() {
            let port = free_port()?;
            let path = d.join(format!("shore-{r}.toml"));
            std::fs::write(&path, body.replace("{port}", &port.to_string())).map_err(io)?;
            running.push((start_receiver(&path)?, path));
            urls.push(format!("https://127.0.0.1:{port}"));
        }
        match wait_healthy(&mut running, &urls, trust)? {
            Ok(()) => return Ok((running.into_iter().map(|(r, _)| r).collect(), urls)),
            Err(NotUp::Exited(why)) => last = why,
            Err(NotUp::Silent) => {
                return Err(format!(
                    "shore serve did not answer /v1/health within {} s",
                    HEALTHY_WITHIN.as_secs()
                ));
            }
        }
    }
    Err(last)
}

pub(super) fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io)
}

/// A vessel's batch: (vessel id, token, envelope bytes).
pub(super) fn batch(dir: &Path, n: usize, key: &SecretKey, now: i64) -> Result<Vec<u8>, String> {
    let vessel = format!("bench-{n:05}");
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| Record {
            kind: RecordKind::ActivityCompletion,
            user: format!("SEAF-{n:05}-{:03}", i / 10),
            course: format!("COURSE-{:02}", i % 10),
            item: format!("COURSE-{:02}-ACT-{}", i % 10, i % 7),
            user_legacy: String::new(),
            course_legacy: String::new(),
            item_legacy: String::new(),
            value: "1".into(),
            time: now - 86_400 + i as i64,
        })
        .collect();
    let draft = Draft {
        kind: Kind::Progress,
        sender: vessel.clone(),
        recipient: SHORE.into(),
        sequence: 1,
        not_before: None,
        expires: None,
        commands: vec![],
        files: vec![(
            RECORDS_MEMBER.into(),
            Source::Bytes(codec::encode_batch(&records, 0)),
        )],
        id: None,
    };
    let path = dir.join(format!("{vessel}.vsb"));
    write_envelope_with(&draft, &Extra::default(), key, now, &path).map_err(io)?;
    let bytes = std::fs::read(&path).map_err(io)?;
    std::fs::remove_file(&path).map_err(io)?;
    Ok(bytes)
}

/// What [`sync_all`] saw.
pub(super) struct Synced {
    /// Exchange times in ms, sorted.
    pub times: Vec<f64>,
    /// Batches acknowledged.
    pub acknowledged: usize,
    /// Batches not acknowledged.
    pub refused: usize,
    /// Seconds from the first exchange to the last.
    pub seconds: f64,
}

/// Every vessel of `fleet` (id, token, batch) sends its batch, [`CLIENTS`] at a time, vessel n
/// to receiver n mod R, each over a new TLS connection.
pub(super) fn sync_all(
    fleet: Vec<(String, String, Vec<u8>)>,
    urls: &[String],
    trust: &wire::net::Trust,
) -> Synced {
    let vessels = fleet.len();
    let queue = Mutex::new(fleet.into_iter().enumerate());
    let times = Mutex::new(Vec::with_capacity(vessels));
    let outcome = Mutex::new((0usize, 0usize));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CLIENTS.min(vessels) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.next());
                    let Some((n, (id, token, body))) = next else {
                        return;
                    };
                    let url = &urls[n % urls.len()];
                    let t = Instant::now();
                    // A vessel of its own: a new client, so a new TLS handshake.
                    let acked = wire::net::http_client(
                        trust,
                        Duration::from_secs(10),
                        Duration::from_secs(120),
                    )
                    .ok()
                    .and_then(|c| {
                        c.post(format!("{url}/v1/sync"))
                            .header("authorization", format!("Bearer {token}"))
                            .header("x-vessel-id", &id)
                            .body(body)
                            .send()
                            .ok()
                    })
                    .filter(|r| r.status().is_success())
                    .and_then(|r| r.bytes().ok())
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .is_some_and(|v| v["acked_seq"] == 1);
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    if let Ok(mut v) = times.lock() {
                        v.push(ms);
                    }
                    if let Ok(mut o) = outcome.lock() {
                        if acked { o.0 += 1 } else { o.1 += 1 }
                    }
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut times = times.into_inner().unwrap_or_default();
    times.sort_by(f64::total_cmp);
    let (acknowledged, refused) = outcome.into_inner().unwrap_or_default();
    Synced {
        times,
        acknowledged,
        refused,
        seconds,
    }
}

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Where a run keeps its records.
enum Store {
    /// `STATE_DIR/shore.db`.
    Sqlite,
    /// A schema of its own on this PostgreSQL server (URL without the schema option; the
    /// password, if any, in $PGPASSWORD).
    Postgres(String),
}

/// The `[store]` section for a schema of its own on `url`, and that schema's name.
fn pg_store(d: &Path, url: &str, run: usize) -> Result<(String, String), String> {
    let schema = format!("vsbench_{}_{run}", std::process::id());
    let mut admin: postgres::Config = url.parse().map_err(io)?;
    let password = std::env::var("PGPASSWORD").ok();
    if let Some(p) = &password {
        admin.password(p);
    }
    let mut c = admin
        .connect(postgres::NoTls)
        .map_err(|e| format!("{url}: {e}"))?;
    c.batch_execute(&format!("CREATE SCHEMA {schema}"))
        .map_err(io)?;
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut section = format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{url}{sep}options=-csearch_path%3D{schema}\"\n"
    );
    if let Some(p) = password {
        base::fsutil::write_private(&d.join("pg.password"), format!("{p}\n").as_bytes())
            .map_err(io)?;
        section.push_str("password_file = \"pg.password\"\n");
    }
    Ok((section, schema))
}

fn drop_schema(url: &str, schema: &str) {
    if let Ok(mut admin) = url.parse::<postgres::Config>() {
        if let Ok(p) = std::env::var("PGPASSWORD") {
            admin.password(p);
        }
        if let Ok(mut c) = admin.connect(postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
        }
    }
}

fn one_run(vessels: usize, store: &Store, receivers: usize, run: usize) -> Result<Run, String> {
    let dir = tempfile::tempdir().map_err(io)?;
    let d = dir.path();
    write_tls(d)?;
    let (section, schema) = match store {
        Store::Sqlite => (String::new(), None),
        Store::Postgres(url) => {
            let (s, schema) = pg_store(d, url, run)?;
            (s, Some((url.clone(), schema)))
        }
    };
    // The schema goes when the run ends, however it ends.
    struct Dropped(Option<(String, String)>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            if let Some((url, schema)) = &self.0 {
                drop_schema(url, schema);
            }
        }
    }
    let _dropped = Dropped(schema);
    // Every receiver shares the state directory and the store; each listens on its own port.
    let body = format!(
        "version = 1\n{section}[shore]\nstate_dir = \"state\"\nlisten = \"127.0.0.1:{{port}}\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n"
    );
    let cfg_path = d.join("shore.toml");
    std::fs::write(&cfg_path, body.replace("{port}", "0")).map_err(io)?;
    let cfg = shore::ShoreConfig::load(&cfg_path)?;
    let now = SystemClock.now();
    // Every vessel registered, its batch built and signed before the clock starts.
    let mut fleet = Vec::with_capacity(vessels);
    {
        let db = cfg.open().map_err(|e| e.to_string())?;
        for n in 0..vessels {
            let id = format!("bench-{n:05}");
            let (token, key) = register(&db, d, &id, n, now)?;
            fleet.push((id, token, batch(d, n, &key, now)?));
        }
    }
    let trust = wire::net::Trust {
        ca_file: Some(d.join("ca.pem")),
        pins: vec![],
    };
    let (running, urls) = launch(d, &vec![body; receivers.max(1)], &trust)?;
    // Vessel n syncs with receiver n mod R.
    let synced = sync_all(fleet, &urls, &trust);
    let seconds = synced.seconds;
    let rss = running
        .iter()
        .filter_map(|r| super::rss::peak_rss_mb_of(r.0.id()))
        .reduce(f64::max);
    drop(running);
    let Synced {
        times,
        acknowledged,
        refused,
        ..
    } = synced;
    let db = cfg.open().map_err(|e| e.to_string())?;
    let mut stored = 0;
    for n in 0..vessels {
        let (all, distinct) = db.record_counts(&format!("bench-{n:05}")).map_err(io)?;
        if all != distinct {
            return Err(format!(
                "vessel {n}: {all} records stored but {distinct} distinct"
            ));
        }
        stored += all;
    }
    let total = (vessels * RECORDS) as f64;
    drop(db);
    Ok(Run {
        store: match store {
            Store::Sqlite => "sqlite",
            Store::Postgres(_) => "postgres",
        },
        receivers: urls.len(),
        vessels,
        records_per_batch: RECORDS,
        client_threads: CLIENTS.min(vessels),
        seconds,
        batches_per_s: acknowledged as f64 / seconds,
        records_per_s: total / seconds,
        exchange_p50_ms: percentile(&times, 0.50),
        exchange_p99_ms: percentile(&times, 0.99),
        receiver_peak_rss_mb: rss,
        stored_records: stored,
        acknowledged,
        refused,
    })
}

/// The PostgreSQL server for the runs: `--postgres URL`, else (lab builds) a throwaway one.
#[cfg(feature = "lab")]
fn pg_server(
    url: Option<&str>,
) -> Result<(String, Option<&'static testkit::pgtemp::TempPg>), String> {
    match url {
        Some(u) => Ok((u.to_string(), None)),
        None => {
            let pg = testkit::pgtemp::TempPg::shared()?;
            Ok((
                format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port),
                Some(pg),
            ))
        }
    }
}

#[cfg(not(feature = "lab"))]
fn pg_server(url: Option<&str>) -> Result<(String, Option<()>), String> {
    url.map(|u| (u.to_string(), None)).ok_or_else(|| {
        "bench shore --store postgres needs --postgres URL in this packaged build (a lab build starts a throwaway server)".to_string()
    })
}

/// `bench shore`.
pub fn run(a: &super::Against) -> Result<(serde_json::Value, String), String> {
    let sizes = match a.vessels {
        Some(n) => vec![n.max(1)],
        None => vec![10, 100, 1_000],
    };
    let pg_wanted = match a.store.as_deref() {
        None => a.postgres.is_some() || cfg!(feature = "lab"),
        Some("postgres") => true,
        Some("sqlite") => false,
        Some(other) => return Err(format!("--store {other}: sqlite or postgres")),
    };
    let pg = if pg_wanted {
        Some(pg_server(a.postgres.as_deref())?)
    } else {
        None
    };
    let mut setups: Vec<(Store, usize)> = Vec::new();
    if a.store.as_deref() != Some("postgres") {
        setups.push((Store::Sqlite, a.receivers.unwrap_or(1)));
    }
    if let Some((url, _)) = &pg {
        match a.receivers {
            Some(r) => setups.push((Store::Postgres(url.clone()), r)),
            None => {
                setups.push((Store::Postgres(url.clone()), 1));
                setups.push((Store::Postgres(url.clone()), 2));
            }
        }
    }
    let mut runs = Vec::new();
    let mut text = String::from(
        "store     receivers  vessels  seconds  batches/s  records/s  p50 ms  p99 ms  receiver RSS MB  stored once  acked\n",
    );
    let mut k = 0;
    for (store, receivers) in &setups {
        for n in &sizes {
            k += 1;
            let r = one_run(*n, store, *receivers, k)?;
            text.push_str(&format!(
                "{:<8}  {:>9}  {:>7}  {:>7.2}  {:>9.1}  {:>9.0}  {:>6.0}  {:>6.0}  {:>15}  {:>11}  {:>5}\n",
                r.store,
                r.receivers,
                r.vessels,
                r.seconds,
                r.batches_per_s,
                r.records_per_s,
                r.exchange_p50_ms,
                r.exchange_p99_ms,
                r.receiver_peak_rss_mb
                    .map(|m| format!("{m:.1}"))
                    .unwrap_or_else(|| "-".into()),
                if r.stored_records == (r.vessels * RECORDS) as u64 {
                    "yes".to_string()
                } else {
                    format!("NO: {}", r.stored_records)
                },
                r.acknowledged,
            ));
            runs.push(r);
        }
    }
    text.push_str(&format!(
        "each vessel: one signed batch of {RECORDS} records over its own TLS connection; {CLIENTS} vessels at a time, spread over the receivers; loopback; receiver RSS is the largest receiver's peak\n"
    ));
    Ok((
        serde_json::json!({"benchmark": "shore", "runs": runs}),
        text,
    ))
}
