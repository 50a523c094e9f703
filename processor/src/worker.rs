//! What the polling loop and the rebalance callback share, and the steps they take on it:
//! taking a partition, feeding a stray record, idle expiry, the end of input.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::error::Result;
use pitgun_codec::wire::Decoder;
use pitgun_engine::{Runner, SessionStore};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use tracing::{info, warn};

use crate::changelog::{Chain, Changelog};
use crate::config::{PlanFactory, Summary};
use crate::group::SessionGroups;
use crate::metrics::{Reported, REBUILT_FIRST_READ, REBUILT_STATE_UNAVAILABLE};
use crate::outlet::Outlet;
use crate::partition::{Part, Tally};
use crate::queue::Scratch;
use crate::state::{Restored, StateDb};

/// An input partition: topic and partition number.
pub(crate) type Tp = (String, i32);

/// Everything the loop and the rebalance callback share (both run on the polling thread;
/// during a round the engine threads borrow the partitions, the outlet and the decoder).
pub(crate) struct Worker {
    pub(crate) cfg_plan: PlanFactory,
    pub(crate) db: StateDb,
    /// The state changelog (none when turned off).
    pub(crate) changelog: Option<Changelog>,
    pub(crate) outlet: Outlet,
    pub(crate) parts: BTreeMap<Tp, Part>,
    /// Low and high watermarks seen at start (for `--until-end` and rebuilds).
    pub(crate) bounds: BTreeMap<Tp, (i64, i64)>,
    pub(crate) decoder: Decoder,
    pub(crate) summary: Summary,
    pub(crate) fatal: Option<crate::error::Error>,
    pub(crate) assigned_once: bool,
    /// Bumped by every assignment and revocation: the partition queues must be split again.
    pub(crate) assignment: u64,
    pub(crate) closed_retention_us: i64,
    pub(crate) last_checkpoint: Instant,
    pub(crate) first_record: Option<Instant>,
    /// The driver clock (µs) for idle tracking, read once per round rather than per record (a
    /// clock read per record was 5 % of the processor's time).
    pub(crate) clock_us: i64,
    /// Whether the first checkpoint with partitions has been logged (for operators and tests).
    pub(crate) checkpointed_partitions: bool,
    /// Engine threads; a checkpoint stages the partitions on as many.
    pub(crate) threads: usize,
    /// Most sessions a partition's engine holds open.
    pub(crate) max_open_sessions: usize,
}

/// An error and its sources, `: `-joined, for a log line.
fn chain(e: &dyn std::error::Error) -> String {
    std::iter::successors(Some(e), |e| e.source()).map(|e| e.to_string()).collect::<Vec<_>>().join(": ")
}

pub(crate) fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

impl Worker {
    /// Loads a newly assigned partition; returns where to start reading it. `committed` is the
    /// group's committed offset for it: the local checkpoint is this partition's state only if
    /// it was written at exactly that offset (another replica may have owned the partition
    /// since, or a crash came between the state write and the commit). Anything else is
    /// discarded, and the state at `committed` is read from the changelog; failing that, the
    /// partition is rebuilt from the earliest offset, its outputs held back below `committed`
    /// — the replica that committed it has sent them.
    pub(crate) fn take_partition(&mut self, topic: &str, partition: i32, committed: Option<i64>) -> Result<Offset> {
        let plan = (self.cfg_plan)().map_err(crate::error::Error::Plan)?;
        let tp = (topic.to_string(), partition);
        // Only the offset is read to decide; a stale checkpoint is not parsed.
        let mut discarded = false;
        let local = match self.db.checkpoint_offset(topic, partition)? {
            Some(at) if Some(at) == committed && !self.written_over(topic, partition, at)? => {
                let reading = Instant::now();
                let restored = self.db.restore(topic, partition)?;
                self.outlet.metrics.restore_seconds.observe(reading.elapsed().as_secs_f64());
                restored
            }
            Some(stale) => {
                warn!(topic, partition, local = stale, committed = ?committed, "local checkpoint is not the group's state at its committed offset: discarded");
                self.db.discard(topic, partition)?;
                discarded = true;
                self.outlet.metrics.checkpoints_discarded.inc();
                self.summary.discarded_checkpoints += 1;
                None
            }
            None => None,
        };
        let (from_log, local) = match (local, committed) {
            (None, Some(at)) => (true, self.restore_from_changelog(topic, partition, at)?),
            (local, _) => (false, local),
        };
        let (store, offset, start) = match local {
            Some(mut r) => {
                r.store.resume(now_us());
                self.outlet.metrics.sessions_restored.inc_by(r.store.open_count() as u64);
                if from_log {
                    self.outlet.metrics.changelog_restored.inc();
                    self.summary.changelog_restored_partitions += 1;
                    info!(topic, partition, offset = r.offset, sessions = r.store.open_count(), "restored from the changelog");
                } else {
                    self.outlet.metrics.checkpoints_restored.inc();
                    self.summary.restored_partitions += 1;
                    info!(topic, partition, offset = r.offset, sessions = r.store.open_count(), "restored checkpoint");
                }
                (r.store, r.offset, Offset::Offset(r.offset))
            }
            None => {
                // State was had before (a committed offset, or a checkpoint of this replica's own
                // whose offsets the group no longer has): rebuilding it is news to an operator.
                let cause = if committed.is_some() || discarded { REBUILT_STATE_UNAVAILABLE } else { REBUILT_FIRST_READ };
                self.outlet.metrics.partitions_rebuilt.with_label_values(&[cause]).inc();
                self.summary.rebuilt_partitions += 1;
                let low = self.bounds.get(&tp).map(|b| b.0).unwrap_or(0);
                info!(topic, partition, from = low, emit_from = ?committed, cause, "rebuilding from the earliest offset");
                (self.db.empty_store(topic, partition), low, Offset::Beginning)
            }
        };
        let mut runner = Runner::with_store(plan, store);
        runner.engine_mut().limit_open_sessions(self.max_open_sessions);
        let part = Part {
            name: format!("{topic}/{partition}"),
            runner,
            next_offset: offset,
            emit_from: committed.unwrap_or(i64::MIN),
            reported: Reported::default(),
            chain: Chain::new(),
            out: Vec::new(),
            tally: Tally::default(),
            groups: SessionGroups::default(),
            scratch: Scratch::default(),
        };
        self.parts.insert(tp, part);
        Ok(start)
    }

