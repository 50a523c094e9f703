//! An in-process stand-in for QuestDB's HTTP interface, for the sink's tests. **A mock**: no
//! QuestDB server can be installed on the machines these tests run on. It implements the parts
//! of QuestDB's documented contract the sink relies on, and nothing it does not:
//!
//! - `GET /settings`: the server's ILP versions (`line.proto.support.versions: [1, 2]`, as
//!   QuestDB 8.3+ answers), which the official client reads before it sends.
//! - `GET /exec?query=…`: `CREATE TABLE IF NOT EXISTS … TIMESTAMP(c) … DEDUP UPSERT KEYS(…)`
//!   (the statement the sink sends) and `SHOW COLUMNS FROM t`; anything else is a 400 with
//!   QuestDB's `{"query", "error", "position"}` body.
//! - `POST /write`: ILP v1/v2 (binary doubles) parsed line by line; the request is applied
//!   whole (a transaction) and answered `204`, or refused whole with `400` and QuestDB's JSON
//!   error body naming the line (`{"code": "invalid", "message", "line", "errorId"}`) — for a
//!   type that does not match the table, an unknown table or column, or a symbol value the
//!   test asked to refuse.
//! - Faults on demand: `503` for a while, one `500`, and a request applied and then answered by
//!   a dropped connection (the client cannot know it landed, so it sends it again).
//! - **DEDUP UPSERT KEYS** as QuestDB documents it: a row whose designated timestamp and key
//!   columns equal an existing row's replaces that row; the test reads the table back.

#![allow(dead_code)] // the sink tests and the CLI tests each use part of it

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::{json, Map, Value};

/// A fault the next `POST /write` requests meet, in order.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer with this status (500, 503…) and QuestDB's JSON error body; apply nothing.
    Status(u16),
    /// Apply the request, then close the connection without an answer.
    ApplyThenDrop,
    /// Hold the request this long, then apply and answer it (a slow write, landing late).
    Slow(Duration),
}

#[derive(Default)]
struct Table {
    columns: Vec<(String, String)>,
    designated: String,
    keys: Vec<String>,
    rows: BTreeMap<Vec<String>, Map<String, Value>>,
}

#[derive(Default)]
struct State {
    tables: HashMap<String, Table>,
    faults: VecDeque<Fault>,
    unavailable_until: Option<Instant>,
    refuse_symbol: Option<String>,
    /// Canonical text of every line in requests answered 204.
    accepted_lines: Vec<String>,
    /// `POST /write` requests seen, and how many were applied.
    writes: usize,
    applied: usize,
    errors_sent: BTreeMap<u16, usize>,
}

/// The running server; stops with the test process.
#[derive(Clone)]
pub struct QuestDbStandIn {
    pub addr: String,
    state: Arc<Mutex<State>>,
}

