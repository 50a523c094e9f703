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
//! `row_id` is the key, so a re-emitted window or a replayed batch upserts. The primary key of a
//! table with a `session_id` column is `(session_id, row_id)` ([`TableShape::primary_key`]); the
//! `runs` table has its own explicit shape ([`crate::runs`]).

use std::borrow::Cow;
use std::time::SystemTime;

use crate::error::{Error, Result};
use pitgun_codec::json::cursor::{Cursor, Number};
use pitgun_codec::text::same;
use pitgun_contracts::analysis::{AnalysisContract, ColumnRole, ColumnType};
use pitgun_runtime::sql::check_identifier;
use serde::de;
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

    /// Its name as PostgreSQL's `format_type` spells it, which [`FoundColumn`]s carry.
    fn catalog_name(self) -> &'static str {
        match self {
            PgType::Timestamptz => "timestamp with time zone",
            other => other.sql(),
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

/// A column of a table already in the database, as PostgreSQL's catalog describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundColumn {
    /// Column name.
    pub name: String,
    /// Its type as `format_type` spells it (`bigint`, `timestamp with time zone`).
    pub sql_type: String,
    /// Whether it is `NOT NULL`.
    pub not_null: bool,
    /// Whether it has a default.
    pub has_default: bool,
}

/// A table the sink writes one manifest version's rows to.
#[derive(Debug, Clone, PartialEq)]
pub struct TableShape {
    /// Table name (from the manifest's output section).
    pub table: String,
    /// Columns, in table order.
    pub columns: Vec<TargetColumn>,
    /// The column naming a row (unique): versions of a row share it, a batch keeps one per value.
    pub conflict_key: String,
    /// Columns of the table's primary key, the upsert's conflict target: the conflict key, after
    /// `session_id` where the table has one (see [`TableShape::from_contract`]).
    pub primary_key: Vec<String>,
    /// Read indexes (name suffix, columns and predicate); the sink creates them with the table,
    /// so readers such as the API run no DDL.
    pub indexes: Vec<(String, String)>,
    /// Which of two rows with one key is kept when they come from different rows; `None`: the
    /// key is the row's own id, and the last version written is kept.
    pub preference: Option<Preference>,
}

/// Several rows share a key (e.g. `runs`: one per session, rows per driver): the stored one is
/// replaced by a later version of itself, or by another row that ranks higher.
#[derive(Debug, Clone, PartialEq)]
pub struct Preference {
    /// The column naming the row (its versions share it).
    pub row: String,
    /// Columns compared in order, greater first; none may be NULL, and none may fall from one
    /// version of a row to the next (else arrival order would decide).
    pub rank: Vec<String>,
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

/// A row converted for a table: its cells in table order, where its upsert key is among them,
/// and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    /// Cells in the shape's column order.
    pub cells: Vec<Cell>,
    /// The conflict key's cell: always text ([`TableShape::convert_fields`] checks it).
    pub key_at: usize,
    /// The primary key's other cell, for a table keyed by `(session_id, row_id)`: one `row_id`
    /// in two sessions is two rows of it.
    pub scope_at: Option<usize>,
    /// The row's version ([`pitgun_runtime::kafka::headers::ROW_VERSION`]);
    /// [`UNVERSIONED`] for a row emitted before rows carried one.
    pub version: i64,
}

impl TableRow {
    /// Whether `other` is the same row of the table: the same primary key.
    pub fn same_row(&self, other: &TableRow) -> bool {
        self.key() == other.key() && self.scope_at.is_none_or(|at| self.cells[at] == other.cells[at])
    }

    /// The conflict key's value.
    pub fn key(&self) -> &str {
        match &self.cells[self.key_at] {
            Cell::Text(key) => key,
            other => unreachable!("a row's key is text (checked when converted), not {other:?}"),
        }
    }
}

/// The version of a row that carries none: older than every versioned row.
pub const UNVERSIONED: i64 = -1;

