//! The checkpoint protocol: every emitted row acknowledged, then state and offsets in one
//! RocksDB batch, then the same changes acknowledged on the changelog, then the offsets
//! committed to the group.

use std::sync::Mutex;
use std::time::Instant;

use crate::error::Result;
use pitgun_runtime::error::Error as EdgeError;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use rocksdb::WriteBatch;
use tracing::info;

use crate::changelog::Due;
use crate::partition::Part;
use crate::rebalance::Ctx;
use crate::scheduler::on_threads;
use crate::state::{Change, StateDb};
use crate::worker::{now_us, Tp, Worker};
use std::collections::BTreeMap;

/// A partition's checkpoint changes, for the changelog.
type Logged = (Tp, Vec<Change>);

impl Worker {
    /// The checkpoint, in order: flush the producer until every emitted row is acknowledged;
    /// write state and offsets of the partitions in one RocksDB batch; write the changes (or a
    /// snapshot) and a mark per partition to the changelog and wait for them; commit the offsets.
    pub(crate) fn checkpoint(&mut self, consumer: &BaseConsumer<Ctx>, only: Option<&[Tp]>, mode: CommitMode) -> Result<()> {
        self.absorb();
        let started = Instant::now();
        let producer = &self.outlet.producer;
        let metrics = &self.outlet.metrics;
        producer.context().failures.await_acks(producer, self.outlet.flush_timeout)?;
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
            // A partition still catching up never moves the group back: the previous owner's
            // offset stays committed (the state written below is then not the group's, and is
            // rebuilt again if the partition moves before it catches up).
            let commit = part.next_offset.max(part.emit_from);
            tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(commit)).map_err(EdgeError::kafka("offsets to commit"))?;
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
        let logged = self.changelog.is_some();
        let queue = Mutex::new(due);
        let stage = |_| {
            let mut staged = Vec::new();
            while let Some((tp, part)) = queue.lock().expect("checkpoint queue").pop() {
                let mut batch = WriteBatch::default();
                // A partition still catching up is not the group's state: the changelog keeps
                // the previous owner's until this one is.
                let mut changes = (logged && !part.catching_up()).then(Vec::new);
                db.stage(&mut batch, &tp.0, tp.1, part.next_offset, part.runner.engine_mut().store_mut(), changes.as_mut());
                if changes.is_some() {
                    StateDb::stage_writer(&mut batch, &tp.0, tp.1, part.chain.writer());
                }
                staged.push((batch, changes.map(|c| (tp.clone(), c))));
            }
            Ok(staged)
        };
        let staged: Vec<(WriteBatch, Option<Logged>)> = on_threads(self.threads.clamp(1, tpl.count().max(1)), stage)?.into_iter().flatten().collect();
        let (batches, logged): (Vec<WriteBatch>, Vec<_>) = staged.into_iter().unzip();
        let batch = crate::state::join_batches(&batches);
        let (staged, bytes) = (started.elapsed(), batch.size_in_bytes());
        self.db.write(batch)?;
        let written = started.elapsed();
        if let Some(log) = &mut self.changelog {
            let mut changes: BTreeMap<Tp, Vec<Change>> = logged.into_iter().flatten().collect();
            let mut due: Vec<Due<'_>> = Vec::new();
            for (tp, part) in self.parts.iter_mut() {
                if let Some(changes) = changes.remove(tp) {
                    due.push(Due { topic: &tp.0, partition: tp.1, offset: part.next_offset, chain: &mut part.chain, changes });
                }
            }
            self.summary.changelog_bytes += log.write(&self.db, &mut due, metrics)?;
        }
        if tpl.count() > 0 {
            consumer.commit(&tpl, mode).map_err(EdgeError::kafka("offset commit to the group failed"))?;
        }
        metrics.sessions_open.set(open);
        metrics.checkpoints.inc();
        self.summary.checkpoints += 1;
        metrics.checkpoint_seconds.observe(started.elapsed().as_secs_f64());
        tracing::debug!(partitions = tpl.count(), seconds = started.elapsed().as_secs_f64(), ?flushed, ?staged, ?written, logged = ?started.elapsed(), bytes, records = self.summary.records,
            offsets = ?self.parts.values().map(|p| p.next_offset).collect::<Vec<_>>(), "checkpoint");
        metrics.state_bytes.set(self.db.size_bytes() as i64);
        self.last_checkpoint = Instant::now();
        if tpl.count() > 0 && !self.checkpointed_partitions {
            self.checkpointed_partitions = true;
            info!(partitions = tpl.count(), seconds = started.elapsed().as_secs_f64(), "checkpoint written");
        }
        Ok(())
    }
}
