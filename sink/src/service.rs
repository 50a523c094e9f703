//! The sink service: consume rows, batch them per table, write every target, then commit offsets.
//!
//! Offsets are committed only after every target has committed the batch and every dead
//! letter is acknowledged by the broker. A crash anywhere before that re-delivers the batch,
//! and the targets upsert by key, so the tables end the same. A target that fails is retried
//! with exponential backoff while the rows wait in Kafka: the loop reads at most one more batch
//! meanwhile, so memory holds two batches at most.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pitgun_contracts::analysis::AnalysisContract;
use pitgun_contracts::manifest::{SinkDef, SinkKind};
use pitgun_runtime::kafka::{headers, partition_bounds, record_consumer_lag, topics, Broker};
use pitgun_runtime::kafka_log::Quiet;
use pitgun_runtime::serve::{spawn_health_server, Health};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;
use tracing::{info, warn};

use crate::batch::{self, Batch, Dead, Origin, Targets, Written};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::routes::{self, Routing};
use crate::table::{TableRow, UNVERSIONED};
use pitgun_runtime::error::Error as EdgeError;

/// Environment variable that arms the failpoint between a target's commit and the offset
/// commit (tests): `after-target-commit` aborts the process there, once.
pub const FAILPOINT_ENV: &str = "PITGUN_SINK_FAILPOINT";

/// A manifest version whose rows this sink writes.
pub struct SinkManifest {
    /// Manifest name.
    pub manifest: String,
    /// Manifest version.
    pub version: u32,
    /// Its output contract.
    pub contract: AnalysisContract,
    /// Its `output.sinks`.
    pub sinks: Vec<SinkDef>,
}

/// What `pitgun sink` was asked to do.
pub struct Config {
    /// Where the broker is.
    pub broker: Broker,
    /// Manifest versions to sink.
    pub manifests: Vec<SinkManifest>,
    /// PostgreSQL URL (`postgres://user:pass@host:port/db`); tables of `postgres` sinks.
    pub postgres: Option<String>,
    /// QuestDB client configuration (`http::addr=host:9000;`); tables of `questdb` sinks.
    pub questdb: Option<String>,
    /// Only these kinds of target (`None`: every sink the manifests name).
    pub targets: Option<Vec<SinkKind>>,
    /// PostgreSQL connections; each batch is written as that many shards in parallel.
    pub pg_connections: usize,
    /// Consumer group (default `pitgun.sink.<manifest>.v<version>[+…]`).
    pub group: Option<String>,
    /// Rows per batch at most.
    pub batch_rows: usize,
    /// How long a batch waits for more rows before it is written.
    pub linger: Duration,
    /// Longest wait between retries of a failing target.
    pub max_backoff: Duration,
    /// After SIGTERM or SIGINT, how long the batches in hand may take to be written and
    /// committed; what is unfinished then is given up (not committed: its rows are read again
    /// on the next start).
    pub drain_timeout: Duration,
    /// Stop once the end offsets seen at start are committed.
    pub until_end: bool,
    /// Only create (or check) the tables, then stop: Kafka is not read.
    pub migrate_only: bool,
    /// Serve `/metrics`, `/healthz`, `/readyz` here.
    pub metrics_listen: Option<SocketAddr>,
}

/// What a run did (printed as JSON by `pitgun sink`).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Rows consumed.
    pub rows: u64,
    /// Rows committed, per `target:table`.
    pub written: BTreeMap<String, u64>,
    /// Rows sent to the dead-letter topic.
    pub deadletters: u64,
    /// Batches committed.
    pub batches: u64,
    /// Failed target writes retried.
    pub retries: u64,
    /// Table rows (one per table a record feeds) and dead letters read from a partition revoked
    /// before they were written, left to its new owner.
    pub revoked_rows: u64,
    /// From the first row read to the last batch committed.
    pub seconds: f64,
    /// Of which the targets spent writing (successful attempts; overlaps the reading).
    pub target_seconds: f64,
    /// Of which the loop spent gathering batches that had rows: waiting for records and
    /// converting rows.
    pub read_seconds: f64,
    /// Of which the loop spent waiting for the targets to finish the batch before.
    pub wait_seconds: f64,
    /// Of which the loop spent sending dead letters and committing offsets.
    pub commit_seconds: f64,
}

/// What closing the clients may take past the stop's deadline (leaving the group, a last flush).
const CLOSE_MARGIN: Duration = Duration::from_secs(2);

