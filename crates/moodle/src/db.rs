//! Read-only capture queries against Moodle's database, PostgreSQL or MariaDB/MySQL.
//!
//! One SQL text per query runs unchanged on both servers (see `../shared/moodle/README.md`,
//! "MariaDB"): identifiers unquoted and lower case, no backslashes or `||` in literals, casts
//! that both accept (`CAST(x AS INTEGER)`, `CAST(x AS VARCHAR(20))` for exact decimals), flags
//! read as integers, NULLs handled in the program. Everything is read in one read-only
//! transaction with a consistent snapshot (REPEATABLE READ on PostgreSQL, `WITH CONSISTENT
//! SNAPSHOT` on MariaDB), so a capture sees one moment of the site.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use wire::progress::RecordKind;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbType {
    /// PostgreSQL.
    Postgres,
    /// MariaDB or MySQL.
    MariaDb,
}

/// How to reach Moodle's database.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// Server type.
    pub db_type: DbType,
    /// Host name, IP, or (PostgreSQL) a Unix socket directory starting with `/`.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database name.
    pub name: String,
    /// Read-only user.
    pub user: String,
    /// File holding the password (first line), if any.
    pub password_file: Option<PathBuf>,
    /// Moodle's table prefix (`mdl_`).
    pub prefix: String,
}

/// A database failure, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Could not connect.
    #[error("cannot connect to the Moodle database {what}: {detail}")]
    Connect {
        /// Which server.
        what: String,
        /// The driver's words.
        detail: String,
    },
    /// A query failed.
    #[error(
        "query on the Moodle database failed ({detail}); check [moodle] prefix and the GRANTs in docs/progress.md"
    )]
    Query {
        /// The driver's words.
        detail: String,
    },
    /// The password file.
    #[error("reading the Moodle database password file {0}: {1}")]
    Password(PathBuf, std::io::Error),
}

/// A user row.
#[derive(Debug, Clone, Default)]
pub struct UserRow {
    /// `username`.
    pub username: String,
    /// `idnumber` (may be empty).
    pub idnumber: String,
}

/// A course row.
#[derive(Debug, Clone, Default)]
pub struct CourseRow {
    /// `shortname`.
    pub shortname: String,
    /// `idnumber` (may be empty).
    pub idnumber: String,
}

/// A course module (activity) row.
#[derive(Debug, Clone, Default)]
pub struct ModuleRow {
    /// Course id.
    pub course: i64,
    /// Module type (`page`, `assign`...).
    pub modname: String,
    /// Id in the module's own table.
    pub instance: i64,
    /// `idnumber` (may be empty).
    pub idnumber: String,
    /// The activity's name from the module's own table, when it could be read.
    pub name: Option<String>,
}

/// A grade item row.
#[derive(Debug, Clone, Default)]
pub struct GradeItemRow {
    /// Course id.
    pub course: i64,
    /// `course`, `mod` or `manual`.
    pub itemtype: String,
    /// Module type for `mod` items.
    pub itemmodule: String,
    /// Module instance for `mod` items.
    pub iteminstance: i64,
    /// Item number within the activity (0 for the main grade).
    pub itemnumber: i64,
    /// `idnumber` (may be empty).
    pub idnumber: String,
    /// `itemname` (may be empty).
    pub itemname: String,
}

/// One progress row as Moodle holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// Kind.
    pub kind: RecordKind,
    /// Moodle user id.
    pub userid: i64,
    /// cmid, course id or grade item id.
    pub objid: i64,
    /// State or grade text.
    pub value: String,
    /// Moodle's time.
    pub time: i64,
}

/// Everything a capture reads, at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Users by id.
    pub users: HashMap<i64, UserRow>,
    /// Courses by id.
    pub courses: HashMap<i64, CourseRow>,
    /// Course modules by cmid.
    pub modules: HashMap<i64, ModuleRow>,
    /// Grade items by id.
    pub grade_items: HashMap<i64, GradeItemRow>,
    /// The progress rows.
    pub facts: Vec<Fact>,
}

