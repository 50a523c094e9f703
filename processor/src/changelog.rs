//! The state changelog: every checkpoint's changes to a partition's state, also written to the
//! topic `pitgun.state.<manifest>.v<version>` (partition p holds input partition p), so a
//! replica that takes a partition restores its sessions from there and continues from the
//! group's committed offset instead of rebuilding it from the earliest input offset.
//!
//! The broker keeps every record (it does not compact topics; see the README), so restore must
//! not read the whole topic. Each replica that takes a partition writes under a *writer id* of
//! its own: first a full **snapshot** of the partition's state, then at each checkpoint the
//! **changes** (the same puts and deletes RocksDB gets), then a **mark**: the input offset the
//! state is at and where the writer's latest snapshot starts. A new snapshot is written when
//! the changes since the last one outgrow it or [`TAIL_BYTES`] (and at least every
//! [`SNAPSHOT_EVERY`]), so a restore reads the snapshot and at most about as many bytes of
//! changes again, plus what other writers interleaved. Marks are written after the records they close
//! are acknowledged, and the group's offset is committed only after its mark: restore finds the
//! latest mark at the committed offset (reading back from the end) and applies the records of
//! that mark's writer from its snapshot to the mark. Records of other writers (a replica that
//! crashed after writing, a partition's previous owner) in between are skipped.
//!
//! A record: key = the RocksDB key it changes (the partition's offset key for snapshot begins
//! and marks); value = an operation byte, the writer id (u64, big-endian), then the operation's
//! body (a put's value, a range delete's end key, a mark's input offset and snapshot start).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pitgun_runtime::error::Error as EdgeError;
use pitgun_runtime::kafka::{send_waiting, Broker};
use pitgun_runtime::kafka_log::Quiet;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::outlet::Failures;
use crate::state::{Change, StateDb};

const PUT: u8 = b'P';
const DELETE: u8 = b'D';
const DELETE_RANGE: u8 = b'R';
/// The first record of a snapshot (a snapshot of an empty partition is this alone).
const BEGIN: u8 = b'B';
const MARK: u8 = b'M';
const HEADER: usize = 9;

/// Why a chain was started again (`changelog_restarts_total{cause}`): the topic went back.
pub(crate) const RESET: &str = "topic_reset";
/// Why a chain was started again: the broker did not store a record.
pub(crate) const NOT_STORED: &str = "not_stored";

/// A snapshot is written at least this often, so the one a restore starts from is never older
/// than this (the topic's retention must be longer; the broker's default is a week).
pub(crate) const SNAPSHOT_EVERY: Duration = Duration::from_secs(3600);
/// Changes may add up to this much (or the snapshot's size, if larger) before a new snapshot.
const TAIL_BYTES: u64 = 8 << 20;
/// How long a restore may read before the partition is rebuilt instead.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

/// One writer's chain of a partition: what it has written since it took the partition.
pub(crate) struct Chain {
    writer: u64,
    /// Changelog offset of the writer's latest snapshot (none yet: the next checkpoint writes one).
    snapshot_start: Option<i64>,
    snapshot_bytes: u64,
    snapshot_at: Instant,
    /// Bytes of changes since the snapshot.
    since_snapshot: u64,
    /// The input offset of the last mark.
    last_mark: Option<i64>,
}

impl Chain {
    /// A new writer for a partition just taken: a random id, no snapshot yet.
    pub(crate) fn new() -> Chain {
        Chain {
            writer: RandomState::new().hash_one(std::process::id()),
            snapshot_start: None,
            snapshot_bytes: 0,
            snapshot_at: Instant::now(),
            since_snapshot: 0,
            last_mark: None,
        }
    }

    /// Gives up this chain (some of its records may be missing): the partition goes on under a
    /// new writer, from a snapshot, so no mark can name the broken chain's records.
    fn restart(&mut self) {
        *self = Chain::new();
    }

    /// The writer id, recorded in the state folder beside the checkpoint's offset.
    pub(crate) fn writer(&self) -> u64 {
        self.writer
    }

    /// Whether this checkpoint writes anything for the partition.
    fn writes(&self, d: &Due<'_>) -> bool {
        self.snapshot_due() || !d.changes.is_empty() || self.last_mark != Some(d.offset)
    }

    fn snapshot_due(&self) -> bool {
        self.snapshot_start.is_none() || self.since_snapshot > self.snapshot_bytes.max(TAIL_BYTES) || self.snapshot_at.elapsed() > SNAPSHOT_EVERY
    }
}

