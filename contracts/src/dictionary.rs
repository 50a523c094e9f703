//! `pitgun-dictionary/v1`: the canonical metric dictionary — every metric defined once.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::Issue;
use crate::load::Loaded;

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

/// How values are snapped to a metric's resolution: to a power of ten 10ᵉ exactly, or in whole
/// steps of 10⁻ᵈ, d the decimals of the resolution's shortest text (3 × 0.2 is then 0.6, not
/// 0.6000000000000001).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolutionSteps {
    /// `10^exponent`.
    PowerOfTen(i32),
    /// Counted in `10^-decimals`.
    Decimals(i32),
}

/// The finest step of a resolution other than a power of ten: 10⁻¹⁵, below which an `f64` no
/// longer holds the step's decimals.
pub const MAX_RESOLUTION_DECIMALS: usize = 15;

/// How `resolution` is snapped, or why it cannot be (not positive and finite; a step with more
/// decimals than [`MAX_RESOLUTION_DECIMALS`]).
pub fn resolution_steps(resolution: f64) -> Result<ResolutionSteps, String> {
    if !(resolution.is_finite() && resolution > 0.0) {
        return Err(format!("{resolution} is not a positive number"));
    }
    let digits = -resolution.log10();
    let rounded = digits.round();
    if (digits - rounded).abs() < 1e-9 {
        return Ok(ResolutionSteps::PowerOfTen(-(rounded as i32)));
    }
    // `Display` writes the shortest text that reads back as the same f64, without an exponent.
    let decimals = resolution.to_string().split_once('.').map_or(0, |(_, fraction)| fraction.len());
    if decimals > MAX_RESOLUTION_DECIMALS {
        return Err(format!(
            "{resolution:e} has more than {MAX_RESOLUTION_DECIMALS} decimals: a resolution other than a power of ten is snapped in whole steps of 10^-{MAX_RESOLUTION_DECIMALS} at the finest"
        ));
    }
    Ok(ResolutionSteps::Decimals(decimals as i32))
}

/// What a dictionary must hold beyond its schema, the rules the engine and the gateway rely on:
/// each metric id and dimension name once; units that are UCUM, a display unit and every
/// alias's unit of the canonical unit's kind; a resolution values can be snapped to; a range that
/// admits something; a deprecation
/// naming another metric of the dictionary; aliases whose version ranges parse and whose
/// dimensions are the metric's, each with one of its values (an alias without them matches no
/// input). Every broken rule is one issue with its pointer and line.
pub fn issues(loaded: &Loaded<Dictionary>) -> Vec<Issue> {
    let dict = &loaded.doc;
    let mut issues = Vec::new();
    let mut issue = |pointer: String, message: String| issues.push(loaded.source.issue(&pointer, message));
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, metric) in dict.metrics.iter().enumerate() {
        match first.entry(&metric.id) {
            Entry::Occupied(j) => issue(format!("/metrics/{i}/id"), format!("metric {} is already defined at /metrics/{}", metric.id, j.get())),
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
        }
    }
    for (i, metric) in dict.metrics.iter().enumerate() {
        let at = format!("/metrics/{i}");
        let unit_ok = match ucum_unit(&metric.unit) {
            Ok(()) => true,
            Err(e) => {
                issue(format!("{at}/unit"), e);
                false
            }
        };
        if unit_ok {
            if let Err(e) = same_kind(&metric.display_unit, &metric.unit) {
                issue(format!("{at}/display_unit"), e);
            }
        }
        if let Some(Err(e)) = metric.resolution.map(resolution_steps) {
            issue(format!("{at}/resolution"), e);
        }
        if let Some(range) = metric.range {
            if range.min > range.max {
                issue(format!("{at}/range"), format!("min {} is above max {}: every value would be refused", range.min, range.max));
            }
        }
        if let Some(to) = metric.deprecation.as_ref().and_then(|d| d.renamed_to.as_ref()) {
            if to == &metric.id {
                issue(format!("{at}/deprecation/renamed_to"), format!("metric {to} cannot be renamed to itself"));
            } else if !first.contains_key(to.as_str()) {
                issue(format!("{at}/deprecation/renamed_to"), format!("no metric {to} in dictionary {}", dict.name));
            }
        }
        for (k, dimension) in metric.dimensions.iter().enumerate() {
            if let Some(j) = metric.dimensions[..k].iter().position(|d| d.name == dimension.name) {
                issue(format!("{at}/dimensions/{k}/name"), format!("dimension {} is already defined at {at}/dimensions/{j}", dimension.name));
            }
        }
        for (a, alias) in metric.aliases.iter().enumerate() {
            let at = format!("{at}/aliases/{a}");
            if let Err(e) = semver::VersionReq::parse(&alias.versions) {
                issue(format!("{at}/versions"), format!("{:?} does not parse as a version range: {e}", alias.versions));
            }
            if unit_ok {
                if let Err(e) = same_kind(&alias.unit, &metric.unit) {
                    issue(format!("{at}/unit"), e);
                }
            }
            for (name, value) in &alias.dimensions {
                match metric.dimensions.iter().find(|d| &d.name == name) {
                    None => issue(format!("{at}/dimensions/{name}"), format!("metric {} has no dimension {name:?}", metric.id)),
                    Some(d) if !d.values.contains(value) => {
                        issue(format!("{at}/dimensions/{name}"), format!("{value:?} is not a value of {name}; expected one of {:?}", d.values))
                    }
                    Some(_) => {}
                }
            }
            for d in &metric.dimensions {
                if !alias.dimensions.contains_key(&d.name) {
                    issue(
                        at.clone(),
                        format!("alias {} gives no value of dimension {}, so no input of {} can select it", alias.channel, d.name, metric.id),
                    );
                }
            }
        }
    }
    issues
}

