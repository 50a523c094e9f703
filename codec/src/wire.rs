//! Envelopes on the wire: Avro single-object encoding or JSON, told apart by the first bytes.
//!
//! Avro single-object encoding (Avro spec 1.12, "Single object encoding") is `C3 01`, the
//! 8-byte CRC-64-AVRO (Rabin) fingerprint of the writer's schema, then the binary datum. The
//! schema is `schemas/pitgun-envelope/v1.avsc`; a record with another fingerprint is refused with
//! both fingerprints named, never guessed at. JSON records start with `{` (after whitespace).

use pitgun_contracts::envelope::Envelope;

use crate::avro::{read_envelope, single_object_header, SINGLE_OBJECT_MAGIC};
use crate::Record;

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

/// Decodes records of either format.
pub struct Decoder {
    /// `C3 01` + the envelope schema's Rabin fingerprint.
    header: [u8; 10],
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { header: single_object_header() }
    }
}

impl Decoder {
    /// The Avro datum of a single object written with our schema; `None` for anything else
    /// (no error text: for callers that only look, such as the processor's grouping pass).
    pub fn avro_datum<'a>(&self, bytes: &'a [u8]) -> Option<&'a [u8]> {
        bytes.strip_prefix(&self.header[..])
    }

    /// Tells the record's format and checks the Avro fingerprint; the engine decodes the rest
    /// (`Runner::feed`).
    pub fn classify<'a>(&self, bytes: &'a [u8]) -> Result<Record<'a>, String> {
        match sniff(bytes) {
            WireFormat::Avro => match self.avro_datum(bytes) {
                Some(datum) => Ok(Record::Avro(datum)),
                None => Err(format!(
                    "Avro single object written with another schema: fingerprint {:02x?}, expected {:02x?} (pitgun-envelope/v1.avsc)",
                    &bytes[2..bytes.len().min(10)],
                    &self.header[2..]
                )),
            },
            WireFormat::Json => Ok(Record::Json(bytes)),
            WireFormat::Unknown => Err(format!(
                "neither an Avro single object (starts C3 01) nor a JSON envelope (starts with {{); first bytes {:02x?}",
                &bytes[..bytes.len().min(8)]
            )),
        }
    }

    /// The record as an owned envelope, booleans kept (for readers such as `tail` and `topic
    /// export`; the engine reads records through [`Decoder::classify`] and borrowed views).
    pub fn to_envelope(&self, bytes: &[u8]) -> Result<Envelope, String> {
        match self.classify(bytes)? {
            Record::Avro(datum) => read_envelope(datum).map_err(|e| format!("Avro record: {e}")),
            Record::Json(text) => serde_json::from_slice(text).map_err(|e| format!("JSON record: {e}")),
        }
    }

    /// Writes the record's envelope as JSON into `json` (replacing its content). A JSON record
    /// is passed through as is; the engine validates it.
    pub fn to_json(&self, bytes: &[u8], json: &mut String) -> Result<(), String> {
        json.clear();
        match self.classify(bytes)? {
            Record::Json(text) => json.push_str(crate::text::utf8(text).map_err(|e| format!("JSON record is not UTF-8: {e}"))?),
            Record::Avro(datum) => {
                let env = read_envelope(datum).map_err(|e| format!("Avro record: {e}"))?;
                *json = serde_json::to_string(&env).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::tests::reference_encode;

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
        let bytes = reference_encode(&env);
        assert_eq!(&bytes[..2], &SINGLE_OBJECT_MAGIC);
        assert_eq!(sniff(&bytes), WireFormat::Avro);
        let mut json = String::new();
        Decoder::default().to_json(&bytes, &mut json).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), env);
    }

    /// The engine's direct Avro decoder reads exactly what `apache-avro` wrote, field for field,
    /// as the JSON decoder reads the same envelope.
    #[test]
    fn the_avro_reader_agrees_with_apache_avro_and_json() {
        use crate::avro::{datum_len, decode_avro_into};
        use crate::json::{decode, EnvelopeView};
        let dec = Decoder::default();
        for i in 0..200u32 {
            let mut env = sample();
            env.seq = u64::from(i) * 1_000_003;
            env.time_us = 1_700_000_000_000_000 + i64::from(i) * 16_667;
            env.session_id = format!("sessión-{i}-ü");
            env.channels.clear();
            for c in 0..(i % 40) {
                let v = if c % 5 == 0 {
                    pitgun_contracts::envelope::ChannelValue::Bool(c % 2 == 0)
                } else {
                    pitgun_contracts::envelope::ChannelValue::Number(f64::from(c) * -1.5e-3 + f64::from(i))
                };
                env.channels.insert(format!("ch_{c}"), v);
            }
            if i % 3 == 0 {
                env.dims.clear();
            } else {
                env.dims.insert("car".into(), format!("car-{i}"));
            }
            let bytes = reference_encode(&env);
            assert_eq!(dec.to_envelope(&bytes).unwrap(), env, "envelope {i}");
            let Record::Avro(datum) = dec.classify(&bytes).unwrap() else { panic!("not Avro") };
            let mut a = EnvelopeView::empty();
            decode_avro_into(datum, &mut a).unwrap();
            assert_eq!(datum_len(datum).unwrap(), datum.len());
            let json = serde_json::to_string(&env).unwrap();
            let mut j = decode(&json).unwrap();
            // Avro maps carry no order (apache-avro writes them from a hash map); the engine
            // looks channels and dimensions up by name.
            fn sorted(v: &mut EnvelopeView<'_>) {
                v.channels.sort_by(|x, y| x.0.cmp(&y.0));
                v.dims.sort_by(|x, y| x.0.cmp(&y.0));
            }
            sorted(&mut a);
            sorted(&mut j);
            assert_eq!(format!("{a:?}"), format!("{j:?}"), "envelope {i}");
            // A truncated datum is an error naming a field, never a panic.
            for cut in [1, datum.len() / 2, datum.len() - 1] {
                let mut v = EnvelopeView::empty();
                assert!(decode_avro_into(&datum[..cut], &mut v).is_err());
            }
        }
    }

    #[test]
    fn a_foreign_fingerprint_and_garbage_are_refused_with_reasons() {
        let mut bytes = reference_encode(&sample());
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
