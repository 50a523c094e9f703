//! The QuestDB target: one table per manifest version, written with the official client
//! (`questdb-rs`) as InfluxDB Line Protocol over HTTP.
//!
//! - **Tables are made beforehand** through QuestDB's SQL endpoint (`/exec`), never by ILP's
//!   auto-create, so types follow the contract ([`crate::table`]'s mapping) and the table is a
//!   WAL table with `DEDUP UPSERT KEYS(window_anchor, <key columns>, row_id)`. A table that
//!   exists with other column types is refused when the sink starts.
//! - **The designated timestamp is `window_anchor`**, the window's start as its row was first
//!   emitted. It equals `window_start` except for a segment (lap) or global window whose start
//!   a late event moved after the row was emitted; with `window_start` there, the re-emitted
//!   row would have other dedup keys and QuestDB would keep both versions.
//! - **One table per request**, flushed as a transaction: a batch of up to 20,000 rows a table
//!   lands whole or not at all; a larger one is sent as several (`ROWS_PER_REQUEST`), and a
//!   retry sends every part again.
//!   A `400` names the line that QuestDB refused; that row becomes a dead letter carrying the
//!   server's message and the rest is sent again. Anything else (5xx, a dropped connection,
//!   QuestDB down) is retried by the sink's loop with backoff; the client's own retry is off
//!   (`retry_timeout=0`) so that every retry is seen, counted and bounded by `--max-backoff`.
//!   A request that was applied but whose answer was lost is simply sent again: the dedup keys
//!   make the second copy replace the first.
//! - The client is blocking (`ureq`), so every call runs on tokio's blocking pool.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
/// The client's ILP buffer and protocol versions (for benchmarks and tools that encode rows).
pub use ::questdb::ingress::{Buffer, ProtocolVersion};
use ::questdb::ingress::{ColumnName, Sender, TableName, TimestampMicros};
use ::questdb::ErrorCode;
use futures_util::future::BoxFuture;
use pitgun_contracts::analysis::{AnalysisContract, ColumnRole};
use pitgun_contracts::manifest::SinkKind;
use tracing::{info, warn};

use crate::table::{Cell, PgType, TableRow, TableShape};
use crate::target::{Refused, Target, WriteError};

/// The column QuestDB's designated timestamp is taken from.
pub const DESIGNATED: &str = "window_anchor";

/// A QuestDB column type the sink creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuestType {
    /// Key strings (few distinct values, indexed by QuestDB).
    Symbol,
    /// Other strings.
    Varchar,
    /// 64-bit integer.
    Long,
    /// 64-bit float.
    Double,
    /// Boolean.
    Boolean,
    /// Microsecond timestamp.
    Timestamp,
}

impl QuestType {
    /// Its SQL name, as `SHOW COLUMNS` also reports it.
    pub fn sql(self) -> &'static str {
        match self {
            QuestType::Symbol => "SYMBOL",
            QuestType::Varchar => "VARCHAR",
            QuestType::Long => "LONG",
            QuestType::Double => "DOUBLE",
            QuestType::Boolean => "BOOLEAN",
            QuestType::Timestamp => "TIMESTAMP",
        }
    }
}

/// One manifest version's QuestDB table.
#[derive(Debug, Clone)]
pub struct QuestTable {
    /// Conversion of rows into cells (the contract's columns, as for PostgreSQL).
    pub shape: TableShape,
    /// QuestDB type per column of `shape`.
    pub types: Vec<QuestType>,
    /// Symbol columns first (ILP wants them before the other fields), by index into `shape`.
    symbols: Vec<usize>,
    /// The other columns except the designated timestamp.
    fields: Vec<usize>,
    /// Index of `window_anchor`.
    designated: usize,
    /// Dedup key columns: the designated timestamp, the contract's key columns, `row_id`.
    pub dedup_keys: Vec<String>,
}