/// Failed deliveries, and the offsets of the records whose place a mark must name.
#[derive(Default)]
pub(crate) struct Acks {
    failures: Failures,
    offsets: Mutex<HashMap<usize, i64>>,
}

impl ClientContext for Acks {
    pitgun_runtime::forward_kafka_logs!();
}
impl ProducerContext for Acks {
    /// 0 for records whose offset nobody asks for; otherwise a token for [`Acks::offsets`].
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, token: usize) {
        match result {
            Ok(msg) if token != 0 => {
                self.offsets.lock().expect("lock").insert(token, msg.offset());
            }
            Ok(_) => {}
            Err((e, msg)) => self.failures.record(format!("changelog record to {} failed: {e}", msg.topic())),
        }
    }
}

/// What one partition's checkpoint gives the changelog.
pub(crate) struct Due<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) chain: &'a mut Chain,
    /// The checkpoint's changes (the offset aside), as RocksDB got them.
    pub(crate) changes: Vec<Change>,
}

/// A partition's state read back from the changelog.
pub(crate) struct Restored {
    pub(crate) changes: Vec<Change>,
    /// The writer whose state it is.
    pub(crate) writer: u64,
    /// Records read (every writer's) and their bytes.
    pub(crate) records: u64,
    pub(crate) bytes: u64,
}

/// The changelog topic and its producer.
pub(crate) struct Changelog {
    producer: ThreadedProducer<Acks>,
    broker: Broker,
    pub(crate) topic: String,
    client_id: String,
    /// Per changelog partition, the highest offset this processor's records were stored at.
    stored_up_to: HashMap<i32, i64>,
    flush_timeout: Duration,
    /// The restore reader's `fetch.wait.max.ms`: the group consumer's.
    fetch_wait_ms: String,
    tokens: AtomicUsize,
}

impl Changelog {
    /// The changelog `topic` and its producer.
    pub(crate) fn new(broker: &Broker, topic: String, client_id: &str, flush_timeout: Duration, fetch_wait_ms: &str) -> Result<Changelog> {
        let producer = Self::producer(broker, client_id, flush_timeout)?;
        Ok(Changelog {
            producer,
            broker: broker.clone(),
            topic,
            stored_up_to: HashMap::new(),
            client_id: client_id.to_string(),
            flush_timeout,
            fetch_wait_ms: fetch_wait_ms.to_string(),
            tokens: AtomicUsize::new(1),
        })
    }

    fn producer(broker: &Broker, client_id: &str, flush_timeout: Duration) -> Result<ThreadedProducer<Acks>> {
        Ok(broker
            .producer_config(client_id)
            .set("message.timeout.ms", flush_timeout.as_millis().to_string())
            // A missing changelog topic is made by the processor at start (a partition per input
            // partition) or by `pitgun topics`, never by the broker's defaults while it runs.
            .set("allow.auto.create.topics", "false")
            .create_with_context(Acks::default())
            .map_err(EdgeError::kafka("cannot create the changelog producer"))?)
    }

