//! The Kafka edge every service shares: broker settings, producer settings, topic names and
//! creation, partition bounds, dead-letter headers, and sending under back-pressure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Offset;

use crate::error::{Error, Result};

/// Sets `gauge` (labels: topic, partition) to each partition's consumer lag from librdkafka's
/// statistics: lag costs no extra request (an offsets request would queue behind the fetch).
/// A partition this consumer no longer reads (revoked: librdkafka still reports the lag it had
/// then) is dropped, so replicas' lags add up to the group's.
pub fn record_consumer_lag(stats: &rdkafka::Statistics, gauge: &prometheus::IntGaugeVec) {
    for (topic, t) in &stats.topics {
        for (p, part) in &t.partitions {
            let labels = [topic.as_str(), &p.to_string()];
            if part.partition < 0 {
                continue;
            }
            if !part.desired {
                // Err: it was not there.
                let _ = gauge.remove_label_values(&labels);
            } else if part.consumer_lag >= 0 {
                gauge.with_label_values(&labels).set(part.consumer_lag);
            }
        }
    }
}

/// librdkafka's `fetch.wait.max.ms` for Pitgun's consumers (librdkafka's default is 500 ms).
///
/// librdkafka has one fetch in flight per broker. When it asks only for partitions already at
/// their end (the others' queues being full), the broker holds the request for this long, and
/// records arriving for the others wait too: with the 500 ms default the last partition of a
/// backfill idled ~0.4 s, and a reader following a topic saw each row up to that late.
pub const FETCH_WAIT_MS: &str = "20";

/// A replication factor that asks for the broker's `default.replication.factor` (KIP-464).
pub const BROKER_DEFAULT_REPLICATION: i32 = -1;

/// How a topic a service creates is replicated: its replicas, and how many must hold a record
/// before an `acks=all` write (every Pitgun producer's) is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    /// Replicas of each partition ([`BROKER_DEFAULT_REPLICATION`]: the broker's default).
    pub factor: i32,
    /// The topic's `min.insync.replicas` (`None`: the broker's default).
    pub min_insync: Option<i32>,
}

impl Replication {
    /// The broker's defaults for both.
    pub const BROKER_DEFAULT: Replication = Replication { factor: BROKER_DEFAULT_REPLICATION, min_insync: None };

    /// Replication as asked (`None`: the broker's default). Three replicas or more keep a
    /// majority in sync unless `min_insync` says otherwise: the broker's own default, 1, would
    /// acknowledge a write held by the leader alone, which a lost broker then loses. More in
    /// sync than there are replicas could acknowledge nothing, and is refused.
    pub fn new(factor: Option<i32>, min_insync: Option<i32>) -> std::result::Result<Replication, String> {
        let Some(factor) = factor else { return Ok(Replication { factor: BROKER_DEFAULT_REPLICATION, min_insync }) };
        match min_insync {
            Some(n) if n > factor => Err(format!(
                "--min-insync-replicas {n} with --replication {factor}: no write could ever be acknowledged; keep it at most the replicas"
            )),
            Some(n) => Ok(Replication { factor, min_insync: Some(n) }),
            None => Ok(Replication { factor, min_insync: (factor >= 3).then_some(factor / 2 + 1) }),
        }
    }
}

/// Where the broker is and which namespace the topic and group names live in.
#[derive(Debug, Clone)]
pub struct Broker {
    /// `host:port[,host:port…]`.
    pub bootstrap: String,
    /// Prefix of every topic and consumer-group name (`NS.pitgun.envelopes.v1`); empty = none.
    pub namespace: String,
    /// How a topic a service creates is replicated ([`Broker::ensure_topics`]): the broker's
    /// defaults unless asked otherwise.
    pub replication: Replication,
}

impl Broker {
    /// A broker at `bootstrap` with names in `namespace` (empty for none).
    pub fn new(bootstrap: impl Into<String>, namespace: impl Into<String>) -> Broker {
        Broker { bootstrap: bootstrap.into(), namespace: namespace.into(), replication: Replication::BROKER_DEFAULT }
    }

    /// The same broker, creating topics replicated as `replication` says.
    pub fn with_replication(self, replication: Replication) -> Broker {
        Broker { replication, ..self }
    }

    /// A topic or group name in this namespace.
    pub fn name(&self, base: &str) -> String {
        if self.namespace.is_empty() {
            base.to_string()
        } else {
            format!("{}.{base}", self.namespace)
        }
    }

