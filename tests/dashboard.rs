//! The fleet dashboard over the real HTTPS listener: the operator's login (a wrong password and
//! a vessel's token refused), the fleet JSON with a lagging vessel first and behind, agreeing
//! with `shore status --json`, and the page's policy keeping its script on its own origin.

use crate::support::VESSEL;
use crate::support::shore::{Shore, linked_vessel, seed, sync};

fn with_dashboard(shore: &Shore) {
    base::fsutil::write_private(
        &shore.path("dashboard.password"),
        b"correct horse battery\n",
    )
    .unwrap();
    let mut cfg = std::fs::read_to_string(shore.path("shore.toml")).unwrap();
    cfg.push_str("[dashboard]\npassword_file = \"dashboard.password\"\n");
    std::fs::write(shore.path("shore.toml"), cfg).unwrap();
}

/// A shore serving the dashboard, with two vessels: the test's, which synced 30 records, and
/// mv-lagging, which last reported 5,000 records on board, the oldest three days old.
/// Returns (shore, its URL, mv-lagging's token).
fn fleet_with_a_lagging_vessel() -> (Shore, String, String) {
    let mut shore = Shore::new();
    with_dashboard(&shore);
    shore.start();
    let url = format!("https://127.0.0.1:{}", shore.port);
    let v = linked_vessel(&shore, &url, "");
    seed(&v, 30, 0);
    sync(&v);
    let key = shore.path("keys/mv-lagging");
    wire::envelope::SecretKey::from_seed([8u8; 32])
        .write_pair(&key, "mv-lagging")
        .unwrap();
    let r = shore.run(&[
        "vessel",
        "add",
        "mv-lagging",
        "--pubkey",
        shore.path("keys/mv-lagging.pub").to_str().unwrap(),
        "--token-out",
        shore.path("lagging.token").to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let lag_token = std::fs::read_to_string(shore.path("lagging.token"))
        .unwrap()
        .trim()
        .to_string();
    let poll = shore
        .client()
        .post(format!("{url}/v1/sync"))
        .header("authorization", format!("Bearer {lag_token}"))
        .header("x-vessel-id", "mv-lagging")
        .header("x-oldest-unsent", "259200")
        .header("x-outbox-depth", "5000")
        .send()
        .unwrap();
    assert!(poll.status().is_success());
    (shore, url, lag_token)
}

#[test]
fn the_dashboard_shows_the_lagging_vessel_first_behind_a_login_that_refuses_wrong_passwords() {
    let (mut shore, url, lag_token) = fleet_with_a_lagging_vessel();
    let c = shore.client();
    // No session: nothing. A vessel's token opens nothing either.
    let api = format!("{url}/dashboard/api/fleet");
    assert_eq!(c.get(&api).send().unwrap().status(), 401);
    let r = c
        .get(&api)
        .header("authorization", format!("Bearer {lag_token}"))
        .header("cookie", format!("vs_session={lag_token}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "a vessel's token is no login");
    let login = |password: &str| {
        c.post(format!("{url}/dashboard/login"))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "password": password }).to_string())
            .send()
            .unwrap()
    };
    assert_eq!(login("Correct horse battery").status(), 401);
    let ok = login("correct horse battery");
    assert_eq!(ok.status(), 200);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("Secure")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let fleet: serde_json::Value = serde_json::from_slice(
        &c.get(&api)
            .header("cookie", &session)
            .send()
            .unwrap()
            .bytes()
            .unwrap(),
    )
    .unwrap();
    let vessels = fleet["vessels"].as_array().unwrap();
    assert_eq!(vessels.len(), 2, "{fleet}");
    assert_eq!(vessels[0]["id"], "mv-lagging", "worst first: {fleet}");
    assert_eq!(vessels[0]["behind"], true, "{fleet}");
    assert_eq!(vessels[1]["id"], VESSEL, "{fleet}");
    assert_eq!(vessels[1]["behind"], false, "{fleet}");
    assert_eq!(vessels[1]["delivered_7d"], 30, "{fleet}");
    let points = fleet["history"]["mv-lagging"].as_array().unwrap();
    assert_eq!(points.len(), 1, "{fleet}");
    assert_eq!(points[0]["depth"], 5000, "{fleet}");

    // `shore status --json` says the same of every vessel.
    let status: serde_json::Value =
        serde_json::from_slice(&shore.run(&["status", "--json"]).stdout).unwrap();
    let strip = |v: &serde_json::Value| {
        v["vessels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                let mut x = x.clone();
                // Ages are rendered at the moment of asking.
                x.as_object_mut().unwrap().remove("last_contact_age");
                x
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&status), strip(&fleet));

    // The page: its script may talk to its own origin only.
    let page = c.get(format!("{url}/dashboard")).send().unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        policy.contains("connect-src 'self'") && policy.contains("script-src 'self'"),
        "{policy}"
    );
    assert!(page.text().unwrap().contains("/dashboard/app.js"));

    // Guessing is throttled per address: after 5 wrong passwords this address waits, even
    // with the right one, and says how long.
    for _ in 0..4 {
        assert_eq!(login("guess").status(), 401);
    }
    let held = login("correct horse battery");
    assert_eq!(held.status(), 429);
    assert_eq!(held.headers()["retry-after"], "60");
    // The training manager at another address is not locked out by those guesses, and a
    // plain HTML form's login works as the JSON one does.
    let other = shore.client_from("127.0.0.2");
    let form = other
        .post(format!("{url}/dashboard/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("password=correct+horse+battery")
        .send()
        .unwrap();
    assert_eq!(form.status(), 200, "{:?}", form.text());

    // Logged out, the session opens nothing.
    c.post(format!("{url}/dashboard/logout"))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(
        c.get(&api)
            .header("cookie", &session)
            .send()
            .unwrap()
            .status(),
        401
    );
    shore.stop();
}

/// What 30 days of hourly contacts leave in shore's history: a backlog growing from 0 to 5,000
/// records, its oldest record aging by the hour, so the chart has two long lines to draw.
fn thirty_days_of_a_growing_backlog(shore: &Shore, vessel: &str) {
    let db = rusqlite::Connection::open(shore.path("state/shore.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let now = crate::support::now();
    let last = now - now.rem_euclid(3600) - 3600;
    let hours = 30 * 24 - 2;
    for i in 0..hours {
        let hour = last - (hours - 1 - i) * 3600;
        db.execute(
            "INSERT OR REPLACE INTO vessel_history(vessel, hour, depth, oldest_unsent) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![vessel, hour, i * 5000 / hours, (i % 72) * 3600],
        )
        .unwrap();
    }
}

#[test]
fn in_a_real_headless_chromium_the_manager_logs_in_and_sees_the_lagging_vessel_first_and_its_chart()
{
    let bin = crate::support::browser::chromium()
        .expect("Debian's chromium is needed (scripts/test.sh installs it)");
    let (mut shore, url, _) = fleet_with_a_lagging_vessel();
    thirty_days_of_a_growing_backlog(&shore, "mv-lagging");
    let mut b = crate::support::browser::Browser::start(&bin);
    b.call(
        "Page.navigate",
        serde_json::json!({"url": format!("{url}/dashboard")}),
    );
    b.until("document.getElementById('login') && !document.getElementById('login').hidden");
    // A wrong password is refused and shows nothing of the fleet.
    b.eval("document.getElementById('password').value = 'wrong'; document.getElementById('login').requestSubmit(); true");
    b.until("document.body.dataset.refused === 'yes'");
    assert_eq!(
        b.eval("document.getElementById('login-error').textContent"),
        "Wrong password."
    );
    // What the screen shows, not only the attributes: the page's own CSS must not override
    // `hidden` (a login form left on screen beside the fleet, as once happened).
    let shown = |b: &mut crate::support::browser::Browser, id: &str| {
        b.eval(&format!(
            "document.getElementById('{id}').getClientRects().length > 0"
        ))
    };
    assert_eq!(shown(&mut b, "fleet"), false, "no fleet before login");
    assert_eq!(shown(&mut b, "login"), true);
    b.eval("document.getElementById('password').value = 'correct horse battery'; document.getElementById('login').requestSubmit(); true");
    b.until("document.body.dataset.loaded === 'yes'");
    assert_eq!(
        shown(&mut b, "login"),
        false,
        "the login form is gone once logged in"
    );
    assert_eq!(shown(&mut b, "fleet"), true);
    let rows = b.eval(
        "[...document.querySelectorAll('#vessels tbody tr')].map(r => [r.dataset.vessel, r.className, r.querySelector('.state').textContent])",
    );
    assert_eq!(
        rows,
        serde_json::json!([["mv-lagging", "behind", "BEHIND"], [VESSEL, "", "ok"]]),
        "the lagging vessel first, marked behind"
    );
    // The chart, as the screen shows it: lines drawn, not a blank box.
    let rect = b.eval(
        "(() => { const r = document.getElementById('chart').getBoundingClientRect(); window.scrollTo(0, 0); return [r.x, r.y, r.width, r.height]; })()",
    );
    let r: Vec<f64> = rect
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(r[2] > 100.0 && r[3] > 100.0, "{rect}");
    let png = b.screenshot(r[0], r[1], r[2], r[3]);
    let (w, h, px) = crate::support::browser::decode_png(&png);
    assert!(w >= 100 && h >= 100, "{w}x{h}");
    let coloured = px
        .iter()
        .filter(|p| {
            let (max, min) = (p[0].max(p[1]).max(p[2]), p[0].min(p[1]).min(p[2]));
            max - min > 60
        })
        .count();
    // Two lines across 30 days are thousands of pixels (about 9,500 here); dots or axes are not.
    assert!(
        coloured > 3000,
        "the chart area shows {coloured} coloured pixels of {}",
        w * h
    );
    // Every request the page made went to its own origin.
    let origin = format!("{url}/");
    assert!(!b.requests.is_empty());
    assert!(
        b.requests.iter().all(|u| u.starts_with(&origin)),
        "{:?}",
        b.requests
    );
    drop(b);
    shore.stop();
}
