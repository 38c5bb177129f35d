//! A faithful stand-in for a Moodle 5.0 site's REST web services, for tests, the demo and
//! `bench users`. It is not used by the agent.
//!
//! It answers as the captures in `shared/moodle/ws/` show, oddities included: every failure is
//! HTTP 200 with `{exception, errorcode, message}` (`debuginfo` only with debugging on), a
//! whole `core_user_create_users` call is refused with the generic "Invalid parameter value
//! detected" when any one user in it is bad, duplicate idnumbers are accepted silently, emails
//! must be unique case-insensitively on create while `core_user_get_users_by_field` matches
//! them exactly, `enrol_manual_enrol_users` answers the literal `null`, a JSON body is ignored
//! (the function runs with no parameters), and a site with REST switched off answers 403 with
//! an empty body. State is in memory; the server is plain HTTP/1.1 with keep-alive on a
//! loopback port, one thread per connection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

/// The token the fake accepts.
pub const TOKEN: &str = "f00dfacef00dfacef00dfacef00dface";

/// A user row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Username (lower case).
    pub username: String,
    /// First name.
    pub firstname: String,
    /// Last name.
    pub lastname: String,
    /// Email, as given.
    pub email: String,
    /// Idnumber (not unique in Moodle).
    pub idnumber: String,
    /// Authentication method.
    pub auth: String,
    /// Suspended.
    pub suspended: bool,
    /// Password as given (the fake does not hash).
    pub password: String,
}

/// A course row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Course {
    /// Id.
    pub id: i64,
    /// Short name.
    pub shortname: String,
    /// Full name.
    pub fullname: String,
    /// Idnumber.
    pub idnumber: String,
    /// Category id.
    pub category: i64,
    /// Visible.
    pub visible: bool,
    /// Contents deleted by a crashed `delete_course.php --disablerecyclebin`; the row stays.
    pub half_deleted: bool,
    /// The backup it was restored from, if any.
    pub mbz: Option<Vec<u8>>,
}

/// The site's state.
#[derive(Debug, Default)]
pub struct State {
    /// Users by id (admin is 2, as on a fresh site).
    pub users: BTreeMap<i64, User>,
    /// Courses by id (the site course is 1).
    pub courses: BTreeMap<i64, Course>,
    /// (userid, courseid, roleid).
    pub enrolments: HashSet<(i64, i64, i64)>,
    /// Calls per function.
    pub calls: HashMap<String, u64>,
    /// Developer debugging: errors carry `debuginfo`.
    pub debug: bool,
    /// Web services / REST switched off: 403 with an empty body.
    pub rest_disabled: bool,
    /// Categories: id -> (idnumber, name). DECK is 2 and ENGINE 3, as on the rig.
    pub categories: BTreeMap<i64, (String, String)>,
    /// Course modules: cmid -> (course id, modname, name, idnumber).
    pub modules: BTreeMap<i64, (i64, String, String, String)>,
    /// Activity completions: (userid, cmid) -> state, as overrides leave them.
    pub completions: BTreeMap<(i64, i64), i64>,
    /// The site's backup default leaves users out (`backup_general_users = 0`): backups are
    /// named `...-nu.mbz`.
    pub backup_without_users: bool,
    /// The next `delete_course.php` dies half-way, as `--disablerecyclebin` does.
    pub crash_next_delete: bool,
    /// Every CLI run: the script and its arguments.
    pub cli_runs: Vec<Vec<String>>,
    next_user: i64,
    by_name: HashMap<String, i64>,
    by_email: HashMap<String, Vec<i64>>,
    by_idnumber: HashMap<String, Vec<i64>>,
}

impl State {
    /// A user by username.
    pub fn user(&self, username: &str) -> Option<&User> {
        self.by_name.get(username).and_then(|id| self.users.get(id))
    }

    /// Whether an account has this email (compared in lower case, as Moodle does on create).
    pub fn email_taken(&self, lower: &str) -> bool {
        self.by_email.get(lower).is_some_and(|v| !v.is_empty())
    }

