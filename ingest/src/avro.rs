//! Avro single-object encoding straight from a decoded envelope view.
//!
//! `pitgun_runtime::wire::AvroEncoder` goes through `apache_avro::Value` (a tree of allocations
//! per envelope), which would cost the gateway more than validation. The envelope schema is
//! flat, so this writer emits the same bytes directly into a reused buffer. It takes the header
//! (magic + schema fingerprint) from the runtime encoder and checks at construction that both
//! agree for every event and source kind, so the two cannot drift apart.
//!
//! Channel values are typed by the dictionary: a metric the dictionary declares `bool` travels
//! as an Avro boolean when its value is 0 or 1 (`true`/`false` and `1`/`0` are the same reading
//! to the engine), everything else as a double. A channel name repeated in one object keeps its
//! last value, as every JSON reader (and the engine) does.

use std::borrow::Cow;

use pitgun_contracts::envelope::{ChannelValue, Envelope, EventKind, Source, SourceKind};
use pitgun_contracts::schema::ENVELOPE_AVRO_SCHEMA;
use pitgun_engine::decode::EnvelopeView;
use pitgun_runtime::wire::AvroEncoder;


/// Writes envelopes as Avro single objects.
pub struct AvroWriter {
    header: [u8; 10],
    event_kind_index: [u8; 9],
    source_kind_index: [u8; 4],
}

const SOURCE_KINDS: [SourceKind; 4] = [SourceKind::Game, SourceKind::Simulator, SourceKind::Device, SourceKind::Replay];

fn source_kind_slot(k: SourceKind) -> usize {
    match k {
        SourceKind::Game => 0,
        SourceKind::Simulator => 1,
        SourceKind::Device => 2,
        SourceKind::Replay => 3,
    }
}

fn event_kind_slot(k: EventKind) -> usize {
    EventKind::ALL.iter().position(|x| *x == k).unwrap_or(0)
}

