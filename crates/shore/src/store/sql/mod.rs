//! One SQL surface over the shore's two backends, SQLite (rusqlite, the default) and
//! PostgreSQL (the `postgres` crate, for a fleet with several receivers). The store writes
//! each statement once, with `?1`-style parameters and SQL both engines read; this layer turns
//! the parameters into `$1` for PostgreSQL, converts values both ways (whatever integer width
//! PostgreSQL chose for a parameter or a column), caches prepared statements, and runs
//! transactions (`BEGIN IMMEDIATE` on SQLite, so a writer holds the file's lock from the
//! start; `BEGIN` on PostgreSQL, with [`Db::lock`] for what must be serialized across
//! receivers).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use postgres::types::ToSql;

mod error;
mod value;

pub use error::{DbErrorKind, Result, ShoreDbError};
pub use value::{FromValue, Row, ToValue, Value};

use error::{Fault, pg_message};
use value::{Any, lite_param, lite_value};

/// Which engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

enum Conn {
    Lite(rusqlite::Connection),
    /// The client and what it connected with (to connect again after the server restarted).
    Pg(Box<postgres::Client>, Box<postgres::Config>),
}

/// A connection to either backend.
pub struct Db {
    conn: Conn,
    label: String,
    statements: HashMap<String, postgres::Statement>,
    in_tx: bool,
}

