//! The gateway's body handling, `POST /v1/envelopes` after authentication: content encoding
//! (`batch::decompress` with the size limit: identity, gzip, zstd), framing (`batch::split`:
//! one JSON object, a JSON array, NDJSON) and per-item validation (`validate::Validator::check`
//! against the racing dictionary and a fixed clock).
//!
//! Building the router per input would need a Kafka producer (the answer waits for the broker),
//! so this calls the functions `Gateway::ingest` calls, in its order, with its arguments. The
//! first byte chooses framing, encoding and whether the caller's key names a source; the rest is
//! the body. Encodings 3 and 4 compress the body here first (gzip, zstd), so the framing and
//! validation behind the decoders see well-formed streams as well as damaged ones.
//!
//! Held: no panic; items are in order, inside the body and trimmed; every item is valid,
//! rejected or foreign exactly once; every valid item's Avro record reads back as the same
//! envelope the processor will decode.
#![no_main]

use std::io::Write;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pitgun_codec::wire::Decoder;
use pitgun_ingest::batch::{decompress, split, Encoding, Framing};
use pitgun_ingest::catalog::ChannelCatalog;
use pitgun_ingest::validate::{Checked, Validator};

const MAX_BODY: usize = 1 << 20;
const MAX_BATCH: usize = 500;
const NOW_US: i64 = 1_767_225_603_677_340;

fn validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| {
        let dict = serde_yaml_ng::from_str(include_str!("../../manifests/dictionary/racing.yaml")).unwrap();
        Validator::new(Arc::new(ChannelCatalog::new(&dict).unwrap()), 300_000_000, 256 << 10).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else { return };
    let framing = if mode & 1 == 0 { Framing::Json } else { Framing::Ndjson };
    let source = if mode & 2 == 0 { None } else { Some("pitgun-web") };
    let compressed;
    let (body, encoding) = match (mode >> 2) % 5 {
        0 => (body, Encoding::Identity),
        1 => (body, Encoding::Gzip),
        2 => (body, Encoding::Zstd),
        3 => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(body).unwrap();
            compressed = gz.finish().unwrap();
            (&compressed[..], Encoding::Gzip)
        }
        _ => {
            compressed = zstd::encode_all(body, 1).unwrap();
            (&compressed[..], Encoding::Zstd)
        }
    };
    let mut decoded = Vec::new();
    let decoded: &[u8] = if encoding == Encoding::Identity {
        body
    } else {
        if decompress(body, encoding, MAX_BODY, &mut decoded).is_err() {
            return;
        }
        assert!(decoded.len() <= MAX_BODY);
        &decoded
    };
    let mut items = Vec::new();
    if split(decoded, framing, MAX_BATCH, &mut items).is_err() {
        return;
    }
    assert!(!items.is_empty() && items.len() <= MAX_BATCH);
    let mut end = 0;
    for r in &items {
        assert!(end <= r.start && r.start <= r.end && r.end <= decoded.len(), "{items:?}");
        let item = &decoded[r.clone()];
        assert!(!item.is_empty() && !item[0].is_ascii_whitespace() && !item[item.len() - 1].is_ascii_whitespace());
        end = r.end;
    }
    let mut checked = Checked::default();
    validator().check(decoded, &items, source, NOW_US, &mut checked);
    let foreign = checked.foreign.is_some();
    assert!(checked.rejected.windows(2).all(|w| w[0].index < w[1].index));
    assert!(checked.rejected.iter().all(|r| r.index < items.len() && r.bytes == items[r.index]));
    if !foreign {
        assert_eq!(checked.valid.len() + checked.rejected.len(), items.len());
    }
    let wire = Decoder::default();
    for v in &checked.valid {
        let env = wire.to_envelope(&checked.arena[v.value.clone()]).expect("a record the gateway stores decodes");
        assert_eq!(env.session_id.as_bytes(), &checked.arena[v.key.clone()]);
        if let Some(s) = source {
            assert_eq!(env.source.id, s);
        }
    }
});
