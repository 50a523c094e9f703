//! Envelopes on the wire: Avro single-object encoding or JSON, told apart by the first bytes.
//!
//! Avro single-object encoding (Avro spec 1.12, "Single object encoding") is `C3 01`, the
//! 8-byte CRC-64-AVRO (Rabin) fingerprint of the writer's schema, then the binary datum. The
//! schema is `schemas/pitgun-envelope/v1.avsc`; a record with another fingerprint is refused with
//! both fingerprints named, never guessed at. JSON records start with `{` (after whitespace).

use apache_avro::{GenericSingleObjectReader, GenericSingleObjectWriter, Schema};
use pitgun_contracts::envelope::Envelope;
use pitgun_contracts::schema::ENVELOPE_AVRO_SCHEMA;

/// The two bytes that start an Avro single-object encoded record.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];

/// Which format a record is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// Avro single-object encoding.
    Avro,
    /// A JSON envelope.
    Json,
    /// Neither.
    Unknown,
}

/// Tells the format from the first bytes.
pub fn sniff(bytes: &[u8]) -> WireFormat {
    if bytes.starts_with(&SINGLE_OBJECT_MAGIC) {
        return WireFormat::Avro;
    }
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => WireFormat::Json,
        _ => WireFormat::Unknown,
    }
}

/// The envelope Avro schema, parsed.
pub fn envelope_schema() -> Schema {
    Schema::parse_str(ENVELOPE_AVRO_SCHEMA).expect("the embedded envelope .avsc parses (tested)")
}

/// Encodes envelopes as Avro single objects.
pub struct AvroEncoder {
    schema: Schema,
    writer: GenericSingleObjectWriter,
}

impl Default for AvroEncoder {
    fn default() -> Self {
        let schema = envelope_schema();
        let writer = GenericSingleObjectWriter::new_with_capacity(&schema, 1024).expect("schema resolves");
        AvroEncoder { schema, writer }
    }
}

impl AvroEncoder {
    /// Appends the single-object encoding of `env` to `out`.
    pub fn encode(&mut self, env: &Envelope, out: &mut Vec<u8>) -> Result<(), String> {
        let value = apache_avro::to_value(env).map_err(|e| e.to_string())?;
        let value = value.resolve(&self.schema).map_err(|e| format!("envelope does not fit the Avro schema: {e}"))?;
        self.writer.write_value(value, out).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Decodes records of either format into JSON envelope text, the engine's input.
pub struct Decoder {
    avro: GenericSingleObjectReader,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { avro: GenericSingleObjectReader::new(envelope_schema()).expect("schema resolves") }
    }
}

impl Decoder {
    /// Writes the record's envelope as JSON into `json` (replacing its content). A JSON record
    /// is passed through as is; the engine validates it.
    pub fn to_json(&self, bytes: &[u8], json: &mut String) -> Result<(), String> {
        json.clear();
        match sniff(bytes) {
            WireFormat::Json => {
                let text = std::str::from_utf8(bytes).map_err(|e| format!("JSON record is not UTF-8: {e}"))?;
                json.push_str(text);
                Ok(())
            }
            WireFormat::Avro => {
                let value = self.avro.read_value(&mut &bytes[..]).map_err(|e| format!("Avro single object: {e}"))?;
                let env: Envelope = apache_avro::from_value(&value).map_err(|e| format!("Avro record is not an envelope: {e}"))?;
                *json = serde_json::to_string(&env).map_err(|e| e.to_string())?;
                Ok(())
            }
            WireFormat::Unknown => Err(format!(
                "neither an Avro single object (starts C3 01) nor a JSON envelope (starts with {{); first bytes {:02x?}",
                &bytes[..bytes.len().min(8)]
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        serde_json::from_str(
            r#"{"schema":"pitgun-envelope/v1","event_id":"e1","source":{"kind":"game","id":"pitgun-web","version":"1.2.0"},
               "session_id":"s1","seq":3,"time_us":1700000000000000,"kind":"sample","channels":{"speed_kmh":123.5,"abs":true},
               "dims":{"track":"monza"}}"#,
        )
        .unwrap()
    }

    #[test]
    fn avro_single_object_round_trips_to_the_same_json() {
        let env = sample();
        let mut bytes = Vec::new();
        AvroEncoder::default().encode(&env, &mut bytes).unwrap();
        assert_eq!(&bytes[..2], &SINGLE_OBJECT_MAGIC);
        assert_eq!(sniff(&bytes), WireFormat::Avro);
        let mut json = String::new();
        Decoder::default().to_json(&bytes, &mut json).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), env);
    }

    #[test]
    fn a_foreign_fingerprint_and_garbage_are_refused_with_reasons() {
        let mut bytes = Vec::new();
        AvroEncoder::default().encode(&sample(), &mut bytes).unwrap();
        bytes[5] ^= 0xff;
        let mut json = String::new();
        let err = Decoder::default().to_json(&bytes, &mut json).unwrap_err();
        assert!(err.contains("Avro single object"), "{err}");
        let err = Decoder::default().to_json(b"\x00\x01garbage", &mut json).unwrap_err();
        assert!(err.contains("neither an Avro single object"), "{err}");
        Decoder::default().to_json(b" {\"a\":1}", &mut json).unwrap();
        assert_eq!(json, " {\"a\":1}");
    }
}
