//! Running under systemd: readiness only after the journal is migrated, watchdog pings from the
//! work loop, a human status line, STOPPING=1 and a clean exit on SIGTERM; the unit file passes
//! `systemd-analyze verify`.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

struct Notify {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl Notify {
    /// Binds a notify socket in the vessel's directory, as systemd hands one to the service.
    fn bind(v: &Vessel) -> (Self, std::path::PathBuf) {
        let path = v.path("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let n = Notify {
            sock,
            seen: Vec::new(),
        };
        (n, path)
    }

    /// Reads notifications until one satisfies `want`; fails after 60 s.
    fn until(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let mut buf = [0u8; 4096];
        let start = std::time::Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no {what} within 60 s; got {:?}",
                self.seen
            );
            let n = self
                .sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {what} from the agent ({e}); got {:?}", self.seen));
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(msg.clone());
            if want(&msg) {
                return msg;
            }
        }
    }
}

/// The agent as systemd starts the `Type=notify` unit, with a 300 ms watchdog.
fn agent_under_systemd(v: &Vessel, sock: &std::path::Path) -> Command {
    let mut c = Command::new(bin());
    c.args(["agent", "--config", v.config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", sock)
        .env("WATCHDOG_USEC", "300000")
        .env_remove("WATCHDOG_PID");
    c
}

#[test]
fn notify_ready_after_migration_watchdog_from_the_loop_and_stopping_on_sigterm() {
    let v = Vessel::new();
    let (mut n, sock_path) = Notify::bind(&v);
    let mut child = Daemon::spawn(
        agent_under_systemd(&v, &sock_path)
            .env_remove("VESSEL_SYNC_FAILPOINT")
            .stderr(Stdio::null()),
    );

    let ready = n.until("READY=1", |m| m.lines().any(|l| l == "READY=1"));
    assert!(ready.contains("STATUS=watching"), "{ready}");
    // The journal is migrated by the time READY=1 is sent.
    let store = v.store();
    assert!(store.overview().is_ok(), "journal readable at READY");
    assert!(
        n.seen.len() == 1,
        "READY=1 is the first notification: {:?}",
        n.seen
    );

    for _ in 0..3 {
        n.until("WATCHDOG=1", |m| m.trim_end() == "WATCHDOG=1");
    }

    // The agent keeps working: a bad file is quarantined, a good bundle applied, and the status
    // line says so.
    std::fs::write(v.path("junk"), b"not a bundle").unwrap();
    v.drop_in(&v.path("junk"), "junk.vsb");
    let b = v.bundle("b.vsb", ack(1, 11));
    v.drop_in(&b, "good.vsb");
    n.until("a status line with the bundle done", |m| {
        m.contains("STATUS=1 bundles done")
    });
    assert!(v.reason("junk.vsb").unwrap().contains("not_zstd"));
    n.until("WATCHDOG=1 after work", |m| m.trim_end() == "WATCHDOG=1");

    child.signal(libc::SIGTERM);
    n.until("STOPPING=1", |m| m.lines().any(|l| l == "STOPPING=1"));
    let status = child.0.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert_eq!(v.store().ack("outbox").unwrap().unwrap().acked_seq, 11);
}

#[test]
fn a_hung_work_loop_stops_the_watchdog_pings_so_systemd_restarts_the_service() {
    let v = Vessel::new();
    let (mut n, sock_path) = Notify::bind(&v);
    let log = v.path("agent.log");
    let _child = Daemon::spawn(
        agent_under_systemd(&v, &sock_path)
            // The work loop gets stuck inside the first command, as if a driver never returned.
            .env("VESSEL_SYNC_FAILPOINT", "command.after-start:hang")
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    n.until("READY=1", |m| m.lines().any(|l| l == "READY=1"));
    n.until("WATCHDOG=1", |m| m.trim_end() == "WATCHDOG=1");
    let b = v.bundle("b.vsb", ack(1, 11));
    v.drop_in(&b, "good.vsb");
    // Wait until the loop is stuck (the failpoint says so on stderr) ...
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("failpoint command.after-start: hanging")
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the agent never reached the command"
        );
        let _ = n.sock.recv(&mut [0u8; 4096]);
    }
    // ... then drain what was sent before, and see silence for ten watchdog intervals: systemd
    // (WatchdogSec=) would kill and restart the service.
    n.sock
        .set_read_timeout(Some(Duration::from_millis(3000)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut after = Vec::new();
    while let Ok(k) = n.sock.recv(&mut buf) {
        after.push(String::from_utf8_lossy(&buf[..k]).into_owned());
        assert!(
            after.len() < 5,
            "pings go on while the loop is stuck: {after:?}"
        );
    }
}

#[test]
fn a_second_agent_on_the_same_state_is_refused() {
    let v = Vessel::new();
    v.once();
    let mut child = Daemon::spawn(
        Command::new(bin())
            .args(["agent", "--config", v.config.to_str().unwrap()])
            .env_remove("NOTIFY_SOCKET")
            .stderr(Stdio::null()),
    );
    // Wait until the first agent holds the lock (it shows as running in status).
    let mut running = false;
    for _ in 0..600 {
        let s = v.run(&["status", "--json", "--config", v.config.to_str().unwrap()]);
        let s: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
        if s["agent_running"] == true {
            running = true;
            break;
        }
        std::thread::yield_now();
    }
    assert!(running, "the first agent never took its lock");
    let out = v.run(&["agent", "--once", "--config", v.config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(75), "EX_TEMPFAIL");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    child.signal(libc::SIGTERM);
    assert!(child.0.wait().unwrap().success());
}

fn unit_with_test_binary(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(
        concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/").to_string() + name,
    )
    .unwrap();
    let path = dir.join(std::path::Path::new(name).file_name().unwrap());
    std::fs::write(&path, unit.replace("/usr/bin/vessel-sync", bin())).unwrap();
    path
}

/// `systemd-analyze security --offline=true` exposure score of a unit file.
fn exposure(unit: &std::path::Path) -> f64 {
    let name = unit.file_name().unwrap().to_str().unwrap();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    report
        .lines()
        .find_map(|l| l.split(&format!("{name}: ")).nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in: {report}"))
}

#[test]
fn both_units_pass_systemd_analyze_verify_and_are_well_hardened() {
    let dir = tempfile::tempdir().unwrap();
    // (unit, lines it must hold): the agent runs as the web server's user so that Moodle's CLI
    // works; the shore receiver as its own sysusers user, with no capabilities.
    let cases: [(&str, &[&str]); 2] = [
        (
            "vessel-sync.service",
            &[
                "Type=notify",
                "WatchdogSec=",
                "RestartPreventExitStatus=78",
                "ExecStartPre=",
                "User=www-data",
                "ReadWritePaths=-/var/moodledata",
                "StateDirectory=vessel-sync",
            ],
        ),
        (
            "shore/vessel-sync-shore.service",
            &[
                "User=vessel-sync",
                "StateDirectory=vessel-sync-shore",
                "RestartPreventExitStatus=78",
                "ConditionPathExists=/etc/vessel-sync/shore.toml",
                "MemoryDenyWriteExecute=yes",
            ],
        ),
    ];
    for (name, needed) in cases {
        let unit = unit_with_test_binary(dir.path(), name);
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .expect("systemd-analyze (package systemd) is needed");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "verify {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&unit).unwrap();
        let common = [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateUsers=yes",
            "CapabilityBoundingSet=\n",
            "SystemCallFilter=@system-service",
        ];
        for line in needed.iter().chain(common.iter()) {
            assert!(text.contains(line), "{name} lacks {line:?}");
        }
        let score = exposure(&unit);
        assert!(score <= 2.0, "{name}: exposure {score} is above 2.0");
    }
    // The sysusers file creates the shore receiver's user, whose home is its state directory.
    let sysusers = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/vessel-sync.sysusers"
    ))
    .unwrap();
    assert!(
        sysusers
            .lines()
            .any(|l| l.starts_with("u vessel-sync ") && l.contains("/var/lib/vessel-sync-shore"))
    );
}

#[test]
fn root_refuses_to_work_on_the_service_users_state_directory() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to own a directory by another user");
        return;
    }
    let v = Vessel::new();
    let state = v.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let c = std::ffi::CString::new(state.to_str().unwrap()).unwrap();
    // SAFETY: chown with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
    let out = v.run(&["agent", "--once", "--config", v.config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(77));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sudo -u nobody vessel-sync"));
    assert!(
        !state.join("journal.db").exists(),
        "nothing was written as root"
    );
}

#[test]
fn the_watchdog_stays_fed_while_a_sync_waits_on_a_dead_link_and_sigterm_still_stops() {
    use crate::support::shore::{Shore, linked_vessel, seed};
    use testkit::faultproxy::{Fault, Proxy};
    let mut shore = Shore::new();
    shore.start();
    let proxy = Proxy::start(shore.addr()).unwrap();
    proxy.set_fault(Fault::Blackhole);
    // Requests time out after 3 s; the watchdog wants a ping every 150 ms.
    let v = linked_vessel(
        &shore,
        &format!("https://127.0.0.1:{}", proxy.addr.port()),
        "",
    );
    seed(&v, 10, 0);
    let (mut n, sock_path) = Notify::bind(&v);
    // The agent's log goes to a file, printed if the test fails.
    let log = v.path("agent.log");
    let child = Daemon::spawn(
        agent_under_systemd(&v, &sock_path).stderr(std::fs::File::create(&log).unwrap()),
    );
    struct ShowLog(std::path::PathBuf);
    impl Drop for ShowLog {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!(
                    "agent log:\n{}",
                    std::fs::read_to_string(&self.0).unwrap_or_default()
                );
            }
        }
    }
    let _show = ShowLog(log);
    n.until("READY=1", |m| m.lines().any(|l| l == "READY=1"));
    // Wait until the agent's request sits in the blackhole, then count pings while it hangs.
    let t = std::time::Instant::now();
    while proxy.state.faults.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the agent never tried to sync"
        );
        n.until("WATCHDOG=1", |m| m.trim_end() == "WATCHDOG=1");
    }
    let hung = std::time::Instant::now();
    let mut pings = 0;
    while hung.elapsed() < Duration::from_millis(1500) {
        n.until("WATCHDOG=1 during the hung request", |m| {
            m.trim_end() == "WATCHDOG=1"
        });
        pings += 1;
    }
    assert!(
        pings >= 4,
        "{pings} pings in 1.5 s while the request hung: {:?}",
        n.seen
    );
    // The request times out; the failure is recorded and the loop carries on.
    let t = std::time::Instant::now();
    loop {
        let facts = v.store().facts().unwrap();
        if facts
            .get("last_error")
            .is_some_and(|e| e.contains("cannot reach shore"))
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no failure recorded: {facts:?}"
        );
        n.until("WATCHDOG=1", |m| m.trim_end() == "WATCHDOG=1");
    }
    child.signal(libc::SIGTERM);
    n.until("STOPPING=1", |m| m.lines().any(|l| l == "STOPPING=1"));
    let mut child = child;
    assert!(child.0.wait().unwrap().success());
}