/// `?12` becomes `$12` (the store's SQL holds no `?` inside string literals).
fn dollar(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// Where a PostgreSQL URL points, without its password (for messages and logs).
pub fn describe_pg(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(s) => s.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

impl Db {
    /// Opens (creating) a SQLite file: WAL, `synchronous=FULL`, a 30 s busy timeout.
    pub fn sqlite(path: &Path) -> Result<Self> {
        let label = path.display().to_string();
        let e = |x: rusqlite::Error| {
            let f = Fault::from(x);
            ShoreDbError {
                label: label.clone(),
                message: f.message,
                kind: f.kind,
                source: f.source,
            }
        };
        let conn = rusqlite::Connection::open(path).map_err(e)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(e)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
        Ok(Self {
            conn: Conn::Lite(conn),
            label,
            statements: HashMap::new(),
            in_tx: false,
        })
    }

    /// Connects to PostgreSQL (10 s connect timeout, plain TCP or a local socket).
    pub fn postgres(config: &postgres::Config) -> Result<Self> {
        let label = describe_pg(config);
        let mut config = config.clone();
        config
            .application_name("vessel-sync-shore")
            .connect_timeout(Duration::from_secs(10));
        let client = config.connect(postgres::NoTls).map_err(|e| ShoreDbError {
            label: label.clone(),
            message: format!("cannot connect: {}", pg_message(&e)),
            // Whatever the server said, a connection that was not made is the connection's.
            kind: DbErrorKind::Connection,
            source: Some(Box::new(e)),
        })?;
        Ok(Self {
            conn: Conn::Pg(Box::new(client), Box::new(config)),
            label,
            statements: HashMap::new(),
            in_tx: false,
        })
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        match self.conn {
            Conn::Lite(_) => Backend::Sqlite,
            Conn::Pg(..) => Backend::Postgres,
        }
    }

    /// An error of this database.
    pub fn error(&self, message: impl Into<String>) -> ShoreDbError {
        ShoreDbError {
            label: self.label.clone(),
            message: message.into(),
            kind: DbErrorKind::Other,
            source: None,
        }
    }

    fn fail(&self, sql: &str, fault: Fault) -> ShoreDbError {
        let sql: Vec<&str> = sql.split_whitespace().collect();
        let mut sql = sql.join(" ");
        if sql.len() > 160 {
            let cut = (0..=160)
                .rev()
                .find(|i| sql.is_char_boundary(*i))
                .unwrap_or(0);
            sql.truncate(cut);
            sql.push_str("...");
        }
        ShoreDbError {
            label: self.label.clone(),
            message: format!("{}; in: {sql}", fault.message),
            kind: fault.kind,
            source: fault.source,
        }
    }

    /// A PostgreSQL connection the server closed (a restart, a failover) is made again
    /// before the next statement, outside a transaction; the statements are prepared anew.
    fn reconnect_if_closed(&mut self) -> std::result::Result<(), Fault> {
        let Conn::Pg(client, config) = &mut self.conn else {
            return Ok(());
        };
        if !client.is_closed() || self.in_tx {
            return Ok(());
        }
        let fresh = config.connect(postgres::NoTls).map_err(|e| Fault {
            kind: DbErrorKind::Connection,
            message: format!(
                "the connection was lost and cannot be made again: {}",
                pg_message(&e)
            ),
            source: Some(Box::new(e)),
        })?;
        **client = fresh;
        self.statements.clear();
        tracing::info!(database = %self.label, "connected to PostgreSQL again");
        Ok(())
    }

    /// Runs several statements without parameters.
    pub fn batch(&mut self, sql: &str) -> Result<()> {
        if let Err(m) = self.reconnect_if_closed() {
            return Err(self.fail(sql, m));
        }
        let r = match &mut self.conn {
            Conn::Lite(c) => c.execute_batch(sql).map_err(Fault::from),
            Conn::Pg(c, _) => c.batch_execute(sql).map_err(Fault::from),
        };
        r.map_err(|m| self.fail(sql, m))
    }

    fn pg_statement(&mut self, sql: &str) -> std::result::Result<postgres::Statement, Fault> {
        self.reconnect_if_closed()?;
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let Conn::Pg(c, _) = &mut self.conn else {
            return Err("not PostgreSQL".into());
        };
        let s = c.prepare(&dollar(sql))?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[&dyn ToValue]) -> Result<u64> {
        let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
        let mut r = self.execute_once(sql, values.clone());
        if r.is_err() && self.lost() {
            r = self.execute_once(sql, values);
        }
        r.map_err(|m| self.fail(sql, m))
    }

    /// Whether the last statement failed because PostgreSQL closed the connection outside a
    /// transaction (then it is worth one more try, on a new connection).
    fn lost(&self) -> bool {
        matches!(&self.conn, Conn::Pg(c, _) if c.is_closed()) && !self.in_tx
    }

    fn execute_once(&mut self, sql: &str, values: Vec<Value>) -> std::result::Result<u64, Fault> {
        match self.backend() {
            Backend::Sqlite => {
                let Conn::Lite(c) = &self.conn else {
                    return Err("not SQLite".into());
                };
                c.prepare_cached(sql)
                    .and_then(|mut s| {
                        s.execute(rusqlite::params_from_iter(
                            values.into_iter().map(lite_param),
                        ))
                    })
                    .map(|n| n as u64)
                    .map_err(Fault::from)
            }
            Backend::Postgres => self.pg_statement(sql).and_then(|s| {
                let refs: Vec<&(dyn ToSql + Sync)> =
                    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                match &mut self.conn {
                    Conn::Pg(c, _) => c.execute(&s, &refs).map_err(Fault::from),
                    Conn::Lite(_) => Err("not PostgreSQL".into()),
                }
            }),
        }
    }

    /// Runs a query and hands each row to `f`, streaming (a large export is never held whole).
    pub fn each(
        &mut self,
        sql: &str,
        params: &[&dyn ToValue],
        mut f: impl FnMut(Row) -> std::result::Result<(), String>,
    ) -> Result<()> {
        let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
        let mut rows = 0u64;
        let mut r = self.each_once(sql, values.clone(), &mut f, &mut rows);
        if r.is_err() && rows == 0 && self.lost() {
            r = self.each_once(sql, values, &mut f, &mut rows);
        }
        r.map_err(|m| self.fail(sql, m))
    }

    fn each_once(
        &mut self,
        sql: &str,
        values: Vec<Value>,
        f: &mut impl FnMut(Row) -> std::result::Result<(), String>,
        rows: &mut u64,
    ) -> std::result::Result<(), Fault> {
        match self.backend() {
            Backend::Sqlite => {
                let Conn::Lite(c) = &self.conn else {
                    return Err("not SQLite".into());
                };
                (|| -> std::result::Result<(), Fault> {
                    let mut s = c.prepare_cached(sql)?;
                    let n = s.column_count();
                    let mut it = s.query(rusqlite::params_from_iter(
                        values.into_iter().map(lite_param),
                    ))?;
                    while let Some(r) = it.next()? {
                        let mut row = Vec::with_capacity(n);
                        for i in 0..n {
                            row.push(lite_value(r.get_ref(i)?));
                        }
                        *rows += 1;
                        f(Row(row))?;
                    }
                    Ok(())
                })()
            }
            Backend::Postgres => self.pg_statement(sql).and_then(|s| {
                use postgres::fallible_iterator::FallibleIterator;
                let Conn::Pg(c, _) = &mut self.conn else {
                    return Err("not PostgreSQL".into());
                };
                let mut it = c.query_raw(&s, values.iter())?;
                while let Some(r) = it.next()? {
                    let mut row = Vec::with_capacity(r.len());
                    for i in 0..r.len() {
                        row.push(r.try_get::<_, Any>(i)?.0);
                    }
                    *rows += 1;
                    f(Row(row))?;
                }
                Ok(())
            }),
        }
    }

    /// Every row of a query, each turned into a `T` by `f`.
    pub fn query<T>(
        &mut self,
        sql: &str,
        params: &[&dyn ToValue],
        mut f: impl FnMut(&Row) -> std::result::Result<T, String>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.each(sql, params, |r| {
            out.push(f(&r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row of a query, if any, turned into a `T` by `f`.
    pub fn query_opt<T>(
        &mut self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnMut(&Row) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        Ok(self.query(sql, params, f)?.into_iter().next())
    }

    /// The first row of a query, which must exist, turned into a `T` by `f`.
    pub fn query_one<T>(
        &mut self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnMut(&Row) -> std::result::Result<T, String>,
    ) -> Result<T> {
        match self.query_opt(sql, params, f)? {
            Some(t) => Ok(t),
            None => Err(self.fail(sql, "no row".into())),
        }
    }

    /// Runs `f` in one transaction: committed when it returns `Ok`, rolled back otherwise.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        if self.in_tx {
            return f(self);
        }
        self.batch(match self.backend() {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        })?;
        self.in_tx = true;
        let out = f(self);
        self.in_tx = false;
        match out {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                // The error that ended the transaction is the one to report.
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Within a transaction: waits until no other receiver holds lock `name`, and holds it
    /// until the transaction ends (PostgreSQL's advisory locks; SQLite's `BEGIN IMMEDIATE`
    /// already admits one writer at a time).
    pub fn lock(&mut self, name: &str) -> Result<()> {
        match self.backend() {
            Backend::Sqlite => Ok(()),
            Backend::Postgres => self
                .execute("SELECT pg_advisory_xact_lock(hashtext(?1))", &[&name])
                .map(|_| ()),
        }
    }
}
