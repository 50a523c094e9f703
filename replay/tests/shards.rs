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
    run_with(inputs, Options { threads, changelog: false, strict: false }).unwrap()
}

fn run_with(inputs: &[PathBuf], options: Options) -> Result<Outcome, pitgun_replay::ReplayError> {
    let manifest = load(ContractKind::Pipeline, &root().join("manifests/pipelines/lap-performance.v1.yaml")).unwrap();
    let dictionary = load(ContractKind::Dictionary, &root().join("manifests/dictionary/racing.yaml")).unwrap();
    let compile = || Plan::compile(&manifest, &dictionary);
    replay(&compile, inputs, options, &|_| {})
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
        w.envelope(&serde_json::from_str::<Envelope>(text.unwrap()).unwrap())?;
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

/// `--strict` stops at the first refused record, and a run stopped there answers the same
/// whatever the thread count: with several, the other shards have read on past it.
#[test]
fn a_strict_run_stops_at_the_same_record_whatever_the_thread_count() {
    // The sample with two lines broken, at about 40 % and 70 % of it.
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("broken.ndjson");
    let mut lines = Vec::new();
    for_each_record(&root().join("samples/racing-small.ndjson.zst"), &|_| {}, |_, text| {
        lines.push(text.unwrap().to_string());
        Ok::<_, DatasetError>(true)
    })
    .unwrap();
    let n = lines.len();
    lines[n * 4 / 10] = "{\"schema\": \"pitgun-envelope/v1\", broken".into();
    lines[n * 7 / 10] = "not json at all".into();
    std::fs::write(&sample, lines.join("\n") + "\n").unwrap();
    let lenient = run(std::slice::from_ref(&sample), 1);
    assert_eq!(lenient.bad.len(), 2, "both broken lines are refused");
    let first = &lenient.bad[0];
    let answer = |inputs: &[PathBuf], threads| match run_with(inputs, Options { threads, changelog: false, strict: true }) {
        Ok(o) => format!("rows {} records {} bad {:?}", o.rows.len(), o.records, summary(&o).2),
        Err(e) => format!("error: {e}"),
    };
    let one = answer(std::slice::from_ref(&sample), 1);
    for threads in [2, 3] {
        assert_eq!(answer(std::slice::from_ref(&sample), threads), one, "{threads} threads");
    }
    assert!(one.contains(&format!(":{}: {}", first.line, first.reason)), "names the first refused record (line {}): {one}", first.line);
    // A damaged file after it is never read: the run stopped at the refusal, whatever the
    // thread count (one thread used to read on into the next file and fail on it).
    let damaged = dir.path().join("damaged.ndjson.zst");
    std::fs::write(&damaged, b"not zstandard at all").unwrap();
    for threads in [1, 2, 3] {
        assert_eq!(answer(&[sample.clone(), damaged.clone()], threads), one, "{threads} threads, a damaged file after");
    }
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

/// One envelope of the lap-performance producer, as a line.
fn line(session: &str, seq: u64, t_ms: u64, kind: &str, channels: &str) -> String {
    format!(
        r#"{{"schema":"pitgun-envelope/v1","event_id":"{session}-{seq}","source":{{"kind":"simulator","id":"pitgun-sim","version":"2.1.0"}},"session_id":"{session}","seq":{seq},"time_us":{},"kind":"{kind}","channels":{{{channels}}},"dims":{{"player":"ana","track":"monza","car":"gt3"}}}}"#,
        t_ms * 1000
    )
}

/// Replay's clock closes an ended session once it is idle_timeout past the session's last
/// activity; which other sessions move that clock must not depend on how sessions fall on
/// threads. Here session A ends, B (one event an hour later) and many events of C are read,
/// then A's straggler (sent before its end, within out-of-orderness). With one thread B moved
/// the clock A was judged by and the straggler was late; with two, B sat on the other thread
/// and the straggler counted.
#[test]
fn when_an_ended_session_closes_does_not_depend_on_the_thread_count() {
    let thread_of = |id: &str, threads: u64| xxhash_rust::xxh3::xxh3_64(id.as_bytes()) % threads;
    let a = "session-a";
    let b = (0..).map(|i| format!("session-b{i}")).find(|b| thread_of(b, 2) != thread_of(a, 2)).unwrap();
    let c = (0..).map(|i| format!("session-c{i}")).find(|c| thread_of(c, 2) == thread_of(a, 2)).unwrap();
    let mut lines = vec![
        line(a, 1, 1_000, "session_start", r#""lap_number":1"#),
        line(a, 2, 2_000, "sample", r#""lap_number":1,"speed":10"#),
        line(a, 4, 3_000, "session_end", ""),
        line(&b, 1, 3_600_000, "sample", r#""lap_number":1,"speed":10"#),
    ];
    lines.extend((1..=5000).map(|seq| line(&c, seq, 3_000 + seq, "sample", r#""lap_number":1,"speed":20"#)));
    lines.push(line(a, 3, 2_500, "sample", r#""lap_number":1,"speed":50"#));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("interleaved.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let one = run(std::slice::from_ref(&file), 1);
    assert_eq!(one.stats.accepted, lines.len() as u64, "every event counts: {:?} {:?}", one.late, one.bad.first());
    for threads in [2, 3, 4] {
        assert_eq!(summary(&run(std::slice::from_ref(&file), threads)), summary(&one), "{threads} threads");
    }
}
