//! Differential: the gateway's fast path (`pitgun_codec::json::decode` + `pitgun_codec::rules::
//! check`) against the reference (`serde_json` into a `Value`, then the envelope's JSON Schema
//! through `pitgun_contracts::schema::Validators`) on the same bytes: the same accept/reject
//! decision, and on accept the same values.
//!
//! Where they legitimately differ (asserted as such, not skipped):
//! - a member name repeated in one object: `serde_json::Value` keeps the last and the schema never
//!   sees the first, while the fast path refuses a repeated envelope or `source` field ("duplicate
//!   field") and a repeated channel or dimension (`rules::unique_channels`, `rules::unique_dims`:
//!   which value is meant cannot be known);
//! - `seq` or `time_us` written as a number with a fraction or exponent (`1.0`, `1e3`): JSON
//!   Schema's `integer` accepts an integral float, the typed decode (like every other reader of the
//!   envelope: Avro, the engine) takes only integer literals.
//!
//! Inputs with a repeated name or an integral float are checked in the direction that holds (the
//! fast path accepts ⇒ the reference accepts) and in values; the rest both ways.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitgun_codec::json::{decode, EnvelopeView};
use pitgun_codec::rules;
use pitgun_contracts::schema::{ContractKind, Validators};
use serde_json::Value;

/// Whether any object in the text repeats a member name (a re-parse that keeps every member).
fn repeats_a_name(text: &str) -> bool {
    struct Dup(bool);
    impl<'de> serde::Deserialize<'de> for Dup {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dup, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Dup;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("JSON")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Dup, A::Error> {
                    let (mut names, mut dup) = (std::collections::HashSet::new(), false);
                    while let Some(k) = m.next_key::<String>()? {
                        dup |= !names.insert(k);
                        dup |= m.next_value::<Dup>()?.0;
                    }
                    Ok(Dup(dup))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Dup, A::Error> {
                    let mut dup = false;
                    while let Some(d) = s.next_element::<Dup>()? {
                        dup |= d.0;
                    }
                    Ok(Dup(dup))
                }
                fn visit_bool<E>(self, _: bool) -> Result<Dup, E> {
                    Ok(Dup(false))
                }
                fn visit_i64<E>(self, _: i64) -> Result<Dup, E> {
                    Ok(Dup(false))
                }
                fn visit_u64<E>(self, _: u64) -> Result<Dup, E> {
                    Ok(Dup(false))
                }
                fn visit_f64<E>(self, _: f64) -> Result<Dup, E> {
                    Ok(Dup(false))
                }
                fn visit_str<E>(self, _: &str) -> Result<Dup, E> {
                    Ok(Dup(false))
                }
                fn visit_unit<E>(self) -> Result<Dup, E> {
                    Ok(Dup(false))
                }
            }
            d.deserialize_any(V)
        }
    }
    serde_json::from_str::<Dup>(text).is_ok_and(|d| d.0)
}

/// Whether `seq` or `time_us` holds an integral number that is not an integer literal.
fn integral_float(v: &Value) -> bool {
    ["seq", "time_us"].iter().any(|f| v.get(f).is_some_and(|n| n.is_f64() && n.as_f64().is_some_and(|x| x.fract() == 0.0)))
}

fn same_values(view: &EnvelopeView, v: &Value) {
    let s = |f: &str| v[f].as_str().unwrap().to_string();
    assert_eq!(view.schema, s("schema"));
    assert_eq!(view.event_id, s("event_id"));
    assert_eq!(view.session_id, s("session_id"));
    assert_eq!(Some(view.seq), v["seq"].as_u64());
    assert_eq!(Some(view.time_us), v["time_us"].as_i64());
    assert_eq!(Value::String(view.kind.as_str().into()), v["kind"]);
    assert_eq!(serde_json::to_value(view.source.kind).unwrap(), v["source"]["kind"]);
    assert_eq!(view.source.id, v["source"]["id"].as_str().unwrap());
    assert_eq!(view.source.version, v["source"]["version"].as_str().unwrap());
    let channels = v.get("channels").and_then(Value::as_object);
    assert_eq!(view.channels.len(), channels.map_or(0, |c| c.len()));
    for (name, x) in &view.channels {
        let r = &channels.unwrap()[name.as_ref()];
        let r = r.as_bool().map_or_else(|| r.as_f64().unwrap(), |b| f64::from(u8::from(b)));
        assert_eq!(x.to_bits(), r.to_bits(), "channel {name}");
    }
    let dims = v.get("dims").and_then(Value::as_object);
    assert_eq!(view.dims.len(), dims.map_or(0, |d| d.len()), "no dimension named twice");
    for (name, value) in dims.into_iter().flatten() {
        assert_eq!(view.dim(name), value.as_str(), "dimension {name}");
    }
    for (name, _) in &view.dims {
        assert!(dims.is_some_and(|d| d.contains_key(name.as_ref())));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let fast = decode(text).ok().filter(|v| rules::check(v).is_ok());
    let reference = serde_json::from_str::<Value>(text).ok().filter(|v| Validators::get().validate(ContractKind::Envelope, v).is_empty());
    match (&fast, &reference) {
        (Some(view), Some(value)) => same_values(view, value),
        (None, None) => {}
        (Some(_), None) => panic!("the fast path accepts what the schema refuses: {text}"),
        (None, Some(value)) => {
            assert!(repeats_a_name(text) || integral_float(value), "the fast path refuses what the schema accepts: {text}");
        }
    }
});
