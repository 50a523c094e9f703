//! The Pitgun manifest engine — pure: no Kafka, no RocksDB, no clock, no threads of its own.
//!
//! A manifest is compiled once against its dictionary into a [`plan::Plan`]: inputs become slot
//! indices, unit conversions become a factor and an offset (from UCUM), formulas become Rhai
//! ASTs, aggregations become accumulator constructors, and the analysis contract is derived.
//! Per event the hot path is: decode (`pitgun_codec`, borrowed, no allocation) → resolve channels
//! through a per-producer table ([`resolve`]) → [`session_engine::Engine::process`]. Drivers — `pitgun
//! replay` over files, the Kafka processor over partitions — feed events and collect
//! [`session_engine::Output`]s; [`runner::Runner`] bundles the three steps for one thread.
//!
//! Semantics (see [`session_engine`] for the details): the watermark is kept per session; events are
//! released to windows in (event time, sequence) order once the watermark passes them; sums are
//! exact, so results are bit-identical whatever the arrival order within the bound; late events
//! within the allowed lateness update and re-emit their window; later ones go to the late output.
#![deny(missing_docs)]

pub mod accumulate;
mod decode_avro;
pub mod dedup;
pub mod formula;
pub mod manifest_test;
mod native;
pub mod plan;
pub mod resolve;
pub mod row;
pub mod runner;
pub mod session_engine;
pub mod store;
pub mod units;

pub use dedup::RingChanges;
pub use plan::Plan;
pub use row::Row;
pub use runner::Runner;
pub use session_engine::{Engine, EventNote, EventRef, Origin, Output, SessionState, MAX_BUFFERED_EVENTS, MAX_KEYS_PER_SESSION};
pub use store::{MemoryStore, OpenSessions, SessionStore};

/// Why a session closed; each cause has its own counter ([`Stats::closed_by`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// Its `session_end`, once everything before it was released (or the driver's clock said
    /// nothing more would move the watermark past it).
    End,
    /// No event for `idle_timeout` of the driver's clock (the processor's wall clock).
    Idle,
    /// A silence longer than `idle_timeout` in its own event time, seen when the next event came.
    Gap,
    /// The end of the input (`replay`, `process --until-end`).
    InputEnd,
}

impl CloseCause {
    /// Every cause, in [`Stats::closed_by`] order.
    pub const ALL: [CloseCause; 4] = [CloseCause::End, CloseCause::Idle, CloseCause::Gap, CloseCause::InputEnd];

    /// The label metrics give it.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCause::End => "end",
            CloseCause::Idle => "idle",
            CloseCause::Gap => "gap",
            CloseCause::InputEnd => "input_end",
        }
    }
}

/// Why an event was refused; each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not a valid `pitgun-envelope/v1` record.
    InvalidEnvelope,
    /// A key dimension is missing.
    MissingKey,
    /// A channel the dictionary does not know (policy `reject`).
    UnknownChannel,
    /// A value outside its metric's range.
    OutOfRange,
    /// A value of the wrong type (fraction for an int metric…).
    TypeMismatch,
    /// Event time too far ahead of the session's watermark.
    ClockJump,
    /// A formula hit its operation, depth or size limit.
    FormulaLimit,
    /// A formula failed at run time.
    FormulaError,
    /// A segment value lower than one already seen.
    SegmentRegressed,
    /// A new session past the engine's bound on open sessions.
    TooManySessions,
    /// An event of a new key past the session's bound ([`MAX_KEYS_PER_SESSION`]).
    TooManyKeys,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 11] = [
        Reason::InvalidEnvelope,
        Reason::MissingKey,
        Reason::UnknownChannel,
        Reason::OutOfRange,
        Reason::TypeMismatch,
        Reason::ClockJump,
        Reason::FormulaLimit,
        Reason::FormulaError,
        Reason::SegmentRegressed,
        Reason::TooManySessions,
        Reason::TooManyKeys,
    ];

    /// The reason code used in outputs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidEnvelope => "invalid_envelope",
            Reason::MissingKey => "missing_key",
            Reason::UnknownChannel => "unknown_channel",
            Reason::OutOfRange => "out_of_range",
            Reason::TypeMismatch => "type_mismatch",
            Reason::ClockJump => "clock_jump",
            Reason::FormulaLimit => "formula_limit",
            Reason::FormulaError => "formula_error",
            Reason::SegmentRegressed => "segment_regressed",
            Reason::TooManySessions => "too_many_sessions",
            Reason::TooManyKeys => "too_many_keys",
        }
    }
}

