//! One batch's items → Avro records for the valid ones, a reasoned rejection for the others.
//!
//! Per item, in this order: its size (`too_large`: past `--max-item-size`, so that its dead
//! letter, a bounded prefix of it, and its Avro record always fit a broker message), UTF-8 and
//! JSON syntax (`malformed_json`), the key's source (a foreign `source.id` fails the whole batch
//! with 403, see [`Checked::foreign`]; read leniently from an item the strict decoder refuses,
//! so an item too large or not UTF-8 is the only kind refused without its source read), the
//! envelope schema via the engine's strict decoder plus [`pitgun_codec::rules`]
//! (`invalid_envelope`), the dictionary (`unknown_source`, `unknown_channel`) and the clock
//! (`future_time`). Every rejection names the item's index and the JSON pointer of what is wrong.

use std::ops::Range;
use std::sync::Arc;

use pitgun_codec::avro::AvroWriter;
use pitgun_codec::json::{decode_into, EnvelopeView};
use pitgun_codec::rules::{self, pointer};
use pitgun_runtime::kafka::headers::DEAD_LETTER_PAYLOAD_LIMIT;
use serde::Serialize;

use crate::catalog::{ChannelCatalog, ChannelTable, UnknownSource};

/// Why an item was refused (the `reason` of an answer's error and of a dead letter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not JSON: a syntax error, `NaN`/`Infinity`, nesting deeper than 128, not UTF-8.
    MalformedJson,
    /// JSON, but not a `pitgun-envelope/v1`.
    InvalidEnvelope,
    /// The dictionary has no aliases for this producer (or this producer version).
    UnknownSource,
    /// A channel the dictionary does not know for this producer version.
    UnknownChannel,
    /// An event time further ahead of the gateway's clock than the allowed skew.
    FutureTime,
    /// An item larger than the gateway's per-envelope limit.
    TooLarge,
}

impl Reason {
    /// Every reason, for metrics.
    pub const ALL: [Reason; 6] =
        [Reason::MalformedJson, Reason::InvalidEnvelope, Reason::UnknownSource, Reason::UnknownChannel, Reason::FutureTime, Reason::TooLarge];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::InvalidEnvelope => "invalid_envelope",
            Reason::UnknownSource => "unknown_source",
            Reason::UnknownChannel => "unknown_channel",
            Reason::FutureTime => "future_time",
            Reason::TooLarge => "too_large",
        }
    }
}

/// One refused item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Position of the item in the batch (0-based; blank NDJSON lines are not items).
    pub index: usize,
    /// JSON pointer into the item (`""` = the item as a whole).
    pub pointer: String,
    /// Counted reason.
    pub reason: Reason,
    /// What is wrong, in words.
    pub message: String,
    /// The item's bytes in the body, for its dead letter (which carries at most
    /// [`DEAD_LETTER_PAYLOAD_LIMIT`] of them).
    #[serde(skip)]
    pub bytes: Range<usize>,
    /// The item's session, when it could be read (the dead letter's key).
    #[serde(skip)]
    pub session_id: Option<String>,
}

/// A valid item, encoded: its session id (the record key) and Avro value, both in
/// [`Checked::arena`].
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The session id's bytes.
    pub key: Range<usize>,
    /// The Avro single object's bytes.
    pub value: Range<usize>,
}

/// The outcome of a batch; reused between requests to keep its buffers.
#[derive(Debug, Default)]
pub struct Checked {
    /// Keys and values of the valid items, back to back.
    pub arena: Vec<u8>,
    /// Valid items, in batch order.
    pub valid: Vec<Encoded>,
    /// Refused items, in batch order.
    pub rejected: Vec<Rejection>,
    /// The first item whose `source.id` is not the API key's source, and that source.
    pub foreign: Option<(usize, String)>,
}

impl Checked {
    fn clear(&mut self) {
        self.arena.clear();
        self.valid.clear();
        self.rejected.clear();
        self.foreign = None;
    }
}

/// Validates items against the schema, the dictionary and the clock, and encodes the valid ones.
pub struct Validator {
    catalog: Arc<ChannelCatalog>,
    writer: AvroWriter,
    max_future_skew_us: i64,
    max_item: usize,
}