/// The column, on every PostgreSQL table the sink writes, holding the version of the row
/// stored (not part of a table's shape: the sink adds it to tables created before it existed).
pub use pitgun_contracts::analysis::STORED_VERSION_COLUMN as VERSION_COLUMN;

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
            return Err(Error::Setup(format!("contract of {} v{} has no id column", contract.manifest, contract.version)));
        };
        // Rows are read by session (the API's lap rows of a run). The row id hashes the session
        // id (it is the first part of every key), so `(session_id, row_id)` is unique exactly
        // when the row id is; as the primary key it is the one index the table needs, and a
        // session's rows sit together in it instead of at random places in a `row_id` index:
        // a copy into it took 0.71 of an unindexed copy's speed, against 0.49-0.53 with the
        // `row_id` key and a `(session_id)` index (BENCHMARKS.md, "Sink: one index").
        let primary_key = match contract.columns.iter().any(|c| c.name == "session_id") && id.name != "session_id" {
            true => vec!["session_id".to_string(), id.name.clone()],
            false => vec![id.name.clone()],
        };
        Ok(TableShape { table: table.to_string(), columns, conflict_key: id.name.clone(), primary_key, indexes: Vec::new(), preference: None })
    }

    /// The shape a sink before the `(session_id, row_id)` key gave this table: keyed by the
    /// conflict key alone, with a read index on `session_id`. A table created so keeps it (the
    /// sink never alters a table's key); `None` when that shape is this one.
    pub fn with_earlier_key(&self) -> Option<TableShape> {
        if self.primary_key.len() < 2 {
            return None;
        }
        let indexes = vec![("session".to_string(), "(session_id)".to_string())];
        Some(TableShape { primary_key: vec![self.conflict_key.clone()], indexes, ..self.clone() })
    }

    /// Whether `new` replaces `old`, a row of the same key: a version of the same row replaces
    /// one no newer (a row never goes back to an older version, whatever order versions are
    /// read in); another row replaces it only if it ranks higher ([`Preference`]).
    pub fn replaces(&self, new: &TableRow, old: &TableRow) -> bool {
        let newer = new.version >= old.version;
        let Some(p) = &self.preference else { return newer };
        let at = |name: &str| self.columns.iter().position(|c| c.name == name).expect("a preference names the shape's columns");
        let row = at(&p.row);
        if new.cells[row] == old.cells[row] {
            return newer;
        }
        for i in p.rank.iter().map(|c| at(c)) {
            match cell_order(&new.cells[i], &old.cells[i]) {
                Some(std::cmp::Ordering::Equal) => continue,
                other => return other == Some(std::cmp::Ordering::Greater),
            }
        }
        false
    }

    /// The same rule as [`TableShape::replaces`], as the `WHERE` of PostgreSQL's `ON CONFLICT
    /// DO UPDATE` (the stored row is the table's, the new one `EXCLUDED`).
    pub fn replace_condition(&self) -> String {
        let table = format!("\"{}\"", self.table);
        let newer = format!("EXCLUDED.\"{VERSION_COLUMN}\" >= {table}.\"{VERSION_COLUMN}\"");
        let Some(p) = self.preference.as_ref() else { return newer };
        // Text compares byte-wise, as Rust's `cmp` does, whatever the database's collation.
        let collate = |c: &str| match self.columns.iter().find(|t| t.name == c).map(|t| t.pg_type) {
            Some(PgType::Text) => " COLLATE \"C\"",
            _ => "",
        };
        let cols = |of: &str| p.rank.iter().map(|c| format!("{of}.\"{c}\"{}", collate(c))).collect::<Vec<_>>().join(", ");
        format!("CASE WHEN {table}.\"{0}\" = EXCLUDED.\"{0}\" THEN {newer} ELSE ({1}) > ({2}) END", p.row, cols("EXCLUDED"), cols(&table))
    }

    /// `CREATE TABLE IF NOT EXISTS` for this shape (identifiers checked when it was built). A
    /// one-column key is declared on its column, as it always was: the registry knows a table by
    /// the hash of this text.
    pub fn create_sql(&self) -> String {
        let mut cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let null = if c.nullable { "" } else { " NOT NULL" };
                let key = if self.primary_key == [c.name.as_str()] { " PRIMARY KEY" } else { "" };
                format!("\"{}\" {}{null}{key}", c.name, c.pg_type.sql())
            })
            .collect();
        if self.primary_key.len() > 1 {
            cols.push(format!("PRIMARY KEY ({})", quoted(&self.primary_key)));
        }
        format!("CREATE TABLE IF NOT EXISTS \"{}\" ({})", self.table, cols.join(", "))
    }

    /// How a table found in the database without a registry entry (made by hand, restored from
    /// a dump) differs from this shape, so that one the sink cannot write is refused at start
    /// instead of refusing every row: columns missing, of another type or nullability, or extra
    /// and `NOT NULL` without a default; and no unique index on the primary key, which the
    /// upsert needs. The version column may be missing (the sink adds it). Empty: it fits.
    pub fn differences(&self, found: &[FoundColumn], has_unique_key: bool) -> Vec<String> {
        let mut out = Vec::new();
        let version = TargetColumn { name: VERSION_COLUMN.into(), pg_type: PgType::BigInt, nullable: false, source: Source::Column(String::new()) };
        for (c, optional) in self.columns.iter().map(|c| (c, false)).chain([(&version, true)]) {
            let Some(f) = found.iter().find(|f| f.name == c.name) else {
                if !optional {
                    out.push(format!("no column {:?}", c.name));
                }
                continue;
            };
            if f.sql_type != c.pg_type.catalog_name() {
                out.push(format!("column {:?} is {}, not {}", c.name, f.sql_type, c.pg_type.sql()));
            }
            match (c.nullable, f.not_null) {
                (false, false) => out.push(format!("column {:?} may be NULL", c.name)),
                (true, true) => out.push(format!("column {:?} is NOT NULL, but the contract lets it be empty", c.name)),
                _ => {}
            }
        }
        for f in found.iter().filter(|f| f.name != VERSION_COLUMN && !self.columns.iter().any(|c| c.name == f.name)) {
            if f.not_null && !f.has_default {
                out.push(format!("column {:?} is NOT NULL without a default, and the sink does not fill it", f.name));
            }
        }
        if !has_unique_key {
            out.push(format!("no primary key or unique index on ({})", self.primary_key.join(", ")));
        }
        out
    }

    /// `CREATE INDEX IF NOT EXISTS` for each read index. Not part of the shape's fingerprint:
    /// adding an index to a table that exists is safe.
    pub fn index_sql(&self) -> Vec<String> {
        self.indexes.iter().map(|(suffix, spec)| format!("CREATE INDEX IF NOT EXISTS \"{0}_{suffix}\" ON \"{0}\" {spec}", self.table)).collect()
    }

    /// Resolves the shape's sources to the positions of a topic's fields (the contract's
    /// columns, [`RowParser`]); a source the rows do not carry is an error at start.
    pub fn bind(&self, parser: &RowParser) -> Result<Binding> {
        let at = |name: &str| match parser.names.iter().position(|n| n == name) {
            Some(i) => Ok(i),
            None => Err(Error::Setup(format!("table {:?} reads column {name:?}, which the rows do not have", self.table))),
        };
        let mut sources = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            sources.push(match &c.source {
                Source::Column(name) => Bound::Field(at(name)?),
                Source::Seconds { from, to } => Bound::Seconds(at(from)?, at(to)?),
            });
        }
        let column = |name: &str| self.columns.iter().position(|c| c.name == name);
        let key = column(&self.conflict_key).expect("the key is a column");
        let scope = self.primary_key.iter().find(|k| **k != self.conflict_key).and_then(|k| column(k));
        Ok(Binding { sources, key, scope })
    }

    /// The field names this shape reads, in first-use order.
    fn source_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for c in &self.columns {
            let used = match &c.source {
                Source::Column(n) => vec![n],
                Source::Seconds { from, to } => vec![from, to],
            };
            for n in used {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        names
    }

    /// Converts one row's fields ([`RowParser::parse`]) into this table's cells; the error names
    /// the column and what is wrong.
    pub fn convert_fields(&self, binding: &Binding, fields: &[Field<'_>]) -> Result<TableRow, String> {
        let mut cells = Vec::with_capacity(self.columns.len());
        for (c, source) in self.columns.iter().zip(&binding.sources) {
            let cell = match *source {
                Bound::Field(i) => cell_of(&fields[i], c.pg_type, &c.name)?,
                Bound::Seconds(from, to) => {
                    let at = |i: usize| match cell_of(&fields[i], PgType::Timestamptz, &c.name)? {
                        Cell::Time(t) => Ok(t),
                        _ => Err(format!("column {:?}: its times are missing", c.name)),
                    };
                    let (from, to) = (at(from)?, at(to)?);
                    Cell::Float(match to.duration_since(from) {
                        Ok(d) => d.as_secs_f64(),
                        Err(e) => -e.duration().as_secs_f64(),
                    })
                }
            };
            if cell == Cell::Null && !c.nullable {
                return Err(format!("column {:?}: null or missing, but the table requires a value", c.name));
            }
            cells.push(cell);
        }
        if !matches!(cells[binding.key], Cell::Text(_)) {
            return Err(format!("key column {:?} is not text", self.conflict_key));
        }
        Ok(TableRow { cells, key_at: binding.key, scope_at: binding.scope, version: UNVERSIONED })
    }

    /// Converts one aggregate row given as a JSON map (tests and tools; the sink reads rows
    /// straight into fields with [`RowParser`]).
    pub fn convert(&self, row: &serde_json::Map<String, Value>) -> Result<TableRow, String> {
        let parser = RowParser::new(self.source_names());
        let binding = self.bind(&parser).expect("the shape's own names");
        let text = serde_json::to_string(row).expect("a JSON map");
        let fields = parser.parse(text.as_bytes())?;
        self.convert_fields(&binding, &fields)
    }
}

/// `"a", "b"`: column names as a SQL list (identifiers checked when the shape was built).
pub(crate) fn quoted<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    names.into_iter().map(|c| format!("\"{}\"", c.as_ref())).collect::<Vec<_>>().join(", ")
}

