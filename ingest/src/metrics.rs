//! The gateway's Prometheus metrics. Counters move when an answer is given: a batch answered 503
//! counts as a request but none of its items, accepted or refused, since the client will send
//! them again (dead letters of a 503 batch that did reach the topic are not counted).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::validate::Reason;

/// Metrics, registered in the service's registry.
pub struct GatewayMetrics {
    requests: IntCounterVec,
    /// Envelopes acknowledged by the broker.
    pub accepted: IntCounter,
    rejected: Vec<IntCounter>,
    /// Records written to the dead-letter topic.
    pub deadletters: IntCounter,
    /// Time from the first record queued to the last acknowledged, per batch.
    pub produce_seconds: Histogram,
    /// Request body bytes as received (before decompression).
    pub bytes_in: IntCounter,
    /// Request body bytes after decompression.
    pub bytes_decoded: IntCounter,
    failures: IntCounterVec,
    throttled: IntCounterVec,
    /// API keys in force.
    pub api_keys: IntGauge,
    key_reloads: IntCounterVec,
    keys_file_refused: IntGauge,
}

impl GatewayMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> prometheus::Result<GatewayMetrics> {
        let requests = IntCounterVec::new(Opts::new("pitgun_gateway_requests_total", "POST /v1/envelopes requests by answer status"), &["status"])?;
        let accepted = IntCounter::new("pitgun_gateway_envelopes_accepted_total", "Envelopes acknowledged by the broker")?;
        let rejected_vec = IntCounterVec::new(Opts::new("pitgun_gateway_envelopes_rejected_total", "Envelopes refused, by reason"), &["reason"])?;
        let rejected = Reason::ALL.iter().map(|r| rejected_vec.with_label_values(&[r.as_str()])).collect();
        let deadletters = IntCounter::new(
            "pitgun_gateway_deadletters_total",
            "Refused items written to the dead-letter topic, counted when their batch is answered 202 or 422",
        )?;
        let produce_seconds = Histogram::with_opts(
            HistogramOpts::new("pitgun_gateway_produce_seconds", "Per batch: from producing the first record to the broker's last acknowledgement")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let bytes_in = IntCounter::new("pitgun_gateway_request_bytes_total", "Request body bytes as received")?;
        let bytes_decoded = IntCounter::new("pitgun_gateway_request_decoded_bytes_total", "Request body bytes after decompression")?;
        let failures = IntCounterVec::new(Opts::new("pitgun_gateway_batches_failed_total", "Batches answered 503, by cause"), &["cause"])?;
        for cause in ["queue_full", "delivery", "in_flight"] {
            failures.with_label_values(&[cause]);
        }
        let throttled = IntCounterVec::new(Opts::new("pitgun_gateway_throttled_total", "Requests answered 429, by the quota spent"), &["limit"])?;
        for limit in ["credential", "unauthenticated"] {
            throttled.with_label_values(&[limit]);
        }
        let api_keys = IntGauge::new("pitgun_gateway_api_keys", "API keys in force (from the last good reading of the keys file)")?;
        let key_reloads =
            IntCounterVec::new(Opts::new("pitgun_gateway_keys_reloads_total", "Readings of the changed keys file, by result"), &["result"])?;
        for result in ["ok", "error"] {
            key_reloads.with_label_values(&[result]);
        }
        // A state, not only an event: a refused file is not read again until it changes, so a
        // count of errors stops rising while the old keys (a revoked one among them) stay in force.
        let keys_file_refused = IntGauge::new(
            "pitgun_gateway_keys_file_refused",
            "1 while the keys file's last change was refused (the keys read before stay in force), else 0",
        )?;
        registry.register(Box::new(keys_file_refused.clone()))?;
        registry.register(Box::new(api_keys.clone()))?;
        for c in [&requests, &rejected_vec, &failures, &throttled, &key_reloads] {
            registry.register(Box::new(c.clone()))?;
        }
        for c in [&accepted, &deadletters, &bytes_in, &bytes_decoded] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(produce_seconds.clone()))?;
        Ok(GatewayMetrics {
            requests,
            accepted,
            rejected,
            deadletters,
            produce_seconds,
            bytes_in,
            bytes_decoded,
            failures,
            throttled,
            api_keys,
            key_reloads,
            keys_file_refused,
        })
    }

    /// Counts an answer.
    pub fn request(&self, status: u16) {
        self.requests.with_label_values(&[status.to_string().as_str()]).inc();
    }

    /// Counts a refused envelope.
    pub fn rejected(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.rejected[i].inc();
        }
    }

    /// Counts a batch answered 503 (`queue_full`, `delivery`, `in_flight`).
    pub fn failed(&self, cause: &str) {
        self.failures.with_label_values(&[cause]).inc();
    }

    /// Counts a request answered 429 (`credential`, `unauthenticated`).
    pub fn throttled(&self, limit: &str) {
        self.throttled.with_label_values(&[limit]).inc();
    }

    /// Records a good reading of the keys file holding `n` keys.
    pub fn keys_reloaded(&self, n: usize) {
        self.key_reloads.with_label_values(&["ok"]).inc();
        self.keys_file_refused.set(0);
        self.api_keys.set(n as i64);
    }

    /// Counts a reading of the keys file that was refused.
    pub fn keys_reload_failed(&self) {
        self.key_reloads.with_label_values(&["error"]).inc();
        self.keys_file_refused.set(1);
    }
}