impl Validator {
    /// A validator for `catalog`'s producers; events may be at most `max_future_skew_us` ahead,
    /// and an item at most `max_item` bytes long.
    pub fn new(catalog: Arc<ChannelCatalog>, max_future_skew_us: i64, max_item: usize) -> Result<Validator, String> {
        Ok(Validator { catalog, writer: AvroWriter::new(), max_future_skew_us, max_item })
    }

    /// Checks `items` of `body` for a client holding a key of `source` (`None`: any source) at
    /// wall-clock time `now_us`.
    pub fn check(&self, body: &[u8], items: &[Range<usize>], source: Option<&str>, now_us: i64, out: &mut Checked) {
        out.clear();
        let latest = now_us.saturating_add(self.max_future_skew_us);
        let mut last: Option<(String, String, Result<Arc<ChannelTable>, UnknownSource>)> = None;
        let mut view = EnvelopeView::empty();
        let mut booleans = Vec::new();
        for (index, range) in items.iter().enumerate() {
            let reject = |out: &mut Checked, reason, pointer: String, message: String, session_id: Option<String>| {
                out.rejected.push(Rejection { index, pointer, reason, message, bytes: range.clone(), session_id });
            };
            if range.len() > self.max_item {
                // Dead-lettered as every refused record is: whole, or cut to what a dead letter
                // carries with its whole length in a header.
                let kept = range.len().min(DEAD_LETTER_PAYLOAD_LIMIT);
                let message = format!(
                    "the item is {} bytes, over the {}-byte limit for one envelope (--max-item-size); {}",
                    range.len(),
                    self.max_item,
                    if kept < range.len() { format!("the dead letter keeps its first {kept} bytes") } else { "it is dead-lettered whole".into() }
                );
                out.rejected.push(Rejection {
                    index,
                    pointer: String::new(),
                    reason: Reason::TooLarge,
                    message,
                    bytes: range.clone(),
                    session_id: None,
                });
                continue;
            }
            let text = match pitgun_codec::text::utf8(&body[range.clone()]) {
                Ok(t) => t,
                Err(e) => {
                    reject(out, Reason::MalformedJson, String::new(), format!("not UTF-8: {e}"), None);
                    continue;
                }
            };
            // One view for the whole batch (it borrows the body): the optional lists are cleared,
            // every required field is overwritten by the decoder.
            view.channels.clear();
            view.dims.clear();
            if let Err(e) = decode_into(text, &mut view) {
                // Another source's item refuses the batch even when the strict decoder refuses it
                // too: read its source.id leniently (refused items only pay for this).
                if let Some(other) = source.and_then(|s| other_source(text, s)) {
                    out.foreign.get_or_insert((index, other));
                    continue;
                }
                let (reason, pointer, message) = explain(text, e);
                reject(out, reason, pointer, message, session_of(text));
                continue;
            }
            // The caller's source first: an item of another source refuses the batch (403) even
            // when it is invalid too, rather than being dead-lettered under this caller.
            if let Some(s) = source {
                if view.source.id != s {
                    out.foreign.get_or_insert_with(|| (index, view.source.id.to_string()));
                    continue;
                }
            }
            if let Err(b) = rules::check(&view) {
                reject(out, Reason::InvalidEnvelope, b.pointer, b.message, Some(view.session_id.to_string()));
                continue;
            }
            let same = last.as_ref().is_some_and(|(id, v, _)| *id == view.source.id && *v == view.source.version);
            if !same {
                let t = self.catalog.table(&view.source.id, &view.source.version);
                last = Some((view.source.id.to_string(), view.source.version.to_string(), t));
            }
            let table = match last.as_ref().map(|l| &l.2) {
                Some(Ok(t)) => t,
                Some(Err(unknown)) => {
                    let (p, m) = unknown_source(&view, unknown);
                    reject(out, Reason::UnknownSource, p.into(), m, Some(view.session_id.to_string()));
                    continue;
                }
                None => continue,
            };
            // One lookup per channel: known or not, and whether it travels as a boolean.
            booleans.clear();
            let (mut first_unknown, mut more) = (None, 0usize);
            for (i, (name, _)) in view.channels.iter().enumerate() {
                match table.get(name) {
                    Some(c) => booleans.push(c.boolean),
                    None if first_unknown.is_none() => first_unknown = Some(i),
                    None => more += 1,
                }
            }
            if let Some(i) = first_unknown {
                let first = &view.channels[i].0;
                let also = if more > 0 { format!(" ({more} more unknown channels)") } else { String::new() };
                let message = format!("channel {first:?} is not in the dictionary for {} {}{also}", view.source.id, view.source.version);
                reject(out, Reason::UnknownChannel, pointer("/channels", first), message, Some(view.session_id.to_string()));
                continue;
            }
            if view.time_us > latest {
                let message = format!(
                    "event time {} is {} ahead of the gateway's clock; at most {} is allowed",
                    rfc3339(view.time_us),
                    humantime::format_duration(std::time::Duration::from_secs(((view.time_us - now_us) / 1_000_000) as u64)),
                    humantime::format_duration(std::time::Duration::from_micros(self.max_future_skew_us as u64)),
                );
                reject(out, Reason::FutureTime, "/time_us".into(), message, Some(view.session_id.to_string()));
                continue;
            }
            let key_start = out.arena.len();
            out.arena.extend_from_slice(view.session_id.as_bytes());
            let value_start = out.arena.len();
            self.writer.write(&view, &booleans, &mut out.arena);
            out.valid.push(Encoded { key: key_start..value_start, value: value_start..out.arena.len() });
        }
    }
}

