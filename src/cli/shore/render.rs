//! Renders the shore's reports for a terminal (or JSON with `--json`) and picks the exit code
//! of a report that is itself a partial failure (a refused file, a pass that stopped early).

use std::path::Path;

use base::clock::{format_age, format_time};
use base::exit;
use base::text::clean;
use shore::Fleet;

/// A JSON document, pretty.
pub fn json(doc: serde_json::Value) -> i32 {
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    exit::OK
}

/// `shore vessel add`.
pub fn vessel_added(id: &str, key_id: String, token_out: &Path) -> i32 {
    println!(
        "vessel {id} registered (key {key_id}); its token is in {} (mode 0600): copy it to the vessel as [uplink] token_file",
        token_out.display()
    );
    exit::OK
}

/// `shore status` and `shore vessel list`.
pub fn fleet(fleet: Fleet) -> i32 {
    let Fleet {
        vessels: rows,
        forward,
        refusals,
        ..
    } = fleet;
    println!(
        "{:<16} {:>7} {:>10} {:>14} {:>14} {:>8} {:>10}  state",
        "VESSEL", "ACKED", "RECORDS", "LAST CONTACT", "OLDEST UNSENT", "OUTBOX", "DRAIN IN"
    );
    for r in &rows {
        let v = &r.vessel;
        let state = if v.revoked_at.is_some() {
            "revoked"
        } else if r.behind {
            "BEHIND"
        } else {
            "ok"
        };
        println!(
            "{:<16} {:>7} {:>10} {:>14} {:>14} {:>8} {:>10}  {state}",
            v.id,
            v.acked_seq,
            v.records,
            r.last_contact_age
                .as_deref()
                .map(|a| format!("{a} ago"))
                .unwrap_or_else(|| "never".into()),
            r.oldest_unsent_age.clone().unwrap_or_else(|| "-".into()),
            v.outbox_depth
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
            r.drain_secs.map(format_age).unwrap_or_else(|| "-".into()),
        );
        for h in &r.held_deletions {
            println!(
                "  {} holds a course deletion ({}): {}",
                v.id,
                clean(&h.command),
                clean(h.report.reason.as_deref().unwrap_or("waiting"))
            );
        }
    }
    if rows.is_empty() {
        println!(
            "(no vessels: add one with 'vessel-sync shore vessel add ID --pubkey FILE --token-out FILE')"
        );
    }
    for r in rows.iter().filter(|r| r.content_owed > 0) {
        println!(
            "content owed to {}: {} course file(s) it asked for are not kept ashore; push a bundle that carries them (built without --base)",
            r.vessel.id, r.content_owed
        );
    }
    if let Some(f) = &forward {
        let settled: u64 = f.outcomes.iter().map(|(_, n)| n).sum();
        println!(
            "cloud Moodle: {settled} of {} record(s) forwarded ({}), {} to go, {} held",
            f.records,
            f.outcomes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            f.pending,
            f.held.iter().map(|(_, n)| n).sum::<u64>()
        );
        match f.path.as_deref() {
            Some("plugin") => println!(
                "  through the companion plugin local_vesselsync: batches, each record with the time it was made"
            ),
            Some(_) => println!(
                "  through core web services: one record a call, each stamped with the time shore forwarded it; install local_vesselsync on the cloud for original times and batches (README, \"The companion plugin\")"
            ),
            None => {}
        }
        for (why, n) in &f.held {
            println!("  held: {n} record(s): {}", clean(why));
        }
    }
    for (at, v, c, m) in &refusals {
        println!(
            "refused {} from {v}: {}: {}",
            format_time(*at),
            clean(c),
            clean(m)
        );
    }
    exit::OK
}

/// `shore push`.
pub fn pushed(p: shore::push::Pushed) -> i32 {
    let mut note = String::new();
    if let Some(kept) = &p.content {
        note = format!(
            "; {} course content file(s), {} carried: each vessel is sent only those it does not hold",
            kept.listed, kept.carried
        );
        if kept.unknown > 0 {
            note.push_str(&format!(
                " ({} neither carried nor kept ashore: a vessel lacking them cannot be sent them; push a bundle that carries them)",
                kept.unknown
            ));
        }
    }
    for line in &p.crew {
        note.push_str(&format!("\n{line}"));
    }
    println!(
        "queued bundle {} ({} bytes) for {} as #{}; it is offered at the vessel's next sync{note}",
        p.bundle_id,
        p.bytes,
        if p.recipient == wire::envelope::manifest::FLEET {
            "every vessel".to_string()
        } else {
            format!("vessel {}", p.recipient)
        },
        p.queue_id
    );
    exit::OK
}

/// `shore ingest`: a line per file and per ack written; DATAERR when a file was refused.
pub fn ingested(r: shore::ingest::Ingested) -> i32 {
    use shore::ingest::FileOutcome;
    for (name, outcome) in &r.files {
        match outcome {
            FileOutcome::Stored { vessel, intake } => println!(
                "{name}: vessel {vessel} batch {} stored ({:?}); acknowledged up to {}",
                intake.seq, intake.stored, intake.acked_seq
            ),
            FileOutcome::Refused(why) => {
                println!("{name}: refused ({}): {}", why.code(), why.message())
            }
        }
    }
    for a in &r.acks {
        println!(
            "wrote {} (ack up to batch {} for {})",
            a.file.display(),
            a.acked_seq,
            a.vessel
        );
    }
    if r.refused() == 0 {
        exit::OK
    } else {
        exit::DATAERR
    }
}