    fn insert(&mut self, mut u: User) -> i64 {
        if u.id == 0 {
            self.next_user = self.next_user.max(3);
            u.id = self.next_user;
            self.next_user += 1;
        }
        let id = u.id;
        self.by_name.insert(u.username.clone(), id);
        self.by_email
            .entry(u.email.to_lowercase())
            .or_default()
            .push(id);
        self.by_idnumber
            .entry(u.idnumber.clone())
            .or_default()
            .push(id);
        self.users.insert(id, u);
        id
    }

    fn unindex(&mut self, id: i64) {
        if let Some(u) = self.users.get(&id) {
            let (e, i) = (u.email.to_lowercase(), u.idnumber.clone());
            if let Some(v) = self.by_email.get_mut(&e) {
                v.retain(|x| *x != id);
            }
            if let Some(v) = self.by_idnumber.get_mut(&i) {
                v.retain(|x| *x != id);
            }
        }
    }

    /// Adds a course; returns its id.
    pub fn add_course(&mut self, shortname: &str, idnumber: &str, category: i64) -> i64 {
        let id = self.courses.keys().max().copied().unwrap_or(0) + 1;
        self.courses.insert(
            id,
            Course {
                id,
                shortname: shortname.into(),
                fullname: shortname.into(),
                idnumber: idnumber.into(),
                category,
                visible: true,
                half_deleted: false,
                mbz: None,
            },
        );
        id
    }

    /// A course by shortname.
    pub fn course(&self, shortname: &str) -> Option<&Course> {
        self.courses.values().find(|c| c.shortname == shortname)
    }

    /// Adds a user as an administrator would; returns its id.
    pub fn add_user(&mut self, username: &str, email: &str, idnumber: &str) -> i64 {
        self.insert(User {
            id: 0,
            username: username.into(),
            firstname: "First".into(),
            lastname: "Last".into(),
            email: email.into(),
            idnumber: idnumber.into(),
            auth: "manual".into(),
            suspended: false,
            password: String::new(),
        })
    }
}