/// The order of two cells of one column (`None` across types, or for a NaN).
fn cell_order(a: &Cell, b: &Cell) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Cell::Text(a), Cell::Text(b)) => Some(a.cmp(b)),
        (Cell::Int(a), Cell::Int(b)) => Some(a.cmp(b)),
        (Cell::Float(a), Cell::Float(b)) => a.partial_cmp(b),
        (Cell::Bool(a), Cell::Bool(b)) => Some(a.cmp(b)),
        (Cell::Time(a), Cell::Time(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// Where each column of a [`TableShape`] takes its value from, by field position.
#[derive(Debug, Clone)]
pub struct Binding {
    sources: Vec<Bound>,
    key: usize,
    scope: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
enum Bound {
    Field(usize),
    Seconds(usize, usize),
}

/// One field of a row as read from its JSON, before it is typed for a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    /// The row has no such key.
    Missing,
    /// JSON `null`.
    Null,
    /// A string, borrowed from the row's text unless it had an escape.
    Str(Cow<'a, str>),
    /// An integer that fits `i64`.
    Int(i64),
    /// A larger positive integer.
    UInt(u64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// An object or an array (no column takes one).
    Nested(&'static str),
}

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Missing | Field::Null => f.write_str("null"),
            Field::Str(s) => write!(f, "{}", Value::from(s.as_ref())),
            Field::Int(i) => write!(f, "{i}"),
            Field::UInt(u) => write!(f, "{u}"),
            Field::Float(x) => write!(f, "{}", Value::from(*x)),
            Field::Bool(b) => write!(f, "{b}"),
            Field::Nested(what) => f.write_str(what),
        }
    }
}

/// Reads a row's JSON object straight into fields by position, without building a map: the
/// hot path of the sink. Keys are expected in contract order (as the engine writes them), so
/// each is matched against the next expected name first; other orders work, slower. Keys the
/// contract does not have are skipped.
#[derive(Debug, Clone)]
pub struct RowParser {
    names: Vec<String>,
}

impl RowParser {
    /// For rows with these fields (a contract's column names, in order).
    pub fn new(names: Vec<String>) -> RowParser {
        RowParser { names }
    }

    /// For the rows of a contract.
    pub fn of(contract: &AnalysisContract) -> RowParser {
        RowParser::new(contract.columns.iter().map(|c| c.name.clone()).collect())
    }

    /// The fields of one row: the usual shape by a direct scan ([`RowParser::scan`]), anything
    /// else by `serde_json`, whose rule decides what is accepted.
    pub fn parse<'a>(&self, json: &'a [u8]) -> Result<Vec<Field<'a>>, String> {
        if let Some(fields) = pitgun_codec::text::utf8(json).ok().and_then(|text| self.scan(text)) {
            return Ok(fields);
        }
        self.parse_general(json)
    }

    /// A row of the usual shape, read by one pass over its text: every key a field, every value
    /// a string without escapes, a number `serde_json` reads the same way, a boolean or `null`.
    /// `None` on anything else (an unknown key, an escape, a nested value, a negative or very
    /// long integer, bad syntax): [`RowParser::parse`] then leaves the row to `serde_json`. A
    /// unit test and a property test over rows of every value form hold the two equal.
    pub fn scan<'a>(&self, text: &'a str) -> Option<Vec<Field<'a>>> {
        let mut out = vec![Field::Missing; self.names.len()];
        let mut next = 0;
        let mut cursor = Cursor::new(text);
        cursor.object(|cursor, key| {
            let at = match self.names.get(next) {
                Some(name) if same(name, key) => next,
                _ => self.names.iter().position(|n| same(n, key))?,
            };
            out[at] = match cursor.peek()? {
                b'"' => Field::Str(Cow::Borrowed(cursor.string()?)),
                b'n' => cursor.literal(b"null").map(|()| Field::Null)?,
                b't' => cursor.literal(b"true").map(|()| Field::Bool(true))?,
                b'f' => cursor.literal(b"false").map(|()| Field::Bool(false))?,
                _ => match cursor.number()? {
                    // serde_json: a literal without fraction or exponent is an integer; a
                    // negative one, or one past 19 digits, is left to it.
                    Number { integral: true, integer, .. } => {
                        let n = integer?;
                        i64::try_from(n).map_or(Field::UInt(n), Field::Int)
                    }
                    Number { value, .. } if value.is_finite() => Field::Float(value),
                    _ => return None,
                },
            };
            next = at + 1;
            Some(())
        })?;
        cursor.at_end().then_some(out)
    }

    /// The fields of one row by `serde_json` alone: what it accepts, or its error (the rule
    /// [`RowParser::scan`] is held to; tests and the benchmark compare the two).
    pub fn parse_general<'a>(&self, json: &'a [u8]) -> Result<Vec<Field<'a>>, String> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let fields = de::DeserializeSeed::deserialize(self, &mut de).map_err(|e| format!("not a JSON object: {e}"))?;
        de.end().map_err(|e| format!("not a JSON object: {e}"))?;
        Ok(fields)
    }
}