/// Closes the consumer (leaving its group) and the producer on a thread of their own, waiting
/// `within` at most: librdkafka's close waits on the broker, and one that does not answer would
/// hold the pod past its grace period. A close not done by then is left to the process's exit
/// (the group drops the member at its session timeout; what was not committed is read again).
fn close_within(consumer: Arc<StreamConsumer<SinkContext>>, producer: FutureProducer<Quiet>, within: Duration) {
    let (done, closed) = std::sync::mpsc::channel();
    let closing = std::thread::Builder::new().name("pitgun-sink-close".into()).spawn(move || {
        drop(consumer);
        drop(producer);
        let _ = done.send(());
    });
    match closing {
        Ok(_) => {
            if closed.recv_timeout(within).is_err() {
                warn!("the Kafka clients did not close within {within:?} (is the broker answering?): leaving them to the exit");
            }
        }
        Err(e) => warn!("cannot start a thread to close the Kafka clients: {e}"),
    }
}

/// Sends a written batch's dead letters (each acknowledged), then commits its offsets; the
/// offsets committed (none if the group refused them).
async fn commit(
    done: &Batch,
    consumer: &Arc<StreamConsumer<SinkContext>>,
    producer: &FutureProducer<Quiet>,
    deadletter_topic: &str,
    metrics: &Metrics,
    summary: &mut Summary,
) -> Result<Vec<((String, i32), i64)>> {
    for d in &done.dead {
        let origin = format!("{}/{}/{}", d.origin.topic, d.origin.partition, d.origin.offset);
        let (hs, payload) = headers::dead_letter("sink", d.reason, &d.detail, &origin, &d.origin.payload);
        let record = FutureRecord::to(deadletter_topic).payload(payload).key(&origin).headers(hs);
        producer.send(record, Duration::from_secs(30)).await.map_err(|(source, _)| Error::DeadLetter { origin: origin.clone(), source })?;
        metrics.deadletters.with_label_values(&[d.reason]).inc();
        summary.deadletters += 1;
        warn!(origin, reason = d.reason, "row sent to {deadletter_topic}: {}", d.detail);
    }
    let mut tpl = TopicPartitionList::new();
    let mut offsets = Vec::new();
    for ((topic, partition), (next, generation)) in &done.next_offsets {
        // A partition revoked while its rows were written is its new owner's to commit.
        if *generation == consumer.context().generation(topic, *partition) {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)).map_err(EdgeError::kafka("offsets to commit"))?;
            offsets.push(((topic.to_string(), *partition), *next));
        }
    }
    if offsets.is_empty() {
        return Ok(offsets);
    }
    // A commit refused in a rebalance is not fatal: the rows come again to whoever owns the
    // partition now, and are upserted again.
    // On the blocking pool: a synchronous commit waits on the broker, and the caller must still
    // hear the stop's deadline meanwhile.
    let committing = Arc::clone(consumer);
    let committed = tokio::task::spawn_blocking(move || committing.commit(&tpl, CommitMode::Sync)).await;
    if let Some(e) = match committed {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    } {
        warn!("offsets not committed (the batch will be delivered again and upserted): {e}");
        return Ok(Vec::new());
    }
    summary.batches += 1;
    Ok(offsets)
}

/// The consumer's context: sets the consumer-lag gauge from librdkafka's statistics (no extra
/// request to the broker) and counts each partition's revocations, so rows read before one are
/// not written after it ([`Batch::drop_revoked`]).
struct SinkContext {
    lag: prometheus::IntGaugeVec,
    revocations: Mutex<HashMap<(String, i32), u64>>,
    writing: Arc<WriteGate>,
}

/// Whether a batch is in the targets' hands. A revocation waits until it is not: the batch's
/// rows then land before the partitions' new owner writes any, since QuestDB has no
/// conditional write and an older version landing after a newer one would stay.
#[derive(Default)]
struct WriteGate {
    busy: Mutex<bool>,
    idle: Condvar,
}

impl WriteGate {
    /// Marks a write begun; it ends when the returned guard drops (also if the write panics).
    fn begin(self: &Arc<Self>) -> WriteGuard {
        *self.busy.lock().expect("write gate") = true;
        WriteGuard(self.clone())
    }

    fn is_busy(&self) -> bool {
        *self.busy.lock().expect("write gate")
    }

    fn wait_idle(&self) {
        let mut busy = self.busy.lock().expect("write gate");
        while *busy {
            busy = self.idle.wait(busy).expect("write gate");
        }
    }
}

struct WriteGuard(Arc<WriteGate>);

impl Drop for WriteGuard {
    fn drop(&mut self) {
        *self.0.busy.lock().expect("write gate") = false;
        self.0.idle.notify_all();
    }
}