/// Something that yields snapshots (the real database, or a test's fixture).
pub trait Source {
    /// Reads a full snapshot.
    fn snapshot(&mut self) -> Result<Snapshot, DbError>;
}

/// A cell as read.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Null,
    Int(i64),
    Text(String),
}

impl Val {
    fn int(&self) -> i64 {
        match self {
            Val::Int(i) => *i,
            Val::Text(s) => s.trim().parse().unwrap_or(0),
            Val::Null => 0,
        }
    }
    fn text(&self) -> String {
        match self {
            Val::Text(s) => s.clone(),
            Val::Int(i) => i.to_string(),
            Val::Null => String::new(),
        }
    }
}

enum Conn {
    Pg(Box<postgres::Client>),
    My(Box<mysql::Conn>),
}

/// A live read-only connection.
pub struct Database {
    conn: Conn,
    prefix: String,
}

fn valid_prefix(p: &str) -> bool {
    p.len() <= 20
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Database {
    /// Connects with a 10-second timeout.
    pub fn connect(s: &DbSettings) -> Result<Self, DbError> {
        let what = format!("{}@{}:{}/{}", s.user, s.host, s.port, s.name);
        if !valid_prefix(&s.prefix) {
            return Err(DbError::Connect {
                what,
                detail: format!(
                    "table prefix {:?} is not valid (lower-case letters, digits and _)",
                    s.prefix
                ),
            });
        }
        let password = match &s.password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| DbError::Password(p.clone(), e))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            None => None,
        };
        let conn = match s.db_type {
            DbType::Postgres => {
                let mut c = postgres::Config::new();
                c.host(&s.host)
                    .port(s.port)
                    .user(&s.user)
                    .dbname(&s.name)
                    .application_name("vessel-sync")
                    .connect_timeout(Duration::from_secs(10));
                if let Some(p) = &password {
                    c.password(p);
                }
                // The server's own words ("password authentication failed for user ...") are
                // in the error's sources, not its top line ("db error").
                let client = c.connect(postgres::NoTls).map_err(|e| DbError::Connect {
                    what: what.clone(),
                    detail: base::text::error_chain(&e),
                })?;
                Conn::Pg(Box::new(client))
            }
            DbType::MariaDb => {
                let mut o = mysql::OptsBuilder::new()
                    .user(Some(&s.user))
                    .db_name(Some(&s.name))
                    .tcp_connect_timeout(Some(Duration::from_secs(10)))
                    .read_timeout(Some(Duration::from_secs(600)))
                    .pass(password.as_deref());
                o = if s.host.starts_with('/') {
                    o.socket(Some(&s.host))
                } else {
                    o.ip_or_hostname(Some(&s.host)).tcp_port(s.port)
                };
                let conn = mysql::Conn::new(o).map_err(|e| DbError::Connect {
                    what: what.clone(),
                    detail: base::text::error_chain(&e),
                })?;
                Conn::My(Box::new(conn))
            }
        };
        Ok(Self {
            conn,
            prefix: s.prefix.clone(),
        })
    }

    fn exec(&mut self, sql: &str) -> Result<(), DbError> {
        let q = |e: String| DbError::Query { detail: e };
        match &mut self.conn {
            Conn::Pg(c) => c
                .batch_execute(sql)
                .map_err(|e| q(base::text::error_chain(&e))),
            Conn::My(c) => {
                use mysql::prelude::Queryable;
                c.query_drop(sql)
                    .map_err(|e| q(base::text::error_chain(&e)))
            }
        }
    }

    /// Runs a query and hands each row to `f`. `{p}` in `sql` becomes the table prefix.
    fn each(&mut self, sql: &str, mut f: impl FnMut(&[Val])) -> Result<(), DbError> {
        let sql = sql.replace("{p}", &self.prefix);
        let q = |e: String| DbError::Query {
            detail: format!(
                "{e}; in: {}",
                sql.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        };
        let mut row_buf = Vec::new();
        match &mut self.conn {
            Conn::Pg(c) => {
                use postgres::types::Type;
                let mut it = c
                    .query_raw(sql.as_str(), std::iter::empty::<i32>())
                    .map_err(|e| q(base::text::error_chain(&e)))?;
                use postgres::fallible_iterator::FallibleIterator;
                while let Some(row) = it.next().map_err(|e| q(base::text::error_chain(&e)))? {
                    row_buf.clear();
                    for (i, col) in row.columns().iter().enumerate() {
                        let t = col.type_();
                        let v = if *t == Type::INT8 {
                            row.try_get::<_, Option<i64>>(i)
                                .map(|v| v.map_or(Val::Null, Val::Int))
                        } else if *t == Type::INT4 {
                            row.try_get::<_, Option<i32>>(i)
                                .map(|v| v.map_or(Val::Null, |v| Val::Int(v.into())))
                        } else if *t == Type::INT2 {
                            row.try_get::<_, Option<i16>>(i)
                                .map(|v| v.map_or(Val::Null, |v| Val::Int(v.into())))
                        } else {
                            row.try_get::<_, Option<String>>(i)
                                .map(|v| v.map_or(Val::Null, Val::Text))
                        };
                        row_buf.push(v.map_err(|e| q(base::text::error_chain(&e)))?);
                    }
                    f(&row_buf);
                }
            }
            Conn::My(c) => {
                use mysql::prelude::Queryable;
                let result = c
                    .query_iter(sql.as_str())
                    .map_err(|e| q(base::text::error_chain(&e)))?;
                for row in result {
                    let row = row.map_err(|e| q(base::text::error_chain(&e)))?;
                    row_buf.clear();
                    for v in row.unwrap() {
                        row_buf.push(match v {
                            mysql::Value::NULL => Val::Null,
                            mysql::Value::Int(i) => Val::Int(i),
                            mysql::Value::UInt(u) => Val::Int(i64::try_from(u).unwrap_or(i64::MAX)),
                            mysql::Value::Bytes(b) => {
                                Val::Text(String::from_utf8_lossy(&b).into_owned())
                            }
                            other => Val::Text(format!("{other:?}")),
                        });
                    }
                    f(&row_buf);
                }
            }
        }
        Ok(())
    }

    fn read_snapshot(&mut self) -> Result<Snapshot, DbError> {
        let mut s = Snapshot::default();
        self.each("SELECT id, username, idnumber FROM {p}user", |r| {
            s.users.insert(
                r[0].int(),
                UserRow {
                    username: r[1].text(),
                    idnumber: r[2].text(),
                },
            );
        })?;
        self.each("SELECT id, shortname, idnumber FROM {p}course", |r| {
            s.courses.insert(
                r[0].int(),
                CourseRow {
                    shortname: r[1].text(),
                    idnumber: r[2].text(),
                },
            );
        })?;
        self.each(
            "SELECT cm.id, cm.course, m.name, cm.instance, cm.idnumber
               FROM {p}course_modules cm JOIN {p}modules m ON m.id = cm.module",
            |r| {
                s.modules.insert(
                    r[0].int(),
                    ModuleRow {
                        course: r[1].int(),
                        modname: r[2].text(),
                        instance: r[3].int(),
                        idnumber: r[4].text(),
                        name: None,
                    },
                );
            },
        )?;
        self.each(
            "SELECT id, courseid, itemtype, itemmodule, iteminstance, itemnumber, idnumber, itemname
               FROM {p}grade_items WHERE itemtype IN ('course', 'mod', 'manual')",
            |r| {
                s.grade_items.insert(
                    r[0].int(),
                    GradeItemRow {
                        course: r[1].int(),
                        itemtype: r[2].text(),
                        itemmodule: r[3].text(),
                        iteminstance: r[4].int(),
                        itemnumber: r[5].int(),
                        idnumber: r[6].text(),
                        itemname: r[7].text(),
                    },
                );
            },
        )?;
        self.each(
            "SELECT userid, coursemoduleid, CAST(completionstate AS INTEGER), timemodified
               FROM {p}course_modules_completion",
            |r| {
                s.facts.push(Fact {
                    kind: RecordKind::ActivityCompletion,
                    userid: r[0].int(),
                    objid: r[1].int(),
                    value: r[2].int().to_string(),
                    time: r[3].int(),
                })
            },
        )?;
        self.each(
            "SELECT userid, course, timecompleted FROM {p}course_completions
              WHERE timecompleted IS NOT NULL",
            |r| {
                s.facts.push(Fact {
                    kind: RecordKind::CourseCompletion,
                    userid: r[0].int(),
                    objid: r[1].int(),
                    value: "complete".into(),
                    time: r[2].int(),
                })
            },
        )?;
        self.each(
            "SELECT g.userid, g.itemid, CAST(g.finalgrade AS VARCHAR(20)), COALESCE(g.timemodified, 0)
               FROM {p}grade_grades g JOIN {p}grade_items gi ON gi.id = g.itemid
              WHERE g.finalgrade IS NOT NULL AND gi.itemtype IN ('course', 'mod', 'manual')",
            |r| {
                s.facts.push(Fact {
                    kind: RecordKind::Grade,
                    userid: r[0].int(),
                    objid: r[1].int(),
                    value: r[2].text(),
                    time: r[3].int(),
                })
            },
        )?;
        Ok(s)
    }
}

