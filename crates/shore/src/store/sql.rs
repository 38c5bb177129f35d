//! One SQL surface over the shore's two backends, SQLite (rusqlite, the default) and
//! PostgreSQL (the `postgres` crate, for a fleet with several receivers). The store writes
//! each statement once, with `?1`-style parameters and SQL both engines read; this layer turns
//! the parameters into `$1` for PostgreSQL, converts values both ways (whatever integer width
//! PostgreSQL chose for a parameter or a column), caches prepared statements, and runs
//! transactions (`BEGIN IMMEDIATE` on SQLite, so a writer holds the file's lock from the
//! start; `BEGIN` on PostgreSQL, with [`Db::lock`] for what must be serialized across
//! receivers).

use std::collections::HashMap;
use std::error::Error as _;
use std::path::Path;
use std::time::Duration;

use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

/// A value passed to or read from either backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (PostgreSQL: any integer type or BOOL).
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes (PostgreSQL: BYTEA).
    Blob(Vec<u8>),
}

/// What kind of failure a database error is: whether waiting and trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// Another writer holds the lock (SQLite busy or locked; PostgreSQL serialization failure,
    /// deadlock, lock not available): try again.
    Busy,
    /// The statement broke a constraint (a unique key, a foreign key, NOT NULL): the same
    /// statement will fail again.
    Constraint,
    /// The server could not be reached or closed the connection: try again later.
    Connection,
    /// Anything else (a disk error, a value of the wrong type, a misuse of the store).
    Other,
}

/// A database error: the database it came from, what it was (with the statement when there
/// was one), its kind, and the driver's error as its source.
#[derive(Debug, thiserror::Error)]
#[error("shore database {label}: {message}")]
pub struct ShoreDbError {
    label: String,
    message: String,
    kind: DbErrorKind,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl ShoreDbError {
    /// A misuse of the store inside this program.
    pub fn internal(message: &str) -> Self {
        Self {
            label: "(internal)".into(),
            message: message.into(),
            kind: DbErrorKind::Other,
            source: None,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> DbErrorKind {
        self.kind
    }
}

impl base::retry::Retriable for ShoreDbError {
    /// Busy and a lost connection may pass; a constraint or anything else will not.
    fn is_retriable(&self) -> bool {
        matches!(self.kind, DbErrorKind::Busy | DbErrorKind::Connection)
    }
}

/// A failure inside this layer, before the database's label and the statement are added.
#[derive(Debug)]
struct Fault {
    kind: DbErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl From<String> for Fault {
    fn from(message: String) -> Self {
        Self {
            kind: DbErrorKind::Other,
            message,
            source: None,
        }
    }
}

impl From<&str> for Fault {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

impl From<rusqlite::Error> for Fault {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let kind = match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => DbErrorKind::Busy,
            Some(ErrorCode::ConstraintViolation) => DbErrorKind::Constraint,
            Some(ErrorCode::CannotOpen) => DbErrorKind::Connection,
            _ => DbErrorKind::Other,
        };
        Self {
            kind,
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

impl From<postgres::Error> for Fault {
    fn from(e: postgres::Error) -> Self {
        Self {
            kind: pg_kind(&e),
            message: pg_message(&e),
            source: Some(Box::new(e)),
        }
    }
}

/// The kind of a PostgreSQL error, from its SQLSTATE class (or its lack of one: an error
/// without a server's answer is the connection's).
fn pg_kind(e: &postgres::Error) -> DbErrorKind {
    if e.is_closed() {
        return DbErrorKind::Connection;
    }
    let Some(code) = e.code() else {
        return match e.as_db_error() {
            Some(_) => DbErrorKind::Other,
            None => DbErrorKind::Connection,
        };
    };
    let code = code.code();
    match code {
        "40001" | "40P01" | "55P03" => DbErrorKind::Busy,
        _ if code.starts_with("23") => DbErrorKind::Constraint,
        // Connection exceptions, and the server shutting down or going away.
        _ if code.starts_with("08") || code.starts_with("57P") => DbErrorKind::Connection,
        _ => DbErrorKind::Other,
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ShoreDbError>;

/// What can be passed as a parameter.
pub trait ToValue {
    /// The value.
    fn to_value(&self) -> Value;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}
impl ToValue for u8 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl<const N: usize> ToValue for [u8; N] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

/// What a column can be read as.
pub trait FromValue: Sized {
    /// The value, or why it is not one.
    fn from_value(v: &Value) -> std::result::Result<Self, String>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i),
            Value::Real(f) if f.fract() == 0.0 => Ok(*f as i64),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}
impl FromValue for u64 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        i64::from_value(v).map(i64::unsigned_abs)
    }
}
impl FromValue for u8 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        let i = i64::from_value(v)?;
        u8::try_from(i).map_err(|_| format!("expected a small integer, found {i}"))
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}
impl FromValue for Value {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        Ok(v.clone())
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Column `i` as a `T`.
    pub fn get<T: FromValue>(&self, i: usize) -> std::result::Result<T, String> {
        let v = self.0.get(i).ok_or_else(|| format!("no column {i}"))?;
        T::from_value(v).map_err(|e| format!("column {i}: {e}"))
    }
}

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

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let text = matches!(
            *ty,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
        );
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ if text => i.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot be passed as {ty}").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ if text => f.to_string().to_sql(ty, out),
                _ => Err(format!("a number cannot be passed as {ty}").into()),
            },
            Value::Text(s) if text => s.as_str().to_sql(ty, out),
            Value::Text(s) => match *ty {
                Type::INT8 => s.parse::<i64>()?.to_sql(ty, out),
                Type::INT4 => s.parse::<i32>()?.to_sql(ty, out),
                _ => Err(format!("text cannot be passed as {ty}").into()),
            },
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Any column PostgreSQL returns, as a [`Value`].
struct Any(Value);

impl<'a> FromSql<'a> for Any {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Any(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::OID => Value::Int(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Value::Blob(raw.to_vec()),
            Type::NUMERIC => numeric(raw)?,
            Type::VOID => Value::Null,
            _ => Value::Text(String::from_sql(&Type::TEXT, raw)?),
        }))
    }

    fn from_sql_null(
        _: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Any(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// PostgreSQL's binary NUMERIC (what `SUM` of a BIGINT column returns): base-10000 digits.
fn numeric(raw: &[u8]) -> std::result::Result<Value, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> std::result::Result<u16, String> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a short NUMERIC".to_string())
    };
    let (ndigits, weight, sign, dscale) = (word(0)?, word(1)? as i16, word(2)?, word(3)?);
    if sign == 0xC000 {
        return Ok(Value::Null);
    }
    let mut v = 0f64;
    for k in 0..usize::from(ndigits) {
        v += f64::from(word(4 + k)?) * 10_000f64.powi(i32::from(weight) - k as i32);
    }
    if sign == 0x4000 {
        v = -v;
    }
    Ok(if dscale == 0 && v.abs() < 9.0e15 {
        Value::Int(v as i64)
    } else {
        Value::Real(v)
    })
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

fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => match d.detail() {
            Some(detail) => format!("{}: {} ({detail})", d.severity(), d.message()),
            None => format!("{}: {}", d.severity(), d.message()),
        },
        None => match e.source() {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

fn lite_value(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn lite_param(v: Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as L;
    match v {
        Value::Null => L::Null,
        Value::Int(i) => L::Integer(i),
        Value::Real(f) => L::Real(f),
        Value::Text(s) => L::Text(s),
        Value::Blob(b) => L::Blob(b),
    }
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
