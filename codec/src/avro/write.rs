//! The one Avro writer: single-object encoding straight from a decoded envelope view.
//!
//! `apache-avro` goes through its value tree (a tree of allocations per envelope), which would
//! cost the gateway more than validation. The envelope schema is flat, so this writer emits the
//! bytes directly into a reused buffer; tests hold it byte for byte against `apache-avro`.
//!
//! Channel values are typed by the caller: a channel it marks boolean travels as an Avro
//! boolean when its value is 0 or 1 (`true`/`false` and `1`/`0` are the same reading to the
//! engine), everything else as a double. Channels and dimensions are written as given: every
//! caller has refused a repeated channel name first ([`crate::rules::unique_channels`]), and the
//! decoders a repeated dimension ([`crate::rules::unique_dims`]).

use std::borrow::Cow;

use super::{single_object_header, EVENT_KINDS, SOURCE_KINDS};
use crate::json::{decode_into, DecodeError, EnvelopeView};
use crate::rules::check;

/// Writes envelopes as Avro single objects.
#[derive(Clone)]
pub struct AvroWriter {
    header: [u8; 10],
}

impl Default for AvroWriter {
    fn default() -> Self {
        AvroWriter::new()
    }
}

/// Avro single objects from envelope JSON text, exactly as the gateway writes them: checked by
/// the strict decoder and the schema's rules ([`crate::rules::check`]; the dictionary is the
/// gateway's alone), channels and dimensions in the envelope's own order, a channel written as a
/// JSON boolean as an Avro boolean. For producers that hold the JSON text (`pitgun publish`,
/// benchmarks); the gateway types booleans from the dictionary instead.
#[derive(Default)]
pub struct TextEncoder {
    writer: AvroWriter,
    booleans: Vec<bool>,
}

impl TextEncoder {
    /// Appends the encoding of the envelope `text` to `out`; the decoded envelope, or where and
    /// why the text is not one.
    pub fn encode<'t>(&mut self, text: &'t str, out: &mut Vec<u8>) -> Result<EnvelopeView<'t>, DecodeError> {
        let mut view = EnvelopeView::empty();
        decode_into(text, &mut view)?;
        check(&view)?;
        self.booleans.clear();
        // The view holds booleans as 1 and 0; which were booleans takes a second look, and
        // only a text with a `true` or `false` in it can hold one.
        if text.contains("true") || text.contains("false") {
            json_booleans(text, &mut self.booleans)?;
        }
        self.writer.write(&view, &self.booleans, out);
        Ok(view)
    }
}