impl QuestTable {
    /// The table of a contract: key columns become symbols, `row_id` a varchar.
    pub fn from_contract(contract: &AnalysisContract, table: &str) -> Result<QuestTable> {
        let shape = TableShape::from_contract(contract, table)?;
        let mut types = Vec::new();
        for (c, col) in contract.columns.iter().zip(&shape.columns) {
            types.push(match (col.pg_type, c.role) {
                (PgType::Text, ColumnRole::Key) => QuestType::Symbol,
                (PgType::Text, _) => QuestType::Varchar,
                (PgType::BigInt, _) => QuestType::Long,
                (PgType::Double, _) => QuestType::Double,
                (PgType::Boolean, _) => QuestType::Boolean,
                (PgType::Timestamptz, _) => QuestType::Timestamp,
            });
        }
        let Some(designated) = shape.columns.iter().position(|c| c.name == DESIGNATED) else {
            return Err(Error::Setup(format!(
                "QuestDB table {table:?}: the rows of {} v{} have no {DESIGNATED:?} column (the designated timestamp); \
                 recompile the contract with this version of pitgun",
                contract.manifest, contract.version
            )));
        };
        let symbols: Vec<usize> = (0..types.len()).filter(|&i| types[i] == QuestType::Symbol).collect();
        let fields = (0..types.len()).filter(|&i| types[i] != QuestType::Symbol && i != designated).collect();
        let mut dedup_keys = vec![DESIGNATED.to_string()];
        dedup_keys.extend(symbols.iter().map(|&i| shape.columns[i].name.clone()));
        dedup_keys.push(shape.conflict_key.clone());
        Ok(QuestTable { shape, types, symbols, fields, designated, dedup_keys })
    }

    /// `CREATE TABLE IF NOT EXISTS …` (identifiers were checked when the shape was built).
    pub fn create_sql(&self) -> String {
        let cols: Vec<String> = self.shape.columns.iter().zip(&self.types).map(|(c, t)| format!("\"{}\" {}", c.name, t.sql())).collect();
        let keys: Vec<String> = self.dedup_keys.iter().map(|k| format!("\"{k}\"")).collect();
        format!(
            "CREATE TABLE IF NOT EXISTS \"{}\" ({}) TIMESTAMP(\"{DESIGNATED}\") PARTITION BY DAY WAL DEDUP UPSERT KEYS({})",
            self.shape.table,
            cols.join(", "),
            keys.join(", ")
        )
    }

    /// Appends one row as an ILP line. Null cells are left out (QuestDB stores NULL).
    pub fn encode(&self, buf: &mut Buffer, row: &TableRow) -> ::questdb::Result<()> {
        let name = |i: usize| ColumnName::new_unchecked(&self.shape.columns[i].name);
        buf.table(TableName::new_unchecked(&self.shape.table))?;
        for &i in &self.symbols {
            if let Cell::Text(s) = &row.cells[i] {
                buf.symbol(name(i), s.as_str())?;
            }
        }
        for &i in &self.fields {
            match &row.cells[i] {
                Cell::Null => {}
                Cell::Text(s) => {
                    buf.column_str(name(i), s.as_str())?;
                }
                Cell::Int(v) => {
                    buf.column_i64(name(i), *v)?;
                }
                Cell::Float(v) => {
                    buf.column_f64(name(i), *v)?;
                }
                Cell::Bool(v) => {
                    buf.column_bool(name(i), *v)?;
                }
                Cell::Time(t) => {
                    buf.column_ts(name(i), TimestampMicros::new(micros(*t)))?;
                }
            }
        }
        match &row.cells[self.designated] {
            Cell::Time(t) => buf.at(TimestampMicros::new(micros(*t))),
            _ => Err(::questdb::Error::new(ErrorCode::InvalidTimestamp, format!("{DESIGNATED} is missing"))),
        }
    }
}

fn micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

