//! The session id of a record without decoding it: replay routes records to shards by it and
//! the processor groups a batch by it, so both must read the same id from either format.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem;

use crate::Record;

/// The record's session id; `None` when it has none (the engine will refuse the record).
/// Avro datums and ordinary JSON lines are read in place; a JSON line with any escape, or that
/// names `"session_id"` more than once, is parsed.
pub fn session_id(record: Record<'_>) -> Option<Cow<'_, [u8]>> {
    match record {
        Record::Avro(datum) => crate::avro::session_id_of(datum).map(Cow::Borrowed),
        // Any escape (even in a key: `"session\u005fid"` is the same key) means a parse.
        Record::Json(line) => match in_place(line) {
            Some(id) if memchr::memchr(b'\\', line).is_none() => Some(Cow::Borrowed(id)),
            _ => parsed(line),
        },
    }
}

/// The id when `"session_id"` occurs exactly once, followed by a string without escapes.
/// (Inside a JSON string a quote is escaped, so an occurrence is a key or a whole string.)
fn in_place(line: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"session_id\"";
    // Built once: replay's reader looks at every line, and building a searcher per call cost
    // as much as the search.
    static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(KEY));
    let at = FINDER.find(line)?;
    let rest = &line[at + KEY.len()..];
    if FINDER.find(rest).is_some() {
        return None;
    }
    let rest = rest.trim_ascii_start().strip_prefix(b":")?.trim_ascii_start().strip_prefix(b"\"")?;
    let end = memchr::memchr(b'"', rest)?;
    let value = &rest[..end];
    (!value.contains(&b'\\')).then_some(value)
}

fn parsed(line: &[u8]) -> Option<Cow<'_, [u8]>> {
    #[derive(serde::Deserialize)]
    struct OnlySession<'a> {
        #[serde(borrow)]
        session_id: Cow<'a, str>,
    }
    let s: OnlySession = serde_json::from_slice(line).ok()?;
    Some(match s.session_id {
        Cow::Borrowed(id) => Cow::Borrowed(id.as_bytes()),
        Cow::Owned(id) => Cow::Owned(id.into_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::AvroWriter;

    fn json_id(line: &str) -> Option<Vec<u8>> {
        session_id(Record::Json(line.as_bytes())).map(Cow::into_owned)
    }

    #[test]
    fn json_and_avro_give_the_same_id() {
        let text = r#"{"schema":"pitgun-envelope/v1","event_id":"e","source":{"kind":"game","id":"d","version":"2.0.0"},"session_id":"s-ü","seq":1,"time_us":5,"kind":"lap","dims":{"note":"session_id"}}"#;
        let view = crate::json::decode(text).unwrap();
        let mut single = Vec::new();
        AvroWriter::new().write(&view, &[], &mut single);
        let avro = session_id(Record::Avro(&single[10..])).unwrap();
        assert_eq!(avro.as_ref(), "s-ü".as_bytes());
        assert_eq!(json_id(text).unwrap(), avro.as_ref());
    }

    #[test]
    fn escapes_and_repeats_are_parsed_and_absence_is_none() {
        assert_eq!(json_id(r#"{"session_id":"a\u0062"}"#).unwrap(), b"ab");
        assert_eq!(json_id(r#"{"dims":{"session_id":"x"},"session_id":"y"}"#).unwrap(), b"y");
        assert_eq!(json_id(r#"{"session_id" : "plain"}"#).unwrap(), b"plain");
        assert_eq!(json_id(r#"{"seq":1}"#), None);
        assert_eq!(json_id("not json"), None);
        assert_eq!(session_id(Record::Avro(b"\x02")), None);
    }

    /// The decoder reads an escaped key as `session_id`; the peek must not take a nested one.
    #[test]
    fn an_escaped_key_is_not_mistaken_for_a_nested_one() {
        assert_eq!(json_id(r#"{"session\u005fid":"real","dims":{"session_id":"fake"}}"#).unwrap(), b"real");
    }
}
