//! The accept loop every Pitgun HTTP server runs: the gateway, the performance API and the
//! health endpoints.
//!
//! `axum::serve` gives hyper no timer, so a client could hold a connection (and its task and
//! file descriptor) forever by sending a request's head a byte at a time, or by opening a
//! connection and sending nothing. Here hyper gets one and a deadline for each request's head,
//! counted from when the connection waits for it: a kept-alive connection idle that long is
//! closed too (hyper has no separate idle limit), so the deadline must be longer than the idle
//! timeout of a proxy in front, or the proxy may reuse a connection just as it is closed and
//! answer 502. Bodies have their own deadline where they are read (the gateway's
//! `--body-timeout`).

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::Service;

/// The head deadline of servers without a flag for it (the API, the health endpoints): longer
/// than the 60 s idle timeout of common load balancers (nginx, AWS ALB).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(75);

/// Serves `app` on `listener` until `shutdown` completes, then lets each connection finish the
/// request it is in and returns once all are closed (with no deadline of its own: a caller
/// that needs one selects on this future, as the gateway does with `--drain-timeout`).
/// Handlers can read the client's address with `ConnectInfo<SocketAddr>`.
pub async fn serve(listener: TcpListener, app: Router, header_timeout: Duration, shutdown: impl Future<Output = ()>) {
    // Each connection holds a receiver: the stop is announced by a send, and the last receiver
    // dropped ends the wait below.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // A client gone before its connection was taken: nothing to say.
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: the listener still works once some
                    // connections close, so wait rather than spin or stop serving.
                    tracing::error!("cannot accept a connection: {e}; trying again in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
                app.clone().call(request)
            });
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service).with_upgrades());
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                // A client's broken connection or a head past its deadline: theirs, not ours.
                tracing::debug!(%remote, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    stop_tx.send_replace(true);
    drop(stop_rx);
    stop_tx.closed().await;
}

/// What a 405 says: axum answers a method a route does not take with an empty body (and an
/// `Allow` header, which it adds to whatever answer a service's own handler gives).
pub fn method_not_allowed(method: &axum::http::Method, path: &str) -> String {
    format!("{path} does not take {method}; the Allow header lists what it takes")
}
