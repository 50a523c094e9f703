//! The envelope in Avro (`schemas/pitgun-envelope/v1.avsc`): one reader and one writer of its
//! binary datum, the single-object header, and object container files.
//!
//! Both directions read and write the binary encoding by hand, because the schema is flat and
//! `apache-avro`'s value tree costs an allocation per field; `apache-avro` parses the schema
//! (for the header's fingerprint) and, in the tests, holds both against its own encoder.

pub mod container;
mod read;
mod write;

use apache_avro::headers::{HeaderBuilder, RabinFingerprintHeader};
use apache_avro::Schema;
use pitgun_contracts::envelope::{EventKind, SourceKind};
use pitgun_contracts::schema::ENVELOPE_AVRO_SCHEMA;

pub use read::{datum_len, decode_avro_into, read_envelope, session_id_of, DatumReader};
pub use write::{AvroWriter, TextEncoder};

/// The two bytes that start an Avro single-object encoded record.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];

/// `source.kind` symbols in the `.avsc`'s order (a test reads them from the `.avsc`).
pub(crate) const SOURCE_KINDS: [SourceKind; 4] = [SourceKind::Game, SourceKind::Simulator, SourceKind::Device, SourceKind::Replay];
/// `kind` symbols in the `.avsc`'s order (a test reads them from the `.avsc`).
pub(crate) const EVENT_KINDS: [EventKind; 9] = EventKind::ALL;

/// The envelope Avro schema, parsed.
pub fn envelope_schema() -> Schema {
    Schema::parse_str(ENVELOPE_AVRO_SCHEMA).expect("the embedded envelope .avsc parses (tested)")
}

/// `C3 01` + the CRC-64-AVRO (Rabin) fingerprint of the envelope schema.
pub fn single_object_header() -> [u8; 10] {
    let header = RabinFingerprintHeader::from_schema(&envelope_schema()).build_header();
    header.try_into().expect("a single-object header is 10 bytes")
}

#[cfg(test)]
pub(crate) mod tests {
    use pitgun_contracts::envelope::Envelope;

    use super::*;

    /// `apache-avro`'s single-object encoding of `env`: the reference the reader and writer
    /// are held to.
    pub(crate) fn reference_encode(env: &Envelope) -> Vec<u8> {
        let schema = envelope_schema();
        let value = apache_avro::to_value(env).unwrap().resolve(&schema).unwrap();
        let mut out = Vec::new();
        apache_avro::GenericSingleObjectWriter::new_with_capacity(&schema, 1024).unwrap().write_value(value, &mut out).unwrap();
        out
    }

    /// Avro's zig-zag varint of a non-negative count, for containers written by hand.
    pub(crate) fn zigzag(n: usize, out: &mut Vec<u8>) {
        let mut v = (n as u64) << 1;
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn symbols(avsc: &serde_json::Value, path: &[&str]) -> Vec<String> {
        let mut t = avsc;
        for name in path {
            t = t["fields"].as_array().unwrap().iter().find(|f| f["name"] == *name).map(|f| &f["type"]).unwrap();
        }
        t["symbols"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
    }

    /// A datum's length does not depend on whether its values pass the checks: a container
    /// with one bad value yields that record, which the engine then refuses on its own.
    #[test]
    fn a_bad_value_has_a_length_and_a_decode_error() {
        let text = r#"{"schema":"pitgun-envelope/v1","event_id":"e","source":{"kind":"game","id":"d","version":"2.0.0"},"session_id":"s","seq":1,"time_us":5,"kind":"lap","channels":{"x":1.5}}"#;
        let mut view = crate::json::decode(text).unwrap();
        view.channels[0].1 = f64::NAN;
        let mut bytes = Vec::new();
        AvroWriter::new().write(&view, &[], &mut bytes);
        let datum = &bytes[10..];
        assert_eq!(datum_len(datum).unwrap(), datum.len());
        let err = decode_avro_into(datum, &mut crate::json::EnvelopeView::empty()).unwrap_err();
        assert!(err.to_string().contains("/channels/x"), "{err}");
    }

    /// A channel written twice is refused by the owned reader too (`validate`, `publish`,
    /// `tail`), as the engine's readers refuse it: collecting channels into a map kept the last
    /// copy and passed the record on as if it had been written once.
    #[test]
    fn a_channel_written_twice_is_refused_by_the_owned_reader() {
        let text = r#"{"schema":"pitgun-envelope/v1","event_id":"e","source":{"kind":"game","id":"pitgun-web","version":"1.4.2"},"session_id":"s","seq":1,"time_us":5,"kind":"sample","channels":{"speed_kmh":1,"gear":2,"speed_kmh":3}}"#;
        let view = crate::json::decode(text).unwrap();
        assert_eq!(view.channels.len(), 3);
        let mut bytes = Vec::new();
        AvroWriter::new().write(&view, &[], &mut bytes);
        let datum = &bytes[10..];
        let err = read_envelope(datum).unwrap_err();
        assert!(err.message.contains("more than once"), "{err}");
        let mut view = crate::json::EnvelopeView::empty();
        decode_avro_into(datum, &mut view).unwrap();
        let engine = crate::rules::unique_channels(&view).unwrap_err();
        assert_eq!((err.pointer.as_str(), err.message), ("/channels/speed_kmh", engine.message), "one rule, one wording");
    }

    #[test]
    fn a_container_header_with_the_most_negative_count_is_an_error() {
        let mut file = b"Obj\x01".to_vec();
        file.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]); // zig-zag i64::MIN
        file.extend_from_slice(&[0x02, 0x00]);
        assert!(container::ContainerReader::new(&file[..]).is_err());
    }

    /// Found by the `avro_container` fuzz target: `apache-avro` panics (an `unwrap`) on a named
    /// type, an alias or a type reference that is not an Avro name; a damaged header is an error.
    #[test]
    fn a_container_schema_with_a_name_avro_does_not_allow_is_an_error() {
        let damaged = [
            ENVELOPE_AVRO_SCHEMA.replacen("\"Envelope\"", "\"Env\u{fffd}e\"", 1),
            ENVELOPE_AVRO_SCHEMA.replacen("\"name\": \"Envelope\",", "\"name\": \"Envelope\", \"aliases\": [\"`it_in\"],", 1),
            ENVELOPE_AVRO_SCHEMA.replacen("\"type\": \"long\"", "\"type\": \"lo ng\"", 1),
        ];
        for schema in damaged {
            assert_ne!(schema, ENVELOPE_AVRO_SCHEMA);
            let mut file = b"Obj\x01".to_vec();
            zigzag(1, &mut file);
            zigzag(11, &mut file);
            file.extend_from_slice(b"avro.schema");
            zigzag(schema.len(), &mut file);
            file.extend_from_slice(schema.as_bytes());
            file.push(0);
            file.extend_from_slice(&[7; 16]);
            let err = container::ContainerReader::new(&file[..]).err().expect("refused");
            assert!(err.contains("avro.schema"), "{err}");
        }
    }

    #[test]
    fn symbol_orders_are_the_avsc_orders() {
        let avsc: serde_json::Value = serde_json::from_str(ENVELOPE_AVRO_SCHEMA).unwrap();
        let kinds: Vec<String> = EVENT_KINDS.iter().map(|k| k.as_str().to_string()).collect();
        assert_eq!(symbols(&avsc, &["kind"]), kinds);
        let sources: Vec<String> = SOURCE_KINDS.iter().map(|k| serde_json::to_value(k).unwrap().as_str().unwrap().to_string()).collect();
        assert_eq!(symbols(&avsc, &["source", "kind"]), sources);
    }
}