    /// The base name of `name` if it is in this namespace: what [`Broker::name`] made it from.
    pub fn base_name<'n>(&self, name: &'n str) -> Option<&'n str> {
        match self.namespace.as_str() {
            "" => Some(name),
            ns => name.strip_prefix(ns)?.strip_prefix('.'),
        }
    }

    /// Client settings every Pitgun client starts from.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("client.id", client_id)
            // The local broker listens on IPv4 loopback only; resolving `localhost` to ::1 first
            // would cost a failed connection per broker.
            .set("broker.address.family", "v4")
            .set("log_level", "4");
        c
    }

    /// Settings of every Pitgun consumer, from [`Broker::client_config`]. librdkafka stops
    /// fetching for a partition whose local queue is above its marks (`queued.min.messages`,
    /// `queued.max.messages.kbytes`) and by default waits a whole second before looking again:
    /// a consumer slower than the broker drains its queue within that second and then idles
    /// (the processor made ~3× the throughput without it; the sink stalled ~200 ms every
    /// 135,000 rows). A smaller queue and a 10 ms back-off keep records coming.
    pub fn consumer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = self.client_config(client_id);
        c.set("queued.min.messages", "20000").set("fetch.queue.backoff.ms", "10");
        c
    }

    /// Settings of every Pitgun producer, from [`Broker::client_config`]: idempotent (so
    /// `acks=all`, and a retry neither duplicates nor reorders), lz4, and the Java clients'
    /// key → partition mapping (murmur2), so a session keyed by its id lands on one partition
    /// whichever client wrote it — the gateway, `pitgun publish`, or a service with a Java
    /// client (`schemas/topics.md`). Callers add only their own timeouts and batching.
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = self.client_config(client_id);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("partitioner", "murmur2_random");
        c
    }

    /// [`Broker::producer_config`] for a backfill (`pitgun publish`), which has no one waiting
    /// on a record: fuller batches and a deeper queue.
    pub fn bulk_producer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = self.producer_config(client_id);
        c.set("linger.ms", "20").set("batch.size", "1000000").set("queue.buffering.max.messages", "500000");
        c
    }

    /// Creates `topics` with `partitions` each and this broker's [`Broker::replication`] unless
    /// they exist (idempotent).
    pub fn ensure_topics(&self, topics: &[String], partitions: i32, timeout: Duration) -> Result<()> {
        self.create_topics(topics, &TopicSpec { partitions, replication: self.replication, config: Vec::new() }, timeout).map(|_| ())
    }

    /// Creates `topics` as `spec` says, keeping those that exist as they are (idempotent);
    /// returns, per topic, whether this call created it.
    pub fn create_topics(&self, topics: &[String], spec: &TopicSpec, timeout: Duration) -> Result<Vec<bool>> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let admin: AdminClient<crate::kafka_log::Quiet> = self
            .client_config("pitgun-admin")
            .create_with_context(crate::kafka_log::Quiet)
            .map_err(Error::kafka("cannot create a Kafka admin client"))?;
        let min_insync = spec.replication.min_insync.map(|n| n.to_string());
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| {
                let topic = NewTopic::new(t, spec.partitions, TopicReplication::Fixed(spec.replication.factor));
                let topic = spec.config.iter().fold(topic, |n, (k, v)| n.set(k, v));
                match &min_insync {
                    Some(n) => topic.set("min.insync.replicas", n),
                    None => topic,
                }
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let results = rt
            .block_on(async { tokio::time::timeout(timeout, admin.create_topics(&new, &opts)).await })
            .map_err(|_| Error::TopicCreationTimeout { bootstrap: self.bootstrap.clone(), timeout })?
            .map_err(Error::kafka(format!("cannot create topics on {}", self.bootstrap)))?;
        results
            .into_iter()
            .map(|r| match r {
                Ok(_) => Ok(true),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => Ok(false),
                Err((topic, code)) => Err(Error::TopicCreation { topic, code }),
            })
            .collect()
    }
}

/// How [`Broker::create_topics`] makes a topic.
pub struct TopicSpec {
    /// Partitions of each topic.
    pub partitions: i32,
    /// Replicas, and how many must stay in sync.
    pub replication: Replication,
    /// Topic configuration (`retention.ms`, `cleanup.policy`, …).
    pub config: Vec<(String, String)>,
}

