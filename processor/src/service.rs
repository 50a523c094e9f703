//! The processor service: set up the producer, the state and the consumer, then poll, run rounds
//! and checkpoint until told to stop or the input ends.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pitgun_codec::wire::Decoder;
use pitgun_runtime::kafka::{partition_bounds, positions, topics};
use pitgun_runtime::kafka_log::Quiet;
use pitgun_runtime::serve::{spawn_health_server, Health};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{Producer, ThreadedProducer};
use send_wrapper::SendWrapper;
use tracing::{info, warn};

use crate::changelog::Changelog;
use crate::config::{Config, Summary};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::outlet::{Deliveries, OutTopics, Outlet};
use crate::queue::PartitionFeed;
use crate::rebalance::Ctx;
use crate::state::{Meta, StateDb};
use crate::worker::{now_us, Tp, Worker};
use pitgun_runtime::error::Error as EdgeError;

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
    (cfg.plan)().map_err(Error::Plan)?;
    cfg.broker.ensure_topics(
        &[out_topics.aggregates.clone(), out_topics.late.clone(), out_topics.deadletter.clone()],
        cfg.output_partitions,
        Duration::from_secs(10),
    )?;
    let db = StateDb::open(&cfg.state_dir, &Meta { manifest: cfg.manifest.clone(), version: cfg.version, group: group.clone() })?;

    let producer: ThreadedProducer<Deliveries> = cfg
        .broker
        .producer_config(&format!("pitgun-process-{}", cfg.manifest))
        .set("message.timeout.ms", cfg.flush_timeout.as_millis().to_string())
        // librdkafka would buffer up to 1 GiB of outputs while the broker lags (a dead-letter
        // storm: every refused record is copied out); past 64 MiB sending waits instead.
        .set("queue.buffering.max.kbytes", "65536")
        .create_with_context(Deliveries::default())
        .map_err(EdgeError::kafka("cannot create the Kafka producer"))?;

    // Learn the output topics' leaders now, so the first rows (and the first checkpoint's
    // flush) do not wait for metadata of topics created a moment ago.
    for t in [&out_topics.aggregates, &out_topics.late, &out_topics.deadletter] {
        producer.client().fetch_metadata(Some(t), Duration::from_secs(10)).map_err(EdgeError::kafka(format!("no metadata for {t}")))?;
    }
    let metrics = Metrics::new(&cfg.manifest, cfg.version);
    let lag = metrics.consumer_lag.clone();
    let health = Health::new(metrics.registry.clone());
    if let Some(addr) = cfg.metrics_listen {
        let bound = spawn_health_server(addr, health.clone())?;
        info!("metrics on http://{bound}/metrics");
    }

    let changelog = match cfg.changelog {
        true => Some(changelog(&cfg, &inputs)?),
        false => None,
    };
    let worker = Rc::new(RefCell::new(Worker {
        cfg_plan: cfg.plan.clone(),
        db,
        changelog,
        outlet: Outlet {
            producer,
            topics: out_topics,
            metrics,
            flush_timeout: cfg.flush_timeout,
            late_quota: cfg.late_per_second.map(pitgun_runtime::quota::Quota::per_second),
        },
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
        max_open_sessions: cfg.max_open_sessions,
    }));
    let mut consumer_config = cfg.broker.consumer_config(&format!("pitgun-process-{}", cfg.manifest));
    consumer_config
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", cfg.group_session_timeout.as_millis().to_string())
        .set("heartbeat.interval.ms", (cfg.group_session_timeout.as_millis() / 4).max(100).to_string())
        .set("statistics.interval.ms", "1000")
        .set("fetch.wait.max.ms", cfg.fetch_wait_ms())
        // Partitions taken are restored inside the poll that assigns them (up to 2 min each
        // from the changelog); librdkafka's 5 min default would leave the group meanwhile.
        .set("max.poll.interval.ms", "900000")
        // A rebalance moves only the partitions that change owner; the others keep being read.
        .set("partition.assignment.strategy", "cooperative-sticky");
    if let Some(id) = &cfg.instance_id {
        consumer_config.set("group.instance.id", id);
    }
    for (k, v) in &cfg.consumer_settings {
        consumer_config.set(k, v);
    }
    let consumer: Arc<BaseConsumer<Ctx>> = Arc::new(
        consumer_config
            .create_with_context(Ctx { worker: SendWrapper::new(worker.clone()), lag })
            .map_err(EdgeError::kafka("cannot create the Kafka consumer"))?,
    );

    // Bounds of every input partition, read before consuming (the end for `--until-end`).
    for topic in &inputs {
        let bounds = partition_bounds(&*consumer, topic)?;
        if bounds.is_empty() {
            return Err(Error::NoInputTopic(topic.clone()));
        }
        for (partition, (low, high)) in bounds {
            tracing::debug!(topic, partition, low, high, "partition bounds");
            worker.borrow_mut().bounds.insert((topic.clone(), partition), (low, high));
        }
    }
    let refs: Vec<&str> = inputs.iter().map(|s| s.as_str()).collect();
    consumer.subscribe(&refs).map_err(EdgeError::kafka("cannot subscribe"))?;
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
    let mut consume = || -> Result<()> {
        loop {
            if fed_last_round == 0 {
                std::thread::park_timeout(Duration::from_millis(5));
            }
            loop {
                let polled = consumer.poll(Duration::ZERO);
                let mut c = worker.borrow_mut();
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
            let mut c = worker.borrow_mut();
            if let Some(e) = c.fatal.take() {
                return Err(e);
            }
            // A trickle is fed on this thread alone: starting threads for a few records is waste.
            let round_threads = if fed_last_round < 256 { 1 } else { threads };
            fed_last_round = c.round(&queues, round_threads)?;
            let now = Instant::now();
            health.ready.store(c.assigned_once, Ordering::Relaxed);
            if cfg.until_end && c.reached_end(&positions(&*consumer)) {
                c.finish()?;
                c.checkpoint(&consumer, None, CommitMode::Sync)?;
                info!("end of input reached; final checkpoint written");
                return Ok(());
            }
            if stop.load(Ordering::Relaxed) {
                c.checkpoint(&consumer, None, CommitMode::Sync)?;
                info!("stopping: final checkpoint written");
                return Ok(());
            }
            if now.saturating_duration_since(c.last_checkpoint) >= cfg.checkpoint_interval {
                c.expire()?;
                c.checkpoint(&consumer, None, CommitMode::Async)?;
            }
            if let Some(e) = c.fatal.take() {
                return Err(e);
            }
        }
    };
    let consumed = consume();
    // The queues hold the consumer; drop them first so closing it below really closes it.
    queues.clear();
    if let Err(e) = consumed {
        // Closing the consumer revokes its partitions, and a revocation checkpoints them: after
        // an error, what was read since the last checkpoint may not all be stored (an output the
        // producer refused), so it is given up instead, and read again from that checkpoint.
        let mut c = worker.borrow_mut();
        if !c.parts.is_empty() {
            warn!(partitions = c.parts.len(), "stopping on an error: partitions given up without a checkpoint");
        }
        c.parts.clear();
        drop(c);
        drop(consumer);
        return Err(e);
    }
    let mut c = worker.borrow_mut();
    let mut summary = c.summary.clone();
    summary.consume_seconds = c.first_record.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
    // Everything is checkpointed: closing the consumer revokes nothing left to save.
    c.parts.clear();
    drop(c);
    drop(consumer);
    summary.peak_resident_bytes = pitgun_runtime::memory::peak_resident_bytes();
    Ok(summary)
}

/// The state changelog: its topic created with a partition per input partition (the most any
/// input topic has), or checked to have enough.
fn changelog(cfg: &Config, inputs: &[String]) -> Result<Changelog> {
    let topic = cfg.broker.name(&topics::changelog(&cfg.manifest, cfg.version));
    let admin: BaseConsumer<Quiet> =
        cfg.broker.client_config("pitgun-process-admin").create_with_context(Quiet).map_err(EdgeError::kafka("cannot create a Kafka client"))?;
    let mut needs = 0;
    for input in inputs {
        needs = needs.max(partition_bounds(&admin, input)?.keys().max().map_or(0, |p| p + 1));
    }
    cfg.broker.ensure_topics(std::slice::from_ref(&topic), needs.max(1), Duration::from_secs(10))?;
    let has = partition_bounds(&admin, &topic)?.len();
    if (has as i32) < needs {
        return Err(Error::ChangelogPartitions { topic, has, needs: needs - 1 });
    }
    Changelog::new(&cfg.broker, topic, &format!("pitgun-process-{}-changelog", cfg.manifest), cfg.flush_timeout, cfg.fetch_wait_ms())
}
