//! What every database the sink writes offers it: tables opened at start, addressed by index,
//! each batch of rows written and committed in one call. PostgreSQL ([`crate::postgres`]) and
//! QuestDB ([`crate::questdb`]) implement it; the loop knows no target by name.

use futures_util::future::BoxFuture;

use crate::table::TableRow;

/// Rows a target refused as invalid: their index in the batch and the target's message.
pub type Refused = Vec<(usize, String)>;

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The server or the connection failed: retry the whole batch later.
    #[error("{0}")]
    Retry(String),
}

/// A database the sink writes tables to. A write commits its rows (already one per key) or
/// fails whole with [`WriteError::Retry`]; writing the same rows again must leave the table as
/// one write would (an upsert by the row's key), because a crash between the target's commit
/// and the offset commit delivers them again.
pub trait Target: Send {
    /// `postgres`, `questdb`: the label in metrics, the summary and dead letters.
    fn kind(&self) -> &'static str;

    /// Writes `rows` to table `table` (its index among the tables the target was opened with)
    /// and commits them. Rows the target refused as invalid are returned and the rest are
    /// written. `rows` is borrowed mutably only so a target can move them to another thread
    /// for the write; it gives them back unchanged.
    fn write<'a>(&'a mut self, table: usize, rows: &'a mut Vec<TableRow>) -> BoxFuture<'a, Result<Refused, WriteError>>;

    /// Called after a write was dropped before it finished (the sink is stopping and the write
    /// outlived `--drain-timeout`): the server is asked to stop working on it, and what of it
    /// could still land is waited for, within a bound (the partitions' next owner may write the
    /// same rows next). The write may have committed or not, and its rows may not have been
    /// given back; the batch is not committed to Kafka, so its rows are read and written again,
    /// which the versioned upserts make harmless.
    fn abandon(&mut self) -> BoxFuture<'_, ()>;
}