/// A running fake Moodle.
pub struct FakeMoodle {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FakeMoodle {
    /// Starts on a free loopback port with the rig's courses (site course 1, SAFETY-101 2,
    /// FIRE-201 3, ERM-110 4) and the admin (id 2).
    pub fn start() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let mut state = State {
            next_user: 3,
            ..State::default()
        };
        state.insert(User {
            id: 2,
            username: "admin".into(),
            firstname: "Admin".into(),
            lastname: "User".into(),
            email: "admin@fleet.example.invalid".into(),
            idnumber: String::new(),
            auth: "manual".into(),
            suspended: false,
            password: String::new(),
        });
        state
            .categories
            .insert(2, ("DECK".into(), "Deck Department".into()));
        state
            .categories
            .insert(3, ("ENGINE".into(), "Engine Department".into()));
        state.add_course("fleetrig", "", 0);
        state.add_course("SAFETY-101", "SAFETY-101", 2);
        state.add_course("FIRE-201", "FIRE-201", 2);
        state.add_course("ERM-110", "ERM-110", 3);
        let state = Arc::new(Mutex::new(state));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let st = st.clone();
                    std::thread::spawn(move || {
                        let _ = serve(conn, &st);
                    });
                }
            }
        });
        Ok(Self { url, state, stop })
    }

    /// The site address (`wwwroot`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes a `php` for the agent's config that plays this site's CLI scripts
    /// (`BIN fake-php`, see [`crate::fakecli`]) and an empty code root with
    /// `admin/cli/`. Returns (php, moodle_dir).
    pub fn php(
        &self,
        dir: &std::path::Path,
        bin: &std::path::Path,
    ) -> io::Result<(std::path::PathBuf, std::path::PathBuf)> {
        use std::os::unix::fs::PermissionsExt;
        let code = dir.join("moodle-code");
        std::fs::create_dir_all(code.join("admin/cli"))?;
        let php = dir.join("fake-php");
        std::fs::write(
            &php,
            format!(
                "#!/bin/sh\nVESSEL_SYNC_FAKE_MOODLE='{}' exec '{}' fake-php \"$@\"\n",
                self.url,
                bin.display()
            ),
        )?;
        std::fs::set_permissions(&php, std::fs::Permissions::from_mode(0o755))?;
        Ok((php, code))
    }

    /// The site's state, to arrange or inspect.
    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for FakeMoodle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn serve(conn: TcpStream, state: &Mutex<State>) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(120)))?;
    conn.set_nodelay(true)?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        let mut json_body = false;
        let mut close = false;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap_or((h, ""));
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "content-type" => json_body = value.starts_with("application/json"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let query = line
            .split_whitespace()
            .nth(1)
            .and_then(|t| t.split_once('?'))
            .map(|(_, q)| q.to_string())
            .unwrap_or_default();
        let mut form = parse_form(&query);
        if !json_body {
            form.extend(parse_form(&String::from_utf8_lossy(&body)));
        }
        let (status, reply) = if line.contains(" /fake/cli") {
            (
                "200 OK",
                crate::fakecli::run(&mut lock(state), &form).to_string(),
            )
        } else {
            handle(state, &form)
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
            if status.starts_with("200") {
                "application/json"
            } else {
                "text/html; charset=utf-8"
            },
            reply.len()
        );
        writer.write_all((head + &reply).as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

fn parse_form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn exception(class: &str, code: &str, message: &str, debug: Option<String>) -> Value {
    let mut v = json!({"exception": class, "errorcode": code, "message": message});
    if let Some(d) = debug {
        v["message"] = json!(format!("{message} ({d})"));
        v["debuginfo"] = json!(d);
    }
    v
}

const INVALID_PARAM: &str = "core\\exception\\invalid_parameter_exception";
const MISSING: &str = "Can't find data record in database.";

fn invalid(debug: bool, why: String) -> Value {
    exception(
        INVALID_PARAM,
        "invalidparameter",
        "Invalid parameter value detected",
        debug.then_some(why),
    )
}

fn missing(debug: bool) -> Value {
    let code = if debug {
        "invalidrecord"
    } else {
        "invalidrecordunknown"
    };
    exception("dml_missing_record_exception", code, MISSING, None)
}

/// `name[i][key]` lists as maps per index.
fn list(form: &[(String, String)], name: &str) -> BTreeMap<usize, HashMap<String, String>> {
    let mut out: BTreeMap<usize, HashMap<String, String>> = BTreeMap::new();
    let prefix = format!("{name}[");
    for (k, v) in form {
        let Some(rest) = k.strip_prefix(&prefix) else {
            continue;
        };
        let Some((idx, rest)) = rest.split_once(']') else {
            continue;
        };
        let Ok(idx) = idx.parse::<usize>() else {
            continue;
        };
        let key = rest.trim_start_matches('[').trim_end_matches(']');
        out.entry(idx)
            .or_default()
            .insert(key.to_string(), v.clone());
    }
    out
}

fn scalar<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn handle(state: &Mutex<State>, form: &[(String, String)]) -> (&'static str, String) {
    let mut st = lock(state);
    if st.rest_disabled {
        return ("403 Forbidden", String::new());
    }
    let function = scalar(form, "wsfunction").unwrap_or_default().to_string();
    *st.calls.entry(function.clone()).or_default() += 1;
    let reply = if scalar(form, "wstoken") != Some(TOKEN) {
        exception(
            "core\\exception\\moodle_exception",
            "invalidtoken",
            "Invalid token - token not found",
            None,
        )
    } else {
        match function.as_str() {
            "core_webservice_get_site_info" => json!({
                "sitename": "Fake Moodle (vessel-sync tests)",
                "username": "admin",
                "userid": 2,
                "release": "5.0.6+ (Build: 20260403)",
                "version": "2025041406.11",
                "functions": [],
            }),
            "core_user_get_users_by_field" => get_users_by_field(&st, form),
            "core_user_create_users" => create_users(&mut st, form),
            "core_user_update_users" => update_users(&mut st, form),
            "enrol_manual_enrol_users" => enrol(&mut st, form),
            "core_course_get_courses_by_field" => courses_by_field(&st, form),
            "core_course_get_categories" => categories(&st, form),
            "core_course_get_contents" => contents(&st, form),
            "core_course_get_course_module" => course_module(&st, form),
            "core_completion_override_activity_completion_status" => {
                override_completion(&mut st, form)
            }
            "core_course_update_courses" => update_courses(&mut st, form),
            _ => missing(st.debug),
        }
    };
    ("200 OK", reply.to_string())
}

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id, "username": u.username, "firstname": u.firstname, "lastname": u.lastname,
        "fullname": format!("{} {}", u.firstname, u.lastname), "email": u.email,
        "idnumber": u.idnumber, "auth": u.auth, "suspended": u.suspended, "confirmed": true,
        "lang": "en", "theme": "", "timezone": "99", "mailformat": 1,
    })
}

