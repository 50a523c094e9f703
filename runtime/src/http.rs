//! The accept loop every Pitgun HTTP server runs: the gateway, the performance API and the
//! health endpoints.
//!
//! `axum::serve` gives hyper no timer, so a client could hold a connection (and its task and
//! file descriptor) forever by sending a request's head a byte at a time, or by opening a
//! connection and sending nothing. Here hyper gets one and a deadline for each request's head,
//! counted from when the connection waits for it: a kept-alive connection idle that long is
//! closed too. Bodies have their own deadline where they are read (the gateway's
//! `--body-timeout`).

use std::future::Future;
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

/// The head deadline of servers without a flag for it (the API, the health endpoints).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` completes, then lets each connection finish the
/// request it is in and returns once all are closed. Handlers can read the client's address
/// with `ConnectInfo<SocketAddr>`.
pub async fn serve(listener: TcpListener, app: Router, header_timeout: Duration, shutdown: impl Future<Output = ()>) {
    // Each connection holds a receiver; closing is announced by a send, and the last receiver
    // dropped ends the wait below.
    let (closing, connections) = tokio::sync::watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was taken: the
                    // listener still works, so wait a moment rather than spin or stop serving.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let mut closing = connections.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
                app.clone().call(request)
            });
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = closing.changed() => {
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
    closing.send_replace(true);
    drop(connections);
    closing.closed().await;
}
