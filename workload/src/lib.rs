//! The Pitgun reference workload: a deterministic simulator of racing sessions that streams
//! `pitgun-envelope/v1` events the way the game's clients send them, together with the ground
//! truth a correct pipeline must recover.
//!
//! # Design
//!
//! - **Streaming.** [`simulate`] hands every record to a callback as soon as it is due and keeps
//!   only per-session state (a car, a few pending events), a heap with one entry per session that
//!   merges the sessions in event-time order, and a capped buffer of delayed records
//!   ([`MAX_HELD`]). Memory does not grow with duration; only the ground truth grows, by one
//!   entry per lap.
//! - **Deterministic.** Every random choice comes from ChaCha8 generators keyed by the seed, with
//!   the session index and a purpose (physics, faults) as the stream: no `thread_rng`, no hash-map
//!   iteration, no clock. The same [`SimConfig`] gives the same records in the same order, and a
//!   session's physics does not change when faults are switched on.
//! - **Physics first, units last.** A session simulates in canonical dictionary units (m/s, Cel,
//!   kPa, ratio 1, …): a point-mass car follows a speed profile built from the track's corners and
//!   the car's grip and brakes; inputs, g-forces, gear and rpm follow from its speed changes; tyre
//!   temperatures rise with load, pressures follow carcass temperature, wear accrues with work,
//!   fuel burns with throttle. Only when an event is encoded are the values converted to the
//!   producer's units (km/h, [degF], %, [psi], …) and rounded to a sensible number of decimals.
//! - **Producers.** Sessions alternate between `pitgun-web` 1.4.2 (browser game) and
//!   `pitgun-sim` 2.1.0 (simulator); every eighth session is the old `pitgun-web` 0.9.5, whose
//!   channel names differ for some metrics. The channel tables are held against
//!   `manifests/dictionary/racing.yaml` by tests, unit conversions included.
//! - **Exact lap times.** The line crossing is found inside a physics step by interpolation and
//!   rounded to an integer microsecond once; the lap event's `time_us`, its `lap.last_time` and the
//!   ground truth's [`LapTruth`] all come from those integers.
//! - **Faults** (see [`faults`]) are drawn per event from the session's own stream and never touch
//!   `session_start`, `session_end` or `lap` events, so the ground truth stays observable.
//!
//! # Events of a session
//!
//! `session_start` (lap 1, distance 0) → `sample` at `rate_hz` (12 fast channels on every sample:
//! speed, g-forces, yaw rate, throttle, brake, steer, gear, rpm, lap number, lap distance, current
//! lap time; every fourth sample adds one of eight rotating groups of slow channels: tyre
//! surface and inner temperatures, pressures, wear, brake temperatures, engine/fuel/clutch,
//! sector/position/pit/ERS, weather/damage) → `sector` at each sector end
//! (lap number and the sector's time) → `lap` at the line (new lap number, last lap time) →
//! `pit_in`/`pit_out` around an occasional pit stop → `health` at `health_rate_hz` (fps, frame
//! time, rtt, dropped frames, packet loss) → `session_end`.
//!
//! # Dependencies
//!
//! Only the workspace's `serde`, `serde_json`, `rand` and `rand_chacha` besides the contracts
//! crate; tests add `ucum-units`, `serde_yaml_ng` and `semver` to check the dictionary.
#![deny(missing_docs)]

mod car;
mod config;
mod delivery;
pub mod faults;
mod metric;
mod producer;
mod session;
mod stream;
mod track;
mod truth;

pub use config::{check_health_rate, check_sample_rate, ConfigError, FaultParseError, Faults, SimConfig, DEFAULT_START_TIME_US};
pub use delivery::MAX_HELD;
pub use faults::FaultCounts;
pub use producer::{channels, source_ids, ChannelInfo};
pub use stream::{simulate, simulate_while};
pub use truth::{GroundTruth, LapTruth, SessionTruth, StreamStats};

use pitgun_contracts::envelope::Envelope;

/// One line of the simulated stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A well-formed envelope.
    Envelope(Envelope),
    /// An undecodable line (an injected `malformed` fault), exactly as it would arrive.
    Malformed(String),
}

impl Record {
    /// The record as one line of NDJSON (compact JSON, no trailing newline).
    pub fn to_json_line(&self) -> String {
        match self {
            Record::Envelope(envelope) => serde_json::to_string(envelope).expect("envelopes serialise"),
            Record::Malformed(line) => line.clone(),
        }
    }
}
