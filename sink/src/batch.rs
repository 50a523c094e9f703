//! A batch of rows on its way to the targets: one row per key and route (the last one read
//! wins), where each partition's consumption got to, and the rows that became dead letters.
//! [`write`] hands it to the targets and retries each table until it commits.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::metrics::Metrics;
use crate::routes::Route;
use crate::service::FAILPOINT_ENV;
use crate::table::TableRow;
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
    index: Vec<HashMap<String, usize>>,
    /// The offset to commit per (topic, partition): one past the last record read.
    pub next_offsets: BTreeMap<(Arc<str>, i32), i64>,
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
}

/// A record that goes to the dead-letter topic instead of a table.
pub(crate) struct Dead {
    pub reason: &'static str,
    pub detail: String,
    pub origin: Origin,
}

impl Batch {
    pub fn new(routes: usize) -> Batch {
        Batch { rows: vec![Vec::new(); routes], origins: vec![Vec::new(); routes], index: vec![HashMap::new(); routes], ..Batch::default() }
    }

    /// Adds a row for `route`, replacing an earlier version of its key in this batch.
    pub fn add(&mut self, route: usize, row: TableRow, origin: Origin) {
        match self.index[route].get(&row.key) {
            Some(&at) => {
                self.rows[route][at] = row;
                self.origins[route][at] = origin;
            }
            None => {
                self.index[route].insert(row.key.clone(), self.rows[route].len());
                self.rows[route].push(row);
                self.origins[route].push(origin);
            }
        }
    }
}

/// What writing a batch to the targets did.
pub(crate) struct Written {
    /// Rows committed per route.
    pub rows: Vec<u64>,
    /// Failed attempts retried.
    pub retries: u64,
    /// Time of the successful attempts.
    pub seconds: f64,
}

/// Writes every route's rows of `batch` to its table, each retried with backoff until it
/// commits; rows the target refused become dead letters of the batch. Runs as its own task,
/// so the next batch is read and converted while the targets work on this one.
pub(crate) async fn write(
    mut targets: Targets,
    mut batch: Batch,
    routes: Arc<Vec<Route>>,
    metrics: Arc<Metrics>,
    max_backoff: Duration,
    mut failpoint: bool,
) -> (Targets, Batch, Written) {
    let mut written = Written { rows: vec![0; routes.len()], retries: 0, seconds: 0.0 };
    for (r, route) in routes.iter().enumerate() {
        if batch.rows[r].is_empty() {
            continue;
        }
        let (kind, table) = (route.kind, route.name.as_str());
        let mut backoff = Duration::from_millis(100);
        let refused = loop {
            let started = Instant::now();
            match targets[route.target].write(route.table, &mut batch.rows[r]).await {
                Ok(refused) => {
                    written.seconds += started.elapsed().as_secs_f64();
                    metrics.flush_seconds.with_label_values(&[kind]).observe(started.elapsed().as_secs_f64());
                    break refused;
                }
                Err(WriteError::Retry(e)) => {
                    metrics.retries.with_label_values(&[kind]).inc();
                    written.retries += 1;
                    warn!(target = kind, table, retry_in = ?backoff, "write failed: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        };
        let n = (batch.rows[r].len() - refused.len()) as u64;
        metrics.rows_written.with_label_values(&[kind, table]).inc_by(n);
        written.rows[r] = n;
        for (at, message) in refused {
            let origin = batch.origins[r][at].clone();
            batch.dead.push(Dead { reason: "refused_by_target", detail: format!("{}: {message}", route.label()), origin });
        }
        if std::mem::take(&mut failpoint) {
            error!("failpoint {FAILPOINT_ENV}=after-target-commit: aborting between the target's commit and the offset commit");
            std::process::abort();
        }
    }
    (targets, batch, written)
}