/// Low and high offsets of each partition of `topic`, by partition; empty if the topic does
/// not exist. (Blocking: librdkafka's synchronous calls.)
pub fn partition_bounds<C: ConsumerContext, K: Consumer<C>>(consumer: &K, topic: &str) -> Result<BTreeMap<i32, (i64, i64)>> {
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(topic), timeout).map_err(Error::kafka(format!("the broker did not answer metadata for {topic}")))?;
    let mut bounds = BTreeMap::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .map_err(Error::kafka(format!("the broker did not answer the offsets of {topic}/{}", p.id())))?;
        bounds.insert(p.id(), (low, high));
    }
    Ok(bounds)
}

/// The consumer's position in each assigned partition, by (topic, partition): the offset after
/// the last record it handed out, or after the transaction markers (and, reading committed,
/// aborted records) it stepped over past it — offsets no record carries, so a reader that
/// counts only the records it saw never reaches a partition's end behind them. Partitions
/// without a position yet are left out; so is everything if librdkafka cannot say.
pub fn positions<C: ConsumerContext, K: Consumer<C>>(consumer: &K) -> BTreeMap<(String, i32), i64> {
    let Ok(list) = consumer.position() else { return BTreeMap::new() };
    let at = |offset| match offset {
        Offset::Offset(n) => Some(n),
        _ => None,
    };
    list.elements().iter().filter_map(|e| Some(((e.topic().to_string(), e.partition()), at(e.offset())?))).collect()
}

/// Queues a record, waiting while the producer's queue is full (back-pressure on whoever
/// feeds it) for at most `wait`; any other refusal is an error naming the topic.
pub fn send_waiting<'a, C, K, P>(producer: &ThreadedProducer<C>, mut record: BaseRecord<'a, K, P, C::DeliveryOpaque>, wait: Duration) -> Result<()>
where
    C: ProducerContext + 'static,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    let deadline = Instant::now() + wait;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) if Instant::now() < deadline => {
                record = r;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((source, r)) => return Err(Error::Kafka { what: format!("cannot produce to {}", r.topic), source }),
        }
    }
}

/// A producer's delivery reports: how many records the broker did not acknowledge (after
/// librdkafka's own retries, within `message.timeout.ms`), and the first of them by the number
/// each was sent with (its delivery opaque: a line of the input, a position) with its reason. A
/// flush only says the queue is empty; a record that timed out or was refused leaves it too.
#[derive(Default)]
pub struct DeliveryReports {
    failed: AtomicU64,
    first_refused: Mutex<Option<(usize, String)>>,
}

impl DeliveryReports {
    /// Whether the broker has refused (or not acknowledged in time) a record so far.
    pub fn any_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed) > 0
    }
}

impl rdkafka::ClientContext for DeliveryReports {
    crate::forward_kafka_logs!();
}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, number: usize) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            // Reports come per partition, not in the order sent: the lowest number is kept.
            let mut first = self.first_refused.lock().unwrap_or_else(|p| p.into_inner());
            if first.as_ref().is_none_or(|(n, _)| number < *n) {
                *first = Some((number, e.to_string()));
            }
        }
    }
}

/// Waits up to `wait` for every record's delivery report: the number the broker did not
/// acknowledge and the first of them (its number and reason), or an error if the reports did not
/// all come in time.
pub fn flush_counting(producer: &ThreadedProducer<DeliveryReports>, wait: Duration) -> Result<(u64, Option<(usize, String)>)> {
    producer
        .flush(wait)
        .map_err(|source| Error::Kafka { what: format!("waiting {} s for the broker's acknowledgements", wait.as_secs()), source })?;
    let reports = producer.context();
    Ok((reports.failed.load(Ordering::Relaxed), reports.first_refused.lock().unwrap_or_else(|p| p.into_inner()).clone()))
}

/// Base names of the shared topics (before the namespace).
pub mod topics {
    /// Envelopes from the gateway and from services publishing straight to Kafka.
    pub const ENVELOPES: &str = "pitgun.envelopes.v1";
    /// Items the gateway refused.
    pub const DEADLETTER_INGEST: &str = "pitgun.deadletter.ingest.v1";
    /// Records the processor could not decode or the engine refused.
    pub const DEADLETTER_PROCESS: &str = "pitgun.deadletter.process.v1";
    /// Rows the sink could not convert or a target refused as invalid.
    pub const DEADLETTER_SINK: &str = "pitgun.deadletter.sink.v1";

    /// Rows of one manifest version.
    pub fn aggregates(manifest: &str, version: u32) -> String {
        format!("pitgun.aggregates.{manifest}.v{version}")
    }

    /// Events too late for any window, per manifest version.
    pub fn late(manifest: &str, version: u32) -> String {
        format!("pitgun.late.{manifest}.v{version}")
    }

