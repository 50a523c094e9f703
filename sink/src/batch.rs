//! A batch of rows on its way to the targets: one row per key and route (the last one read
//! wins), where each partition's consumption got to, and the rows that became dead letters.
//! [`write`] hands it to the targets and retries each table until it commits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashTable;
use tracing::{error, warn};

use crate::metrics::Metrics;
use crate::routes::Route;
use crate::service::FAILPOINT_ENV;
use crate::table::{TableRow, TableShape};
use crate::target::{Target, WriteError};

/// The opened targets, in the order routes point at them; handed to the write task with each
/// batch and back.
pub(crate) type Targets = Vec<Box<dyn Target>>;

/// A batch in the making: rows per route, one per key, and where each partition's
/// consumption got to.
#[derive(Default)]
pub(crate) struct Batch {
    pub rows: Vec<Vec<TableRow>>,
    origins: Vec<Vec<Origin>>,
    /// Per route, the position in `rows` of each key's row, found by the key's hash: the key
    /// is read from the row itself, not copied.
    index: Vec<HashTable<usize>>,
    /// Rows a route's lists take room for when its first row comes.
    room: usize,
    /// The index's hash seed, random per batch: keys come from the aggregates topic, so a
    /// writer to it must not be able to choose keys that collide.
    seed: u64,
    /// The offset to commit per (topic, partition): one past the last record read, and the
    /// assignment it was read in.
    pub next_offsets: BTreeMap<(Arc<str>, i32), (i64, u64)>,
    pub dead: Vec<Dead>,
    /// Records read into the batch (rows and dead letters alike).
    pub read: usize,
}

/// The record a row came from: where a dead letter points, and what it carries.
#[derive(Clone)]
pub(crate) struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub payload: Arc<[u8]>,
    /// The partition's assignment it was read in ([`crate::service`] counts revocations).
    pub generation: u64,
}

/// Why a row goes to the dead-letter topic: a target refused it (its error in the detail).
pub(crate) const REFUSED_BY_TARGET: &str = "refused_by_target";
/// Why a row goes to the dead-letter topic: not a row of its manifest's contract.
pub(crate) const INVALID_ROW: &str = "invalid_row";

/// A record that goes to the dead-letter topic instead of a table.
pub(crate) struct Dead {
    pub reason: &'static str,
    pub detail: String,
    pub origin: Origin,
}

impl Batch {
    /// An empty batch for `routes` routes. A route's lists take room for up to `rows` rows
    /// when its first row comes (no rehashing of the index while a batch of the default size
    /// fills, nothing reserved by a batch that stays empty; a very large `--batch-rows` grows
    /// as rows come rather than reserve memory it may never use).
    pub fn new(routes: usize, rows: usize) -> Batch {
        Batch {
            rows: vec![Vec::new(); routes],
            origins: vec![Vec::new(); routes],
            index: (0..routes).map(|_| HashTable::new()).collect(),
            room: rows.min(16_384),
            seed: std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), routes),
            ..Batch::default()
        }
    }

    /// Removes what was read from a partition in an assignment since revoked: the partition's
    /// new owner reads it again from the last committed offset, and rows written here after
    /// that could be older than the ones it writes. Returns the rows (and dead letters) dropped.
    pub fn drop_revoked(&mut self, current: impl Fn(&str, i32) -> u64) -> usize {
        let stale = |o: &Origin| o.generation != current(&o.topic, o.partition);
        let mut dropped = 0;
        for route in 0..self.rows.len() {
            if !self.origins[route].iter().any(stale) {
                continue;
            }
            let (rows, origins) = (std::mem::take(&mut self.rows[route]), std::mem::take(&mut self.origins[route]));
            self.index[route].clear();
            for (row, origin) in rows.into_iter().zip(origins) {
                if stale(&origin) {
                    dropped += 1;
                } else {
                    self.push(route, row, origin);
                }
            }
        }
        let dead = self.dead.len();
        self.dead.retain(|d| !stale(&d.origin));
        dropped += dead - self.dead.len();
        self.next_offsets.retain(|(topic, partition), (_, generation)| *generation == current(topic, *partition));
        dropped
    }

    /// Adds a row for `route`, replacing the row of its key in this batch if the table's rule
    /// says so ([`TableShape::replaces`]: a later version of it, or a row that ranks higher).
    pub fn add(&mut self, route: usize, shape: &TableShape, row: TableRow, origin: Origin) {
        let rows = &self.rows[route];
        match self.index[route].find(hash(self.seed, &row), |&at| rows[at].same_row(&row)) {
            Some(&at) if !shape.replaces(&row, &rows[at]) => {}
            Some(&at) => {
                self.rows[route][at] = row;
                self.origins[route][at] = origin;
            }
            None => self.push(route, row, origin),
        }
    }

    /// Appends a row whose key the route's rows do not have yet.
    fn push(&mut self, route: usize, row: TableRow, origin: Origin) {
        if self.rows[route].capacity() == 0 {
            self.rows[route].reserve(self.room);
            self.origins[route].reserve(self.room);
            self.index[route].reserve(self.room, |_| unreachable!("an empty index rehashes nothing"));
        }
        let (rows, seed) = (&self.rows[route], self.seed);
        self.index[route].insert_unique(hash(seed, &row), rows.len(), |&at| hash(seed, &rows[at]));
        self.rows[route].push(row);
        self.origins[route].push(origin);
    }
}