fn get_users_by_field(st: &State, form: &[(String, String)]) -> Value {
    let Some(field) = scalar(form, "field") else {
        return invalid(
            st.debug,
            "Missing required key in single structure: field".into(),
        );
    };
    if !["id", "idnumber", "username", "email"].contains(&field) {
        return invalid(st.debug, format!("Invalid field requested: {field}"));
    }
    let values: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k.starts_with("values["))
        .map(|(_, v)| v.as_str())
        .collect();
    let mut ids: Vec<i64> = Vec::new();
    for v in values {
        match field {
            "id" => ids.extend(v.parse::<i64>().ok()),
            "username" => ids.extend(st.by_name.get(v)),
            // The database compares exactly: a differently cased email is not found.
            "email" => ids.extend(
                st.by_email
                    .get(&v.to_lowercase())
                    .into_iter()
                    .flatten()
                    .filter(|id| st.users.get(id).is_some_and(|u| u.email == v)),
            ),
            _ if v.is_empty() => {}
            _ => ids.extend(st.by_idnumber.get(v).into_iter().flatten()),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Value::Array(
        ids.iter()
            .filter_map(|id| st.users.get(id))
            .map(user_json)
            .collect(),
    )
}

fn valid_username(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 100
        && u.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.' | '@')
        })
}

fn valid_email(e: &str) -> bool {
    match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !e.chars().any(|c| c.is_whitespace() || c == ',')
                && !domain.contains('@')
        }
        None => false,
    }
}

fn create_users(st: &mut State, form: &[(String, String)]) -> Value {
    let users = list(form, "users");
    if users.is_empty() {
        return invalid(
            st.debug,
            "Missing required key in single structure: users".into(),
        );
    }
    let mut taken_names: HashSet<String> = HashSet::new();
    let mut taken_emails: HashSet<String> = HashSet::new();
    let mut new = Vec::new();
    for u in users.values() {
        let get = |k: &str| u.get(k).cloned().unwrap_or_default();
        let username = get("username");
        for key in ["username", "firstname", "lastname", "email"] {
            if !u.contains_key(key) {
                return invalid(
                    st.debug,
                    format!("Missing required key in single structure: {key}"),
                );
            }
        }
        if !valid_username(&username) {
            return invalid(
                st.debug,
                format!("The username must be in lower case: {username}"),
            );
        }
        if st.by_name.contains_key(&username) || !taken_names.insert(username.clone()) {
            return invalid(st.debug, format!("Username already exists: {username}"));
        }
        let email = get("email");
        if !valid_email(&email) {
            return invalid(st.debug, format!("Email address is invalid: {email}"));
        }
        let lower = email.to_lowercase();
        if st.by_email.get(&lower).is_some_and(|v| !v.is_empty()) || !taken_emails.insert(lower) {
            return invalid(st.debug, format!("Email address already exists: {email}"));
        }
        let password = get("password");
        if password.is_empty() && get("createpassword") != "1" {
            return invalid(
                st.debug,
                "Invalid password: you must provide a password, or set createpassword.".into(),
            );
        }
        new.push(User {
            id: 0,
            username,
            firstname: get("firstname"),
            lastname: get("lastname"),
            email,
            idnumber: get("idnumber"),
            auth: u.get("auth").cloned().unwrap_or_else(|| "manual".into()),
            suspended: get("suspended") == "1",
            password,
        });
    }
    let mut out = Vec::new();
    for u in new {
        let name = u.username.clone();
        let id = st.insert(u);
        out.push(json!({"id": id, "username": name}));
    }
    Value::Array(out)
}