impl QuestDbStandIn {
    pub fn start() -> QuestDbStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = QuestDbStandIn { addr, state: Arc::default() };
        let s = server.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let s = s.clone();
                std::thread::spawn(move || s.serve(conn));
            }
        });
        server
    }

    /// The client configuration string for this server.
    pub fn conf(&self) -> String {
        format!("http::addr={};", self.addr)
    }

    pub fn push_fault(&self, f: Fault) {
        self.state.lock().unwrap().faults.push_back(f);
    }

    /// `503` to every write for `d` from now.
    pub fn unavailable_for(&self, d: Duration) {
        self.state.lock().unwrap().unavailable_until = Some(Instant::now() + d);
    }

    /// Refuse (400) any line carrying this symbol value.
    pub fn refuse_symbol(&self, v: &str) {
        self.state.lock().unwrap().refuse_symbol = Some(v.to_string());
    }

    /// The table's rows as JSON objects, timestamps as RFC 3339 µs (the engine's format).
    pub fn rows(&self, table: &str) -> Vec<Map<String, Value>> {
        let st = self.state.lock().unwrap();
        st.tables.get(table).map(|t| t.rows.values().cloned().collect()).unwrap_or_default()
    }

    pub fn accepted_lines(&self) -> Vec<String> {
        self.state.lock().unwrap().accepted_lines.clone()
    }

    /// Faults pushed and not yet served.
    pub fn pending_faults(&self) -> usize {
        self.state.lock().unwrap().faults.len()
    }

    /// (write requests seen, applied, error statuses sent).
    pub fn counts(&self) -> (usize, usize, BTreeMap<u16, usize>) {
        let st = self.state.lock().unwrap();
        (st.writes, st.applied, st.errors_sent.clone())
    }

    fn serve(&self, conn: TcpStream) {
        conn.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut conn = conn;
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut length = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let mut parts = request_line.split_whitespace();
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let answer = match (method, path) {
                ("GET", "/settings") => Some((200, json!({"config": {"release.type": "OSS", "release.version": "test", "line.proto.support.versions": [1, 2], "ilp.proto.transports": ["http"], "cairo.max.file.name.length": 127}, "preferences.version": 0, "preferences": {}}).to_string())),
                ("GET", "/exec") => Some(self.exec(query)),
                ("POST", "/write") | ("POST", "/api/v2/write") => self.write(&body),
                _ => Some((404, json!({"error": "not found"}).to_string())),
            };
            let Some((status, body)) = answer else {
                let _ = conn.shutdown(std::net::Shutdown::Both);
                return;
            };
            let reason = match status {
                200 => "OK",
                204 => "No Content",
                400 => "Bad Request",
                404 => "Not Found",
                500 => "Internal Server Error",
                _ => "Service Unavailable",
            };
            let head = if status == 204 {
                "HTTP/1.1 204 No Content\r\n\r\n".to_string()
            } else {
                format!("HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())
            };
            let mut out = head.into_bytes();
            if status != 204 {
                out.extend_from_slice(body.as_bytes());
            }
            if conn.write_all(&out).is_err() {
                return;
            }
        }
    }

    fn exec(&self, query: &str) -> (u16, String) {
        let sql: String =
            query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == "query").map(|(_, v)| url_decode(v)).unwrap_or_default();
        let bad = |why: &str| (400, json!({"query": sql, "error": why, "position": 0}).to_string());
        let mut st = self.state.lock().unwrap();
        if let Some(rest) = sql.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
            let Some((name, rest)) = rest.split_once(" (") else { return bad("expected a column list") };
            let Some((cols, tail)) = rest.split_once(") TIMESTAMP(") else { return bad("expected TIMESTAMP(…)") };
            if !tail.contains(" WAL ") {
                return bad("the test server models WAL tables only");
            }
            let Some((designated, tail)) = tail.split_once(')') else { return bad("TIMESTAMP(") };
            let Some(keys) = tail.split_once("DEDUP UPSERT KEYS(").map(|(_, k)| k.trim_end_matches(')')) else {
                return bad("expected DEDUP UPSERT KEYS");
            };
            let unquote = |s: &str| s.trim().trim_matches('"').to_string();
            let columns: Vec<(String, String)> = cols
                .split(", ")
                .map(|c| {
                    let (n, t) = c.rsplit_once(' ').unwrap();
                    (unquote(n), t.to_string())
                })
                .collect();
            let table = Table { columns, designated: unquote(designated), keys: keys.split(',').map(unquote).collect(), rows: BTreeMap::new() };
            if !table.keys.contains(&table.designated) {
                return bad("deduplicate key list must include dedicated timestamp column");
            }
            st.tables.entry(unquote(name)).or_insert(table);
            return (200, json!({"ddl": "OK"}).to_string());
        }
        if let Some(name) = sql.strip_prefix("SHOW COLUMNS FROM ") {
            let Some(t) = st.tables.get(name.trim_matches('"')) else { return bad(&format!("table does not exist [table={name}]")) };
            let dataset: Vec<Value> = t
                .columns
                .iter()
                .map(|(n, ty)| json!([n, ty, false, 0, ty == "SYMBOL", 256, false, *n == t.designated, t.keys.contains(n)]))
                .collect();
            let columns =
                ["column", "type", "indexed", "indexBlockCapacity", "symbolCached", "symbolCapacity", "symbolTableSize", "designated", "upsertKey"];
            let columns: Vec<Value> = columns.iter().map(|c| json!({"name": c, "type": "STRING"})).collect();
            return (200, json!({"query": sql, "columns": columns, "timestamp": -1, "dataset": dataset, "count": t.columns.len()}).to_string());
        }
        bad("the test server answers CREATE TABLE and SHOW COLUMNS only")
    }

    /// `None`: drop the connection without an answer.
    fn write(&self, body: &[u8]) -> Option<(u16, String)> {
        let slow = {
            let mut st = self.state.lock().unwrap();
            match st.faults.front() {
                Some(Fault::Slow(d)) => {
                    let d = *d;
                    st.faults.pop_front();
                    st.writes += 1;
                    Some(d)
                }
                _ => None,
            }
        };
        // Other connections are served meanwhile (the lock is not held).
        if let Some(d) = slow {
            std::thread::sleep(d);
        }
        let mut st = self.state.lock().unwrap();
        if slow.is_none() {
            st.writes += 1;
        }
        let error = |status: u16, code: &str, message: String, line: Option<usize>| {
            let mut e = json!({"code": code, "message": message, "errorId": format!("test-{status}")});
            if let Some(l) = line {
                e["line"] = json!(l);
            }
            (status, e.to_string())
        };
        if st.unavailable_until.is_some_and(|t| Instant::now() < t) {
            *st.errors_sent.entry(503).or_default() += 1;
            return Some(error(503, "service unavailable", "test server: unavailable for a while".into(), None));
        }
        let fault = st.faults.pop_front();
        if let Some(Fault::Status(s)) = fault {
            *st.errors_sent.entry(s).or_default() += 1;
            // QuestDB names a line in some server errors too (a write failing on a full disk).
            return Some(error(s, "internal error", format!("test server: fault {s}"), Some(1)));
        }
        // Parse and check every line before applying any: one request, one transaction.
        let mut parsed = Vec::new();
        let mut at = 0;
        let mut line_no = 0;
        while at < body.len() {
            line_no += 1;
            let refused = |st: &mut State, why: String| {
                *st.errors_sent.entry(400).or_default() += 1;
                Some(error(
                    400,
                    "invalid",
                    format!("failed to parse line protocol:errors encountered on line(s):\nerror in line {line_no}: {why}"),
                    Some(line_no),
                ))
            };
            let line = match parse_line(body, &mut at) {
                Ok(l) => l,
                Err(why) => return refused(&mut st, why),
            };
            if let Err(why) = check_line(&st, &line) {
                return refused(&mut st, why);
            }
            parsed.push(line);
        }
        for line in &parsed {
            let t = st.tables.get_mut(&line.table).unwrap();
            // A column the line leaves out is NULL in that row.
            let mut row: Map<String, Value> = t.columns.iter().map(|(n, _)| (n.clone(), Value::Null)).collect();
            for (name, v) in &line.values {
                row.insert(name.clone(), v.json());
            }
            row.insert(t.designated.clone(), Ilp::Micros(line.at.unwrap()).json());
            let key: Vec<String> = t.keys.iter().map(|k| row.get(k).map(Value::to_string).unwrap_or_default()).collect();
            t.rows.insert(key, row);
        }
        st.applied += 1;
        match fault {
            Some(Fault::ApplyThenDrop) => None,
            _ => {
                let lines = parsed.into_iter().map(|l| l.canonical);
                st.accepted_lines.extend(lines);
                Some((204, String::new()))
            }
        }
    }
}

