//! Fault injection: which events get which faults, decided per session from its own random stream.
//!
//! | fault | effect |
//! |---|---|
//! | `reorder_within` | output delayed by 1 ms – [`REORDER_MAX_US`] of event time: out of order, but inside the [`OUT_OF_ORDERNESS_BOUND_US`] bound |
//! | `late_within_lateness` | delayed by [`LATE_MIN_US`] – [`LATE_MAX_US`]: beyond the bound, within [`ALLOWED_LATENESS_US`] |
//! | `very_late` | delayed by [`VERY_LATE_MIN_US`] – [`VERY_LATE_MAX_US`]: beyond any allowed lateness |
//! | `duplicates` | the identical envelope is sent again, up to [`DUPLICATE_MAX_US`] later |
//! | `gaps` | the event is not sent: its sequence number is missing |
//! | `clock_jumps` | `time_us` + [`CLOCK_JUMP_US`] on that one event |
//! | `malformed` | a [`crate::Record::Malformed`] line instead of the event |
//! | `unknown_channels` | an extra `debug_*` channel no alias knows |
//! | `out_of_range` | one value far outside its metric's range (speed 9999 km/h, fps 100000, …) |
//!
//! Each fault is drawn independently with its probability, except the three delays, which are
//! exclusive (the first that hits wins), so the observed rate of each is close to its setting.
//! `session_start`, `session_end` and `lap` events are never faulted: the ground truth (lap times,
//! session bounds) must stay observable in the stream. Reorders and duplicates that would arrive
//! after their session's `session_end` are not injected, so that within-bound faults never turn
//! into late events; late and very late events may arrive after it, as they would in reality.

use pitgun_contracts::envelope::{ChannelValue, Envelope, EventKind};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::config::Faults;
use crate::metric::{Metric, Value};

/// The out-of-orderness bound the faults are designed around, µs.
pub const OUT_OF_ORDERNESS_BOUND_US: i64 = 2_000_000;
/// The allowed lateness the faults are designed around, µs.
pub const ALLOWED_LATENESS_US: i64 = 30_000_000;
/// Longest reorder delay (exclusive), µs.
pub const REORDER_MAX_US: i64 = 1_000_000;
/// Shortest late delay, µs.
pub const LATE_MIN_US: i64 = 3_000_000;
/// Longest late delay, µs.
pub const LATE_MAX_US: i64 = 20_000_000;
/// Shortest very-late delay, µs.
pub const VERY_LATE_MIN_US: i64 = 65_000_000;
/// Longest very-late delay, µs.
pub const VERY_LATE_MAX_US: i64 = 120_000_000;
/// Longest delay of a duplicate after its original, µs.
pub const DUPLICATE_MAX_US: i64 = 1_000_000;
/// How far a clock jump moves an event's time, µs.
pub const CLOCK_JUMP_US: i64 = 3_600_000_000;

/// How many of each fault were injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    /// Events delayed within the out-of-orderness bound.
    pub reorder_within: u64,
    /// Events delayed beyond the bound, within allowed lateness.
    pub late_within_lateness: u64,
    /// Events delayed beyond allowed lateness.
    pub very_late: u64,
    /// Extra copies sent.
    pub duplicates: u64,
    /// Events not sent.
    pub gaps: u64,
    /// Events stamped an hour ahead.
    pub clock_jumps: u64,
    /// Malformed lines sent instead of events.
    pub malformed: u64,
    /// Events with an unknown channel added.
    pub unknown_channels: u64,
    /// Events with a value out of range.
    pub out_of_range: u64,
}

impl FaultCounts {
    /// `(name, count)` for every fault, in [`Faults::NAMES`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        let counts = [
            self.reorder_within,
            self.late_within_lateness,
            self.very_late,
            self.duplicates,
            self.gaps,
            self.clock_jumps,
            self.malformed,
            self.unknown_channels,
            self.out_of_range,
        ];
        Faults::NAMES.into_iter().zip(counts)
    }
}

/// Why an event's output is held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delay {
    Reorder,
    Late,
    VeryLate,
}

/// What happens to one event.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Plan {
    pub gap: bool,
    /// Which malformation (see [`malform`]).
    pub malformed: Option<u8>,
    pub clock_jump: bool,
    pub unknown_channel: Option<(&'static str, f64)>,
    pub out_of_range: bool,
    pub delay: Option<(Delay, i64)>,
    pub duplicate_after: Option<i64>,
}

