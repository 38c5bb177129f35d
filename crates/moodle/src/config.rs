//! The `[moodle]` section of the agent's config: how the agent reaches its Moodle, through the
//! read-only database (`db_*`, [`DbSettings`]), the web services (`url`, `token_file`,
//! [`WsSettings`]) and the CLI scripts (`moodle_dir`, `php`, [`CliSettings`]). Each part is
//! optional: commands that need a missing part wait with the reason instead of failing.
//! `packaging/agent.toml.example` documents every key and default.

use std::path::PathBuf;

use base::tomlcheck::Walker;
use toml_edit::{Item, Table};

use crate::db::{DbSettings, DbType};

/// The whole `[moodle]` section; each part `None` when not configured.
#[derive(Debug, Clone, Default)]
pub struct MoodleSettings {
    /// Moodle's database (None: no capture configured).
    pub db: Option<DbSettings>,
    /// Moodle's web services (None: commands that change Moodle wait until configured).
    pub ws: Option<WsSettings>,
    /// Moodle's CLI scripts (None: course commands wait until configured).
    pub cli: Option<CliSettings>,
}

/// `[moodle]` web-service settings.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// The site's address (wwwroot).
    pub url: String,
    /// File holding the token.
    pub token_file: PathBuf,
    /// Seconds to wait for one reply.
    pub timeout: u64,
    /// Users per call in `upsert_users`.
    pub user_chunk: usize,
}

/// `[moodle]` CLI settings (backup, restore, delete of courses).
#[derive(Debug, Clone)]
pub struct CliSettings {
    /// Moodle's code root (holds `admin/cli/`).
    pub moodle_dir: PathBuf,
    /// The PHP binary.
    pub php: PathBuf,
    /// Words put before the php binary (e.g. `sudo -u www-data`), never a shell string.
    pub prefix: Vec<String>,
    /// Seconds one script may run.
    pub timeout: u64,
    /// Moodle's dataroot, to see CLI maintenance mode (`climaintenance.html`).
    pub dataroot: Option<PathBuf>,
    /// Where final backups go (default `STATE_DIR/backups`).
    pub backup_dir: Option<PathBuf>,
    /// Seconds final backups are kept.
    pub keep_backups: u64,
    /// `upsert_users` writes users through Moodle's upload CLI (`user_import = "cli"`, the
    /// default with `moodle_dir`) instead of the web services.
    pub upload_cli: bool,
    /// Upload-CLI runs at a time (`user_import_workers`, default 2): each takes its own chunk,
    /// so a multi-core Moodle host imports faster than one run of the CLI on the whole file.
    pub upload_workers: usize,
}

