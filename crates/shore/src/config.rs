//! `shore.toml`: where shore keeps its state, where it listens, its TLS certificate and key,
//! and the caps on what one vessel may send. Read with serde; unknown keys are refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::store::ShoreStore;

/// `shore.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShoreConfig {
    /// Must be 1.
    pub version: u32,
    /// The settings.
    pub shore: ShoreSettings,
    /// The cloud Moodle that received progress is forwarded into (none: not forwarded).
    pub cloud: Option<CloudSettings>,
    /// The fleet dashboard on the same listener (none: not served).
    pub dashboard: Option<DashboardSettings>,
    /// Where shore keeps its records (none: SQLite in `STATE_DIR/shore.db`).
    #[serde(default)]
    pub store: StoreSettings,
    /// Where the file was (relative paths resolve against its directory).
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[shore]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShoreSettings {
    /// Database, received files and queued bundles.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// PEM certificate chain.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Operator key that signs `ack` bundles for file-mode vessels.
    pub signing_key: Option<PathBuf>,
    /// Operator public keys whose bundles `shore push` accepts.
    #[serde(default)]
    pub trusted: Vec<PathBuf>,
    /// Fleet root public keys: `shore push` also accepts the root's own bundles and those of
    /// operators it certified (within their certificates).
    #[serde(default)]
    pub root: Vec<PathBuf>,
    /// Largest batch accepted (bytes, compressed, as sent).
    #[serde(default = "default_max_batch")]
    pub max_batch_bytes: u64,
    /// Most records one batch may carry (a vessel sends at most `[uplink] batch_records`,
    /// 20,000 by default).
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: u64,
    /// Most connections open at once, in all.
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    /// Most connections open at once from one client address.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: u64,
    /// Most bytes of batch bodies being received at once, in all (each body is written to a
    /// temporary file under `STATE_DIR/tmp` as it arrives).
    #[serde(default = "default_uploads_in_flight")]
    pub uploads_in_flight_bytes: u64,
}

/// `[cloud]`: the master Moodle ashore.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSettings {
    /// Its wwwroot (`https://training.example.com`).
    pub url: String,
    /// A file holding the web-service token (of a service with the functions the README lists).
    pub token_file: PathBuf,
    /// Seconds one web-service call may take.
    #[serde(default = "default_cloud_timeout")]
    pub timeout_secs: u64,
    /// Seconds between forwarding passes under `shore serve` (and the wait after the cloud
    /// was unreachable).
    #[serde(default = "default_cloud_interval")]
    pub interval_secs: u64,
    /// How to reach it: `auto` (the default: through the companion plugin `local_vesselsync`
    /// when the token's service offers it, else core web services), `plugin` or `core`.
    #[serde(default)]
    pub path: CloudPath,
}

/// How the forwarder writes into the cloud Moodle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudPath {
    /// The plugin when the service offers it, else core web services.
    #[default]
    Auto,
    /// Always the plugin (a cloud without it holds every record with Moodle's words).
    Plugin,
    /// Always core web services (one record a call, stamped with the time of forwarding).
    Core,
}

/// `[store]`: SQLite (one receiver) or PostgreSQL (several receivers on one database).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite` (the default) or `postgres`.
    #[serde(default)]
    pub backend: StoreBackend,
    /// PostgreSQL: `postgres://USER@HOST:PORT/DBNAME` (or `host=... user=... dbname=...`),
    /// without a password.
    pub url: Option<String>,
    /// PostgreSQL: a file holding the password (first line; mode 0600), if one is needed.
    pub password_file: Option<PathBuf>,
}

/// The store's engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// `STATE_DIR/shore.db`.
    #[default]
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

/// `[dashboard]`: the read-only fleet page at `/dashboard`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSettings {
    /// A file holding the operators' password (first line; mode 0600). Never a vessel's token.
    pub password_file: PathBuf,
    /// Hours a login lasts.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
}

fn default_session_hours() -> u64 {
    12
}

