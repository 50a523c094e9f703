//! Fast, strict decoding of JSON envelopes into borrowed views (no per-event heap allocation).
//!
//! The typed parse enforces what `pitgun-envelope/v1` says (required fields, types, no unknown
//! fields, the schema tag, non-empty ids); tests hold it against the schema's own valid and
//! invalid examples. On failure the line is parsed again with `serde_path_to_error`, so the error
//! names the JSON pointer of what is wrong without slowing down the good path. The usual shape
//! of an envelope is read by a direct scan first ([`scan`]), which gives up rather than decide on
//! anything the typed parse would treat differently.

use std::borrow::Cow;
use std::fmt;

use pitgun_contracts::envelope::{EventKind, SourceKind, ENVELOPE_SCHEMA_V1};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::Deserialize;
use smallvec::SmallVec;

pub mod cursor;
mod scan;

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

impl std::error::Error for DecodeError {}

/// A rule the decoded record breaks is refused as a decode error, at the same pointer.
impl From<crate::rules::Broken> for DecodeError {
    fn from(b: crate::rules::Broken) -> DecodeError {
        DecodeError { pointer: b.pointer, message: b.message }
    }
}

/// Latest event time an envelope may carry: 9999-12-31T23:59:59.999999Z.
pub const MAX_TIME_US: i64 = 253_402_300_799_999_999;

/// Decodes one JSON envelope.
pub fn decode(text: &str) -> Result<EnvelopeView<'_>, DecodeError> {
    let mut view = EnvelopeView::empty();
    decode_into(text, &mut view)?;
    Ok(view)
}

/// Decodes one JSON envelope into `view`, filling it in place: the channel and dimension lists
/// (a kilobyte inline) are written once instead of being moved through every layer of serde.
///
/// The usual shape is read by a direct scan ([`scan`]); anything else by the general decoder
/// ([`decode_general_into`]), which alone decides what is accepted.
pub fn decode_into<'a>(text: &'a str, view: &mut EnvelopeView<'a>) -> Result<(), DecodeError> {
    let (channels, dims) = (view.channels.len(), view.dims.len());
    if scan::fill(text, view).is_some() {
        return check(view);
    }
    view.channels.truncate(channels);
    view.dims.truncate(dims);
    decode_general_into(text, view)
}

/// Decodes one JSON envelope with serde's visitor alone: the rule of what is accepted. Public
/// so that tests and the fuzz target can hold the fast scan to it.
pub fn decode_general_into<'a>(text: &'a str, view: &mut EnvelopeView<'a>) -> Result<(), DecodeError> {
    let mut de = serde_json::Deserializer::from_str(text);
    match FillView(view).deserialize(&mut de).and_then(|()| de.end()) {
        Ok(()) => check(view),
        Err(_) => Err(explain(text)),
    }
}

impl<'a> EnvelopeView<'a> {
    /// An empty view to decode into.
    pub fn empty() -> EnvelopeView<'a> {
        EnvelopeView {
            schema: Cow::Borrowed(""),
            event_id: Cow::Borrowed(""),
            source: SourceView { kind: SourceKind::Game, id: Cow::Borrowed(""), version: Cow::Borrowed("") },
            session_id: Cow::Borrowed(""),
            seq: 0,
            time_us: 0,
            kind: EventKind::Sample,
            channels: Channels::new(),
            dims: Dims::new(),
        }
    }
}

const FIELDS: &[&str] = &["schema", "event_id", "source", "session_id", "seq", "time_us", "kind", "channels", "dims"];
const REQUIRED: u16 = 0b0111_1111;

/// Fills an [`EnvelopeView`] field by field, with the derive's rules: required fields, no
/// unknown or repeated fields. (The derived impl still explains errors with their pointer.)
struct FillView<'v, 'a>(&'v mut EnvelopeView<'a>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for FillView<'_, 'a> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for FillView<'_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a pitgun-envelope/v1 object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let v = self.0;
        let mut seen = 0u16;
        while let Some(CowStr(key)) = map.next_key::<CowStr<'a>>()? {
            let index = FIELDS.iter().position(|f| *f == key).ok_or_else(|| de::Error::unknown_field(&key, FIELDS))?;
            if seen & (1 << index) != 0 {
                return Err(de::Error::duplicate_field(FIELDS[index]));
            }
            seen |= 1 << index;
            match index {
                0 => v.schema = map.next_value::<CowStr<'a>>()?.0,
                1 => v.event_id = map.next_value::<CowStr<'a>>()?.0,
                2 => v.source = map.next_value::<SourceView<'a>>()?,
                3 => v.session_id = map.next_value::<CowStr<'a>>()?.0,
                4 => v.seq = map.next_value()?,
                5 => v.time_us = map.next_value()?,
                6 => v.kind = map.next_value()?,
                7 => map.next_value_seed(FillChannels(&mut v.channels))?,
                _ => map.next_value_seed(FillDims(&mut v.dims))?,
            }
        }
        if seen & REQUIRED != REQUIRED {
            let missing = (0..7).find(|i| seen & (1 << i) == 0).expect("a required field is missing");
            return Err(de::Error::missing_field(FIELDS[missing]));
        }
        Ok(())
    }
}

/// The rules of the schema that types alone do not carry (shared with the Avro decoder).
pub(crate) fn check(view: &EnvelopeView) -> Result<(), DecodeError> {
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
    // Dimensions are few and read by name, so every record is checked here; channels are
    // checked where they are bound, which skips a list already seen (`rules::unique_channels`).
    crate::rules::unique_dims(view)?;
    Ok(())
}

