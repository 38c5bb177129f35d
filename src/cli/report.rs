//! Renders what the operator reads on board: `status` (gathered by [`vessel::status`]),
//! `audit`, `bundle inspect` and the `--once` summary; picks their exit codes.

use std::io::Write;
use std::path::Path;

use base::clock::{Clock, format_age, format_time};
use base::exit;
use base::text::clean;
use vessel::agent::Report;
use vessel::config::Config;
use vessel::inbox::Admitted;
use vessel::status::{KeyLine, ProgressStatus, TrustStatus, gather};
use vessel::store::Store;

fn print_trust(t: &TrustStatus) {
    let ids = |v: &[KeyLine]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter()
                .map(|k| format!("{} ({})", k.key_id, k.name))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    println!(
        "trust:     root {}; listed {}",
        ids(&t.roots),
        ids(&t.listed)
    );
    for c in &t.certified {
        let state = if c.revoked {
            "REVOKED"
        } else if c.expired {
            "EXPIRED"
        } else {
            "trusted"
        };
        println!(
            "  {state:<8} operator {} (key {}) may sign {} for {} until {} ({})",
            c.name,
            c.key_id,
            c.may_sign.join(", "),
            c.recipients.join(", "),
            c.not_after,
            c.source
        );
    }
    for r in &t.revoked {
        println!(
            "  REVOKED  key {} by {} at {}: {}",
            r.key_id,
            r.by_command,
            format_time(r.revoked_at),
            r.reason
        );
    }
    if let Some(k) = &t.signing_key {
        println!("vessel key: {k}");
    }
    if let Some(p) = &t.rotation_pending {
        println!(
            "  rotation to key {} from batch {}: waiting for shore to acknowledge that batch",
            p.key_id, p.from_seq
        );
    }
}

/// `vessel-sync status`.
pub fn status(cfg: &Config, clock: &dyn Clock, json: bool) -> i32 {
    let s = match gather(cfg, clock) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vessel-sync: {e}");
            return exit::IOERR;
        }
    };
    if json {
        return match serde_json::to_string_pretty(&s) {
            Ok(text) => {
                println!("{text}");
                exit::OK
            }
            Err(e) => {
                eprintln!("vessel-sync: {e}");
                exit::SOFTWARE
            }
        };
    }
    let now = clock.now();
    let count =
        |m: &std::collections::BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    println!(
        "vessel {}   agent {}   ({})",
        s.vessel,
        if s.agent_running {
            "running"
        } else {
            "NOT running"
        },
        s.now
    );
    println!(
        "bundles:   {} done, {} failed, {} ready, {} waiting for a missing sequence",
        count(&s.journal.bundles, "done"),
        count(&s.journal.bundles, "failed"),
        count(&s.journal.bundles, "ready"),
        count(&s.journal.bundles, "waiting")
    );
    println!(
        "commands:  {} done, {} failed, {} waiting, {} running, {} superseded, {} duplicate",
        count(&s.journal.commands, "done"),
        count(&s.journal.commands, "failed"),
        count(&s.journal.commands, "waiting"),
        count(&s.journal.commands, "running"),
        count(&s.journal.commands, "superseded"),
        count(&s.journal.commands, "duplicate")
    );
    for g in &s.journal.gaps {
        println!(
            "WAITING:   {} bundle(s) from issuer {} for {:?} wait for missing sequence {} (for {})",
            g.waiting,
            g.issuer,
            g.recipient,
            g.missing,
            format_age(now - g.since)
        );
    }
    for g in &s.journal.skipped {
        let which = if g.first == g.last {
            format!("sequence {}", g.first)
        } else {
            format!("sequences {} to {}", g.first, g.last)
        };
        println!(
            "skipped:   {which} from {} for {:?} never arrived (given up {})",
            clean(&g.issuer),
            clean(&g.recipient),
            format_time(g.at)
        );
    }
    for c in &s.journal.held {
        let when = c
            .next_attempt_at
            .map(|t| format!(", next attempt {}", format_time(t)))
            .unwrap_or_default();
        println!(
            "{:<10} {} {} (bundle {}, attempt {}{when}): {}",
            format!("{}:", c.state.as_str().to_uppercase()),
            clean(&c.kind),
            clean(&c.cmd_id),
            clean(&c.bundle_id),
            c.attempts,
            clean(c.reason.as_deref().unwrap_or(""))
        );
        if let Some(i) = s.learner_impact.iter().find(|i| i.command_id == c.cmd_id) {
            let oldest = i
                .oldest_unacknowledged_age_s
                .map(|a| format!(", oldest {}", format_age(a)))
                .unwrap_or_default();
            println!(
                "  impact:  {}: {} learner(s) have progress in it on board; {} record(s) not yet acknowledged by shore{oldest}",
                i.course, i.learners_with_progress, i.unacknowledged_records
            );
        }
    }
    if !s.inbox_pending.is_empty() {
        println!(
            "inbox:     {} file(s) not yet taken: {}",
            s.inbox_pending.len(),
            clean(&s.inbox_pending.join(", "))
        );
    }
    println!(
        "quarantine: {} file(s) in {} (each with a .reason.txt); {} duplicate bundle(s) ignored",
        s.quarantine_files,
        cfg.paths.quarantine.display(),
        s.duplicates_ignored
    );
    for r in &s.recent_rejections {
        println!(
            "  {}  {}: {}",
            format_time(r.at),
            r.outcome,
            clean(&r.detail)
        );
    }
    print_trust(&s.trust);
    println!(
        "content:   {} course file(s) kept, {:.1} of {:.1} MB{}",
        s.content.files,
        s.content.bytes as f64 / 1e6,
        s.content.limit_bytes as f64 / 1e6,
        if s.content.files_asked_of_shore > 0 {
            format!(
                "; {} file(s) asked of shore for a course sent by content",
                s.content.files_asked_of_shore
            )
        } else {
            String::new()
        }
    );
    let maps: Vec<String> = s.mappings.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "mappings:  {}",
        if maps.is_empty() {
            "none".into()
        } else {
            maps.join(", ")
        }
    );
    match &s.outbox_ack {
        Some(a) => println!(
            "shore ack: outbox acknowledged up to sequence {} ({})",
            a.acked_seq,
            format_time(a.updated_at)
        ),
        None => println!("shore ack: none received yet"),
    }
    print_progress(&s.progress, now);
    exit::OK
}