impl<'de> de::DeserializeSeed<'de> for &RowParser {
    type Value = Vec<Field<'de>>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Vec<Field<'de>>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> de::Visitor<'de> for &RowParser {
    type Value = Vec<Field<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a row (a JSON object)")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<Field<'de>>, A::Error> {
        let mut out = vec![Field::Missing; self.names.len()];
        let mut next = 0;
        while let Some(at) = map.next_key_seed(KeySeed { names: &self.names, next })? {
            match at {
                Some(i) => {
                    out[i] = map.next_value::<Field>()?;
                    next = i + 1;
                }
                None => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A key, as the position of its name (`None`: not a field).
struct KeySeed<'a> {
    names: &'a [String],
    next: usize,
}

impl<'de> de::DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> de::Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a column name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        if self.names.get(self.next).is_some_and(|n| n == key) {
            return Ok(Some(self.next));
        }
        Ok(self.names.iter().position(|n| n == key))
    }
}

impl<'de> de::Deserialize<'de> for Field<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Field<'de>, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> de::Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }
    fn visit_none<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Field<'de>, E> {
        Ok(Field::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Field<'de>, E> {
        Ok(Field::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Field<'de>, E> {
        Ok(i64::try_from(v).map_or(Field::UInt(v), Field::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Field<'de>, E> {
        Ok(Field::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v)))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
        Ok(Field::Nested("an object"))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Field::Nested("an array"))
    }
}