    /// Writes the checkpoint's share of each partition (a snapshot when one is due, else its
    /// changes), waits for them, then writes and waits for the marks. On return the group's
    /// offsets may be committed. Returns the bytes written.
    ///
    /// A chain that breaks is started again at once, under a new writer from a snapshot, and
    /// only then are the offsets committed:
    /// - a record the broker did not take (the partitions being written restart). librdkafka
    ///   makes an idempotent producer unusable when its sequence and the broker's disagree, so
    ///   the write goes on through a new producer.
    /// - records stored at or below offsets this processor already stored on their changelog
    ///   partition (see [`Changelog::write_chains`]): the topic was deleted and created again
    ///   under the processor, and the chain's snapshot went with it.
    ///
    /// A second failure is an error: no checkpoint may name state the changelog does not hold.
    pub(crate) fn write(&mut self, db: &StateDb, due: &mut [Due<'_>], metrics: &Metrics) -> Result<u64> {
        let before = metrics.changelog_bytes.get();
        let writing: Vec<usize> = (0..due.len()).filter(|&i| due[i].chain.writes(&due[i])).collect();
        let (broken, cause) = match self.write_chains(due, db, metrics) {
            Ok(went_back) => (went_back, RESET),
            Err(e @ (Error::NotStored { .. } | Error::Unacknowledged { .. })) => {
                warn!(error = %e, changelog = %self.topic, "the changelog did not take a checkpoint; writing snapshots through a new producer");
                self.producer = Self::producer(&self.broker, &self.client_id, self.flush_timeout)?;
                (writing, NOT_STORED)
            }
            Err(e) => return Err(e),
        };
        if !broken.is_empty() {
            metrics.changelog_restarts.with_label_values(&[cause]).inc_by(broken.len() as u64);
            let mut batch = rocksdb::WriteBatch::default();
            for &i in &broken {
                let d = &mut due[i];
                warn!(topic = d.topic, partition = d.partition, changelog = %self.topic, cause, "the partition's changelog chain broke; starting a new one from a snapshot");
                d.chain.restart();
                StateDb::stage_writer(&mut batch, d.topic, d.partition, d.chain.writer);
            }
            db.write(batch)?;
            // Chains not broken have nothing left to write (their marks are at their offsets).
            let again = self.write_chains(due, db, metrics)?;
            if !again.is_empty() {
                return Err(Error::Changelog(format!("{}: records went back again right after new snapshots", self.topic)));
            }
        }
        Ok(metrics.changelog_bytes.get() - before)
    }

    /// One attempt of [`Changelog::write`]: returns the chains whose records went back (the
    /// first record of this write stored at or before the chain's previous mark).
    fn write_chains(&mut self, due: &mut [Due<'_>], db: &StateDb, metrics: &Metrics) -> Result<Vec<usize>> {
        let flush_timeout = self.flush_timeout;
        let ack = |token: usize| Self::take_offset(&self.producer, token).ok_or(Error::Unacknowledged { in_flight: 1, timeout: flush_timeout });
        // Per partition written: its index in `due`, the token of its first record (the mark's
        // when it has no other), and its snapshot's bytes when it has one.
        let mut written: Vec<(usize, Option<usize>, Option<u64>)> = Vec::new();
        for (i, d) in due.iter_mut().enumerate() {
            let writer = d.chain.writer;
            let first = self.tokens.fetch_add(1, Ordering::Relaxed);
            if d.chain.snapshot_due() {
                let mut bytes = self.send(d.partition, &StateDb::offset_key(d.topic, d.partition), BEGIN, writer, &[], first)?;
                for (k, v) in db.partition_records(d.topic, d.partition)? {
                    bytes += self.send(d.partition, &k, PUT, writer, &v, 0)?;
                }
                metrics.changelog_snapshots.inc();
                metrics.changelog_bytes.inc_by(bytes);
                written.push((i, Some(first), Some(bytes)));
            } else if d.chain.writes(d) {
                let (mut bytes, mut token) = (0, first);
                let changes = std::mem::take(&mut d.changes);
                let had_changes = !changes.is_empty();
                for change in changes {
                    bytes += match change {
                        Change::Put(k, v) => self.send(d.partition, &k, PUT, writer, &v, token)?,
                        Change::Delete(k) => self.send(d.partition, &k, DELETE, writer, &[], token)?,
                        Change::DeleteRange(from, to) => self.send(d.partition, &from, DELETE_RANGE, writer, &to, token)?,
                    };
                    token = 0;
                }
                d.chain.since_snapshot += bytes;
                metrics.changelog_bytes.inc_by(bytes);
                written.push((i, had_changes.then_some(first), None));
            }
        }
        if written.is_empty() {
            return Ok(Vec::new());
        }
        self.flush()?;
        let mut firsts = Vec::with_capacity(written.len());
        for &(i, first, snapshot) in &written {
            let first = first.map(ack).transpose()?;
            if let (Some(start), Some(bytes)) = (first, snapshot) {
                let chain = &mut due[i].chain;
                (chain.snapshot_start, chain.snapshot_bytes, chain.snapshot_at, chain.since_snapshot) = (Some(start), bytes, Instant::now(), 0);
            }
            firsts.push(first);
        }
        let mut marks = Vec::with_capacity(written.len());
        for &(i, _, _) in &written {
            let d = &mut due[i];
            let start = d.chain.snapshot_start.expect("a snapshot was written before any mark");
            let mut body = [0u8; 16];
            body[..8].copy_from_slice(&d.offset.to_be_bytes());
            body[8..].copy_from_slice(&start.to_be_bytes());
            let token = self.tokens.fetch_add(1, Ordering::Relaxed);
            let bytes = self.send(d.partition, &StateDb::offset_key(d.topic, d.partition), MARK, d.chain.writer, &body, token)?;
            metrics.changelog_bytes.inc_by(bytes);
            d.chain.last_mark = Some(d.offset);
            marks.push(token);
        }
        self.flush()?;
        // This producer's records on a changelog partition land at growing offsets (whoever
        // else writes there). One at or before the last this producer stored there, a mark
        // before its own first record, or a mark before its snapshot: the topic was deleted and
        // created again under the processor, and the chain's snapshot went with it.
        let mut went_back = Vec::new();
        // Per changelog partition written: the highest mark of this write, and whether it went back.
        let mut this_write: HashMap<i32, (i64, bool)> = HashMap::new();
        for ((&(i, _, _), first), mark) in written.iter().zip(firsts).zip(marks) {
            let at = ack(mark)?;
            let d = &due[i];
            let lowest = first.unwrap_or(at).min(at);
            let back = self.stored_up_to.get(&d.partition).is_some_and(|&last| lowest <= last)
                || first.is_some_and(|f| f > at)
                || d.chain.snapshot_start.is_some_and(|s| s > at);
            if back {
                went_back.push(i);
            }
            let w = this_write.entry(d.partition).or_insert((at, false));
            *w = (w.0.max(at), w.1 || back);
        }
        // On a new topic the old offsets mean nothing: its own become the ones to stay above.
        for (partition, (highest, back)) in this_write {
            let last = self.stored_up_to.entry(partition).or_insert(highest);
            *last = if back { highest } else { (*last).max(highest) };
        }
        Ok(went_back)
    }

    /// The offset the record sent with `token` was stored at, once acknowledged.
    fn take_offset(producer: &ThreadedProducer<Acks>, token: usize) -> Option<i64> {
        producer.context().offsets.lock().expect("lock").remove(&token)
    }

    /// Queues one record; returns its bytes (key and value).
    fn send(&self, partition: i32, key: &[u8], op: u8, writer: u64, body: &[u8], token: usize) -> Result<u64> {
        let mut value = Vec::with_capacity(HEADER + body.len());
        value.push(op);
        value.extend_from_slice(&writer.to_be_bytes());
        value.extend_from_slice(body);
        let record = BaseRecord::with_opaque_to(&self.topic, token).partition(partition).key(key).payload(&value);
        send_waiting(&self.producer, record, self.flush_timeout)?;
        Ok((key.len() + value.len()) as u64)
    }

    /// Waits until every record is acknowledged; an unstored one is an error (no checkpoint
    /// may name state the changelog does not hold).
    fn flush(&self) -> Result<()> {
        self.producer.context().failures.await_acks(&self.producer, self.flush_timeout)
    }

    /// A reader of one changelog partition, its low and high offsets, and a deadline for
    /// everything read through it.
    fn reader(&self, partition: i32) -> Result<(Reader<'_>, i64, i64)> {
        let consumer: BaseConsumer<Quiet> = self
            .broker
            .consumer_config("pitgun-restore")
            // librdkafka assigns partitions only in a consumer with a group id; this one never
            // joins the group (no subscribe) nor commits.
            .set("group.id", format!("{}.restore", self.topic))
            .set("enable.auto.commit", "false")
            // A record deleted under the reader is an error, not a jump to the end.
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", &self.fetch_wait_ms)
            .create_with_context(Quiet)
            .map_err(EdgeError::kafka("cannot create the changelog reader"))?;
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, partition, Duration::from_secs(10))
            .map_err(EdgeError::kafka(format!("the broker did not answer the offsets of {}/{partition}", self.topic)))?;
        let deadline = Instant::now() + RESTORE_TIMEOUT;
        Ok((Reader { consumer, topic: &self.topic, partition, deadline, records: 0, bytes: 0 }, low, high))
    }

    /// The latest mark of the partition at the group's `committed` offset, read back from the
    /// changelog's end in growing windows. Marks of a partition are written in input-offset
    /// order, so one below `committed` ends the search.
    fn find_mark(read: &mut Reader<'_>, (low, high): (i64, i64), topic: &str, partition: i32, committed: i64) -> Result<Option<Mark>> {
        let mark_key = StateDb::offset_key(topic, partition);
        // The last record is usually a mark: a checkpoint ends with its marks.
        let (mut end, mut window) = (high, 64i64);
        loop {
            if end <= low {
                return Ok(None);
            }
            let start = (end - window).max(low);
            let (mut best, mut older) = (None, false);
            read.range(start, end, |offset, key, op, writer, body| {
                if op == MARK && key == mark_key.as_slice() {
                    let (at, snapshot) = decode_mark(body);
                    if at == committed {
                        best = Some(Mark { offset, writer, snapshot });
                    } else if at < committed {
                        older = true;
                    }
                }
            })?;
            if best.is_some() || older {
                return Ok(best);
            }
            (end, window) = (start, window.saturating_mul(8));
        }
    }

    /// Who wrote the partition's state at the group's `committed` offset last, if the
    /// changelog has it: a local checkpoint at that offset is the group's state only if this
    /// replica wrote it (another may have taken the partition, let the idle clock close
    /// sessions, and committed the same offset).
    pub(crate) fn last_writer(&self, topic: &str, partition: i32, committed: i64) -> Result<Option<u64>> {
        let (mut read, low, high) = self.reader(partition)?;
        Ok(Self::find_mark(&mut read, (low, high), topic, partition, committed)?.map(|m| m.writer))
    }

    /// The partition's state at the group's `committed` offset, if the changelog holds it:
    /// `None` (with a warning naming why) means the partition must be rebuilt.
    pub(crate) fn restore(&self, topic: &str, partition: i32, committed: i64) -> Result<Option<Restored>> {
        let (mut read, low, high) = self.reader(partition)?;
        let Some(Mark { offset: mark, writer, snapshot }) = Self::find_mark(&mut read, (low, high), topic, partition, committed)? else {
            warn!(topic, partition, committed, changelog = %self.topic, "the changelog has no state at the committed offset");
            return Ok(None);
        };
        if snapshot < low {
            warn!(topic, partition, committed, snapshot, low, changelog = %self.topic, "the changelog's snapshot is older than its retention");
            return Ok(None);
        }
        let mut changes = Vec::new();
        let mut begun = false;
        read.range(snapshot, mark + 1, |offset, key, op, w, body| {
            if w != writer {
                return;
            }
            begun |= offset == snapshot && op == BEGIN;
            match op {
                PUT => changes.push(Change::Put(key.to_vec(), body.to_vec())),
                DELETE => changes.push(Change::Delete(key.to_vec())),
                DELETE_RANGE => changes.push(Change::DeleteRange(key.to_vec(), body.to_vec())),
                _ => {}
            }
        })?;
        if !begun {
            return Err(Error::Changelog(format!("{}/{partition} offset {snapshot} is not the snapshot its mark names", self.topic)));
        }
        info!(topic, partition, committed, snapshot, mark, records = read.records, bytes = read.bytes, "state read from the changelog");
        Ok(Some(Restored { changes, writer, records: read.records, bytes: read.bytes }))
    }
}

/// A mark found in the changelog: its offset, its writer and where that writer's snapshot starts.
struct Mark {
    offset: i64,
    writer: u64,
    snapshot: i64,
}

fn decode_mark(body: &[u8]) -> (i64, i64) {
    let n = |b: Option<&[u8]>| b.and_then(|b| b.try_into().ok()).map(i64::from_be_bytes).unwrap_or(i64::MIN);
    (n(body.get(..8)), n(body.get(8..16)))
}

/// Reads ranges of one changelog partition.
struct Reader<'a> {
    consumer: BaseConsumer<Quiet>,
    topic: &'a str,
    partition: i32,
    deadline: Instant,
    records: u64,
    bytes: u64,
}