impl SinkContext {
    /// The partition's assignment: how many times it has been revoked from this consumer.
    fn generation(&self, topic: &str, partition: i32) -> u64 {
        // A scan of a few partitions, without building a key per row read.
        let revocations = self.revocations.lock().expect("revocations lock");
        revocations.iter().find(|((t, p), _)| *p == partition && t == topic).map_or(0, |(_, n)| *n)
    }
}

impl ClientContext for SinkContext {
    pitgun_runtime::forward_kafka_logs!();

    fn stats(&self, stats: rdkafka::Statistics) {
        record_consumer_lag(&stats, &self.lag);
    }
}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            {
                let mut revocations = self.revocations.lock().expect("revocations lock");
                for e in tpl.elements() {
                    *revocations.entry((e.topic().to_string(), e.partition())).or_default() += 1;
                }
            }
            // The partitions go only once the batch being written has landed (the group waits,
            // up to max.poll.interval.ms). This runs inside the consumer's poll on a runtime
            // worker; the write runs on another.
            let waited = Instant::now();
            if self.writing.is_busy() {
                info!("revocation waits for the batch being written");
            }
            tokio::task::block_in_place(|| self.writing.wait_idle());
            if waited.elapsed() > Duration::from_millis(10) {
                info!(seconds = waited.elapsed().as_secs_f64(), "revocation waited for the batch being written");
            }
        }
    }
}

