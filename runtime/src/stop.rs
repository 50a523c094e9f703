//! The signals that ask a service to stop: SIGTERM (what Kubernetes sends, then SIGKILL after the
//! pod's grace period) and SIGINT (Ctrl-C). One place for the Tokio services (gateway, API,
//! sink), so they stop on the same two; the processor's engine threads, which run no Tokio
//! runtime, watch a flag that `signal-hook` sets on the same two.

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};

/// A future that resolves with the signal's name when SIGTERM or SIGINT arrives. The handlers
/// are installed by this call, not when the future is first polled: call it at start, so a
/// signal that comes early is not missed (or kills the process, as it does without a handler).
/// Needs a Tokio runtime with signals enabled.
pub fn stop_signal() -> std::io::Result<impl Future<Output = &'static str> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}
