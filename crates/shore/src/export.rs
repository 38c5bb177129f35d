//! `shore export`: the records not exported by an earlier run (or, with a time, every record
//! received since then, again) as formula-safe CSV, one row per record id. The export cursor
//! moves only once the file is safely in place: a run that failed exports the same again.

use std::path::Path;

use base::clock::{format_time, parse_time};
use wire::progress::Record;
use wire::progress::record::format_id;

use crate::ShoreConfig;
use crate::error::{Error, Result};

/// The CSV's columns.
pub const HEADER: [&str; 12] = [
    "vessel",
    "record_id",
    "kind",
    "learner",
    "course",
    "activity",
    "learner_legacy_id",
    "course_legacy_id",
    "activity_legacy_id",
    "value",
    "time",
    "received_at",
];

/// Writes the export to `out`; the number of records written.
pub fn export(cfg: &ShoreConfig, since: Option<&str>, out: &Path, now: i64) -> Result<u64> {
    let since_t = since
        .map(|since| {
            parse_time(since)
                .or_else(|| since.parse::<i64>().ok())
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "--since {since:?}: use RFC 3339 (2026-11-01T00:00:00Z) or Unix seconds"
                    ))
                })
        })
        .transpose()?;
    let db = cfg.open()?;
    let tmp = base::fsutil::temp_path(out);
    let file = std::fs::File::create(&tmp).map_err(Error::io(&tmp))?;
    let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
    let csv_err = |e: csv::Error| Error::Failed(format!("{}: {e}", tmp.display()));
    w.write_record(HEADER).map_err(csv_err)?;
    let mut failed = None;
    let mut row_out = |vessel: &str, id: &[u8], r: Record, at: i64| {
        let mut idb = [0u8; 16];
        if id.len() == 16 {
            idb.copy_from_slice(id);
        }
        let row = [
            vessel.to_string(),
            format_id(&idb),
            r.kind.name().to_string(),
            r.user,
            r.course,
            r.item,
            r.user_legacy,
            r.course_legacy,
            r.item_legacy,
            r.value,
            format_time(r.time),
            format_time(at),
        ];
        let safe: Vec<String> = row.iter().map(|c| base::csvrow::csv_safe(c)).collect();
        if let Err(e) = w.write_record(&safe) {
            failed.get_or_insert(e);
        }
    };
    let (n, cursor) = match since_t {
        Some(t) => (db.records_since(t, &mut row_out)?, None),
        None => {
            let (n, top) =
                db.records_after(db.export_cursor()?, |v, id, r, at, _| row_out(v, id, r, at))?;
            (n, Some(top))
        }
    };
    if let Some(e) = failed {
        return Err(csv_err(e));
    }
    let buf = w
        .into_inner()
        .map_err(|e| Error::Failed(format!("{}: {e}", tmp.display())))?;
    let file = buf
        .into_inner()
        .map_err(|e| Error::io(&tmp)(e.into_error()))?;
    file.sync_all().map_err(Error::io(&tmp))?;
    base::fsutil::commit_temp(&tmp, out).map_err(Error::io(out))?;
    // Only once the file is safely in place: a run that failed exports the same again.
    if let Some(top) = cursor {
        db.set_export_cursor(top)?;
    }
    let _ = db.audit(
        &crate::operator(),
        "export",
        &format!(
            "{n} record(s) to {}{}",
            out.display(),
            since
                .map(|s| format!(" (again, since {s})"))
                .unwrap_or_default()
        ),
        now,
    );
    Ok(n)
}
