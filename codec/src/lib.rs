//! Every way an envelope is read or written, in one place: the JSON view decoder ([`json`]),
//! the rules of `pitgun-envelope/v1` a decoder's types do not carry ([`rules`]), the Avro datum
//! reader and writer and object container files ([`avro`]), the wire framing of a Kafka record
//! ([`wire`]), dataset files ([`dataset`]) and the session-id peek a driver groups records by
//! ([`session`]).
//!
//! It depends only on `contracts`, so the gateway parses envelopes without linking the engine.
//! Dependencies: `serde`/`serde_json` (the JSON view), `serde_path_to_error` (error pointers),
//! `smallvec` (channels without a heap allocation), `apache-avro` (schema fingerprint, container
//! writing), `flate2`/`zstd` (compressed datasets and container blocks), `memchr` (line
//! splitting), `simdutf8` (a record's UTF-8 check, vectorised), `thiserror` (the dataset error).

pub mod avro;
pub mod dataset;
pub mod json;
pub mod rules;
pub mod session;
pub mod text;
pub mod wire;

pub use json::{DecodeError, EnvelopeView};

/// One stored or received record, by format: what a driver hands to the engine.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    /// An Avro binary datum of the envelope schema (after the single-object header, or one
    /// datum of an object container file).
    Avro(&'a [u8]),
    /// A JSON envelope (not yet checked to be UTF-8).
    Json(&'a [u8]),
}
