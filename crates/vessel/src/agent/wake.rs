//! What wakes the agent's work loop: an inotify watcher on the inbox (hints only: the loop
//! scans anyway) and a signal listener (SIGTERM and SIGINT stop, SIGHUP rescans and exchanges with shore now).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use super::AgentError;

/// Events that wake the work loop.
#[derive(Debug, Clone, Copy)]
pub enum Wake {
    /// Something changed in the inbox.
    Hint,
    /// SIGHUP: rescan the inbox and exchange with shore now.
    Now,
    /// Shut down.
    Stop,
}

/// Starts the threads that feed the work loop: an inotify watcher on the inbox (hints only) and
/// a signal listener (SIGTERM/SIGINT stop, SIGHUP rescans and exchanges with shore now). Returns the receiver and the watcher,
/// which must be kept alive.
pub fn wake_sources(
    inbox: &Path,
    stop: Arc<AtomicBool>,
) -> Result<(mpsc::Receiver<Wake>, Option<notify::RecommendedWatcher>), AgentError> {
    use notify::Watcher;
    let (tx, rx) = mpsc::channel();
    let hint = tx.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Only changes are hints: the scan's own directory reads raise access events, which
        // would otherwise wake the loop for ever.
        if let Ok(event) = res {
            if matches!(
                event.kind,
                notify::EventKind::Create(_)
                    | notify::EventKind::Modify(_)
                    | notify::EventKind::Remove(_)
            ) {
                let _ = hint.send(Wake::Hint);
            }
        }
    })
    .and_then(|mut w| {
        w.watch(inbox, notify::RecursiveMode::NonRecursive)
            .map(|()| w)
    });
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "no file-system events for the inbox; relying on periodic scans");
            None
        }
    };
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| AgentError::Io(format!("cannot install signal handlers: {e}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == signal_hook::consts::SIGHUP {
                    let _ = tx.send(Wake::Now);
                } else {
                    stop.store(true, Ordering::SeqCst);
                    let _ = tx.send(Wake::Stop);
                }
            }
        })
        .map_err(|e| AgentError::Io(format!("cannot start the signal thread: {e}")))?;
    Ok((rx, watcher))
}
