//! The engine refuses exactly what the envelope schema's rules refuse (`pitgun_codec::rules::check`,
//! which the gateway, `publish` and `export` apply whole), on both of its ways into an event: the
//! resolver checks in parts, so that what repeats from event to event is checked once, and a
//! rule left out of one of those parts reached the gateway but not the stream.

use std::path::Path;

use pitgun_codec::avro::AvroWriter;
use pitgun_codec::json::decode;
use pitgun_codec::rules::check;
use pitgun_codec::{wire::Decoder, Record};
use pitgun_contracts::dictionary::Dictionary;
use pitgun_contracts::load::{load, Loaded};
use pitgun_contracts::manifest::PipelineManifest;
use pitgun_contracts::schema::ContractKind;
use pitgun_engine::{Plan, Reason, Runner};

const GOOD: &str = r#"{"schema":"pitgun-envelope/v1","event_id":"e-1","source":{"kind":"game","id":"pitgun-web","version":"1.4.2"},"session_id":"s-1","seq":1,"time_us":1767225603677340,"kind":"sample","channels":{"brake":0.0,"lap":1.0,"lap_dist":0.0,"speed_kmh":0.1,"throttle":0.0},"dims":{"car":"lmp2","player":"dara","track":"monza"}}"#;

#[test]
fn the_engine_refuses_what_the_schemas_rules_refuse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest: Loaded<PipelineManifest> = load(ContractKind::Pipeline, &root.join("manifests/pipelines/lap-performance.v1.yaml")).unwrap();
    let dictionary: Loaded<Dictionary> = load(ContractKind::Dictionary, &root.join("manifests/dictionary/racing.yaml")).unwrap();
    let long = "x".repeat(129);
    let mutations: Vec<(&str, String)> = vec![
        ("\"e-1\"", format!("\"{long}\"")),
        ("\"s-1\"", format!("\"{long}\"")),
        ("\"pitgun-web\"", "\"-web\"".into()),
        ("\"pitgun-web\"", "\"pit gun\"".into()),
        ("\"pitgun-web\"", format!("\"{long}\"")),
        ("\"1.4.2\"", "\"01.4.2\"".into()),
        ("\"1.4.2\"", "\"1.4.2-\"".into()),
        ("\"brake\"", format!("\"{long}\"")),
        ("\"track\"", "\"Track\"".into()),
        ("\"track\"", "\"9track\"".into()),
        ("\"monza\"", "\"\"".into()),
        ("\"monza\"", format!("\"{}\"", "m".repeat(257))),
        ("\"lap\":1.0", (0..1025).map(|i| format!("\"c{i}\":1")).collect::<Vec<_>>().join(",")),
        ("\"car\":\"lmp2\"", (0..65).map(|i| format!("\"d{i}\":\"v\"")).collect::<Vec<_>>().join(",")),
    ];
    let writer = AvroWriter::new();
    let avro = |text: &str| {
        let mut bytes = Vec::new();
        writer.write(&decode(text).unwrap(), &[], &mut bytes);
        let Ok(Record::Avro(datum)) = Decoder::default().classify(&bytes) else { panic!("an Avro single object") };
        datum.to_vec()
    };
    let mut json = Runner::new(Plan::compile(&manifest, &dictionary).unwrap());
    let mut one_pass = Runner::new(Plan::compile(&manifest, &dictionary).unwrap());
    let mut out = Vec::new();
    let mut seq = 1;
    let mut next = |text: &str| {
        seq += 1;
        text.replacen("\"seq\":1,", &format!("\"seq\":{seq},"), 1).replacen("\"e-1\"", &format!("\"e-{seq}\""), 1)
    };
    // The producer's layout is learned from valid events, so Avro records of it take the
    // one-pass path.
    for _ in 0..3 {
        one_pass.feed_avro(&avro(&next(GOOD)), 0, &mut out).unwrap();
    }
    // Each rule broken alone, then every two at once: the engine names the place the rules
    // name first, so the gateway and the stream point a producer at the same field.
    let mut cases: Vec<Vec<&(&str, String)>> = mutations.iter().map(|m| vec![m]).collect();
    for (i, a) in mutations.iter().enumerate() {
        cases.extend(mutations[i + 1..].iter().filter(|b| b.0 != a.0).map(|b| vec![a, b]));
    }
    // A kind the manifest takes is resolved; one it does not take (health, for lap-performance)
    // is only checked, by other code, which remembers the channel lists that kept the rules.
    for (case, kind) in cases.iter().flat_map(|case| ["sample", "health"].map(|kind| (case, kind))) {
        let mut text = GOOD.replacen("\"kind\":\"sample\"", &format!("\"kind\":\"{kind}\""), 1);
        for (from, to) in case {
            assert!(text.contains(from), "{from}");
            text = text.replacen(from, to, 1);
        }
        let text = next(&text);
        let said =
            format!("{} ({kind})", case.iter().map(|(from, to)| format!("{from} → {}", &to[..to.len().min(40)])).collect::<Vec<_>>().join(" and "));
        let view = decode(&text).expect("the decoder takes it: the mutations break only rules");
        let rule = check(&view).expect_err(&text);
        for (path, got) in [("JSON", json.feed_json(&text, 0, &mut out)), ("Avro", one_pass.feed_avro(&avro(&text), 0, &mut out))] {
            let err = got.expect_err(&format!("{path}: {said}"));
            assert_eq!(err.reason, Reason::InvalidEnvelope, "{path}: {said}");
            let at = format!("at {}: ", rule.pointer);
            assert!(err.detail.starts_with(&at), "{path}: {said}: the rules point at {}, the engine said {}", rule.pointer, err.detail);
        }
    }
    // And the good event after them all is taken on both paths.
    json.feed_json(&next(GOOD), 0, &mut out).unwrap();
    one_pass.feed_avro(&avro(&next(GOOD)), 0, &mut out).unwrap();
}