fn default_cloud_timeout() -> u64 {
    60
}
fn default_cloud_interval() -> u64 {
    60
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/vessel-sync-shore")
}
fn default_listen() -> String {
    "0.0.0.0:8443".into()
}
fn default_max_batch() -> u64 {
    64 << 20
}
fn default_max_batch_records() -> u64 {
    wire::MAX_BATCH_RECORDS
}
fn default_max_connections() -> u64 {
    4_096
}
fn default_max_connections_per_address() -> u64 {
    256
}
fn default_uploads_in_flight() -> u64 {
    512 << 20
}

impl ShoreConfig {
    /// The secret files this config names (TLS key, shore's signing key, the cloud token, the
    /// dashboard and PostgreSQL passwords) must be readable by their owner only.
    pub fn check_secret_modes(&self) -> Result<(), String> {
        let mut secrets: Vec<(&str, &Path)> = Vec::new();
        if let Some(p) = &self.shore.tls_key {
            secrets.push(("[shore] tls_key", p));
        }
        if let Some(p) = &self.shore.signing_key {
            secrets.push(("[shore] signing_key", p));
        }
        if let Some(c) = &self.cloud {
            secrets.push(("[cloud] token_file", &c.token_file));
        }
        if let Some(d) = &self.dashboard {
            secrets.push(("[dashboard] password_file", &d.password_file));
        }
        if let Some(p) = &self.store.password_file {
            secrets.push(("[store] password_file", p));
        }
        secrets
            .into_iter()
            .filter(|(_, p)| p.exists())
            .try_for_each(|(what, p)| base::fsutil::check_private(what, p))
    }

    /// Loads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "{}: {e} (start from packaging/shore.toml.example)",
                path.display()
            )
        })?;
        let mut cfg: ShoreConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if cfg.version != 1 {
            return Err(format!("{}: version must be 1", path.display()));
        }
        cfg.path = path.to_path_buf();
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut cfg.shore.state_dir);
        for p in [
            &mut cfg.shore.tls_cert,
            &mut cfg.shore.tls_key,
            &mut cfg.shore.signing_key,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        if let Some(c) = cfg.cloud.as_mut() {
            fix(&mut c.token_file);
        }
        if let Some(d) = cfg.dashboard.as_mut() {
            fix(&mut d.password_file);
        }
        if let Some(p) = cfg.store.password_file.as_mut() {
            fix(p);
        }
        if cfg.store.backend == StoreBackend::Postgres {
            cfg.postgres()
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        for p in cfg
            .shore
            .trusted
            .iter_mut()
            .chain(cfg.shore.root.iter_mut())
        {
            fix(p);
        }
        Ok(cfg)
    }

    /// The SQLite database path (the store, or what `shore migrate --from sqlite` reads).
    pub fn database(&self) -> PathBuf {
        self.shore.state_dir.join("shore.db")
    }

    /// `[store]`'s PostgreSQL connection settings, with the password read from its file.
    pub fn postgres(&self) -> Result<postgres::Config, String> {
        let url = self.store.url.as_deref().ok_or(
            "[store] backend = \"postgres\" needs url = \"postgres://USER@HOST:PORT/DBNAME\"",
        )?;
        let mut c: postgres::Config = url
            .parse()
            .map_err(|e| format!("[store] url is not a PostgreSQL connection URL: {e}"))?;
        if c.get_password().is_some() {
            return Err("[store] url holds a password: put it in [store] password_file (mode 0600) instead, so that it is never shown or logged".into());
        }
        if let Some(p) = &self.store.password_file {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("[store] password_file {}: {e}", p.display()))?;
            c.password(text.lines().next().unwrap_or("").trim_end());
        }
        Ok(c)
    }

    /// Opens the store, creating the state directories (received files and queued bundles
    /// stay on disk whichever engine holds the records).
    pub fn open(&self) -> Result<ShoreStore, crate::Error> {
        for d in ["", "tmp", "bundles", "received"] {
            let dir = self.shore.state_dir.join(d);
            std::fs::create_dir_all(&dir).map_err(crate::Error::io(&dir))?;
        }
        Ok(match self.store.backend {
            StoreBackend::Sqlite => ShoreStore::open(&self.database())?,
            StoreBackend::Postgres => {
                ShoreStore::connect(&self.postgres().map_err(crate::Error::Config)?)?
            }
        })
    }
}
