//! The PostgreSQL target: the one component that changes the database's schema. Its own tables
//! come from numbered migrations; each row table (with its read indexes) is created through its
//! registry. Batches are
//! written by binary `COPY` into a session-local staging table and upserted from it in the same
//! transaction, so a replayed or re-emitted row replaces its earlier version instead of doubling
//! — and only an earlier one: the upsert's condition is [`TableShape::replace_condition`].
//!
//! Most batches hold only rows the table has never seen (a backfill, laps as they close), and
//! for those the upsert's staging pass is wasted work. So a batch is first copied straight
//! into the table: if no key is there yet that *is* the upsert's outcome, at the cost of the
//! indexes alone. A key already there (or a value the server refuses) aborts that shard's copy
//! with nothing written, and the shard takes the upsert; the table's next
//! [`UPSERTS_AFTER_A_CONFLICT`] batches go straight to the upsert before a copy is tried again.
//! This rests on the table's unique index on its primary key, which is what makes the copy
//! fail on a known key: a table found without one (made by hand before the sink registered it)
//! is only ever upserted, which fails loudly there as it always did.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use bytes::BytesMut;
use futures_util::{pin_mut, SinkExt};
use pitgun_contracts::manifest::SinkKind;
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, NoTls};
use tracing::{info, warn};

use futures_util::future::BoxFuture;

use crate::pg_binary;
use crate::table::{quoted, FoundColumn, TableRow, TableShape, UNVERSIONED, VERSION_COLUMN};
use crate::target::{Refused, Target, WriteError};

/// The sink's own schema, one numbered step each, applied in order once and recorded in
/// `pitgun_sink_schema`. Append only: a released step never changes.
const MIGRATIONS: &[&str] = &[
    // 1: the registry of tables the sink created (`IF NOT EXISTS`: databases from before this
    // list already have it).
    "CREATE TABLE IF NOT EXISTS pitgun_sink_tables (
        table_name text PRIMARY KEY,
        manifest text NOT NULL,
        version integer NOT NULL,
        shape_sha256 text NOT NULL,
        ddl text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now())",
];

