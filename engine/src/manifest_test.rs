//! `pitgun manifest test`: run a manifest's own test cases, the way `vector test` does.

use std::collections::BTreeMap;

use pitgun_contracts::manifest::TestCase;
use serde_json::Value;

use crate::plan::Plan;
use crate::row::final_output_rows;
use crate::runner::Runner;

/// Result of one test case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// Mismatches; empty when the case passed.
    pub failures: Vec<String>,
}

/// Runs one case on a fresh engine compiled by `compile`.
pub fn run_case(compile: &dyn Fn() -> Plan, case: &TestCase) -> CaseResult {
    let mut runner = Runner::new(compile());
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for (i, env) in case.input.iter().enumerate() {
        let text = serde_json::to_string(env).expect("envelopes serialize");
        if let Err(e) = runner.feed_json(&text, 0, &mut out) {
            // A refused input is part of what a case may test; it is checked through `rejected`.
            let _ = (i, e);
        }
    }
    runner.finish(0, &mut out);
    let rows = final_output_rows(&out);
    let expect = &case.expect;
    if rows.len() != expect.rows.len() {
        failures.push(format!("expected {} rows, got {}", expect.rows.len(), rows.len()));
    }
    for (i, (row, want)) in rows.iter().zip(&expect.rows).enumerate() {
        let got: Value = serde_json::from_str(&row.json).expect("rows are JSON");
        for (column, want_value) in want {
            match got.get(column) {
                None => failures.push(format!("row {i}: no column {column:?}")),
                Some(v) if !same(v, want_value) => failures.push(format!("row {i}: column {column:?} expected {want_value}, got {v}")),
                Some(_) => {}
            }
        }
    }
    let stats = runner.engine().stats();
    if let Some(late) = expect.late {
        if stats.late != late {
            failures.push(format!("expected {late} late events, got {}", stats.late));
        }
    }
    if let Some(d) = expect.duplicates {
        if stats.duplicates != d {
            failures.push(format!("expected {d} duplicates, got {}", stats.duplicates));
        }
    }
    let got_rejected: BTreeMap<String, u64> = stats.rejected_by_reason().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    if (!expect.rejected.is_empty() || !got_rejected.is_empty()) && expect.rejected != got_rejected {
        failures.push(format!("expected rejected {:?}, got {:?}", expect.rejected, got_rejected));
    }
    CaseResult { name: case.name.clone(), failures }
}

/// Numbers compare by value (so `3` equals `3.0`); everything else exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}
