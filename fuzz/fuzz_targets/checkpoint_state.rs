//! The checkpoint state decoder: what the processor reads back from RocksDB for each open
//! session when it restores a partition (`processor/src/state.rs`, `StateDb::restore`): the
//! session's record (`SessionState::from_bytes`: a format byte, then postcard) and the chunks of
//! its dedup ring (`SessionState::load_ring_chunk`).
//!
//! Input: a record and ring chunks, each as a little-endian `u16` length and its bytes (the
//! seeds are real checkpoints of the lap-performance engine). Held: a damaged value is an error,
//! never a panic or an unbounded allocation; a state that loads writes a checkpoint that loads
//! again to the same bytes (what a restore reads is what the next checkpoint keeps).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitgun_engine::SessionState;

fn pieces(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((len, rest)) = data.split_first_chunk::<2>() {
        let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let pieces = pieces(data);
    let Some((record, chunks)) = pieces.split_first() else { return };
    let Ok(mut state) = SessionState::from_bytes(record) else { return };
    for chunk in chunks {
        let _ = state.load_ring_chunk(chunk);
    }
    let _ = (state.last_activity(), state.has_ended());
    let (bytes, ring) = state.checkpoint();
    let mut again = SessionState::from_bytes(&bytes).expect("a checkpoint this build wrote loads");
    for (_, chunk) in &ring.put {
        again.load_ring_chunk(chunk).expect("a ring chunk this build wrote loads");
    }
    let (bytes2, _) = again.checkpoint();
    assert_eq!(bytes, bytes2, "a restored state checkpoints to the same record");
});
