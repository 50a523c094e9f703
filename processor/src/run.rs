//! The processor loop: consume, run the engine per partition, produce rows, checkpoint.

use std::cell::{RefCell, RefMut};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use pitgun_codec::session::session_id;
use pitgun_codec::wire::Decoder;
use pitgun_engine::{Output, Plan, Runner, SessionStore};
use pitgun_runtime::kafka::{headers, partition_bounds, record_consumer_lag, send_waiting, topics, Broker};
use pitgun_runtime::serve::{spawn_health_server, Health};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use rocksdb::WriteBatch;
use send_wrapper::SendWrapper;
use tracing::{info, warn};

use crate::group::SessionGroups;
use crate::metrics::Metrics;
use crate::queue::{prefetch, PartitionFeed, Scratch};
use crate::state::{Meta, PartitionStore, StateDb};

/// Builds a fresh plan (each partition gets its own engine; formulas are not shared).
pub type PlanFactory = Arc<dyn Fn() -> Result<Plan> + Send + Sync>;

/// How to run one manifest version.
pub struct Config {
    /// Broker and namespace.
    pub broker: Broker,
    /// Manifest name and version (the group is `pitgun.<name>.v<version>`).
    pub manifest: String,
    /// Manifest version.
    pub version: u32,
    /// Input topics (base names; the namespace is added).
    pub input_topics: Vec<String>,
    /// Compiles the manifest.
    pub plan: PlanFactory,
    /// RocksDB state folder, one per manifest version and replica.
    pub state_dir: PathBuf,
    /// Time between checkpoints.
    pub checkpoint_interval: Duration,
    /// Consume up to the end offsets seen at start, close every session, checkpoint, exit.
    pub until_end: bool,
    /// Where to serve `/metrics`, `/healthz`, `/readyz`.
    pub metrics_listen: Option<SocketAddr>,
    /// How long closed session ids are remembered (late copies of their events are refused).
    pub closed_retention: Duration,
    /// Consumer-group session timeout: how soon a dead replica's partitions move.
    pub group_session_timeout: Duration,
    /// Partitions of the output topics when the processor creates them.
    pub output_partitions: i32,
    /// How long a checkpoint waits for the broker to acknowledge emitted rows.
    pub flush_timeout: Duration,
    /// Extra librdkafka settings for the consumer (`fetch.max.bytes`, …), applied last.
    pub consumer_settings: Vec<(String, String)>,
    /// Engine threads: owned partitions are fed by this many threads at once (each partition
    /// by one thread at a time, so its order is kept).
    pub threads: usize,
}

/// What a run did (printed by `pitgun process` at exit).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    /// Records consumed.
    pub records: u64,
    /// Rows produced (re-emissions included).
    pub rows: u64,
    /// Late events produced to the late topic.
    pub late: u64,
    /// Records sent to the dead-letter topic.
    pub deadletters: u64,
    /// Partitions resumed from a local checkpoint.
    pub restored_partitions: u64,
    /// Partitions rebuilt from the earliest offset.
    pub rebuilt_partitions: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Seconds from the first record consumed to the end (throughput = records / this).
    pub consume_seconds: f64,
}

type Tp = (String, i32);

/// One owned input partition.
struct Part {
    /// `topic/partition`, the prefix of dead-letter origins.
    name: String,
    runner: Runner<PartitionStore>,
    next_offset: i64,
    reported_duplicates: u64,
    reported_evicted: u64,
    reported_expired: u64,
    /// The engine's outputs for the record being fed (reused).
    out: Vec<Output>,
    /// Counts since the last round, summed into the summary and metrics on the polling thread
    /// (a shared counter bumped per record by two threads costs more than the engine's step).
    tally: Tally,
    /// Buffers for the feeding order of a batch.
    groups: SessionGroups,
    /// Room for the message pointers of a batch taken from the queue.
    scratch: Scratch,
}

#[derive(Default, Clone, Copy)]
struct Tally {
    records: u64,
    rows: u64,
    late: u64,
    deadletters: u64,
}

