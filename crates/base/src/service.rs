//! Talking to systemd and to the journal.
//!
//! [`Notifier`] sends `READY=1`, `STATUS=`, `WATCHDOG=1` and `STOPPING=1` to `$NOTIFY_SOCKET`
//! (a no-op when the variable is unset, i.e. outside systemd). [`init_logging`] sends logs to
//! journald with structured fields (`BUNDLE_ID`, `COMMAND_ID`, ...) when stderr is connected to
//! the journal (`$JOURNAL_STREAM`), and to stderr otherwise. [`raise_open_files_limit`] lets a
//! server use the open-files limit systemd granted it.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// systemd notification sender.
#[derive(Debug)]
pub struct Notifier {
    watchdog: Option<Duration>,
    last_ping: std::cell::Cell<Option<std::time::Instant>>,
}

impl Notifier {
    /// Reads `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment, as libsystemd's
    /// `sd_watchdog_enabled` does: the watchdog is on when `WATCHDOG_USEC` is a positive number
    /// and `WATCHDOG_PID` is unset or names this process.
    pub fn from_env() -> Self {
        let usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        let pid_ok = match std::env::var("WATCHDOG_PID") {
            Err(_) => true,
            Ok(p) => p.parse::<u32>().ok() == Some(std::process::id()),
        };
        let watchdog = usec.filter(|u| *u > 0 && pid_ok).map(Duration::from_micros);
        Self {
            watchdog,
            last_ping: std::cell::Cell::new(None),
        }
    }

    /// How often the work loop must ping: half the watchdog period, if a watchdog is set.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.watchdog
            .map(|w| (w / 2).max(Duration::from_millis(100)))
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!(error = %e, "could not notify systemd");
        }
    }

    /// Start-up finished: database migrated, inbox armed.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A human status line for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// Watchdog keep-alive, sent from the work loop.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.last_ping.set(Some(std::time::Instant::now()));
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// Keep-alive from inside a long step (extracting a large bundle): pings only when a
    /// quarter of the watchdog period has passed since the last ping, so it is cheap to call
    /// for every block. A step that makes progress is not a hung loop.
    pub fn keepalive(&self) {
        if let Some(period) = self.watchdog {
            let due = self
                .last_ping
                .get()
                .is_none_or(|t| t.elapsed() >= period / 4);
            if due {
                self.watchdog();
            }
        }
    }

    /// Runs `f` (a capture or a sync cycle, which block in a database query or an HTTP request
    /// for a while) while a helper thread keeps the watchdog fed, but for at most `max`: a step
    /// that is still not done by then stops being covered, so a truly hung step still gets the
    /// service restarted.
    pub fn keepalive_during<T>(&self, max: Duration, f: impl FnOnce() -> T) -> T {
        let Some(interval) = self.ping_interval() else {
            return f();
        };
        self.watchdog();
        let (done, rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let started = std::time::Instant::now();
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(interval)
                {
                    if started.elapsed() < max {
                        let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                    }
                }
            });
            let out = f();
            drop(done);
            out
        })
    }

    /// Shutting down.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

/// Installs the global logger. `level` is a tracing filter (`info`, `debug`,
/// `vessel_sync=debug`); `RUST_LOG` overrides it.
pub fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_field_prefix(None)
                .with_syslog_identifier("vessel-sync".into());
            let _ = registry.with(layer).try_init();
            return;
        }
    }
    let _ = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                // Colour only for a person at a terminal: a log file or a pipe gets plain text.
                .with_ansi(
                    std::io::IsTerminal::is_terminal(&std::io::stderr())
                        && std::env::var_os("NO_COLOR").is_none(),
                )
                .compact(),
        )
        .try_init();
}

/// Raises this process's soft limit of open files to its hard limit (systemd's `LimitNOFILE=`,
/// or the shell's `ulimit -Hn`), as a server that holds a connection per client needs; returns
/// the soft limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    // rlim_t is 32 bits wide on armhf.
    #[allow(clippy::useless_conversion)]
    u64::try_from(lim.rlim_cur).unwrap_or(u64::MAX)
}