/// Applies the migrations this database has not had, under a lock (replicas start together).
/// A database migrated by a newer sink is refused rather than written with an older schema.
async fn migrate(client: &Client) -> Result<()> {
    const DOING: &str = "migrating the sink's own schema";
    client
        .batch_execute(
            "BEGIN; SELECT pg_advisory_xact_lock(hashtext('pitgun_sink_schema'));
             CREATE TABLE IF NOT EXISTS pitgun_sink_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(Error::postgres(DOING))?;
    let applied: i32 =
        client.query_one("SELECT coalesce(max(version), 0) FROM pitgun_sink_schema", &[]).await.map_err(Error::postgres(DOING))?.get(0);
    if applied as usize > MIGRATIONS.len() {
        client.batch_execute("ROLLBACK").await.map_err(Error::postgres(DOING))?;
        return Err(Error::TableMismatch(format!(
            "the database's sink schema is at version {applied}, newer than this sink's {}: upgrade the sink",
            MIGRATIONS.len()
        )));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let version = i as i32 + 1;
        client.batch_execute(step).await.map_err(Error::postgres(format!("sink schema migration {version}")))?;
        client.execute("INSERT INTO pitgun_sink_schema (version) VALUES ($1)", &[&version]).await.map_err(Error::postgres(DOING))?;
        info!(version, "applied sink schema migration");
    }
    client.batch_execute("COMMIT").await.map_err(Error::postgres(DOING))?;
    Ok(())
}

/// After a batch of a table met a key already there, this many of its next batches take the
/// upsert without trying the direct copy first: a table whose rows are being updated pays for a
/// failed copy at most once in this many batches.
pub const UPSERTS_AFTER_A_CONFLICT: u32 = 16;

/// A table this target writes, with its statements built once.
struct Prepared {
    shape: TableShape,
    stage: String,
    /// The columns written, quoted and comma-separated.
    columns: String,
    copy: String,
    upsert: String,
    /// `COPY` straight into the table (rows none of whose keys are there yet).
    insert: String,
    /// Whether the table has a unique index on its primary key's columns (so a direct copy of a
    /// known key fails instead of doubling it).
    unique_key: bool,
    /// Batches still to upsert before a direct copy is tried again.
    upserts_due: AtomicU32,
    /// Batches written wholly by the direct copy, and batches written with at least one shard
    /// upserted (a batch that failed is in neither).
    inserted: AtomicU64,
    upserted: AtomicU64,
}

impl Prepared {
    fn new(shape: TableShape, unique_key: bool) -> Prepared {
        let stage = stage_name(&shape.table);
        let names = || shape.columns.iter().map(|c| c.name.as_str()).chain([VERSION_COLUMN]);
        let cols = quoted(names());
        let updates: Vec<String> =
            names().filter(|c| !shape.primary_key.iter().any(|k| k == c)).map(|c| format!("\"{c}\" = EXCLUDED.\"{c}\"")).collect();
        let copy = format!("COPY \"{stage}\" ({cols}) FROM STDIN (FORMAT binary)");
        let insert = format!("COPY \"{}\" ({cols}) FROM STDIN (FORMAT binary)", shape.table);
        let upsert = format!(
            "INSERT INTO \"{}\" ({cols}) SELECT {cols} FROM \"{stage}\" ON CONFLICT ({}) DO UPDATE SET {} WHERE {}",
            shape.table,
            quoted(&shape.primary_key),
            updates.join(", "),
            shape.replace_condition()
        );
        Prepared {
            shape,
            stage,
            columns: cols,
            copy,
            upsert,
            insert,
            unique_key,
            upserts_due: AtomicU32::new(0),
            inserted: AtomicU64::new(0),
            upserted: AtomicU64::new(0),
        }
    }

    /// Whether the next batch tries the direct copy (else one upsert fewer is due).
    fn try_insert(&self) -> bool {
        self.unique_key && self.upserts_due.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err()
    }
}

/// A PostgreSQL database the sink writes tables to, over a small pool of connections.
pub struct PgTarget {
    url: String,
    /// One session per connection; `None` until (re)connected.
    conns: Vec<Option<Client>>,
    tables: Vec<Prepared>,
}

impl PgTarget {
    /// The tables' shapes as they are in the database, in the order they were given.
    pub fn shapes(&self) -> impl Iterator<Item = &TableShape> {
        self.tables.iter().map(|t| &t.shape)
    }

    /// Connects, applies the sink's migrations and creates (or checks) each table. A table the
    /// registry holds with another shape is refused: an incompatible change needs a new
    /// manifest version and table (one an earlier sink keyed by `row_id` alone is written with
    /// that key: [`TableShape::with_earlier_key`]). `connections` sessions write each batch's
    /// shards in parallel.
    pub async fn open(url: &str, tables: Vec<(TableShape, String, u32)>, connections: usize) -> Result<PgTarget> {
        let client = connect(url).await?;
        migrate(&client).await?;
        let mut prepared = Vec::new();
        for (shape, manifest, version) in tables {
            let shape = ensure_table(&client, shape, &manifest, version).await?;
            let unique_key = has_unique_key(&client, &shape).await?;
            if !unique_key {
                let key = quoted(&shape.primary_key);
                warn!(table = %shape.table, key, "the table has no unique index on its key: every batch is upserted");
            }
            prepared.push(Prepared::new(shape, unique_key));
        }
        drop(client);
        let mut target = PgTarget { url: url.to_string(), conns: Vec::new(), tables: prepared };
        for _ in 0..connections.max(1) {
            target.conns.push(Some(session(&target.url, &target.tables).await?));
        }
        Ok(target)
    }

    /// The shape of table `i`.
    pub fn shape(&self, i: usize) -> &TableShape {
        &self.tables[i].shape
    }

    /// Batches of table `i` written so far wholly by the direct copy, and with the upsert.
    pub fn write_paths(&self, i: usize) -> (u64, u64) {
        let t = &self.tables[i];
        (t.inserted.load(Ordering::Relaxed), t.upserted.load(Ordering::Relaxed))
    }

    /// Upserts `rows` (already one per key) into table `i`. The rows are split into one shard
    /// per connection by key, each written in its own transaction at the same time (a key is
    /// always in the same shard, and the next batch starts only after this one, so versions of
    /// a key keep their order). If PostgreSQL refuses a shard's data (a data or constraint
    /// error), that shard is written row by row and the refused rows returned (index in `rows`,
    /// message). A connection or server failure is `Retry`: the caller writes the whole batch
    /// again, which the upserts make harmless for the shards that had committed.
    async fn upsert(&mut self, i: usize, rows: &[TableRow]) -> Result<Refused, WriteError> {
        let n = self.conns.len();
        let mut shards: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (at, row) in rows.iter().enumerate() {
            shards[(xxhash_rust::xxh3::xxh3_64(row.key().as_bytes()) % n as u64) as usize].push(at);
        }
        let (url, tables) = (&self.url, &self.tables);
        let t = &tables[i];
        // Decided once per batch, whatever the number of shards.
        let direct = t.try_insert();
        let writes = self.conns.iter_mut().zip(&shards).map(|(conn, shard)| write_shard(url, tables, conn, i, rows, shard, direct));
        let mut refused = Vec::new();
        let mut copied = true;
        for result in futures_util::future::join_all(writes).await {
            let (shard_refused, shard_copied) = result?;
            refused.extend(shard_refused);
            copied &= shard_copied;
        }
        if copied {
            t.inserted.fetch_add(1, Ordering::Relaxed);
        } else {
            t.upserted.fetch_add(1, Ordering::Relaxed);
        }
        refused.sort_unstable_by_key(|(at, _)| *at);
        Ok(refused)
    }
}

impl Target for PgTarget {
    fn kind(&self) -> &'static str {
        SinkKind::Postgres.name()
    }

    fn write<'a>(&'a mut self, table: usize, rows: &'a mut Vec<TableRow>) -> BoxFuture<'a, Result<Refused, WriteError>> {
        Box::pin(self.upsert(table, rows))
    }

    fn abandon(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // A session's query keeps running on the server after its client stops waiting:
            // waiting for a lock, it holds up everyone queued behind it. A cancel request asks
            // the server to stop it (its transaction rolls back); a session with nothing
            // running ignores one. All at once, under one bound: the sink is stopping.
            let sessions: Vec<Client> = self.conns.iter_mut().filter_map(Option::take).collect();
            let cancels = sessions.iter().map(|session| {
                let token = session.cancel_token();
                async move { token.cancel_query(NoTls).await }
            });
            match tokio::time::timeout(CANCEL_TIMEOUT, futures_util::future::join_all(cancels)).await {
                Ok(done) => {
                    for e in done.into_iter().filter_map(Result::err) {
                        warn!("could not cancel a PostgreSQL query given up: {}", db_message(&e));
                    }
                }
                Err(_) => warn!("could not cancel the PostgreSQL queries given up: no answer within {CANCEL_TIMEOUT:?}"),
            }
        })
    }
}

