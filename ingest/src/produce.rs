//! Producing a batch and waiting until the broker has acknowledged all of it.
//!
//! One idempotent producer (`enable.idempotence=true`, hence `acks=all`) with lz4 compression
//! and a delivery deadline (`message.timeout.ms`, the `--ack-timeout`) far below librdkafka's
//! 300 s default, so a stopped broker turns into a 503 within seconds. Each batch shares one
//! [`BatchAck`] between its records: the delivery callback counts them down and wakes the request
//! when the last one is settled — one wake-up per batch, not a future per record.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::Notify;

/// Settles a batch: pending count, first failure, and the waiting request.
#[derive(Default)]
pub struct BatchAck {
    pending: AtomicUsize,
    failed: AtomicBool,
    first_error: Mutex<Option<String>>,
    done: Notify,
}

impl BatchAck {
    fn fail(&self, e: String) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            *self.first_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
    }

    fn settle(&self, error: Option<String>) {
        if let Some(e) = error {
            self.fail(e);
        }
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

/// Routes delivery reports to their batch and remembers fatal producer errors.
pub struct AckContext {
    fatal: AtomicBool,
}

impl ClientContext for AckContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::Fatal)) {
            self.fatal.store(true, Ordering::Release);
        }
        pitgun_runtime::kafka_log::error(&error, reason);
    }

    fn log(&self, level: pitgun_runtime::kafka_log::RDKafkaLogLevel, facility: &str, message: &str) {
        pitgun_runtime::kafka_log::log(level, facility, message);
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Arc<BatchAck>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Arc<BatchAck>) {
        ack.settle(result.as_ref().err().map(|(e, _)| e.to_string()));
    }
}

/// Why a batch was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProduceError {
    /// The producer's queue is full (the broker is slower than the clients).
    QueueFull,
    /// A record could not be delivered, or not within the deadline.
    Delivery(String),
}

impl std::fmt::Display for ProduceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProduceError::QueueFull => f.write_str("the producer queue is full"),
            ProduceError::Delivery(e) => write!(f, "the broker did not acknowledge the batch: {e}"),
        }
    }
}

/// A record to produce.
pub struct Outgoing<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Key (`None`: no key).
    pub key: Option<&'a [u8]>,
    /// Value.
    pub value: &'a [u8],
    /// Headers.
    pub headers: Option<OwnedHeaders>,
}

/// A queued batch.
pub struct Pending {
    ack: Arc<BatchAck>,
    queue_full: bool,
    deadline: Duration,
}

impl Pending {
    /// A batch already settled with `result`: what a stand-in for the broker returns.
    pub fn settled(result: Result<(), ProduceError>) -> Pending {
        let ack = Arc::new(BatchAck::default());
        ack.pending.store(1, Ordering::Release);
        let queue_full = result == Err(ProduceError::QueueFull);
        if let Err(ProduceError::Delivery(e)) = result {
            ack.fail(e);
        }
        ack.settle(None);
        Pending { ack, queue_full, deadline: Duration::ZERO }
    }

    /// Waits until the broker acknowledged every record, or fails the whole batch.
    pub async fn acknowledged(self) -> Result<(), ProduceError> {
        // librdkafka fails undelivered records at `message.timeout.ms`; the extra second only
        // guards against a delivery report that never comes.
        let waited = tokio::time::timeout(self.deadline + Duration::from_secs(1), self.ack.done.notified()).await;
        if self.queue_full {
            return Err(ProduceError::QueueFull);
        }
        if waited.is_err() {
            return Err(ProduceError::Delivery(format!("no acknowledgement within {:?}", self.deadline)));
        }
        if self.ack.failed.load(Ordering::Acquire) {
            let e = self.ack.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
            return Err(ProduceError::Delivery(e));
        }
        Ok(())
    }
}

