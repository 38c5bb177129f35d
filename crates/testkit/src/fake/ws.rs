//! The stand-in's web-service functions, one function each, answering as the captures in
//! `shared/moodle/ws/` show (exceptions as HTTP 200 bodies, the generic message without
//! debugging, `null` from enrolment).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use serde_json::{Value, json};

use super::state::{Course, State, User};
use super::{TOKEN, lock};

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

/// Runs one web-service call (`wsfunction` and its parameters in `form`): the content type and body.
pub(super) fn handle(state: &Mutex<State>, form: &[(String, String)]) -> (&'static str, String) {
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
            "core_enrol_get_enrolled_users" => enrolled_users(&st, form),
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

/// `core_enrol_get_enrolled_users`: the course's learners (with `userfields=id`, ids only,
/// as the real one answers).
fn enrolled_users(st: &State, form: &[(String, String)]) -> Value {
    let Some(course) = scalar(form, "courseid").and_then(|v| v.parse::<i64>().ok()) else {
        return invalid(
            st.debug,
            "Missing required key in single structure: courseid".into(),
        );
    };
    if !st.courses.contains_key(&course) {
        return missing(st.debug);
    }
    let mut ids: Vec<i64> = st
        .enrolments
        .iter()
        .filter(|(_, c, _)| *c == course)
        .map(|(u, _, _)| *u)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Value::Array(ids.into_iter().map(|id| json!({ "id": id })).collect())
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
