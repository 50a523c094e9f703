//! `pitgun-pipeline/v1`: a versioned pipeline manifest — what to compute over which events.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, EventKind};

/// The schema identifier of a v1 pipeline manifest.
pub const PIPELINE_SCHEMA_V1: &str = "pitgun-pipeline/v1";

/// A pipeline manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineManifest {
    /// Always [`PIPELINE_SCHEMA_V1`].
    pub schema: String,
    /// Pipeline name (kebab case); with the version it names groups, topics and tables.
    pub name: String,
    /// Manifest version; an incompatible output change needs a new one.
    pub version: u32,
    /// What the pipeline computes, for reviewers.
    #[serde(default)]
    pub description: String,
    /// The dictionary this manifest was written against, pinned by content hash.
    pub dictionary: DictionaryPin,
    /// Where events come from and which are considered.
    pub input: Input,
    /// Envelope dimensions that join `session_id` in the key.
    #[serde(default)]
    pub key: Vec<String>,
    /// Named values read from each event: canonical metrics (or raw channels).
    #[serde(default)]
    pub inputs: Vec<InputDef>,
    /// Optional Rhai boolean formula; events for which it is false are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Derived values, computed by Rhai formulas in event-time order per key.
    #[serde(default)]
    pub derived: Vec<DerivedDef>,
    /// Event-time policy.
    #[serde(default)]
    pub time: TimePolicy,
    /// How events are grouped into windows.
    pub window: WindowDef,
    /// What each window row reports.
    pub aggregations: Vec<AggregationDef>,
    /// Where rows go.
    pub output: OutputDef,
    /// Test cases run by `pitgun manifest test`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestCase>,
}

/// Pin of the dictionary a manifest was written against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DictionaryPin {
    /// Dictionary name.
    pub name: String,
    /// Dictionary version.
    pub version: String,
    /// `sha256:<hex>` content hash of the dictionary.
    pub sha256: String,
}

/// Input selection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Kafka topics the live processor consumes.
    pub topics: Vec<String>,
    /// Event kinds the pipeline considers; empty means all. `session_end` always closes windows.
    #[serde(default)]
    pub kinds: Vec<EventKind>,
    /// What to do with channels the dictionary does not know for the producer.
    #[serde(default)]
    pub unknown_channels: UnknownChannelPolicy,
}

/// Policy for channels without a dictionary alias.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownChannelPolicy {
    /// Ignore the channel (counted as `unknown_channel`).
    #[default]
    Drop,
    /// Keep it under its raw name so inputs may read it with `channel:`.
    Keep,
    /// Reject the whole event with reason `unknown_channel`.
    Reject,
}

/// A named input: a canonical metric (optionally one dimension slice) or a raw channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputDef {
    /// Name used by formulas and aggregations.
    pub name: String,
    /// Canonical metric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Dimension values selecting one series of the metric, e.g. `wheel: fl`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<String, String>,
    /// Raw producer channel (only with `unknown_channels: keep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// A derived value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedDef {
    /// Name used by later formulas and aggregations.
    pub name: String,
    /// Rhai expression over inputs, earlier derived values, `prev_<name>` and `dt` (seconds).
    pub formula: String,
    /// UCUM unit of the result.
    #[serde(default = "unity")]
    pub unit: String,
    /// What it means.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn unity() -> String {
    "1".to_string()
}

/// Event-time policy, all per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimePolicy {
    /// Bounded out-of-orderness: watermark = highest event time − this.
    #[serde(default = "d_ooo")]
    pub out_of_orderness: Duration,
    /// How long after its end a window still accepts late events (and re-emits).
    #[serde(default = "d_lateness")]
    pub allowed_lateness: Duration,
    /// An event further than this ahead of the watermark is a clock error.
    #[serde(default = "d_jump")]
    pub max_clock_jump: Duration,
    /// A session silent for this long (in the driver's clock) is expired.
    #[serde(default = "d_idle")]
    pub idle_timeout: Duration,
}

fn d_ooo() -> Duration {
    Duration::from_secs(2)
}
fn d_lateness() -> Duration {
    Duration::from_secs(30)
}
fn d_jump() -> Duration {
    Duration::from_secs(600)
}
fn d_idle() -> Duration {
    Duration::from_secs(600)
}

impl Default for TimePolicy {
    fn default() -> Self {
        TimePolicy { out_of_orderness: d_ooo(), allowed_lateness: d_lateness(), max_clock_jump: d_jump(), idle_timeout: d_idle() }
    }
}

/// A duration written like `250ms`, `2s`, `5m`, `1h`, `1.5s`; kept in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    /// Microseconds.
    pub micros: i64,
}

impl Duration {
    /// The longest a manifest may give: event time plus a few of these (a window's end, its
    /// lateness, an idle timeout) stays far from overflowing for any time an envelope holds.
    pub const MAX: Duration = Duration::from_secs(876_000 * 3600);

    /// Whole seconds.
    pub const fn from_secs(s: i64) -> Duration {
        Duration { micros: s * 1_000_000 }
    }