/// `systemctl reload vessel-sync` (SIGHUP) exchanges with shore now, though the idle vessel's
/// next check-in is an hour away.
#[test]
fn sighup_makes_an_idle_agent_exchange_with_shore_now() {
    use crate::support::shore::{Shore, linked_vessel};
    use std::sync::atomic::Ordering;
    use testkit::faultproxy::Proxy;
    let mut shore = Shore::new();
    shore.start();
    let proxy = Proxy::start(shore.addr()).unwrap();
    let v = linked_vessel(
        &shore,
        &format!("https://127.0.0.1:{}", proxy.addr.port()),
        "",
    );
    let (mut n, sock_path) = Notify::bind(&v);
    let child = Daemon::spawn(agent_under_systemd(&v, &sock_path).stderr(Stdio::null()));
    n.until("READY=1", |m| m.lines().any(|l| l == "READY=1"));
    let connections = || proxy.state.connections.load(Ordering::SeqCst);
    let t = std::time::Instant::now();
    while connections() == 0 {
        assert!(t.elapsed() < Duration::from_secs(20), "no first check-in");
        n.until("WATCHDOG=1", |m| m.trim_end() == "WATCHDOG=1");
    }
    // Idle: the next check-in is due in an hour.
    let t = std::time::Instant::now();
    loop {
        let state = v.store().uplink_state().unwrap();
        if state.last_contact_at.is_some() {
            assert!(
                state.next_attempt_at >= now() + 3000,
                "idle cadence: {:?}",
                state.next_attempt_reason
            );
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no contact recorded");
        n.until("WATCHDOG=1", |m| m.trim_end() == "WATCHDOG=1");
    }
    child.signal(libc::SIGHUP);
    let t = std::time::Instant::now();
    while connections() < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "SIGHUP did not make the agent exchange with shore"
        );
        n.until("WATCHDOG=1", |m| m.trim_end() == "WATCHDOG=1");
    }
    child.signal(libc::SIGTERM);
    n.until("STOPPING=1", |m| m.lines().any(|l| l == "STOPPING=1"));
    let mut child = child;
    assert!(child.0.wait().unwrap().success());
}
