//! The agent's locks on its state directory. `agent.lock` is held for the agent's life: one
//! agent per state directory. `work.lock` is held while someone works on the journal (the
//! agent during a pass, a capture or a sync; `vessel-sync capture`, `sync` and `rotate-key`
//! for their run), so an operator's command waits for the agent's current step, saying so,
//! instead of failing on a busy journal; and root is kept off a service user's directory.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{AgentError, io_err};

pub(super) fn lock(state_dir: &Path) -> Result<File, AgentError> {
    let path = state_dir.join("agent.lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_err("opening", &path, e))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(AgentError::Locked(state_dir.to_path_buf()));
    }
    Ok(f)
}

/// Root must not work on a state directory that belongs to another user (the service's): the
/// journal, work and archive files it created would be root's and the service could not use them.
pub fn check_owner(state_dir: &Path) -> Result<(), AgentError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(state_dir).map_err(|e| io_err("reading", state_dir, e))?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 && meta.uid() != 0 {
        let name = user_name(meta.uid()).unwrap_or_else(|| format!("'#{}'", meta.uid()));
        return Err(AgentError::WrongUser(
            state_dir.to_path_buf(),
            meta.uid(),
            name,
        ));
    }
    Ok(())
}

/// The login name of `uid` from the password database (the packaged agent runs as the web
/// server's user, `www-data` on Debian), or `None` when it has none.
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to overwrite.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf` is as long as we say.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// True when an agent holds the lock of `state_dir` right now.
pub fn is_running(state_dir: &Path) -> bool {
    let Ok(f) = File::open(state_dir.join("agent.lock")) else {
        return false;
    };
    // SAFETY: as in `lock`.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0
}

/// Held while working on the journal; released when dropped (the file stays open for that).
#[derive(Debug)]
pub struct WorkLock {
    _file: File,
}

fn work_lock_file(state_dir: &Path) -> Result<File, AgentError> {
    let path = state_dir.join("work.lock");
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_err("opening", &path, e))
}

fn flock(f: &File, op: libc::c_int) -> bool {
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    unsafe { libc::flock(f.as_raw_fd(), op) == 0 }
}

impl WorkLock {
    /// Takes `STATE_DIR/work.lock`, waiting for whoever holds it; `waiting` is called once
    /// before a wait (to say what the caller waits for).
    pub fn acquire(state_dir: &Path, waiting: impl FnOnce()) -> Result<Self, AgentError> {
        let f = work_lock_file(state_dir)?;
        if !flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
            waiting();
            if !flock(&f, libc::LOCK_EX) {
                return Err(io_err(
                    "locking",
                    &state_dir.join("work.lock"),
                    std::io::Error::last_os_error(),
                ));
            }
        }
        Ok(Self { _file: f })
    }

    /// Takes the lock only if nobody holds it.
    pub fn try_acquire(state_dir: &Path) -> Result<Option<Self>, AgentError> {
        let f = work_lock_file(state_dir)?;
        Ok(flock(&f, libc::LOCK_EX | libc::LOCK_NB).then_some(Self { _file: f }))
    }
}

#[cfg(test)]
mod tests {
    use super::WorkLock;

    #[test]
    fn an_operator_waits_for_the_agents_step_and_then_works() {
        let dir = tempfile::tempdir().unwrap();
        let held = WorkLock::acquire(dir.path(), || panic!("free at first")).unwrap();
        assert!(WorkLock::try_acquire(dir.path()).unwrap().is_none());
        let (tx, rx) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let lock = WorkLock::acquire(&path, || tx.send("waiting").unwrap()).unwrap();
            drop(lock);
        });
        // The operator said it waits before the agent's step ended.
        assert_eq!(rx.recv().unwrap(), "waiting");
        drop(held);
        waiter.join().unwrap();
        assert!(WorkLock::try_acquire(dir.path()).unwrap().is_some());
    }
}