    /// Parses `<number><unit>` with unit `us`, `ms`, `s`, `m` or `h`.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let split =
            text.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(|| format!("duration {text:?} has no unit (us, ms, s, m, h)"))?;
        let (number, unit) = text.split_at(split);
        let value: f64 = number.parse().map_err(|_| format!("duration {text:?} does not start with a number"))?;
        let scale = match unit {
            "us" => 1.0,
            "ms" => 1e3,
            "s" => 1e6,
            "m" => 60e6,
            "h" => 3600e6,
            _ => return Err(format!("duration {text:?} has unknown unit {unit:?} (us, ms, s, m, h)")),
        };
        let micros = (value * scale).round();
        if !micros.is_finite() || micros > Duration::MAX.micros as f64 {
            return Err(format!("duration {text:?} is too large: at most 100 years (876000h)"));
        }
        Ok(Duration { micros: micros as i64 })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.micros;
        if m % 3_600_000_000 == 0 && m != 0 {
            write!(f, "{}h", m / 3_600_000_000)
        } else if m % 60_000_000 == 0 && m != 0 {
            write!(f, "{}m", m / 60_000_000)
        } else if m % 1_000_000 == 0 {
            write!(f, "{}s", m / 1_000_000)
        } else if m % 1000 == 0 {
            write!(f, "{}ms", m / 1000)
        } else {
            write!(f, "{m}us")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How events are grouped into windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowDef {
    /// Fixed, non-overlapping windows aligned to the epoch.
    Tumbling {
        /// Window length.
        size: Duration,
    },
    /// Fixed windows of `size` starting every `hop` (overlapping when hop < size).
    Hopping {
        /// Window length.
        size: Duration,
        /// Distance between window starts; must divide `size`.
        hop: Duration,
    },
    /// Activity windows: a gap longer than `gap` between events ends the window.
    Session {
        /// Inactivity that closes a window.
        gap: Duration,
    },
    /// One window per value of an input (e.g. one per lap), in event-time order.
    Segment {
        /// The input whose value defines the segment.
        field: String,
    },
    /// One window for the whole session, closed by session end.
    Global,
}

impl WindowDef {
    /// The window kind's name as it appears in row ids and contracts.
    pub fn kind_name(&self) -> &'static str {
        match self {
            WindowDef::Tumbling { .. } => "tumbling",
            WindowDef::Hopping { .. } => "hopping",
            WindowDef::Session { .. } => "session",
            WindowDef::Segment { .. } => "segment",
            WindowDef::Global => "global",
        }
    }
}

/// One output column computed per window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationDef {
    /// Column name.
    pub name: String,
    /// Aggregate function.
    #[serde(rename = "fn")]
    pub function: AggregateFn,
    /// Input or derived value aggregated (not for `count`, `duration`, `missing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
    /// Quantile in (0, 1) for `percentile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<f64>,
    /// UCUM unit of the column; converted from the value's unit once at compile time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// What it means.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateFn {
    /// Number of events (or of non-null values when `of` is set).
    Count,
    /// Exact (correctly rounded) sum.
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Exact sum / count.
    Mean,
    /// Value of the earliest event by (event time, sequence).
    First,
    /// Value of the latest event by (event time, sequence).
    Last,
    /// Population standard deviation.
    Stddev,
    /// Quantile `q` from a DDSketch with 1 % relative error.
    Percentile,
    /// Window length in seconds (end − start; for a lap segment, the lap time).
    Duration,
    /// Events missing from the window's sequence-number range.
    Missing,
}

/// Where rows go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputDef {
    /// Kafka topic of the rows, `pitgun.aggregates.<name>.v<version>`.
    pub topic: String,
    /// Storage targets.
    #[serde(default)]
    pub sinks: Vec<SinkDef>,
}

/// A storage target for rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkDef {
    /// Target kind.
    pub kind: SinkKind,
    /// Table name.
    pub table: String,
}

/// Storage target kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// QuestDB over ILP/HTTP (telemetry time series).
    Questdb,
    /// PostgreSQL (runs and summaries).
    Postgres,
}

impl SinkKind {
    /// Every kind, in the order they are documented.
    pub const ALL: [SinkKind; 2] = [SinkKind::Postgres, SinkKind::Questdb];

    /// The kind's name in a manifest (`output.sinks[].kind`) and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Questdb => "questdb",
            SinkKind::Postgres => "postgres",
        }
    }
}

/// A test case: input envelopes and the rows they must produce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the case shows.
    pub name: String,
    /// Envelopes, in arrival order.
    pub input: Vec<Envelope>,
    /// What must come out.
    pub expect: Expectation,
}

/// Expected outcome of a test case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Final rows in canonical order; only the listed columns are compared, row count must match.
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Number of events sent to the late output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late: Option<u64>,
    /// Rejected events by reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected: BTreeMap<String, u64>,
    /// Duplicates dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::Duration;

    /// A manifest's durations are added to event times (a window's end, its lateness, a
    /// session's idle time): at most 100 years each, so no sum can overflow for any event
    /// time the envelope takes.
    #[test]
    fn durations_are_bounded_so_event_time_arithmetic_cannot_overflow() {
        assert_eq!(Duration::parse("876000h").unwrap().micros, 876_000 * 3_600_000_000);
        for text in ["876001h", "1280000000h", "99999999999999999999999999h"] {
            let e = Duration::parse(text).unwrap_err();
            assert!(e.contains("at most 100 years"), "{text}: {e}");
        }
    }
}
