//! The embedded driver: a manifest's engine over dataset files, no broker — what `pitgun replay`
//! runs, as a library.
//!
//! Sessions are independent, so with N threads every record is routed by a hash of its session
//! id to one of N shards, each with its own engine, in file order. A session's events thus
//! reach its engine in the same order whatever N is, and the merged result — final rows in
//! canonical order — is the same for every thread count. Replay's clock is the event time read
//! so far (the stream's is the wall clock): an ended session is closed once it is `idle_timeout`
//! behind, so a long file does not hold every ended session until its end. That clock is kept
//! per clock group ([`CLOCK_GROUPS`] of them, by the same hash), each read and acted on only at
//! its own records: which sessions share a thread then changes nothing.
//!
//! Dependencies: `crossbeam-channel` (bounded queues from the reader to the shards),
//! `xxhash-rust` (routing sessions to shards), `thiserror` (the error type).
#![deny(missing_docs)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pitgun_codec::dataset::{for_each_chunk, Chunk, DatasetError};
use pitgun_codec::session::session_id;
use pitgun_codec::Record;
use pitgun_engine::row::{final_rows, LastVersions};
use pitgun_engine::{EventNote, Origin, Output, Plan, Row, Runner, Stats};

/// Most shards a replay runs (a record's shard is kept in a byte).
pub const MAX_THREADS: usize = 256;
const _: () = assert!(MAX_THREADS <= u8::MAX as usize + 1, "a shard number must fit a byte");

/// How to run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Shards, each on its own thread (1: the calling thread; at most [`MAX_THREADS`]).
    pub threads: usize,
    /// Keep every emission in order (per session) instead of the final rows.
    pub changelog: bool,
    /// Stop at the first refused record: the run is then [`ReplayError::Refused`], the same one
    /// whatever the thread count (shards on other threads may have read past it).
    pub strict: bool,
}

/// Bits of an [`Origin`] that hold the line; the file's index is above them.
const LINE_BITS: u32 = 40;

/// A record's place in the inputs as the engine keeps it with the event: the file's index above
/// the line (or Avro record number), so a note written when the event leaves the reorder buffer
/// names the line it was read from. The file index stays below the top bit, so no place is
/// [`Origin::UNKNOWN`]; a place past these bounds (8 million files, a trillion lines) is unknown.
fn origin(file: u32, line: u64) -> Origin {
    let file = u64::from(file);
    match file < 1 << (64 - LINE_BITS - 1) && line < 1 << LINE_BITS {
        true => Origin(file << LINE_BITS | line),
        false => Origin::UNKNOWN,
    }
}

/// The input index and line of the event a note is about, when the replay read it.
pub fn location(note: &EventNote) -> Option<(usize, u64)> {
    let Origin(o) = note.origin;
    (note.origin != Origin::UNKNOWN).then_some(((o >> LINE_BITS) as usize, o & ((1 << LINE_BITS) - 1)))
}

/// A record the engine refused before it became an event, located in its file.
#[derive(Debug, Clone)]
pub struct BadRecord {
    /// Index of the file among the inputs.
    pub file: usize,
    /// Line (NDJSON) or record (Avro) number, from 1.
    pub line: u64,
    /// Counted reason.
    pub reason: &'static str,
    /// Where and what.
    pub detail: String,
}

/// What a replay produced, merged over its shards.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The final version of every row in canonical order (key, window start, row id), or with
    /// [`Options::changelog`] every emission, per session in emission order.
    pub rows: Vec<Row>,
    /// Events too late for any window, by session, sequence and event id.
    pub late: Vec<EventNote>,
    /// Events the engine refused after decoding (e.g. a session already closed), same order.
    pub rejected: Vec<EventNote>,
    /// Records refused before they became events, by file and line.
    pub bad: Vec<BadRecord>,
    /// The engines' counters, summed.
    pub stats: Stats,
    /// Records read.
    pub records: u64,
}

/// A replay that could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A dataset could not be read.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// A worker could not compile the manifest.
    #[error("{0}")]
    Compile(String),
    /// A worker thread panicked.
    #[error("a replay worker panicked")]
    Panicked,
    /// With [`Options::strict`]: the first record refused, in file order.
    #[error("{}:{}: {}: {}", file.display(), record.line, record.reason, record.detail)]
    Refused {
        /// The file it is in.
        file: PathBuf,
        /// Where in it, and why.
        record: BadRecord,
    },
}

