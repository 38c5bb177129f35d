//! `vessel-sync bench users --config agent.toml [--rows N]`: the vessel's import of N new
//! seafarers into the real Moodle that config names, against Moodle's own upload CLI
//! (`admin/tool/uploaduser/cli/uploaduser.php`) on a file of the same shape, in one run on the
//! same site. Both take the same `[moodle]` settings the agent uses (web services, `php`,
//! `cli_prefix`, `moodle_dir`), so the figures are those of this ship.
//!
//! Three imports of N fresh accounts each: the upload CLI alone on the whole file; the
//! vessel's default way (`user_import = "cli"`: the upload CLI per chunk, every row checked
//! through the web services before and after), then the same list again (every row unchanged:
//! only the check); and the web-service way. The accounts are named
//! `vsbench<time>{c,v,w}<n>` with addresses under `bench.invalid`, and are deleted afterwards
//! through the upload CLI (`--keep` leaves them), so run it on a site where that is acceptable.

use std::path::{Path, PathBuf};
use std::time::Instant;

use moodle::cli::Cli;
use moodle::users::{import, validate};
use moodle::ws::{Token, Ws};

/// The three imports' figures.
pub fn run(config: &Path, rows: u64, keep: bool) -> Result<(serde_json::Value, String), String> {
    let cfg = vessel::config::Config::load(config).map_err(|e| e.to_string())?;
    let (Some(ws_s), Some(cli_s)) = (cfg.moodle_ws.as_ref(), cfg.moodle_cli.as_ref()) else {
        return Err(format!(
            "{} must set [moodle] url and token_file (the web services) and moodle_dir (the CLI): \
             the benchmark uses both, as the agent does",
            config.display()
        ));
    };
    let token = Token::from_file(&ws_s.token_file).map_err(|e| e.to_string())?;
    let ws = Ws::new(
        &ws_s.url,
        token,
        std::time::Duration::from_secs(ws_s.timeout),
    )
    .map_err(|e| e.to_string())?;
    let keepalive = || {};
    let cli = Cli::new(cli_s, &keepalive);
    // Where the agent writes its chunk files (Moodle's user must be able to read them).
    let dir = cfg.paths.state_dir.join("reports");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let stamp = base::clock::Clock::now(&base::clock::SystemClock);
    let prefix = format!("vsbench{stamp}");
    let opts = import::Options {
        chunk: ws_s.user_chunk.max(1),
        dry_run: false,
        role_id: 5,
    };
    let mut made = Vec::new();

    // 1. Moodle's upload CLI alone, on the whole file.
    let file_c = write_csv(&dir, &prefix, 'c', rows)?;
    made.push(file_c.clone());
    let t = Instant::now();
    let out = cli
        .run(
            moodle::users::upload::UPLOAD_SCRIPT,
            &moodle::users::upload::upload_args(&file_c),
        )
        .map_err(|e| e.to_string())?;
    let cli_s_elapsed = t.elapsed().as_secs_f64();
    let cli_created = out
        .after("Users created:")
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| {
            format!(
                "the upload CLI did not say how many users it created: {}",
                out.describe()
            )
        })?;

    // 2. The vessel's default way, through the upload CLI per chunk.
    let vessel_run =
        |letter: char, via: &import::Via<'_>| -> Result<(import::Summary, f64), String> {
            let file = write_csv(&dir, &prefix, letter, rows)?;
            let mut v = validate::validate(&file).map_err(|e| e.to_string())?;
            let mut progress = import::Progress::default();
            let t = Instant::now();
            let s = import::run(
                &ws,
                &file,
                &mut v,
                &opts,
                &mut progress,
                &mut |_| Ok(()),
                &mut import::Quiet,
                via,
            )
            .map_err(|e| e.to_string())?;
            Ok((s, t.elapsed().as_secs_f64()))
        };
    let via_cli = import::Via::UploadCli {
        cli: &cli,
        dir: &dir,
        workers: cli_s.upload_workers,
    };
    let (vc, vc_s) = vessel_run('v', &via_cli)?;
    made.push(dir.join(format!("{prefix}-v.csv")));
    // 2b. The same list again, as a shore re-sends a crew list: nothing should be written.
    let (again, again_s) = vessel_run('v', &via_cli)?;
    // 3. Through the web services.
    let (vw, vw_s) = vessel_run('w', &import::Via::WebService)?;
    made.push(dir.join(format!("{prefix}-w.csv")));

    let cleanup = if keep {
        "kept (--keep)".to_string()
    } else {
        let t = Instant::now();
        delete(&cli, &dir, &prefix, rows)?;
        format!("deleted in {:.1} s", t.elapsed().as_secs_f64())
    };
    for f in made {
        let _ = std::fs::remove_file(f);
    }
    let rate = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let ratio_cli = if vc_s > 0.0 {
        cli_s_elapsed / vc_s
    } else {
        0.0
    };
    let ratio_ws = if vw_s > 0.0 {
        cli_s_elapsed / vw_s
    } else {
        0.0
    };
    let v = serde_json::json!({
        "benchmark": "users-moodle",
        "moodle": ws_s.url,
        "rows": rows,
        "chunk": opts.chunk,
        "upload_cli_seconds": round(cli_s_elapsed),
        "upload_cli_users_created": cli_created,
        "upload_cli_users_per_s": round(rate(cli_created, cli_s_elapsed)),
        "vessel_cli_seconds": round(vc_s),
        "vessel_cli_users_created": vc.created,
        "vessel_cli_users_per_s": round(rate(vc.created, vc_s)),
        "vessel_cli_waiting_on_moodle_seconds": round(vc.moodle_seconds),
        "vessel_cli_ratio": round(ratio_cli),
        "vessel_again_seconds": round(again_s),
        "vessel_again_created": again.created,
        "vessel_again_updated": again.updated,
        "vessel_again_unchanged": again.unchanged,
        "vessel_ws_seconds": round(vw_s),
        "vessel_ws_users_created": vw.created,
        "vessel_ws_users_per_s": round(rate(vw.created, vw_s)),
        "vessel_ws_ratio": round(ratio_ws),
        "cleanup": cleanup,
    });
    let text = format!(
        "bench users against {} ({rows} new users each, chunks of {}):\n\
         \x20 Moodle's upload CLI alone      {:>7.1} s  {:>6.1} users/s  ({} created)\n\
         \x20 vessel, user_import = \"cli\"    {:>7.1} s  {:>6.1} users/s  ({} created)  ratio {:.2}\n\
         \x20 vessel, the same list again    {:>7.1} s  ({} created, {} updated, {} unchanged: not written)\n\
         \x20 vessel, user_import = \"webservice\" {:>4.1} s  {:>6.1} users/s  ({} created)  ratio {:.2}\n\
         \x20 (ratio = upload CLI time / vessel time; 1.0 or more: the vessel is at least as fast)\n\
         \x20 benchmark accounts {cleanup}\n",
        ws_s.url,
        opts.chunk,
        cli_s_elapsed,
        rate(cli_created, cli_s_elapsed),
        cli_created,
        vc_s,
        rate(vc.created, vc_s),
        vc.created,
        ratio_cli,
        again_s,
        again.created,
        again.updated,
        again.unchanged,
        vw_s,
        rate(vw.created, vw_s),
        vw.created,
        ratio_ws,
    );
    Ok((v, text))
}

