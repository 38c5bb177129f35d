//! Exit codes (from sysexits.h), so scripts and systemd can tell failures apart.

/// Success.
pub const OK: i32 = 0;
/// A generic failure (a verification that failed, a command that did not succeed).
pub const FAILURE: i32 = 1;
/// Wrong usage (clap also exits 2 for parse errors).
pub const USAGE: i32 = 64;
/// Input data is bad (an invalid bundle).
pub const DATAERR: i32 = 65;
/// An input file does not exist or cannot be read.
pub const NOINPUT: i32 = 66;
/// A service is unavailable (Moodle unreachable or refusing the token); try again later.
pub const UNAVAILABLE: i32 = 69;
/// Internal error.
pub const SOFTWARE: i32 = 70;
/// Permission denied (root on the service user's state directory).
pub const NOPERM: i32 = 77;
/// I/O error (disk, database).
pub const IOERR: i32 = 74;
/// Temporary failure (another agent holds the lock); try again later.
pub const TEMPFAIL: i32 = 75;
/// Bad configuration; systemd is told not to restart on it (`RestartPreventExitStatus=78`).
pub const CONFIG: i32 = 78;

/// Lets a report piped into `head` or `less` end quietly when the reader closes the pipe (the
/// default action of SIGPIPE, as for any Unix tool) instead of failing on its next write. Only
/// for commands that read and print: never for the agent, the receiver or a command that feeds
/// a child process through a pipe, which must see the error instead of dying.
pub fn quiet_on_closed_pipe() {
    // SAFETY: resets one signal's disposition to the default; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