const DEBUG_CHANNELS: [&str; 5] = ["debug_physics_substeps", "debug_cpu_ms", "debug_net_jitter_ms", "debug_ghost_delta", "debug_build"];

/// A session's fault decisions.
pub(crate) struct Injector {
    faults: Faults,
    rng: ChaCha8Rng,
}

impl Injector {
    pub(crate) fn new(faults: Faults, rng: ChaCha8Rng) -> Injector {
        Injector { faults, rng }
    }

    /// The injector's generator, for choices made after the plan (e.g. where to truncate).
    pub(crate) fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    fn hit(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p)
    }

    pub(crate) fn plan(&mut self, kind: EventKind) -> Plan {
        let mut plan = Plan::default();
        if !eligible(kind) {
            return plan;
        }
        let f = self.faults;
        if self.hit(f.gaps) {
            plan.gap = true;
            return plan;
        }
        if self.hit(f.malformed) {
            plan.malformed = Some(self.rng.random_range(0..3));
            return plan;
        }
        plan.clock_jump = self.hit(f.clock_jumps);
        if self.hit(f.unknown_channels) {
            let name = DEBUG_CHANNELS[self.rng.random_range(0..DEBUG_CHANNELS.len())];
            plan.unknown_channel = Some((name, (self.rng.random::<f64>() * 1000.0).round() / 10.0));
        }
        plan.out_of_range = self.hit(f.out_of_range);
        plan.delay = if self.hit(f.reorder_within) {
            Some((Delay::Reorder, self.rng.random_range(1_000..REORDER_MAX_US)))
        } else if self.hit(f.late_within_lateness) {
            Some((Delay::Late, self.rng.random_range(LATE_MIN_US..=LATE_MAX_US)))
        } else if self.hit(f.very_late) {
            Some((Delay::VeryLate, self.rng.random_range(VERY_LATE_MIN_US..=VERY_LATE_MAX_US)))
        } else {
            None
        };
        if self.hit(f.duplicates) {
            plan.duplicate_after = Some(self.rng.random_range(0..=DUPLICATE_MAX_US));
        }
        plan
    }
}

/// Events that may carry faults: everything but the ground-truth markers.
pub(crate) fn eligible(kind: EventKind) -> bool {
    !matches!(kind, EventKind::SessionStart | EventKind::SessionEnd | EventKind::Lap)
}

/// Puts the first of a few well-known values far outside its range; false if the event has none.
pub(crate) fn push_out_of_range(values: &mut [Value]) -> bool {
    const WILD: [(Metric, f64); 4] =
        [(Metric::VehicleSpeed, 9999.0 / 3.6), (Metric::Fps, 100_000.0), (Metric::SectorTime, -999.0), (Metric::LapDistance, -99_999.0)];
    for (metric, wild) in WILD {
        if let Some(v) = values.iter_mut().find(|v| v.metric == metric) {
            v.value = wild;
            return true;
        }
    }
    false
}

/// Adds an unknown channel to an encoded envelope.
pub(crate) fn add_unknown_channel(envelope: &mut Envelope, (name, value): (&'static str, f64)) {
    envelope.channels.insert(name.to_string(), ChannelValue::Number(value));
}

/// An undecodable rendering of an envelope: 0 truncates the JSON, 1 sends `seq` as a string,
/// 2 sends `time_us` as a string.
pub(crate) fn malform(envelope: &Envelope, variant: u8, rng: &mut impl Rng) -> String {
    let json = serde_json::to_string(envelope).expect("envelopes serialise");
    match variant {
        0 => {
            // Any proper prefix of a JSON object is invalid; the text is ASCII, so any cut is a
            // character boundary.
            let cut = rng.random_range(json.len() / 4..json.len() - 1);
            json[..cut].to_string()
        }
        1 => json.replacen(&format!("\"seq\":{}", envelope.seq), &format!("\"seq\":\"{}\"", envelope.seq), 1),
        _ => json.replacen(&format!("\"time_us\":{}", envelope.time_us), &format!("\"time_us\":\"{}\"", envelope.time_us), 1),
    }
}
