//! The output side: records leave in output-time order. An on-time event goes out when the merged
//! stream reaches it; a delayed one waits in a heap keyed by `(output time, arrival order)` until
//! the stream passes its output time. The heap is capped at [`MAX_HELD`]: when full, further
//! delays are not injected, so memory stays bounded whatever the duration or fault rates.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::ControlFlow;

use crate::Record;

/// Most records held back at once.
pub const MAX_HELD: usize = 1 << 16;

struct Held {
    release_us: i64,
    order: u64,
    record: Record,
}

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        (self.release_us, self.order) == (other.release_us, other.order)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Held) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Held) -> std::cmp::Ordering {
        (self.release_us, self.order).cmp(&(other.release_us, other.order))
    }
}

/// Sends records to the caller's sink in output-time order, until the sink breaks.
pub(crate) struct Delivery<F: FnMut(Record) -> ControlFlow<()>> {
    emit: F,
    stopped: bool,
    held: BinaryHeap<Reverse<Held>>,
    order: u64,
    pub max_held: usize,
    pub envelopes: u64,
    pub malformed: u64,
}

impl<F: FnMut(Record) -> ControlFlow<()>> Delivery<F> {
    pub(crate) fn new(emit: F) -> Delivery<F> {
        Delivery { emit, stopped: false, held: BinaryHeap::new(), order: 0, max_held: 0, envelopes: 0, malformed: 0 }
    }

    /// Sends every held record due at or before `now_us`.
    pub(crate) fn release_until(&mut self, now_us: i64) {
        while !self.stopped && self.held.peek().is_some_and(|h| h.0.release_us <= now_us) {
            let Reverse(held) = self.held.pop().expect("peeked");
            self.send(held.record);
        }
    }

    pub(crate) fn send(&mut self, record: Record) {
        if self.stopped {
            return;
        }
        match record {
            Record::Envelope(_) => self.envelopes += 1,
            Record::Malformed(_) => self.malformed += 1,
        }
        self.stopped = (self.emit)(record).is_break();
    }

    /// Whether the sink broke: nothing more is sent.
    pub(crate) fn stopped(&self) -> bool {
        self.stopped
    }

    /// Whether another record can be held back.
    pub(crate) fn has_room(&self) -> bool {
        self.held.len() < MAX_HELD
    }

    /// Holds `record` until the stream reaches `release_us`.
    pub(crate) fn hold(&mut self, release_us: i64, record: Record) {
        debug_assert!(self.has_room());
        self.order += 1;
        self.held.push(Reverse(Held { release_us, order: self.order, record }));
        self.max_held = self.max_held.max(self.held.len());
    }

    /// Sends everything still held, in output-time order.
    pub(crate) fn finish(&mut self) {
        self.release_until(i64::MAX);
    }
}
