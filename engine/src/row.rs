//! Output rows: deterministic ids, canonical JSON lines, one timestamp format.

use pitgun_contracts::analysis::ColumnType;
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// One emission of a window's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Hex SHA-256 row id; a re-emission has the same id and replaces the earlier version.
    pub row_id: String,
    /// Session id then key dimension values, for the canonical order.
    pub key: Vec<String>,
    /// Window start (µs), for the canonical order.
    pub window_start: i64,
    /// The row as the one JSON line replay writes and the aggregates topic carries.
    pub json: String,
    /// Per-session emission counter: the changelog order within a session.
    pub emission: u64,
}

impl Row {
    /// Canonical order: key, window start, row id.
    pub fn canonical_cmp(&self, other: &Row) -> std::cmp::Ordering {
        (&self.key, self.window_start, &self.row_id).cmp(&(&other.key, other.window_start, &other.row_id))
    }
}

/// The last version of each key: what a table upserted by key (rows by `row_id`, a compacted
/// topic by record key) holds once every version so far was written. Values come out in the
/// order their keys were first seen.
#[derive(Debug)]
pub struct LastVersions<K, V> {
    index: std::collections::HashMap<K, usize>,
    values: Vec<V>,
}

impl<K, V> Default for LastVersions<K, V> {
    fn default() -> Self {
        LastVersions { index: Default::default(), values: Vec::new() }
    }
}

impl<K: std::hash::Hash + Eq, V> LastVersions<K, V> {
    /// Keeps `value` as the key's version, replacing an earlier one.
    pub fn keep(&mut self, key: K, value: V) {
        match self.index.entry(key) {
            std::collections::hash_map::Entry::Occupied(at) => self.values[*at.get()] = value,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(self.values.len());
                self.values.push(value);
            }
        }
    }

    /// The last versions, in the order their keys were first seen.
    pub fn into_values(self) -> Vec<V> {
        self.values
    }
}

/// The final version of each row among an engine's outputs ([`final_rows`] of its rows).
pub fn final_output_rows(outputs: &[crate::session_engine::Output]) -> Vec<Row> {
    final_rows(outputs.iter().filter_map(|o| match o {
        crate::session_engine::Output::Row(r) => Some(r.clone()),
        _ => None,
    }))
}

/// The final rows of a run from its row versions in emission order: the last version of each
/// `row_id`, in canonical order — what replay writes and a sink's tables end with.
pub fn final_rows(versions: impl IntoIterator<Item = Row>) -> Vec<Row> {
    let mut last = LastVersions::default();
    for row in versions {
        last.keep(row.row_id.clone(), row);
    }
    let mut rows = last.into_values();
    rows.sort_by(Row::canonical_cmp);
    rows
}

/// `row_id`: hex SHA-256 over the RFC 8785 JSON of
/// `[manifest, version, session_id, key…, window kind, window start (µs) or segment value]`.
pub fn row_id(manifest: &str, version: u32, key: &[String], kind: &str, discriminator: Value) -> String {
    let mut parts: Vec<Value> = Vec::with_capacity(key.len() + 4);
    parts.push(Value::from(manifest));
    parts.push(Value::from(version));
    parts.extend(key.iter().map(|k| Value::from(k.as_str())));
    parts.push(Value::from(kind));
    parts.push(discriminator);
    let text = pitgun_contracts::hash::canonical_json(&Value::Array(parts));
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// RFC 3339 UTC with exactly six fractional digits: `2026-01-02T03:04:05.000006Z`.
pub fn format_timestamp(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A JSON value for a number in a column of type `t`: integers print without a fraction,
/// floats in shortest round-trip form.
pub fn number(value: Option<f64>, t: ColumnType) -> Value {
    match value {
        None => Value::Null,
        Some(v) if t == ColumnType::Int && v.fract() == 0.0 && v.abs() < 9.0e15 => Value::from(v as i64),
        Some(v) => Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null),
    }
}

/// Builds the JSON line of a row from ordered columns.
pub fn render(columns: Map<String, Value>) -> String {
    Value::Object(columns).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_timestamp(1_767_225_600_000_006), "2026-01-01T00:00:00.000006Z");
        assert_eq!(format_timestamp(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(format_timestamp(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn row_ids_are_stable() {
        let a = row_id("m", 1, &["s1".into()], "segment", Value::from(3));
        assert_eq!(a, row_id("m", 1, &["s1".into()], "segment", Value::from(3)));
        assert_ne!(a, row_id("m", 2, &["s1".into()], "segment", Value::from(3)));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn numbers() {
        assert_eq!(number(Some(3.0), ColumnType::Int).to_string(), "3");
        assert_eq!(number(Some(3.0), ColumnType::Float).to_string(), "3.0");
        assert_eq!(number(Some(0.1 + 0.2), ColumnType::Float).to_string(), "0.30000000000000004");
        assert_eq!(number(None, ColumnType::Float), Value::Null);
    }
}