/// Counts failed deliveries: a checkpoint must never follow a row the broker did not take.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}
impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, msg)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            *self.last_error.lock().expect("lock") = Some(format!("delivery to {} failed: {e}", msg.topic()));
        }
    }
}

/// Output topic names, with the namespace.
struct OutTopics {
    aggregates: String,
    late: String,
    deadletter: String,
}

/// Where outputs go: the producer, its topics and the metrics. Shared (`Sync`) by the engine
/// threads; librdkafka's producer is thread-safe.
struct Outlet {
    producer: ThreadedProducer<Deliveries>,
    topics: OutTopics,
    metrics: Metrics,
    flush_timeout: Duration,
}

#[derive(Clone, Copy)]
enum Dest {
    Aggregates,
    Late,
    Deadletter,
}

/// Everything the loop and the rebalance callback share (both run on the polling thread;
/// during a round the engine threads borrow the partitions, the outlet and the decoder).
struct Core {
    cfg_plan: PlanFactory,
    db: StateDb,
    outlet: Outlet,
    parts: BTreeMap<Tp, Part>,
    /// Low and high watermarks seen at start (for `--until-end` and rebuilds).
    bounds: BTreeMap<Tp, (i64, i64)>,
    decoder: Decoder,
    summary: Summary,
    fatal: Option<anyhow::Error>,
    assigned_once: bool,
    /// Bumped by every assignment and revocation: the partition queues must be split again.
    assignment: u64,
    closed_retention_us: i64,
    last_checkpoint: Instant,
    first_record: Option<Instant>,
    /// The driver clock (µs) for idle tracking, read once per round rather than per record (a
    /// clock read per record was 5 % of the processor's time).
    clock_us: i64,
    /// Whether the first checkpoint with partitions has been logged (for operators and tests).
    checkpointed_partitions: bool,
    /// Engine threads; a checkpoint stages the partitions on as many.
    threads: usize,
}

/// The consumer's context. librdkafka serves rebalances inside `poll`, on the thread that
/// polls — the only thread that touches the engines — and `SendWrapper` checks exactly that.
struct Ctx {
    core: SendWrapper<Rc<RefCell<Core>>>,
    /// Consumer lag per partition (set from statistics, which may arrive on another thread).
    lag: prometheus::IntGaugeVec,
}

impl Ctx {
    fn lock(&self) -> RefMut<'_, Core> {
        self.core.borrow_mut()
    }
}

impl ClientContext for Ctx {
    fn stats(&self, stats: rdkafka::Statistics) {
        record_consumer_lag(&stats, &self.lag);
    }
}

impl ConsumerContext for Ctx {
    /// Assign: resume each partition from this replica's checkpoint, or rebuild it from the
    /// earliest offset. Revoke: checkpoint first, then give the partitions up.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let mut core = self.lock();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let wanted: Vec<Tp> = tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                for (topic, partition) in wanted {
                    match core.take_partition(&topic, partition) {
                        Ok(offset) => {
                            if let Err(e) = tpl.set_partition_offset(&topic, partition, offset) {
                                core.fatal.get_or_insert(anyhow!("cannot seek {topic}/{partition}: {e}"));
                            }
                        }
                        Err(e) => {
                            core.fatal.get_or_insert(e);
                        }
                    }
                }
                core.assigned_once = true;
                core.assignment += 1;
                if let Err(e) = consumer.assign(tpl) {
                    core.fatal.get_or_insert(anyhow!("cannot take the assigned partitions: {e}"));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<Tp> = tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                if let Err(e) = core.checkpoint(consumer, Some(&revoked), CommitMode::Sync) {
                    core.fatal.get_or_insert(e.context("checkpoint of revoked partitions failed"));
                }
                core.assignment += 1;
                for tp in &revoked {
                    if core.parts.remove(tp).is_some() {
                        info!(topic = %tp.0, partition = tp.1, "partition revoked after its checkpoint");
                    }
                }
                if let Err(e) = consumer.unassign() {
                    core.fatal.get_or_insert(anyhow!("cannot give up revoked partitions: {e}"));
                }
            }
            other => warn!("rebalance error: {:?}", other),
        }
    }
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

