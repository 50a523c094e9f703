//! Reading the Avro binary datum of `pitgun-envelope/v1.avsc` straight into a borrowed
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

use std::collections::BTreeMap;

use pitgun_contracts::envelope::{ChannelValue, Envelope, Source, ENVELOPE_SCHEMA_V1};

use super::{EVENT_KINDS, SOURCE_KINDS};
use crate::json::{check, DecodeError, EnvelopeView};

/// The session id's bytes in an envelope's Avro datum, read past the fields before it without
/// decoding the rest; `None` when the datum is too damaged to tell. A driver uses it to group a
/// batch's records by session before feeding them (see the processor's partition feed).
pub fn session_id_of(datum: &[u8]) -> Option<&[u8]> {
    let mut r = DatumReader::new(datum);
    r.bytes("").ok()?; // schema
    r.bytes("").ok()?; // event_id
    r.index("", SOURCE_KINDS.len()).ok()?; // source.kind
    r.bytes("").ok()?; // source.id
    r.bytes("").ok()?; // source.version
    r.bytes("").ok()
}

/// A cursor over one datum. Public for a reader that binds channels as it reads them (the
/// engine's fused decode-and-resolve step); everyone else calls [`decode_avro_into`].
pub struct DatumReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn err(pointer: &str, message: impl Into<String>) -> DecodeError {
    DecodeError { pointer: pointer.into(), message: message.into() }
}

