//! `set_mapping`: legacy training-system ids mapped to Moodle keys, from a CSV file.
//!
//! The CSV has a header row with the columns `kind,legacy_id,moodle_key` and, optionally,
//! `course` (in any order; a UTF-8 byte-order mark is tolerated). `kind` is `category`, `course`
//! or `activity`; `moodle_key` is the category idnumber, the course idnumber (or shortname), or
//! the activity idnumber; activities also name their course in `course`.
//!
//! Every row is validated before anything is stored: if any row is bad, nothing is written, the
//! command fails, and a report `{row, field, value, message}` per problem is written to
//! `STATE_DIR/reports/COMMAND_ID.mapping-report.json` (and summarised in the failure reason).
//! Rows are numbered as a spreadsheet shows them (the header is row 1). When the bundle arrived
//! late, rows that a newer sequence of the same stream already set are left as they are.

use std::collections::HashMap;
use std::path::Path;

use super::lookup::{CourseInfo, call, connect, course_info};
use super::{Command, Ctx, Journal};
use crate::store::{CommandOutcome, MappingWrite, Origin, Result};
use moodle::ws::Params;

/// The `set_mapping` command.
pub struct SetMapping;

pub use base::csvrow::RowError;
use base::csvrow::bad;

/// A valid row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Row number (header = 1).
    pub row: u64,
    /// Kind.
    pub kind: String,
    /// Legacy id.
    pub legacy_id: String,
    /// Moodle key.
    pub moodle_key: String,
    /// Course key.
    pub course: String,
}

const KINDS: [&str; 3] = ["category", "course", "activity"];

fn check_text(row: u64, field: &str, value: &str, max: usize, errors: &mut Vec<RowError>) {
    if value.is_empty() {
        errors.push(bad(row, field, value, "is empty"));
    } else if value.chars().count() > max {
        errors.push(bad(
            row,
            field,
            value,
            &format!("is longer than {max} characters"),
        ));
    } else if value.chars().any(char::is_control) {
        errors.push(bad(
            row,
            field,
            value,
            "contains a control character (tab, line break ...)",
        ));
    }
}

/// Validates a mapping CSV, calling `each` for every valid row (in order) only when the whole
/// file is valid. Streams the file twice; memory holds only the duplicate-detection keys.
pub fn validate(path: &Path, mut each: impl FnMut(&Row)) -> std::io::Result<Vec<RowError>> {
    let errors = pass(path, &mut |_| {})?;
    if errors.is_empty() {
        pass(path, &mut each)?;
    }
    Ok(errors)
}

fn pass(path: &Path, each: &mut dyn FnMut(&Row)) -> std::io::Result<Vec<RowError>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(std::io::Error::other)?;
    let mut errors = Vec::new();
    let mut records = reader.byte_records();
    let header = match records.next() {
        None => {
            return Ok(vec![bad(
                1,
                "(header)",
                "",
                "the file is empty: expected a header row kind,legacy_id,moodle_key[,course]",
            )]);
        }
        Some(Err(e)) => return Ok(vec![bad(1, "(header)", "", &format!("unreadable: {e}"))]),
        Some(Ok(h)) => h,
    };
    let names = base::csvrow::header_names(&header);
    let col = |n: &str| names.iter().position(|c| c == n);
    let (Some(ck), Some(cl), Some(cm)) = (col("kind"), col("legacy_id"), col("moodle_key")) else {
        return Ok(vec![bad(
            1,
            "(header)",
            &names.join(","),
            "the header must name the columns kind, legacy_id and moodle_key (and optionally course)",
        )]);
    };
    let cc = col("course");
    for unknown in names
        .iter()
        .filter(|n| !["kind", "legacy_id", "moodle_key", "course"].contains(&n.as_str()))
    {
        errors.push(bad(
            1,
            "(header)",
            unknown,
            "unknown column; allowed: kind, legacy_id, moodle_key, course",
        ));
    }
    let mut first_seen: HashMap<(String, String), u64> = HashMap::new();
    for rec in records {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let row = e.position().map_or(0, |p| p.line());
                errors.push(bad(row, "(row)", "", &format!("unreadable CSV: {e}")));
                continue;
            }
        };
        let row = rec.position().map_or(0, |p| p.line());
        if rec.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue;
        }
        if rec.len() != names.len() {
            errors.push(bad(
                row,
                "(row)",
                "",
                &format!("has {} fields, the header has {}", rec.len(), names.len()),
            ));
            continue;
        }
        let mut field = |i: Option<usize>, name: &str| -> Option<String> {
            let raw = i.and_then(|i| rec.get(i)).unwrap_or(b"");
            match std::str::from_utf8(raw) {
                Ok(s) => Some(s.trim().to_string()),
                Err(_) => {
                    errors.push(bad(
                        row,
                        name,
                        &String::from_utf8_lossy(raw),
                        "is not valid UTF-8 (save the file as UTF-8)",
                    ));
                    None
                }
            }
        };
        let (Some(kind), Some(legacy), Some(key), Some(course)) = (
            field(Some(ck), "kind"),
            field(Some(cl), "legacy_id"),
            field(Some(cm), "moodle_key"),
            field(cc, "course"),
        ) else {
            continue;
        };
        let before = errors.len();
        let kind_l = kind.to_ascii_lowercase();
        if !KINDS.contains(&kind_l.as_str()) {
            errors.push(bad(
                row,
                "kind",
                &kind,
                "must be category, course or activity",
            ));
        }
        check_text(row, "legacy_id", &legacy, 255, &mut errors);
        check_text(row, "moodle_key", &key, 100, &mut errors);
        match kind_l.as_str() {
            "activity" => check_text(row, "course", &course, 255, &mut errors),
            "category" | "course" if !course.is_empty() => {
                errors.push(bad(
                    row,
                    "course",
                    &course,
                    "only activity rows name a course; leave it empty",
                ));
            }
            _ => {}
        }
        if errors.len() == before {
            if let Some(first) = first_seen.insert((kind_l.clone(), legacy.clone()), row) {
                errors.push(bad(
                    row,
                    "legacy_id",
                    &legacy,
                    &format!("duplicate {kind_l} legacy_id (first on row {first})"),
                ));
                continue;
            }
            each(&Row {
                row,
                kind: kind_l,
                legacy_id: legacy,
                moodle_key: key,
                course,
            });
        }
    }
    Ok(errors)
}