fn budget(used: u64, limit: u64, cost: Option<f64>, currency: &str) -> String {
    let cost = cost
        .map(|c| format!(", {c:.3} {currency}").trim_end().to_string())
        .unwrap_or_default();
    if limit == 0 {
        format!("{used} bytes{cost} (no limit)")
    } else {
        format!(
            "{used} of {limit} bytes{cost} ({}%)",
            used.saturating_mul(100) / limit.max(1)
        )
    }
}

fn print_progress(p: &ProgressStatus, now: i64) {
    let o = &p.outbox;
    println!(
        "progress:  {} record(s) not yet acknowledged by shore ({} in {} batch(es), {} bytes){}",
        o.records,
        o.batched,
        o.batches,
        o.batch_bytes,
        p.oldest_unacknowledged_age_s
            .map(|a| format!("; oldest captured {} ago", format_age(a)))
            .unwrap_or_default()
    );
    println!(
        "           last acknowledgement: {}",
        match o.acked_at {
            Some(t) => format!(
                "batch {} at {} ({} ago)",
                o.acked_seq,
                format_time(t),
                format_age(now - t)
            ),
            None => "none yet".into(),
        }
    );
    println!(
        "uplink:    {}; last contact {}; next attempt {}{}",
        p.uplink_mode,
        p.last_contact.as_deref().unwrap_or("never"),
        p.next_attempt
            .as_deref()
            .unwrap_or("at the agent's next cycle"),
        p.next_attempt_reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    if let Some(e) = &p.permanent_error {
        println!("STOPPED:   {e}; fix it ashore or in [uplink], then restart the agent");
    } else if let Some(e) = &p.last_error {
        println!("last error: {e}");
    }
    println!(
        "link cost: today {}; this month {}",
        budget(p.bytes_today, p.daily_budget, p.cost_today, &p.currency),
        budget(
            p.bytes_this_month,
            p.monthly_budget,
            p.cost_this_month,
            &p.currency
        )
    );
    if p.capture_configured {
        println!(
            "capture:   last {}{}",
            p.last_capture.as_deref().unwrap_or("never"),
            p.last_capture_rows
                .map(|n| format!(" ({n} rows read)"))
                .unwrap_or_default()
        );
        if let Some(e) = &p.capture_error {
            println!("CAPTURE FAILING: {e}");
        }
    } else {
        println!("capture:   not configured (no [moodle] section)");
    }
    if o.quarantined > 0 {
        println!(
            "progress quarantine: {} change(s) cannot be keyed yet (kept, retried at every capture):",
            o.quarantined
        );
        for q in &p.quarantine {
            println!(
                "  {} user id {} object {} = {}: {}",
                q.kind, q.userid, q.objid, q.value, q.reason
            );
        }
    }
}

/// `vessel-sync audit`.
pub fn audit(cfg: &Config, json: bool, csv: bool, since_id: i64) -> i32 {
    let store = match Store::open_readonly(&cfg.paths.database()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vessel-sync: {e}");
            return exit::IOERR;
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = if csv {
        let mut w = csv::Writer::from_writer(&mut out);
        let header = w
            .write_record([
                "id",
                "time",
                "actor",
                "bundle_id",
                "command_id",
                "event",
                "outcome",
                "detail",
            ])
            .map_err(std::io::Error::other);
        let r = store.for_each_audit(since_id, None, |e| {
            let row = [
                e.id.to_string(),
                format_time(e.at),
                e.actor,
                e.bundle_id.unwrap_or_default(),
                e.command_id.unwrap_or_default(),
                e.event,
                e.outcome,
                e.detail,
            ];
            w.write_record(row.iter().map(|c| base::csvrow::csv_safe(c)))
                .map_err(std::io::Error::other)
        });
        r.map(|r| header.and(r).and_then(|()| w.flush()))
    } else {
        store.for_each_audit(since_id, None, |e| {
            if json {
                let line = serde_json::to_string(&e).map_err(std::io::Error::other)?;
                writeln!(out, "{line}")
            } else {
                writeln!(
                    out,
                    "{}  {:<18} {:<12} {:<16} {}{}",
                    format_time(e.at),
                    e.event,
                    e.outcome,
                    clean(&e.actor),
                    e.bundle_id
                        .map(|b| format!("[{}] ", clean(&b)))
                        .unwrap_or_default(),
                    clean(&e.detail)
                )
            }
        })
    };
    let result = result.map(|r| r.and_then(|()| out.flush()));
    match result {
        Ok(Ok(())) => exit::OK,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Ok(Err(e)) => {
            eprintln!("vessel-sync: writing the audit trail: {e}");
            exit::IOERR
        }
        Err(e) => {
            eprintln!("vessel-sync: {e}");
            exit::IOERR
        }
    }
}

/// `vessel-sync bundle inspect`.
pub fn inspect(path: &Path, json: bool) -> i32 {
    let m = match wire::envelope::peek_manifest(path, &wire::envelope::Limits::default()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("vessel-sync: {}: {e}", path.display());
            return exit::DATAERR;
        }
    };
    if json {
        match serde_json::to_string_pretty(&m) {
            Ok(t) => println!("{t}"),
            Err(e) => {
                eprintln!("vessel-sync: {e}");
                return exit::SOFTWARE;
            }
        }
        return exit::OK;
    }
    println!(
        "bundle     {}  (NOT verified: use 'vessel-sync bundle verify' for that)",
        clean(&m.id)
    );
    println!("format     {} ({:?})", m.format, m.kind);
    println!("issuer     {} (sender {:?})", clean(&m.issuer), m.sender);
    if let Some(c) = &m.certificate {
        println!("certified  {}", c.body.summary());
    }
    if let Some(p) = &m.previous {
        println!("previous   {p}");
    }
    if let Some(r) = &m.key_rotation {
        println!(
            "rotation   key {} replaces {} from batch {}",
            r.body.new_key_id, r.body.old_key, r.body.from_sequence
        );
    }
    println!("recipient  {:?}   sequence {}", m.recipient, m.sequence);
    println!("created    {}", clean(&m.created));
    if let Some(nb) = &m.not_before {
        println!("not before {nb}");
    }
    if let Some(e) = &m.expires {
        println!("expires    {e}");
    }
    println!("commands   {}", m.commands.len());
    for c in &m.commands {
        let args = serde_json::Value::Object(c.args.clone());
        println!(
            "  - {} {}  args {}  files {:?}",
            clean(&c.kind),
            clean(&c.id),
            args,
            c.files
        );
    }
    println!("files      {}", m.files.len());
    for f in &m.files {
        println!("  - {}  {} bytes  sha256 {}", f.name, f.size, f.sha256);
    }
    exit::OK
}

/// The `--once` summary.
pub fn print_pass(r: &Report) {
    for (name, what) in &r.files {
        match what {
            Admitted::Journaled { id, waiting: false } => {
                println!("accepted     {name} (bundle {id})")
            }
            Admitted::Journaled { id, waiting: true } => println!(
                "waiting      {name} (bundle {id}) arrived early; see 'vessel-sync status'"
            ),
            Admitted::Duplicate(id) => {
                println!("duplicate    {name} (bundle {id} was already received; ignored)")
            }
            Admitted::Recovered(id) => {
                println!("recovered    {name} (bundle {id}, admission finished after a restart)")
            }
            Admitted::Quarantined { code, to } => println!(
                "QUARANTINED  {name} ({code}); reason in {}.reason.txt",
                to.display()
            ),
            Admitted::LeftForLater(e) => println!("left         {}: {}", clean(name), clean(e)),
        }
    }
    for line in &r.skipped {
        println!("skipped      {line}");
    }
    for (id, kind, state, note) in &r.commands {
        println!("{:<12} {kind} {id}: {note}", state.as_str());
    }
    for p in &r.arriving {
        println!(
            "arriving     {} (still being written; taken once unchanged)",
            p.display()
        );
    }
    if let Some(c) = &r.capture {
        println!(
            "capture      {} progress rows read: {} changed, {} queued for shore, {} echo(es) of imported progress skipped, {} quarantined, {} released",
            c.rows, c.changes, c.queued, c.echoes, c.quarantined, c.released
        );
    }
    if let Some(s) = &r.sync {
        println!(
            "sync         {} batch(es) built, {} exchange(s) ({} bytes), shore acknowledged up to batch {}, {} bundle(s) fetched{}",
            s.built,
            s.exchanges,
            s.link.bytes(),
            s.acked_seq,
            s.downloaded,
            s.held
                .as_deref()
                .map(|h| format!("; held: {h}"))
                .unwrap_or_default()
        );
    }
    if r.files.is_empty()
        && r.commands.is_empty()
        && r.arriving.is_empty()
        && r.skipped.is_empty()
        && r.capture.is_none()
        && r.sync.is_none()
    {
        println!("nothing to do");
    }
}
