//! The ingest gateway: producers POST envelopes over HTTP; the gateway validates each one and
//! answers only after the broker has stored every valid one. It also serves the canonical
//! definitions (schemas, dictionary, manifests).
//!
//! A request goes through, in order: the API key ([`keys`], 401), content type and encoding
//! ([`batch`], 415), body size before and after decompression (413), framing into items without
//! parsing them (NDJSON lines or a JSON array's top-level items; 413 past `--max-batch`), then
//! per item one strict decode by `pitgun_codec`'s decoder and the schema rules it leaves out
//! (`pitgun_codec::rules`), the key's source (403 for the whole batch), the dictionary ([`catalog`])
//! and the clock ([`validate`]). Valid items are written as Avro single objects straight from
//! the decoded view (`pitgun_codec::avro`) into a per-thread buffer reused between requests, and produced
//! keyed by session id; refused items go to the dead-letter topic with their reason in headers.
//! The answer waits for the broker's acknowledgement of the whole batch ([`produce`]) and is 503
//! with `Retry-After` if any record fails, times out or does not fit the producer queue — a
//! client resends the batch, and the engine drops the events it already has by event id.
//!
//! Statuses: 202 (at least one envelope stored; per-item errors listed), 422 (none valid), 400
//! (body not readable as items), 401, 403, 413, 415, 503. See the README's "Ingest gateway".
//!
//! Dependencies, one line each: `axum` (HTTP server), `http-body-util` (reading a body with a
//! size limit), `rdkafka` (the idempotent producer), `tokio` (runtime, signals), `prometheus`
//! (metrics), `flate2`/`zstd` (compressed bodies), `memchr` (NDJSON line splitting),
//! `rustc-hash` (channel lookups on the hot path), `sha2`/`hex` (API key hashes, ETags), `rand`
//! (new API keys), `serde_yaml_ng` (the keys file), `semver` (producer version ranges of
//! dictionary aliases), `humantime` (times and durations in error messages), `reqwest` (the HTTP
//! client of `pitgun simulate --target`), `thiserror` ([`error`]: what stops the gateway, typed;
//! `anyhow` stays in the binary).
#![deny(missing_docs)]

pub mod batch;
pub mod catalog;
pub mod client;
pub mod definitions;
pub mod error;
pub mod gateway;
pub mod keys;
pub mod metrics;
pub mod produce;
pub mod service;
pub mod validate;