    /// Session state of one manifest version: partition p holds the checkpoints of input
    /// partition p, so a replica that takes a partition restores it without reading the input.
    pub fn changelog(manifest: &str, version: u32) -> String {
        format!("pitgun.state.{manifest}.v{version}")
    }

    /// Whether `base` names a topic of manifest rows (`pitgun.aggregates.*`).
    pub fn holds_rows(base: &str) -> bool {
        base.starts_with("pitgun.aggregates.")
    }

    /// Whether `base` names a topic Pitgun writes and never reads envelopes from: rows, late
    /// events, state, dead letters.
    pub fn is_output(base: &str) -> bool {
        ["pitgun.aggregates.", "pitgun.late.", "pitgun.state.", "pitgun.deadletter."].iter().any(|p| base.starts_with(p))
    }

    /// The consumer group of one manifest version.
    pub fn group(manifest: &str, version: u32) -> String {
        format!("pitgun.{manifest}.v{version}")
    }
}

/// Header names: on dead-letter records, and the version on rows.
pub mod headers {
    use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};

    /// On a row (aggregates topics): its version, in decimal — the offset of the input record
    /// whose processing emitted it, or for a row emitted without one (idle expiry, end of
    /// input) the last offset its partition had read. A row's versions never fall, on whichever
    /// replica it was emitted; a reader keeps the highest.
    pub const ROW_VERSION: &str = "pitgun-row-version";
    /// Which stage refused the record (`ingest`, `process`).
    pub const STAGE: &str = "pitgun-stage";
    /// Reason code (`invalid_envelope`, `unknown_channel`, …).
    pub const REASON: &str = "pitgun-reason";
    /// Human-readable detail: JSON pointer and message.
    pub const DETAIL: &str = "pitgun-detail";
    /// Where the record came from: `topic/partition/offset` for the processor, the request's
    /// source and item index for the gateway.
    pub const ORIGIN: &str = "pitgun-origin";

    /// On a dead letter that carries only the first [`DEAD_LETTER_PAYLOAD_LIMIT`] bytes of the
    /// refused record: the record's whole length, in decimal.
    pub const PAYLOAD_BYTES: &str = "pitgun-payload-bytes";
    /// The most of a refused record's payload a dead letter carries: 900 KiB, which with the
    /// headers (the detail cut to 4 KiB) fits the 1,000,000-byte message librdkafka and brokers
    /// take by default. A record refused for its size would not fit whole, and the stage would
    /// stop on it; the whole record stays at its origin (for the gateway: with its sender).
    pub const DEAD_LETTER_PAYLOAD_LIMIT: usize = 900 << 10;
    /// The most of a detail a dead letter carries, in bytes (cut at a character).
    const DETAIL_LIMIT: usize = 4 << 10;

    /// A dead letter: headers saying which stage refused the record, why and where it came
    /// from, and the payload to send, cut to [`DEAD_LETTER_PAYLOAD_LIMIT`] bytes
    /// ([`PAYLOAD_BYTES`] then gives its length).
    pub fn dead_letter<'p>(stage: &str, reason: &str, detail: &str, origin: &str, payload: &'p [u8]) -> (OwnedHeaders, &'p [u8]) {
        let detail = match detail.char_indices().map(|(i, _)| i).take_while(|&i| i <= DETAIL_LIMIT).last() {
            Some(end) if detail.len() > DETAIL_LIMIT => format!("{}…", &detail[..end]),
            _ => detail.to_string(),
        };
        let headers = [(STAGE, stage), (REASON, reason), (DETAIL, &detail), (ORIGIN, origin)]
            .into_iter()
            .fold(OwnedHeaders::new_with_capacity(5), |h, (key, value)| h.insert(Header { key, value: Some(value) }));
        if payload.len() <= DEAD_LETTER_PAYLOAD_LIMIT {
            return (headers, payload);
        }
        let length = payload.len().to_string();
        (headers.insert(Header { key: PAYLOAD_BYTES, value: Some(&length) }), &payload[..DEAD_LETTER_PAYLOAD_LIMIT])
    }

    /// The headers of a row emitted at `version` ([`ROW_VERSION`]).
    pub fn row_version(version: i64) -> OwnedHeaders {
        let text = version.to_string();
        OwnedHeaders::new_with_capacity(1).insert(Header { key: ROW_VERSION, value: Some(&text) })
    }

    /// A row's version, from its record's headers ([`of`]): `Ok(None)` when it has none
    /// (written before rows carried one), an error naming the value when it is not a decimal
    /// integer.
    pub fn read_row_version<'a>(headers: impl IntoIterator<Item = Raw<'a>>) -> Result<Option<i64>, String> {
        let Some((_, value)) = headers.into_iter().find(|(name, _)| *name == ROW_VERSION.as_bytes()) else { return Ok(None) };
        let text = value.map(String::from_utf8_lossy).unwrap_or_default();
        text.parse().map(Some).map_err(|_| format!("header {ROW_VERSION} is {text:?}, not a decimal integer"))
    }

    /// One header as sent: its name's bytes, and its value (`None`: a null value).
    pub type Raw<'a> = (&'a [u8], Option<&'a [u8]>);

    /// The headers of a consumed record, in order. A header name is bytes on the wire, and any
    /// producer can send one that is not UTF-8; rdkafka's `Headers` panics on such a name, so
    /// they are read through librdkafka's own accessors. Those give a name up to its first NUL
    /// byte: a name holding one is read cut there.
    pub fn of<'a>(m: &'a BorrowedMessage<'_>) -> impl Iterator<Item = Raw<'a>> + 'a {
        use rdkafka::bindings as rd;
        use rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR as OK;
        let mut list: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
        // SAFETY: `m.ptr()` is the live message `m` borrows. librdkafka parses its headers once,
        // keeps them with the message and frees them with it, so they live as long as `m`. It is
        // what rdkafka's own `Message::headers` calls. No headers: an error, and nothing to read.
        // Its first call stores the parsed list in the message, so two threads must not read
        // one message's headers at once (as with rdkafka's own): no caller shares a message.
        let list = (unsafe { rd::rd_kafka_message_headers(m.ptr(), &mut list) } == OK).then_some(list);
        (0..).map_while(move |idx| {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
            // SAFETY: `list` is the message's header list (above); an index past its end is an
            // error, which ends the iteration before any pointer is read.
            if unsafe { rd::rd_kafka_header_get_all(list?, idx, &mut name, &mut value, &mut size) } != OK {
                return None;
            }
            // SAFETY: librdkafka gives the name NUL-terminated and the value as `size` bytes (or
            // null), both owned by the header list, which lives as long as `m`.
            let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
            let value = (!value.is_null()).then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) });
            Some((name, value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Broker;

    #[test]
    fn base_name_undoes_name_in_its_namespace_only() {
        let ns = Broker::new("b:9092", "staging");
        assert_eq!(ns.base_name(&ns.name("pitgun.envelopes.v1")), Some("pitgun.envelopes.v1"));
        assert_eq!(ns.base_name("pitgun.envelopes.v1"), None);
        assert_eq!(ns.base_name("stagingx.pitgun.envelopes.v1"), None);
        let none = Broker::new("b:9092", "");
        assert_eq!(none.base_name("pitgun.envelopes.v1"), Some("pitgun.envelopes.v1"));
    }

    /// librdkafka keeps reporting a partition it gave up, with the lag it had then: the gauge
    /// drops it, or a replica would add a stale lag to the group's forever.
    #[test]
    fn the_lag_of_a_partition_no_longer_consumed_is_dropped() {
        let gauge = prometheus::IntGaugeVec::new(prometheus::Opts::new("lag", "lag"), &["topic", "partition"]).unwrap();
        let stats = |desired_1: bool| {
            let part = |partition, desired| rdkafka::statistics::Partition { partition, desired, consumer_lag: 7, ..Default::default() };
            let mut topic = rdkafka::statistics::Topic::default();
            topic.partitions.insert(0, part(0, true));
            topic.partitions.insert(1, part(1, desired_1));
            topic.partitions.insert(-1, part(-1, false));
            let mut s = rdkafka::Statistics::default();
            s.topics.insert("t".into(), topic);
            s
        };
        let shown = |g: &prometheus::IntGaugeVec| {
            let mut partitions: Vec<String> = prometheus::core::Collector::collect(g)[0]
                .get_metric()
                .iter()
                .map(|m| m.get_label().iter().find(|l| l.name() == "partition").unwrap().value().to_string())
                .collect();
            partitions.sort();
            partitions
        };
        super::record_consumer_lag(&stats(true), &gauge);
        assert_eq!(shown(&gauge), ["0", "1"]);
        super::record_consumer_lag(&stats(false), &gauge);
        assert_eq!(shown(&gauge), ["0"], "partition 1 was given up");
    }
}
