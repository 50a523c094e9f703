//! Decoding the Avro binary datum of `pitgun-envelope/v1.avsc` straight into a borrowed
//! [`EnvelopeView`] — no `apache_avro::types::Value` tree, no allocation per event.
//!
//! The generic reader builds a value tree with an owned string per field name and channel and
//! then converts it; at ~10 µs per envelope it cost the processor more than the engine itself.
//! This decoder knows the schema's field order (the `.avsc` is embedded and fixed per version;
//! the caller checks the single-object fingerprint before calling) and reads the binary
//! encoding directly: zig-zag varints, length-prefixed UTF-8, map blocks, the channel union.
//! It applies the same checks as the JSON decoder, and tests hold it against `apache-avro`'s
//! encoder. Errors name the JSON pointer of the field, like the JSON path.

use std::borrow::Cow;

use pitgun_contracts::envelope::{EventKind, SourceKind, ENVELOPE_SCHEMA_V1};

use crate::decode::{check, DecodeError, EnvelopeView};
use crate::resolve::Resolver;

const SOURCE_KINDS: [SourceKind; 4] = [
    SourceKind::Game,
    SourceKind::Simulator,
    SourceKind::Device,
    SourceKind::Replay,
];
/// The `.avsc` lists the symbols in declaration order (held by the contracts' schema tests).
const EVENT_KINDS: [EventKind; 9] = EventKind::ALL;

/// The session id's bytes in an envelope's Avro datum, read past the fields before it without
/// decoding the rest; `None` when the datum is too damaged to tell. A driver uses it to group a
/// batch's records by session before feeding them (see the processor's partition feed).
pub fn session_id_of(datum: &[u8]) -> Option<&[u8]> {
    let mut r = Reader { bytes: datum, at: 0 };
    r.bytes("").ok()?; // schema
    r.bytes("").ok()?; // event_id
    r.index("", SOURCE_KINDS.len()).ok()?; // source.kind
    r.bytes("").ok()?; // source.id
    r.bytes("").ok()?; // source.version
    r.bytes("").ok()
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn err(pointer: &str, message: impl Into<String>) -> DecodeError {
    DecodeError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn long(&mut self, pointer: &str) -> Result<i64, DecodeError> {
        // One byte holds -64..=63: counts, indexes, lengths of short strings — most varints.
        if let Some(&b) = self.bytes.get(self.at) {
            if b & 0x80 == 0 {
                self.at += 1;
                return Ok(i64::from(b >> 1) ^ -i64::from(b & 1));
            }
        }
        self.long_slow(pointer)
    }

    #[inline(never)]
    fn long_slow(&mut self, pointer: &str) -> Result<i64, DecodeError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.at) else {
                return Err(err(pointer, "Avro datum ends inside a number"));
            };
            self.at += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(err(pointer, "Avro varint longer than 10 bytes"))
    }

    #[inline(always)]
    fn take(&mut self, n: usize, pointer: &str) -> Result<&'a [u8], DecodeError> {
        match self.bytes.get(self.at..).and_then(|rest| rest.get(..n)) {
            Some(s) => {
                self.at += n;
                Ok(s)
            }
            None => Err(err(pointer, "Avro datum ends inside a value")),
        }
    }

    #[inline(always)]
    fn bytes(&mut self, pointer: &str) -> Result<&'a [u8], DecodeError> {
        let len = self.long(pointer)?;
        match usize::try_from(len) {
            Ok(len) => self.take(len, pointer),
            Err(_) => Err(err(pointer, format!("negative string length {len}"))),
        }
    }

    #[inline(always)]
    fn string(&mut self, pointer: &str) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes(pointer)?;
        // Ids, channel and dimension names are nearly always ASCII, and strings this short
        // check faster with a branch-free OR over the bytes than with UTF-8 validation.
        if bytes.iter().fold(0u8, |acc, b| acc | b) < 0x80 {
            // SAFETY: every ASCII byte sequence is valid UTF-8.
            return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).map_err(|e| err(pointer, format!("string is not UTF-8: {e}")))
    }

    #[inline(always)]
    fn index(&mut self, pointer: &str, symbols: usize) -> Result<usize, DecodeError> {
        let i = self.long(pointer)?;
        usize::try_from(i)
            .ok()
            .filter(|&i| i < symbols)
            .ok_or_else(|| err(pointer, format!("enum index {i} out of range")))
    }

    /// Reads map blocks, calling `item` for each entry.
    #[inline(always)]
    fn map(
        &mut self,
        pointer: &str,
        mut item: impl FnMut(&mut Self) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        loop {
            let mut count = self.long(pointer)?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                count = count
                    .checked_neg()
                    .ok_or_else(|| err(pointer, "bad map block count"))?;
                self.long(pointer)?; // block size in bytes, not needed
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }
}

