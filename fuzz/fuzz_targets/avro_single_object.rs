//! The Avro single-object reader: `wire::Decoder` on the whole record (header and fingerprint),
//! then the datum through every reader the runtime has — `decode_avro_into`, `read_envelope`,
//! `datum_len`, `session_id_of` and the engine's fused decode-and-resolve path
//! (`Runner::feed_avro`). The input is the datum; the target puts the envelope schema's header in
//! front of it itself, so the fuzzer need not find the 8-byte fingerprint.
//!
//! Held: no panic; the readers agree on accept/reject; the engine's result and outputs for a datum
//! are the same through its fused path (`feed_avro`, the layout learned from a warm-up sample)
//! and its two-pass path (`decode_avro_into`, then `feed_view`), as `engine/tests/avro_paths.rs`
//! holds for the sample dataset.
#![no_main]

use std::cell::RefCell;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pitgun_codec::avro::{datum_len, decode_avro_into, read_envelope, session_id_of, single_object_header, TextEncoder};
use pitgun_codec::json::EnvelopeView;
use pitgun_codec::wire::Decoder;
use pitgun_codec::Record;
use pitgun_contracts::dictionary::Dictionary;
use pitgun_contracts::load::{load_text, Loaded, SourceText};
use pitgun_contracts::schema::ContractKind;
use pitgun_engine::{Plan, Reason, Runner};

/// The lap-performance plan (compiled per runner: a plan's formulas memoise, so it is not shared).
fn plan() -> Plan {
    static DICT: OnceLock<Loaded<Dictionary>> = OnceLock::new();
    let dict = DICT.get_or_init(|| {
        let text = include_str!("../../manifests/dictionary/racing.yaml");
        load_text(ContractKind::Dictionary, SourceText { file: "racing.yaml".into(), text: text.into() }).unwrap()
    });
    Plan::compile_text(include_str!("../../manifests/pipelines/lap-performance.v1.yaml"), dict).unwrap()
}

/// A sample of the seeds' producer layout (pitgun-web 1.4.2, from `samples/racing-small`), fed
/// first so one runner learns the layout.
const WARM: &str = r#"{"schema":"pitgun-envelope/v1","event_id":"warm","source":{"kind":"game","id":"pitgun-web","version":"1.4.2"},"session_id":"warm-up","seq":2,"time_us":1767225603677340,"kind":"sample","channels":{"brake":0.0,"cur_lap_ms":0.0,"g_lat":0.0,"g_long":0.01,"gear":1.0,"lap":1.0,"lap_dist":0.0,"rpm":1500.0,"speed_kmh":0.1,"steer":0.0,"throttle":0.0,"yaw_rate":0.0},"dims":{"car":"lmp2","player":"dara","track":"monza"}}"#;

/// The two runners: `fused` takes `Runner::feed_avro` (one pass for a learned layout), `two_pass`
/// decodes then resolves. Compiling a plan costs more than a hundred inputs, so the pair is kept
/// for 256 inputs, then compiled anew (memory stays bounded; a crash reproduces from a fresh pair).
struct Pair {
    fused: Runner,
    two_pass: Runner,
    inputs: u32,
}

impl Pair {
    fn new() -> Pair {
        let mut warm = Vec::new();
        TextEncoder::default().encode(WARM, &mut warm).unwrap();
        let mut pair = Pair { fused: Runner::new(plan()), two_pass: Runner::new(plan()), inputs: 0 };
        pair.feed(&warm[10..]).unwrap();
        pair
    }

    /// Feeds both; they must decide alike and emit the same outputs.
    fn feed(&mut self, datum: &[u8]) -> Result<(), Reason> {
        let (mut a_out, mut b_out) = (Vec::new(), Vec::new());
        let a = self.fused.feed_avro(datum, 0, &mut a_out).map_err(|e| e.reason);
        let mut view = EnvelopeView::empty();
        let b = match decode_avro_into(datum, &mut view) {
            Ok(()) => self.two_pass.feed_view(&view, 0, &mut b_out).map_err(|e| e.reason),
            Err(_) => {
                self.two_pass.engine_mut().count_rejected(Reason::InvalidEnvelope);
                Err(Reason::InvalidEnvelope)
            }
        };
        assert_eq!(a, b, "the fused and two-pass paths decide alike");
        assert_eq!(a_out, b_out, "and emit the same outputs");
        a
    }
}

thread_local! {
    static PAIR: RefCell<Option<Pair>> = const { RefCell::new(None) };
}

fuzz_target!(|datum: &[u8]| {
    let mut record = single_object_header().to_vec();
    record.extend_from_slice(datum);
    let wire = Decoder::default();
    let _ = wire.classify(datum);
    assert!(matches!(wire.classify(&record), Ok(Record::Avro(d)) if d == datum));
    let owned = wire.to_envelope(&record);
    let mut view = EnvelopeView::empty();
    // The owned reader refuses a channel named twice itself; the engine, reading the borrowed
    // view, refuses it as it binds the channels.
    let borrowed = decode_avro_into(datum, &mut view).and_then(|()| Ok(pitgun_codec::rules::unique_channels(&view)?));
    assert_eq!(owned.is_ok(), borrowed.is_ok(), "{owned:?} {borrowed:?}");
    assert_eq!(read_envelope(datum).is_ok(), borrowed.is_ok());
    if borrowed.is_ok() {
        assert_eq!(datum_len(datum).ok(), Some(datum.len()), "a valid datum is exactly as long as datum_len says");
        assert_eq!(session_id_of(datum), Some(view.session_id.as_bytes()));
    }
    let _ = datum_len(datum);
    let _ = session_id_of(datum);

    PAIR.with_borrow_mut(|pair| {
        if pair.as_ref().is_none_or(|p| p.inputs >= 256) {
            *pair = Some(Pair::new());
        }
        let pair = pair.as_mut().expect("made above");
        pair.inputs += 1;
        let result = pair.feed(datum);
        if borrowed.is_err() {
            assert!(result.is_err(), "the engine refuses what the codec refuses");
        }
    });
});
