//! The SQL the API runs, against the tables the sink writes: `runs` (one row per session,
//! `pitgun-sink`'s `runs` mapping) and a lap table (one row per lap, the `lap-performance`
//! manifest's contract).
//!
//! Every value from a request is a bind parameter. Table names come from the command line,
//! are checked to be plain identifiers, and are put into the statement text once at start.
//! The API runs no DDL: the sink owns the schema, read indexes included.

use std::time::{Duration, SystemTime};

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use pitgun_contracts::analysis::STORED_VERSION_COLUMN;
use pitgun_contracts::runs::served_columns;
use pitgun_runtime::sql::check_identifier;
use serde_json::{json, Map, Value};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{IsolationLevel, NoTls, Row, Statement};
use tracing::info;

use crate::error::{Error, Result};
use crate::params::Cursor;

/// The lap-table columns `/performance` needs.
const PERFORMANCE_COLUMNS: &[&str] = &[
    "row_id",
    "player",
    "track",
    "car",
    "lap",
    "lap_time",
    "complete",
    "window_start",
    "window_anchor",
    "max_speed",
    "mean_speed",
    "full_throttle_share",
    "braking_share",
    "distance",
    "samples",
];

/// A session's lap rows in page order, from after a [`Cursor`]: `$1` the session, `$2`/`$3` the
/// cursor (none: from the first), `$4` the page size. By `window_anchor`, the start a row was
/// first emitted with, which no later version moves (`window_start` may move earlier, and a row
/// could move from after a cursor to before it); then by row id. The order has no index (a lap
/// table has one, its key, for the sink's speed): each page sorts the session's rows.
const LAP_PAGE: &str = "WHERE session_id = $1 AND ($2::timestamptz IS NULL OR (window_anchor, row_id) > ($2, $3::text)) \
                        ORDER BY window_anchor, row_id LIMIT $4";

/// Statements, built once.
struct Sql {
    runs: String,
    run_columns: String,
    run: String,
    laps: String,
    performance: String,
    performance_summary: String,
    best_lap: String,
    leaderboard: String,
    leaderboard_car: String,
}

/// What `/performance` says of all of a session's laps, whichever page is asked for.
pub struct LapSummary {
    /// Lap rows of the session (0: no laps recorded).
    pub laps: i64,
    /// Complete laps among them.
    pub complete_laps: i64,
    /// Mean time of the complete laps.
    pub mean: Option<f64>,
    /// Their sample standard deviation (two complete laps at least).
    pub spread: Option<f64>,
    /// The best complete lap: the fastest, on a tie the one that started first.
    pub best: Option<Row>,
}

/// The database the API reads, through a pool of connections.
pub struct Store {
    pool: Pool,
    sql: Sql,
    /// How long a read waits for the database's answer (`None`: no query timeout was set).
    answer_within: Option<Duration>,
}

/// Filters of `/v1/runs`.
#[derive(Debug, Default)]
pub struct RunFilter {
    /// Exact player.
    pub player: Option<String>,
    /// Exact track.
    pub track: Option<String>,
    /// Exact car.
    pub car: Option<String>,
    /// Runs that started at or after this.
    pub since: Option<SystemTime>,
}