/// `shore forward --conflicts`: CSV on standard output.
pub fn conflicts(rows: Vec<shore::forward::Conflict>) -> i32 {
    let mut w = csv::Writer::from_writer(std::io::stdout().lock());
    let mut write = || -> Result<(), csv::Error> {
        w.write_record([
            "vessel", "kind", "learner", "course", "activity", "value", "time", "outcome", "detail",
        ])?;
        for (t, o, d) in &rows {
            let r = &t.record;
            let row = [
                t.vessel.clone(),
                r.kind.name().to_string(),
                r.user.clone(),
                r.course.clone(),
                r.item.clone(),
                r.value.clone(),
                format_time(r.time),
                o.clone(),
                d.clone(),
            ];
            w.write_record(row.iter().map(|c| base::csvrow::csv_safe(c)))?;
        }
        w.flush()?;
        Ok(())
    };
    match write() {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::IOERR
        }
    }
}

/// `shore forward`: what the pass did; TEMPFAIL when the cloud stopped it early.
pub fn forwarded(
    (p, summary): (shore::forward::Pass, shore::store::ForwardSummary),
    json: bool,
) -> i32 {
    if let Some(why) = &p.busy {
        if json {
            self::json(serde_json::json!({"pass": p}));
        } else {
            println!("not forwarded now: {why}");
        }
        return exit::OK;
    }
    let n: u64 = p.outcomes.values().sum();
    if json {
        self::json(serde_json::json!({"pass": p, "summary": summary}));
    } else {
        let per_sec = if p.seconds > 0.0 {
            n as f64 / p.seconds
        } else {
            0.0
        };
        println!(
            "forwarded {n} record(s) in {:.1} s ({per_sec:.1}/s, {:.0}% of it waiting for the cloud Moodle): {}",
            p.seconds,
            if p.seconds > 0.0 {
                100.0 * p.moodle_seconds / p.seconds
            } else {
                0.0
            },
            p.outcomes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if p.released > 0 {
            println!("released from the hold: {}", p.released);
        }
        for (why, count) in &summary.held {
            println!("held: {count} record(s): {why}");
        }
        if summary.pending > 0 {
            println!(
                "still to forward: {} record(s) (run again, or let shore serve go on)",
                summary.pending
            );
        }
    }
    if let Some(why) = &p.stopped {
        eprintln!(
            "stopped early: the cloud Moodle cannot be reached or is busy: {why}; run again later (nothing is lost)"
        );
        return exit::TEMPFAIL;
    }
    exit::OK
}

/// `shore migrate`.
pub fn migrated(m: shore::migrate::Migrated, json: bool) -> i32 {
    if json {
        return self::json(serde_json::json!({"from": m.from, "tables": m.tables}));
    }
    for (t, n) in &m.tables {
        println!("{t:<20} {n:>10} rows");
    }
    println!(
        "copied {} into PostgreSQL, every table counted on both sides; {} is left as it was",
        m.from.display(),
        m.from.display()
    );
    exit::OK
}

/// `shore course retire`.
pub fn retired(course: &str, r: shore::course::Retired) -> i32 {
    println!("{course}: {}", r.cloud);
    for (v, bundle) in &r.queued {
        println!(
            "{course}: queued delete_course for {v} (bundle {bundle}): it deletes the course once shore has acknowledged its progress"
        );
    }
    if r.queued.is_empty() {
        println!("{course}: no vessel sent progress of it; name others with --vessel ID");
    }
    exit::OK
}

/// `shore course status`.
pub fn retirement(course: &str, rows: Vec<shore::store::Retirement>, as_json: bool) -> i32 {
    use shore::course::phase;
    if as_json {
        let vessels: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("phase".into(), phase(r).0.into());
                }
                v
            })
            .collect();
        return json(serde_json::json!({"course": course, "vessels": vessels}));
    }
    if rows.is_empty() {
        println!("{course}: not retired (run 'vessel-sync shore course retire {course}')");
        return exit::OK;
    }
    let num = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    println!(
        "{:<16} {:<22} {:<9} {:>8} {:>8} {:>8}  STATE",
        "VESSEL", "QUEUED", "BY", "ASHORE", "ON BOARD", "LEARNERS"
    );
    for r in &rows {
        let rep = r.reported.as_ref();
        println!(
            "{:<16} {:<22} {:<9} {:>8} {:>8} {:>8}  {}",
            r.vessel,
            format_time(r.queued_at),
            clean(&r.by),
            r.records,
            num(rep.and_then(|p| p.unacked_records)),
            num(rep.and_then(|p| p.learners)),
            clean(&phase(r).1),
        );
    }
    println!(
        "ASHORE: records of the course shore received from the vessel; ON BOARD: records still waiting there for acknowledgement, as last reported"
    );
    exit::OK
}