impl Command for SetMapping {
    fn kind(&self) -> &'static str {
        "set_mapping"
    }

    fn changes_moodle(&self) -> bool {
        false
    }

    fn run(&self, ctx: &Ctx<'_>, j: &mut Journal<'_>) -> Result<CommandOutcome> {
        let [(name, path)] = ctx.files.as_slice() else {
            return Ok(CommandOutcome::Failed(format!(
                "set_mapping takes exactly one CSV file, got {}",
                ctx.files.len()
            )));
        };
        let origin = Origin {
            issuer: &ctx.cmd.issuer,
            recipient: &ctx.cmd.recipient,
            sequence: ctx.cmd.sequence,
            command_id: &ctx.cmd.cmd_id,
        };
        let mut valid = Vec::new();
        let errors = match validate(path, |r| valid.push(r.clone())) {
            Ok(e) => e,
            Err(e) => return Ok(CommandOutcome::Failed(format!("cannot read {name}: {e}"))),
        };
        if !errors.is_empty() {
            let report = self.write_report(ctx, &errors);
            let shown: Vec<String> = errors
                .iter()
                .take(5)
                .map(|e| format!("row {} {} {:?}: {}", e.row, e.field, e.value, e.message))
                .collect();
            return Ok(CommandOutcome::Failed(format!(
                "{} problem(s) in {name}; nothing was stored. {}{}. Full report: {report}",
                errors.len(),
                shown.join("; "),
                if errors.len() > 5 { "; ..." } else { "" },
            )));
        }
        // Moodle is asked before the journal is touched: the mappings and the command's outcome
        // are one transaction (exactly once), and no lock is held while Moodle answers.
        let drift = self.drift(ctx, &valid);
        let (mut applied, mut superseded) = (0u64, 0u64);
        for r in &valid {
            let write = MappingWrite {
                kind: &r.kind,
                legacy_id: &r.legacy_id,
                moodle_key: &r.moodle_key,
                course: &r.course,
            };
            if j.with(|tx| tx.upsert_mapping(&write, origin, ctx.now))? {
                applied += 1;
            } else {
                superseded += 1;
            }
        }
        let mut note = format!(
            "{applied} mapping(s) stored from {name}, {superseded} left as a newer sequence set them"
        );
        note.push_str(&drift);
        Ok(if applied == 0 && superseded > 0 {
            CommandOutcome::Superseded(note)
        } else {
            CommandOutcome::Done(note)
        })
    }
}

impl SetMapping {
    /// Checks the mappings against the local Moodle (when its web services are configured):
    /// every mapped category, course and activity must exist. Drift is reported per row in
    /// `reports/ID.mapping-drift.json`; the mappings are stored either way (a course may arrive
    /// later by `restore_course`). Returns the sentence for the note.
    fn drift(&self, ctx: &Ctx<'_>, rows: &[Row]) -> String {
        if ctx.moodle_ws.is_none() {
            return String::new();
        }
        let found = match existing(ctx, rows) {
            Ok(f) => f,
            Err(why) => return format!("; not checked against Moodle: {why}"),
        };
        if found.is_empty() {
            return "; every mapped category, course and activity exists on this Moodle".into();
        }
        let report = self.write_named_report(ctx, "mapping-drift", &found);
        let f = &found[0];
        format!(
            "; {} row(s) name what this Moodle lacks (first: row {} {} {:?}: {}); report: {report}",
            found.len(),
            f.row,
            f.field,
            f.value,
            f.message
        )
    }