/// A key's hash in the batch's index.
/// A row's conflict key, hashed: the rows of one `row_id` in two sessions share a hash and are
/// told apart by [`TableRow::same_row`] (rare, and cheaper than hashing the session too).
fn hash(seed: u64, row: &TableRow) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(row.key().as_bytes(), seed)
}

/// What writing a batch to the targets did.
pub(crate) struct Written {
    /// Rows committed per route.
    pub rows: Vec<u64>,
    /// Failed attempts retried.
    pub retries: u64,
    /// Time of the successful attempts.
    pub seconds: f64,
    /// A stop was asked for while a target refused the batch, or its deadline passed while a
    /// write was still in progress: the write was given up, and the batch must not be
    /// committed.
    pub abandoned: bool,
}

/// A stop asked for (SIGTERM, SIGINT): `Some` of the deadline by which the batch being written
/// is given up (the stop's time plus `--drain-timeout`, one deadline for the whole stop however
/// many routes, attempts and batches remain).
pub(crate) type Stop = tokio::sync::watch::Receiver<Option<tokio::time::Instant>>;

/// Ends at the stop's deadline; never if no stop can come any more.
pub(crate) async fn stop_deadline(stop: &mut Stop) {
    // Copied out of the channel's guard before any other wait: the guard is not `Send`.
    let asked = stop.wait_for(Option::is_some).await.map(|asked| *asked);
    match asked {
        Ok(Some(deadline)) => tokio::time::sleep_until(deadline).await,
        _ => std::future::pending().await,
    }
}

