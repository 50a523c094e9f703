//! `pitgun-dictionary/v1`: the canonical metric dictionary — every metric defined once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The schema identifier of a v1 dictionary.
pub const DICTIONARY_SCHEMA_V1: &str = "pitgun-dictionary/v1";

/// A versioned set of canonical metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dictionary {
    /// Always [`DICTIONARY_SCHEMA_V1`].
    pub schema: String,
    /// Dictionary name, e.g. `racing`.
    pub name: String,
    /// Semantic version of the dictionary.
    pub version: String,
    /// What the dictionary covers.
    #[serde(default)]
    pub description: String,
    /// The metrics.
    pub metrics: Vec<MetricDef>,
}

/// One canonical metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    /// Stable dotted name, e.g. `vehicle.speed`.
    pub id: String,
    /// How values behave over time.
    pub kind: MetricKind,
    /// Value type.
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Physical quantity, e.g. `velocity`.
    pub quantity: String,
    /// Canonical UCUM unit every value is converted to.
    pub unit: String,
    /// UCUM unit people prefer to read.
    pub display_unit: String,
    /// Plausible range in the canonical unit; values outside are rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<ValueRange>,
    /// Smallest meaningful step in the canonical unit; converted values are snapped to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<f64>,
    /// Nominal sampling rate in Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nominal_rate_hz: Option<f64>,
    /// Dimensions of the metric (e.g. `wheel`): one metric, many series.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<DimensionDef>,
    /// Stability promise.
    pub stability: Stability,
    /// Dictionary version that introduced the metric.
    pub since: String,
    /// One-line meaning.
    pub brief: String,
    /// Set when the metric is deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation: Option<Deprecation>,
    /// Producer channel names that carry this metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<Alias>,
}

/// How a metric's values behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// An instantaneous reading.
    Gauge,
    /// A monotonically increasing count.
    Counter,
    /// A discrete state (gear, lap number, pit status).
    State,
    /// A value attached to a discrete event (a lap time).
    Event,
}

/// Value type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// Floating point.
    Float,
    /// Integer.
    Int,
    /// Boolean (read as 1 or 0).
    Bool,
}

/// Inclusive range in the canonical unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueRange {
    /// Lowest plausible value.
    pub min: f64,
    /// Highest plausible value.
    pub max: f64,
}

/// A dimension of a metric and its allowed values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimensionDef {
    /// Dimension name, e.g. `wheel`.
    pub name: String,
    /// Allowed values, e.g. `[fl, fr, rl, rr]`.
    pub values: Vec<String>,
}

/// Stability promise of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stability {
    /// May change without a major version.
    Experimental,
    /// Will not change incompatibly.
    Stable,
    /// Kept for compatibility; see `deprecation`.
    Deprecated,
}

/// Deprecation notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deprecation {
    /// Dictionary version that deprecated the metric.
    pub since: String,
    /// The metric that replaces it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_to: Option<String>,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A producer's name for a metric, for a range of producer versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    /// Producer id as sent in `source.id`.
    pub producer: String,
    /// Semantic-version requirement on `source.version`, e.g. `>=1.0, <2`.
    pub versions: String,
    /// The producer's channel name.
    pub channel: String,
    /// UCUM unit the producer sends the channel in.
    pub unit: String,
    /// Dimension values the channel carries (`wheel: fl` for `tyre_fl_temp`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<String, String>,
}
