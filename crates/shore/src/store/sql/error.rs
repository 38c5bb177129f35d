//! The store's typed error: which database, what failed (with the statement), its kind
//! (busy, constraint, connection, other: whether trying again can help) and the driver's
//! error as its source.

use std::error::Error as _;

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
    pub(super) label: String,
    pub(super) message: String,
    pub(super) kind: DbErrorKind,
    #[source]
    pub(super) source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
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
pub(super) struct Fault {
    pub(super) kind: DbErrorKind,
    pub(super) message: String,
    pub(super) source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
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

pub(super) fn pg_message(e: &postgres::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::{DbErrorKind, Fault};
    use base::retry::Retriable as _;

    #[test]
    fn a_broken_constraint_is_not_retried_and_a_busy_database_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kinds.db");
        let mut db = super::super::Db::sqlite(&path).unwrap();
        db.batch("CREATE TABLE t(k INTEGER PRIMARY KEY)").unwrap();
        db.execute("INSERT INTO t(k) VALUES (?1)", &[&1i64])
            .unwrap();
        let dup = db
            .execute("INSERT INTO t(k) VALUES (?1)", &[&1i64])
            .unwrap_err();
        assert_eq!(dup.kind(), DbErrorKind::Constraint);
        assert!(!dup.is_retriable());

        let holder = rusqlite::Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let busy = other.execute_batch("BEGIN IMMEDIATE").unwrap_err();
        let fault = Fault::from(busy);
        assert_eq!(fault.kind, DbErrorKind::Busy);
    }
}