/// How long a cancel request may take: the sink is stopping.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(Error::postgres(format!("cannot connect to {}", redact(url))))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!("PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

/// The staging table of `table`: `pitgun_stage_<table>` while that fits PostgreSQL's 63 bytes.
/// A longer name ends with a hash of the whole table name instead of being cut by the server,
/// which gave two tables alike in their first 50 characters one staging table.
fn stage_name(table: &str) -> String {
    const PREFIX: &str = "pitgun_stage_";
    let whole = format!("{PREFIX}{table}");
    if whole.len() <= 63 {
        return whole;
    }
    let hash = hex::encode(&Sha256::digest(table.as_bytes())[..8]);
    // Identifiers are ASCII (`check_identifier`), so any byte length is a char boundary.
    format!("{PREFIX}{}_{hash}", &table[..63 - PREFIX.len() - 1 - hash.len()])
}

/// A connection with its staging tables (they live in the session: made after each connect).
async fn session(url: &str, tables: &[Prepared]) -> Result<Client, WriteError> {
    let client = connect(url).await.map_err(|e| WriteError::Retry(pitgun_runtime::error::Chain(&e).to_string()))?;
    for t in tables {
        // The written columns only, without their constraints: a column of the table's own (a
        // default, an identity) is filled by the upsert into it, not demanded of the copy.
        let sql = format!(
            "CREATE TEMP TABLE IF NOT EXISTS \"{}\" ON COMMIT DELETE ROWS AS SELECT {} FROM \"{}\" WITH NO DATA",
            t.stage, t.columns, t.shape.table
        );
        let table = &t.shape.table;
        client.batch_execute(&sql).await.map_err(|e| WriteError::Retry(format!("PostgreSQL: the staging table of {table:?}: {}", db_message(&e))))?;
    }
    Ok(client)
}

