//! One owned partition's librdkafka queue, read in batches.
//!
//! rdkafka's `PartitionQueue::poll` hands out one record per call through librdkafka's event
//! API: a queue lock, two clock readings and a reference-counted allocation per record, about a
//! quarter of what the processor spent per record outside the engine. librdkafka's
//! `rd_kafka_consume_batch_queue` takes up to a chunk of records under one lock (it keeps the
//! consumer's application position and poll-interval bookkeeping, as `poll` does); the records
//! are lent to the caller as offset and payload, and destroyed once it has fed them.

use std::ffi::{c_void, CString};
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::thread::Thread;

use crate::error::{Error, Result};
use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// Records taken from the queue per librdkafka call (the caller's chunk is at most this): with
/// ~50 sessions per partition, a batch holds dozens of records of each, which the feed groups.
pub const BATCH: usize = 8192;

/// Reusable room for the message pointers of one batch; between batches it holds none alive.
#[derive(Default)]
pub struct Scratch(Vec<*mut rd::rd_kafka_message_t>);

// SAFETY: every message a batch took is destroyed before `drain` returns; what stays are
// dangling pointers nothing reads.
unsafe impl Send for Scratch {}

/// A partition's queue, split off the consumer's main queue so a thread can read it alone.
pub struct PartitionFeed<C: ConsumerContext + 'static> {
    queue: NonNull<rd::rd_kafka_queue_t>,
    /// The thread the non-empty callback unparks; boxed so its address stays put for librdkafka.
    _wake: Box<Thread>,
    /// The queue belongs to this consumer's client, which must outlive it.
    _consumer: Arc<BaseConsumer<C>>,
}

// SAFETY: librdkafka queues are thread-safe (every operation takes the queue's lock), and
// `wake` is only read by librdkafka's callback and dropped after the callback is disabled.
unsafe impl<C: ConsumerContext> Send for PartitionFeed<C> {}
unsafe impl<C: ConsumerContext> Sync for PartitionFeed<C> {}

unsafe extern "C" fn unpark(_: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Thread` boxed in the feed, alive until the callback is disabled.
    unsafe { (*(opaque as *const Thread)).unpark() }
}

impl<C: ConsumerContext + 'static> PartitionFeed<C> {
    /// Splits `topic`/`partition` off the consumer's main queue (the partition must be assigned);
    /// `wake` is unparked whenever the queue goes from empty to non-empty.
    pub fn split(consumer: &Arc<BaseConsumer<C>>, topic: &str, partition: i32, wake: Thread) -> Option<Self> {
        let topic = CString::new(topic).ok()?;
        // SAFETY: the client pointer is valid while `consumer` lives; the queue is destroyed in
        // `drop`, before the `Arc` that keeps the client is released.
        let queue = NonNull::new(unsafe { rd::rd_kafka_queue_get_partition(consumer.client().native_ptr(), topic.as_ptr(), partition) })?;
        let wake = Box::new(wake);
        // SAFETY: `queue` is valid; the opaque pointer stays valid until `drop` disables it.
        unsafe {
            rd::rd_kafka_queue_forward(queue.as_ptr(), ptr::null_mut());
            rd::rd_kafka_queue_cb_event_enable(queue.as_ptr(), Some(unpark), &*wake as *const Thread as *mut c_void);
        }
        Some(PartitionFeed { queue, _wake: wake, _consumer: consumer.clone() })
    }

    /// Takes what the queue holds now, at most `max` records (capped at [`BATCH`]), and lends
    /// them to `feed` as offset and payload, in offset order; librdkafka's messages for errors
    /// it queued for this partition go to `on_error` first. Returns the count taken. Every
    /// record taken is destroyed once `feed` returns, whatever it returned. `scratch` is the
    /// caller's reusable room for the messages' pointers.
    pub fn drain(
        &self,
        scratch: &mut Scratch,
        max: usize,
        mut on_error: impl FnMut(String),
        feed: impl FnOnce(&[(i64, &[u8])]) -> Result<()>,
    ) -> Result<usize> {
        let scratch = &mut scratch.0;
        scratch.clear();
        scratch.resize(max.min(BATCH), ptr::null_mut());
        // SAFETY: the queue is valid and `scratch` has room for the count asked for.
        let n = unsafe { rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), 0, scratch.as_mut_ptr(), scratch.len()) };
        if n < 0 {
            return Err(Error::Runtime(pitgun_runtime::error::Error::Kafka {
                what: "reading a partition queue".into(),
                source: rdkafka::error::KafkaError::MessageConsumption(unsafe { rd::rd_kafka_last_error() }.into()),
            }));
        }
        let taken = Taken(&scratch[..n as usize]);
        let mut records = Vec::with_capacity(taken.0.len());
        for &m in taken.0 {
            // SAFETY: librdkafka filled the first `n` entries with valid messages, destroyed only
            // when `taken` drops, after `feed` has returned and the borrows have ended.
            let m = unsafe { &*m };
            if m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                let text = unsafe { std::ffi::CStr::from_ptr(rd::rd_kafka_message_errstr(m)) };
                on_error(text.to_string_lossy().into_owned());
                continue;
            }
            let payload: &[u8] = if m.payload.is_null() {
                &[]
            } else {
                // SAFETY: a message's payload is `len` bytes, valid until the message is destroyed.
                unsafe { std::slice::from_raw_parts(m.payload as *const u8, m.len) }
            };
            records.push((m.offset, payload));
        }
        feed(&records)?;
        Ok(n as usize)
    }
}

/// Hints the CPU to load `lines` cache lines from `at` (no effect on other architectures).
#[inline(always)]
pub fn prefetch(at: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in 0..lines.min(8) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.wrapping_add(line * 64) as *const i8) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, lines);
}

/// Messages taken from a queue, destroyed when dropped (also when feeding one failed).
struct Taken<'a>(&'a [*mut rd::rd_kafka_message_t]);

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        for &m in self.0 {
            // SAFETY: each message was taken once from the queue and is destroyed once.
            unsafe { rd::rd_kafka_message_destroy(m) }
        }
    }
}

impl<C: ConsumerContext + 'static> Drop for PartitionFeed<C> {
    fn drop(&mut self) {
        // SAFETY: disables the callback before `wake` is freed, then releases the queue while
        // the consumer (and its client) is still held.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), None, ptr::null_mut());
            rd::rd_kafka_queue_destroy(self.queue.as_ptr());
        }
    }
}