/// Whether each channel of the envelope `text` (decoded already) is written as a JSON boolean,
/// in the channels' order.
fn json_booleans(text: &str, out: &mut Vec<bool>) -> Result<(), DecodeError> {
    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
    use std::fmt;

    /// The envelope object: `channels` read for its values' types, every other member skipped.
    struct Members<'v>(&'v mut Vec<bool>);
    /// A member name: whether it is `channels`.
    struct IsChannels(bool);
    /// A channel value: whether it is a boolean.
    struct IsBool(bool);

    impl<'de> de::Deserialize<'de> for IsChannels {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<IsChannels, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = IsChannels;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a member name")
                }
                fn visit_str<E>(self, v: &str) -> Result<IsChannels, E> {
                    Ok(IsChannels(v == "channels"))
                }
            }
            d.deserialize_str(V)
        }
    }

    impl<'de> de::Deserialize<'de> for IsBool {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<IsBool, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = IsBool;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a number or a boolean")
                }
                fn visit_bool<E>(self, _: bool) -> Result<IsBool, E> {
                    Ok(IsBool(true))
                }
                fn visit_f64<E>(self, _: f64) -> Result<IsBool, E> {
                    Ok(IsBool(false))
                }
                fn visit_i64<E>(self, _: i64) -> Result<IsBool, E> {
                    Ok(IsBool(false))
                }
                fn visit_u64<E>(self, _: u64) -> Result<IsBool, E> {
                    Ok(IsBool(false))
                }
            }
            d.deserialize_any(V)
        }
    }
    struct Channels<'v>(&'v mut Vec<bool>);
    impl<'de> DeserializeSeed<'de> for Channels<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Channels<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("the channels object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while map.next_key::<IgnoredAny>()?.is_some() {
                self.0.push(map.next_value::<IsBool>()?.0);
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Members<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Members<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an envelope")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(IsChannels(channels)) = map.next_key()? {
                if channels {
                    map.next_value_seed(Channels(&mut *self.0))?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    Members(out).deserialize(&mut de).map_err(|e| DecodeError { pointer: "/channels".into(), message: e.to_string() })
}

fn index_of<T: PartialEq>(all: &[T], x: &T) -> i64 {
    all.iter().position(|k| k == x).expect("every kind is in the .avsc (tested)") as i64
}

impl AvroWriter {
    /// A writer for `pitgun-envelope/v1.avsc`.
    pub fn new() -> AvroWriter {
        AvroWriter { header: single_object_header() }
    }

    /// Appends the single-object encoding of `view` to `out`. `booleans[i]` says whether the
    /// dictionary types channel `i` as a boolean (missing entries: not).
    pub fn write(&self, view: &EnvelopeView<'_>, booleans: &[bool], out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header);
        string(out, &view.schema);
        string(out, &view.event_id);
        long(out, index_of(&SOURCE_KINDS, &view.source.kind));
        string(out, &view.source.id);
        string(out, &view.source.version);
        string(out, &view.session_id);
        long(out, view.seq as i64);
        long(out, view.time_us);
        long(out, index_of(&EVENT_KINDS, &view.kind));

        write_map(out, &view.channels, |out, i, value| {
            if booleans.get(i).copied().unwrap_or(false) && (*value == 0.0 || *value == 1.0) {
                out.push(2); // union branch 1: boolean
                out.push(u8::from(*value == 1.0));
            } else {
                out.push(0); // union branch 0: double
                out.extend_from_slice(&value.to_le_bytes());
            }
        });
        // The decoders refuse a name written twice, so each map's names are distinct.
        write_map(out, &view.dims, |out, _, value| string(out, value));
    }
}

/// Writes an Avro map: one block of every entry, then the end marker.
fn write_map<V>(out: &mut Vec<u8>, entries: &[(Cow<'_, str>, V)], mut value: impl FnMut(&mut Vec<u8>, usize, &V)) {
    if !entries.is_empty() {
        long(out, entries.len() as i64);
        for (i, (name, v)) in entries.iter().enumerate() {
            string(out, name);
            value(out, i, v);
        }
    }
    out.push(0);
}

/// Avro's zig-zag varint.
pub(super) fn long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Avro's string (and bytes): length, then the bytes.
pub(super) fn string(out: &mut Vec<u8>, s: &str) {
    long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use pitgun_contracts::envelope::{ChannelValue, Envelope, EventKind, Source, SourceKind};

    use super::*;
    use crate::avro::tests::reference_encode;
    use crate::wire::Decoder;

    fn sample(kind: EventKind, source: SourceKind) -> Envelope {
        Envelope {
            schema: pitgun_contracts::envelope::ENVELOPE_SCHEMA_V1.into(),
            event_id: "e-ü".into(),
            source: Source { kind: source, id: "pitgun-web".into(), version: "1.4.2".into() },
            session_id: "s1".into(),
            seq: 300,
            time_us: 1_700_000_000_123_456,
            kind,
            channels: [
                ("a".to_string(), ChannelValue::Number(-1.5)),
                ("in_pit".to_string(), ChannelValue::Bool(true)),
                ("z".to_string(), ChannelValue::Number(1e300)),
            ]
            .into_iter()
            .collect(),
            dims: [("car".to_string(), "c7".to_string()), ("track".to_string(), "monza".to_string())].into_iter().collect(),
        }
    }

    /// Byte-equal to `apache-avro` where it is deterministic (its maps are hash maps, so with
    /// several entries only the decoded envelope can be compared), for every event and source
    /// kind, and decodable into the same envelope.
    #[test]
    fn agrees_with_apache_avro_for_every_kind() {
        let writer = AvroWriter::new();
        let decoder = Decoder::default();
        for (i, kind) in EventKind::ALL.into_iter().enumerate() {
            let full = sample(kind, SOURCE_KINDS[i % 4]);
            let mut single = full.clone();
            single.channels.retain(|k, _| k == "in_pit");
            single.dims.retain(|k, _| k == "track");
            for (env, bytes_must_match) in [(single, true), (full, false)] {
                let theirs = reference_encode(&env);
                let text = serde_json::to_string(&env).unwrap();
                let view = crate::json::decode(&text).unwrap();
                let booleans: Vec<bool> = view.channels.iter().map(|(n, _)| n == "in_pit").collect();
                let mut ours = Vec::new();
                writer.write(&view, &booleans, &mut ours);
                assert_eq!(decoder.to_envelope(&ours).unwrap(), env, "{text}");
                if bytes_must_match {
                    assert_eq!(ours, theirs, "{text}");
                }
            }
        }
    }

    /// The text encoder writes what the envelope says: a channel written as a JSON boolean
    /// travels as an Avro boolean, whatever else says `true` (a dimension value, an escaped
    /// member name), and `1` stays a double.
    #[test]
    fn the_text_encoder_types_json_booleans_and_nothing_else() {
        let decoder = Decoder::default();
        let texts = [
            (
                r#"{"schema":"pitgun-envelope/v1","event_id":"e","source":{"kind":"game","id":"g","version":"1.0.0"},"session_id":"s","seq":1,"time_us":5,"kind":"sample","channels":{"x":1,"in_pit":true,"y":false},"dims":{"t":"true"}}"#,
                [false, true, true],
            ),
            (
                r#"{"schema":"pitgun-envelope/v1","event_id":"e","source":{"kind":"game","id":"g","version":"1.0.0"},"session_id":"s","seq":1,"time_us":5,"kind":"sample","dims":{"t":"true"},"chann\u0065ls":{"x":1,"in_pit":0,"y":true}}"#,
                [false, false, true],
            ),
            (
                r#"{"schema":"pitgun-envelope/v1","event_id":"true","source":{"kind":"game","id":"g","version":"1.0.0"},"session_id":"s","seq":1,"time_us":5,"kind":"sample","channels":{"x":1,"in_pit":0,"y":1}}"#,
                [false, false, false],
            ),
        ];
        for (text, booleans) in texts {
            let mut ours = Vec::new();
            let view = TextEncoder::default().encode(text, &mut ours).unwrap();
            assert_eq!(view.session_id, "s");
            let mut want = Vec::new();
            AvroWriter::new().write(&crate::json::decode(text).unwrap(), &booleans, &mut want);
            assert_eq!(ours, want, "{text}");
            let env = decoder.to_envelope(&ours).unwrap();
            let bools: Vec<bool> = ["x", "in_pit", "y"].iter().map(|c| matches!(env.channels[*c], ChannelValue::Bool(_))).collect();
            assert_eq!(bools, booleans, "{text}");
        }
    }

    #[test]
    fn a_written_record_reads_back_as_its_json() {
        let w = AvroWriter::new();
        let text = r#"{"schema":"pitgun-envelope/v1","event_id":"e\"1","source":{"kind":"device","id":"d","version":"2.0.0"},"session_id":"s","seq":0,"time_us":5,"kind":"lap","channels":{"x":2.5,"in_pit":0.5},"dims":{"t":"a","u":"b"}}"#;
        let view = crate::json::decode(text).unwrap();
        let mut bytes = Vec::new();
        w.write(&view, &[false, true], &mut bytes);
        let mut json = String::new();
        Decoder::default().to_json(&bytes, &mut json).unwrap();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["channels"], serde_json::json!({"x": 2.5, "in_pit": 0.5}), "0.5 is no boolean");
        assert_eq!(back["dims"], serde_json::json!({"t": "a", "u": "b"}));
        assert_eq!(back["event_id"], "e\"1");
        let empty = r#"{"schema":"pitgun-envelope/v1","event_id":"e","source":{"kind":"game","id":"d","version":"2.0.0"},"session_id":"s","seq":9223372036854775807,"time_us":253402300799999999,"kind":"marker"}"#;
        bytes.clear();
        w.write(&crate::json::decode(empty).unwrap(), &[], &mut bytes);
        Decoder::default().to_json(&bytes, &mut json).unwrap();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["seq"], 9223372036854775807u64);
        assert_eq!(back["time_us"], 253402300799999999i64);
    }
}