/// Decodes one Avro binary datum (the bytes after the single-object header) into `view`.
pub fn decode_avro_into<'a>(
    datum: &'a [u8],
    view: &mut EnvelopeView<'a>,
) -> Result<(), DecodeError> {
    let mut r = Reader {
        bytes: datum,
        at: 0,
    };
    head(&mut r, view)?;
    view.channels.clear();
    let channels = &mut view.channels;
    r.map("/channels", |r| {
        let name = r.string("/channels")?;
        let value = channel_value(r, name)?;
        channels.push((Cow::Borrowed(name), value));
        Ok(())
    })?;
    tail(&mut r, view)
}

/// The fields before the channels.
#[inline(always)]
fn head<'a>(r: &mut Reader<'a>, view: &mut EnvelopeView<'a>) -> Result<(), DecodeError> {
    // The schema name is nearly always the one expected: compared as bytes, no UTF-8 check.
    let schema = r.bytes("/schema")?;
    view.schema = match schema {
        s if s == ENVELOPE_SCHEMA_V1.as_bytes() => Cow::Borrowed(ENVELOPE_SCHEMA_V1),
        _ => Cow::Borrowed(
            std::str::from_utf8(schema)
                .map_err(|e| err("/schema", format!("string is not UTF-8: {e}")))?,
        ),
    };
    view.event_id = Cow::Borrowed(r.string("/event_id")?);
    view.source.kind = SOURCE_KINDS[r.index("/source/kind", SOURCE_KINDS.len())?];
    view.source.id = Cow::Borrowed(r.string("/source/id")?);
    view.source.version = Cow::Borrowed(r.string("/source/version")?);
    view.session_id = Cow::Borrowed(r.string("/session_id")?);
    let seq = r.long("/seq")?;
    view.seq = u64::try_from(seq).map_err(|_| err("/seq", format!("{seq} is negative")))?;
    view.time_us = r.long("/time_us")?;
    view.kind = EVENT_KINDS[r.index("/kind", EVENT_KINDS.len())?];
    Ok(())
}

/// A channel's value: the union's double (finite) or boolean (as 1/0).
#[inline(always)]
fn channel_value(r: &mut Reader<'_>, name: &str) -> Result<f64, DecodeError> {
    match r.index("/channels", 2)? {
        0 => {
            let b = r.take(8, "/channels")?;
            let v = f64::from_le_bytes(b.try_into().expect("8 bytes"));
            if !v.is_finite() {
                return Err(err(&format!("/channels/{name}"), "number is not finite"));
            }
            Ok(v)
        }
        _ => match r.take(1, "/channels")?[0] {
            0 => Ok(0.0),
            1 => Ok(1.0),
            b => Err(err(&format!("/channels/{name}"), format!("boolean byte {b}"))),
        },
    }
}

/// The fields after the channels, then the envelope's checks.
#[inline(always)]
fn tail<'a>(r: &mut Reader<'a>, view: &mut EnvelopeView<'a>) -> Result<(), DecodeError> {
    view.dims.clear();
    let dims = &mut view.dims;
    r.map("/dims", |r| {
        let k = r.string("/dims")?;
        let v = r.string("/dims")?;
        dims.push((Cow::Borrowed(k), Cow::Borrowed(v)));
        Ok(())
    })?;
    if r.at != r.bytes.len() {
        return Err(err(
            "",
            format!("{} bytes after the envelope", r.bytes.len() - r.at),
        ));
    }
    check(view)
}

/// Decodes and resolves in one pass, for a producer whose channel layout the resolver has
/// learned: each channel's name is compared with the layout's name at its position and its
/// value goes straight to its input slot, with no channel list in between. Returns the number of
/// unknown channels dropped, or `None` whenever anything is unusual — another layout, an invalid
/// field or value, a refused channel — and the caller then takes the two-pass path
/// ([`decode_avro_into`], then [`Resolver::resolve`]), which learns layouts and words every
/// error. So the result of an event never depends on which path took it.
#[inline]
pub(crate) fn decode_avro_resolved<'a>(
    datum: &'a [u8],
    view: &mut EnvelopeView<'a>,
    resolver: &mut Resolver,
    values: &mut Vec<f64>,
) -> Option<u32> {
    let mut r = Reader {
        bytes: datum,
        at: 0,
    };
    head(&mut r, view).ok()?;
    view.channels.clear();
    let count = r.long("/channels").ok()?;
    let count = usize::try_from(count).ok()?;
    let mut layout = resolver.learned_layout(&view.source.id, &view.source.version, count)?;
    values.clear();
    values.resize(layout.input_count, f64::NAN);
    let mut unknown = 0;
    for i in 0..count {
        let name = r.bytes("/channels").ok()?;
        let found = layout.binding(i, name)?;
        // Equal to a known name, so valid UTF-8; the name only words errors, which this
        // path leaves to the two-pass one.
        let raw = channel_value(&mut r, "").ok()?;
        match found {
            None if layout.drops_unknown => unknown += 1,
            None => return None,
            Some((binding, _)) => layout.bind(binding, raw, values)?,
        }
    }
    if r.long("/channels").ok()? != 0 {
        return None;
    }
    tail(&mut r, view).ok()?;
    Some(unknown)
}
