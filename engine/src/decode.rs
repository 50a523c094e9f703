//! Fast, strict decoding of JSON envelopes into borrowed views (no per-event heap allocation).
//!
//! The typed parse enforces what `pitgun-envelope/v1` says (required fields, types, no unknown
//! fields, the schema tag, non-empty ids); tests hold it against the schema's own valid and
//! invalid examples. On failure the line is parsed again with `serde_path_to_error`, so the error
//! names the JSON pointer of what is wrong without slowing down the good path.

use std::borrow::Cow;
use std::fmt;

use pitgun_contracts::envelope::{EventKind, SourceKind, ENVELOPE_SCHEMA_V1};
use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;
use smallvec::SmallVec;

/// Channels of one event, in the order they were sent.
pub type Channels<'a> = SmallVec<[(Cow<'a, str>, f64); 16]>;
/// Dimensions of one event.
pub type Dims<'a> = SmallVec<[(Cow<'a, str>, Cow<'a, str>); 4]>;

/// An envelope borrowed from its input text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "'de: 'a"))]
pub struct EnvelopeView<'a> {
    /// `pitgun-envelope/v1`.
    #[serde(borrow)]
    pub schema: Cow<'a, str>,
    /// Idempotency key.
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    /// Producer.
    #[serde(borrow)]
    pub source: SourceView<'a>,
    /// Session.
    #[serde(borrow)]
    pub session_id: Cow<'a, str>,
    /// Per-session sequence number.
    pub seq: u64,
    /// Event time, µs since the epoch.
    pub time_us: i64,
    /// Event kind.
    pub kind: EventKind,
    /// Channel values (booleans as 1/0).
    #[serde(default, deserialize_with = "channels")]
    pub channels: Channels<'a>,
    /// Dimensions.
    #[serde(default, deserialize_with = "dims")]
    pub dims: Dims<'a>,
}

/// The producer, borrowed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceView<'a> {
    /// Kind of producer.
    pub kind: SourceKind,
    /// Producer id.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Producer version.
    #[serde(borrow)]
    pub version: Cow<'a, str>,
}

/// Why a record could not be decoded, with the JSON pointer of the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// JSON pointer (empty for the whole record).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = if self.pointer.is_empty() { "/" } else { &self.pointer };
        write!(f, "at {p}: {}", self.message)
    }
}

/// Latest event time an envelope may carry: 9999-12-31T23:59:59.999999Z.
pub const MAX_TIME_US: i64 = 253_402_300_799_999_999;

/// Decodes one JSON envelope.
pub fn decode(text: &str) -> Result<EnvelopeView<'_>, DecodeError> {
    match serde_json::from_str::<EnvelopeView>(text) {
        Ok(view) => {
            check(&view)?;
            Ok(view)
        }
        Err(_) => Err(explain(text)),
    }
}

fn check(view: &EnvelopeView) -> Result<(), DecodeError> {
    let fail = |pointer: &str, message: String| Err(DecodeError { pointer: pointer.into(), message });
    if view.schema != ENVELOPE_SCHEMA_V1 {
        return fail("/schema", format!("expected {ENVELOPE_SCHEMA_V1:?}, found {:?}", view.schema));
    }
    if view.event_id.is_empty() {
        return fail("/event_id", "must not be empty".into());
    }
    if view.session_id.is_empty() {
        return fail("/session_id", "must not be empty".into());
    }
    if !(0..=MAX_TIME_US).contains(&view.time_us) {
        return fail("/time_us", format!("{} is outside 1970-01-01 … 9999-12-31", view.time_us));
    }
    if view.seq > i64::MAX as u64 {
        return fail("/seq", "must fit a signed 64-bit integer (Avro long)".into());
    }
    if view.source.id.is_empty() {
        return fail("/source/id", "must not be empty".into());
    }
    Ok(())
}