impl Database {
    /// Activity names, for activities without an idnumber (the documented fallback key). Read
    /// after the snapshot transaction, one module table at a time; a module table that cannot
    /// be read leaves those names to the gradebook's item names, or unset.
    fn read_names(&mut self, s: &mut Snapshot) {
        let mut modnames: Vec<String> = s
            .modules
            .values()
            .filter(|m| m.idnumber.trim().is_empty())
            .map(|m| m.modname.clone())
            .collect();
        modnames.sort();
        modnames.dedup();
        for modname in modnames {
            if modname.is_empty() || !valid_prefix(&modname) {
                continue;
            }
            let mut names = HashMap::new();
            let read = self.each(&format!("SELECT id, name FROM {{p}}{modname}"), |r| {
                names.insert(r[0].int(), r[1].text());
            });
            if let Err(e) = read {
                tracing::debug!(modname = %modname, error = %e, "module table not readable; using grade item names");
            }
            for m in s.modules.values_mut().filter(|m| m.modname == modname) {
                m.name = names.get(&m.instance).cloned();
            }
        }
        let by_instance: HashMap<(i64, String, i64), String> = s
            .grade_items
            .values()
            .filter(|g| g.itemtype == "mod" && g.itemnumber == 0 && !g.itemname.is_empty())
            .map(|g| {
                (
                    (g.course, g.itemmodule.clone(), g.iteminstance),
                    g.itemname.clone(),
                )
            })
            .collect();
        for m in s.modules.values_mut().filter(|m| m.name.is_none()) {
            m.name = by_instance
                .get(&(m.course, m.modname.clone(), m.instance))
                .cloned();
        }
    }
}

impl Source for Database {
    fn snapshot(&mut self) -> Result<Snapshot, DbError> {
        let (begin, end) = match self.conn {
            Conn::Pg(_) => ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "COMMIT"),
            Conn::My(_) => (
                "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
                "COMMIT",
            ),
        };
        self.exec(begin)?;
        let out = self.read_snapshot();
        // A read-only transaction: ending it either way changes nothing.
        let ended = self.exec(if out.is_ok() { end } else { "ROLLBACK" });
        let mut snap = out?;
        ended?;
        self.read_names(&mut snap);
        Ok(snap)
    }
}
