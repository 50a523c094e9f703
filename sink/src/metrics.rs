//! The sink's Prometheus metrics (names prefixed `pitgun_sink_`).

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every metric the sink exports.
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// Rows consumed from the aggregates topics.
    pub rows_in: IntCounter,
    /// Rows committed by a target, per target kind and table.
    pub rows_written: IntCounterVec,
    /// Rows per flushed batch.
    pub batch_rows: Histogram,
    /// Time to write one table's batch to its target (successful attempts).
    pub flush_seconds: HistogramVec,
    /// Failed attempts that will be retried, per target kind.
    pub retries: IntCounterVec,
    /// Rows sent to the dead-letter topic, by reason.
    pub deadletters: IntCounterVec,
    /// High watermark minus the next offset to commit, per topic and partition.
    pub consumer_lag: IntGaugeVec,
    /// Table rows (one per table a record feeds) and dead letters read from a partition revoked
    /// before they were written, left to its new owner.
    pub revoked_rows: IntCounter,
    /// When the batch now in the targets' hands was handed to them (Unix seconds), 0 while none
    /// is: a write that hangs (on a lock, say) raises no error and no retry, but ages here.
    pub write_started: IntGauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("pitgun_sink".into()), None).expect("registry");
        let rows_in = IntCounter::new("rows_in_total", "Rows consumed from the aggregates topics.").expect("metric");
        let rows_written = IntCounterVec::new(Opts::new("rows_written_total", "Rows committed by a target."), &["target", "table"]).expect("metric");
        let batch_rows = Histogram::with_opts(
            HistogramOpts::new("batch_rows", "Rows per flushed batch.").buckets(vec![1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 20000.0, 100000.0]),
        )
        .expect("metric");
        let flush_seconds = HistogramVec::new(
            HistogramOpts::new("flush_seconds", "Time to write one table's batch to its target.")
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["target"],
        )
        .expect("metric");
        let retries = IntCounterVec::new(Opts::new("retries_total", "Failed target writes that were retried."), &["target"]).expect("metric");
        let deadletters = IntCounterVec::new(Opts::new("deadletters_total", "Rows sent to the dead-letter topic."), &["reason"]).expect("metric");
        let consumer_lag =
            IntGaugeVec::new(Opts::new("consumer_lag", "High watermark minus the next offset to commit."), &["topic", "partition"]).expect("metric");
        let revoked_rows = IntCounter::new(
            "revoked_rows_total",
            "Table rows and dead letters read from a partition revoked before they were written, left to its new owner.",
        )
        .expect("metric");
        let write_started = IntGauge::new(
            "write_started_timestamp_seconds",
            "When the batch now in the targets' hands was handed to them (Unix seconds); 0 while none is.",
        )
        .expect("metric");
        for m in [
            Box::new(rows_in.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rows_written.clone()),
            Box::new(batch_rows.clone()),
            Box::new(flush_seconds.clone()),
            Box::new(retries.clone()),
            Box::new(deadletters.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(revoked_rows.clone()),
            Box::new(write_started.clone()),
        ] {
            registry.register(m).expect("register");
        }
        Metrics { registry, rows_in, rows_written, batch_rows, flush_seconds, retries, deadletters, consumer_lag, revoked_rows, write_started }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
