//! The `runs` table: one row per session, the table the performance API and the dashboards
//! read. It is declared once, here: the sink builds it from the `session-summary` manifest's
//! rows and creates its indexes; the API checks these columns and returns them.
//!
//! Its names are not the manifest's, so a manifest can change its column names without
//! changing an API other code reads.

use crate::analysis::ColumnType;

/// The table name that selects this mapping in a manifest's `output.sinks`.
pub const RUNS_TABLE: &str = "runs";

/// Whether a table of a manifest's `output.sinks` takes this mapping: [`RUNS_TABLE`], or
/// `runs_<suffix>` (`runs_v2`) for another manifest version, since two versions never share a
/// table (the API reads the one `--runs-table` names).
pub fn is_runs_table(name: &str) -> bool {
    name.strip_prefix(RUNS_TABLE).is_some_and(|rest| rest.is_empty() || rest.len() > 1 && rest.starts_with('_'))
}

/// Where a `runs` column's value comes from, in the session-summary row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsSource {
    /// The row's column of this name, unchanged.
    Column(&'static str),
    /// `to − from` in seconds, two timestamp columns of the row.
    Seconds {
        /// The earlier timestamp.
        from: &'static str,
        /// The later timestamp.
        to: &'static str,
    },
}

/// One column of the `runs` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunsColumn {
    /// Its name in the table.
    pub name: &'static str,
    /// Where its value comes from.
    pub source: RunsSource,
    /// Its type (for a `Seconds` column, `Float`).
    pub column_type: ColumnType,
    /// Whether it may be NULL even when its source column may not.
    pub nullable: bool,
    /// Whether the API returns it for a run.
    pub served: bool,
}

const fn col(name: &'static str, from: &'static str, column_type: ColumnType, nullable: bool) -> RunsColumn {
    RunsColumn { name, source: RunsSource::Column(from), column_type, nullable, served: true }
}

/// The columns, in table order. `session_id` is the primary key.
pub const RUNS_COLUMNS: &[RunsColumn] = &[
    col("session_id", "session_id", ColumnType::String, false),
    col("player", "player", ColumnType::String, false),
    col("track", "track", ColumnType::String, false),
    col("car", "car", ColumnType::String, false),
    col("started_at", "window_start", ColumnType::Timestamp, false),
    col("ended_at", "window_end", ColumnType::Timestamp, false),
    RunsColumn {
        name: "total_time_s",
        source: RunsSource::Seconds { from: "window_start", to: "window_end" },
        column_type: ColumnType::Float,
        nullable: false,
        served: true,
    },
    col("laps", "laps", ColumnType::Int, false),
    col("best_lap_s", "best_lap", ColumnType::Float, true),
    col("top_speed_kmh", "top_speed", ColumnType::Float, true),
    col("distance_km", "distance", ColumnType::Float, true),
    col("events", "events", ColumnType::Int, false),
    col("missing_events", "missing_events", ColumnType::Int, false),
    // The row it came from: for tracing a run back to its row, not part of the API.
    RunsColumn { name: "row_id", source: RunsSource::Column("row_id"), column_type: ColumnType::String, nullable: false, served: false },
];

/// The conflict key: one run per session.
pub const RUNS_KEY: &str = "session_id";

/// The column naming the row a run came from: a later version of the same row always replaces
/// the stored one.
pub const RUNS_ROW: &str = "row_id";

/// Which row is a session's run when it has several: a driver or car change mid-session starts
/// a summary row of another key. The run is the row with the most `events`, equal counts broken
/// by the greater `row_id` (compared in this order). A row's `events` never falls from one
/// version to the next, so the run ends as the same row, at its last version, whatever order
/// rows and versions arrive in.
pub const RUNS_PREFERRED_BY: &[&str] = &["events", "row_id"];

/// Read indexes of `runs` (name suffix, then the index's columns and predicate). The
/// leaderboard walks `(track[, car])` laps in ranking order; the run list pages by start time.
pub const RUNS_INDEXES: &[(&str, &str)] = &[
    ("laps_ranked", "(track, best_lap_s, started_at, player, session_id) WHERE best_lap_s IS NOT NULL"),
    ("laps_ranked_car", "(track, car, best_lap_s, started_at, player, session_id) WHERE best_lap_s IS NOT NULL"),
    ("started", "(started_at DESC, session_id DESC)"),
    // `/v1/runs?player=…` (or car, track) in its page order: a rare value is found, not scanned for.
    ("player_started", "(player, started_at DESC, session_id DESC)"),
    ("track_started", "(track, started_at DESC, session_id DESC)"),
    ("car_started", "(car, started_at DESC, session_id DESC)"),
];

/// The columns the API returns for a run, in table order.
pub fn served_columns() -> impl Iterator<Item = &'static str> {
    RUNS_COLUMNS.iter().filter(|c| c.served).map(|c| c.name)
}
