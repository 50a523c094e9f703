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

use super::{EnvelopeView, SourceView, FIELDS, REQUIRED};

/// Fills `view` from `text` when it has the usual shape; `None` leaves the decision to the
/// general decoder (the caller undoes what was appended to the lists).
pub(super) fn fill<'a>(text: &'a str, view: &mut EnvelopeView<'a>) -> Option<()> {
    let mut scan = Scan { text, bytes: text.as_bytes(), at: 0 };
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
            2 => view.source = scan.source()?,
            3 => view.session_id = Cow::Borrowed(scan.string()?),
            4 => view.seq = scan.integer()?,
            5 => view.time_us = scan.integer()?.try_into().ok()?,
            6 => view.kind = EventKind::parse(scan.string()?)?,
            7 => scan.object(|scan, name| {
                let value = scan.channel_value()?;
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
    scan.skip_whitespace();
    (scan.at == scan.bytes.len() && seen & REQUIRED == REQUIRED).then_some(())
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

/// A number's value, and the same as an integer when it is written as a plain non-negative
/// integer literal that fits (what `seq` and `time_us` take).
struct Number {
    value: f64,
    integer: Option<u64>,
}

/// Past these, a number is left to the general decoder: `serde_json` handles an exponent beyond
/// 32 bits, or billions of digits, its own way, and no producer sends them.
const MAX_EXPONENT: i64 = 1_000_000;
const MAX_NUMBER_LEN: usize = 1_000;

/// The powers of ten an `f64` holds exactly.
const POWERS_OF_TEN: [f64; 23] =
    [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22];

/// A cursor over JSON text.
struct Scan<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    /// Skips JSON whitespace (RFC 8259: space, tab, line feed, carriage return).
    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, consumed.
    #[inline]
    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    /// The next byte after whitespace, not consumed. Producers send compact JSON, so the byte
    /// under the cursor is tested first and the whitespace loop entered only on one.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        if byte > b' ' {
            return Some(byte);
        }
        self.skip_whitespace();
        self.bytes.get(self.at).copied()
    }

    /// Consumes `literal` exactly.
    #[inline]
    fn literal(&mut self, literal: &[u8]) -> Option<()> {
        let end = self.at + literal.len();
        (self.bytes.get(self.at..end)? == literal).then(|| self.at = end)
    }

    /// An object: calls `member(self, name)` for each member; `member` reads the value.
    #[inline]
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        if self.next()? != b'{' {
            return None;
        }
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let name = self.string()?;
            if self.next()? != b':' {
                return None;
            }
            member(self, name)?;
            match self.next()? {
                b',' => {}
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// A string with no escape (a control character is not allowed in JSON text either),
    /// borrowed from the input.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a str> {
        if self.next()? != b'"' {
            return None;
        }
        let start = self.at;
        // Eight bytes at a time to the first byte that may end the plain run: a quote, a
        // backslash or a control character. The lowest flagged byte is a true one (a borrow
        // only flags bytes above a true hit), so the word's test alone decides.
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
        while let Some(word) = self.bytes.get(self.at..self.at + 8) {
            let v = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            let hits = (zero_byte(v ^ (ONES * b'"' as u64)) | zero_byte(v ^ (ONES * b'\\' as u64)) | (v.wrapping_sub(ONES * 0x20) & !v)) & HIGH;
            if hits != 0 {
                self.at += (hits.trailing_zeros() / 8) as usize;
                return self.string_end(start);
            }
            self.at += 8;
        }
        while let Some(&byte) = self.bytes.get(self.at) {
            if matches!(byte, b'"' | b'\\' | 0..=0x1f) {
                break;
            }
            self.at += 1;
        }
        self.string_end(start)
    }

    /// Ends the string begun at `start` at the byte under the cursor: a quote, else give up.
    #[inline]
    fn string_end(&mut self, start: usize) -> Option<&'a str> {
        if *self.bytes.get(self.at)? != b'"' {
            return None;
        }
        // SAFETY: `text` is a `str`, and both ends sit next to an ASCII quote (`start` just
        // after the opening one, `self.at` on the closing one), so both are character
        // boundaries within it. The checked `get` cost 5 % of a replay in this hot loop.
        let value = unsafe { self.text.get_unchecked(start..self.at) };
        self.at += 1;
        Some(value)
    }

    /// A JSON number, its grammar checked, in one pass.
    #[inline(always)]
    fn number(&mut self) -> Option<Number> {
        self.skip_whitespace();
        let start = self.at;
        let negative = self.bytes.get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        // The decimal digits as one integer, and the power of ten they are scaled by. Nineteen
        // digits always fit 64 bits, so the loop needs no overflow check; past nineteen the
        // text is parsed instead (and `seq` or `time_us` left to the general decoder).
        let mut mantissa = 0u64;
        let mut digits = |scan: &mut Self| {
            let first = scan.at;
            while let Some(&d @ b'0'..=b'9') = scan.bytes.get(scan.at) {
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                scan.at += 1;
            }
            scan.at - first
        };
        let mut count = match self.bytes.get(self.at)? {
            b'0' => {
                self.at += 1;
                0
            }
            b'1'..=b'9' => digits(self),
            _ => return None,
        };
        let (mut plain, mut scale) = (!negative, 0i64);
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            let fraction = digits(self);
            if fraction == 0 {
                return None;
            }
            (count, scale, plain) = (count + fraction, -(fraction as i64), false);
        }
        let fits = count <= 19;
        let mut exponent = 0i64;
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            let sign = match self.bytes.get(self.at) {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            self.at += usize::from(sign != 0);
            let first = self.at;
            while let Some(&d @ b'0'..=b'9') = self.bytes.get(self.at) {
                exponent = exponent * 10 + i64::from(d - b'0');
                if exponent > MAX_EXPONENT {
                    return None;
                }
                self.at += 1;
            }
            if self.at == first {
                return None;
            }
            exponent *= if sign < 0 { -1 } else { 1 };
            plain = false;
        }
        // Exact operands and one rounding when the digits fit 53 bits and the power of ten is
        // exact (Clinger's fast path); otherwise the standard library's correctly rounded parse.
        let power = scale + exponent;
        let value = if fits && mantissa <= 1 << 53 && (-22..=22).contains(&power) {
            let (m, p) = (mantissa as f64, POWERS_OF_TEN[power.unsigned_abs() as usize]);
            let v = if power < 0 { m / p } else { m * p };
            if negative {
                -v
            } else {
                v
            }
        } else {
            self.text.get(start..self.at)?.parse().ok()?
        };
        if self.at - start > MAX_NUMBER_LEN {
            return None;
        }
        Some(Number { value, integer: (plain && fits).then_some(mantissa) })
    }

    /// A non-negative integer literal that fits 64 bits.
    #[inline]
    fn integer(&mut self) -> Option<u64> {
        self.number()?.integer
    }

    /// A channel's value: a finite number, or a boolean as 1 or 0. Every JSON number becomes
    /// the nearest `f64` here as in the general decoder (`serde_json` with `float_roundtrip`),
    /// so both give the same bits; a literal too large for `f64` gives up.
    #[inline]
    fn channel_value(&mut self) -> Option<f64> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| 1.0),
            b'f' => self.literal(b"false").map(|()| 0.0),
            _ => {
                let value = self.number()?.value;
                value.is_finite().then_some(value)
            }
        }
    }

    /// The `source` object: every member once, none other.
    fn source(&mut self) -> Option<SourceView<'a>> {
        let (mut kind, mut id, mut version) = (None, None, None);
        self.object(|scan, name| {
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
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
            GOOD.replace("\"monza\"", "\"mon\tza\""),              // a raw control character
            GOOD.replace("\"monza\"", "\"monza_circuit\tx\""),     // one past the first eight bytes
            GOOD.replace("\"monza\"", "\"monza_circuit\\u0041\""), // an escape past them
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
            GOOD.replace("120.5", &format!("1e{}", super::MAX_EXPONENT + 1)),
            GOOD.replace("120.5", &format!("0.{}1", "0".repeat(super::MAX_NUMBER_LEN))),
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