/// Runs the plans `compile` gives (one per shard: a plan holds compiled formulas and is not
/// shared between threads) over `inputs` in order. `progress` receives compressed bytes read.
pub fn replay<E: std::fmt::Display>(
    compile: &(dyn Fn() -> Result<Plan, E> + Sync),
    inputs: &[PathBuf],
    options: Options,
    progress: &dyn Fn(u64),
) -> Result<Outcome, ReplayError> {
    let threads = options.threads.clamp(1, MAX_THREADS);
    let compile = || compile().map_err(|e| ReplayError::Compile(format!("{e:#}")));
    let mut results = Vec::with_capacity(threads);
    let read = if threads == 1 {
        let mut shard = Shard::new(0, 1, options, Runner::new(compile()?));
        let mut keep_going = true;
        let read = inputs.iter().enumerate().try_for_each(|(fi, path)| match keep_going {
            true => for_each_chunk(path, fi as u32, progress, |chunk| {
                keep_going = shard.take(&Routed::new(chunk));
                Ok::<_, ReplayError>(keep_going)
            }),
            false => Ok(()),
        });
        results.push(shard.finish());
        read
    } else {
        let stop = AtomicBool::new(false);
        // The outer result: a worker's failure; the inner: the reader's.
        std::thread::scope(|scope| -> Result<Result<(), ReplayError>, ReplayError> {
            // Every worker sees every chunk and keeps the records of its own sessions, which the
            // reader marks once per chunk (finding a line's session id costs two scans of it:
            // done by every worker, that was the largest cost after decoding). Each session's
            // events reach one engine in file order.
            let (senders, handles): (Vec<_>, Vec<_>) = (0..threads)
                .map(|me| {
                    let (tx, rx) = crossbeam_channel::bounded::<Arc<Routed>>(8);
                    let (stop, compile) = (&stop, &compile);
                    let handle = scope.spawn(move || -> Result<ShardResult, ReplayError> {
                        let mut shard = Shard::new(me, threads, options, Runner::new(compile()?));
                        for routed in rx {
                            if !shard.take(&routed) {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                        Ok(shard.finish())
                    });
                    (tx, handle)
                })
                .unzip();
            let read = inputs.iter().enumerate().filter(|_| !stop.load(Ordering::Relaxed)).try_for_each(|(fi, path)| {
                for_each_chunk(path, fi as u32, progress, |chunk| {
                    let chunk = Arc::new(Routed::new(chunk));
                    // A worker that stopped (its plan did not compile) leaves its result to say why.
                    let delivered = senders.iter().all(|tx| tx.send(chunk.clone()).is_ok());
                    Ok::<_, ReplayError>(delivered && !stop.load(Ordering::Relaxed))
                })
            });
            drop(senders);
            // Every worker is joined before any error is returned: a scope that still held a
            // panicked thread would panic itself instead of answering.
            let joined: Vec<_> = handles.into_iter().map(|h| h.join().map_err(|_| ReplayError::Panicked).and_then(|r| r)).collect();
            for r in joined {
                results.push(r?);
            }
            Ok(read)
        })?
    };
    let outcome = merge(results, options.changelog);
    // Every record before the first refused one reached its shard: the reader stops only after
    // the chunk that held a refusal was sent to every shard, and a shard feeds each chunk it gets
    // up to its own first refusal. So the first in file order is found whatever the thread count.
    // How far the reader got past it depends on timing (a read error there, too), and is not an
    // answer: a refusal found wins over a read error, which can only come after it.
    match outcome.bad.first() {
        Some(first) if options.strict => Err(ReplayError::Refused { file: inputs[first.file].clone(), record: first.clone() }),
        _ => read.map(|()| outcome),
    }
}

/// Records of one clock group between two looks for its ended sessions to close. A look scans
/// the shard's open sessions, so looks stay as rare as one per 4096 records overall; an ended
/// session may then be held until its group has read this many more (about a million records
/// of the whole input), not to the end of a longer one.
const CLOSE_EVERY: u64 = 4096;

/// Groups of sessions (by a hash of the session id) that each keep their own clock. A fixed
/// number, shared out over the threads: a group's records, and so its clock and when its ended
/// sessions close, are the same whatever the thread count. At least [`MAX_THREADS`], so every
/// thread has one.
pub const CLOCK_GROUPS: usize = 256;
const _: () = assert!(CLOCK_GROUPS >= MAX_THREADS && CLOCK_GROUPS <= u8::MAX as usize + 1, "a group number must fit a byte");

/// Everything one shard produced.
#[derive(Default)]
struct ShardResult {
    stats: Stats,
    rows: LastVersions<String, Row>,
    changelog: Vec<Row>,
    notes_late: Vec<EventNote>,
    notes_rejected: Vec<EventNote>,
    bad: Vec<BadRecord>,
    records: u64,
}

/// A chunk, and the clock group of each of its records in [`Chunk::for_each`] order.
struct Routed {
    chunk: Chunk,
    groups: Vec<u8>,
}

impl Routed {
    fn new(chunk: Chunk) -> Routed {
        let mut groups = Vec::new();
        chunk.for_each(|_, record| groups.push(group_of_record(record)));
        Routed { chunk, groups }
    }
}

struct Shard {
    runner: Runner,
    out: Vec<Output>,
    result: ShardResult,
    me: usize,
    threads: usize,
    /// Per clock group: the newest event time of its records read so far (`i64::MIN`: none)…
    clocks: Vec<i64>,
    /// …and how many of its records were read.
    records: Vec<u64>,
    options: Options,
}

impl Shard {
    fn new(me: usize, threads: usize, options: Options, runner: Runner) -> Shard {
        Shard {
            runner,
            out: Vec::new(),
            result: ShardResult::default(),
            me,
            threads,
            clocks: vec![i64::MIN; CLOCK_GROUPS],
            records: vec![0; CLOCK_GROUPS],
            options,
        }
    }

    /// Processes this shard's records of a chunk (those of its clock groups); false when
    /// `strict` should stop the run.
    fn take(&mut self, routed: &Routed) -> bool {
        let chunk = &routed.chunk;
        let mut keep_going = true;
        let mut index = 0;
        chunk.for_each(|line, record| {
            let group = usize::from(routed.groups[index]);
            index += 1;
            if !keep_going || group % self.threads != self.me {
                return;
            }
            self.result.records += 1;
            self.records[group] += 1;
            // Before the group's first record there is no clock: that record's time stands for it.
            let clock = self.clocks[group];
            let now = if clock == i64::MIN { pitgun_engine::runner::NO_CLOCK_YET } else { clock.max(0) };
            if self.records[group].is_multiple_of(CLOSE_EVERY) {
                let among = |session: &str| group_of(session.as_bytes()) == group;
                self.runner.engine_mut().close_ended_where(clock.max(0), among, &mut self.out);
            }
            if let Err(e) = self.runner.feed(record, origin(chunk.file, line), now, &mut self.out) {
                self.result.bad.push(BadRecord { file: chunk.file as usize, line, reason: e.reason.as_str(), detail: e.detail });
                keep_going = !self.options.strict;
            }
            if let Some(t) = self.runner.record_time() {
                self.clocks[group] = self.clocks[group].max(t);
            }
            self.drain();
        });
        keep_going
    }

    fn drain(&mut self) {
        for o in self.out.drain(..) {
            match o {
                Output::Row(r) if self.options.changelog => self.result.changelog.push(r),
                Output::Row(r) => {
                    self.result.rows.keep(r.row_id.clone(), r);
                }
                Output::Late(n) => self.result.notes_late.push(n),
                Output::Rejected(n) => self.result.notes_rejected.push(n),
            }
        }
    }

    fn finish(mut self) -> ShardResult {
        let now = self.runner.newest_event_time().max(0);
        self.runner.finish(now, &mut self.out);
        self.drain();
        self.result.stats = self.runner.engine().stats().clone();
        self.result
    }
}

/// A record's clock group, by its session id; one without any is in group 0 (it will be
/// refused there).
fn group_of_record(record: Record<'_>) -> u8 {
    session_id(record).map_or(0, |id| group_of(&id) as u8)
}

/// The clock group of a session id.
fn group_of(session_id: &[u8]) -> usize {
    (xxhash_rust::xxh3::xxh3_64(session_id) % CLOCK_GROUPS as u64) as usize
}

fn merge(results: Vec<ShardResult>, changelog: bool) -> Outcome {
    let mut outcome = Outcome::default();
    let mut versions = Vec::new();
    for r in results {
        outcome.stats.merge(&r.stats);
        outcome.records += r.records;
        if changelog {
            outcome.rows.extend(r.changelog);
        } else {
            versions.extend(r.rows.into_values());
        }
        outcome.late.extend(r.notes_late);
        outcome.rejected.extend(r.notes_rejected);
        outcome.bad.extend(r.bad);
    }
    if changelog {
        outcome.rows.sort_by(|a, b| (&a.key[0], a.emission).cmp(&(&b.key[0], b.emission)));
    } else {
        outcome.rows = final_rows(versions);
    }
    let note_order = |a: &EventNote, b: &EventNote| (&a.session_id, a.seq, &a.event_id).cmp(&(&b.session_id, b.seq, &b.event_id));
    outcome.late.sort_by(note_order);
    outcome.rejected.sort_by(note_order);
    outcome.bad.sort_by_key(|b| (b.file, b.line));
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(origin: Origin) -> EventNote {
        EventNote { session_id: "s".into(), event_id: "e".into(), seq: 1, time_us: 0, reason: "too_late", detail: String::new(), origin }
    }

    #[test]
    fn a_place_in_the_inputs_comes_back_from_its_origin() {
        for (file, line) in [(0, 1), (1, 7), (3, (1 << LINE_BITS) - 1), ((1 << 23) - 1, 42)] {
            assert_eq!(location(&note(origin(file, line))), Some((file as usize, line)));
        }
        for (file, line) in [(1 << 23, 1), (0, 1 << LINE_BITS)] {
            assert_eq!(origin(file, line), Origin::UNKNOWN, "beyond the bounds: file {file}, line {line}");
        }
        assert_eq!(location(&note(Origin::UNKNOWN)), None);
    }
}