impl Store {
    /// Connects (`connections` at most) and checks that the tables have the columns it reads.
    /// A query running past `query_timeout` (waiting on a lock included; zero: none) is cancelled
    /// by the server, and a connection not had within 5 s is given up: both are 503s, not hung
    /// requests.
    pub async fn open(url: &str, runs: &str, laps: &str, connections: usize, query_timeout: Duration) -> Result<Store> {
        check_identifier(runs)?;
        check_identifier(laps)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(Error::Url)?;
        // Added to the URL's own `options`, not in their place; one the URL sets wins.
        let options = config.get_options().unwrap_or_default().to_string();
        if !query_timeout.is_zero() && !options.contains("statement_timeout") {
            let timeout = format!("-c statement_timeout={}", query_timeout.as_millis());
            config.options(&if options.is_empty() { timeout } else { format!("{options} {timeout}") });
        }
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        // Bounded waits: a database that stops answering gives 503s, not hung requests.
        let wait = Some(Duration::from_secs(5));
        let pool = Pool::builder(manager)
            .max_size(connections.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(wait)
            .create_timeout(wait)
            .recycle_timeout(wait)
            .build()?;
        let client = pool.get().await?;
        let run_columns: Vec<&str> = served_columns().collect();
        let mut lap_columns = String::new();
        for (table, needed) in [(runs, run_columns.clone()), (laps, [&["session_id"][..], PERFORMANCE_COLUMNS].concat())] {
            let have: Vec<String> = client
                .query(
                    "SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 \
                     ORDER BY ordinal_position",
                    &[&table],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if have.is_empty() {
                return Err(Error::NoTable(table.to_string()));
            }
            if let Some(missing) = needed.iter().find(|c| !have.iter().any(|h| h == *c)) {
                return Err(Error::NoColumn { table: table.to_string(), column: missing.to_string() });
            }
            if table == laps {
                // A lap row is the manifest's row: every column but the sink's version.
                let columns: Vec<String> = have.iter().filter(|c| *c != STORED_VERSION_COLUMN).map(|c| format!("\"{c}\"")).collect();
                lap_columns = columns.join(", ");
            }
        }
        info!(runs, laps, "tables checked");
        // Laps in ranking order straight from an index, from after a position in it and
        // leaving out players already ranked; the caller keeps each player's first (best) one.
        // The order is the leaderboard's: lap time, then the run that started first, then the
        // player's name.
        let leaderboard = |car: &str| {
            format!(
                "SELECT player, best_lap_s, session_id, car, started_at FROM \"{runs}\" \
                 WHERE track = $1 {car} AND best_lap_s IS NOT NULL \
                   AND (best_lap_s, started_at, player, session_id) > ($3, COALESCE($4, '-infinity'::timestamptz), $5, $6) \
                   AND player <> ALL($7::text[]) \
                 ORDER BY best_lap_s, started_at, player, session_id LIMIT $2"
            )
        };
        let sql = Sql {
            runs: runs.to_string(),
            run_columns: run_columns.join(", "),
            run: format!("SELECT {} FROM \"{runs}\" WHERE session_id = $1", run_columns.join(", ")),
            laps: format!("SELECT {lap_columns} FROM \"{laps}\" {LAP_PAGE}"),
            performance: format!("SELECT {} FROM \"{laps}\" {LAP_PAGE}", PERFORMANCE_COLUMNS.join(", ")),
            performance_summary: format!(
                "SELECT count(*) AS laps, count(*) FILTER (WHERE complete) AS complete_laps, \
                   avg(lap_time) FILTER (WHERE complete) AS mean, stddev_samp(lap_time) FILTER (WHERE complete) AS spread \
                 FROM \"{laps}\" WHERE session_id = $1"
            ),
            best_lap: format!(
                "SELECT lap, lap_time, player, car FROM \"{laps}\" WHERE session_id = $1 AND complete \
                 ORDER BY lap_time, window_start, row_id LIMIT 1"
            ),
            leaderboard: leaderboard(""),
            leaderboard_car: leaderboard("AND car = $8"),
        };
        // The server's own cancellation at its statement timeout (the URL's if it sets one) gets
        // time to arrive first. Without one the API sets no deadline of its own either.
        let in_effect = if options.contains("statement_timeout") { statement_timeout(&options) } else { Some(query_timeout) };
        let answer_within = in_effect.filter(|t| !t.is_zero()).map(|t| t + Duration::from_secs(5));
        Ok(Store { pool, sql, answer_within })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Runs `read` (one to a few statements) on a pooled connection, waiting at most `deadline`
    /// for it as a whole (for a read, the statement timeout and 5 s more): the server cancels a
    /// statement at its timeout and says so, but a database that does not answer at all (frozen,
    /// or its packets dropped) held the request for as long as TCP kept the connection, hours. A
    /// connection given up on is dropped from the pool, since its query may still be on its way.
    async fn within<T>(&self, deadline: Option<Duration>, read: impl AsyncFnOnce(&mut deadpool_postgres::Object) -> Result<T>) -> Result<T> {
        let mut c = self.client().await?;
        let Some(deadline) = deadline else { return read(&mut c).await };
        match tokio::time::timeout(deadline, read(&mut c)).await {
            Ok(answer) => answer,
            Err(_) => {
                drop(deadpool_postgres::Object::take(c));
                Err(Error::NoAnswer(deadline))
            }
        }
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> bool {
        let answered = async |c: &mut deadpool_postgres::Object| Ok(c.simple_query("SELECT 1").await.is_ok());
        self.within(Some(Duration::from_secs(5)), answered).await.unwrap_or(false)
    }

    /// A page of runs, newest first, and the cursor of the next page.
    pub async fn runs(&self, f: &RunFilter, after: Option<&Cursor>, limit: i64) -> Result<(Vec<Value>, Option<Cursor>)> {
        self.within(self.answer_within, async |c| {
            // Only the filters given are in the statement: one that reads `$1 IS NULL OR player =
            // $1` cannot use the player's index once PostgreSQL plans it for any value.
            let mut conditions: Vec<String> = Vec::new();
            let mut values: Vec<&(dyn ToSql + Sync)> = Vec::new();
            for (column, value) in [("player", &f.player), ("track", &f.track), ("car", &f.car)] {
                if let Some(v) = value {
                    values.push(v);
                    conditions.push(format!("{column} = ${}", values.len()));
                }
            }
            if let Some(since) = &f.since {
                values.push(since);
                conditions.push(format!("started_at >= ${}", values.len()));
            }
            if let Some(a) = after {
                values.extend([&a.at as &(dyn ToSql + Sync), &a.id]);
                conditions.push(format!("(started_at, session_id) < (${}, ${})", values.len() - 1, values.len()));
            }
            // One more than asked: whether there is a next page.
            let more = limit + 1;
            values.push(&more);
            let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
            let sql = format!(
                "SELECT {} FROM \"{}\" {filter} ORDER BY started_at DESC, session_id DESC LIMIT ${}",
                self.sql.run_columns,
                self.sql.runs,
                values.len()
            );
            let st = c.prepare_cached(&sql).await?;
            let rows = c.query(&st, &values).await?;
            let (rows, next) = page(&rows, limit, "started_at", "session_id");
            Ok((rows.iter().map(row_json).collect(), next))
        })
        .await
    }

    /// One run (`None`: no such session) with a page of its lap rows, and the cursor of the next.
    pub async fn run(&self, session: &str, after: Option<&Cursor>, limit: i64) -> Result<Option<(Value, Option<Cursor>)>> {
        self.within(self.answer_within, async |c| {
            let st = c.prepare_cached(&self.sql.run).await?;
            let Some(run) = c.query_opt(&st, &[&session]).await? else { return Ok(None) };
            let rows = lap_page(&*c, &self.sql.laps, session, after, limit).await?;
            let (rows, next) = page(&rows, limit, "window_anchor", "row_id");
            let mut out = row_json(&run);
            out["lap_rows"] = rows.iter().map(row_json).collect();
            Ok(Some((out, next)))
        })
        .await
    }

    /// What `/performance` shows of a session: its laps summed up, and a page of them with the
    /// cursor of the next. The summary and the page are read in one snapshot.
    pub async fn performance(&self, session: &str, after: Option<&Cursor>, limit: i64) -> Result<(LapSummary, Vec<Row>, Option<Cursor>)> {
        self.within(self.answer_within, async |c| {
            let tx = c.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
            let st = tx.prepare_cached(&self.sql.performance_summary).await?;
            let s = tx.query_one(&st, &[&session]).await?;
            let st = tx.prepare_cached(&self.sql.best_lap).await?;
            let best = tx.query_opt(&st, &[&session]).await?;
            let rows = lap_page(&tx, &self.sql.performance, session, after, limit).await?;
            tx.commit().await?;
            let summary =
                LapSummary { laps: s.get("laps"), complete_laps: s.get("complete_laps"), mean: s.get("mean"), spread: s.get("spread"), best };
            let (rows, next) = page(&rows, limit, "window_anchor", "row_id");
            Ok((summary, rows.to_vec(), next))
        })
        .await
    }

    /// The best complete lap of each player on a track (and car), best first. Laps are read in
    /// ranking order and each player's first one kept: a short leaderboard reads a few dozen
    /// index entries whatever the number of runs. If players with many runs each fill a read
    /// (one player's hundred fast runs), the next one, four times larger, goes on from where it
    /// stopped and leaves the players already ranked out in the database: no run is sent twice.
    pub async fn leaderboard(&self, track: &str, car: Option<&str>, limit: i64) -> Result<Vec<Value>> {
        self.within(self.answer_within, async |c| {
            let st = c.prepare_cached(if car.is_some() { &self.sql.leaderboard_car } else { &self.sql.leaderboard }).await?;
            let board = Board { st: &st, track, car, limit };
            if let Some(entries) = board.rank(&*c, true).await? {
                return Ok(entries);
            }
            // Reads that go on from where the last one stopped must see one state of the table: a
            // run whose best lap improved in between could have moved before where the next starts.
            let tx = c.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
            let entries = board.rank(&tx, false).await?.unwrap_or_default();
            tx.commit().await?;
            Ok(entries)
        })
        .await
    }
}

/// A page of a session's lap rows by `sql` ([`LAP_PAGE`]), one more than `limit`.
async fn lap_page(c: &impl GenericClient, sql: &str, session: &str, after: Option<&Cursor>, limit: i64) -> Result<Vec<Row>> {
    let st = c.prepare_cached(sql).await?;
    let (at, id) = (after.map(|a| a.at), after.map(|a| a.id.as_str()));
    Ok(c.query(&st, &[&session, &at, &id, &(limit + 1)]).await?)
}

/// The page of `rows` (read with one more than `limit`) and, when there are more, the cursor
/// after its last row: its `at` and `id` columns.
fn page<'r>(rows: &'r [Row], limit: i64, at: &str, id: &str) -> (&'r [Row], Option<Cursor>) {
    let shown = &rows[..rows.len().min(limit as usize)];
    let next = match (rows.len() > shown.len(), shown.last()) {
        (true, Some(last)) => Some(Cursor { at: last.get(at), id: last.get(id) }),
        _ => None,
    };
    (shown, next)
}

/// One leaderboard's reads of runs in ranking order (`Sql::leaderboard`).
struct Board<'a> {
    st: &'a Statement,
    track: &'a str,
    car: Option<&'a str>,
    limit: i64,
}

impl Board<'_> {
    /// The board, or (`first_read_only`) `None` when the first read leaves players to find.
    async fn rank(&self, c: &impl GenericClient, first_read_only: bool) -> Result<Option<Vec<Value>>> {
        let mut entries = Vec::new();
        let mut ranked = Ranked::default();
        // Where the last read stopped: lap time, start, player, session (the ranking's order).
        let mut after: (f64, Option<SystemTime>, String, String) = (f64::NEG_INFINITY, None, String::new(), String::new());
        let mut want = self.limit.saturating_mul(4).max(64);
        loop {
            let (best, started, player, session) = &after;
            let (st, track, names) = (self.st, &self.track, &ranked.names);
            let rows = match self.car {
                None => c.query(st, &[track, &want, best, started, player, session, names]).await?,
                Some(car) => c.query(st, &[track, &want, best, started, player, session, names, &car]).await?,
            };
            ranked.add(&rows, self.limit, &mut entries);
            let Some(last) = rows.last() else { break };
            if entries.len() as i64 >= self.limit || (rows.len() as i64) < want {
                break; // enough players, or every lap of the track read
            }
            if first_read_only {
                return Ok(None);
            }
            after = (last.get("best_lap_s"), Some(last.get("started_at")), last.get("player"), last.get("session_id"));
            want = want.saturating_mul(4);
        }
        Ok(Some(entries))
    }
}

/// The players ranked so far: their names as the reads' parameter, and a set to look them up.
#[derive(Default)]
struct Ranked {
    names: Vec<String>,
    seen: std::collections::HashSet<String>,
}

impl Ranked {
    /// Ranks the players of `rows` (runs in ranking order) not ranked yet, at their first run,
    /// until `limit` are.
    fn add(&mut self, rows: &[Row], limit: i64, entries: &mut Vec<Value>) {
        for r in rows {
            if entries.len() as i64 >= limit {
                return;
            }
            let player: String = r.get("player");
            if !self.seen.insert(player.clone()) {
                continue;
            }
            entries.push(json!({
                "rank": entries.len() + 1,
                "player": &player,
                "best_lap_s": r.get::<_, f64>("best_lap_s"),
                "session_id": r.get::<_, String>("session_id"),
                "car": r.get::<_, String>("car"),
                "set_at": time_json(r.get("started_at")),
            }));
            self.names.push(player);
        }
    }
}

/// A row as JSON, column by column by type (the types the sink creates).
pub fn row_json(r: &Row) -> Value {
    let mut out = Map::new();
    for (i, c) in r.columns().iter().enumerate() {
        let v = match *c.type_() {
            Type::TEXT | Type::VARCHAR => r.get::<_, Option<String>>(i).map(Value::from),
            Type::INT8 => r.get::<_, Option<i64>>(i).map(Value::from),
            Type::INT4 => r.get::<_, Option<i32>>(i).map(Value::from),
            Type::FLOAT8 => r.get::<_, Option<f64>>(i).map(Value::from),
            Type::BOOL => r.get::<_, Option<bool>>(i).map(Value::from),
            Type::TIMESTAMPTZ => r.get::<_, Option<SystemTime>>(i).map(time_json),
            _ => Some(Value::from(format!("<{}>", c.type_().name()))),
        };
        out.insert(c.name().to_string(), v.unwrap_or(Value::Null));
    }
    Value::Object(out)
}

/// RFC 3339, microseconds, UTC: the format of the rows everywhere else in Pitgun.
pub fn time_json(t: SystemTime) -> Value {
    Value::from(humantime::format_rfc3339_micros(t).to_string())
}

/// The `statement_timeout` a connection's `options` set (`-c statement_timeout=5000`, `=5s`,
/// `=1min`; PostgreSQL's default unit is ms), if it reads as one.
fn statement_timeout(options: &str) -> Option<Duration> {
    let value = options.split("statement_timeout=").nth(1)?.split_whitespace().next()?;
    let digits = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let n: u64 = value[..digits].parse().ok()?;
    let ms = match &value[digits..] {
        "" | "ms" => 1,
        "s" => 1_000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(ms)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_timeout_in_the_urls_options_is_read_in_its_units() {
        let read = |o: &str| statement_timeout(o);
        assert_eq!(read("-c statement_timeout=60000"), Some(Duration::from_secs(60)));
        assert_eq!(read("-c search_path=x -c statement_timeout=2min"), Some(Duration::from_secs(120)));
        assert_eq!(read("-c statement_timeout=500ms -c x=y"), Some(Duration::from_millis(500)));
        assert_eq!(read("-c statement_timeout=0"), Some(Duration::ZERO));
        assert_eq!(read("-c statement_timeout=5parsecs"), None);
    }
}