fn update_users(st: &mut State, form: &[(String, String)]) -> Value {
    let users = list(form, "users");
    for u in users.values() {
        let Some(id) = u.get("id").and_then(|i| i.parse::<i64>().ok()) else {
            return invalid(
                st.debug,
                "Missing required key in single structure: id".into(),
            );
        };
        if !st.users.contains_key(&id) {
            return missing(st.debug);
        }
        if let Some(e) = u.get("email") {
            let clash = st
                .by_email
                .get(&e.to_lowercase())
                .is_some_and(|v| v.iter().any(|o| *o != id));
            if !valid_email(e) || clash {
                return invalid(st.debug, format!("Email address is invalid or taken: {e}"));
            }
        }
    }
    for u in users.values() {
        let Some(id) = u.get("id").and_then(|i| i.parse::<i64>().ok()) else {
            continue;
        };
        st.unindex(id);
        let Some(mut row) = st.users.remove(&id) else {
            continue;
        };
        for (k, v) in u {
            match k.as_str() {
                "firstname" => row.firstname = v.clone(),
                "lastname" => row.lastname = v.clone(),
                "email" => row.email = v.clone(),
                "idnumber" => row.idnumber = v.clone(),
                "auth" => row.auth = v.clone(),
                "suspended" => row.suspended = v == "1",
                "password" => row.password = v.clone(),
                _ => {}
            }
        }
        st.by_name.remove(&row.username);
        st.insert(row);
    }
    json!({"warnings": []})
}

fn enrol(st: &mut State, form: &[(String, String)]) -> Value {
    let list = list(form, "enrolments");
    let mut rows = Vec::new();
    for e in list.values() {
        let num = |k: &str| e.get(k).and_then(|v| v.parse::<i64>().ok());
        let (Some(role), Some(user), Some(course)) =
            (num("roleid"), num("userid"), num("courseid"))
        else {
            return invalid(st.debug, "Missing required key in single structure".into());
        };
        if !st.users.contains_key(&user) || !st.courses.contains_key(&course) {
            return missing(st.debug);
        }
        rows.push((user, course, role));
    }
    st.enrolments.extend(rows);
    Value::Null
}

fn course_json(c: &Course) -> Value {
    json!({
        "id": c.id, "fullname": c.fullname, "displayname": c.fullname, "shortname": c.shortname,
        "categoryid": c.category, "idnumber": c.idnumber, "visible": i32::from(c.visible),
        "format": if c.id == 1 { "site" } else { "topics" }, "enablecompletion": 1,
    })
}

fn courses_by_field(st: &State, form: &[(String, String)]) -> Value {
    let field = scalar(form, "field").unwrap_or_default();
    let value = scalar(form, "value").unwrap_or_default();
    let courses: Vec<Value> = st
        .courses
        .values()
        .filter(|c| match field {
            "" => true,
            "id" => c.id.to_string() == value,
            "shortname" => c.shortname == value,
            "idnumber" => !c.idnumber.is_empty() && c.idnumber == value,
            _ => false,
        })
        .map(course_json)
        .collect();
    if !["", "id", "ids", "shortname", "idnumber", "category"].contains(&field) {
        return invalid(st.debug, format!("Invalid field name {field}"));
    }
    json!({"courses": courses, "warnings": []})
}

fn categories(st: &State, form: &[(String, String)]) -> Value {
    let criteria = list(form, "criteria");
    let found: Vec<Value> = st
        .categories
        .iter()
        .filter(|(id, (idnumber, name))| {
            criteria.values().all(|c| {
                let v = c.get("value").map(String::as_str).unwrap_or_default();
                match c.get("key").map(String::as_str) {
                    Some("id") => id.to_string() == v,
                    Some("idnumber") => idnumber == v,
                    Some("name") => name == v,
                    _ => false,
                }
            })
        })
        .map(|(id, (idnumber, name))| {
            json!({"id": id, "name": name, "idnumber": idnumber, "parent": 0, "visible": 1, "depth": 1, "path": format!("/{id}")})
        })
        .collect();
    Value::Array(found)
}

