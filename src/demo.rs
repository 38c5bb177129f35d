//! `vessel-sync demo`: the whole flow in a temporary folder, narrated. No Moodle needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base::clock::{Clock, SystemClock};
use base::exit;
use vessel::agent::Agent;
use vessel::config::Config;
use wire::envelope::{self, CommandEntry, Draft, Kind, SecretKey, Source};

fn step(n: u32, text: &str) {
    println!("\n== {n}. {text}");
}

/// Rewrites a bundle with one member's bytes changed (same size), keeping the original signed
/// manifest and signature: what tampering in transit looks like. Used by the demo and tests.
pub fn rewrite_member(
    src: &Path,
    dst: &Path,
    member: &str,
    change: impl Fn(&mut Vec<u8>),
) -> std::io::Result<()> {
    use wire::envelope::tarstream::TarReader;
    let file = std::fs::File::open(src)?;
    // The demo's own bundle, written a moment ago: nothing hostile to bound.
    #[allow(clippy::disallowed_methods)]
    let decoder = zstd::stream::read::Decoder::new(file)?;
    let mut tar = TarReader::new(decoder);
    let mut members = Vec::new();
    while let Some(h) = tar
        .next_header()
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?
    {
        let mut data = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = tar
                .read_data(&mut buf)
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        let name = String::from_utf8_lossy(&h.name).into_owned();
        if name == member {
            change(&mut data);
        }
        members.push((name, data));
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in &members {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_path(name)?;
        h.set_cksum();
        builder.append(&h, &data[..])?;
    }
    let raw = builder.into_inner()?;
    std::fs::write(dst, zstd::encode_all(&raw[..], 3)?)
}

fn command(kind: &str, args: serde_json::Value, files: &[&str]) -> CommandEntry {
    CommandEntry {
        id: String::new(),
        kind: kind.into(),
        args: args.as_object().cloned().unwrap_or_default(),
        files: files.iter().map(|s| s.to_string()).collect(),
    }
}

fn draft(
    recipient: &str,
    sequence: u64,
    commands: Vec<CommandEntry>,
    files: Vec<(String, Source)>,
) -> Draft {
    Draft {
        kind: Kind::Commands,
        sender: "shore-ops".into(),
        recipient: recipient.into(),
        sequence,
        not_before: None,
        expires: None,
        commands,
        files,
        id: None,
    }
}

fn once(cfg: &Config, clock: &Arc<dyn Clock>) -> Result<(), String> {
    let mut agent = Agent::start(cfg.clone(), clock.clone()).map_err(|e| e.to_string())?;
    let report = agent.run_once().map_err(|e| e.to_string())?;
    crate::cli::report::print_pass(&report);
    Ok(())
}

fn demo(dir: &Path, kept: bool) -> Result<(), String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now();
    let e = |e: std::io::Error| e.to_string();
    for sub in ["keys", "shore", "inbox"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(e)?;
    }

    step(
        1,
        "Shore: make the operator's signing key (vessel-sync keygen --out keys/shore-ops)",
    );
    let ops = SecretKey::generate().map_err(e)?;
    ops.write_pair(&dir.join("keys/shore-ops"), "shore operations desk")
        .map_err(|e| e.to_string())?;
    let rogue = SecretKey::generate().map_err(e)?;
    println!(
        "operator key id {} (keys/shore-ops.key stays ashore; keys/shore-ops.pub goes to the vessel)",
        ops.id
    );

    step(
        2,
        "Vessel: configure the agent for vessel mv-aurora, trusting that key",
    );
    let cfg_text = "version = 1\n\n[vessel]\nid = \"mv-aurora\"\n\n[paths]\nstate_dir = \"state\"\ninbox = \"inbox\"\n\n[keyring]\ntrusted = [\"keys/shore-ops.pub\"]\n\n[inbox]\nsettle = \"0s\"\n";
    let cfg_path = dir.join("agent.toml");
    std::fs::write(&cfg_path, cfg_text).map_err(e)?;
    print!("{cfg_text}");
    let cfg = Config::load(&cfg_path).map_err(|e| e.to_string())?;

    step(
        3,
        "Shore: build and sign bundle #1 (a legacy-id mapping and an acknowledgement)",
    );
    let csv = dir.join("shore/mapping.csv");
    std::fs::write(&csv, "kind,legacy_id,moodle_key,course\ncategory,TRS-DECK,DECK,\ncourse,TRS-0110,ERM-110,\ncourse,TRS-0101,SAFETY-101,\nactivity,TRS-0110-Q1,erm-quiz-1,ERM-110\n").map_err(e)?;
    let good = dir.join("shore/0001-mapping.vsb");
    let d = draft(
        "mv-aurora",
        1,
        vec![
            command("set_mapping", serde_json::json!({}), &["files/mapping.csv"]),
            command("ack", serde_json::json!({"acked_seq": 42}), &[]),
        ],
        vec![("files/mapping.csv".into(), Source::Path(csv.clone()))],
    );
    let m = envelope::write_envelope(&d, &ops, now, &good).map_err(e)?;
    println!("bundle {} sequence 1 -> {}", m.id, good.display());

    step(
        4,
        "Vessel: the carrier drops it into the inbox; the agent verifies, journals and applies it",
    );
    std::fs::copy(&good, dir.join("inbox/0001-mapping.vsb")).map_err(e)?;
    once(&cfg, &clock)?;

    step(
        5,
        "The same bundle arrives again (carriers retry), plus a re-signed bundle reusing sequence 1",
    );
    std::fs::copy(&good, dir.join("inbox/0001-mapping-again.vsb")).map_err(e)?;
    let replay = draft(
        "mv-aurora",
        1,
        vec![command("ack", serde_json::json!({"acked_seq": 7}), &[])],
        vec![],
    );
    envelope::write_envelope(&replay, &ops, now, &dir.join("inbox/0001-old-ack.vsb")).map_err(e)?;
    once(&cfg, &clock)?;

    step(
        6,
        "Tampering: bundle #2 with mapping.csv changed after signing, and one signed by an unknown key",
    );
    std::fs::write(
        &csv,
        "kind,legacy_id,moodle_key,course\ncourse,TRS-0201,FIRE-201,\n",
    )
    .map_err(e)?;
    let second = dir.join("shore/0002-mapping.vsb");
    let d2 = draft(
        "mv-aurora",
        2,
        vec![command(
            "set_mapping",
            serde_json::json!({}),
            &["files/mapping.csv"],
        )],
        vec![("files/mapping.csv".into(), Source::Path(csv.clone()))],
    );
    envelope::write_envelope(&d2, &ops, now, &second).map_err(e)?;
    rewrite_member(
        &second,
        &dir.join("inbox/0002-tampered.vsb"),
        "files/mapping.csv",
        |b| {
            if let Some(pos) = b.windows(8).position(|w| w == b"FIRE-201") {
                b[pos..pos + 8].copy_from_slice(b"FIRE-666");
            }
        },
    )
    .map_err(e)?;
    envelope::write_envelope(&d2, &rogue, now, &dir.join("inbox/0002-rogue.vsb")).map_err(e)?;
    once(&cfg, &clock)?;

    step(
        7,
        "What the IT officer sees: a reason file beside each quarantined bundle",
    );
    let mut reasons: Vec<PathBuf> = std::fs::read_dir(&cfg.paths.quarantine)
        .map_err(e)?
        .flatten()
        .map(|d| d.path())
        .filter(|p| p.to_string_lossy().ends_with(".reason.txt"))
        .collect();
    reasons.sort();
    for r in reasons {
        let text = std::fs::read_to_string(&r).map_err(e)?;
        let reason = text
            .lines()
            .find(|l| l.starts_with("Reason:"))
            .unwrap_or("");
        println!("{}\n    {}", r.display(), reason.trim());
    }

    step(
        8,
        "The untampered bundle #2 arrives after all; then 'vessel-sync status'",
    );
    std::fs::copy(&second, dir.join("inbox/0002-mapping.vsb")).map_err(e)?;
    once(&cfg, &clock)?;
    progress(dir, &cfg_path, &clock, &ops)?;
    println!();
    let cfg = Config::load(&cfg_path).map_err(|e| e.to_string())?;
    crate::cli::report::status(&cfg, clock.as_ref(), false);
    if kept {
        println!(
            "\nTry: vessel-sync status --config {0}    vessel-sync audit --config {0}",
            cfg_path.display()
        );
    } else {
        println!(
            "\n(The temporary folder is removed now; 'vessel-sync demo --dir DIR' keeps it to explore with status and audit.)"
        );
    }
    Ok(())
}