/// A configuration string as parsed, for messages: its keys in order, each secret (`password`,
/// `token` and the like) as `***`.
fn without_secrets(parsed: &questdb_confstr::ConfStr) -> String {
    let mut params: Vec<_> = parsed.params().iter().collect();
    params.sort();
    let mut shown = format!("{}::", parsed.service());
    for (key, value) in params {
        let value = if key.contains("password") || key.contains("token") { "***".to_string() } else { value.replace(';', ";;") };
        shown.push_str(&format!("{key}={value};"));
    }
    shown
}

/// How long a write given up is waited for: the request under way (the client's own timeout is
/// 10 s plus the request's size at 100 KiB/s).
const GIVE_UP_WAIT: Duration = Duration::from_secs(10);

/// What a write on the blocking pool gives back: the sender, the rows, the result.
type WriteBack = (Option<Sender>, Vec<TableRow>, Result<Refused, WriteError>);

/// A QuestDB server the sink writes tables to.
pub struct QuestTarget {
    /// The client configuration string, with the sink's settings added.
    conf: String,
    sender: Option<Sender>,
    tables: Arc<Vec<QuestTable>>,
    /// The write running on the blocking pool, if any.
    in_flight: Option<tokio::task::JoinHandle<WriteBack>>,
    /// Set when the write in flight is given up: its thread sends no further request.
    give_up: Arc<AtomicBool>,
}

impl QuestTarget {
    /// Creates (or checks) every table over `/exec`, then connects the ILP sender. `conf` is
    /// the client's configuration string (`http::addr=host:9000;`).
    pub async fn open(conf: &str, tables: Vec<QuestTable>) -> Result<QuestTarget> {
        let parsed = questdb_confstr::parse_conf_str(conf)
            .map_err(|e| Error::Setup(format!("QuestDB configuration (not shown: it may hold a secret) does not parse: {e}")))?;
        let shown = without_secrets(&parsed);
        match parsed.service() {
            "http" => {}
            "https" => {
                return Err(Error::Setup(format!(
                    "QuestDB configuration {shown:?}: the sink does not speak TLS to QuestDB yet (https::); give http:: (a TLS proxy \
                     beside the sink can carry it on)"
                )))
            }
            other => {
                return Err(Error::Setup(format!(
                    "QuestDB configuration {shown:?}: the sink writes over http (one transaction per table and batch), not {other}"
                )))
            }
        }
        let Some(addr) = parsed.get("addr") else { return Err(Error::Setup(format!("QuestDB configuration {shown:?} has no addr=host:port"))) };
        let exec = Exec {
            url: format!("http://{addr}/exec"),
            user: parsed.get("username").map(|u| (u.to_string(), parsed.get("password").unwrap_or("").to_string())),
            token: parsed.get("token").map(str::to_string),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(Error::questdb("cannot set up the HTTP client"))?,
        };
        for t in &tables {
            exec.ensure_table(t).await?;
        }
        let mut conf = conf.trim_end().to_string();
        if !conf.ends_with(';') {
            conf.push(';');
        }
        if parsed.get("retry_timeout").is_none() {
            conf.push_str("retry_timeout=0;");
        }
        let mut target = QuestTarget { conf, sender: None, tables: Arc::new(tables), in_flight: None, give_up: Default::default() };
        let conf = target.conf.clone();
        target.sender =
            Some(tokio::task::spawn_blocking(move || Sender::from_conf(&conf)).await?.map_err(Error::questdb(format!("cannot connect to {addr}")))?);
        Ok(target)
    }

    /// The shape of table `i`.
    pub fn table(&self, i: usize) -> &QuestTable {
        &self.tables[i]
    }

