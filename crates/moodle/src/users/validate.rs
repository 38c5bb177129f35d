//! Reading and validating a seafarer CSV, streamed: memory holds one record and, per data row,
//! three 64-bit key hashes for duplicate detection (about 6 MB for 80,000 rows), never the rows.
//!
//! Columns (header row, any order, names case-insensitive, a UTF-8 byte-order mark tolerated):
//! `username`, `firstname`, `lastname`, `email`, `idnumber` are required; `password`, `auth`,
//! `suspended` (0/1) and `course1`, `course2`, ... (course shortnames to enrol into) are
//! optional. Rows are numbered as a spreadsheet shows them: the header is row 1 and a quoted
//! field spanning lines is still one row.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use base::csvrow::{RowError, bad};

/// Required columns.
pub const REQUIRED: [&str; 5] = ["username", "firstname", "lastname", "email", "idnumber"];
/// Optional columns besides `courseN`.
pub const OPTIONAL: [&str; 3] = ["password", "auth", "suspended"];

/// One valid seafarer row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Row number (header = 1).
    pub row: u64,
    /// Username (lower case).
    pub username: String,
    /// First name.
    pub firstname: String,
    /// Last name.
    pub lastname: String,
    /// Email as written.
    pub email: String,
    /// The learner's identity across the fleet.
    pub idnumber: String,
    /// Password for a new account (empty: Moodle creates one).
    pub password: String,
    /// Authentication method (empty: Moodle's default, manual).
    pub auth: String,
    /// Suspended, when the file says.
    pub suspended: Option<bool>,
    /// Course shortnames to enrol into.
    pub courses: Vec<String>,
}

/// What validation found.
#[derive(Debug, Default)]
pub struct Validation {
    /// Data rows read (the header not counted).
    pub rows: u64,
    /// Every problem, ordered by row.
    pub errors: Vec<RowError>,
    /// Rows with at least one problem.
    pub bad_rows: HashSet<u64>,
    /// Every course shortname named by a valid row.
    pub courses: BTreeSet<String>,
}

impl Validation {
    /// Rows that can be imported.
    pub fn valid_rows(&self) -> u64 {
        self.rows - self.bad_rows.len() as u64
    }

    /// Adds a problem.
    pub fn push(&mut self, e: RowError) {
        self.bad_rows.insert(e.row);
        self.errors.push(e);
    }

    fn finish(&mut self) {
        self.errors.sort_by_key(|e| e.row);
    }
}

/// The header's layout.
struct Layout {
    names: Vec<String>,
    col: HashMap<&'static str, usize>,
    courses: Vec<(usize, String)>,
}

fn layout(header: &csv::ByteRecord) -> Result<Layout, Vec<RowError>> {
    let names = base::csvrow::header_names(header);
    let mut errors = Vec::new();
    let mut col = HashMap::new();
    let mut courses = Vec::new();
    let mut seen = HashSet::new();
    for (i, n) in names.iter().enumerate() {
        if !seen.insert(n.as_str()) {
            errors.push(bad(1, "(header)", n, "this column appears twice"));
        } else if let Some(k) = REQUIRED.iter().chain(OPTIONAL.iter()).find(|k| *k == n) {
            col.insert(*k, i);
        } else if n
            .strip_prefix("course")
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        {
            courses.push((i, n.clone()));
        } else {
            errors.push(bad(
                1,
                "(header)",
                n,
                "unknown column; the columns are username, firstname, lastname, email, idnumber (required), password, auth, suspended, course1, course2, ...",
            ));
        }
    }
    for r in REQUIRED {
        if !col.contains_key(r) {
            errors.push(bad(
                1,
                "(header)",
                &names.join(","),
                &format!("the required column {r} is missing"),
            ));
        }
    }
    if errors.is_empty() {
        Ok(Layout {
            names,
            col,
            courses,
        })
    } else {
        Err(errors)
    }
}

