//! Rows for the target tests: the replay rows of the shipped lap-performance manifest that the
//! CLI's golden file holds, converted to a table's shape.

#![allow(dead_code)] // each test binary uses part of it

use std::path::PathBuf;

use pitgun_contracts::analysis::AnalysisContract;
use pitgun_sink::table::{TableRow, TableShape};

pub type Row = serde_json::Map<String, serde_json::Value>;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn lap_contract() -> AnalysisContract {
    let text = std::fs::read_to_string(root().join("manifests/pipelines/lap-performance.v1.contract.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The eight lap rows of `cli/tests/golden/lap-performance.ndjson`, as JSON objects.
pub fn lap_rows() -> Vec<Row> {
    let text = std::fs::read_to_string(root().join("cli/tests/golden/lap-performance.ndjson")).unwrap();
    let rows: Vec<Row> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(rows.len() >= 4, "the golden rows hold a few laps ({})", rows.len());
    rows
}

pub fn convert(shape: &TableShape, rows: &[Row]) -> Vec<TableRow> {
    rows.iter().map(|r| shape.convert(r).unwrap_or_else(|e| panic!("row {}: {e}", r["row_id"]))).collect()
}

/// A later version of `row` (same key): a late event moved its start 1.5 s earlier and added a
/// sample; its `window_anchor` (QuestDB's designated timestamp) stays.
pub fn next_version(row: &Row) -> Row {
    let mut v = row.clone();
    let start = humantime::parse_rfc3339(row["window_start"].as_str().unwrap()).unwrap() - std::time::Duration::from_millis(1500);
    v.insert("window_start".into(), humantime::format_rfc3339_micros(start).to_string().into());
    v.insert("samples".into(), serde_json::Value::from(row["samples"].as_i64().unwrap() + 1));
    v
}
