//! A target table's shape: which columns, of which types, filled from which contract columns —
//! and the conversion of one aggregate row (the JSON line `pitgun replay` writes) into cells.
//!
//! The generic shape is the manifest version's analysis contract, column for column. Type
//! mapping (also in the README):
//!
//! | contract | PostgreSQL | QuestDB |
//! |---|---|---|
//! | `string` | `text` | `SYMBOL` for key columns, `VARCHAR` otherwise |
//! | `int` | `bigint` | `LONG` |
//! | `float` | `double precision` | `DOUBLE` |
//! | `bool` | `boolean` | `BOOLEAN` |
//! | `timestamp` | `timestamptz` (µs) | `TIMESTAMP` (µs) |
//!
//! `row_id` is the primary key, so a re-emitted window or a replayed batch upserts. The `runs`
//! table has its own explicit shape ([`crate::runs`]).

use std::time::SystemTime;

use anyhow::{bail, Result};
use pitgun_contracts::analysis::{AnalysisContract, ColumnRole, ColumnType};
use pitgun_runtime::sql::check_identifier;
use serde_json::Value;

/// A PostgreSQL column type the sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    /// `text`.
    Text,
    /// `bigint`.
    BigInt,
    /// `double precision`.
    Double,
    /// `boolean`.
    Boolean,
    /// `timestamptz`.
    Timestamptz,
}

impl PgType {
    /// The type from a contract column type.
    pub fn of(t: ColumnType) -> PgType {
        match t {
            ColumnType::String => PgType::Text,
            ColumnType::Int => PgType::BigInt,
            ColumnType::Float => PgType::Double,
            ColumnType::Bool => PgType::Boolean,
            ColumnType::Timestamp => PgType::Timestamptz,
        }
    }

    /// Its SQL name.
    pub fn sql(self) -> &'static str {
        match self {
            PgType::Text => "text",
            PgType::BigInt => "bigint",
            PgType::Double => "double precision",
            PgType::Boolean => "boolean",
            PgType::Timestamptz => "timestamptz",
        }
    }
}

/// Where a target column's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The contract column of this name.
    Column(String),
    /// Seconds from one timestamp column to another (`runs.total_time_s`).
    Seconds {
        /// The earlier timestamp column.
        from: String,
        /// The later one.
        to: String,
    },
}

/// One column of a target table.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetColumn {
    /// Column name in the table.
    pub name: String,
    /// Its type.
    pub pg_type: PgType,
    /// Whether it may be NULL.
    pub nullable: bool,
    /// What fills it.
    pub source: Source,
}

/// A table the sink writes one manifest version's rows to.
#[derive(Debug, Clone, PartialEq)]
pub struct TableShape {
    /// Table name (from the manifest's output section).
    pub table: String,
    /// Columns, in table order.
    pub columns: Vec<TargetColumn>,
    /// The upsert key column (unique).
    pub conflict_key: String,
}

/// One cell of a row, typed for its column.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// Text.
    Text(String),
    /// 64-bit integer.
    Int(i64),
    /// 64-bit float.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// Timestamp (µs precision).
    Time(SystemTime),
}

/// A row converted for a table: its upsert key and its cells in table order.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    /// The conflict key's value.
    pub key: String,
    /// Cells in the shape's column order.
    pub cells: Vec<Cell>,
}

impl TableShape {
    /// The generic shape: every contract column as is, `row_id` the key.
    pub fn from_contract(contract: &AnalysisContract, table: &str) -> Result<TableShape> {
        check_identifier(table)?;
        let mut columns = Vec::new();
        for c in &contract.columns {
            check_identifier(&c.name)?;
            columns.push(TargetColumn {
                name: c.name.clone(),
                pg_type: PgType::of(c.column_type),
                nullable: c.nullable,
                source: Source::Column(c.name.clone()),
            });
        }
        let Some(id) = contract.columns.iter().find(|c| c.role == ColumnRole::Id) else {
            bail!("contract of {} v{} has no id column", contract.manifest, contract.version);
        };
        Ok(TableShape { table: table.to_string(), columns, conflict_key: id.name.clone() })
    }