impl Outlet {
    /// Queues a record; waits while the producer queue is full (back-pressure on the consumer).
    fn send(&self, dest: Dest, key: &[u8], payload: &[u8], h: Option<OwnedHeaders>) -> Result<()> {
        let topic = match dest {
            Dest::Aggregates => &self.topics.aggregates,
            Dest::Late => &self.topics.late,
            Dest::Deadletter => &self.topics.deadletter,
        };
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(h) = h {
            record = record.headers(h);
        }
        send_waiting(&self.producer, record, self.flush_timeout)
    }

    fn deadletter(&self, reason: &str, detail: &str, origin: &str, payload: &[u8]) -> Result<()> {
        self.metrics.deadletters.inc();
        let h = headers::dead_letter("process", reason, detail, origin);
        self.send(Dest::Deadletter, origin.as_bytes(), payload, Some(h))
    }
}

impl Part {
    /// Feeds a batch of this partition's records (offset order) grouped by session
    /// ([`SessionGroups`]); outputs go to their topics right away.
    fn feed_batch(&mut self, outlet: &Outlet, decoder: &Decoder, now_us: i64, records: &[(i64, &[u8])]) -> Result<()> {
        // Records already in the state (a fetch raced the seek) are skipped.
        let skip = records.partition_point(|(offset, _)| *offset < self.next_offset);
        let records = &records[skip..];
        let Some(last) = records.last() else { return Ok(()) };
        self.next_offset = last.0 + 1;
        let mut groups = std::mem::take(&mut self.groups);
        let order = groups.order(records.iter().map(|(_, payload)| decoder.classify(payload).ok().and_then(session_id)));
        let mut fed = Ok(());
        for (k, &i) in order.iter().enumerate() {
            // Records arrive from librdkafka's fetch thread on another core: asking for the next
            // one's lines now hides the cache misses the engine would wait on.
            if let Some(&next) = order.get(k + 1) {
                let next = records[next as usize].1;
                prefetch(next.as_ptr(), next.len().div_ceil(64));
            }
            let (offset, payload) = records[i as usize];
            fed = self.feed(outlet, decoder, now_us, offset, payload);
            if fed.is_err() {
                break;
            }
        }
        self.groups = groups;
        fed
    }

    /// Feeds one record of this partition; its outputs go to their topics right away.
    fn feed(&mut self, outlet: &Outlet, decoder: &Decoder, now_us: i64, offset: i64, payload: &[u8]) -> Result<()> {
        self.tally.records += 1;
        let fed = match decoder.classify(payload) {
            Ok(record) => self.runner.feed(record, now_us, &mut self.out),
            Err(detail) => Err(self.runner.refuse_undecodable(detail)),
        }
        .map_err(|e| (e.reason.as_str(), e.detail));
        let stats = self.runner.engine().stats();
        let (dups, evicted) = (stats.duplicates, stats.dedup_evicted);
        if dups != self.reported_duplicates {
            outlet.metrics.duplicates.inc_by(dups - self.reported_duplicates);
            self.reported_duplicates = dups;
        }
        if evicted != self.reported_evicted {
            outlet.metrics.dedup_evicted.inc_by(evicted - self.reported_evicted);
            self.reported_evicted = evicted;
        }
        if fed.is_ok() && self.out.is_empty() {
            return Ok(());
        }
        let origin = format!("{}/{offset}", self.name);
        if let Err((reason, detail)) = fed {
            outlet.metrics.rejected.with_label_values(&[reason]).inc();
            self.tally.deadletters += 1;
            outlet.deadletter(reason, &detail, &origin, payload)?;
        }
        self.route_outputs(outlet, &origin)
    }

