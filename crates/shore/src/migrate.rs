//! `shore migrate --from sqlite`: moves an existing shore from its SQLite file to the
//! PostgreSQL database `[store]` names, without losing a record (see [`crate::store`]'s
//! `copy_from`); the SQLite file is left as it was, as a fallback.

use std::path::Path;

use crate::ShoreConfig;
use crate::config::StoreBackend;
use crate::store::ShoreStore;

/// Copies `from` (default `STATE_DIR/shore.db`) into the configured PostgreSQL store.
pub fn from_sqlite(cfg: &ShoreConfig, from: Option<&Path>, json: bool, now: i64) -> i32 {
    let from = from.map_or_else(|| cfg.database(), Path::to_path_buf);
    if cfg.store.backend != StoreBackend::Postgres {
        eprintln!(
            "error: {}: [store] backend is not \"postgres\": set backend = \"postgres\", url and password_file first (packaging/shore.toml.example), then migrate",
            cfg.path.display()
        );
        return base::exit::CONFIG;
    }
    if !from.is_file() {
        eprintln!(
            "error: {}: no SQLite shore database there (name it with --path)",
            from.display()
        );
        return base::exit::CONFIG;
    }
    let run = || -> Result<crate::store::Copied, String> {
        let src = ShoreStore::open(&from).map_err(|e| e.to_string())?;
        let mut dst = cfg.open()?;
        let copied = dst.copy_from(&src).map_err(|e| e.to_string())?;
        let rows: u64 = copied.tables.iter().map(|(_, n)| n).sum();
        dst.audit(
            &crate::forward::operator(),
            "migrate",
            &format!("{rows} rows from {}", from.display()),
            now,
        )
        .map_err(|e| e.to_string())?;
        Ok(copied)
    };
    match run() {
        Ok(c) => {
            if json {
                let v = serde_json::json!({"from": from, "tables": c.tables});
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                for (t, n) in &c.tables {
                    println!("{t:<20} {n:>10} rows");
                }
                println!(
                    "copied {} into PostgreSQL, every table counted on both sides; {} is left as it was",
                    from.display(),
                    from.display()
                );
            }
            base::exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            base::exit::FAILURE
        }
    }
}