/// One shard of a batch on one connection (see [`PgTarget::write`]).
async fn write_shard(
    url: &str,
    tables: &[Prepared],
    conn: &mut Option<Client>,
    i: usize,
    rows: &[TableRow],
    shard: &[usize],
    direct: bool,
) -> Result<(Refused, bool), WriteError> {
    if shard.is_empty() {
        return Ok((Vec::new(), direct));
    }
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(session(url, tables).await?);
    }
    let client = conn.as_mut().expect("connected");
    let t = &tables[i];
    let retry = |conn: &mut Option<Client>, e: tokio_postgres::Error| {
        *conn = None; // reconnect next time: the session may be gone or mid-transaction
        WriteError::Retry(format!("PostgreSQL: {}", db_message(&e)))
    };
    if direct {
        match insert_rows(client, t, shard.iter().map(|&at| &rows[at])).await {
            Ok(()) => return Ok((Vec::new(), true)),
            // A key already there, or a value refused: nothing was written; the upsert sorts
            // out which rows replace, and which are refused.
            Err(e) if is_data_error(&e) => t.upserts_due.store(UPSERTS_AFTER_A_CONFLICT, Ordering::Relaxed),
            Err(e) => return Err(retry(conn, e)),
        }
    }
    match write_rows(client, t, shard.iter().map(|&at| &rows[at])).await {
        Ok(()) => Ok((Vec::new(), false)),
        Err(e) if is_data_error(&e) => {
            let mut refused = Vec::new();
            for &at in shard {
                match write_rows(client, t, std::iter::once(&rows[at])).await {
                    Ok(()) => {}
                    Err(e) if is_data_error(&e) => refused.push((at, db_message(&e))),
                    Err(e) => return Err(retry(conn, e)),
                }
            }
            Ok((refused, false))
        }
        Err(e) => Err(retry(conn, e)),
    }
}

/// Whether `shape`'s table has a unique index on exactly its primary key's columns, in order
/// (the sink creates it as the primary key; a table made by hand may lack it).
async fn has_unique_key(client: &Client, shape: &TableShape) -> Result<bool> {
    // Any order of the key's columns serves `ON CONFLICT`; a deferrable index does not.
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = {IN_SCHEMA} AND i.indisunique AND i.indimmediate AND i.indpred IS NULL \
         AND i.indnatts = cardinality($2::text[]) AND ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) k(attnum) \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY 1) = ARRAY(SELECT unnest($2::text[]) ORDER BY 1))"
    );
    let row = client
        .query_one(&sql, &[&shape.table, &shape.primary_key])
        .await
        .map_err(Error::postgres(format!("reading the indexes of {:?}", shape.table)))?;
    Ok(row.get(0))
}