    /// Whether another replica has written the group's state at `committed` to the changelog
    /// since this one wrote its local checkpoint there (it took the partition, its idle clock
    /// closed sessions, and it committed the same offset). Without a changelog, or one that
    /// cannot be read, the local checkpoint is trusted, as its offset says.
    fn written_over(&self, topic: &str, partition: i32, committed: i64) -> Result<bool> {
        let Some(log) = &self.changelog else { return Ok(false) };
        let latest = match log.last_writer(topic, partition, committed) {
            Ok(latest) => latest,
            Err(e) => {
                warn!(topic, partition, committed, error = %chain(&e), "cannot read the changelog; the local checkpoint is taken as the group's");
                return Ok(false);
            }
        };
        let over = latest.is_some_and(|w| Some(w) != self.db.writer(topic, partition).ok().flatten());
        if over {
            info!(topic, partition, committed, "another replica wrote the state at the committed offset since this one's checkpoint");
        }
        Ok(over)
    }

    /// The partition's state at the group's `committed` offset from the changelog, written to
    /// the state folder; `None` when the changelog is off or cannot give it (rebuild instead).
    fn restore_from_changelog(&mut self, topic: &str, partition: i32, committed: i64) -> Result<Option<Restored>> {
        let Some(log) = &self.changelog else { return Ok(None) };
        let started = Instant::now();
        let read = match log.restore(topic, partition, committed) {
            Ok(Some(read)) => read,
            Ok(None) => return Ok(None),
            Err(e) => {
                warn!(topic, partition, committed, error = %chain(&e), "cannot restore from the changelog");
                return Ok(None);
            }
        };
        let metrics = &self.outlet.metrics;
        metrics.restore_records.inc_by(read.records);
        metrics.restore_bytes.inc_by(read.bytes);
        self.db.replace(topic, partition, committed, read.writer, read.changes)?;
        let restored = match self.db.restore(topic, partition) {
            Ok(restored) => restored,
            Err(e) => {
                // Kept, it would fail every start the same way: rebuild instead.
                warn!(topic, partition, committed, error = %chain(&e), "the changelog's state does not load: discarded");
                self.db.discard(topic, partition)?;
                return Ok(None);
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        metrics.changelog_restore_seconds.observe(seconds);
        info!(
            topic,
            partition,
            records = read.records,
            bytes = read.bytes,
            seconds,
            records_per_second = read.records as f64 / seconds.max(1e-9),
            "changelog restore"
        );
        Ok(restored)
    }

    /// A record from the consumer's main queue (fetched before its partition's queue was split).
    pub(crate) fn handle(&mut self, msg: &BorrowedMessage<'_>) {
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

    /// Sums the partitions' tallies and their engines' counters into the summary and the metrics.
    pub(crate) fn absorb(&mut self) {
        for part in self.parts.values_mut() {
            let t = std::mem::take(&mut part.tally);
            self.outlet.metrics.events_in.inc_by(t.records);
            self.summary.records += t.records;
            self.summary.rows += t.rows;
            self.summary.late += t.late;
            self.summary.late_shed += t.late_shed;
            self.summary.deadletters += t.deadletters;
            if part.reported.publish(part.runner.engine().stats(), &self.outlet.metrics, &mut self.summary) {
                warn!(partition = %part.name, "{}; counted in uncovered_sources_total", pitgun_engine::UNCOVERED_SOURCES);
            }
        }
    }

    /// Idle expiry, then forget old closed ids.
    pub(crate) fn expire(&mut self) -> Result<()> {
        let now = now_us();
        let cutoff = now - self.closed_retention_us;
        for part in self.parts.values_mut() {
            if part.catching_up() {
                continue; // the previous owner closed what idled before its commit
            }
            let engine = part.runner.engine_mut();
            engine.expire_idle(now, &mut part.out);
            engine.store_mut().forget_closed_before(cutoff);
            let origin = format!("{}/idle-expiry", part.name);
            part.route_outputs(&self.outlet, &origin, part.version_now())?;
        }
        Ok(())
    }

    /// Whether every owned partition has been read up to the end offsets seen at start.
    /// `positions` are the consumer's positions: a partition whose last offsets hold no record
    /// (a transactional producer's commit or abort marker, or aborted records) is read to its
    /// end when the position has stepped over them, though no record carried those offsets.
    pub(crate) fn reached_end(&self, positions: &BTreeMap<Tp, i64>) -> bool {
        let read_to = |tp: &Tp, p: &Part| p.next_offset.max(positions.get(tp).copied().unwrap_or(i64::MIN));
        self.assigned_once
            && !self.parts.is_empty()
            && self.parts.iter().all(|(tp, p)| self.bounds.get(tp).is_none_or(|&(_, high)| read_to(tp, p) >= high))
    }

    /// End of input: close every session of every owned partition, as replay does.
    pub(crate) fn finish(&mut self) -> Result<()> {
        for part in self.parts.values_mut() {
            part.runner.finish(now_us(), &mut part.out);
            let origin = format!("{}/end", part.name);
            part.route_outputs(&self.outlet, &origin, part.version_now())?;
        }
        self.absorb();
        Ok(())
    }
}