/// Whether QuestDB would take the line: its table and columns exist with its types.
fn check_line(st: &State, line: &Line) -> Result<(), String> {
    let Some(t) = st.tables.get(&line.table) else { return Err(format!("table does not exist: {}", line.table)) };
    if let Some(v) = &st.refuse_symbol {
        if line.values.iter().any(|(_, x)| matches!(x, Ilp::Symbol(s) if s == v)) {
            return Err(format!("table: {}, symbol value {v:?} refused by the test", line.table));
        }
    }
    for (name, v) in &line.values {
        let Some((_, ty)) = t.columns.iter().find(|(n, _)| n == name) else {
            return Err(format!("table: {}, column: {name}; unknown column (tables are created by the sink)", line.table));
        };
        let fits = matches!(
            (v, ty.as_str()),
            (Ilp::Symbol(_), "SYMBOL")
                | (Ilp::Str(_), "VARCHAR")
                | (Ilp::Long(_), "LONG")
                | (Ilp::Double(_), "DOUBLE")
                | (Ilp::Bool(_), "BOOLEAN")
                | (Ilp::Micros(_), "TIMESTAMP")
        );
        if !fits {
            return Err(format!("table: {}, column: {name}; cast error from protocol type {v:?} to column type {ty}", line.table));
        }
    }
    if line.at.is_none() {
        return Err("the sink always sends the designated timestamp".into());
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
enum Ilp {
    Symbol(String),
    Str(String),
    Long(i64),
    Double(f64),
    Bool(bool),
    Micros(i64),
}

impl Ilp {
    fn json(&self) -> Value {
        match self {
            Ilp::Symbol(s) | Ilp::Str(s) => json!(s),
            Ilp::Long(v) => json!(v),
            Ilp::Double(v) => json!(v),
            Ilp::Bool(v) => json!(v),
            Ilp::Micros(us) => {
                let t = UNIX_EPOCH + Duration::from_micros(*us as u64);
                json!(humantime::format_rfc3339_micros(t).to_string())
            }
        }
    }
}

struct Line {
    table: String,
    values: Vec<(String, Ilp)>,
    at: Option<i64>,
    /// The line as sent, with binary doubles written `name==<value>` (for the golden file).
    canonical: String,
}

/// Reads a name or symbol value up to an unescaped delimiter.
fn name(b: &[u8], at: &mut usize, stops: &[u8]) -> Result<String, String> {
    let mut out = Vec::new();
    while *at < b.len() && !stops.contains(&b[*at]) {
        if b[*at] == b'\\' && *at + 1 < b.len() {
            *at += 1;
        }
        out.push(b[*at]);
        *at += 1;
    }
    String::from_utf8(out).map_err(|_| "invalid UTF-8".into())
}

fn parse_line(b: &[u8], at: &mut usize) -> Result<Line, String> {
    let start = *at;
    let mut canonical = String::new();
    let table = name(b, at, b", \n")?;
    let mut values = Vec::new();
    while b.get(*at) == Some(&b',') {
        *at += 1;
        let k = name(b, at, b"=")?;
        *at += 1;
        let v = name(b, at, b", \n")?;
        values.push((k, Ilp::Symbol(v)));
    }
    if b.get(*at) != Some(&b' ') {
        return Err("expected fields".into());
    }
    *at += 1;
    let flush_text = |canonical: &mut String, from: usize, to: usize| canonical.push_str(&String::from_utf8_lossy(&b[from..to]));
    let mut text_from = start;
    loop {
        let k = name(b, at, b"=")?;
        *at += 1;
        let v = match b.get(*at) {
            Some(b'=') => {
                // ILP v2 binary double: '=' 16 <f64 little-endian>.
                if b.get(*at + 1) != Some(&16) || *at + 10 > b.len() {
                    return Err(format!("column {k}: bad binary value"));
                }
                let x = f64::from_le_bytes(b[*at + 2..*at + 10].try_into().unwrap());
                flush_text(&mut canonical, text_from, *at + 1);
                canonical.push_str(&format!("{x:?}"));
                *at += 10;
                text_from = *at;
                Ilp::Double(x)
            }
            Some(b'"') => {
                *at += 1;
                let mut s = Vec::new();
                while *at < b.len() && b[*at] != b'"' {
                    if b[*at] == b'\\' && *at + 1 < b.len() {
                        *at += 1;
                    }
                    s.push(b[*at]);
                    *at += 1;
                }
                *at += 1;
                Ilp::Str(String::from_utf8(s).map_err(|_| "invalid UTF-8".to_string())?)
            }
            _ => {
                let tok = name(b, at, b", \n")?;
                match tok.as_str() {
                    "t" | "T" | "true" | "True" => Ilp::Bool(true),
                    "f" | "F" | "false" | "False" => Ilp::Bool(false),
                    _ if tok.ends_with('i') => Ilp::Long(tok[..tok.len() - 1].parse().map_err(|_| format!("column {k}: bad long {tok}"))?),
                    _ if tok.ends_with('t') => Ilp::Micros(tok[..tok.len() - 1].parse().map_err(|_| format!("column {k}: bad timestamp {tok}"))?),
                    _ if tok.ends_with('n') => {
                        Ilp::Micros(tok[..tok.len() - 1].parse::<i64>().map_err(|_| format!("column {k}: bad timestamp {tok}"))? / 1000)
                    }
                    _ => Ilp::Double(tok.parse().map_err(|_| format!("column {k}: bad value {tok}"))?),
                }
            }
        };
        values.push((k, v));
        match b.get(*at) {
            Some(b',') => *at += 1,
            _ => break,
        }
    }
    let mut ts = None;
    if b.get(*at) == Some(&b' ') {
        *at += 1;
        let tok = name(b, at, b"\n")?;
        ts = Some(match tok.strip_suffix('t') {
            Some(us) => us.parse().map_err(|_| format!("bad timestamp {tok}"))?,
            None => tok.trim_end_matches('n').parse::<i64>().map_err(|_| format!("bad timestamp {tok}"))? / 1000,
        });
    }
    if b.get(*at) != Some(&b'\n') {
        return Err("expected end of line".into());
    }
    flush_text(&mut canonical, text_from, *at);
    *at += 1;
    Ok(Line { table, values, at: ts, canonical })
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