fn rfc3339(us: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

fn unknown_source(view: &EnvelopeView<'_>, why: &UnknownSource) -> (&'static str, String) {
    let (id, version) = (&view.source.id, &view.source.version);
    match why {
        UnknownSource::Producer => ("/source/id", format!("the dictionary has no aliases for producer {id:?}")),
        UnknownSource::NotSemver(e) => ("/source/version", format!("{version:?} is not a semantic version: {e}")),
        UnknownSource::Version(ranges) => {
            ("/source/version", format!("the dictionary has no aliases for {id} {version}; it knows versions {}", ranges.join(" | ")))
        }
    }
}

/// The `source.id` of an item the strict decoder refused, when it is an object whose `source`
/// object has a string `id` that is not `caller`'s (every other field may be anything).
fn other_source(text: &str, caller: &str) -> Option<String> {
    let item: serde_json::Value = serde_json::from_str(text).ok()?;
    let id = item.as_object()?.get("source")?.as_object()?.get("id")?.as_str()?;
    (id != caller).then(|| id.to_string())
}

/// The session an item the strict decoder refused still names, read leniently (refused items
/// only pay for this): its dead letter is keyed by it, and a session token's batch is not
/// refused whole for an invalid item of the token's own session.
fn session_of(text: &str) -> Option<String> {
    let item: serde_json::Value = serde_json::from_str(text).ok()?;
    let id = item.as_object()?.get("session_id")?.as_str()?;
    rules::is_session_id(id).then(|| id.to_string())
}

/// Tells malformed JSON from a well-formed non-envelope, and words the common cases.
fn explain(text: &str, e: pitgun_codec::DecodeError) -> (Reason, String, String) {
    // A full parse (not `IgnoredAny`, which skips nested values without a depth limit), so
    // nesting deeper than serde_json's 128 levels is reported as such.
    let Err(syntax) = serde_json::from_str::<serde_json::Value>(text) else {
        return (Reason::InvalidEnvelope, e.pointer, e.message);
    };
    let mut message = syntax.to_string();
    if message.contains("recursion limit") {
        message.push_str(" (JSON nested deeper than 128 levels)");
    } else if text.contains("NaN") || text.contains("Infinity") {
        message.push_str(" (NaN and Infinity are not JSON; channel values must be finite numbers)");
    }
    (Reason::MalformedJson, String::new(), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000;

    fn validator() -> Validator {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/dictionary/racing.yaml")).unwrap();
        let dict = serde_yaml_ng::from_str(&text).unwrap();
        Validator::new(Arc::new(ChannelCatalog::new(&dict).unwrap()), 300_000_000, 256 << 10).unwrap()
    }

    fn item(channels: &str, time_us: i64) -> String {
        format!(
            r#"{{"schema":"pitgun-envelope/v1","event_id":"e","source":{{"kind":"game","id":"pitgun-web","version":"1.4.2"}},"session_id":"s\u00e9","seq":1,"time_us":{time_us},"kind":"sample","channels":{{{channels}}}}}"#
        )
    }

    fn check(items: &[&[u8]], source: Option<&str>) -> Checked {
        let body: Vec<u8> = items.join(&b'\n');
        let mut ranges = Vec::new();
        let mut at = 0;
        for i in items {
            ranges.push(at..at + i.len());
            at += i.len() + 1;
        }
        let mut out = Checked::default();
        validator().check(&body, &ranges, source, NOW, &mut out);
        out
    }

    #[test]
    fn valid_items_are_encoded_with_their_session_key() {
        let good = item(r#""speed_kmh":120,"in_pit":1"#, NOW);
        let out = check(&[good.as_bytes()], Some("pitgun-web"));
        assert!(out.rejected.is_empty() && out.foreign.is_none(), "{:?}", out.rejected);
        assert_eq!(&out.arena[out.valid[0].key.clone()], "sé".as_bytes(), "escapes decoded in the key");
        let mut json = String::new();
        pitgun_codec::wire::Decoder::default().to_json(&out.arena[out.valid[0].value.clone()], &mut json).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["channels"], serde_json::json!({"speed_kmh": 120.0, "in_pit": true}), "a bool metric travels as a boolean");
    }

    #[test]
    fn each_refusal_names_index_pointer_and_reason() {
        let unknown = item(r#""speed_kmh":1,"a/b":2,"c":3"#, NOW);
        let twice = item(r#""speed_kmh":1,"speed_kmh":2"#, NOW);
        let future = item(r#""speed_kmh":1"#, NOW + 301_000_000);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let nan = item(r#""speed_kmh":NaN"#, NOW);
        let other = item(r#""speed_kmh":1"#, NOW).replace("pitgun-web", "pitgun-sim");
        let items: [&[u8]; 7] =
            [unknown.as_bytes(), future.as_bytes(), deep.as_bytes(), nan.as_bytes(), b"{\"\xff\":1}", other.as_bytes(), twice.as_bytes()];
        let out = check(&items, Some("pitgun-web"));
        let got: Vec<(usize, &str, &str)> = out.rejected.iter().map(|r| (r.index, r.pointer.as_str(), r.reason.as_str())).collect();
        assert_eq!(
            got,
            [
                (0, "/channels/a~1b", "unknown_channel"),
                (1, "/time_us", "future_time"),
                (2, "", "malformed_json"),
                (3, "", "malformed_json"),
                (4, "", "malformed_json"),
                (6, "/channels/speed_kmh", "invalid_envelope")
            ]
        );
        assert!(out.rejected[5].message.contains("more than once"), "{}", out.rejected[5].message);
        assert!(out.rejected[0].message.contains("(1 more unknown channels)"), "{}", out.rejected[0].message);
        assert!(out.rejected[1].message.contains("5m ahead") || out.rejected[1].message.contains("ahead"), "{}", out.rejected[1].message);
        assert!(out.rejected[2].message.contains("deeper than 128"), "{}", out.rejected[2].message);
        assert!(out.rejected[3].message.contains("NaN and Infinity"), "{}", out.rejected[3].message);
        assert!(out.rejected[4].message.contains("UTF-8"), "{}", out.rejected[4].message);
        assert_eq!(out.foreign, Some((5, "pitgun-sim".to_string())));
        assert!(out.valid.is_empty());
        let any = check(&[other.as_bytes()], None);
        assert_eq!(any.foreign, None, "no key source: no 403");
        let r = &any.rejected[0];
        assert_eq!((r.reason, r.pointer.as_str()), (Reason::UnknownSource, "/source/version"), "pitgun-sim starts at 2.0.0");
    }
}