/// Re-parses a bad record with path tracking to name where it is wrong. Out of line: inlined
/// into the decoder, its growth changed the code generated for the scan (3 % more instructions
/// per record in a replay).
#[cold]
#[inline(never)]
fn explain(text: &str) -> DecodeError {
    // JSON that is not an object: serde would describe it in terms of the view's fields.
    let not_an_object = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(_)) => Some("an array"),
        Ok(serde_json::Value::String(_)) => Some("a string"),
        Ok(serde_json::Value::Number(_)) => Some("a number"),
        Ok(serde_json::Value::Bool(_)) => Some("a boolean"),
        Ok(serde_json::Value::Null) => Some("null"),
        _ => None,
    };
    if let Some(what) = not_an_object {
        return DecodeError { pointer: String::new(), message: format!("an envelope is a JSON object, not {what}") };
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, EnvelopeView>(&mut de) {
        Ok(_) => DecodeError { pointer: String::new(), message: "trailing characters".into() },
        Err(e) => {
            // Segment by segment: a name may hold `.`, which the path's text form separates on.
            let mut pointer = String::new();
            for segment in e.path().iter() {
                pointer = match segment {
                    serde_path_to_error::Segment::Seq { index } => format!("{pointer}/{index}"),
                    serde_path_to_error::Segment::Map { key } => crate::rules::pointer(&pointer, key),
                    serde_path_to_error::Segment::Enum { variant } => crate::rules::pointer(&pointer, variant),
                    serde_path_to_error::Segment::Unknown => break,
                };
            }
            let message = e.into_inner().to_string();
            // A repeat is found by the object holding it: point at the field itself.
            if let Some(field) = message.strip_prefix("duplicate field `").and_then(|m| m.split_once('`')).map(|(f, _)| f) {
                pointer = crate::rules::pointer(&pointer, field);
            }
            DecodeError { pointer, message }
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
    let mut out = Channels::new();
    FillChannels(&mut out).deserialize(d)?;
    Ok(out)
}

/// Appends channels to a list in place.
struct FillChannels<'v, 'a>(&'v mut Channels<'a>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for FillChannels<'_, 'a> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for FillChannels<'_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of channel name → number or boolean")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(CowStr(name)) = map.next_key::<CowStr<'a>>()? {
            // A repeated name is kept as sent; `rules::unique_channels` refuses it wherever it is read.
            self.0.push((name, map.next_value::<ChannelNumber>()?.0));
        }
        Ok(())
    }
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
    let mut out = Dims::new();
    FillDims(&mut out).deserialize(d)?;
    Ok(out)
}

/// Appends dimensions to a list in place.
struct FillDims<'v, 'a>(&'v mut Dims<'a>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for FillDims<'_, 'a> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for FillDims<'_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of dimension name → string")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(CowStr(name)) = map.next_key::<CowStr<'a>>()? {
            let CowStr(value) = map.next_value::<CowStr<'a>>()?;
            self.0.push((name, value));
        }
        Ok(())
    }
}

impl EnvelopeView<'_> {
    /// The value of a dimension, if present (the decoders refuse a name written twice).
    pub fn dim(&self, name: &str) -> Option<&str> {
        self.dims.iter().find(|(n, _)| crate::text::same(n, name)).map(|(_, v)| v.as_ref())
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
        // Names holding `.`, `/` or `~` are one segment each, escaped as RFC 6901 says, as the
        // pointer of an unknown channel is.
        for (name, pointer) in [("engine.rpm", "/channels/engine.rpm"), ("a/b", "/channels/a~1b"), ("t~1", "/channels/t~01")] {
            let bad = GOOD.replace("\"speed_kmh\":120.5", &format!("\"{name}\":\"fast\""));
            assert_eq!(decode(&bad).unwrap_err().pointer, pointer, "{name}");
        }
        let bad = GOOD.replace("\"kind\":\"sample\"", "\"kind\":\"sample\",\"extra\":1");
        assert!(decode(&bad).unwrap_err().message.contains("extra"));
        let bad = GOOD.replace("pitgun-envelope/v1", "pitgun-envelope/v9");
        assert_eq!(decode(&bad).unwrap_err().pointer, "/schema");
        assert!(decode("{\"schema\":").is_err());
        let twice = GOOD.replace("\"seq\":1,", "\"seq\":1,\"seq\":2,");
        let refused = decode(&twice).unwrap_err();
        assert!(refused.message.contains("duplicate field"), "{refused}");
        assert_eq!(refused.pointer, "/seq", "the field written twice, not the object holding it");
        let nested = GOOD.replace("\"id\":\"pitgun-web\",", "\"id\":\"pitgun-web\",\"id\":\"x\",");
        assert_eq!(decode(&nested).unwrap_err().pointer, "/source/id");
        let missing = GOOD.replace("\"seq\":1,", "");
        assert!(decode(&missing).unwrap_err().message.contains("missing field `seq`"));
        assert!(decode(&format!("{GOOD} x")).is_err(), "trailing characters");
        // A JSON value that is not an object is named as such, not as serde's view of the type.
        for (text, what) in
            [("[]", "an array"), ("[1,2]", "an array"), ("\"e1\"", "a string"), ("7", "a number"), ("null", "null"), ("true", "a boolean")]
        {
            let e = decode(text).unwrap_err();
            assert_eq!((e.pointer.as_str(), e.message.as_str()), ("", format!("an envelope is a JSON object, not {what}").as_str()), "{text}");
        }
        let repeated = GOOD.replace("\"pit\":true", "\"pit\":true,\"pit\":false");
        let v = decode(&repeated).unwrap();
        assert_eq!(v.channels.len(), 3, "kept as sent");
        assert_eq!(crate::rules::unique_channels(&v).unwrap_err().pointer, "/channels/pit");
    }
}