/// Table `$1` in the current schema, as every catalog query here finds it (not elsewhere on
/// the search path: the sink creates and alters tables in the current schema).
const IN_SCHEMA: &str = "to_regclass(quote_ident(current_schema()) || '.' || quote_ident($1))";

/// The columns of `table` in the current schema (none: there is no such table). An identity or
/// generated column counts as having a default: the sink need not fill it.
async fn columns_of(client: &Client, table: &str) -> Result<Vec<FoundColumn>> {
    let sql = format!(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' \
         FROM pg_attribute a WHERE a.attrelid = {IN_SCHEMA} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    );
    let rows = client.query(&sql, &[&table]).await.map_err(Error::postgres(format!("reading the columns of {table:?}")))?;
    Ok(rows.iter().map(|r| FoundColumn { name: r.get(0), sql_type: r.get(1), not_null: r.get(2), has_default: r.get(3) }).collect())
}

/// Binary `COPY` into the session's staging table, then the upsert, in one transaction.
async fn write_rows<'r>(client: &mut Client, t: &Prepared, rows: impl Iterator<Item = &'r TableRow>) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    copy_rows(&tx, &t.copy, rows).await?;
    tx.execute(&t.upsert, &[]).await?;
    tx.commit().await
}

/// Binary `COPY` straight into the table, in one transaction: all or nothing (a key already
/// there aborts it; dropping the transaction rolls it back).
async fn insert_rows<'r>(client: &mut Client, t: &Prepared, rows: impl Iterator<Item = &'r TableRow>) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    copy_rows(&tx, &t.insert, rows).await?;
    tx.commit().await
}

/// Bytes of copy data sent at a time: large enough that sending is not per row, small enough
/// that the server works on one chunk while the next is encoded.
const COPY_CHUNK: usize = 256 * 1024;

/// The rows as binary `COPY` data ([`pg_binary`]), in chunks of [`COPY_CHUNK`].
async fn copy_rows<'r>(
    tx: &tokio_postgres::Transaction<'_>,
    copy: &str,
    rows: impl Iterator<Item = &'r TableRow>,
) -> Result<(), tokio_postgres::Error> {
    let sink = tx.copy_in::<_, bytes::Bytes>(copy).await?;
    pin_mut!(sink);
    let mut buf = BytesMut::with_capacity(COPY_CHUNK + 4096);
    pg_binary::header(&mut buf);
    for row in rows {
        pg_binary::row(&mut buf, row);
        if buf.len() >= COPY_CHUNK {
            sink.as_mut().send(buf.split().freeze()).await?;
        }
    }
    pg_binary::trailer(&mut buf);
    sink.as_mut().send(buf.freeze()).await?;
    sink.finish().await?;
    Ok(())
}