    fn write_report(&self, ctx: &Ctx<'_>, errors: &[RowError]) -> String {
        self.write_named_report(ctx, "mapping-report", errors)
    }

    fn write_named_report(&self, ctx: &Ctx<'_>, what: &str, errors: &[RowError]) -> String {
        let safe = ctx.safe_id();
        let path = ctx.reports_dir.join(format!("{safe}.{what}.json"));
        let written = std::fs::create_dir_all(ctx.reports_dir).and_then(|()| {
            let body = serde_json::to_vec_pretty(errors).map_err(std::io::Error::other)?;
            base::fsutil::atomic_write(&path, &body)
        });
        match written {
            Ok(()) => path.display().to_string(),
            Err(e) => format!("(could not be written to {}: {e})", path.display()),
        }
    }
}

/// The mapping rows whose category, course or activity this Moodle does not have (drift), for
/// `set_mapping`'s check. Err: Moodle could not be asked.
fn existing(ctx: &Ctx<'_>, rows: &[Row]) -> std::result::Result<Vec<RowError>, String> {
    let why = |o: CommandOutcome| match o {
        CommandOutcome::Waiting { reason, .. } | CommandOutcome::Failed(reason) => reason,
        CommandOutcome::Done(r) | CommandOutcome::Superseded(r) => r,
    };
    let ws = connect(ctx).map_err(why)?;
    let mut courses: HashMap<String, Option<CourseInfo>> = HashMap::new();
    let mut drift = Vec::new();
    for r in rows {
        match r.kind.as_str() {
            "category" => {
                let p = Params::new()
                    .set("criteria[0][key]", "idnumber")
                    .set("criteria[0][value]", &r.moodle_key)
                    .set("addsubcategories", 0);
                let found = call(ctx, &ws, "core_course_get_categories", &p).map_err(why)?;
                if found.as_array().is_none_or(|a| a.is_empty()) {
                    drift.push(bad(
                        r.row,
                        "moodle_key",
                        &r.moodle_key,
                        "no category with this idnumber on this Moodle",
                    ));
                }
            }
            kind => {
                let course_key = if kind == "course" {
                    &r.moodle_key
                } else {
                    &r.course
                };
                if !courses.contains_key(course_key) {
                    let info = course_info(ctx, &ws, course_key).map_err(why)?;
                    courses.insert(course_key.clone(), info);
                }
                match courses.get(course_key) {
                    Some(Some(c))
                        if kind == "activity" && !c.activities.contains_key(&r.moodle_key) =>
                    {
                        drift.push(bad(
                            r.row,
                            "moodle_key",
                            &r.moodle_key,
                            &format!(
                                "no activity with this key in course {} on this Moodle",
                                c.key
                            ),
                        ));
                    }
                    Some(Some(_)) => {}
                    _ => {
                        let field = if kind == "course" {
                            "moodle_key"
                        } else {
                            "course"
                        };
                        drift.push(bad(
                            r.row,
                            field,
                            course_key,
                            "no course with this idnumber or shortname on this Moodle",
                        ));
                    }
                }
            }
        }
    }
    Ok(drift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(csv: &[u8]) -> (Vec<RowError>, Vec<Row>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.csv");
        std::fs::write(&p, csv).unwrap();
        let mut rows = Vec::new();
        let errs = validate(&p, |r| rows.push(r.clone())).unwrap();
        (errs, rows)
    }

    #[test]
    fn valid_file_with_bom_crlf_and_quoted_fields() {
        let (errs, rows) = run(b"\xEF\xBB\xBFkind,legacy_id,moodle_key,course\r\ncourse,LEG-1,ERM-110,\r\nactivity,\"LEG,2\",erm-quiz,ERM-110\r\n");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].legacy_id, "LEG,2");
    }

    #[test]
    fn every_bad_row_is_reported_and_no_row_is_passed_on() {
        let (errs, rows) = run(b"kind,legacy_id,moodle_key,course\ncourse,L1,ERM-110,\ncours,L2,X,\nactivity,L3,quiz1,\ncourse,L1,FIRE-201,\ncategory,C1,\xff\xfe,\ncourse,L9\n");
        assert!(rows.is_empty());
        let got: Vec<(u64, &str)> = errs.iter().map(|e| (e.row, e.field.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (3, "kind"),
                (4, "course"),
                (5, "legacy_id"),
                (6, "moodle_key"),
                (7, "(row)")
            ],
            "{errs:#?}"
        );
        assert_eq!(errs[0].value, "cours");
        assert!(errs[2].message.contains("first on row 2"));
    }
}
