//! The agent's commands on board: `agent` (the daemon, or `--once`), `capture`, `sync` and
//! `retry`; the last three take the journal's work lock and wait for the agent's current step.

use std::path::Path;
use std::sync::Arc;

use super::fail;
use base::clock::Clock;
use base::exit;
use vessel::agent::{Agent, AgentError};
use vessel::config::Config;

use super::load_config;

/// `vessel-sync retry COMMAND`.
pub fn retry(path: &Path, command: &str, clock: &dyn base::clock::Clock) -> i32 {
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

/// `vessel-sync agent [--once]`: the daemon, or one round of work.
pub fn agent(path: &Path, once: bool, clock: Arc<dyn Clock>) -> i32 {
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

/// `vessel-sync capture`: progress read from Moodle's database now.
pub fn capture(path: &Path, json: bool, clock: Arc<dyn Clock>) -> i32 {
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
            if !print_json(json, &r) {
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

/// `vessel-sync sync`: one sync cycle with shore now.
pub fn sync(path: &Path, json: bool, clock: Arc<dyn Clock>) -> i32 {
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
            if !print_json(json, &r) {
                println!(
                    "sync: {} batch(es) built, {} exchange(s), acknowledged up to batch {}, {} bundle(s) downloaded",
                    r.built, r.exchanges, r.acked_seq, r.downloaded
                );
                if r.link.connections > 0 {
                    println!(
                        "link: {} bytes sent, {} received, {} round trip(s){}",
                        r.link.up,
                        r.link.down,
                        r.link.round_trips,
                        if r.link.resumed > 0 {
                            " (TLS session resumed)"
                        } else {
                            ""
                        }
                    );
                }
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

/// Prints `r` as one line of JSON when `json` is asked for; whether it did.
fn print_json(json: bool, r: &impl serde::Serialize) -> bool {
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    }
    json
}