/// Re-parses a bad record with path tracking to name where it is wrong.
fn explain(text: &str) -> DecodeError {
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, EnvelopeView>(&mut de) {
        Ok(_) => DecodeError { pointer: String::new(), message: "trailing characters".into() },
        Err(e) => {
            let path = e.path().to_string();
            let pointer = if path == "." || path == "?" {
                String::new()
            } else {
                format!("/{}", path.replace('.', "/"))
            };
            DecodeError { pointer, message: e.into_inner().to_string() }
        }
    }
}

/// A string borrowed from the input when it has no escapes, owned otherwise.
struct CowStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<CowStr<'a>, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<CowStr<'a>, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

fn channels<'de: 'a, 'a, D: de::Deserializer<'de>>(d: D) -> Result<Channels<'a>, D::Error> {
    struct V<'a>(std::marker::PhantomData<&'a ()>);
    impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
        type Value = Channels<'a>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of channel name → number or boolean")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Channels::new();
            while let Some(CowStr(name)) = map.next_key::<CowStr<'a>>()? {
                // A repeated name is kept; the last value wins, as in every JSON object reader.
                out.push((name, map.next_value::<ChannelNumber>()?.0));
            }
            Ok(out)
        }
    }
    d.deserialize_map(V(std::marker::PhantomData))
}

struct ChannelNumber(f64);

impl<'de> Deserialize<'de> for ChannelNumber {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ChannelNumber;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a finite number or a boolean")
            }
            fn visit_bool<E>(self, v: bool) -> Result<ChannelNumber, E> {
                Ok(ChannelNumber(if v { 1.0 } else { 0.0 }))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ChannelNumber, E> {
                if v.is_finite() {
                    Ok(ChannelNumber(v))
                } else {
                    Err(E::custom("number is not finite"))
                }
            }
            fn visit_i64<E>(self, v: i64) -> Result<ChannelNumber, E> {
                Ok(ChannelNumber(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ChannelNumber, E> {
                Ok(ChannelNumber(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

fn dims<'de: 'a, 'a, D: de::Deserializer<'de>>(d: D) -> Result<Dims<'a>, D::Error> {
    struct V<'a>(std::marker::PhantomData<&'a ()>);
    impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
        type Value = Dims<'a>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of dimension name → string")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Dims::new();
            while let Some(CowStr(name)) = map.next_key::<CowStr<'a>>()? {
                let CowStr(value) = map.next_value::<CowStr<'a>>()?;
                out.push((name, value));
            }
            Ok(out)
        }
    }
    d.deserialize_map(V(std::marker::PhantomData))
}

impl EnvelopeView<'_> {
    /// The value of a dimension, if present (the last one when a name repeats).
    pub fn dim(&self, name: &str) -> Option<&str> {
        self.dims.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"schema":"pitgun-envelope/v1","event_id":"e1","source":{"kind":"game","id":"pitgun-web","version":"1.4.2"},"session_id":"s1","seq":1,"time_us":1000,"kind":"sample","channels":{"speed_kmh":120.5,"pit":true},"dims":{"track":"monza"}}"#;

    #[test]
    fn decodes_borrowed() {
        let v = decode(GOOD).unwrap();
        assert_eq!(v.channels.len(), 2);
        assert_eq!(v.channels[1].1, 1.0);
        assert_eq!(v.dim("track"), Some("monza"));
        assert!(matches!(v.session_id, Cow::Borrowed(_)));
    }

    #[test]
    fn errors_name_the_pointer() {
        let bad = GOOD.replace("\"seq\":1", "\"seq\":\"one\"");
        assert_eq!(decode(&bad).unwrap_err().pointer, "/seq");
        let bad = GOOD.replace("120.5", "\"fast\"");
        assert_eq!(decode(&bad).unwrap_err().pointer, "/channels/speed_kmh");
        let bad = GOOD.replace("\"kind\":\"sample\"", "\"kind\":\"sample\",\"extra\":1");
        assert!(decode(&bad).unwrap_err().message.contains("extra"));
        let bad = GOOD.replace("pitgun-envelope/v1", "pitgun-envelope/v9");
        assert_eq!(decode(&bad).unwrap_err().pointer, "/schema");
        assert!(decode("{\"schema\":").is_err());
    }
}
