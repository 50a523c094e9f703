//! Decoding and resolving an Avro datum in one pass: the engine's step on top of the codec's
//! [`DatumReader`], for the producer layouts the resolver has learned.

use std::borrow::Cow;

use pitgun_codec::avro::DatumReader;
use pitgun_codec::EnvelopeView;

use crate::resolve::Resolver;

/// Decodes and resolves in one pass, for a producer whose channel layout the resolver has
/// learned: each channel's name is compared with the layout's name at its position and its
/// value goes straight to its input slot, with no channel list in between. Returns the number of
/// unknown channels dropped, or `None` whenever anything is unusual — another layout, an invalid
/// field or value, an id or dimension the schema refuses, a refused channel — and the caller then
/// takes the two-pass path ([`pitgun_codec::avro::decode_avro_into`], then [`Resolver::resolve`]),
/// which learns layouts and words every error. So the result of an event never depends on which
/// path took it.
///
/// `takes` is asked once the head (ids, session, kind) is decoded, before any channel: whether
/// the plan takes the event. The runner also starts its dedup prefetch there, so that memory's
/// wait overlaps the channels' decoding, as it overlaps resolution on the JSON path.
#[inline]
pub(crate) fn decode_avro_resolved<'a>(
    datum: &'a [u8],
    view: &mut EnvelopeView<'a>,
    takes: impl Fn(&EnvelopeView<'a>) -> bool,
    resolver: &mut Resolver,
    values: &mut Vec<f64>,
) -> Option<u32> {
    let mut r = DatumReader::new(datum);
    r.head(view).ok()?;
    view.channels.clear();
    let count = r.long("/channels").ok()?;
    let count = usize::try_from(count).ok()?;
    if !takes(view) {
        // A kind the plan does not take: its channels are listed, not resolved (the caller
        // checks the envelope as the two-pass path would).
        values.clear();
        for _ in 0..count {
            let name = std::str::from_utf8(r.bytes("/channels").ok()?).ok()?;
            let value = r.channel_value(name).ok()?;
            view.channels.push((Cow::Borrowed(name), value));
        }
        if count > 0 && r.long("/channels").ok()? != 0 {
            return None;
        }
        r.tail(view).ok()?;
        return Some(0);
    }
    let mut layout = resolver.learned_layout(&view.source.id, &view.source.version, count)?;
    values.clear();
    values.resize(layout.input_count, f64::NAN);
    let mut unknown = 0;
    for i in 0..count {
        let name = r.bytes("/channels").ok()?;
        let found = layout.binding(i, name)?;
        // Equal to a known name, so valid UTF-8; the name only words errors, which this
        // path leaves to the two-pass one.
        let raw = r.channel_value("").ok()?;
        match found {
            None if layout.drops_unknown => unknown += 1,
            None => return None,
            Some((binding, _)) => layout.bind(binding, raw, values)?,
        }
    }
    if r.long("/channels").ok()? != 0 {
        return None;
    }
    r.tail(view).ok()?;
    // The layout vouches for the source and the channels' names; ids and dimensions are the
    // event's own.
    resolver.check_ids_and_dims(view).ok()?;
    Some(unknown)
}
