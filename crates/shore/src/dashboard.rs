//! The fleet dashboard, served by `shore serve` on its TLS listener when `[dashboard]` is set:
//! a read-only page for the training manager at `/dashboard`, behind an operator login (the
//! password in `[dashboard] password_file`; a vessel's token opens nothing here).
//!
//! - `GET /dashboard`, `/dashboard/app.js`, `/dashboard/app.css`: the page, served with a
//!   Content-Security-Policy that lets its script talk to this origin only;
//! - `POST /dashboard/login` (JSON `{"password": ...}` or a form's `password=...`): a session
//!   cookie (`HttpOnly`, `Secure`, `SameSite=Strict`, for `[dashboard] session_hours`); a wrong
//!   password is refused (401) and logged with the client's address, never the password. After
//!   5 wrong passwords from one address within an hour, that address waits a minute, then 2, 4
//!   ... up to an hour after each further wrong one (429 with `Retry-After`); guesses from one
//!   address never lock out another. `POST /dashboard/logout` ends the session;
//! - `GET /dashboard/api/fleet`: what `shore status --json` prints (every vessel worst first),
//!   plus each vessel's backlog and lag hour by hour over the last 30 days, for the chart.

use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::config::DashboardSettings;
use crate::store::{HISTORY_DAYS, ShoreStore};
use crate::{ShoreConfig, fleet_view};

type Resp = Response<Full<Bytes>>;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");
const COOKIE: &str = "vs_session";
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Wrong passwords one address may try within an hour before it must wait.
const FREE_GUESSES: u64 = 5;
/// The longest wait.
const MAX_WAIT: i64 = 3600;

fn digest(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Sessions and wrong passwords live in the store, so that every receiver of one database
/// honours a login and counts guesses together, and a restart logs nobody out.
fn open_session(db: &ShoreStore, now: i64, hours: u64) -> Result<String, String> {
    let token = crate::new_token().map_err(|e| e.to_string())?;
    let hours = i64::try_from(hours.max(1)).unwrap_or(12);
    db.open_session(&digest(&token), now + hours * 3600, now)
        .map_err(|e| e.to_string())?;
    Ok(token)
}

/// How long `address` must still wait before its next login (through any receiver): none
/// for the first 5 wrong passwords of the last hour, then a minute after the latest, doubling
/// with each further wrong one, up to an hour.
fn wait_before_login(db: &ShoreStore, address: &str, now: i64) -> i64 {
    let Ok((wrong, latest)) = db.wrong_passwords_since(address, now - 3600) else {
        return 60;
    };
    if wrong < FREE_GUESSES {
        return 0;
    }
    let doublings = u32::try_from(wrong - FREE_GUESSES)
        .unwrap_or(u32::MAX)
        .min(6);
    let wait = (60i64 << doublings).min(MAX_WAIT);
    (latest + wait - now).max(0)
}

/// The password of a login request: JSON `{"password": ...}` or a form's `password=...`.
fn given_password(headers: &hyper::HeaderMap, body: &[u8]) -> String {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["password"].as_str().map(String::from))
            .unwrap_or_default();
    }
    body.split(|b| *b == b'&')
        .find_map(|pair| pair.strip_prefix(b"password="))
        .map(form_decode)
        .unwrap_or_default()
}

/// `application/x-www-form-urlencoded` value decoding (`+` is a space, `%XX` a byte).
fn form_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < v.len() => {
                match std::str::from_utf8(&v[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reply(status: StatusCode, kind: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    reply(status, "application/json", v.to_string())
}

fn session_cookie(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_string())
        })
}

/// Whether `given` is the password in the file (compared by digest, so in constant time over
/// the password's length).
fn password_ok(settings: &DashboardSettings, given: &str) -> Result<bool, String> {
    let text = std::fs::read_to_string(&settings.password_file)
        .map_err(|e| format!("{}: {e}", settings.password_file.display()))?;
    let want = text.lines().next().unwrap_or("").trim();
    if want.is_empty() {
        return Err(format!(
            "{} is empty: put the dashboard password on its first line",
            settings.password_file.display()
        ));
    }
    let (a, b) = (
        Sha256::digest(want.as_bytes()),
        Sha256::digest(given.as_bytes()),
    );
    Ok(a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0)
}

