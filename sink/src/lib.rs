//! Sink workers: the rows of manifest versions' aggregates topics, written to the tables their
//! manifests' `output.sinks` name, effectively once.
//!
//! Design:
//! - **Effectively once without transactions.** A batch of rows is written to every target
//!   and committed there; only then are the batch's offsets committed to the consumer group.
//!   A crash in between re-delivers the batch, and every write is an upsert by the row's key
//!   (`row_id`; `session_id` for `runs`), so re-delivered rows and windows the processor
//!   re-emitted replace their earlier versions — never a newer one: rows carry a version
//!   (`pitgun-row-version`) and a table keeps the highest. Within a batch only the newest
//!   version of a key is written, rows of a partition revoked before their write are
//!   dropped, and a revocation waits for the batch being written, so a partition's new owner
//!   always writes after its previous one.
//! - **Back-pressure, bounded memory.** A target that fails is retried with exponential
//!   backoff; the loop takes no new rows meanwhile, so rows wait in Kafka, not in memory.
//! - **Bad rows do not stop the sink.** A row that does not fit its table's shape, or that the
//!   target refuses as invalid, goes to `pitgun.deadletter.sink.v1` with the reason; the rest
//!   of the batch is written.
//! - **Tables follow the contracts** ([`table`]): created through a registry the sink owns,
//!   never altered incompatibly. `runs` has its own explicit mapping ([`runs_table`]).
//! - **Targets behind one interface** ([`target::Target`]): PostgreSQL and QuestDB; the loop
//!   routes rows to a table index of a target and knows neither by name.
//!
//! Dependencies: `thiserror` ([`error`] and the write error, typed; `anyhow` stays in the binary), `tokio-postgres` (PostgreSQL client, binary `COPY`), `bytes` and
//! `futures-util` (what its `COPY` writer and `ToSql` need; shards written together), `xxhash-rust`
//! (a row key's shard and hash), `hashbrown` (its `HashTable`: the batch's index of keys, read from the rows
//! rather than copied), `rdkafka`, `prometheus`, `sha2`
//! (the registry's shape hashes), `pitgun-codec` (the JSON cursor and UTF-8 check a row's direct scan
//! shares with the envelope scan).
#![deny(missing_docs)]

mod batch;
pub mod error;
pub mod metrics;
mod pg_binary;
pub mod postgres;
pub mod questdb;
mod routes;
pub mod runs_table;
mod service;
pub mod table;
pub mod target;

pub use service::{run, Config, SinkManifest, Summary};

/// A contract shipped in `manifests/pipelines/` (unit tests).
#[cfg(test)]
pub(crate) fn shipped_contract(name: &str) -> pitgun_contracts::analysis::AnalysisContract {
    let path = format!("{}/../manifests/pipelines/{name}.contract.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}
