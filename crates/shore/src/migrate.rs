//! `shore migrate --from sqlite`: moves an existing shore from its SQLite file to the
//! PostgreSQL database `[store]` names, without losing a record (see [`crate::store`]'s
//! `copy_from`); the SQLite file is left as it was, as a fallback.

use std::path::{Path, PathBuf};

use crate::ShoreConfig;
use crate::config::StoreBackend;
use crate::error::{Error, Result};
use crate::store::ShoreStore;

/// What the migration copied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Migrated {
    /// The SQLite file copied from.
    pub from: PathBuf,
    /// Rows per table, each counted on both sides.
    pub tables: Vec<(String, u64)>,
}

/// Copies `from` (default `STATE_DIR/shore.db`) into the configured PostgreSQL store.
pub fn from_sqlite(cfg: &ShoreConfig, from: Option<&Path>, now: i64) -> Result<Migrated> {
    let from = from.map_or_else(|| cfg.database(), Path::to_path_buf);
    if cfg.store.backend != StoreBackend::Postgres {
        return Err(Error::Config(format!(
            "{}: [store] backend is not \"postgres\": set backend = \"postgres\", url and password_file first (packaging/shore.toml.example), then migrate",
            cfg.path.display()
        )));
    }
    if !from.is_file() {
        return Err(Error::Config(format!(
            "{}: no SQLite shore database there (name it with --path)",
            from.display()
        )));
    }
    let src = ShoreStore::open(&from)?;
    let mut dst = cfg.open()?;
    let copied = dst.copy_from(&src)?;
    let rows: u64 = copied.tables.iter().map(|(_, n)| n).sum();
    dst.audit(
        &crate::operator(),
        "migrate",
        &format!("{rows} rows from {}", from.display()),
        now,
    )?;
    Ok(Migrated {
        from,
        tables: copied.tables,
    })
}