    /// Sends the engine's outputs to their topics.
    fn route_outputs(&mut self, outlet: &Outlet, origin: &str) -> Result<()> {
        for o in self.out.drain(..) {
            match o {
                Output::Row(row) => {
                    outlet.metrics.windows_emitted.inc();
                    self.tally.rows += 1;
                    outlet.send(Dest::Aggregates, row.row_id.as_bytes(), row.json.as_bytes(), None)?;
                }
                Output::Late(note) => {
                    outlet.metrics.late.inc();
                    self.tally.late += 1;
                    outlet.send(Dest::Late, note.session_id.as_bytes(), note.to_json().as_bytes(), None)?;
                }
                Output::Rejected(note) => {
                    outlet.metrics.rejected.with_label_values(&[note.reason]).inc();
                    self.tally.deadletters += 1;
                    outlet.deadletter(note.reason, &note.detail, origin, note.to_json().as_bytes())?;
                }
            }
        }
        Ok(())
    }

    /// Feeds what this partition's queue holds now, at most `max` records. Returns the count.
    fn drain(&mut self, queue: &PartitionFeed<Ctx>, outlet: &Outlet, decoder: &Decoder, now_us: i64, max: usize) -> Result<usize> {
        let mut errors = Vec::new();
        let mut scratch = std::mem::take(&mut self.scratch);
        let taken = queue.drain(&mut scratch, max, |e| errors.push(e), |records| self.feed_batch(outlet, decoder, now_us, records));
        self.scratch = scratch;
        for e in errors {
            warn!(partition = %self.name, "consumer error: {e}");
        }
        taken
    }
}

impl Core {
    /// Loads a newly assigned partition; returns where to start reading it.
    fn take_partition(&mut self, topic: &str, partition: i32) -> Result<Offset> {
        let plan = (self.cfg_plan)()?;
        let tp = (topic.to_string(), partition);
        let (store, offset, start) = match self.db.restore(topic, partition)? {
            Some(r) => {
                self.outlet.metrics.checkpoints_restored.inc();
                self.summary.restored_partitions += 1;
                info!(topic, partition, offset = r.offset, sessions = r.store.open_count(), "restored checkpoint");
                (r.store, r.offset, Offset::Offset(r.offset))
            }
            None => {
                self.outlet.metrics.partitions_rebuilt.inc();
                self.summary.rebuilt_partitions += 1;
                let low = self.bounds.get(&tp).map(|b| b.0).unwrap_or(0);
                info!(topic, partition, from = low, "no local checkpoint: rebuilding from the earliest offset");
                (PartitionStore::default(), low, Offset::Beginning)
            }
        };
        let part = Part {
            name: format!("{topic}/{partition}"),
            runner: Runner::with_store(plan, store),
            next_offset: offset,
            reported_duplicates: 0,
            reported_evicted: 0,
            reported_expired: 0,
            out: Vec::new(),
            tally: Tally::default(),
            groups: SessionGroups::default(),
            scratch: Scratch::default(),
        };
        self.parts.insert(tp, part);
        Ok(start)
    }

    /// A record from the consumer's main queue (fetched before its partition's queue was split).
    fn handle(&mut self, msg: &BorrowedMessage<'_>) {
        // A linear scan over the owned partitions: no allocation per record.
        let (topic, partition) = (msg.topic(), msg.partition());
        let Some(part) = self.parts.iter_mut().find(|((t, p), _)| *p == partition && t == topic).map(|(_, part)| part) else {
            return; // a message fetched before its partition was revoked
        };
        self.first_record.get_or_insert_with(Instant::now);
        let record = [(msg.offset(), msg.payload().unwrap_or_default())];
        if let Err(e) = part.feed_batch(&self.outlet, &self.decoder, self.clock_us, &record) {
            self.fatal.get_or_insert(e);
        }
    }

    /// Sums the partitions' tallies into the summary and the metrics.
    fn absorb(&mut self) {
        for part in self.parts.values_mut() {
            let t = std::mem::take(&mut part.tally);
            self.outlet.metrics.events_in.inc_by(t.records);
            self.summary.records += t.records;
            self.summary.rows += t.rows;
            self.summary.late += t.late;
            self.summary.deadletters += t.deadletters;
        }
    }

