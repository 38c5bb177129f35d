//! A shore receiver on loopback (real HTTPS with a private CA) and a vessel wired to it,
//! optionally through the fault-injecting proxy.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Daemon, VESSEL, Vessel, bin};
use moodle::db::{CourseRow, Fact, ModuleRow, Snapshot, UserRow};
use shore::store::ShoreStore;
use vessel::store::Store;
use wire::envelope::SecretKey;
use wire::progress::RecordKind;

pub struct Shore {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    pub daemon: Option<Daemon>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The store the shore tests run on: `VESSEL_SYNC_TEST_SHORE_STORE=postgres` runs them on a
/// throwaway PostgreSQL server (scripts/test.sh runs the shore's tests once that way too).
pub fn test_store() -> &'static str {
    match std::env::var("VESSEL_SYNC_TEST_SHORE_STORE").as_deref() {
        Ok("postgres") => "postgres",
        _ => "sqlite",
    }
}

/// A new empty database on the shared throwaway PostgreSQL server: its `[store]` section.
pub fn pg_store_section() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let pg = testkit::pgtemp::TempPg::shared().expect("a throwaway PostgreSQL server");
    let name = format!(
        "shore_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    pg.psql("postgres", &format!("CREATE DATABASE {name}"))
        .unwrap();
    format!(
        "[store]\nbackend = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:{}/{name}\"\n",
        pg.port
    )
}

impl Shore {
    /// A shore on the test run's store ([`test_store`]).
    pub fn new() -> Self {
        Self::on(test_store())
    }

