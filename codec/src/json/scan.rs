//! The usual shape of an envelope, decoded by one direct scan of its bytes.
//!
//! Replay, the gateway and `pitgun publish` spend most of their time decoding envelopes, and
//! serde's per-field visitor costs more than the scan itself. This decoder takes only the shape
//! producers send: strings without escapes, integer literals for `seq` and `time_us`, every field
//! known and named once. It never decides that a record is wrong: on anything else (an escape, a
//! fraction in `seq`, an unknown, repeated or missing field, a number out of range, bad syntax)
//! it gives up and the general decoder reads the record, accepting or explaining it. So what is
//! accepted, and with which values, is the general decoder's rule; a test and the `envelope_json`
//! fuzz target hold the two equal.

use std::borrow::Cow;

use pitgun_contracts::envelope::{EventKind, SourceKind};

use super::cursor::Cursor;
use super::{EnvelopeView, SourceView, FIELDS, REQUIRED};

/// Fills `view` from `text` when it has the usual shape; `None` leaves the decision to the
/// general decoder (the caller undoes what was appended to the lists).
pub(super) fn fill<'a>(text: &'a str, view: &mut EnvelopeView<'a>) -> Option<()> {
    let mut scan = Cursor::new(text);
    let mut seen = 0u16;
    scan.object(|scan, key| {
        let index = field(key)?;
        if seen & (1 << index) != 0 {
            return None;
        }
        seen |= 1 << index;
        match index {
            0 => view.schema = Cow::Borrowed(scan.string()?),
            1 => view.event_id = Cow::Borrowed(scan.string()?),
            2 => view.source = source(scan)?,
            3 => view.session_id = Cow::Borrowed(scan.string()?),
            4 => view.seq = integer(scan)?,
            5 => view.time_us = integer(scan)?.try_into().ok()?,
            6 => view.kind = EventKind::parse(scan.string()?)?,
            7 => scan.object(|scan, name| {
                let value = channel_value(scan)?;
                view.channels.push((Cow::Borrowed(name), value));
                Some(())
            })?,
            _ => scan.object(|scan, name| {
                let value = scan.string()?;
                view.dims.push((Cow::Borrowed(name), Cow::Borrowed(value)));
                Some(())
            })?,
        }
        Some(())
    })?;
    (scan.at_end() && seen & REQUIRED == REQUIRED).then_some(())
}

/// The index of an envelope field in [`FIELDS`].
fn field(key: &str) -> Option<usize> {
    let index = match key {
        "schema" => 0,
        "event_id" => 1,
        "source" => 2,
        "session_id" => 3,
        "seq" => 4,
        "time_us" => 5,
        "kind" => 6,
        "channels" => 7,
        "dims" => 8,
        _ => return None,
    };
    debug_assert_eq!(FIELDS[index], key);
    Some(index)
}

/// A source kind by its serde name.
fn source_kind(name: &str) -> Option<SourceKind> {
    Some(match name {
        "game" => SourceKind::Game,
        "simulator" => SourceKind::Simulator,
        "device" => SourceKind::Device,
        "replay" => SourceKind::Replay,
        _ => return None,
    })
}

/// A non-negative integer literal that fits 64 bits.
#[inline]
fn integer(scan: &mut Cursor) -> Option<u64> {
    scan.number()?.integer
}

/// A channel's value: a finite number, or a boolean as 1 or 0. Every JSON number becomes the
/// nearest `f64` here as in the general decoder (`serde_json` with `float_roundtrip`), so both
/// give the same bits; a literal too large for `f64` gives up.
#[inline]
fn channel_value(scan: &mut Cursor) -> Option<f64> {
    match scan.peek()? {
        b't' => scan.literal(b"true").map(|()| 1.0),
        b'f' => scan.literal(b"false").map(|()| 0.0),
        _ => {
            let value = scan.number()?.value;
            value.is_finite().then_some(value)
        }
    }
}