    /// Writes `rows` to table `i` in one transaction, on the blocking pool (the rows go there
    /// and come back). Rows QuestDB refused are returned with its message; anything else is
    /// `Retry`.
    async fn send(&mut self, i: usize, rows: Vec<TableRow>) -> (Vec<TableRow>, Result<Refused, WriteError>) {
        // A write dropped without `abandon` (none is) would leave its thread running.
        if self.in_flight.is_some() {
            self.abandon().await;
        }
        // A flag of this write's own: one given up before does not stop it.
        self.give_up = Arc::default();
        let (conf, tables, mut sender, give_up) = (self.conf.clone(), self.tables.clone(), self.sender.take(), self.give_up.clone());
        let task = tokio::task::spawn_blocking(move || {
            let result = write_blocking(&conf, &mut sender, &tables[i], &rows, &give_up);
            (sender, rows, result)
        });
        // Kept here while it runs, so a write given up can still be waited for.
        let task = self.in_flight.insert(task);
        let (sender, rows, result) = task.await.expect("the QuestDB write task does not panic");
        self.in_flight = None;
        self.sender = sender;
        (rows, result)
    }
}

impl Target for QuestTarget {
    fn kind(&self) -> &'static str {
        SinkKind::Questdb.name()
    }

    fn write<'a>(&'a mut self, table: usize, rows: &'a mut Vec<TableRow>) -> BoxFuture<'a, Result<Refused, WriteError>> {
        Box::pin(async move {
            let (back, result) = self.send(table, std::mem::take(rows)).await;
            *rows = back;
            result
        })
    }

    fn abandon(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // The write runs on a blocking thread, which dropping its future does not stop: it
            // would go on sending the batch's requests after the partitions' next owner writes
            // theirs, and QuestDB keeps whichever lands last. It sends no further request, and
            // the one under way (bounded by the client's own timeout) is waited for.
            self.give_up.store(true, Ordering::Relaxed);
            if let Some(task) = self.in_flight.take() {
                // Bounded, so the stop stays within the pod's grace period: a request larger
                // than the client's 100 KiB/s minimum rate allows in this time may still land.
                if tokio::time::timeout(GIVE_UP_WAIT, task).await.is_err() {
                    warn!(
                        "a QuestDB request given up was still under way after {GIVE_UP_WAIT:?}: it may land after the partitions' next owner writes"
                    );
                }
            }
        })
    }
}

/// Rows per request at most: a request stays well under the client's 100 MiB buffer limit
/// (a lap row is about 600 bytes of ILP). A larger batch is sent as several transactions, which
/// the dedup keys make safe to repeat.
const ROWS_PER_REQUEST: usize = 20_000;

fn write_blocking(
    conf: &str,
    sender: &mut Option<Sender>,
    table: &QuestTable,
    rows: &[TableRow],
    give_up: &AtomicBool,
) -> Result<Refused, WriteError> {
    let mut refused: Refused = Vec::new();
    for start in (0..rows.len()).step_by(ROWS_PER_REQUEST) {
        let end = (start + ROWS_PER_REQUEST).min(rows.len());
        refused.extend(write_request(conf, sender, table, rows, start..end, give_up)?);
    }
    Ok(refused)
}

