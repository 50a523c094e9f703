//! The engine's two ways into an Avro envelope must agree: the one-pass path a learned producer
//! takes (`Runner::feed_avro`) and the fallback that decodes the datum, then resolves it.

use std::path::Path;

use pitgun_codec::avro::{decode_avro_into, TextEncoder};
use pitgun_codec::dataset::for_each_record;
use pitgun_codec::{wire::Decoder, EnvelopeView, Record};
use pitgun_contracts::dictionary::Dictionary;
use pitgun_contracts::load::{load, Loaded};
use pitgun_contracts::manifest::PipelineManifest;
use pitgun_contracts::schema::ContractKind;
use pitgun_engine::runner::RecordError;
use pitgun_engine::{Output, Plan, Reason, Runner};

/// The engine decodes a learned producer's Avro envelopes in one pass (`Runner::feed_avro`)
/// and falls back to decoding, then resolving; every record, intact or damaged, must give
/// the same outputs, errors and counters either way.
#[test]
fn one_pass_and_two_pass_avro_paths_agree_on_every_record() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest: Loaded<PipelineManifest> = load(ContractKind::Pipeline, &root.join("manifests/pipelines/lap-performance.v1.yaml")).unwrap();
    let dictionary: Loaded<Dictionary> = load(ContractKind::Dictionary, &root.join("manifests/dictionary/racing.yaml")).unwrap();
    let compile = || Plan::compile(&manifest, &dictionary).unwrap();
    let mut encoder = TextEncoder::default();
    let mut records: Vec<Vec<u8>> = Vec::new();
    for_each_record(&root.join("samples/racing-small.ndjson.zst"), &|_| {}, |i, text| {
        let mut bytes = Vec::new();
        encoder.encode(text.expect("an NDJSON line"), &mut bytes)?;
        // One record in nine damaged at a position that moves through the record.
        if i % 9 == 4 {
            let at = 10 + (i as usize * 31) % (bytes.len() - 10);
            bytes[at] ^= 0x5a;
        }
        records.push(bytes);
        Ok::<_, Box<dyn std::error::Error>>(true)
    })
    .unwrap();
    let decoder = Decoder::default();
    let mut one = Runner::new(compile());
    let mut two = Runner::new(compile());
    let (mut out_one, mut out_two) = (Vec::new(), Vec::new());
    let mut refused = 0;
    for (i, bytes) in records.iter().enumerate() {
        let Ok(Record::Avro(datum)) = decoder.classify(bytes) else { continue };
        let a = one.feed_avro(datum, 0, &mut out_one);
        let mut view = EnvelopeView::empty();
        let b = match decode_avro_into(datum, &mut view) {
            Ok(()) => two.feed_view(&view, 0, &mut out_two),
            Err(e) => {
                two.engine_mut().count_rejected(Reason::InvalidEnvelope);
                Err(RecordError { reason: Reason::InvalidEnvelope, detail: e.to_string() })
            }
        };
        assert_eq!(a, b, "record {i}");
        assert_eq!(out_one, out_two, "outputs after record {i}");
        refused += usize::from(a.is_err());
    }
    one.finish(0, &mut out_one);
    two.finish(0, &mut out_two);
    assert_eq!(out_one, out_two);
    assert_eq!(one.engine().stats(), two.engine().stats());
    assert!(refused > 100, "the damage was refused ({refused} records)");
    assert!(out_one.iter().filter(|o| matches!(o, Output::Row(_))).count() > 10);
}

/// A producer whose layout is learned still has its envelopes held to the schema's limits on the
/// one-pass path: an id or a dimension value too long or empty was checked only on the two-pass
/// path, so a service producing Avro straight to Kafka put a 129-character session id into rows.
#[test]
fn the_one_pass_avro_path_holds_ids_and_dimensions_to_the_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest: Loaded<PipelineManifest> = load(ContractKind::Pipeline, &root.join("manifests/pipelines/lap-performance.v1.yaml")).unwrap();
    let dictionary: Loaded<Dictionary> = load(ContractKind::Dictionary, &root.join("manifests/dictionary/racing.yaml")).unwrap();
    let sample = r#"{"schema":"pitgun-envelope/v1","event_id":"e-1","source":{"kind":"game","id":"pitgun-web","version":"1.4.2"},"session_id":"s-1","seq":1,"time_us":1767225603677340,"kind":"sample","channels":{"brake":0.0,"lap":1.0,"lap_dist":0.0,"speed_kmh":0.1,"throttle":0.0},"dims":{"car":"lmp2","player":"dara","track":"monza"}}"#;
    let writer = pitgun_codec::avro::AvroWriter::new();
    let datum = |text: &str| {
        let mut bytes = Vec::new();
        writer.write(&pitgun_codec::json::decode(text).unwrap(), &[], &mut bytes);
        let Ok(Record::Avro(datum)) = Decoder::default().classify(&bytes) else { panic!("an Avro single object") };
        datum.to_vec()
    };
    let long = "x".repeat(129);
    let broken = [
        ("/session_id", sample.replace("\"s-1\"", &format!("\"{long}\""))),
        ("/event_id", sample.replace("\"e-1\"", &format!("\"{long}\""))),
        ("/dims/track", sample.replace("\"monza\"", "\"\"")),
        ("/dims/car", sample.replace("\"lmp2\"", &format!("\"{}\"", "y".repeat(257)))),
    ];
    let mut one = Runner::new(Plan::compile(&manifest, &dictionary).unwrap());
    let mut two = Runner::new(Plan::compile(&manifest, &dictionary).unwrap());
    let (mut out_one, mut out_two) = (Vec::new(), Vec::new());
    // The layout is learned from valid events, so the next take the one-pass path.
    for seq in 2..5 {
        let text = sample.replace("\"e-1\"", &format!("\"e-{seq}\"")).replace("\"seq\":1", &format!("\"seq\":{seq}"));
        one.feed_avro(&datum(&text), 0, &mut out_one).unwrap();
    }
    for (pointer, text) in &broken {
        let a = one.feed_avro(&datum(text), 0, &mut out_one);
        let b = two.feed_view(&pitgun_codec::json::decode(text).unwrap(), 0, &mut out_two);
        let err = a.as_ref().expect_err(pointer);
        assert_eq!(err.reason, Reason::InvalidEnvelope, "{pointer}");
        assert!(err.detail.contains(pointer), "{pointer}: {}", err.detail);
        assert_eq!(a, b, "{pointer}");
    }
}