/// The `source` object: every member once, none other.
fn source<'a>(scan: &mut Cursor<'a>) -> Option<SourceView<'a>> {
    let (mut kind, mut id, mut version) = (None, None, None);
    scan.object(|scan, name| {
        let slot = match name {
            "kind" => {
                if kind.is_some() {
                    return None;
                }
                kind = Some(source_kind(scan.string()?)?);
                return Some(());
            }
            "id" => &mut id,
            "version" => &mut version,
            _ => return None,
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(Cow::Borrowed(scan.string()?));
        Some(())
    })?;
    Some(SourceView { kind: kind?, id: id?, version: version? })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::cursor::{MAX_EXPONENT, MAX_NUMBER_LEN};
    use super::super::{check, decode_general_into, decode_into, EnvelopeView};
    use super::fill;

    const GOOD: &str = r#"{"schema":"pitgun-envelope/v1","event_id":"e1","source":{"kind":"game","id":"pitgun-web","version":"1.4.2"},"session_id":"s1","seq":1,"time_us":1000,"kind":"sample","channels":{"speed_kmh":120.5,"pit":true,"gear":-3,"tiny":1e-400,"z":-0,"long":0.1000000000000000055511151231257827021181583404541015625},"dims":{"track":"monza"}}"#;

    /// What the fast scan and the schema's checks give (`None` when the scan gives up) and what
    /// the general decoder gives.
    fn both(text: &str) -> (Option<Result<String, String>>, Result<String, String>) {
        let mut fast = EnvelopeView::empty();
        let fast = fill(text, &mut fast).map(|()| check(&fast).map(|()| format!("{fast:?}")).map_err(|e| e.to_string()));
        let mut general = EnvelopeView::empty();
        let general = decode_general_into(text, &mut general).map(|()| format!("{general:?}")).map_err(|e| e.to_string());
        (fast, general)
    }

    /// The scan's rule: when it decides, the general decoder accepts with the same values
    /// (`Debug` of an `f64` round-trips, so equal text is equal bits); and `decode_into` answers
    /// exactly as the general decoder, error text included.
    fn agree(text: &str) {
        let (fast, general) = both(text);
        if let Some(fast) = fast {
            assert_eq!(fast, general, "the scan decided otherwise than the general decoder: {text}");
        }
        let mut view = EnvelopeView::empty();
        let combined = decode_into(text, &mut view).map(|()| format!("{view:?}")).map_err(|e| e.to_string());
        assert_eq!(combined, general, "{text}");
    }

    #[test]
    fn takes_the_usual_shape_with_the_general_decoders_values() {
        let (fast, general) = both(GOOD);
        assert_eq!(fast.expect("the usual shape is scanned"), general);
        let spaced = " {\n\t\"schema\" : \"pitgun-envelope/v1\" ,\r\n\"event_id\":\"e1\",\"source\":{ \"version\":\"1\" , \"id\":\"é\",\"kind\":\"device\"},\"session_id\":\"s\",\"seq\":0,\"time_us\":0,\"kind\":\"pit_out\",\"channels\":{},\"dims\":{ } } ";
        assert!(both(spaced).0.is_some(), "whitespace anywhere JSON allows it");
        let minimal = GOOD.split(",\"channels\"").next().unwrap().to_string() + "}";
        assert!(both(&minimal).0.is_some(), "channels and dims may be left out");
        // Names and values ending on each side of the scan's 8- and 16-byte blocks, mid-record
        // and at its end.
        for len in [7, 8, 9, 15, 16, 17, 31, 32, 33] {
            let (name, value) = ("n".repeat(len), "v".repeat(len));
            let long = GOOD.replace("\"e1\"", &format!("\"{value}\"")).replace("speed_kmh", &name).replace("monza", &value);
            assert!(both(&long).0.is_some(), "a plain string of {len} bytes is scanned");
            agree(&long);
        }
        agree(GOOD);
        agree(spaced);
        agree(&minimal);
    }

    #[test]
    fn gives_up_on_whatever_the_general_decoder_reads_otherwise() {
        let give_ups = [
            GOOD.replace("\"e1\"", "\"e\\u0031\""),         // an escape: same value, general path
            GOOD.replace("\"schema\"", "\"sch\\u0065ma\""), // an escaped field name
            GOOD.replace("\"seq\":1", "\"seq\":1.0"),       // a fraction where an integer goes
            GOOD.replace("\"seq\":1", "\"seq\":-1"),
            GOOD.replace("\"seq\":1", "\"seq\":18446744073709551616"),
            GOOD.replace("\"time_us\":1000", "\"time_us\":9223372036854775808"),
            GOOD.replace("\"time_us\":1000", "\"time_us\":-5"),
            GOOD.replace("\"seq\":1", "\"seq\":01"),
            GOOD.replace("120.5", "1e400"), // not finite
            GOOD.replace("120.5", "1."),
            GOOD.replace("120.5", ".5"),
            GOOD.replace("120.5", "+1"),
            GOOD.replace("120.5", "NaN"),
            GOOD.replace("120.5", "tru"),
            GOOD.replace("120.5", "truex"),
            GOOD.replace("120.5", "null"),
            GOOD.replace("120.5", "\"1\""),
            GOOD.replace("\"monza\"", "7"),
            GOOD.replace("\"monza\"", "\"mon\tza\""),               // a raw control character
            GOOD.replace("\"monza\"", "\"monza_circuit\tx\""),      // one past the first eight bytes
            GOOD.replace("\"monza\"", "\"monza_circuit\\u0041\""),  // an escape past them
            GOOD.replace("\"e1\"", "\"event_of_session_1\tx\""),    // past the first sixteen
            GOOD.replace("\"e1\"", "\"event_of_session_1\\\"x\""),  // an escaped quote past them
            GOOD.replace("\"e1\"", "\"event_of_ses\u{7f}\u{1f}\""), // DEL is plain, 0x1f is not
            GOOD.replace("\"seq\":1,", "\"seq\":1,\"seq\":2,"),
            GOOD.replace("\"seq\":1,", ""),
            GOOD.replace("\"kind\":\"game\",", ""),
            GOOD.replace("\"kind\":\"game\"", "\"kind\":\"game\",\"kind\":\"game\""),
            GOOD.replace("\"version\":\"1.4.2\"", "\"version\":\"1.4.2\",\"extra\":1"),
            GOOD.replace("\"kind\":\"sample\"", "\"kind\":\"Sample\""),
            GOOD.replace("\"kind\":\"game\"", "\"kind\":\"console\""),
            GOOD.replace("\"kind\":\"sample\"", "\"kind\":\"sample\",\"extra\":1"),
            GOOD.replace("\"channels\":{", "\"channels\":null,\"x\":{"),
            GOOD.replace("{\"track\"", "{,\"track\""),
            GOOD.replace("\"monza\"}", "\"monza\",}"),
            format!("{GOOD} x"),
            format!("{GOOD}{{}}"),
            format!("\u{feff}{GOOD}"),
            GOOD[..GOOD.len() - 1].to_string(),
            GOOD.replace("120.5", &format!("1e{}", MAX_EXPONENT + 1)),
            GOOD.replace("120.5", &format!("0.{}1", "0".repeat(MAX_NUMBER_LEN))),
            "[]".into(),
            String::new(),
        ];
        for text in &give_ups {
            assert!(both(text).0.is_none(), "the scan decided: {text}");
            agree(text);
        }
        // Decided on the scan's side by the schema's checks, which both paths share.
        let checked = [
            GOOD.replace("pitgun-envelope/v1", "pitgun-envelope/v9"),
            GOOD.replace("\"e1\"", "\"\""),
            GOOD.replace("\"time_us\":1000", "\"time_us\":253402300800000000"),
            GOOD.replace("\"pit\":true", "\"pit\":true,\"pit\":false"),
        ];
        for text in &checked {
            assert!(both(text).0.is_some(), "the scan gave up: {text}");
            agree(text);
        }
        // The ones the general decoder refuses must also come out refused, with its words.
        let mut view = EnvelopeView::empty();
        assert!(decode_into(&give_ups[2], &mut view).unwrap_err().pointer == "/seq");
        assert!(decode_into(&GOOD.replace("120.5", "1e400"), &mut EnvelopeView::empty()).unwrap_err().message.contains("out of range"));
    }

    #[test]
    fn a_give_up_leaves_the_lists_as_they_were() {
        // The channels and a dimension come before the value that makes the scan give up, and
        // the lists already hold an entry each: the general decoder appends to what was there.
        let text = GOOD.replace("\"dims\":{\"track\":\"monza\"}", "\"dims\":{\"car\":\"f3\",\"track\":\"mon\\u007aa\"}");
        let mut view = EnvelopeView::empty();
        view.channels.push(("before".into(), 1.0));
        view.dims.push(("before".into(), "x".into()));
        decode_into(&text, &mut view).unwrap();
        assert_eq!(view.channels.len(), 1 + 6, "appended once, by the general decoder");
        let dims: Vec<_> = view.dims.iter().map(|(n, v)| format!("{n}={v}")).collect();
        assert_eq!(dims, ["before=x", "car=f3", "track=monza"]);
    }

    /// Bytes that change JSON's structure, numbers and escapes.
    const EDITS: &[&str] = &["", "\"", "\\", ",", ":", "{", "}", " ", "-", "0", "1", ".", "e", "+", "\\u0041", "\t", "true", "1e999", "\u{1}", "é"];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]
        /// Random edits of a good envelope: the scan and the general decoder never disagree.
        #[test]
        fn random_edits_never_disagree(edits in proptest::collection::vec((0usize..400, 0usize..4, 0usize..EDITS.len()), 1..4)) {
            let mut text = GOOD.to_string();
            for (at, cut, insert) in edits {
                let mut at = at % (text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let mut end = (at + cut).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                text.replace_range(at..end, EDITS[insert]);
            }
            agree(&text);
        }

        /// Numbers of every form: the one-pass parse gives the general decoder's bits, on both
        /// sides of the exact fast case (53-bit digits, powers of ten up to 22).
        #[test]
        fn numbers_parse_to_the_same_bits(
            negative in any::<bool>(),
            whole in "(0|[1-9][0-9]{0,24})",
            fraction in proptest::option::of("[0-9]{1,24}"),
            exponent in proptest::option::of((prop_oneof![Just("e"), Just("E")], prop_oneof![Just(""), Just("+"), Just("-")], 0u32..400)),
            bits in any::<u64>(),
        ) {
            let mut number = format!("{}{whole}", if negative { "-" } else { "" });
            if let Some(f) = fraction {
                number += &format!(".{f}");
            }
            if let Some((e, sign, power)) = exponent {
                number += &format!("{e}{sign}{power}");
            }
            let any_double = f64::from_bits(bits);
            let text = GOOD.replace("120.5", &number).replace("\"gear\":-3", &format!("\"gear\":{any_double:e}"));
            agree(&text);
            if any_double.is_finite() {
                let mut view = EnvelopeView::empty();
                prop_assert!(fill(&text, &mut view).is_some() || !number.parse::<f64>().unwrap().is_finite());
            }
        }
    }
}