impl AvroWriter {
    /// Builds the writer from the embedded `.avsc` and checks it against the runtime's encoder.
    pub fn new() -> Result<AvroWriter, String> {
        let avsc: serde_json::Value = serde_json::from_str(ENVELOPE_AVRO_SCHEMA).map_err(|e| e.to_string())?;
        let field = |name: &str| -> Option<&serde_json::Value> {
            avsc["fields"].as_array()?.iter().find(|f| f["name"] == name).map(|f| &f["type"])
        };
        let symbols = |t: Option<&serde_json::Value>| -> Vec<String> {
            t.and_then(|t| t["symbols"].as_array())
                .map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let kinds = symbols(field("kind"));
        let source_kinds = symbols(field("source").and_then(|s| s["fields"].as_array()?.iter().find(|f| f["name"] == "kind")).map(|f| &f["type"]));
        let index = |all: &[String], name: String| -> Result<u8, String> {
            all.iter().position(|s| *s == name).map(|i| i as u8).ok_or_else(|| format!("the envelope .avsc has no symbol {name:?}"))
        };
        let mut event_kind_index = [0u8; 9];
        for k in EventKind::ALL {
            event_kind_index[event_kind_slot(k)] = index(&kinds, k.as_str().to_string())?;
        }
        let mut source_kind_index = [0u8; 4];
        for k in SOURCE_KINDS {
            let name = serde_json::to_value(k).map_err(|e| e.to_string())?.as_str().unwrap_or_default().to_string();
            source_kind_index[source_kind_slot(k)] = index(&source_kinds, name)?;
        }
        let mut reference = AvroEncoder::default();
        let mut header = [0u8; 10];
        let mut probe = Vec::new();
        reference.encode(&sample(EventKind::Sample, SourceKind::Game), &mut probe)?;
        header.copy_from_slice(probe.get(..10).ok_or("the runtime encoder wrote no header")?);
        let writer = AvroWriter { header, event_kind_index, source_kind_index };
        writer.check_against(&mut reference)?;
        Ok(writer)
    }

    /// Byte-equal to the runtime encoder where it is deterministic (its maps are hash maps, so
    /// with several entries only the decoded envelope can be compared), and decodable by the
    /// runtime's decoder into the same envelope.
    fn check_against(&self, reference: &mut AvroEncoder) -> Result<(), String> {
        let decoder = pitgun_runtime::wire::Decoder::default();
        for (i, kind) in EventKind::ALL.into_iter().enumerate() {
            let full = sample(kind, SOURCE_KINDS[i % 4]);
            let mut single = full.clone();
            single.channels.retain(|k, _| k == "in_pit");
            single.dims.retain(|k, _| k == "track");
            for (env, bytes_must_match) in [(single, true), (full, false)] {
                let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                reference.encode(&env, &mut theirs)?;
                let text = serde_json::to_string(&env).map_err(|e| e.to_string())?;
                let view = pitgun_engine::decode::decode(&text).map_err(|e| e.to_string())?;
                let booleans: Vec<bool> = view.channels.iter().map(|(n, _)| n == "in_pit").collect();
                self.write(&view, &booleans, &mut ours);
                let mut back = String::new();
                decoder.to_json(&ours, &mut back)?;
                let same = serde_json::from_str::<Envelope>(&back).map_err(|e| e.to_string())? == env;
                if !same || (bytes_must_match && ours != theirs) {
                    return Err(format!("the fast Avro writer disagrees with the runtime encoder for {text}:\n ours   {ours:02x?}\n theirs {theirs:02x?}"));
                }
            }
        }
        Ok(())
    }

    /// Appends the single-object encoding of `view` to `out`. `booleans[i]` says whether the
    /// dictionary types channel `i` as a boolean (missing entries: not).
    pub fn write(&self, view: &EnvelopeView<'_>, booleans: &[bool], out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header);
        string(out, &view.schema);
        string(out, &view.event_id);
        long(out, i64::from(self.source_kind_index[source_kind_slot(view.source.kind)]));
        string(out, &view.source.id);
        string(out, &view.source.version);
        string(out, &view.session_id);
        long(out, view.seq as i64);
        long(out, view.time_us);
        long(out, i64::from(self.event_kind_index[event_kind_slot(view.kind)]));

        write_map(out, &view.channels, |out, i, value| {
            if booleans.get(i).copied().unwrap_or(false) && (*value == 0.0 || *value == 1.0) {
                out.push(2); // union branch 1: boolean
                out.push(u8::from(*value == 1.0));
            } else {
                out.push(0); // union branch 0: double
                out.extend_from_slice(&value.to_le_bytes());
            }
        });
        write_map(out, &view.dims, |out, _, value| string(out, value));
    }
}

/// Writes an Avro map (one block, then the end marker); of a repeated name only the last entry.
fn write_map<V>(out: &mut Vec<u8>, entries: &[(Cow<'_, str>, V)], mut value: impl FnMut(&mut Vec<u8>, usize, &V)) {
    let keep = last_of_each_name(entries);
    let count = keep.as_ref().map_or(entries.len(), |k| k.iter().filter(|k| **k).count());
    if count > 0 {
        long(out, count as i64);
        for (i, (name, v)) in entries.iter().enumerate() {
            if keep.as_ref().is_none_or(|k| k[i]) {
                string(out, name);
                value(out, i, v);
            }
        }
    }
    out.push(0);
}

/// `None` when every name is distinct (the normal case, no allocation); otherwise which entries
/// are the last of their name.
fn last_of_each_name<V>(entries: &[(Cow<'_, str>, V)]) -> Option<Vec<bool>> {
    if !has_repeats(entries) {
        return None;
    }
    let mut last = std::collections::HashMap::new();
    for (i, (n, _)) in entries.iter().enumerate() {
        last.insert(n.as_ref(), i);
    }
    Some((0..entries.len()).map(|i| last.get(entries[i].0.as_ref()) == Some(&i)).collect())
}

/// Whether a name repeats (a quadratic scan without allocation for the usual dozen names; a set
/// beyond that, so a hostile envelope with 1024 channels cannot cost a million comparisons).
fn has_repeats<V>(entries: &[(Cow<'_, str>, V)]) -> bool {
    if entries.len() <= 32 {
        (1..entries.len()).any(|i| entries[..i].iter().any(|(n, _)| *n == entries[i].0))
    } else {
        let mut seen = std::collections::HashSet::new();
        entries.iter().any(|(n, _)| !seen.insert(n.as_ref()))
    }
}

fn long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

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

#[cfg(test)]
mod tests {
    use pitgun_runtime::wire::Decoder;

    use super::*;

    #[test]
    fn agrees_with_the_runtime_encoder_and_decodes_back() {
        let w = AvroWriter::new().unwrap();
        let text = r#"{"schema":"pitgun-envelope/v1","event_id":"e\"1","source":{"kind":"device","id":"d","version":"2.0.0"},"session_id":"s","seq":0,"time_us":5,"kind":"lap","channels":{"x":1,"in_pit":0,"x":2.5,"in_pit":0.5},"dims":{"t":"a","t":"b"}}"#;
        let view = pitgun_engine::decode::decode(text).unwrap();
        let mut bytes = Vec::new();
        w.write(&view, &[false, true, false, true], &mut bytes);
        let mut json = String::new();
        Decoder::default().to_json(&bytes, &mut json).unwrap();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["channels"], serde_json::json!({"x": 2.5, "in_pit": 0.5}), "last value wins; 0.5 is no boolean");
        assert_eq!(back["dims"], serde_json::json!({"t": "b"}));
        assert_eq!(back["event_id"], "e\"1");
        let empty = r#"{"schema":"pitgun-envelope/v1","event_id":"e","source":{"kind":"game","id":"d","version":"2.0.0"},"session_id":"s","seq":9223372036854775807,"time_us":253402300799999999,"kind":"marker"}"#;
        bytes.clear();
        w.write(&pitgun_engine::decode::decode(empty).unwrap(), &[], &mut bytes);
        Decoder::default().to_json(&bytes, &mut json).unwrap();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["seq"], 9223372036854775807u64);
        assert_eq!(back["time_us"], 253402300799999999i64);
    }
}