impl Reader<'_> {
    /// Calls `f(offset, key, op, writer, body)` for each record from `from` to `to` (excluded).
    fn range(&mut self, from: i64, to: i64, mut f: impl FnMut(i64, &[u8], u8, u64, &[u8])) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.topic, self.partition, Offset::Offset(from)).map_err(EdgeError::kafka("changelog offsets"))?;
        self.consumer.assign(&tpl).map_err(EdgeError::kafka("cannot read the changelog"))?;
        let mut next = from;
        while next < to {
            if Instant::now() > self.deadline {
                return Err(Error::Changelog(format!("{}/{}: offsets {from}..{to} not read within {RESTORE_TIMEOUT:?}", self.topic, self.partition)));
            }
            let Some(msg) = self.consumer.poll(Duration::from_millis(100)) else { continue };
            let msg = msg.map_err(EdgeError::kafka("reading the changelog"))?;
            if msg.offset() < next {
                continue;
            }
            if msg.offset() != next || msg.offset() >= to {
                // Deleted by retention under the reader (the broker has no compaction): what
                // was read is not the whole range.
                return Err(Error::Changelog(format!("{}/{}: offset {} read where {next} was expected", self.topic, self.partition, msg.offset())));
            }
            next = msg.offset() + 1;
            let (key, value) = (msg.key().unwrap_or_default(), msg.payload().unwrap_or_default());
            self.records += 1;
            self.bytes += (key.len() + value.len()) as u64;
            if value.len() < HEADER {
                return Err(Error::Changelog(format!(
                    "{}/{} offset {}: a record of {} bytes",
                    self.topic,
                    self.partition,
                    msg.offset(),
                    value.len()
                )));
            }
            let writer = u64::from_be_bytes(value[1..HEADER].try_into().expect("8 bytes"));
            f(msg.offset(), key, value[0], writer, &value[HEADER..]);
        }
        Ok(())
    }
}