/// Writes every route's rows of `batch` to its table, each retried with backoff until it
/// commits, or until a stop is asked for while a target refuses it, or the stop's deadline
/// passes while a write hangs (then `abandoned`); rows the target refused become dead letters
/// of the batch. Runs as its own task, so the next batch is read and converted while the
/// targets work on this one.
pub(crate) async fn write(
    mut targets: Targets,
    mut batch: Batch,
    routes: Arc<Vec<Route>>,
    metrics: Arc<Metrics>,
    max_backoff: Duration,
    mut failpoint: bool,
    mut stop: Stop,
) -> (Targets, Batch, Written) {
    let mut written = Written { rows: vec![0; routes.len()], retries: 0, seconds: 0.0, abandoned: false };
    for (r, route) in routes.iter().enumerate() {
        if batch.rows[r].is_empty() {
            continue;
        }
        let (kind, table) = (route.kind, route.name.as_str());
        let mut backoff = Duration::from_millis(100);
        let refused = loop {
            let started = Instant::now();
            // A write that hangs (a lock held elsewhere, a server that stopped answering) would
            // hold a stopping sink until it is killed.
            // The deadline first: once it has passed, no attempt starts.
            let attempt = tokio::select! {
                biased;
                () = stop_deadline(&mut stop) => None,
                attempt = targets[route.target].write(route.table, &mut batch.rows[r]) => Some(attempt),
            };
            let Some(attempt) = attempt else {
                warn!(target = kind, table, "stopping: the write in progress did not finish within --drain-timeout and is given up");
                targets[route.target].abandon().await;
                written.abandoned = true;
                return (targets, batch, written);
            };
            match attempt {
                Ok(refused) => {
                    written.seconds += started.elapsed().as_secs_f64();
                    metrics.flush_seconds.with_label_values(&[kind]).observe(started.elapsed().as_secs_f64());
                    break refused;
                }
                Err(WriteError::Retry(e)) => {
                    metrics.retries.with_label_values(&[kind]).inc();
                    written.retries += 1;
                    warn!(target = kind, table, retry_in = ?backoff, "write failed: {e}");
                    let stopped = tokio::select! {
                        _ = tokio::time::sleep(backoff) => false,
                        _ = stop.wait_for(Option::is_some) => true,
                    };
                    if stopped || stop.borrow().is_some() {
                        written.abandoned = true;
                        return (targets, batch, written);
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        };
        let n = (batch.rows[r].len() - refused.len()) as u64;
        metrics.rows_written.with_label_values(&[kind, table]).inc_by(n);
        written.rows[r] = n;
        for (at, message) in refused {
            let origin = batch.origins[r][at].clone();
            batch.dead.push(Dead { reason: REFUSED_BY_TARGET, detail: format!("{}: {message}", route.label()), origin });
        }
        if std::mem::take(&mut failpoint) {
            error!("failpoint {FAILPOINT_ENV}=after-target-commit: aborting between the target's commit and the offset commit");
            std::process::abort();
        }
    }
    (targets, batch, written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Cell;

    fn row(key: &str, version: i64) -> TableRow {
        TableRow { cells: vec![Cell::Text(key.into()), Cell::Int(version)], key_at: 0, scope_at: None, version }
    }

    fn shape(primary_key: &[&str]) -> TableShape {
        TableShape {
            table: "t".into(),
            columns: Vec::new(),
            conflict_key: "row_id".into(),
            primary_key: primary_key.iter().map(|k| k.to_string()).collect(),
            indexes: Vec::new(),
            preference: None,
        }
    }

    /// A table keyed by (session_id, row_id) stores one row_id of two sessions twice, as the
    /// documents say; in one batch the later of them replaced the other, which was lost.
    #[test]
    fn one_row_id_in_two_sessions_is_two_rows_of_a_batch() {
        let in_session = |session: &str, version: i64| TableRow {
            cells: vec![Cell::Text("r1".into()), Cell::Text(session.into())],
            key_at: 0,
            scope_at: Some(1),
            version,
        };
        let mut batch = Batch::new(1, 4);
        let keyed = shape(&["session_id", "row_id"]);
        batch.add(0, &keyed, in_session("A", 1), origin(0, 10, 0));
        batch.add(0, &keyed, in_session("B", 1), origin(0, 11, 0));
        batch.add(0, &keyed, in_session("A", 2), origin(0, 12, 0));
        let kept: Vec<(&Cell, i64)> = batch.rows[0].iter().map(|r| (&r.cells[1], r.version)).collect();
        assert_eq!(kept, [(&Cell::Text("A".into()), 2), (&Cell::Text("B".into()), 1)]);
    }

    fn origin(partition: i32, offset: i64, generation: u64) -> Origin {
        Origin { topic: "rows".into(), partition, offset, payload: Arc::from(&b"{}"[..]), generation }
    }

    /// Within a batch a key keeps its newest version, whatever order versions are read in; what
    /// was read from a partition in an assignment since revoked is dropped, offsets included,
    /// and the partition's rows read after it came back stay.
    #[test]
    fn a_batch_keeps_newest_versions_and_drops_revoked_reads() {
        let shape = shape(&["row_id"]);
        let mut batch = Batch::new(1, 4);
        batch.add(0, &shape, row("a", 9), origin(0, 10, 0));
        batch.add(0, &shape, row("a", 4), origin(0, 11, 0));
        batch.add(0, &shape, row("b", 1), origin(1, 20, 0));
        batch.add(0, &shape, row("c", 2), origin(1, 21, 1));
        batch.dead.push(Dead { reason: INVALID_ROW, detail: String::new(), origin: origin(1, 22, 0) });
        batch.next_offsets.insert(("rows".into(), 0), (12, 0));
        batch.next_offsets.insert(("rows".into(), 1), (22, 1));
        assert_eq!(batch.rows[0].iter().map(|r| (r.key(), r.version)).collect::<Vec<_>>(), [("a", 9), ("b", 1), ("c", 2)]);

        // Partition 1 was revoked once (generation 1) and came back: "c" was read since.
        let dropped = batch.drop_revoked(|_, partition| u64::from(partition == 1));
        assert_eq!(dropped, 2, "row b and the dead letter");
        assert_eq!(batch.rows[0].iter().map(|r| r.key()).collect::<Vec<_>>(), ["a", "c"]);
        assert!(batch.dead.is_empty());
        assert_eq!(batch.next_offsets.len(), 2);
        batch.add(0, &shape, row("c", 3), origin(1, 23, 1));
        assert_eq!(batch.rows[0].iter().map(|r| (r.key(), r.version)).collect::<Vec<_>>(), [("a", 9), ("c", 3)], "the index follows the rows");

        // Revoked again: its offset is not committed either.
        batch.drop_revoked(|_, partition| if partition == 1 { 2 } else { 0 });
        assert_eq!(batch.next_offsets.keys().map(|(_, p)| *p).collect::<Vec<_>>(), [0]);
    }
}