fn key_hash(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// A plausible email: one `@`, a dotted domain, no spaces; at most 100 characters.
pub fn email_ok(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    e.len() <= 100
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !e.chars().any(|c| c.is_whitespace() || c == ',' || c == ';')
}

/// Moodle's username rule (extended usernames off): lower-case letters, digits, `_ - . @`.
pub fn username_problem(u: &str) -> Option<String> {
    if u.len() > 100 {
        return Some("is longer than 100 characters".into());
    }
    if u.chars().any(|c| c.is_uppercase()) {
        return Some(format!(
            "Moodle usernames are lower case: write {:?}",
            u.to_lowercase()
        ));
    }
    if !u
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.' | '@'))
    {
        return Some("may hold only a-z, 0-9 and _ - . @".into());
    }
    None
}

/// Streams the rows of `path`: `each` gets every row that passes the checks of one row (duplicate
/// checks across rows need the whole file: see [`validate`]). Returns the data row count.
fn stream(
    path: &Path,
    v: &mut Validation,
    each: &mut dyn FnMut(Row, &mut Validation),
) -> std::io::Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
    let mut rec = csv::ByteRecord::new();
    let header_ok = match reader.read_byte_record(&mut rec) {
        Ok(true) => true,
        Ok(false) => {
            v.push(bad(1, "(header)", "", "the file is empty: expected a header row username,firstname,lastname,email,idnumber[,password,auth,suspended,course1,...]"));
            false
        }
        Err(e) => {
            v.push(bad(1, "(header)", "", &format!("unreadable: {e}")));
            false
        }
    };
    if !header_ok {
        return Ok(());
    }
    let layout = match layout(&rec) {
        Ok(l) => l,
        Err(errors) => {
            errors.into_iter().for_each(|e| v.push(e));
            return Ok(());
        }
    };
    let mut row = 1u64;
    loop {
        match reader.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                row += 1;
                v.rows += 1;
                if let Some(r) = check_row(row, &rec, &layout, v) {
                    each(r, v);
                }
            }
            Err(e) => {
                row += 1;
                v.rows += 1;
                if let csv::ErrorKind::Io(io) = e.kind() {
                    return Err(std::io::Error::new(io.kind(), io.to_string()));
                }
                v.push(bad(row, "(row)", "", &format!("unreadable CSV: {e}")));
            }
        }
    }
    Ok(())
}

fn check_row(row: u64, rec: &csv::ByteRecord, l: &Layout, v: &mut Validation) -> Option<Row> {
    if rec.len() == 1
        && rec
            .get(0)
            .is_some_and(|f| f.iter().all(u8::is_ascii_whitespace))
    {
        v.push(bad(row, "(row)", "", "is empty; remove the blank line"));
        return None;
    }
    if rec.len() != l.names.len() {
        v.push(bad(
            row,
            "(row)",
            "",
            &format!(
                "has {} fields, the header has {}; check for an unquoted comma",
                rec.len(),
                l.names.len()
            ),
        ));
        return None;
    }
    let before = v.errors.len();
    let mut text = |i: usize, name: &str, v: &mut Validation| -> String {
        let raw = rec.get(i).unwrap_or(b"");
        match std::str::from_utf8(raw) {
            Ok(s) => {
                let s = s.trim();
                if name != "password" {
                    if s.starts_with(['=', '+', '-', '@']) {
                        v.push(bad(row, name, s, "starts like a spreadsheet formula (= + - @); remove the leading character"));
                    } else if s.chars().any(char::is_control) {
                        v.push(bad(
                            row,
                            name,
                            s,
                            "contains a line break or another control character",
                        ));
                    }
                }
                s.to_string()
            }
            Err(_) => {
                v.push(bad(
                    row,
                    name,
                    &String::from_utf8_lossy(raw),
                    "is not valid UTF-8 (save the file as UTF-8)",
                ));
                String::new()
            }
        }
    };
    let get = |k: &str,
               v: &mut Validation,
               text: &mut dyn FnMut(usize, &str, &mut Validation) -> String| {
        l.col.get(k).map(|&i| text(i, k, v)).unwrap_or_default()
    };
    let r = Row {
        row,
        username: get("username", v, &mut text),
        firstname: get("firstname", v, &mut text),
        lastname: get("lastname", v, &mut text),
        email: get("email", v, &mut text),
        idnumber: get("idnumber", v, &mut text),
        password: get("password", v, &mut text),
        auth: get("auth", v, &mut text),
        suspended: None,
        courses: Vec::new(),
    };
    let mut r = r;
    let suspended = get("suspended", v, &mut text);
    let courses: Vec<(String, String)> = l
        .courses
        .iter()
        .map(|(i, n)| (n.clone(), text(*i, n, v)))
        .collect();
    if v.errors.len() > before {
        return None;
    }
    for (field, value) in [
        ("username", &r.username),
        ("firstname", &r.firstname),
        ("lastname", &r.lastname),
        ("email", &r.email),
        ("idnumber", &r.idnumber),
    ] {
        if value.is_empty() {
            v.push(bad(row, field, value, "is required and empty"));
        }
    }
    if !r.username.is_empty() {
        if let Some(p) = username_problem(&r.username) {
            v.push(bad(row, "username", &r.username, &p));
        }
    }
    if !r.email.is_empty() && !email_ok(&r.email) {
        v.push(bad(row, "email", &r.email, "is not a valid email address"));
    }
    for (field, value, max) in [
        ("firstname", &r.firstname, 100),
        ("lastname", &r.lastname, 100),
        ("idnumber", &r.idnumber, 255),
    ] {
        if value.chars().count() > max {
            v.push(bad(
                row,
                field,
                value,
                &format!("is longer than {max} characters"),
            ));
        }
    }
    if !r.auth.is_empty()
        && !r
            .auth
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        v.push(bad(
            row,
            "auth",
            &r.auth,
            "is not an authentication plugin name (manual, nologin, ldap, oauth2 ...)",
        ));
    }
    r.suspended = match suspended.as_str() {
        "" => None,
        "0" => Some(false),
        "1" => Some(true),
        other => {
            v.push(bad(row, "suspended", other, "must be 0 or 1"));
            None
        }
    };
    for (field, c) in courses {
        if c.chars().count() > 255 {
            v.push(bad(row, &field, &c, "is longer than 255 characters"));
        } else if !c.is_empty() && !r.courses.contains(&c) {
            r.courses.push(c);
        }
    }
    (v.errors.len() == before).then_some(r)
}

