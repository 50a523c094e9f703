//! `pitgun-analysis/v1`: the contract of a manifest version's output rows.

use serde::{Deserialize, Serialize};

/// The schema identifier of a v1 analysis contract.
pub const ANALYSIS_SCHEMA_V1: &str = "pitgun-analysis/v1";

/// The column the sink adds to every PostgreSQL table it writes: the version of the row stored
/// (the `pitgun-row-version` header it came with). Not a column of the rows: readers such as
/// the API leave it out.
pub const STORED_VERSION_COLUMN: &str = "pitgun_row_version";

/// Generated from a manifest; changing it incompatibly requires a new manifest version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisContract {
    /// Always [`ANALYSIS_SCHEMA_V1`].
    pub schema: String,
    /// Manifest name.
    pub manifest: String,
    /// Manifest version.
    pub version: u32,
    /// Window kind of the rows.
    pub window: String,
    /// Topic the rows are published to.
    pub topic: String,
    /// Columns in row order.
    pub columns: Vec<Column>,
}

/// One output column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// UCUM unit, for measures with a unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Whether the value may be null.
    pub nullable: bool,
    /// What the column is for.
    pub role: ColumnRole,
    /// Meaning.
    pub description: String,
}

/// Column value types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// 64-bit integer.
    Int,
    /// 64-bit float.
    Float,
    /// Boolean.
    Bool,
    /// RFC 3339 UTC timestamp with microseconds (`2026-01-02T03:04:05.000006Z`).
    Timestamp,
}

/// What a column is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnRole {
    /// The deterministic row id (upsert key).
    Id,
    /// Part of the manifest key.
    Key,
    /// Identifies the window.
    Window,
    /// A computed value.
    Measure,
    /// A quality flag.
    Flag,
}