/// Runs the sink until SIGTERM/SIGINT (or, with `until_end`, the end offsets seen at start).
pub async fn run(cfg: Config) -> Result<Summary> {
    if cfg.manifests.is_empty() {
        return Err(Error::Setup("no manifest to sink: give at least one --manifest".into()));
    }
    let metrics = Arc::new(Metrics::new());
    let Routing { routes, topics: topic_routes, targets } = routes::open(&cfg).await?;
    let mut targets = Some(targets);
    // Series that exist from the start, at 0: an alert or panel over them sees "none yet", not
    // "no such series" (a sink whose target went down before its first batch has written
    // nothing, and that is a 0).
    for route in &routes {
        metrics.retries.with_label_values(&[route.kind]);
        metrics.rows_written.with_label_values(&[route.kind, &route.name]);
    }
    for reason in [batch::REFUSED_BY_TARGET, batch::INVALID_ROW] {
        metrics.deadletters.with_label_values(&[reason]);
    }
    if cfg.migrate_only {
        info!(tables = routes.len(), "tables created or checked (--migrate); not reading Kafka");
        return Ok(Summary::default());
    }

    let group = cfg.group.clone().unwrap_or_else(|| default_group(&cfg));
    let consumer: Arc<StreamConsumer<SinkContext>> = cfg
        .broker
        .consumer_config("pitgun-sink")
        .set("statistics.interval.ms", "1000")
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // A target may be down for a long while; the sink stays in its group meanwhile.
        .set("max.poll.interval.ms", "3600000")
        // A replica that died hands its partitions on within 10 s (librdkafka's default: 45 s).
        .set("session.timeout.ms", "10000")
        .create_with_context(SinkContext { lag: metrics.consumer_lag.clone(), revocations: Mutex::default(), writing: Arc::default() })
        .map(Arc::new)
        .map_err(EdgeError::kafka("cannot create the Kafka consumer"))?;
    let producer: FutureProducer<Quiet> = cfg
        .broker
        .producer_config("pitgun-sink-deadletter")
        .create_with_context(Quiet)
        .map_err(EdgeError::kafka("cannot create the Kafka producer"))?;
    let deadletter_topic = cfg.broker.name(topics::DEADLETTER_SINK);
    // Startup calls to the broker block (librdkafka's synchronous API): off the async workers.
    let topic_names: Vec<String> = topic_routes.keys().cloned().collect();
    let ends = tokio::task::block_in_place(|| -> Result<BTreeMap<(String, i32), (i64, i64)>> {
        cfg.broker.ensure_topics(std::slice::from_ref(&deadletter_topic), 4, Duration::from_secs(10))?;
        let mut ends = BTreeMap::new();
        for topic in &topic_names {
            let bounds = partition_bounds(consumer.as_ref(), topic)?;
            if bounds.is_empty() {
                return Err(Error::NoTopic(topic.clone()));
            }
            ends.extend(bounds.into_iter().map(|(partition, b)| ((topic.clone(), partition), b)));
        }
        Ok(ends)
    })?;
    // What the group committed before this run: with `until_end`, partitions that have nothing
    // new are already at their end.
    let mut committed: BTreeMap<(String, i32), i64> = BTreeMap::new();
    if cfg.until_end {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in ends.keys() {
            tpl.add_partition(topic, *partition);
        }
        let before = tokio::task::block_in_place(|| consumer.committed_offsets(tpl, Duration::from_secs(10)))
            .map_err(EdgeError::kafka("reading the group's committed offsets"))?;
        for e in before.elements() {
            if let Offset::Offset(o) = e.offset() {
                committed.insert((e.topic().to_string(), e.partition()), o);
            }
        }
    }
    let refs: Vec<&str> = topic_names.iter().map(|s| s.as_str()).collect();
    consumer.subscribe(&refs).map_err(EdgeError::kafka("cannot subscribe"))?;
    let health = Health::new(metrics.registry.clone());
    if let Some(addr) = cfg.metrics_listen {
        let bound = spawn_health_server(addr, health.clone())?;
        info!(%bound, "serving /metrics, /healthz, /readyz");
    }
    // Before the line that says the sink has started: a stop asked for after it is heard.
    let signal = pitgun_runtime::stop::stop_signal()?;
    health.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    info!(group = %group, topics = ?topic_names, "sink started");

    let mut failpoint = std::env::var(FAILPOINT_ENV).ok().is_some_and(|v| v == "after-target-commit");
    let routes = Arc::new(routes);
    let mut summary = Summary::default();
    // A stop asked for by SIGTERM or SIGINT, told to the loop and to the batch being written
    // (a write its targets refuse is then given up instead of retried forever, one that hangs
    // at the stop's deadline). Heard by a task of its own: a revocation that waits for the
    // write holds the loop, and the write must still hear the stop to end that wait.
    let (stop, mut stop_asked) = tokio::sync::watch::channel(None);
    let drain = cfg.drain_timeout;
    tokio::spawn(async move {
        info!("{}: stopping (the batch in hand has --drain-timeout, {drain:?})", signal.await);
        stop.send_replace(Some(tokio::time::Instant::now() + drain));
    });
    let mut stopping = false;
    let mut first_row: Option<Instant> = None;
    // One batch in the targets' hands at a time, while the next is read: memory holds two.
    let mut inflight: Option<tokio::task::JoinHandle<(Targets, Batch, Written)>> = None;
    // The loop borrows the clients; they are closed after it, whatever it ended with.
    let outcome = async {
        loop {
            // Gather a batch: up to `batch_rows` rows, or what came within `linger`.
            let gathering = Instant::now();
            let mut batch = Batch::new(routes.len(), cfg.batch_rows);
            // One timer per batch, not one per row (each `select!` below would otherwise make one).
            let linger = tokio::time::sleep(cfg.linger);
            tokio::pin!(linger);
            while batch.read < cfg.batch_rows && !stopping {
                let msg = tokio::select! {
                    m = consumer.recv() => m,
                    _ = &mut linger => break,
                    _ = stop_asked.wait_for(Option::is_some) => { stopping = true; break }
                };
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        warn!("consumer error: {e}");
                        continue;
                    }
                };
                batch.read += 1;
                first_row.get_or_insert_with(Instant::now);
                metrics.rows_in.inc();
                let Some(to) = topic_routes.get(msg.topic()) else {
                    warn!(topic = msg.topic(), "a record from a topic not subscribed to: skipped");
                    continue;
                };
                let origin = Origin {
                    topic: to.topic.clone(),
                    partition: msg.partition(),
                    offset: msg.offset(),
                    payload: msg.payload().unwrap_or_default().into(),
                    generation: consumer.context().generation(msg.topic(), msg.partition()),
                };
                batch.next_offsets.insert((origin.topic.clone(), origin.partition), (origin.offset + 1, origin.generation));
                let parsed = headers::read_row_version(headers::of(&msg)).and_then(|v| Ok((v.unwrap_or(UNVERSIONED), to.parser.parse(&origin.payload)?)));
                let (version, fields) = match parsed {
                    Ok(p) => p,
                    Err(detail) => {
                        batch.dead.push(Dead { reason: batch::INVALID_ROW, detail, origin });
                        continue;
                    }
                };
                for (route, shape, binding) in &to.tables {
                    match shape.convert_fields(binding, &fields) {
                        Ok(r) => batch.add(*route, shape, TableRow { version, ..r }, origin.clone()),
                        Err(detail) => batch.dead.push(Dead {
                            reason: batch::INVALID_ROW,
                            detail: format!("table {}: {detail}", shape.table),
                            origin: origin.clone(),
                        }),
                    }
                }
            }
            summary.rows += batch.read as u64;
            if batch.read > 0 {
                // From the first row on: not the wait for the first row, nor idle batches.
                let from = first_row.filter(|first| *first > gathering).unwrap_or(gathering);
                summary.read_seconds += from.elapsed().as_secs_f64();
            }

            // The batch before this one: its targets committed; dead letters, then offsets.
            if let Some(h) = inflight.take() {
                let waiting = Instant::now();
                let (back, done, written) = h.await?;
                stopping |= stop_asked.borrow().is_some();
                summary.wait_seconds += waiting.elapsed().as_secs_f64();
                if written.abandoned {
                    warn!("stopping before the targets committed the batch in hand: it is not committed, and its rows are read again on the next start");
                    return Ok(summary);
                }
                let committing = Instant::now();
                targets = Some(back);
                summary.retries += written.retries;
                summary.target_seconds += written.seconds;
                for (route, n) in routes.iter().zip(&written.rows) {
                    if *n > 0 {
                        *summary.written.entry(route.label()).or_default() += n;
                    }
                }
                // A broker that stopped answering would hold the dead letters' acknowledgements past
                // the stop's deadline; the offsets then stay uncommitted, as for a write given up.
                // The offset commit too, which waits on the broker off the async workers.
                let mut stop_seen = stop_asked.clone();
                let committing_now = tokio::select! {
                    offsets = commit(&done, &consumer, &producer, &deadletter_topic, &metrics, &mut summary) => Some(offsets?),
                    () = batch::stop_deadline(&mut stop_seen) => None,
                };
                let Some(offsets) = committing_now else {
                    warn!("stopping: the broker did not acknowledge the batch's dead letters or offsets within --drain-timeout; it is not committed, and its rows are read again on the next start");
                    return Ok(summary);
                };
                committed.extend(offsets);
                summary.commit_seconds += committing.elapsed().as_secs_f64();
                summary.seconds = first_row.map_or(0.0, |t| t.elapsed().as_secs_f64());
            }
            let dropped = batch.drop_revoked(|topic, partition| consumer.context().generation(topic, partition));
            if dropped > 0 {
                metrics.revoked_rows.inc_by(dropped as u64);
                summary.revoked_rows += dropped as u64;
                info!(dropped, "rows of partitions revoked since they were read: not written (their new owner writes them)");
            }
            if batch.read > 0 {
                metrics.batch_rows.observe(batch.read as f64);
                let fail_now = std::mem::take(&mut failpoint);
                let held = targets.take().expect("the targets are back from the last write");
                let writing = consumer.context().writing.begin();
                metrics.write_started.set(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64));
                let write = batch::write(held, batch, routes.clone(), metrics.clone(), cfg.max_backoff, fail_now, stop_asked.clone());
                let handed = metrics.clone();
                inflight = Some(tokio::spawn(async move {
                    let written = write.await;
                    drop(writing);
                    // Done now, not when the loop next looks (up to a --linger later): a quiet
                    // sink's written batch must not look stuck.
                    handed.write_started.set(0);
                    written
                }));
                continue; // commit it after the next batch is read
            }
            if stopping {
                info!("stopping: the last batch is committed");
                break;
            }
            if cfg.until_end && ends.iter().all(|(tp, (low, high))| high <= low || committed.get(tp).is_some_and(|n| n >= high)) {
                info!("end offsets seen at start committed");
                break;
            }
        }
        Ok(summary)
    }
    .await;
    let grace = stop_asked.borrow().map_or(cfg.drain_timeout, |deadline| deadline.saturating_duration_since(tokio::time::Instant::now()));
    close_within(consumer, producer, grace + CLOSE_MARGIN);
    outcome
}

/// `pitgun.sink.<manifest>.v<version>[+…]`, and `.only-<kind>[+…]` with `--targets`: a group's
/// committed offsets say a row reached every target the group writes, so a sink that writes
/// fewer kinds must not move the offsets of one that writes them all (those rows would never
/// reach the kinds it left out).
fn default_group(cfg: &Config) -> String {
    let names: Vec<String> = cfg.manifests.iter().map(|m| format!("{}.v{}", m.manifest, m.version)).collect();
    let mut group = format!("pitgun.sink.{}", names.join("+"));
    if let Some(only) = &cfg.targets {
        let kinds: Vec<&str> = SinkKind::ALL.iter().filter(|k| only.contains(k)).map(|k| k.name()).collect();
        group.push_str(&format!(".only-{}", kinds.join("+")));
    }
    cfg.broker.name(&group)
}