/// Creates `shape`'s table through the registry, or checks the table there; then adds the read
/// indexes it lacks. Returns the shape the table has: `shape`, or the one with the earlier key
/// for a table an earlier sink created.
async fn ensure_table(client: &Client, shape: TableShape, manifest: &str, version: u32) -> Result<TableShape> {
    let sha_of = |shape: &TableShape| hex::encode(Sha256::digest(shape.create_sql().as_bytes()));
    let mut shape = shape;
    let ddl = shape.create_sql();
    let sha = sha_of(&shape);
    let table = &shape.table.clone();
    let step = format!("registering table {table:?}");
    // One sink at a time decides about a table (several replicas may start together).
    client.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(hashtext('pitgun_sink_tables'))").await.map_err(Error::postgres(&step))?;
    let found = client
        .query_opt("SELECT shape_sha256, manifest, version FROM pitgun_sink_tables WHERE table_name = $1", &[table])
        .await
        .map_err(Error::postgres(&step))?;
    match found {
        Some(row) => {
            let (old_sha, m, v): (String, String, i32) = (row.get(0), row.get(1), row.get(2));
            if (m.as_str(), v) != (manifest, version as i32) {
                client.batch_execute("ROLLBACK").await.map_err(Error::postgres(&step))?;
                let own = if crate::runs_table::is_runs_table(table) {
                    format!(", e.g. \"runs_v{version}\" (and `pitgun api --runs-table`)")
                } else {
                    String::new()
                };
                return Err(Error::TableMismatch(format!(
                    "PostgreSQL table {table:?} is the table of {m} v{v}; two manifest versions never share a table (their rows \
                     would mix) — give {manifest} v{version}'s output a table of its own{own}"
                )));
            }
            if let Some(earlier) = shape.with_earlier_key().filter(|earlier| old_sha != sha && old_sha == sha_of(earlier)) {
                info!(table = %shape.table, "the table keeps the key an earlier sink gave it (row_id, with a session_id index)");
                shape = earlier;
            } else if old_sha != sha {
                client.batch_execute("ROLLBACK").await.map_err(Error::postgres(&step))?;
                return Err(Error::TableMismatch(format!(
                    "PostgreSQL table {table:?} was created for {m} v{v} with other columns; the sink never alters a table \
                     incompatibly — give the changed manifest a new version and its own table"
                )));
            }
        }
        None => {
            // A table no sink registered (made by hand, restored without the registry) is taken
            // on only if it is one of the shapes a sink would have made.
            let found = columns_of(client, table).await?;
            if found.is_empty() {
                client.batch_execute(&ddl).await.map_err(Error::postgres(format!("creating table {table:?}")))?;
                info!(table, manifest, version, "created PostgreSQL table");
            } else {
                // Told against this shape; an earlier sink's key fits too.
                let differences = shape.differences(&found, has_unique_key(client, &shape).await?);
                let earlier = shape.with_earlier_key();
                let fits_earlier = match &earlier {
                    Some(e) => e.differences(&found, has_unique_key(client, e).await?).is_empty(),
                    None => false,
                };
                if fits_earlier && !differences.is_empty() {
                    shape = earlier.expect("checked");
                } else if !differences.is_empty() {
                    client.batch_execute("ROLLBACK").await.map_err(Error::postgres(&step))?;
                    return Err(Error::TableMismatch(format!(
                        "PostgreSQL table {table:?} exists, not registered by a Pitgun sink, and cannot hold the rows of {manifest} v{version}: {}; \
                         the sink never alters a table — drop or rename it, or give the manifest's output another table",
                        differences.join("; ")
                    )));
                }
                info!(table, manifest, version, "took on a PostgreSQL table no sink had registered: it has the contract's columns and key");
            }
            let (sha, ddl) = (sha_of(&shape), shape.create_sql());
            client
                .execute(
                    "INSERT INTO pitgun_sink_tables (table_name, manifest, version, shape_sha256, ddl) VALUES ($1, $2, $3, $4, $5)",
                    &[table, &manifest, &(version as i32), &sha, &ddl],
                )
                .await
                .map_err(Error::postgres(&step))?;
        }
    }
    // The version column, on tables created before it existed too (rows there count as
    // unversioned: any versioned row replaces them).
    let has_version = client
        .query_opt(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
            &[table, &VERSION_COLUMN],
        )
        .await
        .map_err(Error::postgres(&step))?
        .is_some();
    if !has_version {
        let sql = format!("ALTER TABLE \"{table}\" ADD COLUMN \"{VERSION_COLUMN}\" bigint NOT NULL DEFAULT {UNVERSIONED}");
        client.batch_execute(&sql).await.map_err(Error::postgres(format!("adding the version column to {table:?}")))?;
    }
    client.batch_execute("COMMIT").await.map_err(Error::postgres(&step))?;
    // Read indexes the table lacks (also one created before an index was added), each on its
    // own: an existing index costs one catalog query, not a table lock. The sink writes without
    // them, so a failure (e.g. a role that does not own the table) is a warning.
    let have: Vec<String> = client
        .query("SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1", &[table])
        .await
        .map_err(Error::postgres(&step))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for ((suffix, _), sql) in shape.indexes.iter().zip(shape.index_sql()) {
        if !have.iter().any(|h| *h == format!("{table}_{suffix}")) {
            match client.batch_execute(&sql).await {
                Ok(()) => info!(table, index = %suffix, "created read index"),
                Err(e) => warn!(table, "could not create a read index (reads work, slower): {}: {sql}", db_message(&e)),
            }
        }
    }
    Ok(shape)
}

