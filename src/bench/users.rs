//! `vessel-sync bench users` (lab builds): validation time and peak memory for a generated
//! 80,000-row seafarer CSV, and the importer's own time per 500-user chunk against the stand-in
//! Moodle ([`testkit::fake`]), through the web services and through the upload CLI.

use std::time::Instant;

use super::rss::{peak_rss_mb, reset_peak_rss};

/// `bench users`: validation of a generated 80,000-row CSV (1 % bad rows) for time and peak
/// memory, then an import of it into the stand-in Moodle in chunks of 500, to show the
/// importer's own time per chunk (everything not spent waiting on Moodle's replies).
pub fn run() -> Result<(serde_json::Value, String), String> {
    use moodle::users::{import, validate};
    use testkit::sample;
    const ROWS: u64 = 80_000;
    const CHUNK: usize = 500;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let csv = dir.path().join("seafarers.csv");
    sample::write(&csv, ROWS, true).map_err(|e| e.to_string())?;
    let size_mb = std::fs::metadata(&csv).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    reset_peak_rss();
    let before = peak_rss_mb().unwrap_or(0.0);
    let t = Instant::now();
    let mut v = validate::validate(&csv).map_err(|e| e.to_string())?;
    let validate_s = t.elapsed().as_secs_f64();
    let peak = peak_rss_mb().unwrap_or(0.0);
    let moodle = testkit::fake::FakeMoodle::start().map_err(|e| e.to_string())?;
    let token = moodle::ws::Token::new(testkit::fake::TOKEN)?;
    let ws = moodle::ws::Ws::new(moodle.url(), token, std::time::Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let opts = import::Options {
        chunk: CHUNK,
        dry_run: false,
        role_id: 5,
    };
    let mut progress = import::Progress::default();
    let s = import::run(
        &ws,
        &csv,
        &mut v,
        &opts,
        &mut progress,
        &mut |_| Ok(()),
        &mut import::Quiet,
        &import::Via::WebService,
    )
    .map_err(|e| e.to_string())?;
    let chunks = s.valid.div_ceil(CHUNK as u64).max(1);
    let own_ms = (s.total_seconds - s.moodle_seconds) * 1000.0 / chunks as f64;
    // The same through Moodle's upload CLI (the vessel's default), played by the stand-in.
    let cli_moodle = testkit::fake::FakeMoodle::start().map_err(|e| e.to_string())?;
    let (php, code) = cli_moodle.php(dir.path()).map_err(|e| e.to_string())?;
    let settings = moodle::config::CliSettings {
        moodle_dir: code,
        php,
        prefix: Vec::new(),
        timeout: 600,
        dataroot: None,
        backup_dir: None,
        keep_backups: 0,
        upload_cli: true,
        upload_workers: 2,
    };
    let runner = moodle::cli::Cli::new(&settings, &|| {});
    let token = moodle::ws::Token::new(testkit::fake::TOKEN)?;
    let cli_ws = moodle::ws::Ws::new(cli_moodle.url(), token, std::time::Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let mut v2 = validate::validate(&csv).map_err(|e| e.to_string())?;
    let mut progress = import::Progress::default();
    let c = import::run(
        &cli_ws,
        &csv,
        &mut v2,
        &opts,
        &mut progress,
        &mut |_| Ok(()),
        &mut import::Quiet,
        &import::Via::UploadCli {
            cli: &runner,
            dir: dir.path(),
            workers: 2,
        },
    )
    .map_err(|e| e.to_string())?;
    let cli_own_ms = (c.total_seconds - c.moodle_seconds) * 1000.0 / chunks as f64;
    let round = |x: f64, d: f64| (x * d).round() / d;
    let v = serde_json::json!({
        "benchmark": "users",
        "rows": ROWS,
        "csv_mb": round(size_mb, 10.0),
        "rows_with_problems": v.bad_rows.len(),
        "validate_seconds": round(validate_s, 1000.0),
        "validate_peak_rss_mb": round(peak, 10.0),
        "rss_before_validate_mb": round(before, 10.0),
        "import_chunk": CHUNK,
        "import_chunks": chunks,
        "import_calls": s.calls,
        "users_created": s.created,
        "import_seconds": round(s.total_seconds, 100.0),
        "waiting_on_moodle_seconds": round(s.moodle_seconds, 100.0),
        "importer_ms_per_chunk": round(own_ms, 100.0),
        "upload_cli_users_created": c.created,
        "upload_cli_seconds": round(c.total_seconds, 100.0),
        "upload_cli_importer_ms_per_chunk": round(cli_own_ms, 100.0),
    });
    let text = format!(
        "bench users: {ROWS} rows ({size_mb:.1} MB CSV, {} rows with problems)\n  validate          {validate_s:>8.3} s, peak RSS {peak:.1} MB (targets: under 1 s, under 64 MB)\n  import (fake Moodle, chunks of {CHUNK}): {} users in {:.2} s, {} calls, {:.2} s waiting on Moodle\n  importer's own time {own_ms:>6.2} ms per chunk of {CHUNK} (not spent waiting on Moodle)\n  through the upload CLI (the vessel's way): {} users in {:.2} s; importer's own time {cli_own_ms:.2} ms per chunk\n",
        v["rows_with_problems"],
        s.created,
        s.total_seconds,
        s.calls,
        s.moodle_seconds,
        c.created,
        c.total_seconds
    );
    Ok((v, text))
}