fn cell_of(v: &Field<'_>, t: PgType, name: &str) -> Result<Cell, String> {
    let bad = |what: &str| Err(format!("column {name:?}: {what}, got {v}"));
    match (v, t) {
        (Field::Missing | Field::Null, _) => Ok(Cell::Null),
        (Field::Str(s), PgType::Text) => Ok(Cell::Text(s.to_string())),
        (Field::Int(i), PgType::BigInt) => Ok(Cell::Int(*i)),
        (Field::UInt(_) | Field::Float(_), PgType::BigInt) => bad("expected a 64-bit integer"),
        (Field::Int(i), PgType::Double) => Ok(Cell::Float(*i as f64)),
        (Field::UInt(u), PgType::Double) => Ok(Cell::Float(*u as f64)),
        (Field::Float(x), PgType::Double) => Ok(Cell::Float(*x)),
        (Field::Bool(b), PgType::Boolean) => Ok(Cell::Bool(*b)),
        (Field::Str(s), PgType::Timestamptz) => match parse_time(s) {
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
        crate::shipped_contract("lap-performance.v1")
    }

    #[test]
    fn the_generic_shape_follows_the_contract_and_converts_a_replay_row() {
        let shape = TableShape::from_contract(&contract(), "lap_performance_v1").unwrap();
        let sql = shape.create_sql();
        assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS \"lap_performance_v1\" (\"row_id\" text NOT NULL, "), "{sql}");
        assert!(sql.ends_with(", PRIMARY KEY (\"session_id\", \"row_id\"))") && shape.indexes.is_empty(), "{sql}");
        // The DDL an earlier sink registered for this table, to the byte: its hash finds it.
        // The hash is of the text 9d77d5f's sink made (column-level `PRIMARY KEY` on row_id).
        let earlier = shape.with_earlier_key().unwrap();
        use sha2::Digest;
        let registered = hex::encode(sha2::Sha256::digest(earlier.create_sql().as_bytes()));
        assert_eq!(registered, "1f3804b7480ad6a241c5cb1ac0e2ee4cdbc53fdaa302758d3d3c833df5014be8");
        let earlier_sql = earlier.create_sql();
        assert!(
            earlier_sql.starts_with("CREATE TABLE IF NOT EXISTS \"lap_performance_v1\" (\"row_id\" text NOT NULL PRIMARY KEY, "),
            "{earlier_sql}"
        );
        assert!(
            earlier_sql.ends_with("\"complete\" boolean NOT NULL)") && earlier.indexes == [("session".into(), "(session_id)".into())],
            "{earlier_sql}"
        );
        assert!(sql.contains("\"window_start\" timestamptz NOT NULL"), "{sql}");
        assert!(sql.contains("\"lap_time\" double precision,") || sql.contains("\"lap_time\" double precision NOT NULL"), "{sql}");
        let row: serde_json::Map<String, Value> = serde_json::from_str(r#"{"row_id":"ab","session_id":"s","player":"p","track":"t","car":"c","window_start":"2026-01-01T00:00:03.677340Z","window_end":"2026-01-01T00:01:46.368860Z","window_anchor":"2026-01-01T00:00:03.677340Z","lap":1,"lap_time":102.69152,"max_speed":312.0,"mean_speed":null,"full_throttle_share":0.5,"braking_share":0.1,"distance":5790.8679,"tyre_fl_p50":1.0,"tyre_fl_p90":1.0,"tyre_fr_p50":1.0,"tyre_fr_p90":1.0,"tyre_rl_p50":1.0,"tyre_rl_p90":1.0,"tyre_rr_p50":1.0,"tyre_rr_p90":1.0,"samples":2054,"complete":true}"#).unwrap();
        let converted = shape.convert(&row).unwrap();
        assert_eq!(converted.key(), "ab");
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

    const ROW: &str = r#"{"row_id":"ab","session_id":"s","player":"p","track":"t","car":"c","window_start":"2026-01-01T00:00:03.677340Z","window_end":"2026-01-01T00:01:46.368860Z","window_anchor":"2026-01-01T00:00:03.677340Z","lap":1,"lap_time":102.69152,"max_speed":312.0,"mean_speed":null,"full_throttle_share":0.5,"braking_share":0.1,"distance":5790.8679,"tyre_fl_p50":91.54893404542052,"tyre_fl_p90":1e2,"tyre_fr_p50":-0.25,"tyre_fr_p90":1.0,"tyre_rl_p50":1.0,"tyre_rl_p90":1.0,"tyre_rr_p50":1.0,"tyre_rr_p90":1.0,"samples":2054,"complete":true}"#;

    /// What the row parser gives, and what `serde_json` alone gives, as text: `Debug` shows a
    /// float's sign and digits, so `-0.0` and `0.0` differ.
    fn both(parser: &RowParser, text: &str) -> (String, String) {
        (format!("{:?}", parser.parse(text.as_bytes())), format!("{:?}", parser.parse_general(text.as_bytes())))
    }

    #[test]
    fn the_row_scan_reads_the_usual_shape_and_leaves_the_rest_to_serde() {
        let parser = RowParser::of(&contract());
        let fields = parser.scan(ROW).expect("the usual shape is scanned");
        assert!(matches!(fields[0], Field::Str(Cow::Borrowed("ab"))), "strings are borrowed: {:?}", fields[0]);
        let (parsed, general) = both(&parser, ROW);
        assert_eq!(parsed, general);
        let gives_up = [
            ROW.replace("\"player\":\"p\"", "\"player\":\"p\\u00e9\""), // an escape
            ROW.replace("\"lap\":1", "\"lap\":-1"),                     // a negative integer
            ROW.replace("\"lap\":1", "\"lap\":-0"),                     // serde_json: -0.0
            ROW.replace("\"lap\":1", "\"lap\":18446744073709551616"),   // past 64 bits: a float
            ROW.replace("\"lap\":1", "\"lap\":1e999"),                  // out of range: an error
            ROW.replace("\"lap\":1", "\"lap\":[1]"),                    // nested
            ROW.replace("\"car\":\"c\"", "\"car\":\"c\",\"extra\":{}"), // a key the contract has not
            ROW.replace("\"lap\":1", "\"lap\":01"),                     // bad syntax
            format!("{ROW} x"),                                         // trailing text
            ROW.replace("\"lap\":1", "\"lap\":tru"),
        ];
        for text in &gives_up {
            assert!(parser.scan(text).is_none(), "the scan gives up on {text}");
            let (parsed, general) = both(&parser, text);
            assert_eq!(parsed, general, "{text}");
        }
        // Read the same way by both: spacing, keys out of order or twice (the last one counts),
        // a key missing, and numbers past the exact fast case.
        let same = [
            ROW.replace(",", " ,\n ").replace(":", " : "),
            ROW.replace("{\"row_id\":\"ab\",", "{").replace("}", ",\"row_id\":\"ab\"}"),
            ROW.replace("\"lap\":1", "\"lap\":1,\"lap\":2"),
            ROW.replace("\"mean_speed\":null,", ""),
            ROW.replace("\"lap\":1", "\"lap\":9223372036854775808"),
            ROW.replace("102.69152", "0.1000000000000000055511151231257827021181583404541015625e-3"),
        ];
        for text in &same {
            assert!(parser.scan(text).is_some(), "the scan reads {text}");
            let (parsed, general) = both(&parser, text);
            assert_eq!(parsed, general, "{text}");
        }
        assert!(parser.parse(b"{\"lap\":\"\xff\"}").unwrap_err().starts_with("not a JSON object"), "not UTF-8: serde_json's error");
    }

    /// A value of any form a producer could send, well formed or not.
    fn any_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "\"[a-zé\\\\\"\u{1}]{0,6}\"",
            "-?(0|[1-9][0-9]{0,21})(\\.[0-9]{0,20})?([eE][+-]?[0-9]{1,3})?",
            "(true|false|null|tru|nul|01|-|\\[1\\]|\\{\\}|\\{\"a\":1\\}|)",
            "[ \t\n]{0,2}\"2026-01-01T00:00:0[0-9]Z\"[ \t\n]{0,2}",
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 4000, ..Default::default() })]
        /// Rows of random members (the contract's keys in any order, repeated or missing, and a
        /// key it has not) with values of every form: the row parser and `serde_json` never
        /// disagree.
        #[test]
        fn random_rows_never_disagree(members in proptest::collection::vec((0usize..27, any_value()), 0..30), close in proptest::bool::weighted(0.95)) {
            let parser = RowParser::of(&contract());
            let names: Vec<String> = contract().columns.iter().map(|c| c.name.clone()).chain(["extra".to_string()]).collect();
            let members: Vec<String> = members.iter().map(|(k, v)| format!("\"{}\":{v}", names.get(*k).map_or("", |n| n.as_str()))).collect();
            let text = format!("{{{}{}", members.join(","), if close { "}" } else { "" });
            let (parsed, general) = both(&parser, &text);
            proptest::prop_assert_eq!(parsed, general);
        }
    }
}