/// Data exceptions (class 22), integrity violations (class 23) and program limits (class 54: a
/// key longer than an index row may be): the rows are at fault, not the server; retrying them
/// would fail forever. A batch refused as a whole is written again row by row, so a limit of
/// the batch's (too complex a statement) refuses no row.
fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| ["22", "23", "54"].iter().any(|class| c.code().starts_with(class)))
}

fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => format!("{e:#}"),
    }
}

/// Where a connection string points, without its password: `postgres://user:***@host:port/db`,
/// read by the driver's own parser, so every form it takes is covered (a URL with the password
/// in its user part or its query, `key=value` with quoting). A string it cannot parse is not
/// shown at all: it may hold a password all the same.
pub fn redact(url: &str) -> String {
    use tokio_postgres::config::Host;
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "a connection string the PostgreSQL driver cannot parse (not shown: it may hold a password)".into();
    };
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            // One port applies to every host; none is the default.
            format!("{name}:{}", ports.get(i).or(ports.first()).copied().unwrap_or(5432))
        })
        .collect();
    let user = config.get_user().unwrap_or_default();
    let password = if config.get_password().is_some() { ":***" } else { "" };
    let at = if user.is_empty() && password.is_empty() { "" } else { "@" };
    format!("postgres://{user}{password}{at}{}/{}", hosts.join(","), config.get_dbname().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    /// PostgreSQL cuts a name at 63 bytes: two tables alike in their first 50 characters shared
    /// one staging table, and one's rows went through a table of the other's columns.
    #[test]
    fn long_table_names_have_staging_tables_of_their_own() {
        let base = "lap_performance_for_the_endurance_championship_sea";
        let (a, b) = (format!("{base}son_v1"), format!("{base}son_v2"));
        let (sa, sb) = (super::stage_name(&a), super::stage_name(&b));
        assert!(sa.len() <= 63 && sb.len() <= 63, "{sa} / {sb}: longer than PostgreSQL keeps");
        assert_ne!(sa, sb);
        assert_eq!(super::stage_name("runs"), "pitgun_stage_runs", "a name that fits is kept readable");
        let longest = super::stage_name(&"t".repeat(63));
        assert!(longest.len() == 63 && longest.starts_with("pitgun_stage_ttt"), "{longest}");
    }

    /// In every form libpq takes: the URL's user part and query, and key=value (quoted too).
    /// The key=value form and a password in the query were printed whole.
    #[test]
    fn passwords_are_not_printed() {
        let cases = [
            ("postgres://pitgun:secret@127.0.0.1:5432/db", "postgres://pitgun:***@127.0.0.1:5432/db"),
            ("postgresql://127.0.0.1:15639/pitgun?user=pitgun&password=secret", "postgres://pitgun:***@127.0.0.1:15639/pitgun"),
            ("host=127.0.0.1 port=15639 user=pitgun password=secret dbname=pitgun", "postgres://pitgun:***@127.0.0.1:15639/pitgun"),
            ("host=127.0.0.1 user=x password = 'se cret'", "postgres://x:***@127.0.0.1:5432/"),
            ("host=/run/postgresql,db.example.com port=5433 user=x", "postgres://x@/run/postgresql:5433,db.example.com:5433/"),
            ("host=127.0.0.1 user=x", "postgres://x@127.0.0.1:5432/"),
        ];
        for (given, shown) in cases {
            assert_eq!(super::redact(given), shown, "{given}");
        }
        let unreadable = super::redact("host=127.0.0.1 password='secret");
        assert!(!unreadable.contains("secret"), "{unreadable}");
    }
}
