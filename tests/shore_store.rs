//! The shore on PostgreSQL with several receivers (`[store] backend = "postgres"`, a real
//! throwaway server): two `shore serve` processes given the same batch at the same moment
//! store it once and both acknowledge it; a login made through one receiver opens the
//! dashboard through the other; `shore migrate --from sqlite` moves a shore without losing a
//! record, and refuses a database that holds one already; a password in the URL is refused
//! and never echoed. The rest of the shore's tests run on PostgreSQL too
//! (`VESSEL_SYNC_TEST_SHORE_STORE=postgres`, a second pass of scripts/test.sh).

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Barrier;

use crate::support::shore::{Shore, free_port, linked_vessel, pg_store_section, seed, sync};
use crate::support::{Daemon, VESSEL, bin};
use wire::envelope::{Draft, Extra, Kind, SecretKey, Source, write_envelope_with};
use wire::progress::{Record, RecordKind, codec};

/// A second receiver of the same shore: the same config (state directory, store) on its own
/// port. Returns it running and its URL.
fn second_receiver(shore: &Shore) -> (Daemon, String) {
    let port = free_port();
    let text = std::fs::read_to_string(&shore.config).unwrap().replace(
        &format!("127.0.0.1:{}", shore.port),
        &format!("127.0.0.1:{port}"),
    );
    let config = shore.path("shore-b.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(bin())
        .args(["shore", "serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(shore.path("serve-b.log")).unwrap())
        .env_remove("NOTIFY_SOCKET")
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on"), "{line:?}");
    (Daemon(child), format!("https://127.0.0.1:{port}"))
}

/// Registers vessel `id` and returns its token and one signed batch of `n` records.
fn vessel_with_batch(shore: &Shore, id: &str, n: usize, seed_byte: u8) -> (String, Vec<u8>) {
    let key = SecretKey::from_seed([seed_byte; 32]);
    let stem = shore.path(&format!("keys/{id}"));
    key.write_pair(&stem, id).unwrap();
    let r = shore.run(&[
        "vessel",
        "add",
        id,
        "--pubkey",
        shore.path(&format!("keys/{id}.pub")).to_str().unwrap(),
        "--token-out",
        shore.path(&format!("{id}.token")).to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let token = std::fs::read_to_string(shore.path(&format!("{id}.token")))
        .unwrap()
        .trim()
        .to_string();
    let now = 1_800_000_000;
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            kind: RecordKind::ActivityCompletion,
            user: format!("SEAF-{i:04}"),
            course: "SAFETY-101".into(),
            item: format!("quiz:{i}"),
            user_legacy: String::new(),
            course_legacy: String::new(),
            item_legacy: String::new(),
            value: "1".into(),
            time: now + i as i64,
        })
        .collect();
    let draft = Draft {
        kind: Kind::Progress,
        sender: id.into(),
        recipient: wire::SHORE.into(),
        sequence: 1,
        not_before: None,
        expires: None,
        commands: vec![],
        files: vec![(
            wire::RECORDS_MEMBER.into(),
            Source::Bytes(codec::encode_batch(&records, 0)),
        )],
        id: None,
    };
    let path = shore.path(&format!("{id}.vsb"));
    write_envelope_with(&draft, &Extra::default(), &key, now, &path).unwrap();
    (token, std::fs::read(&path).unwrap())
}

#[test]
fn two_receivers_on_one_postgres_database_given_the_same_batch_at_once_store_it_once_and_both_acknowledge_it()
 {
    let mut shore = Shore::on("postgres");
    shore.start();
    let (_b, url_b) = second_receiver(&shore);
    let url_a = format!("https://127.0.0.1:{}", shore.port);
    let c = shore.client();
    for k in 0..6u8 {
        let id = format!("mv-twin-{k}");
        let (token, body) = vessel_with_batch(&shore, &id, 500, 40 + k);
        let gate = Barrier::new(2);
        let answers: Vec<serde_json::Value> = std::thread::scope(|s| {
            let sends: Vec<_> = [&url_a, &url_b]
                .into_iter()
                .map(|url| {
                    let (c, gate, token, body, id) = (&c, &gate, &token, body.clone(), &id);
                    s.spawn(move || {
                        gate.wait();
                        let r = c
                            .post(format!("{url}/v1/sync"))
                            .header("authorization", format!("Bearer {token}"))
                            .header("x-vessel-id", id)
                            .body(body)
                            .send()
                            .unwrap();
                        assert!(r.status().is_success(), "{url}: {}", r.status());
                        serde_json::from_slice::<serde_json::Value>(&r.bytes().unwrap()).unwrap()
                    })
                })
                .collect();
            sends.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for a in &answers {
            assert_eq!(a["acked_seq"], 1, "both receivers acknowledge: {answers:?}");
        }
        let db = shore.db();
        assert_eq!(db.record_counts(&id).unwrap(), (500, 500), "stored once");
        let v = db.vessel(&id).unwrap().unwrap();
        assert_eq!((v.acked_seq, v.records), (1, 500));
    }
    // Receiver B's view is the same database: the fleet as A's `shore status` shows it.
    let status = shore.run(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["vessels"].as_array().unwrap().len(), 6);
    shore.stop();
}

#[test]
fn a_dashboard_login_through_one_receiver_opens_the_page_through_the_other() {
    let mut shore = Shore::on("postgres");
    base::fsutil::write_private(
        &shore.path("dashboard.password"),
        b"correct horse battery\n",
    )
    .unwrap();
    let mut cfg = std::fs::read_to_string(&shore.config).unwrap();
    cfg.push_str("[dashboard]\npassword_file = \"dashboard.password\"\n");
    std::fs::write(&shore.config, cfg).unwrap();
    shore.start();
    let (_b, url_b) = second_receiver(&shore);
    let c = shore.client();
    let ok = c
        .post(format!("https://127.0.0.1:{}/dashboard/login", shore.port))
        .header("content-type", "application/json")
        .body(r#"{"password":"correct horse battery"}"#)
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap();
    let session = cookie.split(';').next().unwrap().to_string();
    let api = format!("{url_b}/dashboard/api/fleet");
    assert_eq!(c.get(&api).send().unwrap().status(), 401);
    let r = c.get(&api).header("cookie", &session).send().unwrap();
    assert_eq!(r.status(), 200, "the other receiver honours the login");
    // And it survives a restart of the receiver that made it.
    shore.stop();
    shore.start();
    let url_a = format!("https://127.0.0.1:{}/dashboard/api/fleet", shore.port);
    let r = c.get(&url_a).header("cookie", &session).send().unwrap();
    assert_eq!(r.status(), 200, "a restart logs nobody out");
    shore.stop();
}

#[test]
fn shore_migrate_moves_a_sqlite_shore_into_postgres_without_losing_a_record_and_it_carries_on() {
    let mut shore = Shore::on("sqlite");
    shore.start();
    let url = format!("https://127.0.0.1:{}", shore.port);
    let v = linked_vessel(&shore, &url, "");
    seed(&v, 40, 0);
    assert!(sync(&v).status.success());
    assert_eq!(shore.counts(), (40, 40));
    let export = shore.path("before.csv");
    let r = shore.run(&["export", "--out", export.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    shore.stop();

    // Moving needs [store] set to PostgreSQL first.
    let r = shore.run(&["migrate", "--from", "sqlite"]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("backend = \"postgres\""));
    let text = std::fs::read_to_string(&shore.config).unwrap();
    std::fs::write(
        &shore.config,
        text.replacen(
            "version = 1\n",
            &format!("version = 1\n{}", pg_store_section()),
            1,
        ),
    )
    .unwrap();
    let r = shore.run(&["migrate", "--from", "sqlite", "--json"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let out: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let rows = |t: &str| {
        out["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e[0] == t)
            .map(|e| e[1].as_u64().unwrap())
    };
    assert_eq!(rows("records"), Some(40));
    assert_eq!(rows("vessels"), Some(1));
    assert_eq!(shore.counts(), (40, 40), "every record, now in PostgreSQL");
    // A second migration finds the database in use and copies nothing.
    let r = shore.run(&["migrate", "--from", "sqlite"]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("already holds 1 vessels and 40 records"));
    assert_eq!(shore.counts(), (40, 40));

    // The shore carries on from PostgreSQL: the vessel's next records join the chain, and
    // the export cursor moved with it (the 40 exported before are not exported again).
    shore.start();
    seed(&v, 15, 1);
    let out = sync(&v);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = shore.counts();
    assert_eq!(counts.0, counts.1);
    assert!(counts.0 > 40, "{counts:?}");
    let after = shore.path("after.csv");
    let r = shore.run(&["export", "--out", after.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let lines = std::fs::read_to_string(&after).unwrap().lines().count() as u64;
    assert_eq!(lines - 1, counts.0 - 40, "only what came after the move");
    let v_row = shore.db().vessel(VESSEL).unwrap().unwrap();
    assert!(v_row.acked_seq >= 2, "{v_row:?}");
    shore.stop();
}

#[test]
fn a_password_in_the_postgres_url_is_refused_and_never_shown() {
    let shore = Shore::on("sqlite");
    let text = std::fs::read_to_string(&shore.config).unwrap();
    std::fs::write(
        &shore.config,
        text.replacen(
            "version = 1\n",
            "version = 1\n[store]\nbackend = \"postgres\"\nurl = \"postgres://shore:hunter2-secret@127.0.0.1:1/shore\"\n",
            1,
        ),
    )
    .unwrap();
    let r = shore.run(&["status"]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("password_file"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_receiver_whose_postgres_connection_was_cut_connects_again_and_the_vessel_never_notices() {
    let mut shore = Shore::on("postgres");
    shore.start();
    let url = format!("https://127.0.0.1:{}", shore.port);
    let v = linked_vessel(&shore, &url, "");
    seed(&v, 20, 0);
    assert!(sync(&v).status.success());
    // The server ends every session of the shore's database (as a restart or failover would).
    let text = std::fs::read_to_string(&shore.config).unwrap();
    let db = text
        .lines()
        .find_map(|l| l.strip_prefix("url = \""))
        .and_then(|u| u.trim_end_matches('"').rsplit('/').next())
        .unwrap()
        .to_string();
    let pg = testkit::pgtemp::TempPg::shared().unwrap();
    let ended = pg
        .query(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{db}'"
            ),
        )
        .unwrap();
    assert_ne!(ended.trim(), "0", "the receiver held a session");
    seed(&v, 10, 1);
    let out = sync(&v);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let counts = shore.counts();
    assert_eq!(counts.0, counts.1);
    assert!(counts.0 > 20, "{counts:?} {last}");
    let log = std::fs::read_to_string(shore.path("serve.log")).unwrap();
    assert!(log.contains("connected to PostgreSQL again"), "{log}");
    shore.stop();
}