/// Writes `DIR/PREFIX-L.csv`: `rows` new accounts of the shape a shore sends.
fn write_csv(dir: &Path, prefix: &str, letter: char, rows: u64) -> Result<PathBuf, String> {
    let path = dir.join(format!("{prefix}-{letter}.csv"));
    let mut text = String::from("username,firstname,lastname,email,idnumber,password\n");
    for i in 0..rows {
        text += &format!(
            "{prefix}{letter}{i},Bench,Seafarer{i},{prefix}{letter}{i}@bench.invalid,{prefix}-{letter}-{i},Bench#2026x\n"
        );
    }
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Deletes the benchmark's accounts through the upload CLI (`deleted = 1`).
fn delete(cli: &Cli<'_>, dir: &Path, prefix: &str, rows: u64) -> Result<(), String> {
    let path = dir.join(format!("{prefix}-delete.csv"));
    let mut text = String::from("username,deleted\n");
    for letter in ['c', 'v', 'w'] {
        for i in 0..rows {
            text += &format!("{prefix}{letter}{i},1\n");
        }
    }
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    let out = cli
        .run(
            "admin/tool/uploaduser/cli/uploaduser.php",
            &[
                format!("--file={}", path.display()),
                "--delimiter_name=comma".into(),
                "--encoding=UTF-8".into(),
                "--uutype=3".into(),
                "--uuallowdeletes=1".into(),
            ],
        )
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&path);
    let out = out?;
    match out.after("Users deleted:") {
        Some(_) => Ok(()),
        None => Err(format!(
            "the benchmark accounts ({prefix}...) could not be deleted: {}",
            out.describe()
        )),
    }
}