/// The second half: progress goes home. A shore receiver on loopback, a throwaway PostgreSQL
/// with Moodle's tables, capture, a batch over HTTPS, the acknowledgement.
fn progress(
    dir: &Path,
    cfg_path: &Path,
    clock: &Arc<dyn Clock>,
    ops: &SecretKey,
) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    step(
        9,
        "The ship's Moodle: a throwaway PostgreSQL cluster with Moodle's progress tables",
    );
    let pg = match testkit::pgtemp::TempPg::start() {
        Ok(pg) => pg,
        Err(why) => {
            println!(
                "skipped: {why}
(the progress half of the demo needs Debian's postgresql package)"
            );
            return users(dir, cfg_path, clock, ops);
        }
    };
    pg.create_moodle("moodle")?;
    pg.psql(
        "moodle",
        "INSERT INTO mdl_user (id, username, idnumber) VALUES (3, 'j.hansen', 'SEAF-100231'), (4, 'm.santos', 'SEAF-100232'), (5, 'a.kowalski', '');
         INSERT INTO mdl_course (id, shortname, idnumber) VALUES (2, 'SAFETY-101', 'SAFETY-101'), (8, 'ERM-110_1', '');
         INSERT INTO mdl_page (id, course, name) VALUES (1, 2, 'Personal survival techniques'), (2, 2, 'Elementary first aid'), (3, 8, 'Situational awareness');
         INSERT INTO mdl_course_modules (id, course, module, instance, idnumber) VALUES (4, 2, 15, 1, 'SAFETY-101-PST'), (5, 2, 15, 2, 'SAFETY-101-EFA'), (21, 8, 15, 3, '');
         INSERT INTO mdl_course_modules_completion (coursemoduleid, userid, completionstate, overrideby, timemodified) VALUES
           (4, 3, 1, 2, 1795308010), (5, 3, 1, NULL, 1795308011), (4, 4, 0, 2, 1795308059), (21, 5, 1, NULL, 1700000000);
         INSERT INTO mdl_course_completions (userid, course, timecompleted) VALUES (3, 2, 1795308011);
         INSERT INTO mdl_grade_items (id, courseid, itemtype, itemmodule, iteminstance, itemnumber, idnumber) VALUES (1, 2, 'course', NULL, 2, NULL, NULL);
         INSERT INTO mdl_grade_grades (itemid, userid, finalgrade, timemodified) VALUES (1, 3, 92.0, 1795308030);",
    )?;
    println!(
        "PostgreSQL on 127.0.0.1:{}: 3 learners, 2 courses (one restored from a backup, its completion 3 years old), 4 activity completions (one overridden back to incomplete), a course completion, a grade",
        pg.port
    );

    step(
        10,
        "Shore: an HTTPS receiver on loopback with a private CA; the vessel registered",
    );
    let (ca, chain, key) = wire::net::generate_server_cert(
        &["127.0.0.1".into()],
        base::clock::Clock::now(&base::clock::SystemClock),
    )
    .map_err(|e| e.to_string())?;
    for (name, body) in [
        ("shore-ca.pem", &ca),
        ("shore-cert.pem", &chain),
        ("shore-key.pem", &key),
    ] {
        base::fsutil::write_private(&dir.join(name), body.as_bytes()).map_err(e)?;
    }
    let shore_cfg_path = dir.join("shore.toml");
    std::fs::write(
        &shore_cfg_path,
        "version = 1\n[shore]\nstate_dir = \"shore\"\nlisten = \"127.0.0.1:0\"\ntls_cert = \"shore-cert.pem\"\ntls_key = \"shore-key.pem\"\n",
    )
    .map_err(e)?;
    let shore_cfg = shore::ShoreConfig::load(&shore_cfg_path)?;
    let vessel_key = SecretKey::generate().map_err(e)?;
    let (_, vessel_pub) = vessel_key
        .write_pair(&dir.join("keys/mv-aurora"), "mv-aurora")
        .map_err(|e| e.to_string())?;
    let token_path = dir.join("mv-aurora.token");
    let key_id = shore::vessel_add(
        &shore_cfg,
        "mv-aurora",
        &vessel_pub,
        &token_path,
        clock.now(),
    )
    .map_err(|e| format!("registering the vessel failed: {e}"))?;
    crate::cli::shore::render::vessel_added("mv-aurora", key_id, &token_path);
    let (tx, rx) = std::sync::mpsc::channel();
    let serve_cfg = shore_cfg.clone();
    let serve_clock = clock.clone();
    std::thread::spawn(move || {
        if let Err(e) = shore::serve::run(serve_cfg, serve_clock, move |a| {
            let _ = tx.send(a);
        }) {
            eprintln!("shore receiver: {e}");
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .map_err(|_| "the shore receiver did not start".to_string())?;
    println!("shore receiver listening on https://{addr}");

    step(
        11,
        "The vessel's config gains [moodle] and [uplink]; 'vessel-sync agent --once' captures and syncs",
    );
    let extra = format!(
        "\n[moodle]\ndb_type = \"postgres\"\ndb_host = \"127.0.0.1\"\ndb_port = {}\ndb_name = \"moodle\"\ndb_user = \"postgres\"\n\n[uplink]\nmode = \"https\"\nurl = \"https://{addr}\"\ntoken_file = \"mv-aurora.token\"\nsigning_key = \"keys/mv-aurora.key\"\nca_file = \"shore-ca.pem\"\n",
        pg.port
    );
    let mut text = std::fs::read_to_string(cfg_path).map_err(e)?;
    text.push_str(&extra);
    std::fs::write(cfg_path, text).map_err(e)?;
    print!("{extra}");
    let cfg = Config::load(cfg_path).map_err(|e| e.to_string())?;
    once(&cfg, clock)?;

    step(
        12,
        "A learner completes one more activity on board; the next cycle sends just that",
    );
    pg.psql(
        "moodle",
        "UPDATE mdl_course_modules_completion SET completionstate = 1, timemodified = 1795309000 WHERE userid = 4 AND coursemoduleid = 4;",
    )?;
    once(&cfg, clock)?;

    step(
        13,
        "Ashore: 'vessel-sync shore status' and the CSV export for the training-records system",
    );
    let (fleet, _) = shore::status(&shore_cfg, clock.now()).map_err(|e| e.to_string())?;
    crate::cli::shore::render::fleet(fleet);
    let csv = dir.join("progress-export.csv");
    let n =
        shore::export::export(&shore_cfg, None, &csv, clock.now()).map_err(|e| e.to_string())?;
    println!("{n} records written to {}", csv.display());
    let text = std::fs::read_to_string(&csv).map_err(e)?;
    for line in text.lines().take(4) {
        println!("  {line}");
    }
    users(dir, cfg_path, clock, ops)
}

/// Seafarer accounts: an `upsert_users` bundle applied to a stand-in Moodle's web services.
fn users(
    dir: &Path,
    cfg_path: &Path,
    clock: &Arc<dyn Clock>,
    ops: &SecretKey,
) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    step(
        14,
        "Shore: bundle #3 upserts 2,000 seafarers (1 in 100 rows with a mistake) into the ship's Moodle (a stand-in answering like Moodle 5.0's web services)",
    );
    let moodle = testkit::fake::FakeMoodle::start().map_err(e)?;
    std::fs::write(dir.join("moodle-ws.token"), testkit::fake::TOKEN).map_err(e)?;
    let lines = format!(
        "url = \"{}\"\ntoken_file = \"moodle-ws.token\"\nuser_chunk = 500\n",
        moodle.url()
    );
    let mut text = std::fs::read_to_string(cfg_path).map_err(e)?;
    if text.contains("\n[moodle]\n") {
        text = text.replacen("\n[moodle]\n", &format!("\n[moodle]\n{lines}"), 1);
    } else {
        text.push_str(&format!("\n[moodle]\n{lines}"));
    }
    std::fs::write(cfg_path, text).map_err(e)?;
    println!("[moodle]\n{lines}");
    let csv = dir.join("shore/seafarers.csv");
    testkit::sample::write(&csv, 2000, true).map_err(e)?;
    let bundle = dir.join("shore/0003-users.vsb");
    let d = draft(
        "mv-aurora",
        3,
        vec![CommandEntry {
            id: "crew-list-2026-11".into(),
            ..command(
                "upsert_users",
                serde_json::json!({}),
                &["files/seafarers.csv"],
            )
        }],
        vec![("files/seafarers.csv".into(), Source::Path(csv))],
    );
    envelope::write_envelope(&d, ops, clock.now(), &bundle).map_err(e)?;
    std::fs::copy(&bundle, dir.join("inbox/0003-users.vsb")).map_err(e)?;
    let cfg = Config::load(cfg_path).map_err(|e| e.to_string())?;
    once(&cfg, clock)?;
    {
        let st = moodle.state();
        println!(
            "Moodle now has {} seafarers and {} enrolments; the per-row report is in state/reports/crew-list-2026-11.users-report.json",
            st.users.len() - 1,
            st.enrolments.len()
        );
    }
    courses(dir, cfg_path, clock, ops, &moodle)
}

/// Courses: a restore from an .mbz and a guarded deletion, through the stand-in's CLI scripts.
fn courses(
    dir: &Path,
    cfg_path: &Path,
    clock: &Arc<dyn Clock>,
    ops: &SecretKey,
    moodle: &testkit::fake::FakeMoodle,
) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    step(
        15,
        "Shore: bundle #4 restores NAV-200 from a course backup and retires FIRE-201 (a guarded deletion); the agent runs Moodle's CLI scripts (here the stand-in's)",
    );
    let (php, code) = moodle.php(dir).map_err(e)?;
    let lines = format!(
        "moodle_dir = \"{}\"\nphp = \"{}\"\n",
        code.display(),
        php.display()
    );
    let text = std::fs::read_to_string(cfg_path).map_err(e)?.replacen(
        "\n[moodle]\n",
        &format!("\n[moodle]\n{lines}"),
        1,
    );
    std::fs::write(cfg_path, text).map_err(e)?;
    println!("[moodle] (added)\n{lines}");
    let mbz = dir.join("shore/nav-200.mbz");
    std::fs::write(
        &mbz,
        testkit::fake::cli::sample_mbz("NAV-200", "Navigation watchkeeping").map_err(e)?,
    )
    .map_err(e)?;
    let bundle = dir.join("shore/0004-courses.vsb");
    let d = draft(
        "mv-aurora",
        4,
        vec![
            CommandEntry {
                id: "nav-200".into(),
                ..command(
                    "restore_course",
                    serde_json::json!({"shortname": "NAV-200", "idnumber": "NAV-200", "category": "DECK"}),
                    &["files/nav-200.mbz"],
                )
            },
            CommandEntry {
                id: "retire-fire-201".into(),
                ..command(
                    "delete_course",
                    serde_json::json!({"course": "FIRE-201"}),
                    &[],
                )
            },
        ],
        vec![("files/nav-200.mbz".into(), Source::Path(mbz))],
    );
    envelope::write_envelope(&d, ops, clock.now(), &bundle).map_err(e)?;
    std::fs::copy(&bundle, dir.join("inbox/0004-courses.vsb")).map_err(e)?;
    let cfg = Config::load(cfg_path).map_err(|e| e.to_string())?;
    once(&cfg, clock)?;
    if moodle.state().course("FIRE-201").is_some() {
        println!("(a minute later: the capture after hiding has run)");
        let later: Arc<dyn Clock> = Arc::new(base::clock::OffsetClock(60));
        once(&cfg, &later)?;
    }
    let st = moodle.state();
    let scripts: Vec<String> = st.cli_runs.iter().map(|a| a[0].clone()).collect();
    println!(
        "Moodle's CLI scripts run, in order: {}; FIRE-201 is {}; the final backup is in state/backups/",
        scripts.join(", "),
        if st.course("FIRE-201").is_some() {
            "still there"
        } else {
            "gone"
        }
    );
    Ok(())
}

/// Runs the demo in `dir` (kept) or in a temporary directory (removed).
pub fn run(dir: Option<PathBuf>) -> i32 {
    let temp;
    let kept = dir.is_some();
    let path = match dir {
        Some(d) => {
            if let Err(e) = std::fs::create_dir_all(&d) {
                eprintln!("vessel-sync: {}: {e}", d.display());
                return exit::IOERR;
            }
            d
        }
        None => match tempfile::Builder::new()
            .prefix("vessel-sync-demo-")
            .tempdir()
        {
            Ok(t) => {
                temp = t;
                temp.path().to_path_buf()
            }
            Err(e) => {
                eprintln!("vessel-sync: cannot create a temporary directory: {e}");
                return exit::IOERR;
            }
        },
    };
    println!("vessel-sync demo in {}", path.display());
    match demo(&path, kept) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("vessel-sync: demo failed: {e}");
            exit::FAILURE
        }
    }
}
