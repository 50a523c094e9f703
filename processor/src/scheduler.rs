//! Rounds: the owned partitions' queues drained in chunks by `--threads` engine threads, each
//! partition by one thread at a time so its order is kept.

use std::sync::Mutex;
use std::time::Instant;

use crate::error::{Error, Result};

use crate::partition::Part;
use crate::queue::PartitionFeed;
use crate::rebalance::Ctx;
use crate::worker::{now_us, Tp, Worker};

impl Worker {
    /// One round on the engine threads: every owned partition's queue is drained (up to
    /// [`ROUND_RECORDS`]) in chunks, each chunk by whichever of `threads` threads is free, so
    /// a busy partition never leaves a thread idle while another still has work. One
    /// partition is fed by one thread at a time, in offset order. Returns the records fed.
    pub(crate) fn round(&mut self, queues: &[(Tp, PartitionFeed<Ctx>)], threads: usize) -> Result<usize> {
        self.clock_us = now_us();
        let started = Instant::now();
        let Worker { parts, outlet, decoder, clock_us, .. } = self;
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
pub(crate) fn on_threads<T: Send>(threads: usize, work: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    std::thread::scope(|s| {
        let work = &work;
        let others: Vec<_> = (1..threads).map(|t| s.spawn(move || work(t))).collect();
        let mut results = vec![work(0)?];
        for h in others {
            results.push(h.join().map_err(|_| Error::EnginePanicked)??);
        }
        Ok(results)
    })
}

/// A partition's share of a round.
pub(crate) struct Slot<'a> {
    pub(crate) part: &'a mut Part,
    pub(crate) queue: &'a PartitionFeed<Ctx>,
    pub(crate) fed: usize,
    pub(crate) done: bool,
}

/// Records a thread feeds from one partition before it looks for the next free partition.
pub(crate) const CHUNK_RECORDS: usize = crate::queue::BATCH;

/// Records one partition's queue gives its engine thread per round: small enough that
/// checkpoints, rebalances and signals are served promptly, large enough that starting the
/// round's threads costs nothing measurable.
pub(crate) const ROUND_RECORDS: usize = 16384;