    /// Idle expiry, then forget old closed ids.
    fn expire(&mut self) -> Result<()> {
        let now = now_us();
        let cutoff = now - self.closed_retention_us;
        for part in self.parts.values_mut() {
            let engine = part.runner.engine_mut();
            engine.expire_idle(now, &mut part.out);
            engine.store_mut().forget_closed_before(cutoff);
            let expired = engine.stats().sessions_expired;
            self.outlet.metrics.sessions_expired.inc_by(expired - part.reported_expired);
            part.reported_expired = expired;
            let origin = format!("{}/idle-expiry", part.name);
            part.route_outputs(&self.outlet, &origin)?;
        }
        Ok(())
    }

    /// The checkpoint, in order: flush the producer until every emitted row is acknowledged;
    /// write state and offsets of the partitions in one RocksDB batch; commit the offsets.
    fn checkpoint(&mut self, consumer: &BaseConsumer<Ctx>, only: Option<&[Tp]>, mode: CommitMode) -> Result<()> {
        self.absorb();
        let started = Instant::now();
        let producer = &self.outlet.producer;
        let metrics = &self.outlet.metrics;
        // librdkafka's flush checks in 100 ms steps; a checkpoint waits only as long as the
        // acknowledgements take (the producer's own thread serves the delivery reports).
        let deadline = Instant::now() + self.outlet.flush_timeout;
        while producer.in_flight_count() > 0 {
            if Instant::now() > deadline {
                bail!("{} emitted records not acknowledged within {:?}", producer.in_flight_count(), self.outlet.flush_timeout);
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let failed = producer.context().failed.load(Ordering::Relaxed);
        if failed > 0 {
            let last = producer.context().last_error.lock().expect("lock").clone().unwrap_or_default();
            bail!("{failed} emitted records were not stored by the broker ({last}); not checkpointing past them");
        }
        let flushed = started.elapsed();
        let mut tpl = TopicPartitionList::new();
        let now = now_us();
        let mut open = 0;
        let mut due: Vec<(&Tp, &mut Part)> = Vec::new();
        for (tp, part) in self.parts.iter_mut() {
            open += part.runner.engine().open_sessions() as i64;
            if only.is_some_and(|o| !o.contains(tp)) {
                continue;
            }
            tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(part.next_offset))?;
            let labels = [tp.0.as_str(), &tp.1.to_string()];
            let newest = part.runner.newest_event_time();
            if newest != i64::MIN {
                metrics.watermark_lag.with_label_values(&labels).set((now - newest) / 1_000_000);
            }
            due.push((tp, part));
        }
        // The engines wait while a checkpoint runs, so the partitions' sessions are serialised
        // on as many threads; their batches are then joined into the one batch written.
        let db = &self.db;
        let queue = Mutex::new(due);
        let stage = |_| {
            let mut staged = Vec::new();
            while let Some((tp, part)) = queue.lock().expect("checkpoint queue").pop() {
                let mut batch = WriteBatch::default();
                db.stage(&mut batch, &tp.0, tp.1, part.next_offset, part.runner.engine_mut().store_mut());
                staged.push(batch);
            }
            Ok(staged)
        };
        let batches: Vec<WriteBatch> = on_threads(self.threads.clamp(1, tpl.count().max(1)), stage)?.into_iter().flatten().collect();
        let batch = crate::state::join_batches(&batches);
        let (staged, bytes) = (started.elapsed(), batch.size_in_bytes());
        self.db.write(batch)?;
        let written = started.elapsed();
        if tpl.count() > 0 {
            consumer.commit(&tpl, mode).context("offset commit to the group failed")?;
        }
        metrics.sessions_open.set(open);
        metrics.checkpoints.inc();
        self.summary.checkpoints += 1;
        metrics.checkpoint_seconds.observe(started.elapsed().as_secs_f64());
        tracing::debug!(partitions = tpl.count(), seconds = started.elapsed().as_secs_f64(), ?flushed, ?staged, ?written, bytes, records = self.summary.records,
            offsets = ?self.parts.values().map(|p| p.next_offset).collect::<Vec<_>>(), "checkpoint");
        metrics.state_bytes.set(self.db.size_bytes() as i64);
        self.last_checkpoint = Instant::now();
        if tpl.count() > 0 && !self.checkpointed_partitions {
            self.checkpointed_partitions = true;
            info!(partitions = tpl.count(), seconds = started.elapsed().as_secs_f64(), "checkpoint written");
        }
        Ok(())
    }

    /// Whether every owned partition has been read up to the end offsets seen at start.
    fn reached_end(&self) -> bool {
        self.assigned_once
            && !self.parts.is_empty()
            && self.parts.iter().all(|(tp, p)| self.bounds.get(tp).is_none_or(|&(_, high)| p.next_offset >= high))
    }

    /// End of input: close every session of every owned partition, as replay does.
    fn finish(&mut self) -> Result<()> {
        for part in self.parts.values_mut() {
            part.runner.finish(now_us(), &mut part.out);
            let origin = format!("{}/end", part.name);
            part.route_outputs(&self.outlet, &origin)?;
        }
        self.absorb();
        Ok(())
    }

    /// One round on the engine threads: every owned partition's queue is drained (up to
    /// [`ROUND_RECORDS`]) in chunks, each chunk by whichever of `threads` threads is free, so
    /// a busy partition never leaves a thread idle while another still has work. One
    /// partition is fed by one thread at a time, in offset order. Returns the records fed.
    fn round(&mut self, queues: &[(Tp, PartitionFeed<Ctx>)], threads: usize) -> Result<usize> {
        self.clock_us = now_us();
        let started = Instant::now();
        let Core { parts, outlet, decoder, clock_us, .. } = self;
        let (outlet, decoder, now) = (&*outlet, &*decoder, *clock_us);
        let slots: Vec<Mutex<Slot<'_>>> = parts
            .iter_mut()
            .filter_map(|(tp, part)| {
                let (_, queue) = queues.iter().find(|(t, _)| t == tp)?;
                Some(Mutex::new(Slot { part, queue, fed: 0, done: false }))
            })
            .collect();
        if slots.is_empty() {
            return Ok(0);
        }
        let work = |first: usize| -> Result<usize> {
            let mut n = 0;
            loop {
                let mut worked = false;
                for i in 0..slots.len() {
                    // A slot another thread holds is that thread's to finish.
                    let Ok(mut slot) = slots[(first + i) % slots.len()].try_lock() else { continue };
                    if slot.done {
                        continue;
                    }
                    let Slot { part, queue, .. } = &mut *slot;
                    let fed = part.drain(queue, outlet, decoder, now, CHUNK_RECORDS)?;
                    slot.fed += fed;
                    slot.done = fed < CHUNK_RECORDS || slot.fed >= ROUND_RECORDS;
                    n += fed;
                    worked = true;
                }
                if !worked {
                    return Ok(n);
                }
            }
        };
        let n = on_threads(threads.clamp(1, slots.len()), work)?.into_iter().sum::<usize>();
        drop(slots);
        if n > 0 {
            self.first_record.get_or_insert(started);
        }
        self.absorb();
        Ok(n)
    }
}

/// Runs `work(0)` on this thread and `work(1)` … `work(threads - 1)` on scoped threads; their
/// results in that order, or the first error.
fn on_threads<T: Send>(threads: usize, work: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    std::thread::scope(|s| {
        let work = &work;
        let others: Vec<_> = (1..threads).map(|t| s.spawn(move || work(t))).collect();
        let mut results = vec![work(0)?];
        for h in others {
            results.push(h.join().map_err(|_| anyhow!("an engine thread panicked"))??);
        }
        Ok(results)
    })
}

/// A partition's share of a round.
struct Slot<'a> {
    part: &'a mut Part,
    queue: &'a PartitionFeed<Ctx>,
    fed: usize,
    done: bool,
}

