//! Channel policies, value checks and idle expiry, through the public engine API.

use std::path::Path;

use pitgun_contracts::dictionary::Dictionary;
use pitgun_contracts::load::{load, Loaded};
use pitgun_contracts::schema::ContractKind;
use pitgun_engine::row::final_output_rows as final_rows;
use pitgun_engine::{Output, Plan, Reason, Runner};
use serde_json::Value;

fn dictionary() -> Loaded<Dictionary> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/dictionary/racing.yaml");
    load(ContractKind::Dictionary, &path).unwrap()
}

fn plan(body: &str) -> Plan {
    let d = dictionary();
    let yaml = format!(
        "schema: pitgun-pipeline/v1\nname: t\nversion: 1\ndictionary: {{name: racing, version: 1.0.0, sha256: \"{}\"}}\n{body}\noutput: {{topic: pitgun.aggregates.t.v1}}\n",
        d.hash
    );
    Plan::compile_text(&yaml, &d).unwrap_or_else(|e| panic!("{e}"))
}

fn event(seq: u64, t_s: u64, channels: &str) -> String {
    format!(
        r#"{{"schema":"pitgun-envelope/v1","event_id":"e{seq}","source":{{"kind":"game","id":"pitgun-web","version":"1.4.2"}},"session_id":"s","seq":{seq},"time_us":{},"kind":"sample","channels":{{{channels}}},"dims":{{"player":"p"}}}}"#,
        t_s * 1_000_000
    )
}

const GLOBAL_SPEED: &str = "input: {topics: [x], unknown_channels: POLICY}\ninputs:\n  - {name: speed, metric: vehicle.speed}\nwindow: {kind: global}\naggregations:\n  - {name: n, fn: count}\n  - {name: top, fn: max, of: speed}";