/// Rows `range` of `rows` as one request (one transaction); refused rows by index in `rows`.
fn write_request(
    conf: &str,
    sender: &mut Option<Sender>,
    table: &QuestTable,
    rows: &[TableRow],
    range: std::ops::Range<usize>,
    give_up: &AtomicBool,
) -> Result<Refused, WriteError> {
    if sender.is_none() {
        *sender = Some(Sender::from_conf(conf).map_err(|e| WriteError::Retry(format!("QuestDB: {}", e.msg())))?);
    }
    let s = sender.as_mut().expect("connected");
    let mut refused: Refused = Vec::new();
    // Rows of this request already refused (by index from `range.start`).
    let mut out = vec![false; range.len()];
    loop {
        let mut buf = s.new_buffer();
        // `lines[n]`: the row on ILP line n + 1 of this request.
        let mut lines = Vec::with_capacity(range.len());
        for (at, row) in rows.iter().enumerate().take(range.end).skip(range.start) {
            if out[at - range.start] {
                continue;
            }
            buf.set_marker().map_err(|e| WriteError::Retry(e.msg().to_string()))?;
            match table.encode(&mut buf, row) {
                Ok(()) => lines.push(at),
                Err(e) => {
                    buf.rewind_to_marker().map_err(|e| WriteError::Retry(e.msg().to_string()))?;
                    out[at - range.start] = true;
                    refused.push((at, format!("cannot encode for QuestDB: {}", e.msg())));
                }
            }
        }
        if lines.is_empty() {
            break;
        }
        // Every request of a write given up (the next chunk, the resend without a refused row)
        // stays unsent.
        if give_up.load(Ordering::Relaxed) {
            return Err(WriteError::Retry("QuestDB: the write was given up (the sink is stopping)".into()));
        }
        match s.flush_and_keep_with_flags(&buf, true) {
            Ok(()) => break,
            Err(e) => match refused_line(&e).filter(|n| (1..=lines.len()).contains(n)) {
                // The server named the row it refused; the request was rolled back as a whole.
                Some(n) => {
                    out[lines[n - 1] - range.start] = true;
                    refused.push((lines[n - 1], e.msg().to_string()));
                }
                None => {
                    *sender = None; // a fresh client next time (it probes /settings again)
                    return Err(WriteError::Retry(format!("QuestDB: {}", e.msg())));
                }
            },
        }
    }
    refused.sort_unstable_by_key(|(at, _)| *at);
    Ok(refused)
}