/// Records a thread feeds from one partition before it looks for the next free partition.
const CHUNK_RECORDS: usize = crate::queue::BATCH;

/// Records one partition's queue gives its engine thread per round: small enough that
/// checkpoints, rebalances and signals are served promptly, large enough that starting the
/// round's threads costs nothing measurable.
const ROUND_RECORDS: usize = 16384;

/// Runs the processor until SIGTERM/SIGINT (or, with `until_end`, the end of input).
pub fn run(cfg: Config) -> Result<Summary> {
    let group = cfg.broker.name(&topics::group(&cfg.manifest, cfg.version));
    let inputs: Vec<String> = cfg.input_topics.iter().map(|t| cfg.broker.name(t)).collect();
    let out_topics = OutTopics {
        aggregates: cfg.broker.name(&topics::aggregates(&cfg.manifest, cfg.version)),
        late: cfg.broker.name(&topics::late(&cfg.manifest, cfg.version)),
        deadletter: cfg.broker.name(topics::DEADLETTER_PROCESS),
    };
    // Compile once up front, so a manifest that does not compile never joins the group.
    (cfg.plan)()?;
    cfg.broker
        .ensure_topics(
            &[out_topics.aggregates.clone(), out_topics.late.clone(), out_topics.deadletter.clone()],
            cfg.output_partitions,
            Duration::from_secs(10),
        )
        .context("cannot create the output topics")?;
    let db = StateDb::open(&cfg.state_dir, &Meta { manifest: cfg.manifest.clone(), version: cfg.version, group: group.clone() })?;

    let producer: ThreadedProducer<Deliveries> = cfg
        .broker
        .producer_config(&format!("pitgun-process-{}", cfg.manifest))
        .set("message.timeout.ms", cfg.flush_timeout.as_millis().to_string())
        .create_with_context(Deliveries::default())
        .context("cannot create the Kafka producer")?;

    // Learn the output topics' leaders now, so the first rows (and the first checkpoint's
    // flush) do not wait for metadata of topics created a moment ago.
    for t in [&out_topics.aggregates, &out_topics.late, &out_topics.deadletter] {
        producer.client().fetch_metadata(Some(t), Duration::from_secs(10)).with_context(|| format!("no metadata for {t}"))?;
    }
    let metrics = Metrics::new(&cfg.manifest, cfg.version);
    let lag = metrics.consumer_lag.clone();
    let health = Health::new(metrics.registry.clone());
    if let Some(addr) = cfg.metrics_listen {
        let bound = spawn_health_server(addr, health.clone())?;
        info!("metrics on http://{bound}/metrics");
    }

    let core = Rc::new(RefCell::new(Core {
        cfg_plan: cfg.plan.clone(),
        db,
        outlet: Outlet { producer, topics: out_topics, metrics, flush_timeout: cfg.flush_timeout },
        parts: BTreeMap::new(),
        bounds: BTreeMap::new(),
        decoder: Decoder::default(),
        summary: Summary::default(),
        fatal: None,
        assigned_once: false,
        assignment: 0,
        closed_retention_us: cfg.closed_retention.as_micros() as i64,
        last_checkpoint: Instant::now(),
        first_record: None,
        clock_us: now_us(),
        checkpointed_partitions: false,
        threads: cfg.threads.max(1),
    }));
    let mut consumer_config = cfg.broker.client_config(&format!("pitgun-process-{}", cfg.manifest));
    consumer_config
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", cfg.group_session_timeout.as_millis().to_string())
        .set("heartbeat.interval.ms", (cfg.group_session_timeout.as_millis() / 4).max(100).to_string())
        .set("statistics.interval.ms", "1000")
        // librdkafka stops fetching for a partition whose local queue is above these marks and
        // by default waits a whole second before looking again; a consumer slower than the
        // broker then idles most of the time. Smaller queue, short back-off: ~3× the throughput.
        .set("queued.min.messages", "20000")
        .set("fetch.queue.backoff.ms", "10")
        // librdkafka has one fetch in flight per broker. When it asks only for partitions
        // already at their end (the others' queues being full), the broker holds the request
        // for this long, and records arriving for the others wait too: with the 500 ms default
        // the last partition of a backfill idled ~0.4 s. A short wait also lowers latency.
        .set("fetch.wait.max.ms", "20");
    for (k, v) in &cfg.consumer_settings {
        consumer_config.set(k, v);
    }
    let consumer: Arc<BaseConsumer<Ctx>> =
        Arc::new(consumer_config.create_with_context(Ctx { core: SendWrapper::new(core.clone()), lag }).context("cannot create the Kafka consumer")?);

    // Bounds of every input partition, read before consuming (the end for `--until-end`).
    for topic in &inputs {
        let bounds = partition_bounds(&*consumer, topic)?;
        if bounds.is_empty() {
            bail!("input topic {topic} does not exist (create it: scripts/stack.sh topics)");
        }
        for (partition, (low, high)) in bounds {
            tracing::debug!(topic, partition, low, high, "partition bounds");
            core.borrow_mut().bounds.insert((topic.clone(), partition), (low, high));
        }
    }
    let refs: Vec<&str> = inputs.iter().map(|s| s.as_str()).collect();
    consumer.subscribe(&refs).context("cannot subscribe")?;
    info!(group = %group, topics = ?inputs, "processor started");

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;

    // Each owned partition's records come through its own queue, split off the consumer's
    // main queue after every assignment, so engine threads can poll them in parallel; the
    // main queue then carries only events (rebalances, errors) and records fetched before the
    // split, which are fed first so every partition's records stay in offset order.
    let threads = cfg.threads.max(1);
    let mut queues: Vec<(Tp, PartitionFeed<Ctx>)> = Vec::new();
    let mut queues_for = 0u64;
    let mut fed_last_round = 0usize;
    // An idle loop sleeps until a partition queue receives its first record (its non-empty
    // callback wakes this thread) or 5 ms pass, so events on the main queue are served too.
    let polling_thread = std::thread::current();
    loop {
        if fed_last_round == 0 {
            std::thread::park_timeout(Duration::from_millis(5));
        }
        loop {
            let polled = consumer.poll(Duration::ZERO);
            let mut c = core.borrow_mut();
            match polled {
                Some(Ok(msg)) => {
                    c.handle(&msg);
                    continue;
                }
                Some(Err(e)) => {
                    warn!("consumer error: {e}");
                    continue;
                }
                None => {}
            }
            if c.assignment == queues_for {
                break;
            }
            // Split first, then drain the main queue again: whatever reached it before the
            // split is older than anything the partition queues will give.
            queues.clear();
            for tp in c.parts.keys() {
                if let Some(q) = PartitionFeed::split(&consumer, &tp.0, tp.1, polling_thread.clone()) {
                    queues.push((tp.clone(), q));
                }
            }
            queues_for = c.assignment;
        }
        let mut c = core.borrow_mut();
        if let Some(e) = c.fatal.take() {
            return Err(e);
        }
        // A trickle is fed on this thread alone: starting threads for a few records is waste.
        let round_threads = if fed_last_round < 256 { 1 } else { threads };
        fed_last_round = c.round(&queues, round_threads)?;
        let now = Instant::now();
        health.ready.store(c.assigned_once, Ordering::Relaxed);
        if cfg.until_end && c.reached_end() {
            c.finish()?;
            c.checkpoint(&consumer, None, CommitMode::Sync)?;
            info!("end of input reached; final checkpoint written");
            break;
        }
        if stop.load(Ordering::Relaxed) {
            c.checkpoint(&consumer, None, CommitMode::Sync)?;
            info!("stopping: final checkpoint written");
            break;
        }
        if now.saturating_duration_since(c.last_checkpoint) >= cfg.checkpoint_interval {
            c.expire()?;
            c.checkpoint(&consumer, None, CommitMode::Async)?;
        }
        if let Some(e) = c.fatal.take() {
            return Err(e);
        }
    }
    // The queues hold the consumer; drop them first so closing it below really closes it.
    queues.clear();
    let mut c = core.borrow_mut();
    let mut summary = c.summary.clone();
    summary.consume_seconds = c.first_record.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
    // Everything is checkpointed: closing the consumer revokes nothing left to save.
    c.parts.clear();
    drop(c);
    drop(consumer);
    Ok(summary)
}
