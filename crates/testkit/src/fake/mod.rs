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
//!
//! The parts: [`state`] (what the site holds), [`ws`] (one function a web-service function),
//! [`cli`] (Moodle's CLI scripts, reached through a `php` script it writes) and this file (the
//! HTTP server and [`FakeMoodle`], the handle a test holds).

pub mod cli;
pub mod state;
mod ws;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use state::{Course, State, User};

/// The fake `php`: argv to `/fake/cli` as `arg[N]`, the raw reply (`CODE`, `STDOUT_LEN`,
/// `STDERR_LEN` lines, then the bytes of both streams) played back.
const PHP_SCRIPT: &str = r#"#!/usr/bin/perl
# The stand-in Moodle's php (vessel-sync test kit): plays Moodle's CLI scripts.
use strict;
use warnings;
use IO::Socket::INET;
my $body = "format=raw";
for my $i (0 .. $#ARGV) {
    (my $v = $ARGV[$i]) =~ s/([^A-Za-z0-9_.~-])/sprintf("%%%02X", ord $1)/ge;
    $body .= "&arg%5B$i%5D=$v";
}
my $s = IO::Socket::INET->new(PeerAddr => "ADDR", Proto => "tcp")
    or do { print STDERR "fake-php: cannot reach the stand-in Moodle at ADDR: $!\n"; exit 69 };
binmode $s;
print $s "POST /fake/cli HTTP/1.1\r\nHost: ADDR\r\n"
    . "Content-Type: application/x-www-form-urlencoded\r\n"
    . "Content-Length: " . length($body) . "\r\nConnection: close\r\n\r\n" . $body;
local $/;
my $reply = <$s> // "";
my (undef, $rest) = split /\r\n\r\n/, $reply, 2;
my ($code, $olen, $elen, $streams) = split /\n/, ($rest // ""), 4;
defined $streams or do { print STDERR "fake-php: no answer from the stand-in Moodle\n"; exit 70 };
binmode STDOUT;
binmode STDERR;
print STDOUT substr($streams, 0, $olen);
print STDERR substr($streams, $olen, $elen);
exit $code;
"#;

/// The token the fake accepts.
pub const TOKEN: &str = "f00dfacef00dfacef00dfacef00dface";

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

    /// Writes a `php` for the agent's config that plays this site's CLI scripts (see [`cli`])
    /// and an empty code root with `admin/cli/`. Returns (php, moodle_dir).
    ///
    /// The `php` is a small Perl script (Perl is Essential on Debian): it posts its arguments to
    /// this site and plays back the script's output streams and exit code, so the agent runs a
    /// real process with real arguments, and the binary under test needs no test-kit code.
    pub fn php(
        &self,
        dir: &std::path::Path,
    ) -> io::Result<(std::path::PathBuf, std::path::PathBuf)> {
        use std::os::unix::fs::PermissionsExt;
        let code = dir.join("moodle-code");
        std::fs::create_dir_all(code.join("admin/cli"))?;
        let php = dir.join("fake-php");
        let addr = self.url.trim_start_matches("http://");
        std::fs::write(&php, PHP_SCRIPT.replace("ADDR", addr))?;
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
            ("200 OK", cli::raw(&cli::run(&mut lock(state), &form)))
        } else {
            ws::handle(state, &form)
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