/// Where the gateway puts a batch: [`EnvelopeProducer`] in service, a stand-in in the router's
/// tests. Blocking calls ([`Publish::probe`], [`Publish::flush`]) run on a blocking thread.
pub trait Publish: Send + Sync {
    /// Queues `records` without waiting; [`Pending::acknowledged`] waits for the broker.
    fn enqueue(&self, records: &mut dyn Iterator<Item = Outgoing<'_>>) -> Pending;
    /// Whether the broker answers for `topic` within `timeout` and the topic exists.
    fn probe(&self, topic: &str, timeout: Duration) -> Result<(), String>;
    /// Waits up to `timeout` for queued records to be delivered (at shutdown).
    fn flush(&self, timeout: Duration) -> Result<(), String>;
}

/// The gateway's Kafka producer. An idempotent producer that hits a fatal error (the broker lost
/// its producer state, say) refuses every later record, so it is replaced by a fresh one before
/// the next batch instead of failing every batch until a restart.
pub struct EnvelopeProducer {
    config: ClientConfig,
    current: RwLock<Arc<ThreadedProducer<AckContext>>>,
    ack_timeout: Duration,
}

fn create(config: &ClientConfig) -> Result<ThreadedProducer<AckContext>, crate::error::Error> {
    config.create_with_context(AckContext { fatal: AtomicBool::new(false) }).map_err(crate::error::Error::Producer)
}

impl EnvelopeProducer {
    /// A producer from `base` (`Broker::producer_config`) with a delivery deadline.
    pub fn new(mut base: ClientConfig, ack_timeout: Duration, compression: &str) -> Result<EnvelopeProducer, crate::error::Error> {
        let ms = ack_timeout.as_millis().max(1).to_string();
        base.set("compression.type", compression)
            .set("message.timeout.ms", &ms)
            .set("request.timeout.ms", &ms)
            .set("queue.buffering.max.messages", "200000");
        let producer = create(&base)?;
        Ok(EnvelopeProducer { config: base, current: RwLock::new(Arc::new(producer)), ack_timeout })
    }

    /// The current producer, replaced first if librdkafka reported a fatal error.
    fn producer(&self) -> Arc<ThreadedProducer<AckContext>> {
        let fatal = |p: &ThreadedProducer<AckContext>| p.context().fatal.load(Ordering::Acquire);
        let p = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        if !fatal(&p) {
            return p;
        }
        let mut slot = self.current.write().unwrap_or_else(|e| e.into_inner());
        if fatal(&slot) {
            match create(&self.config) {
                Ok(fresh) => {
                    tracing::warn!("the Kafka producer reported a fatal error; replaced it with a new one");
                    *slot = Arc::new(fresh);
                }
                Err(e) => tracing::error!("the Kafka producer reported a fatal error and cannot be replaced: {}", pitgun_runtime::error::Chain(&e)),
            }
        }
        slot.clone()
    }
}

impl Publish for EnvelopeProducer {
    /// Queues `records` for the broker without waiting; [`Pending::acknowledged`] waits. Records
    /// queued before a failure may still be stored: clients resend the whole batch and the
    /// engine drops the duplicate event ids.
    fn enqueue(&self, records: &mut dyn Iterator<Item = Outgoing<'_>>) -> Pending {
        let ack = Arc::new(BatchAck::default());
        ack.pending.store(1, Ordering::Release); // held here until every record is queued
        let mut queue_full = false;
        let producer = self.producer();
        for r in records {
            ack.pending.fetch_add(1, Ordering::AcqRel);
            let mut record = BaseRecord::with_opaque_to(r.topic, ack.clone()).payload(r.value);
            if let Some(k) = r.key {
                record = record.key(k);
            }
            if let Some(h) = r.headers {
                record = record.headers(h);
            }
            if let Err((e, _record)) = producer.send(record) {
                ack.pending.fetch_sub(1, Ordering::AcqRel);
                if matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::QueueFull)) {
                    queue_full = true;
                } else {
                    ack.fail(e.to_string());
                }
                break;
            }
        }
        ack.settle(None);
        Pending { ack, queue_full, deadline: self.ack_timeout }
    }

    /// Whether the broker answers a metadata request for `topic` within `timeout` and the
    /// topic exists (blocking; call from a blocking thread).
    fn probe(&self, topic: &str, timeout: Duration) -> Result<(), String> {
        let md = self.producer().client().fetch_metadata(Some(topic), timeout).map_err(|e| e.to_string())?;
        match md.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
            Some(t) => Err(format!("topic {topic}: {:?}", t.error())),
            None => Err(format!("topic {topic} does not exist")),
        }
    }

    /// Waits up to `timeout` for queued records to be delivered (at shutdown).
    fn flush(&self, timeout: Duration) -> Result<(), String> {
        self.producer().flush(timeout).map_err(|e| e.to_string())
    }
}
