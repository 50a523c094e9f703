//! The envelope JSON view decoder (`pitgun_codec::json::decode`), the schema rules the gateway
//! adds (`pitgun_codec::rules::check`) and the wire sniffing of `pitgun_codec::wire::Decoder`, on
//! arbitrary bytes: an error, never a panic. An envelope both accept is written as Avro exactly
//! as the gateway writes it and must read back the same. The decoder's fast scan must answer
//! exactly as the general decoder it falls back to (the same values, the same error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitgun_codec::avro::{decode_avro_into, AvroWriter};
use pitgun_codec::json::{decode, decode_general_into, EnvelopeView};
use pitgun_codec::rules;
use pitgun_codec::wire::Decoder;

fuzz_target!(|data: &[u8]| {
    let wire = Decoder::default();
    let _ = wire.classify(data);
    let mut json = String::new();
    let _ = wire.to_json(data, &mut json);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut general = EnvelopeView::empty();
    let general = decode_general_into(text, &mut general).map(|()| format!("{general:?}"));
    let decoded = decode(text);
    assert_eq!(decoded.as_ref().map(|v| format!("{v:?}")).map_err(Clone::clone), general, "the fast scan and the general decoder differ");
    let Ok(view) = decoded else { return };
    if rules::check(&view).is_err() {
        return;
    }
    let mut bytes = Vec::new();
    AvroWriter::new().write(&view, &[], &mut bytes);
    let mut back = EnvelopeView::empty();
    decode_avro_into(&bytes[10..], &mut back).expect("an envelope the gateway accepts reads back from its Avro");
    assert_eq!(
        format!("{:?}", (&back.schema, &back.event_id, &back.source, &back.session_id, back.seq, back.time_us, back.kind)),
        format!("{:?}", (&view.schema, &view.event_id, &view.source, &view.session_id, view.seq, view.time_us, view.kind))
    );
    let bits = |v: &EnvelopeView| v.channels.iter().map(|(n, x)| (n.to_string(), x.to_bits())).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&view));
    // Dimensions as given, in order (the decoder refused a name written twice).
    let pairs = |v: &EnvelopeView| v.dims.iter().map(|(n, x)| (n.to_string(), x.to_string())).collect::<Vec<_>>();
    assert_eq!(pairs(&back), pairs(&view));
    assert_eq!(wire.to_envelope(&bytes).map(|e| e.session_id), Ok(view.session_id.to_string()));
});