/// The line QuestDB refused as invalid, from the client's rendering of the server's JSON error
/// (`… [id: …, code: invalid, line: 3]`).
fn refused_line(e: &::questdb::Error) -> Option<usize> {
    if e.code() != ErrorCode::ServerFlushError {
        return None;
    }
    let msg = e.msg();
    // QuestDB names a line in other errors too (a 500 for a full disk); only `invalid` blames
    // the data.
    if !msg.contains("code: invalid") {
        return None;
    }
    let at = msg.rfind("line: ")? + "line: ".len();
    let digits: String = msg[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// QuestDB's SQL endpoint, for the tables.
struct Exec {
    url: String,
    user: Option<(String, String)>,
    token: Option<String>,
    http: reqwest::Client,
}

impl Exec {
    async fn query(&self, sql: &str) -> Result<serde_json::Value> {
        let mut req = self.http.get(&self.url).query(&[("query", sql)]);
        if let Some((u, p)) = &self.user {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(Error::questdb(format!("{}: no answer", self.url)))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.map_err(Error::questdb(format!("{}: answer is not JSON ({status})", self.url)))?;
        if !status.is_success() || body.get("error").is_some() {
            let message = body.get("error").and_then(|e| e.as_str()).map_or_else(|| body.to_string(), str::to_string);
            return Err(Error::QuestDbRefused { sql: sql.to_string(), message });
        }
        Ok(body)
    }

    /// Creates the table, then checks that the one there has our column types.
    async fn ensure_table(&self, t: &QuestTable) -> Result<()> {
        self.query(&t.create_sql()).await?;
        let shown = self.query(&format!("SHOW COLUMNS FROM \"{}\"", t.shape.table)).await?;
        let names: Vec<&str> = shown["columns"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
        let col = |name: &str| names.iter().position(|n| *n == name);
        let (Some(ci), Some(ti), Some(di), Some(ui)) = (col("column"), col("type"), col("designated"), col("upsertKey")) else {
            return Err(Error::TableMismatch(format!("QuestDB: unexpected answer to SHOW COLUMNS FROM {}: {shown}", t.shape.table)));
        };
        let rows = shown["dataset"].as_array().cloned().unwrap_or_default();
        let have: Vec<(String, String)> = rows.iter().filter_map(|r| Some((r[ci].as_str()?.to_string(), r[ti].as_str()?.to_uppercase()))).collect();
        // Without our designated timestamp and dedup keys, re-sent rows would be doubled.
        let flagged = |i: usize| -> Vec<&str> { rows.iter().filter(|r| r[i].as_bool() == Some(true)).filter_map(|r| r[ci].as_str()).collect() };
        let (designated, mut keys) = (flagged(di), flagged(ui));
        let mut want: Vec<&str> = t.dedup_keys.iter().map(String::as_str).collect();
        keys.sort_unstable();
        want.sort_unstable();
        if designated != [DESIGNATED] || keys != want {
            return Err(Error::TableMismatch(format!(
                "QuestDB table {:?} exists with designated timestamp {designated:?} and dedup keys {keys:?}; the sink needs {DESIGNATED:?} and {want:?} \
                 (re-sent rows would be doubled otherwise) — give the manifest's sink another table name",
                t.shape.table
            )));
        }
        for (c, want) in t.shape.columns.iter().zip(&t.types) {
            match have.iter().find(|(n, _)| *n == c.name) {
                Some((_, ty)) if ty == want.sql() => {}
                Some((_, ty)) => {
                    return Err(Error::TableMismatch(format!(
                        "QuestDB table {:?} has column {:?} as {ty}, the contract needs {}; the sink never alters a table — give the changed manifest a new version and its own table",
                        t.shape.table,
                        c.name,
                        want.sql()
                    )))
                }
                None => {
                    return Err(Error::TableMismatch(format!(
                        "QuestDB table {:?} has no column {:?}; give the changed manifest a new version and its own table",
                        t.shape.table, c.name
                    )))
                }
            }
        }
        info!(table = %t.shape.table, "QuestDB table ready");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract() -> AnalysisContract {
        crate::shipped_contract("lap-performance.v1")
    }

    /// A configuration the sink refuses is named without its secrets: the whole string was
    /// printed, token and password included.
    #[tokio::test]
    async fn a_refused_configuration_is_named_without_its_secrets() {
        for conf in [
            "tcp::addr=127.0.0.1:9009;username=u;token=SECRETTOKEN;",
            "http::username=u;password=SECRETPASS;",
            "http::addr=127.0.0.1:9000;password=SECRETPASS;;more;bogus",
            "http:addr=127.0.0.1:9000;token=SECRETTOKEN;",
        ] {
            let refused = QuestTarget::open(conf, Vec::new()).await.err().expect("refused").to_string();
            assert!(!refused.contains("SECRET"), "{conf}: {refused}");
            assert!(refused.contains("QuestDB configuration"), "{conf}: {refused}");
        }
        let refused = QuestTarget::open("tcp::addr=127.0.0.1:9009;token=SECRETTOKEN;", Vec::new()).await.err().unwrap().to_string();
        assert!(refused.contains("tcp::addr=127.0.0.1:9009;token=***;"), "{refused}");
        // https is refused for what it is (no TLS here), not as a transport without transactions.
        let refused = QuestTarget::open("https::addr=127.0.0.1:9000;token=SECRETTOKEN;", Vec::new()).await.err().unwrap().to_string();
        assert!(refused.contains("does not speak TLS") && !refused.contains("SECRET"), "{refused}");
    }

    #[test]
    fn the_table_is_a_wal_table_deduplicated_on_the_anchor_and_keys() {
        let t = QuestTable::from_contract(&contract(), "lap_performance_v1").unwrap();
        let sql = t.create_sql();
        assert!(
            sql.starts_with("CREATE TABLE IF NOT EXISTS \"lap_performance_v1\" (\"row_id\" VARCHAR, \"session_id\" SYMBOL, \"player\" SYMBOL, "),
            "{sql}"
        );
        assert!(sql.contains("\"lap_time\" DOUBLE") && sql.contains("\"lap\" LONG") && sql.contains("\"complete\" BOOLEAN"), "{sql}");
        assert!(
            sql.ends_with(") TIMESTAMP(\"window_anchor\") PARTITION BY DAY WAL DEDUP UPSERT KEYS(\"window_anchor\", \"session_id\", \"player\", \"track\", \"car\", \"row_id\")"),
            "{sql}"
        );
    }
}
