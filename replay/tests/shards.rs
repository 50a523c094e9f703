//! The library's promise: the same rows, notes and refusals whatever the thread count, for a
//! dataset as NDJSON and as Avro (seedless: the input is the committed sample).

use std::path::{Path, PathBuf};

use pitgun_codec::dataset::{for_each_record, DatasetError, DatasetWriter};
use pitgun_contracts::envelope::Envelope;
use pitgun_contracts::load::load;
use pitgun_contracts::schema::ContractKind;
use pitgun_engine::Plan;
use pitgun_replay::{replay, Options, Outcome};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(inputs: &[PathBuf], threads: usize) -> Outcome {
    let manifest = load(ContractKind::Pipeline, &root().join("manifests/pipelines/lap-performance.v1.yaml")).unwrap();
    let dictionary = load(ContractKind::Dictionary, &root().join("manifests/dictionary/racing.yaml")).unwrap();
    let compile = || Plan::compile(&manifest, &dictionary);
    replay(&compile, inputs, Options { threads, changelog: false, strict: false }, &|_| {}).unwrap()
}

/// Rows, late notes, refusals (record number, reason) and the two counts a test compares.
type Summary = (Vec<String>, Vec<String>, Vec<(u64, String)>, u64, u64);

fn summary(o: &Outcome) -> Summary {
    (
        o.rows.iter().map(|r| r.json.clone()).collect(),
        o.late.iter().map(|n| n.to_json()).collect(),
        o.bad.iter().map(|b| (b.line, b.detail.clone())).collect(),
        o.records,
        o.stats.accepted,
    )
}

#[test]
fn thread_counts_and_formats_give_the_same_outcome() {
    let sample = root().join("samples/racing-small.ndjson.zst");
    let dir = tempfile::tempdir().unwrap();
    let avro = dir.path().join("d.avro");
    let mut w = DatasetWriter::create(&avro).unwrap();
    for_each_record(&sample, &|_| {}, |_, text| {
        w.envelope(&serde_json::from_str::<Envelope>(text).unwrap())?;
        Ok::<_, DatasetError>(true)
    })
    .unwrap();
    w.finish().unwrap();

    let one = run(std::slice::from_ref(&sample), 1);
    assert!(!one.rows.is_empty() && one.records > 1000, "the sample gives rows");
    for threads in [2, 3] {
        assert_eq!(summary(&run(std::slice::from_ref(&sample), threads)), summary(&one), "{threads} threads");
    }
    // Avro holds envelopes only (a malformed line has no place in it) and numbers records, not
    // lines: the rows and late notes are the comparison.
    let from_avro = summary(&run(&[avro], 3));
    let want = summary(&one);
    assert_eq!((from_avro.0, from_avro.1), (want.0, want.1), "the same dataset as Avro");
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let manifest = load(ContractKind::Pipeline, &root().join("manifests/pipelines/lap-performance.v1.yaml")).unwrap();
    let dictionary = load(ContractKind::Dictionary, &root().join("manifests/dictionary/racing.yaml")).unwrap();
    let compile = || Plan::compile(&manifest, &dictionary);
    let err = replay(&compile, &[PathBuf::from("/nonexistent/d.ndjson")], Options { threads: 2, changelog: false, strict: false }, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/d.ndjson"), "{err}");
}