    /// `CREATE TABLE IF NOT EXISTS` for this shape (identifiers checked when it was built).
    pub fn create_sql(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let null = if c.nullable { "" } else { " NOT NULL" };
                let key = if c.name == self.conflict_key { " PRIMARY KEY" } else { "" };
                format!("\"{}\" {}{null}{key}", c.name, c.pg_type.sql())
            })
            .collect();
        format!("CREATE TABLE IF NOT EXISTS \"{}\" ({})", self.table, cols.join(", "))
    }

    /// Converts one aggregate row (a JSON object) into this table's cells; the error names the
    /// column and what is wrong.
    pub fn convert(&self, row: &serde_json::Map<String, Value>) -> Result<TableRow, String> {
        let mut cells = Vec::with_capacity(self.columns.len());
        let mut key = None;
        for c in &self.columns {
            let cell = match &c.source {
                Source::Column(name) => cell_of(row.get(name).unwrap_or(&Value::Null), c.pg_type, name)?,
                Source::Seconds { from, to } => {
                    let at = |n: &str| match cell_of(row.get(n).unwrap_or(&Value::Null), PgType::Timestamptz, n)? {
                        Cell::Time(t) => Ok(t),
                        _ => Err(format!("column {n:?}: missing")),
                    };
                    let (from, to) = (at(from)?, at(to)?);
                    let secs = match to.duration_since(from) {
                        Ok(d) => d.as_secs_f64(),
                        Err(e) => -e.duration().as_secs_f64(),
                    };
                    Cell::Float(secs)
                }
            };
            if cell == Cell::Null && !c.nullable {
                return Err(format!("column {:?}: null or missing, but the table requires a value", c.name));
            }
            if c.name == self.conflict_key {
                match &cell {
                    Cell::Text(t) => key = Some(t.clone()),
                    _ => return Err(format!("key column {:?} is not text", c.name)),
                }
            }
            cells.push(cell);
        }
        let key = key.ok_or_else(|| format!("key column {:?} missing", self.conflict_key))?;
        Ok(TableRow { key, cells })
    }
}

fn cell_of(v: &Value, t: PgType, name: &str) -> Result<Cell, String> {
    let bad = |what: &str| Err(format!("column {name:?}: {what}, got {v}"));
    match (v, t) {
        (Value::Null, _) => Ok(Cell::Null),
        (Value::String(s), PgType::Text) => Ok(Cell::Text(s.clone())),
        (Value::Number(n), PgType::BigInt) => match n.as_i64() {
            Some(i) => Ok(Cell::Int(i)),
            None => bad("expected a 64-bit integer"),
        },
        (Value::Number(n), PgType::Double) => match n.as_f64() {
            Some(f) => Ok(Cell::Float(f)),
            None => bad("expected a number"),
        },
        (Value::Bool(b), PgType::Boolean) => Ok(Cell::Bool(*b)),
        (Value::String(s), PgType::Timestamptz) => match parse_time(s) {
            Some(t) => Ok(Cell::Time(t)),
            None => bad("expected an RFC 3339 UTC timestamp"),
        },
        _ => bad(&format!("expected {}", t.sql())),
    }
}

/// An RFC 3339 UTC timestamp (`…Z`, years 1970–9999: what the engine writes).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s).ok()
}


#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn contract() -> AnalysisContract {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/pipelines/lap-performance.v1.contract.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn the_generic_shape_follows_the_contract_and_converts_a_replay_row() {
        let shape = TableShape::from_contract(&contract(), "lap_performance_v1").unwrap();
        let sql = shape.create_sql();
        assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS \"lap_performance_v1\" (\"row_id\" text NOT NULL PRIMARY KEY, "), "{sql}");
        assert!(sql.contains("\"window_start\" timestamptz NOT NULL"), "{sql}");
        assert!(sql.contains("\"lap_time\" double precision,") || sql.contains("\"lap_time\" double precision NOT NULL"), "{sql}");
        let row: serde_json::Map<String, Value> = serde_json::from_str(r#"{"row_id":"ab","session_id":"s","player":"p","track":"t","car":"c","window_start":"2026-01-01T00:00:03.677340Z","window_end":"2026-01-01T00:01:46.368860Z","window_anchor":"2026-01-01T00:00:03.677340Z","lap":1,"lap_time":102.69152,"max_speed":312.0,"mean_speed":null,"full_throttle_share":0.5,"braking_share":0.1,"distance":5790.8679,"tyre_fl_p50":1.0,"tyre_fl_p90":1.0,"tyre_fr_p50":1.0,"tyre_fr_p90":1.0,"tyre_rl_p50":1.0,"tyre_rl_p90":1.0,"tyre_rr_p50":1.0,"tyre_rr_p90":1.0,"samples":2054,"complete":true}"#).unwrap();
        let converted = shape.convert(&row).unwrap();
        assert_eq!(converted.key, "ab");
        let at = |n: &str| &converted.cells[shape.columns.iter().position(|c| c.name == n).unwrap()];
        assert_eq!(at("lap"), &Cell::Int(1));
        assert_eq!(at("mean_speed"), &Cell::Null);
        assert_eq!(at("complete"), &Cell::Bool(true));
        assert_eq!(at("window_start"), &Cell::Time(UNIX_EPOCH + Duration::from_micros(1_767_225_603_677_340)));

        let mut bad = row.clone();
        bad.insert("lap".into(), Value::from("one"));
        assert_eq!(shape.convert(&bad).unwrap_err(), "column \"lap\": expected bigint, got \"one\"");
        bad.insert("lap".into(), Value::Null);
        assert!(shape.convert(&bad).unwrap_err().contains("\"lap\": null or missing"));
        assert!(TableShape::from_contract(&contract(), "Robert'); DROP TABLE x;--").is_err());
    }
}
