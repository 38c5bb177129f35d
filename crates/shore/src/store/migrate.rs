//! `shore migrate --from sqlite`: every row of a SQLite shore copied into an empty PostgreSQL
//! one in a single transaction (all or nothing), records keeping their arrival positions so
//! that the forward and export watermarks stay where they were; then each table's rows are
//! counted on both sides.

use super::sql::{Backend, Value};
use super::{Result, ShoreStore};

/// The tables copied, in order. Leases are not copied: they belong to running receivers.
const TABLES: &[&str] = &[
    "vessels",
    "vessel_keys",
    "batches",
    "records",
    "queue",
    "content",
    "queue_content",
    "vessel_holds",
    "variants",
    "holds_cursor",
    "needs",
    "refusals",
    "shore_facts",
    "forwarded",
    "forward_held",
    "cloud_written",
    "cloud_map",
    "shore_audit",
    "retirements",
    "crew_sent",
    "vessel_commands",
    "vessel_history",
    "dashboard_sessions",
    "login_refusals",
];

/// Auto-numbered columns whose sequences continue after the copied rows.
const SERIALS: &[(&str, &str)] = &[
    ("records", "rowid"),
    ("queue", "id"),
    ("refusals", "id"),
    ("shore_audit", "id"),
];

/// Rows copied per table (equal on both sides, checked).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Copied {
    /// (table, rows).
    pub tables: Vec<(String, u64)>,
}

impl ShoreStore {
    /// Copies every row of `from` (a SQLite store) into this PostgreSQL store, which must not
    /// hold a vessel or a record yet.
    pub fn copy_from(&mut self, from: &ShoreStore) -> Result<Copied> {
        let mut src = from.db()?;
        let dst = self.db.get_mut();
        if src.backend() != Backend::Sqlite || dst.backend() != Backend::Postgres {
            return Err(dst.error("a migration copies a SQLite store into a PostgreSQL one"));
        }
        let held: (i64, i64) = dst.query_one(
            "SELECT (SELECT COUNT(*) FROM vessels), (SELECT COUNT(*) FROM records)",
            &[],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if held != (0, 0) {
            return Err(dst.error(format!(
                "it already holds {} vessels and {} records: migrate into an empty database (nothing was copied)",
                held.0, held.1
            )));
        }
        // SQLite's write lock held throughout: a receiver still running on the file cannot
        // store a batch that the copy would miss.
        src.transaction(|src| dst.transaction(|dst| {
            dst.lock("vessel-sync batches")?;
            let mut tables = Vec::new();
            for table in TABLES {
                let mut columns: Vec<String> = src.query(
                    &format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"),
                    &[],
                    |r| r.get(0),
                )?;
                if *table == "records" {
                    columns.push("rowid".into());
                }
                let list = columns.join(", ");
                let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
                let insert = format!(
                    "INSERT INTO {table}({list}) VALUES ({})",
                    marks.join(", ")
                );
                let mut n = 0u64;
                let mut failed = None;
                src.each(&format!("SELECT {list} FROM {table}"), &[], |row| {
                    let params: Vec<&dyn super::sql::ToValue> =
                        row.0.iter().map(|v| v as &dyn super::sql::ToValue).collect();
                    match dst.execute(&insert, &params) {
                        Ok(_) => {
                            n += 1;
                            Ok(())
                        }
                        Err(e) => {
                            let m = e.to_string();
                            failed = Some(e);
                            Err(m)
                        }
                    }
                })
                .map_err(|e| failed.take().unwrap_or(e))?;
                let there: u64 =
                    dst.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[], |r| {
                        r.get(0)
                    })?;
                if there != n {
                    return Err(dst.error(format!(
                        "{table}: copied {n} rows but PostgreSQL holds {there}; nothing was kept"
                    )));
                }
                tables.push((table.to_string(), n));
            }
            for (table, column) in SERIALS {
                dst.query_one(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), COALESCE(MAX({column}), 0) + 1, false) FROM {table}"
                    ),
                    &[],
                    |r| r.get::<Value>(0),
                )?;
            }
            Ok(Copied { tables })
        }))
    }
}
