//! Envelopes for the gateway's tests, here (router tests) and in `cli/tests/gateway.rs` (the
//! binary against the real broker).

use serde_json::{json, Value};

/// A sample envelope of pitgun-web 1.4.2 (channels the dictionary knows for it).
pub fn envelope(session: &str, seq: u64) -> Value {
    json!({
        "schema": "pitgun-envelope/v1", "event_id": format!("{session}-{seq}"),
        "source": {"kind": "game", "id": "pitgun-web", "version": "1.4.2"},
        "session_id": session, "seq": seq, "time_us": 1_700_000_000_000_000i64 + seq as i64 * 16_667,
        "kind": "sample", "channels": {"speed_kmh": 100.0 + seq as f64, "throttle": 55, "in_pit": seq.is_multiple_of(2)},
        "dims": {"track": "monza", "player": "p1", "car": "c1"}
    })
}

/// Envelopes as one NDJSON body.
pub fn ndjson(items: &[Value]) -> String {
    items.iter().map(|v| format!("{v}\n")).collect()
}