impl<'a> DatumReader<'a> {
    /// A cursor at the start of `datum`.
    pub fn new(datum: &'a [u8]) -> DatumReader<'a> {
        DatumReader { bytes: datum, at: 0 }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.at
    }

    /// A zig-zag varint.
    #[inline(always)]
    pub fn long(&mut self, pointer: &str) -> Result<i64, DecodeError> {
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

    /// A length-prefixed byte string.
    #[inline(always)]
    pub fn bytes(&mut self, pointer: &str) -> Result<&'a [u8], DecodeError> {
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
        usize::try_from(i).ok().filter(|&i| i < symbols).ok_or_else(|| err(pointer, format!("enum index {i} out of range")))
    }

    /// Reads map blocks, calling `item` for each entry.
    #[inline(always)]
    fn map(&mut self, pointer: &str, mut item: impl FnMut(&mut Self) -> Result<(), DecodeError>) -> Result<(), DecodeError> {
        loop {
            let mut count = self.long(pointer)?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                count = count.checked_neg().ok_or_else(|| err(pointer, "bad map block count"))?;
                self.long(pointer)?; // block size in bytes, not needed
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }
}

/// Decodes one Avro binary datum (the bytes after the single-object header) into `view`.
pub fn decode_avro_into<'a>(datum: &'a [u8], view: &mut EnvelopeView<'a>) -> Result<(), DecodeError> {
    let mut r = DatumReader::new(datum);
    r.head(view)?;
    view.channels.clear();
    let channels = &mut view.channels;
    r.map("/channels", |r| {
        let name = r.string("/channels")?;
        let value = r.channel_value(name)?;
        channels.push((Cow::Borrowed(name), value));
        Ok(())
    })?;
    r.tail(view)
}

impl<'a> DatumReader<'a> {
    /// The fields before the channels.
    #[inline(always)]
    pub fn head(&mut self, view: &mut EnvelopeView<'a>) -> Result<(), DecodeError> {
        let r = self;
        // The schema name is nearly always the one expected: compared as bytes, no UTF-8 check.
        let schema = r.bytes("/schema")?;
        view.schema = match schema {
            s if s == ENVELOPE_SCHEMA_V1.as_bytes() => Cow::Borrowed(ENVELOPE_SCHEMA_V1),
            _ => Cow::Borrowed(std::str::from_utf8(schema).map_err(|e| err("/schema", format!("string is not UTF-8: {e}")))?),
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

    /// A channel's value: the union's double (finite) or boolean (as 1/0). `name` words errors.
    #[inline(always)]
    pub fn channel_value(&mut self, name: &str) -> Result<f64, DecodeError> {
        Ok(match self.typed_value(name)? {
            ChannelValue::Number(v) => v,
            ChannelValue::Bool(b) => f64::from(u8::from(b)),
        })
    }

    #[inline(always)]
    fn typed_value(&mut self, name: &str) -> Result<ChannelValue, DecodeError> {
        let r = self;
        match r.index("/channels", 2)? {
            0 => {
                let b = r.take(8, "/channels")?;
                let v = f64::from_le_bytes(b.try_into().expect("8 bytes"));
                if !v.is_finite() {
                    return Err(err(&format!("/channels/{name}"), "number is not finite"));
                }
                Ok(ChannelValue::Number(v))
            }
            _ => match r.take(1, "/channels")?[0] {
                0 => Ok(ChannelValue::Bool(false)),
                1 => Ok(ChannelValue::Bool(true)),
                b => Err(err(&format!("/channels/{name}"), format!("boolean byte {b}"))),
            },
        }
    }

    /// The fields after the channels, then the envelope's checks.
    #[inline(always)]
    pub fn tail(&mut self, view: &mut EnvelopeView<'a>) -> Result<(), DecodeError> {
        let r = self;
        view.dims.clear();
        let dims = &mut view.dims;
        r.map("/dims", |r| {
            let k = r.string("/dims")?;
            let v = r.string("/dims")?;
            dims.push((Cow::Borrowed(k), Cow::Borrowed(v)));
            Ok(())
        })?;
        if r.at != r.bytes.len() {
            return Err(err("", format!("{} bytes after the envelope", r.bytes.len() - r.at)));
        }
        check(view)
    }
}

/// The length of the datum at the start of `bytes`, read past its fields without checking them
/// (an object container packs datums back to back; the engine checks each one it is fed).
pub fn datum_len(bytes: &[u8]) -> Result<usize, DecodeError> {
    let mut r = DatumReader::new(bytes);
    for pointer in ["/schema", "/event_id"] {
        r.bytes(pointer)?;
    }
    r.index("/source/kind", SOURCE_KINDS.len())?;
    for pointer in ["/source/id", "/source/version", "/session_id"] {
        r.bytes(pointer)?;
    }
    r.long("/seq")?;
    r.long("/time_us")?;
    r.index("/kind", EVENT_KINDS.len())?;
    r.map("/channels", |r| {
        r.bytes("/channels")?;
        // Skipped, not judged: a bad value is the engine's refusal of this one record.
        let width = if r.index("/channels", 2)? == 0 { 8 } else { 1 };
        r.take(width, "/channels").map(drop)
    })?;
    r.map("/dims", |r| {
        r.bytes("/dims")?;
        r.bytes("/dims").map(drop)
    })?;
    Ok(r.at)
}

/// An owned envelope from a datum, booleans kept as booleans (for `tail` and `topic export`,
/// where a reader sees what the producer sent). Same checks as [`decode_avro_into`].
pub fn read_envelope(datum: &[u8]) -> Result<Envelope, DecodeError> {
    let mut view = EnvelopeView::empty();
    let mut r = DatumReader::new(datum);
    r.head(&mut view)?;
    let mut channels = BTreeMap::new();
    r.map("/channels", |r| {
        let name = r.string("/channels")?;
        let value = r.typed_value(name)?;
        match channels.insert(name.to_string(), value) {
            Some(_) => Err(crate::rules::repeated_channel(name).into()),
            None => Ok(()),
        }
    })?;
    r.tail(&mut view)?;
    Ok(Envelope {
        schema: view.schema.into_owned(),
        event_id: view.event_id.into_owned(),
        source: Source { kind: view.source.kind, id: view.source.id.into_owned(), version: view.source.version.into_owned() },
        session_id: view.session_id.into_owned(),
        seq: view.seq,
        time_us: view.time_us,
        kind: view.kind,
        channels,
        dims: view.dims.into_iter().map(|(k, v)| (k.into_owned(), v.into_owned())).collect(),
    })
}
