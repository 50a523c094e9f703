//! The consumer's context: partitions assigned are restored from this replica's checkpoint or
//! rebuilt; partitions revoked are checkpointed first, then given up.

use std::cell::{RefCell, RefMut};
use std::rc::Rc;

use crate::error::Error;
use pitgun_runtime::error::Error as EdgeError;
use pitgun_runtime::kafka::record_consumer_lag;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use send_wrapper::SendWrapper;
use tracing::{info, warn};

use crate::worker::{Tp, Worker};

/// How long an assignment waits for the group's committed offsets.
const COMMITTED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The consumer's context. librdkafka serves rebalances inside `poll`, on the thread that
/// polls — the only thread that touches the engines — and `SendWrapper` checks exactly that.
pub(crate) struct Ctx {
    pub(crate) worker: SendWrapper<Rc<RefCell<Worker>>>,
    /// Consumer lag per partition (set from statistics, which may arrive on another thread).
    pub(crate) lag: prometheus::IntGaugeVec,
}

impl Ctx {
    pub(crate) fn lock(&self) -> RefMut<'_, Worker> {
        self.worker.borrow_mut()
    }
}

impl ClientContext for Ctx {
    pitgun_runtime::forward_kafka_logs!();

    fn stats(&self, stats: rdkafka::Statistics) {
        record_consumer_lag(&stats, &self.lag);
    }
}

impl ConsumerContext for Ctx {
    /// Assign: resume each partition from this replica's checkpoint if it is at the group's
    /// committed offset, or rebuild it from the earliest offset. Revoke: checkpoint first, then
    /// give the partitions up.
    ///
    /// Under the cooperative protocol the list holds only the partitions that change owner, and
    /// the others keep being read meanwhile.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let mut worker = self.lock();
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let wanted: Vec<Tp> = tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                // Which local checkpoints are still the group's is decided against its offsets.
                let committed = match wanted.is_empty() {
                    true => Ok(TopicPartitionList::new()),
                    false => consumer.committed_offsets(tpl.clone(), COMMITTED_TIMEOUT),
                };
                // Without them nothing can be decided: no partition is taken and the replica
                // stops (the assignment is still completed, so the group is not left waiting).
                let committed = committed.and_then(|c| {
                    let failed = c.elements().iter().find_map(|e| e.error().err());
                    failed.map_or(Ok(c), Err)
                });
                let committed = match committed {
                    Ok(c) => c,
                    Err(e) => {
                        worker.fatal.get_or_insert(Error::from(EdgeError::kafka("cannot read the group's committed offsets")(e)));
                        TopicPartitionList::new()
                    }
                };
                for (topic, partition) in wanted {
                    if worker.fatal.is_some() {
                        break;
                    }
                    let at = committed.find_partition(&topic, partition).and_then(|e| match e.offset() {
                        Offset::Offset(n) => Some(n),
                        _ => None,
                    });
                    match worker.take_partition(&topic, partition, at) {
                        Ok(offset) => {
                            if let Err(e) = tpl.set_partition_offset(&topic, partition, offset) {
                                worker.fatal.get_or_insert(Error::from(EdgeError::kafka(format!("cannot seek {topic}/{partition}"))(e)));
                            }
                        }
                        Err(e) => {
                            worker.fatal.get_or_insert(e);
                        }
                    }
                }
                worker.assigned_once = true;
                worker.assignment += 1;
                let taken = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(e) = taken {
                    worker.fatal.get_or_insert(Error::from(EdgeError::kafka("cannot take the assigned partitions")(e)));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<Tp> = tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                // Given up without a checkpoint, or checkpointed:
                // - the group gave them away already (this replica missed its session timeout):
                //   their new owners write the state now, so this one writes nothing more, to
                //   the changelog least of all;
                // - an error is pending (a row the producer would not queue, say): what was read
                //   since the last checkpoint may not all be stored, and a row never queued
                //   leaves no delivery report for the checkpoint's wait to find. Given up as on
                //   any error exit, and read again from the last checkpoint.
                let without_checkpoint =
                    if consumer.assignment_lost() { Some("assignment lost") } else { worker.fatal.as_ref().map(|_| "stopping on an error") };
                let checkpointed = match without_checkpoint {
                    Some(why) => {
                        warn!(partitions = revoked.len(), "{why}: partitions given up without a checkpoint");
                        worker.absorb(); // what they read still counts
                        false
                    }
                    None => match worker.checkpoint(consumer, Some(&revoked), CommitMode::Sync) {
                        Ok(()) => true,
                        Err(e) => {
                            worker.fatal.get_or_insert(Error::RevokeCheckpoint(Box::new(e)));
                            false
                        }
                    },
                };
                worker.assignment += 1;
                for tp in &revoked {
                    if worker.parts.remove(tp).is_some() && checkpointed {
                        info!(topic = %tp.0, partition = tp.1, "partition revoked after its checkpoint");
                    }
                    // Its new owner reports it now; a frozen value here would keep
                    // PitgunWatermarkBehind firing. (Err: never set.)
                    let _ = worker.outlet.metrics.watermark_lag.remove_label_values(&[tp.0.as_str(), &tp.1.to_string()]);
                }
                let given_up = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = given_up {
                    worker.fatal.get_or_insert(Error::from(EdgeError::kafka("cannot give up revoked partitions")(e)));
                }
            }
            other => warn!("rebalance error: {:?}", other),
        }
    }
}
