//! The consumer's context: partitions assigned are restored from this replica's checkpoint or
//! rebuilt; partitions revoked are checkpointed first, then given up.

use std::cell::{RefCell, RefMut};
use std::rc::Rc;

use crate::error::Error;
use pitgun_runtime::error::Error as EdgeError;
use pitgun_runtime::kafka::record_consumer_lag;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};
use send_wrapper::SendWrapper;
use tracing::{info, warn};

use crate::worker::{Tp, Worker};

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
    fn stats(&self, stats: rdkafka::Statistics) {
        record_consumer_lag(&stats, &self.lag);
    }
}

impl ConsumerContext for Ctx {
    /// Assign: resume each partition from this replica's checkpoint, or rebuild it from the
    /// earliest offset. Revoke: checkpoint first, then give the partitions up.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let mut worker = self.lock();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let wanted: Vec<Tp> = tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                for (topic, partition) in wanted {
                    match worker.take_partition(&topic, partition) {
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
                if let Err(e) = consumer.assign(tpl) {
                    worker.fatal.get_or_insert(Error::from(EdgeError::kafka("cannot take the assigned partitions")(e)));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<Tp> = tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                if let Err(e) = worker.checkpoint(consumer, Some(&revoked), CommitMode::Sync) {
                    worker.fatal.get_or_insert(Error::RevokeCheckpoint(Box::new(e)));
                }
                worker.assignment += 1;
                for tp in &revoked {
                    if worker.parts.remove(tp).is_some() {
                        info!(topic = %tp.0, partition = tp.1, "partition revoked after its checkpoint");
                    }
                }
                if let Err(e) = consumer.unassign() {
                    worker.fatal.get_or_insert(Error::from(EdgeError::kafka("cannot give up revoked partitions")(e)));
                }
            }
            other => warn!("rebalance error: {:?}", other),
        }
    }
}
