//! The `runs` table: one row per session, from the `session-summary` manifest's rows.
//!
//! An explicit mapping, not the generic contract copy, because the table is an API other code
//! reads (the performance API, dashboards) and its names should not follow a manifest's:
//!
//! | `runs` column | from the contract column | type |
//! |---|---|---|
//! | `session_id` (primary key) | `session_id` | text |
//! | `player`, `track`, `car` | same names | text |
//! | `started_at` | `window_start` (first event of the session) | timestamptz |
//! | `ended_at` | `window_end` (last event) | timestamptz |
//! | `total_time_s` | `window_end − window_start` in seconds | double precision |
//! | `laps` | `laps` (laps completed) | bigint |
//! | `best_lap_s` | `best_lap` (best complete lap, s; NULL: none) | double precision |
//! | `top_speed_kmh` | `top_speed` | double precision |
//! | `distance_km` | `distance` | double precision |
//! | `events` | `events` (duplicates dropped) | bigint |
//! | `missing_events` | `missing_events` | bigint |
//! | `row_id` | `row_id` (the row it came from) | text |
//!
//! A contract that lacks one of these columns, or has another type for it, is refused when the
//! sink starts, naming the column.

use anyhow::{bail, Result};
use pitgun_contracts::analysis::{AnalysisContract, ColumnType};

use crate::table::{PgType, Source, TableShape, TargetColumn};

/// The table name that selects this mapping in a manifest's `output.sinks`.
pub const RUNS_TABLE: &str = "runs";

/// The `runs` shape for a contract (checked to carry every column the mapping reads).
pub fn runs_shape(contract: &AnalysisContract) -> Result<TableShape> {
    let col = |name: &str, from: &str, want: ColumnType, nullable: bool| -> Result<TargetColumn> {
        let Some(c) = contract.columns.iter().find(|c| c.name == from) else {
            bail!("the runs table needs column {from:?} in the rows of {} v{}, which has none", contract.manifest, contract.version);
        };
        if c.column_type != want {
            bail!("the runs table needs column {from:?} of {} v{} to be {want:?}, not {:?}", contract.manifest, contract.version, c.column_type);
        }
        Ok(TargetColumn { name: name.into(), pg_type: PgType::of(want), nullable: nullable || c.nullable, source: Source::Column(from.into()) })
    };
    use ColumnType::*;
    let mut columns = vec![
        col("session_id", "session_id", String, false)?,
        col("player", "player", String, false)?,
        col("track", "track", String, false)?,
        col("car", "car", String, false)?,
        col("started_at", "window_start", Timestamp, false)?,
        col("ended_at", "window_end", Timestamp, false)?,
    ];
    columns.push(TargetColumn {
        name: "total_time_s".into(),
        pg_type: PgType::Double,
        nullable: false,
        source: Source::Seconds { from: "window_start".into(), to: "window_end".into() },
    });
    columns.extend([
        col("laps", "laps", Int, false)?,
        col("best_lap_s", "best_lap", Float, true)?,
        col("top_speed_kmh", "top_speed", Float, true)?,
        col("distance_km", "distance", Float, true)?,
        col("events", "events", Int, false)?,
        col("missing_events", "missing_events", Int, false)?,
        col("row_id", "row_id", String, false)?,
    ]);
    Ok(TableShape { table: RUNS_TABLE.into(), columns, conflict_key: "session_id".into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Cell;

    #[test]
    fn a_session_summary_row_becomes_a_run() {
        let contract = crate::shipped_contract("session-summary.v1");
        let shape = runs_shape(&contract).unwrap();
        let row = serde_json::from_str(r#"{"row_id":"adb1","session_id":"s-2026-0","player":"dara","track":"monza","car":"lmp2","window_start":"2026-01-01T00:00:03.677340Z","window_end":"2026-01-01T00:04:03.677340Z","laps":2,"best_lap":97.619407,"top_speed":313.4988,"distance":13.8341902,"events":5050,"missing_events":0}"#).unwrap();
        let run = shape.convert(&row).unwrap();
        assert_eq!(run.key, "s-2026-0");
        let at = |n: &str| &run.cells[shape.columns.iter().position(|c| c.name == n).unwrap()];
        assert_eq!(at("total_time_s"), &Cell::Float(240.0));
        assert_eq!(at("best_lap_s"), &Cell::Float(97.619407));
        assert_eq!(at("row_id"), &Cell::Text("adb1".into()));
        assert!(shape.create_sql().contains("\"session_id\" text NOT NULL PRIMARY KEY"));

        let mut other = contract.clone();
        other.columns.retain(|c| c.name != "laps");
        assert!(runs_shape(&other).unwrap_err().to_string().contains("column \"laps\""));
    }
}