/// What a dictionary may hold but likely does not mean: an alias no producer version reaches,
/// its versions all taken first by earlier aliases for the same channel (the first in
/// dictionary order wins). A dictionary whose ranges do not parse has [`issues`] instead.
pub fn warnings(loaded: &Loaded<Dictionary>) -> Vec<Issue> {
    let Ok(index) = crate::aliases::AliasIndex::new(&loaded.doc) else { return Vec::new() };
    let metrics = &loaded.doc.metrics;
    index
        .never_used()
        .into_iter()
        .map(|u| {
            let alias = &metrics[u.metric].aliases[u.alias];
            let by: Vec<String> = u.covered_by.iter().map(|(m, a)| format!("/metrics/{m}/aliases/{a}")).collect();
            loaded.source.issue(
                &format!("/metrics/{}/aliases/{}/versions", u.metric, u.alias),
                format!(
                    "warning: alias {} of {} is never used: every version it covers ({}) is taken first by {} (the first alias in dictionary order wins)",
                    alias.channel,
                    alias.producer,
                    alias.versions,
                    by.join(" and ")
                ),
            )
        })
        .collect()
}

/// Whether `unit` is a UCUM unit.
fn ucum_unit(unit: &str) -> Result<(), String> {
    ucum::validate(unit).map(|_| ()).map_err(|e| format!("{unit:?} is not valid UCUM: {e}"))
}

/// Whether `unit` is a UCUM unit that converts to `canonical` (a UCUM unit).
fn same_kind(unit: &str, canonical: &str) -> Result<(), String> {
    ucum_unit(unit)?;
    match ucum::is_comparable(unit, canonical) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("{unit:?} cannot be converted to the metric's unit {canonical:?} (different dimensions)")),
        Err(e) => Err(format!("cannot compare {unit:?} with {canonical:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{load_text, SourceText};
    use crate::schema::ContractKind;

    /// The shipped dictionary with `from` replaced by `to` once: the issues it gets.
    fn issues_after(from: &str, to: &str) -> Vec<String> {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/dictionary/racing.yaml")).unwrap();
        assert!(text.contains(from), "{from}");
        let source = SourceText { file: "racing.yaml".into(), text: text.replacen(from, to, 1) };
        let loaded = load_text::<Dictionary>(ContractKind::Dictionary, source).expect("the schema allows it");
        issues(&loaded).iter().map(|i| format!("{}: {}", i.pointer, i.message)).collect()
    }

    #[test]
    fn the_shipped_dictionary_keeps_every_rule() {
        assert_eq!(issues_after("schema:", "schema:"), Vec::<String>::new());
    }

    #[test]
    fn each_rule_names_what_breaks_it() {
        let cases = [
            ("unit: \"m/s\"", "unit: \"m/z\"", "/metrics/0/unit: \"m/z\" is not valid UCUM"),
            ("display_unit: \"km/h\"", "display_unit: \"s\"", "/metrics/0/display_unit: \"s\" cannot be converted to the metric's unit \"m/s\""),
            (
                "renamed_to: engine.water_temperature",
                "renamed_to: engine.temperature",
                "/metrics/13/deprecation/renamed_to: metric engine.temperature cannot be renamed to itself",
            ),
            (
                "{name: wheel, values: [fl, fr, rl, rr]}",
                "{name: wheel, values: [fl, fr, rl, rr]}\n      - {name: wheel, values: [x]}",
                "/metrics/14/dimensions/1/name: dimension wheel is already defined at /metrics/14/dimensions/0",
            ),
            (
                "tyre_fl_temp, unit: \"[degF]\", dimensions: {wheel: fl}",
                "tyre_fl_temp, unit: \"[degF]\"",
                "/metrics/14/aliases/0: alias tyre_fl_temp gives no value of dimension wheel",
            ),
            (
                "tyre_fl_temp, unit: \"[degF]\", dimensions: {wheel: fl}",
                "tyre_fl_temp, unit: \"[degF]\", dimensions: {wheel: fl, axle: front}",
                "/metrics/14/aliases/0/dimensions/axle: metric tyre.surface_temperature has no dimension \"axle\"",
            ),
            // Snapped in whole steps of 10⁻¹⁵ at the finest: 3e-17 snapped every value to NaN.
            (
                "resolution: 0.001",
                "resolution: 3.0e-17",
                "/metrics/0/resolution: 3e-17 has more than 15 decimals: a resolution other than a power of ten",
            ),
            ("resolution: 0.001", "resolution: 1.5e-15", "/metrics/0/resolution: 1.5e-15 has more than 15 decimals"),
        ];
        for ok in ["0.25", "5", "1.0e-20", "3.0e-15", "0.000123"] {
            assert_eq!(issues_after("resolution: 0.001", &format!("resolution: {ok}")), Vec::<String>::new(), "{ok}");
        }
        for (from, to, expected) in cases {
            let found = issues_after(from, to);
            assert!(found.len() == 1 && found[0].starts_with(expected), "{to}: expected {expected}, got {found:?}");
        }
    }
}
