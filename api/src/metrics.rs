//! The API's Prometheus metrics (`pitgun_api_*`).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Requests and their latency, per route.
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// `pitgun_api_requests_total{route,status}`.
    pub requests: IntCounterVec,
    /// `pitgun_api_request_seconds{route}`: from the request's parameters to its JSON.
    pub seconds: HistogramVec,
}

impl Metrics {
    /// Registers the metrics in a fresh registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(Opts::new("pitgun_api_requests_total", "Requests answered, by route and status."), &["route", "status"])
            .expect("valid metric");
        let buckets = vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
        let seconds =
            HistogramVec::new(HistogramOpts::new("pitgun_api_request_seconds", "Time to answer a request, by route.").buckets(buckets), &["route"])
                .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("registered once");
        registry.register(Box::new(seconds.clone())).expect("registered once");
        Metrics { registry, requests, seconds }
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