/// Reads the `[moodle]` section of `root`.
pub fn parse(w: &mut Walker<'_>, root: &Table) -> MoodleSettings {
    let moodle_t = w.sub(root, "moodle");
    if let Some(t) = moodle_t {
        w.only(
            t,
            "[moodle]",
            &[
                "db_type",
                "db_host",
                "db_port",
                "db_name",
                "db_user",
                "db_password_file",
                "prefix",
                "url",
                "token_file",
                "ws_timeout",
                "user_chunk",
                "moodle_dir",
                "php",
                "cli_prefix",
                "cli_timeout",
                "dataroot",
                "backup_dir",
                "keep_backups",
                "user_import",
                "user_import_workers",
            ],
        );
    }
    let moodle_ws = match w.string(moodle_t, "moodle", "url") {
        None => None,
        Some((url, span)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                w.push(span.clone(), format!("moodle.url {url:?}: the Moodle site's address (its wwwroot), starting with http:// or https://"));
            }
            if moodle_t.and_then(|t| t.get("token_file")).is_none() {
                w.push(span, "moodle.url needs moodle.token_file: a file holding the web-service token (mode 0640, readable by the agent's user)".into());
            }
            Some(WsSettings {
                url,
                token_file: w.path(moodle_t, "moodle", "token_file", PathBuf::new()),
                timeout: w.seconds(moodle_t, "moodle", "ws_timeout", 300),
                user_chunk: usize::try_from(w.count(moodle_t, "moodle", "user_chunk", 500))
                    .unwrap_or(500)
                    .clamp(1, 5000),
            })
        }
    };
    let moodle_db = match w.string(moodle_t, "moodle", "db_type") {
        None => None,
        Some((ty, span)) => {
            let db_type = match ty.as_str() {
                "postgres" | "pgsql" | "postgresql" => Some(DbType::Postgres),
                "mariadb" | "mysql" | "mysqli" => Some(DbType::MariaDb),
                _ => {
                    w.push(span, format!("moodle.db_type {ty:?}: use \"postgres\" or \"mariadb\" (also for MySQL)"));
                    None
                }
            };
            let default_port = if db_type == Some(DbType::MariaDb) {
                3306
            } else {
                5432
            };
            let port = w.count(moodle_t, "moodle", "db_port", default_port);
            let prefix = w
                .string(moodle_t, "moodle", "prefix")
                .map(|(s, _)| s)
                .unwrap_or_else(|| "mdl_".into());
            if !prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                w.push(moodle_t.and_then(|t| t.get("prefix")).and_then(Item::span), format!("moodle.prefix {prefix:?}: lower-case letters, digits and _ only (as in Moodle's config.php $CFG->prefix)"));
            }
            let password_file = moodle_t
                .and_then(|t| t.get("db_password_file"))
                .map(|_| w.path(moodle_t, "moodle", "db_password_file", PathBuf::new()));
            db_type.map(|db_type| DbSettings {
                db_type,
                host: w
                    .string(moodle_t, "moodle", "db_host")
                    .map(|(s, _)| s)
                    .unwrap_or_else(|| "localhost".into()),
                port: u16::try_from(port).unwrap_or(5432),
                name: w
                    .string(moodle_t, "moodle", "db_name")
                    .map(|(s, _)| s)
                    .unwrap_or_else(|| "moodle".into()),
                user: w
                    .string(moodle_t, "moodle", "db_user")
                    .map(|(s, _)| s)
                    .unwrap_or_else(|| "vessel_sync".into()),
                password_file,
                prefix,
            })
        }
    };
    let moodle_cli = if moodle_t.and_then(|t| t.get("moodle_dir")).is_some() {
        let dir = w.path(moodle_t, "moodle", "moodle_dir", PathBuf::new());
        let span = moodle_t
            .and_then(|t| t.get("moodle_dir"))
            .and_then(Item::span);
        if !dir.join("admin/cli").is_dir() {
            w.push(span.clone(), format!("moodle.moodle_dir {}: no admin/cli/ in it; give Moodle's code root (the directory holding config.php and admin/)", dir.display()));
        }
        if moodle_ws.is_none() {
            w.push(span, "moodle.moodle_dir needs moodle.url and moodle.token_file too: the course commands look courses up through the web services".into());
        }
        let prefix: Vec<String> = w
            .strings(moodle_t, "moodle", "cli_prefix")
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        Some(CliSettings {
            moodle_dir: dir,
            php: w.path(moodle_t, "moodle", "php", PathBuf::from("/usr/bin/php")),
            prefix,
            timeout: w.seconds(moodle_t, "moodle", "cli_timeout", 3600),
            dataroot: moodle_t
                .and_then(|t| t.get("dataroot"))
                .map(|_| w.path(moodle_t, "moodle", "dataroot", PathBuf::new())),
            backup_dir: moodle_t
                .and_then(|t| t.get("backup_dir"))
                .map(|_| w.path(moodle_t, "moodle", "backup_dir", PathBuf::new())),
            keep_backups: w.seconds(moodle_t, "moodle", "keep_backups", 30 * 86_400),
            upload_cli: match w.string(moodle_t, "moodle", "user_import") {
                None => true,
                Some((v, _)) if v == "cli" => true,
                Some((v, _)) if v == "webservice" => false,
                Some((v, span)) => {
                    w.push(span, format!("moodle.user_import {v:?}: \"cli\" (Moodle's upload CLI, about 3x faster) or \"webservice\""));
                    true
                }
            },
            upload_workers: usize::try_from(w.count(moodle_t, "moodle", "user_import_workers", 2))
                .unwrap_or(2)
                .clamp(1, 16),
        })
    } else {
        None
    };
    if moodle_db.is_none()
        && moodle_ws.is_none()
        && moodle_t.is_some_and(|t| !t.is_empty())
        && moodle_t.and_then(|t| t.get("db_type")).is_none()
    {
        w.push(
            moodle_t.and_then(Table::span),
            "[moodle] needs db_type = \"postgres\" or \"mariadb\"".into(),
        );
    }

    MoodleSettings {
        db: moodle_db,
        ws: moodle_ws,
        cli: moodle_cli,
    }
}