#[test]
fn unknown_channels_drop_reject_keep() {
    let mut out = Vec::new();
    let mut drop = Runner::new(plan(&GLOBAL_SPEED.replace("POLICY", "drop")));
    drop.feed_json(&event(1, 1, r#""speed_kmh": 36, "debug_x": 1"#), 0, &mut out).unwrap();
    assert_eq!(drop.engine().stats().unknown_channels, 1);

    let mut reject = Runner::new(plan(&GLOBAL_SPEED.replace("POLICY", "reject")));
    let err = reject.feed_json(&event(1, 1, r#""speed_kmh": 36, "debug_x": 1"#), 0, &mut out).unwrap_err();
    assert_eq!(err.reason, Reason::UnknownChannel);
    assert!(err.detail.contains("debug_x"), "{}", err.detail);

    let keep = "input: {topics: [x], unknown_channels: keep}\ninputs:\n  - {name: x, channel: debug_x}\nwindow: {kind: global}\naggregations:\n  - {name: total, fn: sum, of: x}";
    let mut keep = Runner::new(plan(keep));
    let mut out = Vec::new();
    keep.feed_json(&event(1, 1, r#""debug_x": 2.5"#), 0, &mut out).unwrap();
    keep.feed_json(&event(2, 2, r#""debug_x": 4"#), 0, &mut out).unwrap();
    keep.finish(0, &mut out);
    let row: Value = serde_json::from_str(&final_rows(&out)[0].json).unwrap();
    assert_eq!(row["total"], 6.5);
}

#[test]
fn converted_values_are_range_and_type_checked() {
    let mut out = Vec::new();
    let mut r = Runner::new(plan(&GLOBAL_SPEED.replace("POLICY", "drop")));
    // 36 km/h is 10 m/s; 9999 km/h is far beyond vehicle.speed's 120 m/s.
    r.feed_json(&event(1, 1, r#""speed_kmh": 36"#), 0, &mut out).unwrap();
    let err = r.feed_json(&event(2, 2, r#""speed_kmh": 9999"#), 0, &mut out).unwrap_err();
    assert_eq!(err.reason, Reason::OutOfRange);
    assert!(err.detail.contains("vehicle.speed") && err.detail.contains("120"), "{}", err.detail);
    // gear is an int metric: 2.5 is a type error, even though the manifest does not read it.
    let err = r.feed_json(&event(3, 3, r#""gear": 2.5"#), 0, &mut out).unwrap_err();
    assert_eq!(err.reason, Reason::TypeMismatch);
    r.finish(0, &mut out);
    let row: Value = serde_json::from_str(&final_rows(&out)[0].json).unwrap();
    assert_eq!(row["top"], 10.0);
    assert_eq!(row["n"], 1);
    assert_eq!(r.engine().stats().rejected_by_reason(), vec![("out_of_range", 1), ("type_mismatch", 1)]);
}

/// One answer with the gateway (`codec::rules::unique_channels`): a channel named twice is
/// refused, whichever occurrence is valid, on the JSON path and the Avro one, before and after
/// the resolver has learned the producer's channel layout.
#[test]
fn a_channel_named_twice_is_refused_on_every_path() {
    let mut r = Runner::new(plan(&GLOBAL_SPEED.replace("POLICY", "drop")));
    let mut out = Vec::new();
    let writer = pitgun_codec::avro::AvroWriter::new();
    let mut seq = 0;
    for channels in [
        r#""speed_kmh": 36, "gear": 3"#,
        r#""speed_kmh": 36, "speed_kmh": 9999"#,
        r#""speed_kmh": 9999, "speed_kmh": 36"#,
        r#""speed_kmh": 36, "speed_kmh": 36"#,
    ] {
        for avro in [false, true] {
            seq += 1;
            let text = event(seq, seq, channels);
            let result = if avro {
                let mut datum = Vec::new();
                writer.write(&pitgun_codec::json::decode(&text).unwrap(), &[], &mut datum);
                let record = pitgun_codec::wire::Decoder::default().classify(&datum).unwrap();
                r.feed(record, pitgun_engine::Origin::UNKNOWN, 0, &mut out)
            } else {
                r.feed_json(&text, 0, &mut out)
            };
            if channels.contains("gear") {
                result.unwrap();
                continue;
            }
            let err = result.expect_err(channels);
            assert_eq!(err.reason, Reason::InvalidEnvelope, "{channels} (avro: {avro}): {}", err.detail);
            assert!(err.detail.contains("/channels/speed_kmh") && err.detail.contains("more than once"), "{}", err.detail);
        }
    }
    r.finish(0, &mut out);
    let row: Value = serde_json::from_str(&final_rows(&out)[0].json).unwrap();
    assert_eq!(row["n"], 2, "only the two envelopes without a repeat count");
}

#[test]
fn a_missing_key_dimension_is_refused_with_its_name() {
    let p = plan("input: {topics: [x]}\nkey: [car]\ninputs:\n  - {name: speed, metric: vehicle.speed}\nwindow: {kind: global}\naggregations:\n  - {name: n, fn: count}");
    let mut r = Runner::new(p);
    let err = r.feed_json(&event(1, 1, r#""speed_kmh": 36"#), 0, &mut Vec::new()).unwrap_err();
    assert_eq!(err.reason, Reason::MissingKey);
    assert!(err.detail.contains("car"));
}

/// A kind the manifest does not take reaches no window, so what only a window reads — its key
/// and its channels' metrics — is neither bound nor checked, on the JSON path and the Avro one;
/// it must still be a valid envelope, and it still moves its session's clock (here it releases
/// the window before it; a `session_end` without the key closes the session).
#[test]
fn a_kind_the_manifest_does_not_take_is_counted_whatever_its_key_and_metrics() {
    let p = plan("input: {topics: [x], kinds: [health], unknown_channels: reject}\nkey: [car]\ninputs:\n  - {name: fps, metric: client.fps}\nwindow: {kind: tumbling, size: 10s}\naggregations:\n  - {name: n, fn: count}");
    let mut r = Runner::new(p);
    let mut out = Vec::new();
    let health =
        |seq, t| event(seq, t, r#""fps": 60"#).replace(r#""kind":"sample""#, r#""kind":"health""#).replace(r#""player":"p""#, r#""car":"c""#);
    let avro = |text: &str| {
        let mut datum = Vec::new();
        pitgun_codec::avro::AvroWriter::new().write(&pitgun_codec::json::decode(text).unwrap(), &[], &mut datum);
        datum
    };
    r.feed_json(&health(1, 1), 0, &mut out).unwrap();
    // No `car`, an unknown channel, a value far out of range: each would refuse a health event.
    let sample = event(2, 30, r#""debug_x": 1, "speed_kmh": 9999"#);
    r.feed_json(&sample, 0, &mut out).unwrap();
    let datum = avro(&event(3, 31, r#""debug_x": 1, "speed_kmh": 9999"#));
    r.feed(pitgun_codec::wire::Decoder::default().classify(&datum).unwrap(), pitgun_engine::Origin::UNKNOWN, 0, &mut out).unwrap();
    // Still an envelope's rules: a channel named twice, a version that is not semantic.
    let twice = event(4, 32, r#""speed_kmh": 1, "speed_kmh": 2"#);
    assert_eq!(r.feed_json(&twice, 0, &mut out).unwrap_err().reason, Reason::InvalidEnvelope);
    let datum = avro(&event(5, 33, r#""speed_kmh": 1"#).replace("1.4.2", "1.4"));
    let err = r.feed(pitgun_codec::wire::Decoder::default().classify(&datum).unwrap(), pitgun_engine::Origin::UNKNOWN, 0, &mut out).unwrap_err();
    assert!(err.detail.contains("not a semantic version"), "{}", err.detail);
    let stats = r.engine().stats();
    assert_eq!((stats.filtered, stats.unknown_channels), (2, 0));
    assert_eq!(stats.rejected_by_reason(), vec![("invalid_envelope", 2)]);
    let rows = final_rows(&out);
    assert_eq!(rows.len(), 1, "the samples' time released the health event's window before the end");
    assert_eq!(serde_json::from_str::<Value>(&rows[0].json).unwrap()["n"], 1);
    let end = event(6, 40, "").replace(r#""kind":"sample""#, r#""kind":"session_end""#);
    r.feed_json(&end, 0, &mut out).unwrap();
    r.feed_json(&health(7, 45), 0, &mut out).unwrap();
    assert!(out.iter().any(|o| matches!(o, Output::Late(n) if n.reason == "session_closed")), "the end, without a key, ended the session");
}

/// A kind the manifest does not take is only counted, also when its session is closed: by its
/// end and the driver's clock, or by a silence in its own event time (which it still ends). It
/// never reaches the late output, where it would count as data lost.
#[test]
fn a_kind_not_taken_never_reaches_the_late_output() {
    let body = "input: {topics: [x], kinds: [health]}\ninputs:\n  - {name: fps, metric: client.fps}\nwindow: {kind: global}\n\
                time: {out_of_orderness: 2s, allowed_lateness: 30s, max_clock_jump: 1h, idle_timeout: 1m}\naggregations:\n  - {name: n, fn: count}";
    let minute = 60_000_000;
    let late = |out: &[Output]| out.iter().filter(|o| matches!(o, Output::Late(_))).count();

    let mut r = Runner::new(plan(body));
    let mut out = Vec::new();
    let end = event(1, 1, "").replace(r#""kind":"sample""#, r#""kind":"session_end""#);
    r.feed_json(&end, 0, &mut out).unwrap();
    r.engine_mut().close_ended(2 * minute, &mut out);
    assert_eq!(r.engine().stats().closed_by, [1, 0, 0, 0], "closed by its end");
    r.feed_json(&event(2, 1, r#""speed_kmh": 36"#), 2 * minute, &mut out).unwrap();
    assert_eq!((late(&out), r.engine().stats().late, r.engine().stats().filtered), (0, 0, 2), "the end and a sample after the close");

    let mut r = Runner::new(plan(body));
    let mut out = Vec::new();
    r.feed_json(&event(1, 1, r#""speed_kmh": 36"#), 0, &mut out).unwrap();
    r.feed_json(&event(2, 200, r#""speed_kmh": 36"#), 0, &mut out).unwrap();
    assert_eq!(r.engine().stats().closed_by, [0, 0, 1, 0], "the silence still ends the session");
    assert_eq!((late(&out), r.engine().stats().late, r.engine().stats().filtered), (0, 0, 2), "both samples only counted");
}

/// A kind the manifest does not take is held to the repeated-channel rule by the layouts its
/// producer's lists teach the resolver: a list that repeats a name never passes for one learned.
#[test]
fn a_kind_not_taken_repeating_a_channel_is_refused_after_its_layout_is_learned() {
    let p = plan("input: {topics: [x], kinds: [health]}\ninputs:\n  - {name: fps, metric: client.fps}\nwindow: {kind: global}\naggregations:\n  - {name: n, fn: count}");
    let mut r = Runner::new(p);
    let mut out = Vec::new();
    let lists = [
        (r#""speed_kmh": 1, "gear": 2"#, true),
        (r#""speed_kmh": 1, "speed_kmh": 2"#, false),
        (r#""gear": 2, "gear": 2"#, false),
        (r#""gear": 2, "speed_kmh": 1"#, true),
        (r#""gear": 2, "speed_kmh": 1"#, true),
        (r#""gear": 2, "gear": 3"#, false),
        (r#""speed_kmh": 1, "gear": 2"#, true),
    ];
    for (seq, (channels, valid)) in (1..).zip(lists) {
        let result = r.feed_json(&event(seq, seq, channels), 0, &mut out);
        assert_eq!(result.is_ok(), valid, "{channels}: {result:?}");
    }
    let stats = r.engine().stats();
    assert_eq!(stats.filtered, 4);
    assert_eq!(stats.rejected_by_reason(), vec![("invalid_envelope", 3)]);
}

/// An event of session `sid`.
fn event_of(sid: &str, seq: u64, t_s: u64) -> String {
    event(seq, t_s, r#""speed_kmh": 36"#).replace(r#""session_id":"s""#, &format!(r#""session_id":"{sid}""#))
}

#[test]
fn past_its_open_session_bound_an_engine_refuses_new_sessions_and_keeps_serving_open_ones() {
    let p = plan(
        "input: {topics: [x]}\ninputs:\n  - {name: speed, metric: vehicle.speed}\nwindow: {kind: global}\naggregations:\n  - {name: n, fn: count}",
    );
    let mut r = Runner::new(p);
    r.engine_mut().limit_open_sessions(3);
    let mut out = Vec::new();
    for i in 0..5 {
        r.feed_json(&event_of(&format!("s{i}"), 1, 1), 0, &mut out).unwrap();
    }
    assert_eq!(r.engine().open_sessions(), 3, "the bound holds");
    let refused: Vec<_> = out.iter().filter_map(|o| if let Output::Rejected(n) = o { Some(n) } else { None }).collect();
    assert_eq!(refused.len(), 2, "{out:?}");
    assert_eq!((refused[0].reason, refused[0].session_id.as_str()), ("too_many_sessions", "s3"));
    assert!(refused[0].detail.contains("3 open sessions"), "{}", refused[0].detail);
    assert_eq!(r.engine().stats().rejected[Reason::TooManySessions as usize], 2);
    out.clear();
    r.feed_json(&event_of("s0", 2, 2), 0, &mut out).unwrap();
    assert!(out.iter().all(|o| !matches!(o, Output::Rejected(_))), "an open session still takes events: {out:?}");
    // A session closed frees its place.
    r.feed_json(&event_of("s1", 3, 3).replace(r#""kind":"sample""#, r#""kind":"session_end""#), 0, &mut out).unwrap();
    r.engine_mut().expire_idle(i64::MAX / 2, &mut out);
    out.clear();
    r.feed_json(&event_of("s4", 1, 1), 0, &mut out).unwrap();
    assert!(out.iter().all(|o| !matches!(o, Output::Rejected(_))), "room again: {out:?}");
}

#[test]
fn a_session_holds_a_bounded_number_of_keys_and_refuses_events_of_one_more() {
    use pitgun_engine::MAX_KEYS_PER_SESSION;
    let p = plan("input: {topics: [x]}\nkey: [player]\ninputs:\n  - {name: speed, metric: vehicle.speed}\nwindow: {kind: global}\naggregations:\n  - {name: n, fn: count}");
    let mut r = Runner::new(p);
    let mut out = Vec::new();
    let n = MAX_KEYS_PER_SESSION as u64;
    // A producer that names a new player in every event of one session.
    for seq in 1..=n + 3 {
        r.feed_json(&event(seq, 1, r#""speed_kmh": 36"#).replace(r#""player":"p""#, &format!(r#""player":"p{seq}""#)), 0, &mut out).unwrap();
    }
    let refused: Vec<_> = out.iter().filter_map(|o| if let Output::Rejected(n) = o { Some(n) } else { None }).collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert_eq!(refused[0].reason, "too_many_keys");
    assert!(refused[0].detail.contains(&format!("{n} keys")), "{}", refused[0].detail);
    assert_eq!(r.engine().stats().rejected[Reason::TooManyKeys as usize], 3);
    // A known key still takes events, and a refused event holds no dedup memory: its copy
    // with a known key is no duplicate.
    out.clear();
    r.feed_json(&event(n + 1, 2, r#""speed_kmh": 36"#).replace(r#""player":"p""#, r#""player":"p1""#), 0, &mut out).unwrap();
    assert!(out.iter().all(|o| !matches!(o, Output::Rejected(_))), "{out:?}");
    assert_eq!(r.engine().stats().duplicates, 0);
    r.finish(0, &mut out);
    assert_eq!(final_rows(&out).len(), MAX_KEYS_PER_SESSION, "one row per key kept");
}

#[test]
fn silent_sessions_expire_after_the_idle_timeout_and_free_their_state() {
    let p = plan("input: {topics: [x]}\ninputs:\n  - {name: speed, metric: vehicle.speed}\ntime: {idle_timeout: 5m}\nwindow: {kind: global}\naggregations:\n  - {name: n, fn: count}");
    let mut r = Runner::new(p);
    let mut out = Vec::new();
    let minute = 60_000_000;
    r.feed_json(&event(1, 1, r#""speed_kmh": 36"#), 0, &mut out).unwrap();
    r.engine_mut().expire_idle(4 * minute, &mut out);
    assert_eq!(r.engine().open_sessions(), 1, "not idle long enough");
    r.engine_mut().expire_idle(5 * minute, &mut out);
    assert_eq!(r.engine().open_sessions(), 0);
    assert_eq!(r.engine().stats().sessions_expired, 1);
    assert_eq!(final_rows(&out).len(), 1, "the expired session's window was emitted");
    // A late event of the expired session goes to the late output, not into a new session.
    r.feed_json(&event(2, 2, r#""speed_kmh": 36"#), 6 * minute, &mut out).unwrap();
    assert!(out.iter().any(|o| matches!(o, Output::Late(n) if n.reason == "session_closed")));
}

#[test]
fn manifest_semantic_errors_point_at_the_problem() {
    let d = dictionary();
    let bad = format!(
        "schema: pitgun-pipeline/v1\nname: t\nversion: 1\ndictionary: {{name: racing, version: 1.0.0, sha256: \"sha256:{}\"}}\ninput: {{topics: [x]}}\ninputs:\n  - {{name: speed, metric: vehicle.speed}}\n  - {{name: temp, metric: tyre.surface_temperature}}\nderived:\n  - {{name: d, formula: \"sped * 2.0\"}}\nwindow: {{kind: hopping, size: 10s, hop: 3s}}\ntime: {{out_of_orderness: 2s, allowed_lateness: 30s, max_clock_jump: 10m, idle_timeout: 0s}}\naggregations:\n  - {{name: top, fn: max, of: speed, unit: Cel}}\noutput: {{topic: pitgun.aggregates.t.v1}}\n",
        "0".repeat(64)
    );
    let err = Plan::compile_text(&bad, &d).err().expect("invalid manifest").to_string();
    for needle in [
        "at /dictionary/sha256: dictionary content hash is",
        "at /inputs/1/dimensions: metric tyre.surface_temperature has dimension \"wheel\"",
        "at /derived/0/formula: formula does not compile",
        "at /window/hop: hop 3s must divide size 10s",
        "at /aggregations/0/unit: incompatible unit",
        // Every event would end its session: a run wrote no rows and said nothing.
        "at /time/idle_timeout: idle_timeout must be longer than 0",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

/// A key dimension is a column of every row: an aggregation, the segment field or a column the
/// row itself uses under its name would be written over it (rows of two cars told apart by a
/// count), so each is refused where it is named.
#[test]
fn a_key_dimension_sharing_a_column_name_is_refused() {
    let d = dictionary();
    let manifest = |key: &str, window: &str, aggregation: &str| {
        format!(
            "schema: pitgun-pipeline/v1\nname: t\nversion: 1\ndictionary: {{name: racing, version: 1.0.0, sha256: \"{}\"}}\ninput: {{topics: [x]}}\ninputs:\n  - {{name: speed, metric: vehicle.speed}}\nkey: [{key}]\nwindow: {window}\naggregations:\n  - {{name: {aggregation}, fn: count}}\noutput: {{topic: pitgun.aggregates.t.v1}}\n",
            d.hash
        )
    };
    for (key, window, aggregation, says) in [
        ("player, car", "{kind: global}", "car", "at /aggregations/0/name: column name \"car\" is already used or reserved"),
        ("player, row_id", "{kind: global}", "n", "at /key/1: key dimension \"row_id\" is a column the row itself uses"),
        ("complete", "{kind: global}", "n", "at /key/0: key dimension \"complete\" is a column the row itself uses"),
        ("player, lap_number", "{kind: segment, field: lap_number}", "n", "at /key/1: key dimension \"lap_number\" is the segment field"),
        ("pitgun_row_version", "{kind: global}", "n", "at /key/0: key dimension \"pitgun_row_version\" is a column the row itself uses"),
        ("player", "{kind: global}", "pitgun_row_version", "at /aggregations/0/name: column name \"pitgun_row_version\" is already used"),
    ] {
        let err = Plan::compile_text(&manifest(key, window, aggregation), &d).err().expect("refused").to_string();
        assert!(err.contains(says), "key [{key}], {window}, {aggregation}: missing {says:?} in:\n{err}");
    }
    // Names only formulas reserve are free for a key dimension.
    assert!(Plan::compile_text(&manifest("prev_team", "{kind: global}", "n"), &d).is_ok());
}

/// Rows never depend on the machine's speed: the engine reads no clock (a formula is stopped by
/// its operation count alone; the driver passes its clock in, for idle expiry only).
#[test]
fn the_engine_reads_no_clock() {
    let mut folders = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    let mut files = Vec::new();
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("engine/src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path)
            } else {
                files.push(path)
            }
        }
    }
    assert!(files.iter().any(|f| f.ends_with("session_engine/windows.rs")), "sub-folders are read too");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("source");
        for needle in ["Instant", "SystemTime", "std::time::"] {
            assert!(!text.contains(needle), "{} uses {needle}", path.display());
        }
    }
}

/// A note names the record its event was read from, kept with the event while it waits in the
/// reorder buffer: here a lap number going back, refused only as it leaves the buffer. A resent
/// copy with a lower sequence number renumbers the waiting event, and the note then names that
/// copy, whose number it gives.
#[test]
fn a_note_names_the_record_its_event_was_read_from() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/pipelines/lap-performance.v1.yaml");
    let manifest = load(ContractKind::Pipeline, &path).unwrap();
    let mut r = Runner::new(Plan::compile(&manifest, &dictionary()).unwrap());
    let line = |id: &str, seq: u64, t_ms: i64, kind: &str, lap: u32| {
        format!(
            r#"{{"schema":"pitgun-envelope/v1","event_id":"{id}","source":{{"kind":"simulator","id":"pitgun-sim","version":"2.1.0"}},"session_id":"s","seq":{seq},"time_us":{},"kind":"{kind}","channels":{{"lap_number":{lap}}},"dims":{{"player":"p","track":"t","car":"c"}}}}"#,
            t_ms * 1000
        )
    };
    // (record, origin): the regressed lap arrives at origin 13 as seq 40, its copy at origin 14
    // as seq 4; an event 2 s later (out_of_orderness) releases it.
    let records = [
        (line("a", 1, 1000, "session_start", 1), 10),
        (line("b", 2, 2000, "lap", 2), 11),
        (line("c", 3, 3000, "sample", 2), 12),
        (line("d", 40, 3500, "sample", 1), 13),
        (line("d", 4, 3500, "sample", 1), 14),
        (line("e", 5, 6000, "sample", 2), 15),
    ];
    let mut out = Vec::new();
    for (text, origin) in &records {
        r.feed(pitgun_codec::Record::Json(text.as_bytes()), pitgun_engine::Origin(*origin), 0, &mut out).unwrap();
    }
    let notes: Vec<_> = out.iter().filter_map(|o| if let Output::Rejected(n) = o { Some(n) } else { None }).collect();
    assert_eq!(notes.len(), 1, "{out:?}");
    assert_eq!((notes[0].reason, notes[0].event_id.as_str(), notes[0].seq), ("segment_regressed", "d", 4));
    assert_eq!(notes[0].origin, pitgun_engine::Origin(14), "the copy numbered 4 was read at 14");
}

/// A device whose clock stands still sends every event at one time: the watermark never passes
/// them, so they waited in the reorder buffer without end, and the session's state (one RocksDB
/// value, one changelog record of at most 1 MB) grew with every event until the processor could
/// not checkpoint. Past the bound the oldest events are released, and all of them are counted.
#[test]
fn a_session_whose_clock_stands_still_holds_a_bounded_reorder_buffer() {
    use pitgun_engine::{MemoryStore, SessionStore, MAX_BUFFERED_EVENTS};
    let mut r = Runner::new(plan(&GLOBAL_SPEED.replace("POLICY", "drop")));
    let mut out = Vec::new();
    let cap = MAX_BUFFERED_EVENTS as u64;
    let state_bytes = |r: &mut Runner<MemoryStore>| r.engine_mut().store_mut().get_mut("s").expect("open").checkpoint().0.len();
    let mut sizes = Vec::new();
    // Measured where every buffered event's id and sequence number are as long as the others'.
    for seq in 1..=6 * cap {
        r.feed_json(&event(seq, 1, r#""speed_kmh": 36"#), 0, &mut out).unwrap();
        if seq == 5 * cap || seq == 6 * cap {
            sizes.push(state_bytes(&mut r));
        }
    }
    // Past the bound an event adds nothing to the session's record: its id goes to the dedup
    // ring, stored in chunks of their own. Buffered, it added its values (22.8 bytes here).
    let per_event = (sizes[1] - sizes[0]) as f64 / cap as f64;
    assert!(per_event < 0.01, "{per_event:.3} bytes of the session's record per event past the bound ({sizes:?})");
    assert!(out.is_empty(), "nothing closes or is refused: {out:?}");
    assert_eq!(r.engine().stats().released_early, 5 * cap, "every event past the bound counted as released early");
    // The end at the same time: the driver's clock closes the session (the watermark cannot),
    // with every event counted once, those released early and those still buffered.
    r.feed_json(&event(6 * cap + 1, 1, "").replace(r#""kind":"sample""#, r#""kind":"session_end""#), 0, &mut out).unwrap();
    r.engine_mut().expire_idle(60_000_000, &mut out);
    assert_eq!(r.engine().open_sessions(), 0, "the ended session closed by the driver's clock");
    let rows = final_rows(&out);
    assert_eq!(rows.len(), 1);
    let row: Value = serde_json::from_str(&rows[0].json).unwrap();
    assert_eq!(row["n"], 6 * cap + 1, "every event counted once, the end too: {row}");
}

/// Events released past the bound have reached windows by the session's clock, so that clock is
/// settled: a later event far from it is refused as `clock_jump`. Starting the session again on
/// the other clock would refuse, as `clock_jump`, buffered events beside released ones already
/// counted.
#[test]
fn a_session_that_released_events_past_the_bound_keeps_its_clock() {
    use pitgun_engine::MAX_BUFFERED_EVENTS;
    let p = plan("input: {topics: [x]}\ninputs:\n  - {name: speed, metric: vehicle.speed}\ntime: {out_of_orderness: 2s, allowed_lateness: 30s, max_clock_jump: 10m, idle_timeout: 2h}\nwindow: {kind: global}\naggregations:\n  - {name: n, fn: count}");
    let mut r = Runner::new(p);
    let mut out = Vec::new();
    let cap = MAX_BUFFERED_EVENTS as u64;
    let mut errors = Vec::new();
    for seq in 1..=cap + 10 {
        r.feed_json(&event(seq, 1, r#""speed_kmh": 36"#), 0, &mut out).unwrap();
    }
    // The clock is set: two events an hour on, agreeing with each other.
    for seq in cap + 11..=cap + 12 {
        if let Err(e) = r.feed_json(&event(seq, 3601, r#""speed_kmh": 36"#), 0, &mut out) {
            errors.push(e.reason);
        }
    }
    let refused: Vec<&str> = out.iter().filter_map(|o| if let Output::Rejected(n) = o { Some(n.reason) } else { None }).collect();
    assert_eq!(
        refused.len() + errors.len(),
        2,
        "only the two events far from the settled clock are refused: {:?} {errors:?}",
        &refused[..refused.len().min(4)]
    );
    assert!(refused.iter().all(|r| *r == "clock_jump") && errors.iter().all(|e| *e == Reason::ClockJump), "{refused:?} {errors:?}");
    r.finish(0, &mut out);
    let row: Value = serde_json::from_str(&final_rows(&out)[0].json).unwrap();
    assert_eq!(row["n"], cap + 10, "every event on the settled clock counted: {row}");
}

/// The one final row of a global-window manifest `body` over `events` (seq, seconds, channels).
fn only_row(body: &str, events: &[(u64, u64, String)]) -> Value {
    let mut r = Runner::new(plan(body));
    let mut out = Vec::new();
    for (seq, t, channels) in events {
        r.feed_json(&event(*seq, *t, channels), 0, &mut out).unwrap();
    }
    r.finish(0, &mut out);
    serde_json::from_str(&final_rows(&out)[0].json).unwrap()
}

/// A derived value over previous values (`prev_<input>`, `dt`) is computed from a key's second
/// event on: the first has no previous value, and that was taken as a formula never evaluated,
/// so every later event had none either and the value was always null. An event without the
/// formula's own inputs is no step of it: `dt` spans from the last event that had them.
#[test]
fn derived_values_over_previous_values_are_computed_from_the_second_event() {
    let body = "input: {topics: [x]}\ninputs:\n  - {name: speed, metric: vehicle.speed}\n  - {name: gear, metric: driver.gear}\nderived:\n  - {name: delta, formula: \"speed - prev_speed\"}\n  - {name: rate, formula: \"(speed - prev_speed) / dt\"}\nwindow: {kind: global}\naggregations:\n  - {name: gained, fn: sum, of: delta}\n  - {name: steps, fn: count, of: delta}\n  - {name: fastest, fn: max, of: rate}";
    // 10, 20 then 40 m/s at 1, 2 and 4 s; at 3 s only the gear.
    let events = [(1, 1, r#""speed_kmh": 36"#), (2, 2, r#""speed_kmh": 72"#), (3, 3, r#""gear": 3"#), (4, 4, r#""speed_kmh": 144"#)];
    let row = only_row(body, &events.map(|(seq, t, c)| (seq, t, c.to_string())));
    assert_eq!((&row["gained"], &row["steps"], &row["fastest"]), (&Value::from(30.0), &Value::from(2), &Value::from(10.0)), "{row}");
}

/// An aggregate shown in a unit with an offset (°F from the canonical °C): a standard deviation is
/// a spread and takes the factor alone, a sum of n values takes the offset n times; both took it
/// once, as a single value does (10 °C of spread showed as 50 °F instead of 18 °F).
#[test]
fn spreads_and_sums_convert_to_a_unit_with_an_offset_as_such() {
    let body = "input: {topics: [x]}\ninputs:\n  - {name: water, metric: engine.water_temperature}\nwindow: {kind: global}\naggregations:\n  - {name: spread, fn: stddev, of: water, unit: \"[degF]\"}\n  - {name: total, fn: sum, of: water, unit: \"[degF]\"}\n  - {name: middle, fn: mean, of: water, unit: \"[degF]\"}";
    // The game sends °F.
    let water = |fahrenheit: [u32; 2]| only_row(body, &[1, 2].map(|seq| (seq, seq, format!(r#""water_temp": {}"#, fahrenheit[seq as usize - 1]))));
    // 80 and 100 °C.
    let row = water([176, 212]);
    assert_eq!((&row["spread"], &row["total"], &row["middle"]), (&Value::from(18.0), &Value::from(388.0), &Value::from(194.0)), "{row}");
    // −10 and 10 °C: a mean and a sum of exactly 0 °C are 32 and 64 °F, not 0.
    let row = water([14, 50]);
    assert_eq!((&row["total"], &row["middle"]), (&Value::from(64.0), &Value::from(32.0)), "{row}");
}
