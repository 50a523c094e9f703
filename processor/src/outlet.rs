//! Where the engine's outputs go: rows to the aggregates topic, late events to the late topic,
//! refusals to the dead-letter topic, through one producer whose failed deliveries a checkpoint
//! must see.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use pitgun_runtime::kafka::{headers, send_waiting};
use pitgun_runtime::quota::Quota;
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::metrics::Metrics;

/// Failed deliveries of a producer: a checkpoint must never follow a record the broker did not take.
#[derive(Default)]
pub(crate) struct Failures {
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Failures {
    /// Counts a failed delivery.
    pub(crate) fn record(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().expect("lock") = Some(what);
    }

    /// Waits until `producer` has nothing in flight (at most `timeout`), then fails if any
    /// delivery failed. librdkafka's flush checks in 100 ms steps; this waits only as long as
    /// the acknowledgements take (the producer's own thread serves the delivery reports).
    pub(crate) fn await_acks<C: ProducerContext>(&self, producer: &ThreadedProducer<C>, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while producer.in_flight_count() > 0 {
            if Instant::now() > deadline {
                return Err(Error::Unacknowledged { in_flight: producer.in_flight_count(), timeout });
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let last = self.last_error.lock().expect("lock").clone().unwrap_or_default();
            return Err(Error::NotStored { failed, last });
        }
        Ok(())
    }
}

/// The rows producer's context: its failed deliveries.
#[derive(Default)]
pub(crate) struct Deliveries {
    pub(crate) failures: Failures,
}

impl ClientContext for Deliveries {
    pitgun_runtime::forward_kafka_logs!();
}
impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, msg)) = result {
            self.failures.record(format!("delivery to {} failed: {e}", msg.topic()));
        }
    }
}

/// Output topic names, with the namespace.
pub(crate) struct OutTopics {
    pub(crate) aggregates: String,
    pub(crate) late: String,
    pub(crate) deadletter: String,
}

/// Where outputs go: the producer, its topics and the metrics. Shared (`Sync`) by the engine
/// threads; librdkafka's producer is thread-safe.
pub(crate) struct Outlet {
    pub(crate) producer: ThreadedProducer<Deliveries>,
    pub(crate) topics: OutTopics,
    pub(crate) metrics: Metrics,
    pub(crate) flush_timeout: Duration,
    /// The late topic's rate bound (`--late-per-second`), shared by every partition: a producer
    /// sending nothing but events too late for any window must not turn the processor into a
    /// copier of its input.
    pub(crate) late_quota: Option<Quota<()>>,
}

#[derive(Clone, Copy)]
pub(crate) enum Dest {
    Aggregates,
    Late,
    Deadletter,
}

impl Outlet {
    /// Queues a record; waits while the producer queue is full (back-pressure on the consumer).
    pub(crate) fn send(&self, dest: Dest, key: &[u8], payload: &[u8], h: Option<OwnedHeaders>) -> Result<()> {
        let topic = match dest {
            Dest::Aggregates => &self.topics.aggregates,
            Dest::Late => &self.topics.late,
            Dest::Deadletter => &self.topics.deadletter,
        };
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(h) = h {
            record = record.headers(h);
        }
        Ok(send_waiting(&self.producer, record, self.flush_timeout)?)
    }

    /// Whether one more late note may be written now (else it is shed and counted).
    pub(crate) fn late_note_allowed(&self) -> bool {
        self.late_quota.as_ref().is_none_or(|q| q.take(&()).is_ok())
    }

    pub(crate) fn deadletter(&self, reason: &str, detail: &str, origin: &str, payload: &[u8]) -> Result<()> {
        self.metrics.deadletters.inc();
        let (h, payload) = headers::dead_letter("process", reason, detail, origin, payload);
        self.send(Dest::Deadletter, origin.as_bytes(), payload, Some(h))
    }
}