/// A request the dashboard answers (any path under `/dashboard`): the response, computed with
/// the store where needed. Blocking: run it off the async threads.
#[allow(clippy::too_many_arguments)]
pub fn handle(
    cfg: &ShoreConfig,
    settings: &DashboardSettings,
    db: &Mutex<ShoreStore>,
    client: std::net::IpAddr,
    method: &hyper::Method,
    path: &str,
    headers: &hyper::HeaderMap,
    body: &[u8],
    now: i64,
) -> Resp {
    let err = |status: StatusCode, code: &str, message: &str| {
        json(
            status,
            &serde_json::json!({"error": code, "message": message}),
        )
    };
    let Ok(db) = db.lock() else {
        return err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "local",
            "database lock poisoned",
        );
    };
    let get = method == hyper::Method::GET;
    let post = method == hyper::Method::POST;
    match path {
        "/dashboard" | "/dashboard/" if get => {
            reply(StatusCode::OK, "text/html; charset=utf-8", PAGE)
        }
        "/dashboard/app.js" if get => {
            reply(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT)
        }
        "/dashboard/app.css" if get => reply(StatusCode::OK, "text/css; charset=utf-8", STYLE),
        "/dashboard/login" if post => {
            let address = client.to_string();
            let wait = wait_before_login(&db, &address, now);
            if wait > 0 {
                tracing::warn!(client = %address, wait_secs = wait, "dashboard login refused: too many wrong passwords from this address");
                let mut r = err(
                    StatusCode::TOO_MANY_REQUESTS,
                    "throttled",
                    &format!("too many wrong passwords from this address: try again in {wait} s"),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait));
                return r;
            }
            let given = given_password(headers, body);
            match password_ok(settings, &given) {
                Ok(true) => match open_session(&db, now, settings.session_hours) {
                    Ok(token) => {
                        tracing::info!(client = %address, "dashboard login");
                        let mut r = json(StatusCode::OK, &serde_json::json!({"result": "ok"}));
                        let cookie = format!(
                            "{COOKIE}={token}; Path=/dashboard; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
                            settings.session_hours.max(1) * 3600
                        );
                        if let Ok(v) = HeaderValue::from_str(&cookie) {
                            r.headers_mut().insert(header::SET_COOKIE, v);
                        }
                        r
                    }
                    Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, "local", &e),
                },
                Ok(false) => {
                    if let Err(e) = db.note_wrong_password(&address, now) {
                        tracing::error!("dashboard login: {e}");
                    }
                    tracing::warn!(client = %address, "dashboard login refused: wrong password");
                    err(StatusCode::UNAUTHORIZED, "wrong_password", "wrong password")
                }
                Err(e) => {
                    tracing::error!("dashboard login: {e}");
                    err(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no_password",
                        "the dashboard's password file cannot be read; see the shore's log",
                    )
                }
            }
        }
        "/dashboard/logout" if post => {
            if let Some(t) = session_cookie(headers) {
                if let Err(e) = db.close_session(&digest(&t)) {
                    return err(StatusCode::INTERNAL_SERVER_ERROR, "local", &e.to_string());
                }
            }
            let mut r = json(StatusCode::OK, &serde_json::json!({"result": "ok"}));
            r.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_static(
                    "vs_session=; Path=/dashboard; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
                ),
            );
            r
        }
        "/dashboard/api/fleet" if get => {
            let valid = session_cookie(headers)
                .map(|t| db.session_valid(&digest(&t), now))
                .transpose();
            match valid {
                Ok(Some(true)) => {}
                Ok(_) => return err(StatusCode::UNAUTHORIZED, "login", "log in first"),
                Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, "local", &e.to_string()),
            }
            match fleet_api(cfg, &db, now) {
                Ok(v) => json(StatusCode::OK, &v),
                Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, "local", &e),
            }
        }
        _ => err(StatusCode::NOT_FOUND, "not_found", "no such page"),
    }
}

/// The fleet view with every vessel's hourly history.
fn fleet_api(cfg: &ShoreConfig, db: &ShoreStore, now: i64) -> Result<serde_json::Value, String> {
    let fleet = fleet_view(cfg, db, now)?;
    let mut view = fleet.json(db);
    let since = now - HISTORY_DAYS * 86_400;
    let mut history = serde_json::Map::new();
    for r in &fleet.vessels {
        let id = r.id();
        let points = db.history(id, since).map_err(|e| e.to_string())?;
        history.insert(
            id.to_string(),
            serde_json::to_value(points).map_err(|e| e.to_string())?,
        );
    }
    view["history"] = history.into();
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_from_one_address_never_lock_out_another_and_waits_grow() {
        let dir = tempfile::tempdir().unwrap();
        let db = ShoreStore::open(&dir.path().join("shore.db")).unwrap();
        let now = 1_000_000;
        for i in 0..5 {
            assert_eq!(wait_before_login(&db, "203.0.113.9", now + i), 0);
            db.note_wrong_password("203.0.113.9", now + i).unwrap();
        }
        assert_eq!(wait_before_login(&db, "203.0.113.9", now + 4), 60);
        assert_eq!(
            wait_before_login(&db, "198.51.100.7", now + 4),
            0,
            "another address is free"
        );
        db.note_wrong_password("203.0.113.9", now + 70).unwrap();
        assert_eq!(
            wait_before_login(&db, "203.0.113.9", now + 70),
            120,
            "the wait doubles"
        );
        for i in 0..20 {
            db.note_wrong_password("203.0.113.9", now + 80 + i).unwrap();
        }
        assert_eq!(
            wait_before_login(&db, "203.0.113.9", now + 99),
            MAX_WAIT,
            "capped at an hour"
        );
    }

    #[test]
    fn a_form_login_reads_the_same_password_as_a_json_one() {
        let mut form = hyper::HeaderMap::new();
        form.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert_eq!(
            given_password(&form, b"user=x&password=c%C3%A4pt+n%26%3D1%"),
            "cäpt n&=1%"
        );
        let json = hyper::HeaderMap::new();
        assert_eq!(
            given_password(&json, r#"{"password":"cäpt n&=1%"}"#.as_bytes()),
            "cäpt n&=1%"
        );
    }
}
