//! `pitgun-envelope/v1`: one telemetry event as it crosses the boundary into Pitgun.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The schema identifier every v1 envelope carries in its `schema` field.
pub const ENVELOPE_SCHEMA_V1: &str = "pitgun-envelope/v1";

/// One event: who sent it, which session it belongs to, when it happened and what it measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Always [`ENVELOPE_SCHEMA_V1`].
    pub schema: String,
    /// Idempotency key: a resent event keeps its id, and the engine drops the copy.
    pub event_id: String,
    /// The producer.
    pub source: Source,
    /// The session (a run of one player on one track); part of every manifest key.
    pub session_id: String,
    /// Per-session sequence number, starting at 0 or 1 and increasing by one per event.
    pub seq: u64,
    /// Event time: microseconds since the Unix epoch (UTC).
    pub time_us: i64,
    /// What kind of event this is.
    pub kind: EventKind,
    /// Measured values keyed by the producer's own channel names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, ChannelValue>,
    /// Context of the session: track, car, player, …
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dims: BTreeMap<String, String>,
}

/// The producer of an envelope; aliases in the dictionary are keyed by `id` and `version`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// What sort of producer.
    pub kind: SourceKind,
    /// Producer name, e.g. `pitgun-web`.
    pub id: String,
    /// Producer version (semantic version).
    pub version: String,
}

/// What sort of producer sent an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A game client.
    Game,
    /// A racing simulator.
    Simulator,
    /// A hardware device.
    Device,
    /// A replay tool re-sending recorded data.
    Replay,
}

/// What an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A periodic sample of the physics and input channels.
    Sample,
    /// A lap was completed (sent at the line crossing).
    Lap,
    /// A sector boundary was crossed.
    Sector,
    /// The car entered the pit lane.
    PitIn,
    /// The car left the pit lane.
    PitOut,
    /// The session started.
    SessionStart,
    /// The session ended; closes the session's windows.
    SessionEnd,
    /// A client-health sample (fps, frame time, network).
    Health,
    /// A free-form marker.
    Marker,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 9] = [
        EventKind::Sample,
        EventKind::Lap,
        EventKind::Sector,
        EventKind::PitIn,
        EventKind::PitOut,
        EventKind::SessionStart,
        EventKind::SessionEnd,
        EventKind::Health,
        EventKind::Marker,
    ];

    /// The kind's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Sample => "sample",
            EventKind::Lap => "lap",
            EventKind::Sector => "sector",
            EventKind::PitIn => "pit_in",
            EventKind::PitOut => "pit_out",
            EventKind::SessionStart => "session_start",
            EventKind::SessionEnd => "session_end",
            EventKind::Health => "health",
            EventKind::Marker => "marker",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// A channel value: a number or a boolean (booleans read as 1 and 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChannelValue {
    /// A boolean flag.
    Bool(bool),
    /// A number.
    Number(f64),
}

impl ChannelValue {
    /// The numeric reading of the value.
    pub fn as_f64(self) -> f64 {
        match self {
            ChannelValue::Bool(b) => f64::from(u8::from(b)),
            ChannelValue::Number(n) => n,
        }
    }
}
