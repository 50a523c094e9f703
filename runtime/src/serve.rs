//! `/metrics`, `/healthz` and `/readyz`, the endpoints every Pitgun service serves.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};

/// What the health endpoints report.
#[derive(Clone)]
pub struct Health {
    /// Prometheus registry rendered at `/metrics`.
    pub registry: Registry,
    /// Whether `/readyz` answers 200 (set by the service: broker reachable, partitions assigned…).
    pub ready: Arc<AtomicBool>,
}

impl Health {
    /// A fresh registry, not ready.
    pub fn new(registry: Registry) -> Health {
        Health { registry, ready: Arc::new(AtomicBool::new(false)) }
    }
}

/// The three routes, to merge into a service's router.
pub fn routes(health: Health) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/healthz", get(|| async { "ok\n" })).route("/readyz", get(readyz)).with_state(health)
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    let mut families = h.registry.gather();
    families.extend(process_memory());
    let mut buf = Vec::new();
    TextEncoder::new().encode(&families, &mut buf).expect("text encoding cannot fail");
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf)
}

/// The process's resident memory now and at its peak, read at each scrape (Linux; nothing
/// elsewhere), under the same names in every service.
fn process_memory() -> Vec<prometheus::proto::MetricFamily> {
    let registry = Registry::new();
    let gauges = [
        ("process_resident_memory_bytes", "Resident memory size in bytes", crate::memory::resident_bytes()),
        ("process_resident_memory_peak_bytes", "Peak resident memory size in bytes since the process started", crate::memory::peak_resident_bytes()),
    ];
    for (name, help, value) in gauges {
        if let Some(v) = value {
            let g = prometheus::Gauge::new(name, help).expect("metric");
            g.set(v as f64);
            registry.register(Box::new(g)).expect("register");
        }
    }
    registry.gather()
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves only the health routes on `addr` from a background thread (for services that are not
/// HTTP servers themselves, such as the processor). Returns the bound address.
pub fn spawn_health_server(addr: SocketAddr, health: Health) -> crate::error::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| crate::error::Error::Listen { addr, source })?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("health".into()).spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            crate::http::serve(listener, routes(health), crate::http::HEADER_TIMEOUT, std::future::pending()).await;
        });
    })?;
    Ok(bound)
}
