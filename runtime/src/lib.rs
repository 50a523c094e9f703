//! What Pitgun's live services share, so the gateway, the processor and the tools agree on it:
//!
//! - [`kafka`]: client settings for the broker, topic names (with an optional namespace prefix,
//!   so tests and tenants never see each other's data) and topic creation;
//! - [`kafka_log`]: librdkafka's errors and log lines, each kind once per interval;
//! - [`serve`]: the `/metrics`, `/healthz` and `/readyz` endpoints every service exposes;
//! - [`http`]: the accept loop of every HTTP server, with a deadline on each request's head;
//! - [`browser`]: what the gateway and the API need for browser clients: session tokens, CORS;
//! - [`quota`]: per-client request quotas and the client's address, for the gateway and the API;
//! - [`memory`]: the process's peak resident memory, for exit summaries;
//! - [`stop`]: the signals that ask a service to stop;
//! - [`error`]: what can go wrong there, typed (`thiserror`); `anyhow` stays in the binary.
//!
//! Topic contracts are documented in `schemas/topics.md`.
#![deny(missing_docs)]

pub mod browser;
pub mod error;
pub mod http;
pub mod kafka;
pub mod kafka_log;
pub mod memory;
pub mod quota;
pub mod serve;
pub mod sql;
pub mod stop;