/// What replay and the processor say of events from a producer version the dictionary has no
/// aliases for ([`Stats::uncovered_sources`]), after their count.
pub const UNCOVERED_SOURCES: &str = "events from a producer version the dictionary has no aliases for: none of their channels can be a dictionary metric (the gateway refuses such events as unknown_source; add the version to the dictionary's aliases)";

/// Counters of one engine (sum them across threads with [`Stats::merge`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events offered, including refused ones.
    pub events_in: u64,
    /// Events that entered windows.
    pub accepted: u64,
    /// Of those, events that arrived behind the release frontier and updated a window.
    pub late_updates: u64,
    /// Duplicates dropped (same event id in a session).
    pub duplicates: u64,
    /// Events skipped by the manifest's kinds or filter.
    pub filtered: u64,
    /// Events sent to the late output.
    pub late: u64,
    /// Refused events by [`Reason`].
    pub rejected: [u64; Reason::ALL.len()],
    /// Unknown channels dropped.
    pub unknown_channels: u64,
    /// Events from a producer, or a version of it, the dictionary has no aliases for: none of
    /// their channels resolves to a metric (the gateway refuses them as `unknown_source`).
    pub uncovered_sources: u64,
    /// Events without a segment value before the first segment.
    pub no_segment: u64,
    /// Distinct windows emitted.
    pub windows_emitted: u64,
    /// Row emissions, re-emissions included.
    pub rows_emitted: u64,
    /// Sessions seen.
    pub sessions_opened: u64,
    /// Sessions closed (ended, expired or at end of input).
    pub sessions_closed: u64,
    /// Sessions closed without their end: idle in the driver's clock or after a gap in their
    /// own event time.
    pub sessions_expired: u64,
    /// Sessions closed, by [`CloseCause`] (in [`CloseCause::ALL`] order).
    pub closed_by: [u64; CloseCause::ALL.len()],
    /// Sequence numbers missing in closed sessions.
    pub missing_events: u64,
    /// Event ids forgotten before their time because a session's dedup memory was full (a
    /// resend of one of them would be counted again); see `dedup`.
    pub dedup_evicted: u64,
    /// Events released from a session's full reorder buffer before the watermark passed them
    /// ([`MAX_BUFFERED_EVENTS`]): arrival order can change rows from then on.
    pub released_early: u64,
}

impl Stats {
    /// Adds another engine's counters.
    pub fn merge(&mut self, o: &Stats) {
        self.events_in += o.events_in;
        self.accepted += o.accepted;
        self.late_updates += o.late_updates;
        self.duplicates += o.duplicates;
        self.filtered += o.filtered;
        self.late += o.late;
        for (a, b) in self.rejected.iter_mut().zip(o.rejected) {
            *a += b;
        }
        self.unknown_channels += o.unknown_channels;
        self.uncovered_sources += o.uncovered_sources;
        self.no_segment += o.no_segment;
        self.windows_emitted += o.windows_emitted;
        self.rows_emitted += o.rows_emitted;
        self.sessions_opened += o.sessions_opened;
        self.sessions_closed += o.sessions_closed;
        self.sessions_expired += o.sessions_expired;
        for (mine, theirs) in self.closed_by.iter_mut().zip(o.closed_by) {
            *mine += theirs;
        }
        self.missing_events += o.missing_events;
        self.dedup_evicted += o.dedup_evicted;
        self.released_early += o.released_early;
    }

    /// Refused events by reason code, non-zero only.
    pub fn rejected_by_reason(&self) -> Vec<(&'static str, u64)> {
        Reason::ALL.iter().map(|r| (r.as_str(), self.rejected[*r as usize])).filter(|(_, n)| *n > 0).collect()
    }

    /// Total refused events.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}
