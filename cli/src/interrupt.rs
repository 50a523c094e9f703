//! Ctrl-C, SIGTERM and SIGHUP: what a command was writing goes with it. The default action ended
//! the process where it stood, so an interrupted `simulate` or `replay` left its hidden
//! `.partial-…` output behind (a dataset of gigabytes, under a name no one would look for).
//!
//! One thread takes the signals for the whole process. It removes every output not yet whole
//! ([`Replacing`](crate::paths::Replacing) registers them here), then lets the signal end the
//! process as its default action would (a shell script sees a child the signal killed, and
//! stops). A command that stops cleanly on a signal (`tail`, `export`: [`stop_flag`]) gets the
//! first signal as a request to stop; a second one ends it as above. A signal the process was
//! started ignoring (`nohup`, a script's background job) is left ignored.

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
        let taken: Vec<i32> = [SIGINT, SIGTERM, SIGHUP].into_iter().filter(|&s| !ignored(s)).collect();
        let Ok(mut signals) = signal_hook::iterator::Signals::new(taken) else {
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
                    // Resets the signal's default action and raises it again: the process ends
                    // here, by the signal.
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                    std::process::exit(128 + signal);
                }
            })
            .expect("a thread can be started");
    });
}

/// Whether the process was started with `signal` ignored: it stays so.
fn ignored(signal: i32) -> bool {
    // SAFETY: a null new action only reads the current one into `current`.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut current) == 0 && current.sa_sigaction == libc::SIG_IGN
    }
}

/// A flag the first signal sets, for a command that ends its work at the next chance; a second
/// signal ends the process.
pub fn stop_flag() -> Arc<AtomicBool> {
    let stop = STOP.get_or_init(|| Arc::new(AtomicBool::new(false))).clone();
    install();
    stop
}

/// `path` is removed if a signal ends the process before [`done`] is called for it. `create`
/// (the file's creation) runs under the same lock: a signal comes before the file exists or
/// after it is registered, never between.
pub fn remove_if_interrupted(path: &Path, create: impl FnOnce()) {
    install();
    let mut partial = PARTIAL.lock().unwrap_or_else(|e| e.into_inner());
    partial.push(path.to_path_buf());
    create();
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
