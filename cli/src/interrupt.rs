//! Ctrl-C, SIGTERM and SIGHUP: what a command was writing goes with it. The default action ended
//! the process where it stood, so an interrupted `simulate` or `replay` left its hidden
//! `.partial-…` output behind (a dataset of gigabytes, under a name no one would look for).
//!
//! One thread takes the signals for the whole process. It removes every output not yet whole
//! ([`Replacing`](crate::paths::Replacing) registers them here) and ends the process with status
//! 128 + the signal, as the shell reports a process the signal ended. A command that stops
//! cleanly on a signal (`tail`, `export`: [`stop_flag`]) gets the first signal as a request to
//! stop; a second one ends it as above.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Outputs being written, removed if a signal ends the process.
static PARTIAL: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Set by the first signal, for a command that stops on its own.
static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static INSTALLED: Once = Once::new();

fn install() {
    INSTALLED.call_once(|| {
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return; // The default actions stay: the process ends at a signal, as before.
        };
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if let Some(stop) = STOP.get() {
                        if !stop.swap(true, Ordering::SeqCst) {
                            continue;
                        }
                    }
                    // The lock is kept to the end: an output cannot be renamed into place (or
                    // registered) between its removal and the exit.
                    let partial = PARTIAL.lock().unwrap_or_else(|e| e.into_inner());
                    for path in partial.iter() {
                        let _ = std::fs::remove_file(path);
                    }
                    std::process::exit(128 + signal);
                }
            })
            .expect("a thread can be started");
    });
}

/// A flag the first signal sets, for a command that ends its work at the next chance; a second
/// signal ends the process.
pub fn stop_flag() -> Arc<AtomicBool> {
    let stop = STOP.get_or_init(|| Arc::new(AtomicBool::new(false))).clone();
    install();
    stop
}

/// `path` is removed if a signal ends the process before [`done`] is called for it.
pub fn remove_if_interrupted(path: &Path) {
    install();
    PARTIAL.lock().unwrap_or_else(|e| e.into_inner()).push(path.to_path_buf());
}

/// `path` is no longer the signal thread's to remove: `then` (renaming it into place, or removing
/// it) runs under the same lock, so a signal comes before it or after, never during.
pub fn done<T>(path: &Path, then: impl FnOnce() -> T) -> T {
    let mut partial = PARTIAL.lock().unwrap_or_else(|e| e.into_inner());
    let result = then();
    if let Some(at) = partial.iter().position(|p| p == path) {
        partial.swap_remove(at);
    }
    result
}
