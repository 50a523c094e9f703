//! The Avro object container file reader (`pitgun_codec::avro::container::ContainerReader`):
//! header, metadata, codec, sync markers and deflate/zstandard blocks, then every datum of each
//! block split by `datum_len` and decoded, as `replay` reads an `.avro` dataset. A damaged file
//! is an error, never a panic, a hang or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitgun_codec::avro::container::ContainerReader;
use pitgun_codec::avro::{datum_len, decode_avro_into};
use pitgun_codec::json::EnvelopeView;

fuzz_target!(|file: &[u8]| {
    let Ok(mut reader) = ContainerReader::new(file) else { return };
    let mut data = Vec::new();
    for _ in 0..64 {
        data.clear();
        let Ok(Some(count)) = reader.next_block(&mut data) else { return };
        let mut at = 0;
        for _ in 0..count.min(10_000) {
            let Ok(len) = datum_len(&data[at..]) else { break };
            assert!(len <= data.len() - at);
            let mut view = EnvelopeView::empty();
            let _ = decode_avro_into(&data[at..at + len], &mut view);
            at += len;
        }
    }
});