    /// A shore on `store` (`sqlite` or `postgres`).
    pub fn on(store: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ca, chain, key) = wire::net::generate_server_cert(
            &["127.0.0.1".into(), "localhost".into()],
            super::now(),
        )
        .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
        std::fs::write(dir.path().join("cert.pem"), chain).unwrap();
        base::fsutil::write_private(&dir.path().join("key.pem"), key.as_bytes()).unwrap();
        let ops = SecretKey::from_seed([1u8; 32]);
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        ops.write_pair(&dir.path().join("keys/ops"), "ops").unwrap();
        // Shore's own key, for the bundles shore signs itself (acks, retirements, crew moves).
        SecretKey::from_seed([3u8; 32])
            .write_pair(&dir.path().join("keys/shore"), "shore")
            .unwrap();
        let port = free_port();
        let config = dir.path().join("shore.toml");
        std::fs::write(
            &config,
            format!(
                "version = 1\n{}[shore]\nstate_dir = \"state\"\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\nsigning_key = \"keys/shore.key\"\ntrusted = [\"keys/ops.pub\"]\n",
                // Before [shore]: tests append their lines to [shore].
                if store == "postgres" { pg_store_section() } else { String::new() }
            ),
        )
        .unwrap();
        Self {
            dir,
            config,
            port,
            daemon: None,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// An HTTPS client that trusts this shore's CA (as a browser or a vessel would).
    pub fn client(&self) -> reqwest::blocking::Client {
        wire::net::http_client(
            &wire::net::Trust {
                ca_file: Some(self.path("ca.pem")),
                pins: vec![],
            },
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(60),
        )
        .unwrap()
    }

    /// The same client, connecting from another loopback address (127.0.0.0/8 is all
    /// loopback): a second client as the shore's per-address rules see it.
    pub fn client_from(&self, ip: &str) -> reqwest::blocking::Client {
        let tls = wire::net::client_tls(&wire::net::Trust {
            ca_file: Some(self.path("ca.pem")),
            pins: vec![],
        })
        .unwrap();
        // The test plays a client of its own choosing (an attacker's address, its own timeout).
        #[allow(clippy::disallowed_methods)]
        let builder = reqwest::blocking::Client::builder();
        builder
            .use_preconfigured_tls(tls)
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap()
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        let cfg = self.config.to_str().unwrap().to_string();
        let mut full = vec!["shore"];
        full.extend_from_slice(args);
        full.extend(["--config", cfg.as_str()]);
        Command::new(bin()).args(&full).output().unwrap()
    }

    /// Starts `shore serve` and waits until it listens.
    pub fn start_env(&mut self, env: &[(&str, &str)]) {
        let mut cmd = Command::new(bin());
        cmd.args(["shore", "serve", "--config", self.config.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.path("serve.log")).unwrap())
            .env_remove("NOTIFY_SOCKET");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut d = Daemon(cmd.spawn().unwrap());
        let out = d.0.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        assert!(
            line.starts_with("listening on"),
            "shore serve printed {line:?}"
        );
        self.daemon = Some(d);
    }

    pub fn start(&mut self) {
        self.start_env(&[]);
    }

    pub fn stop(&mut self) {
        self.daemon = None;
    }

    pub fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// The shore's store, as its config names it.
    pub fn db(&self) -> ShoreStore {
        shore::ShoreConfig::load(&self.config)
            .unwrap()
            .open()
            .unwrap()
    }

    /// (records, distinct ids) held for the test vessel.
    pub fn counts(&self) -> (u64, u64) {
        self.db().record_counts(VESSEL).unwrap()
    }

    /// Registers `v` (its key in `v`'s keys/vessel.pub), writes its token there, and makes
    /// `v` trust shore's own key beside the operator's.
    pub fn register(&self, v: &Vessel) {
        std::fs::copy(self.path("keys/shore.pub"), v.path("keys/shore.pub")).unwrap();
        let cfg = std::fs::read_to_string(&v.config).unwrap();
        std::fs::write(
            &v.config,
            cfg.replacen(
                "trusted = [\"keys/ops.pub\"]",
                "trusted = [\"keys/ops.pub\", \"keys/shore.pub\"]",
                1,
            ),
        )
        .unwrap();
        let out = self.run(&[
            "vessel",
            "add",
            VESSEL,
            "--pubkey",
            v.path("keys/vessel.pub").to_str().unwrap(),
            "--token-out",
            v.path("token").to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "vessel add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A vessel set up for the uplink to `url` (https) with the shore's CA.
pub fn linked_vessel(shore: &Shore, url: &str, extra: &str) -> Vessel {
    linked_vessel_with(shore, url, extra, crate::support::Options::default())
}

/// [`linked_vessel`] with the vessel's own `Options` (settle time, gap timeout, extra config).
pub fn linked_vessel_with(
    shore: &Shore,
    url: &str,
    extra: &str,
    options: crate::support::Options,
) -> Vessel {
    let v = Vessel::with(options);
    SecretKey::from_seed([5u8; 32])
        .write_pair(&v.path("keys/vessel"), VESSEL)
        .unwrap();
    shore.register(&v);
    crate::progress::append(
        &v,
        &format!(
            "[uplink]\nmode = \"https\"\nurl = \"{url}\"\ntoken_file = \"token\"\nsigning_key = \"keys/vessel.key\"\nca_file = \"{}\"\nconnect_timeout = \"2s\"\ntimeout = \"3s\"\n{extra}",
            shore.path("ca.pem").display()
        ),
    );
    v
}

/// A progress batch of vessel `VESSEL`, sequence `seq`, signed by `key`, carrying
/// `records_bin` and `extra` in its manifest, as hand-made batches in tests need.
pub fn signed_batch(
    seq: u64,
    key: &SecretKey,
    records_bin: Vec<u8>,
    extra: &wire::envelope::Extra,
) -> Vec<u8> {
    let d = wire::envelope::Draft {
        kind: wire::envelope::Kind::Progress,
        sender: VESSEL.into(),
        recipient: "shore".into(),
        sequence: seq,
        not_before: None,
        expires: None,
        commands: vec![],
        files: vec![(
            "records.bin".into(),
            wire::envelope::Source::Bytes(records_bin),
        )],
        id: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b.vsb");
    wire::envelope::write_envelope_with(&d, extra, key, super::now(), &f).unwrap();
    std::fs::read(f).unwrap()
}

/// POSTs `body` to shore's `/v1/sync` as vessel `v` (its token); (HTTP status, JSON reply).
pub fn post_batch(shore: &Shore, v: &Vessel, body: Vec<u8>) -> (u16, serde_json::Value) {
    let client = wire::net::http_client(
        &wire::net::Trust {
            ca_file: Some(shore.path("ca.pem")),
            pins: vec![],
        },
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let token = std::fs::read_to_string(v.path("token")).unwrap();
    let r = client
        .post(format!("https://127.0.0.1:{}/v1/sync", shore.port))
        .header("authorization", format!("Bearer {}", token.trim()))
        .header("x-vessel-id", VESSEL)
        .body(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().unwrap()).unwrap_or_default(),
    )
}

/// A synthetic Moodle with `n` activity completions spread over users, courses and activities.
pub fn snapshot(n: u64, version: i64) -> Snapshot {
    let mut s = Snapshot::default();
    let users = (n / 20).max(1);
    for u in 0..users {
        s.users.insert(
            100 + u as i64,
            UserRow {
                username: format!("user{u}"),
                idnumber: format!("SEAF-{:06}", u),
            },
        );
    }
    for c in 0..10 {
        s.courses.insert(
            c,
            CourseRow {
                shortname: format!("C-{c}"),
                idnumber: format!("COURSE-{c}"),
            },
        );
        for a in 0..5 {
            s.modules.insert(
                c * 10 + a,
                ModuleRow {
                    course: c,
                    modname: "page".into(),
                    instance: c * 10 + a,
                    idnumber: format!("C{c}-A{a}"),
                    name: None,
                },
            );
        }
    }
    for i in 0..n as i64 {
        let user = 100 + (i % users as i64);
        let cm = (i / users as i64) % 50;
        s.facts.push(Fact {
            kind: RecordKind::ActivityCompletion,
            userid: user,
            objid: cm + 1000 * (i / (users as i64 * 50)),
            value: "1".into(),
            time: 1_795_000_000 + i * 37 + version,
        });
    }
    // Keep every object id a known module.
    let extra: Vec<i64> = s
        .facts
        .iter()
        .map(|f| f.objid)
        .filter(|o| !s.modules.contains_key(o))
        .collect();
    for o in extra {
        let c = (o % 50) / 5;
        s.modules.insert(
            o,
            ModuleRow {
                course: c,
                modname: "page".into(),
                instance: o,
                idnumber: format!("X-{o}"),
                name: None,
            },
        );
    }
    s
}

/// Puts `n` captured records into the vessel's outbox (as a capture from a Moodle would).
pub fn seed(v: &Vessel, n: u64, version: i64) -> u64 {
    std::fs::create_dir_all(v.path("state")).unwrap();
    let mut store = Store::open(&v.path("state/journal.db"), VESSEL).unwrap();
    let r = vessel::capture::apply_snapshot(
        &mut store,
        &snapshot(n, version),
        VESSEL,
        Default::default(),
        super::now(),
    )
    .unwrap();
    r.queued
}

pub fn sync(v: &Vessel) -> std::process::Output {
    v.run(&["sync", "--config", v.config.to_str().unwrap(), "--json"])
}

pub fn sync_env(v: &Vessel, env: &[(&str, &str)]) -> std::process::Output {
    v.run_env(
        &["sync", "--config", v.config.to_str().unwrap(), "--json"],
        env,
    )
}

/// Syncs until the outbox is empty (at most `rounds` times); returns the number of runs.
pub fn drain(v: &Vessel, rounds: u32) -> u32 {
    for i in 1..=rounds {
        let out = sync(v);
        let _ = out;
        if v.store().outbox_summary().unwrap().records == 0 {
            return i;
        }
    }
    panic!(
        "outbox not empty after {rounds} syncs: {:?}; last: {}",
        v.store().outbox_summary().unwrap(),
        String::from_utf8_lossy(&sync(v).stdout)
    );
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Queues ashore, for vessel `v`, a `set_mapping` bundle (sequence 1) signed by the vessel's
/// operator key, as `shore push` does; asserts the push succeeded.
pub fn push_mapping_bundle(shore: &Shore, v: &Vessel) {
    let bundle = v.bundle(
        "m.vsb",
        crate::support::mapping(1, "kind,legacy_id,moodle_key\ncourse,LEG-1,SAFETY-101\n"),
    );
    std::fs::rename(&bundle, shore.path("m.vsb")).unwrap();
    let out = shore.run(&["push", shore.path("m.vsb").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
