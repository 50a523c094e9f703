//! Pitgun's public contracts: the Rust side of the five JSON Schemas in `schemas/`.
//!
//! Design:
//! - The JSON Schemas under `schemas/` are the source of truth. They are embedded into this crate
//!   at build time ([`schema::SchemaSet`]), so validation never reaches the network and a binary
//!   always validates against the schemas it was built with. Tests hold the Rust types below
//!   against the schema examples, so the two cannot drift.
//! - Loading a document is three steps, each with errors that name file, line and JSON pointer:
//!   parse (YAML or JSON) → schema validation → strict typed parsing (`deny_unknown_fields`).
//!   Semantic checks (unknown metric, bad unit, formulas) belong to the engine's compiler.
//! - Content hashes are SHA-256 over the RFC 8785 canonical JSON of the parsed document
//!   ([`hash::content_hash`]), so reformatting a YAML file does not change its hash.
//! - Two rules other crates must share live here too: which channels a producer version may
//!   send ([`aliases`], read by the gateway and the engine alike) and the `runs` table the API
//!   serves ([`runs`], built by the sink).
#![deny(missing_docs)]

pub mod aliases;
pub mod analysis;
pub mod bundle;
pub mod dictionary;
pub mod envelope;
pub mod error;
pub mod hash;
pub mod load;
pub mod manifest;
pub mod runs;
pub mod schema;

pub use error::{ContractError, Issue};