fn update_courses(st: &mut State, form: &[(String, String)]) -> Value {
    let courses = list(form, "courses");
    for c in courses.values() {
        let Some(id) = c.get("id").and_then(|i| i.parse::<i64>().ok()) else {
            return invalid(
                st.debug,
                "Missing required key in single structure: id".into(),
            );
        };
        if !st.courses.contains_key(&id) {
            return missing(st.debug);
        }
        if let Some(sn) = c.get("shortname") {
            if st
                .courses
                .values()
                .any(|o| o.id != id && &o.shortname == sn)
            {
                return exception(
                    "core\\exception\\moodle_exception",
                    "shortnametaken",
                    &format!("Short name is already used for another course ({sn})"),
                    None,
                );
            }
        }
        if let Some(idn) = c.get("idnumber").filter(|v| !v.is_empty()) {
            if st
                .courses
                .values()
                .any(|o| o.id != id && &o.idnumber == idn)
            {
                return exception(
                    "core\\exception\\moodle_exception",
                    "courseidnumbertaken",
                    &format!("ID number is already used for another course ({idn})"),
                    None,
                );
            }
        }
    }
    for c in courses.values() {
        let Some(course) = c
            .get("id")
            .and_then(|i| i.parse::<i64>().ok())
            .and_then(|id| st.courses.get_mut(&id))
        else {
            continue;
        };
        for (k, v) in c {
            match k.as_str() {
                "shortname" => course.shortname = v.clone(),
                "fullname" => course.fullname = v.clone(),
                "idnumber" => course.idnumber = v.clone(),
                "visible" => course.visible = v == "1",
                _ => {}
            }
        }
    }
    json!({"warnings": []})
}

fn num(form: &[(String, String)], name: &str) -> Option<i64> {
    scalar(form, name).and_then(|v| v.parse().ok())
}

fn contents(st: &State, form: &[(String, String)]) -> Value {
    let Some(course) = num(form, "courseid") else {
        return invalid(
            st.debug,
            "Missing required key in single structure: courseid".into(),
        );
    };
    if !st.courses.contains_key(&course) {
        return missing(st.debug);
    }
    let modules: Vec<Value> = st
        .modules
        .iter()
        .filter(|(_, m)| m.0 == course)
        .map(|(id, (_, modname, name, _))| {
            json!({"id": id, "name": name, "modname": modname, "instance": id, "visible": 1, "uservisible": true, "completion": 1})
        })
        .collect();
    json!([{"id": course * 10, "name": "General", "section": 0, "visible": 1, "modules": modules}])
}

fn course_module(st: &State, form: &[(String, String)]) -> Value {
    let Some((id, (course, modname, name, idnumber))) =
        num(form, "cmid").and_then(|id| st.modules.get(&id).map(|m| (id, m)))
    else {
        return missing(st.debug);
    };
    json!({"cm": {"id": id, "course": course, "name": name, "modname": modname, "instance": id, "idnumber": idnumber, "completion": 1, "visible": 1}, "warnings": []})
}

fn override_completion(st: &mut State, form: &[(String, String)]) -> Value {
    let (Some(user), Some(cm), Some(state)) = (
        num(form, "userid"),
        num(form, "cmid"),
        num(form, "newstate"),
    ) else {
        return invalid(st.debug, "Missing required key in single structure".into());
    };
    // As captured: a user who is not enrolled is accepted (no enrolment check).
    if !st.users.contains_key(&user) || !st.modules.contains_key(&cm) {
        return missing(st.debug);
    }
    if state != 0 && state != 1 {
        return invalid(st.debug, format!("Invalid completion state {state}"));
    }
    st.completions.insert((user, cm), state);
    json!({"cmid": cm, "userid": user, "state": state, "timecompleted": 1_795_400_000, "overrideby": 2, "tracking": 1})
}