/// Validates the whole file: every row's fields, then duplicates of username, email (ignoring
/// case, as Moodle does) and idnumber inside the file; every row of a duplicate is reported.
pub fn validate(path: &Path) -> std::io::Result<Validation> {
    let mut v = Validation::default();
    // key hash -> first row, per key kind; the later rows of a duplicate are listed per first.
    let mut first: [HashMap<u64, u64>; 3] = Default::default();
    let mut dups: Vec<(usize, u64, u64, String)> = Vec::new();
    stream(path, &mut v, &mut |r, v| {
        let keys = [
            r.username.clone(),
            r.email.to_lowercase(),
            r.idnumber.clone(),
        ];
        for (k, key) in keys.iter().enumerate() {
            match first[k].entry(key_hash(key)) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    dups.push((k, *e.get(), r.row, key.clone()));
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(r.row);
                }
            }
        }
        for c in &r.courses {
            if !v.courses.contains(c) {
                v.courses.insert(c.clone());
            }
        }
    })?;
    const FIELDS: [&str; 3] = ["username", "email", "idnumber"];
    let mut reported_first = HashSet::new();
    for (k, first_row, row, key) in dups {
        let what = if k == 2 {
            " (an idnumber is a learner's identity across the fleet: it must belong to one person)"
        } else {
            ""
        };
        v.push(bad(
            row,
            FIELDS[k],
            &key,
            &format!(
                "duplicate: row {first_row} has the same {}{what}",
                FIELDS[k]
            ),
        ));
        if reported_first.insert((k, first_row)) {
            v.push(bad(
                first_row,
                FIELDS[k],
                &key,
                &format!("duplicate: row {row} has the same {}{what}", FIELDS[k]),
            ));
        }
    }
    v.finish();
    Ok(v)
}

/// Streams the rows that passed validation, in file order, starting at row `from`.
pub fn valid_rows(
    path: &Path,
    v: &Validation,
    from: u64,
    each: &mut dyn FnMut(Row) -> bool,
) -> std::io::Result<()> {
    let mut scratch = Validation::default();
    let mut going = true;
    stream(path, &mut scratch, &mut |r, _| {
        if going && r.row >= from && !v.bad_rows.contains(&r.row) {
            going = each(r);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &[u8]) -> Validation {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u.csv");
        std::fs::write(&p, text).unwrap();
        validate(&p).unwrap()
    }

    #[test]
    fn a_clean_file_with_bom_crlf_and_a_quoted_comma_is_valid() {
        let v = check(b"\xEF\xBB\xBFusername,firstname,lastname,email,idnumber,course1\r\nj.hansen,Jonas,\"Hansen, Jr\",J.Hansen@Fleet.example,SEAF-1,SAFETY-101\r\n");
        assert_eq!(v.errors, vec![]);
        assert_eq!(v.rows, 1);
        assert_eq!(v.courses.iter().collect::<Vec<_>>(), ["SAFETY-101"]);
    }

    #[test]
    fn duplicates_name_both_rows_and_emails_ignore_case() {
        let v = check(b"username,firstname,lastname,email,idnumber\na,A,A,x@y.no,S1\nb,B,B,X@Y.NO,S2\nc,C,C,c@y.no,S1\n");
        let got: Vec<(u64, &str)> = v.errors.iter().map(|e| (e.row, e.field.as_str())).collect();
        assert_eq!(
            got,
            [(2, "email"), (2, "idnumber"), (3, "email"), (4, "idnumber")]
        );
        assert_eq!(v.valid_rows(), 0);
    }

    #[test]
    fn a_bad_header_is_reported_once_and_no_row_is_read() {
        let v = check(b"username,firstname,email,idnumber,shoe\nA,B,C,D,E\n");
        let msgs: Vec<&str> = v.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(v.rows, 0);
        assert!(msgs.iter().any(|m| m.contains("unknown column")));
        assert!(msgs.iter().any(|m| m.contains("lastname is missing")));
    }
}
