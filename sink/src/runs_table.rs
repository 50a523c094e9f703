//! The `runs` table from the `session-summary` manifest's rows: the mapping declared in
//! [`pitgun_contracts::runs`], checked against a contract. A contract that lacks one of the
//! columns it reads, or has another type for it, is refused when the sink starts, naming the
//! column. A session with several summary rows keeps one, by the rule
//! [`pitgun_contracts::runs::RUNS_PREFERRED_BY`] states.

use pitgun_contracts::analysis::AnalysisContract;
pub use pitgun_contracts::runs::{is_runs_table, RUNS_TABLE};
use pitgun_contracts::runs::{RunsSource, RUNS_COLUMNS, RUNS_INDEXES, RUNS_KEY, RUNS_PREFERRED_BY, RUNS_ROW};

use crate::error::{Error, Result};
use crate::table::{PgType, Preference, Source, TableShape, TargetColumn};

/// The `runs` shape for a contract (checked to carry every column the mapping reads), as
/// table `table` (`runs`, or another version's `runs_v2`: [`is_runs_table`]).
pub fn runs_shape(contract: &AnalysisContract, table: &str) -> Result<TableShape> {
    let mut columns = Vec::with_capacity(RUNS_COLUMNS.len());
    for c in RUNS_COLUMNS {
        let (source, nullable) = match c.source {
            RunsSource::Column(from) => {
                let Some(have) = contract.columns.iter().find(|h| h.name == from) else {
                    return Err(Error::Setup(format!(
                        "the runs table needs column {from:?} in the rows of {} v{}, which has none",
                        contract.manifest, contract.version
                    )));
                };
                if have.column_type != c.column_type {
                    return Err(Error::Setup(format!(
                        "the runs table needs column {from:?} of {} v{} to be {:?}, not {:?}",
                        contract.manifest, contract.version, c.column_type, have.column_type
                    )));
                }
                (Source::Column(from.into()), c.nullable || have.nullable)
            }
            RunsSource::Seconds { from, to } => (Source::Seconds { from: from.into(), to: to.into() }, c.nullable),
        };
        columns.push(TargetColumn { name: c.name.into(), pg_type: PgType::of(c.column_type), nullable, source });
    }
    let indexes = RUNS_INDEXES.iter().map(|(suffix, spec)| (suffix.to_string(), spec.to_string())).collect();
    let preference = Preference { row: RUNS_ROW.into(), rank: RUNS_PREFERRED_BY.iter().map(|c| c.to_string()).collect() };
    let primary_key = vec![RUNS_KEY.into()];
    Ok(TableShape { table: table.into(), columns, conflict_key: RUNS_KEY.into(), primary_key, indexes, preference: Some(preference) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Cell, TableRow};

    #[test]
    fn a_session_summary_row_becomes_a_run() {
        let contract = crate::shipped_contract("session-summary.v1");
        let shape = runs_shape(&contract, "runs").unwrap();
        let row = serde_json::from_str(r#"{"row_id":"adb1","session_id":"s-2026-0","player":"dara","track":"monza","car":"lmp2","window_start":"2026-01-01T00:00:03.677340Z","window_end":"2026-01-01T00:04:03.677340Z","laps":2,"best_lap":97.619407,"top_speed":313.4988,"distance":13.8341902,"events":5050,"missing_events":0}"#).unwrap();
        let run = shape.convert(&row).unwrap();
        assert_eq!(run.key(), "s-2026-0");
        let at = |n: &str| &run.cells[shape.columns.iter().position(|c| c.name == n).unwrap()];
        assert_eq!(at("total_time_s"), &Cell::Float(240.0));
        assert_eq!(at("best_lap_s"), &Cell::Float(97.619407));
        assert_eq!(at("row_id"), &Cell::Text("adb1".into()));
        assert!(shape.create_sql().contains("\"session_id\" text NOT NULL PRIMARY KEY"));
        assert!(shape.index_sql().iter().any(|i| i.starts_with("CREATE INDEX IF NOT EXISTS \"runs_started\" ON \"runs\" (started_at DESC")));

        // A session's other row replaces this one only with more events (or as many and a
        // greater row id).
        let with = |row_id: &str, events: i64| {
            let mut r = run.clone();
            r.cells[shape.columns.iter().position(|c| c.name == "row_id").unwrap()] = Cell::Text(row_id.into());
            r.cells[shape.columns.iter().position(|c| c.name == "events").unwrap()] = Cell::Int(events);
            r
        };
        assert!(!shape.replaces(&with("adb0", 5000), &run));
        assert!(shape.replaces(&with("adb2", 5050), &run));
        assert!(shape.replaces(&with("adb0", 5051), &run));
        // Versions of one row: a newer one (or the same again) replaces, never an older one.
        let at = |row: &TableRow, version: i64| TableRow { version, ..row.clone() };
        assert!(shape.replaces(&at(&with("adb1", 6000), 5), &at(&run, 4)));
        assert!(!shape.replaces(&at(&run, 3), &at(&with("adb1", 6000), 4)));
        assert!(shape.replaces(&at(&run, 4), &at(&run, 4)));
        assert_eq!(
            shape.replace_condition(),
            r#"CASE WHEN "runs"."row_id" = EXCLUDED."row_id" THEN EXCLUDED."pitgun_row_version" >= "runs"."pitgun_row_version" ELSE (EXCLUDED."events", EXCLUDED."row_id" COLLATE "C") > ("runs"."events", "runs"."row_id" COLLATE "C") END"#
        );

        let mut other = contract.clone();
        other.columns.retain(|c| c.name != "laps");
        assert!(runs_shape(&other, "runs").unwrap_err().to_string().contains("column \"laps\""));
    }
}
