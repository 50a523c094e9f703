//! The engine's Kafka runtime: one consumer group per manifest version, RocksDB state,
//! checkpoints that make a crash (even `kill -9`) lose nothing and double nothing.
//!
//! Design:
//! - The pure engine (`pitgun-engine`) runs once per *input partition*, so a partition's state
//!   can be checkpointed, revoked and handed to another replica on its own.
//! - Session state lives in memory while a partition is owned ([`state::PartitionStore`]
//!   tracks which sessions changed) and is written to RocksDB at every checkpoint, together
//!   with the partition's consumed offset, in **one atomic write batch**. Before that batch is
//!   written, the producer is flushed and every row emitted so far must be acknowledged by the
//!   broker; only after the batch is the offset committed to the group (for lag in standard
//!   tools). After a crash the processor seeks to its *own* checkpointed offsets, re-emits what
//!   it had emitted after them (same rows, same `row_id`s — sinks upsert), and goes on.
//! - Each checkpoint's state changes are also written to the partition's share of the state
//!   changelog topic before the offsets are committed ([`changelog`]). A partition with no local
//!   checkpoint at the group's offset (an empty state folder, or a partition that came from
//!   another replica in a rebalance) is restored from the changelog, and continues from the
//!   committed offset; only when the changelog cannot give that state (turned off, or its
//!   snapshot past retention) is it rebuilt from the earliest retained offset. This broker has
//!   no transactions, so this is the effectively-once contract: atomic state+offset checkpoints
//!   here, idempotent upserts downstream.
//! - Each owned partition's records come through its own librdkafka queue, read in batches
//!   ([`queue`]), so `--threads` engine threads feed partitions in parallel: in *rounds*, each
//!   thread takes whichever partition is free for a chunk of records; one partition is never
//!   fed by two threads at once, so its order is kept. A chunk is fed grouped by session
//!   ([`group`]): sessions are independent, and a session's state stays in cache for its share.
//!   Between rounds the polling thread alone serves librdkafka's events — a rebalance
//!   callback runs inside `poll`, so a revoked partition is checkpointed before it is given up
//!   — and writes checkpoints, while no engine runs.
//!
//! Rooms: [`service`] sets up and runs the polling loop over the state it shares with the
//! rebalance callback ([`worker`], [`rebalance`]); [`partition`] feeds one partition's records,
//! [`outlet`] sends the outputs, [`scheduler`] spreads rounds over the engine threads, and
//! [`checkpoint`] writes the checkpoint protocol above.
//!
//! Dependencies: `rdkafka` (the Kafka client), `rocksdb` (state), `postcard` (compact bytes of
//! session state, via the engine), `prometheus` (metrics), `signal-hook` (SIGTERM → final
//! checkpoint), `send_wrapper` (lets librdkafka's rebalance callback, which runs on the polling
//! thread, reach the shared state without a lock, with a runtime check of that thread),
//! `thiserror` ([`error`]: what stops the processor, typed; `anyhow` stays in the binary).
#![deny(missing_docs)]

mod changelog;
mod checkpoint;
mod config;
pub mod error;
pub mod group;
pub mod metrics;
mod outlet;
mod partition;
pub mod queue;
mod rebalance;
mod scheduler;
mod service;
pub mod state;
mod worker;

pub use config::{Config, PlanFactory, Summary};
pub use error::{Error, Result};
pub use service::run;
