//! Benchmarks an IT officer can run on the ship's own hardware: `vessel-sync bench NAME [--json]`.
//!
//! `bundle`: builds a bundle with one generated file of `--size-mb` MB (partly
//! compressible data, like a course backup), then measures verify-and-extract throughput and the process's
//! peak resident memory while doing it; the same is measured for a bundle a tenth of the size, to
//! show that memory does not grow with the bundle.
//!
//! `users`: validation time and peak memory for a generated 80,000-row seafarer CSV, and the
//! importer's own time per 500-user chunk against the stand-in Moodle ([`crate::moodle::fake`]).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::envelope::{self, Draft, Keyring, Kind, Limits, SecretKey, Source};
use crate::exit;

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

/// Runs benchmark `name`.
pub fn run(name: &str, json: bool, size_mb: u64) -> i32 {
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
        "wire" => report_json(json, crate::benchprogress::wire()),
        "dictionary" => match crate::benchprogress::train_dictionary() {
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
        "outbox" => report_json(json, crate::benchprogress::outbox()),
        "users" => report_json(json, bench_users()),
        other => {
            eprintln!(
                "vessel-sync: unknown benchmark {other:?}; available: bundle, wire, outbox, users"
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

/// Peak resident set size of this process in MB (VmHWM), if the kernel tells.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak RSS mark so the next reading covers only what follows (Linux >= 4.0).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
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
    let keyring = Keyring::new([crate::envelope::PublicKey {
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

/// `bench users`: validation of a generated 80,000-row CSV (1 % bad rows) for time and peak
/// memory, then an import of it into the stand-in Moodle in chunks of 500, to show the
/// importer's own time per chunk (everything not spent waiting on Moodle's replies).
fn bench_users() -> Result<(serde_json::Value, String), String> {
    use crate::users::{import, sample, validate};
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
    let moodle = crate::moodle::fake::FakeMoodle::start().map_err(|e| e.to_string())?;
    let token = crate::moodle::ws::Token::new(crate::moodle::fake::TOKEN)?;
    let ws = crate::moodle::ws::Ws::new(moodle.url(), token, std::time::Duration::from_secs(60))
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
    let cli_moodle = crate::moodle::fake::FakeMoodle::start().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (php, code) = cli_moodle
        .php(dir.path(), &exe)
        .map_err(|e| e.to_string())?;
    let settings = crate::config::CliSettings {
        moodle_dir: code,
        php,
        prefix: Vec::new(),
        timeout: 600,
        dataroot: None,
        backup_dir: None,
        keep_backups: 0,
        upload_cli: true,
    };
    let runner = crate::moodle::cli::Cli::new(&settings, &|| {});
    let token = crate::moodle::ws::Token::new(crate::moodle::fake::TOKEN)?;
    let cli_ws =
        crate::moodle::ws::Ws::new(cli_moodle.url(), token, std::time::Duration::from_secs(60))
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
