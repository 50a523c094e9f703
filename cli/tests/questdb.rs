//! The sink's QuestDB target, with the real broker `scripts/test.sh` starts and an in-process
//! server implementing QuestDB's documented HTTP contract (`common::fake_questdb`; no QuestDB
//! server can be installed where these tests run). The ILP lines for a known batch match a
//! golden file; a row QuestDB refuses reaches the dead-letter topic with QuestDB's error; a
//! server unavailable for a while, a 500 and an answer lost after the write was applied end
//! with every row once; a lap whose start a late event moved replaces its earlier version.
//! `real_questdb` runs the same flow against a real QuestDB when `PITGUN_QUESTDB_URL` is set.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use common::fake_questdb::{FakeQuestDb, Fault};
use common::*;

type Row = serde_json::Map<String, serde_json::Value>;

const LAPS: &str = "manifests/pipelines/lap-performance.v1.yaml";

fn replay_rows(data: &Path) -> Vec<Row> {
    replay(&root().join(LAPS), None, data, &[]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn publish_rows(ns: &Ns, dir: &Path, name: &str, rows: &[Row]) {
    let file = dir.join(name);
    std::fs::write(&file, rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect::<String>()).unwrap();
    let out = pitgun(&["publish", "--input", file.to_str().unwrap(), "--wire", "rows", "--topic", "pitgun.aggregates.lap-performance.v1"], ns);
    assert!(out.status.success(), "publish: {}", String::from_utf8_lossy(&out.stderr));
}

fn run_sink(ns: &Ns, conf: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["sink", "--manifest", LAPS, "--targets", "questdb", "--questdb", conf, "--until-end"];
    args.extend_from_slice(extra);
    let mut sink = Service::start("sink", &args, ns);
    assert!(sink.wait(Duration::from_secs(180)), "sink failed");
    sink.summary()
}

/// Every replay row is in QuestDB's table once, every column equal.
fn assert_table_equals(table: &[Row], want: &[Row], what: &str) {
    let by_id: HashMap<&str, &Row> = table.iter().map(|r| (r["row_id"].as_str().unwrap(), r)).collect();
    assert_eq!(by_id.len(), table.len(), "{what}: a row_id twice in the table");
    for w in want {
        let id = w["row_id"].as_str().unwrap();
        let got = by_id.get(id).unwrap_or_else(|| panic!("{what}: row {id} missing"));
        for (col, v) in w {
            let g = got.get(col).unwrap_or(&serde_json::Value::Null);
            assert!(same_value(g, v), "{what}: row {id}, column {col}: QuestDB {g}, replay {v}");
        }
    }
    assert_eq!(table.len(), want.len(), "{what}: the table has rows replay does not");
}

fn golden_path() -> PathBuf {
    root().join("cli/tests/golden/questdb-lap-performance.ilp")
}

fn shift(ts: &serde_json::Value, by: Duration) -> serde_json::Value {
    let t = humantime::parse_rfc3339(ts.as_str().unwrap()).unwrap() - by;
    assert!(t > UNIX_EPOCH);
    serde_json::Value::from(humantime::format_rfc3339_micros(t).to_string())
}

#[test]
fn ilp_matches_golden_refused_row_is_dead_lettered_and_a_moved_lap_replaces_its_row() {
    let ns = Ns::new("qdb-golden");
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "q.ndjson", 21, 2, "4m", None);
    let rows = replay_rows(&data);
    assert!(rows.len() >= 4, "test data: a few laps ({})", rows.len());
    let mut refused = rows[0].clone();
    refused.insert("row_id".into(), "refused-by-questdb".into());
    refused.insert("player".into(), "refuse-me".into());
    let mut published = rows.clone();
    published.insert(1, refused);
    publish_rows(&ns, dir.path(), "rows.ndjson", &published);

    let q = FakeQuestDb::start();
    q.refuse_symbol("refuse-me");
    let summary = run_sink(&ns, &q.conf(), &["--linger", "1s"]);
    assert_eq!(summary["deadletters"].as_u64(), Some(1), "{summary}");
    assert_eq!(summary["written"]["questdb:lap_performance_v1"].as_u64(), Some(rows.len() as u64), "{summary}");
    assert_table_equals(&q.rows("lap_performance_v1"), &rows, "QuestDB table");

    // The lines of the accepted requests, in a stable order, against the golden file.
    let mut lines = q.accepted_lines();
    lines.sort();
    let got = lines.join("\n") + "\n";
    if std::env::var_os("PITGUN_UPDATE_GOLDEN").is_some() {
        std::fs::write(golden_path(), &got).unwrap();
    }
    let want = std::fs::read_to_string(golden_path()).expect("golden file (PITGUN_UPDATE_GOLDEN=1 writes it)");
    assert_eq!(got, want, "ILP lines differ from {}", golden_path().display());

    // The refused row: on the dead-letter topic with QuestDB's error (message and line).
    let dead = records_with_headers(&ns, "pitgun.deadletter.sink.v1", 1);
    let (payload, h) = &dead[0];
    assert!(payload.contains("refused-by-questdb"), "{payload}");
    assert_eq!(h["pitgun-reason"], "refused_by_target");
    let detail = &h["pitgun-detail"];
    assert!(detail.starts_with("questdb:lap_performance_v1: "), "{detail}");
    assert!(detail.contains("refused by the test") && detail.contains("code: invalid") && detail.contains("line: "), "{detail}");

    // A late event moved lap 1's start: the processor re-emits the row with an earlier
    // window_start but the same window_anchor, so it lands on the same dedup keys.
    let mut moved = rows[0].clone();
    moved.insert("window_start".into(), shift(&rows[0]["window_start"], Duration::from_millis(1500)));
    moved.insert("samples".into(), serde_json::Value::from(rows[0]["samples"].as_i64().unwrap() + 1));
    assert_eq!(moved["window_anchor"], rows[0]["window_anchor"]);
    publish_rows(&ns, dir.path(), "moved.ndjson", std::slice::from_ref(&moved));
    let summary = run_sink(&ns, &q.conf(), &[]);
    assert_eq!(summary["written"]["questdb:lap_performance_v1"].as_u64(), Some(1), "{summary}");
    let mut want = rows.clone();
    want[0] = moved;
    assert_table_equals(&q.rows("lap_performance_v1"), &want, "after the re-emission");
}

#[test]
fn questdb_unavailable_flaky_and_lost_answers_end_with_every_row_once() {
    let ns = Ns::new("qdb-faults");
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "q.ndjson", 22, 6, "6m", None);
    let rows = replay_rows(&data);
    publish_rows(&ns, dir.path(), "rows.ndjson", &rows);

    let q = FakeQuestDb::start();
    // The first writes meet 503 for 2 s; then one request is applied and its answer lost,
    // then one 500.
    q.unavailable_for(Duration::from_secs(2));
    q.push_fault(Fault::ApplyThenDrop);
    q.push_fault(Fault::Status(500));
    let summary = run_sink(&ns, &q.conf(), &["--batch-rows", "5", "--max-backoff", "400ms"]);
    let (writes, applied, errors) = q.counts();
    eprintln!("writes {writes}, applied {applied}, errors {errors:?}, summary {summary}");
    assert!(errors.get(&503).copied().unwrap_or(0) >= 2, "{errors:?}");
    assert_eq!(errors.get(&500), Some(&1));
    assert!(summary["retries"].as_u64().unwrap() >= 4, "503s, the lost answer and the 500 are retried: {summary}");
    assert_eq!(summary["deadletters"].as_u64(), Some(0));
    // The request whose answer was lost was applied twice; dedup keys keep one row each.
    assert_table_equals(&q.rows("lap_performance_v1"), &rows, "QuestDB table");
    assert_eq!(q.accepted_lines().len(), rows.len(), "each row accepted once after the lost answer");
}

/// Against a real QuestDB: `PITGUN_QUESTDB_URL=http://host:9000` (not set in CI, where no
/// QuestDB can be installed; the README says what is verified where).
#[test]
fn real_questdb() {
    let Ok(url) = std::env::var("PITGUN_QUESTDB_URL") else {
        eprintln!("real_questdb: PITGUN_QUESTDB_URL is not set; nothing to run against (see README, \"QuestDB\")");
        return;
    };
    let addr = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let ns = Ns::new("qdb-real");
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "q.ndjson", 23, 3, "4m", None);
    let rows = replay_rows(&data);
    publish_rows(&ns, dir.path(), "rows.ndjson", &rows);
    let conf = format!("http::addr={addr};");
    run_sink(&ns, &conf, &[]);
    // Twice: the second run starts over in a new group and re-sends every row.
    run_sink(&ns, &conf, &["--group", &format!("{}-again", ns.name)]);
    let ids: Vec<String> = rows.iter().map(|r| format!("'{}'", r["row_id"].as_str().unwrap())).collect();
    let sql = format!("SELECT count() n, count_distinct(row_id) d FROM lap_performance_v1 WHERE row_id IN ({})", ids.join(","));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // WAL tables apply asynchronously: wait (bounded) until every row is visible.
        let body = http_get(&addr, &format!("/exec?query={}", urlencode(&sql)));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let (n, d) = (v["dataset"][0][0].as_u64().unwrap_or(0), v["dataset"][0][1].as_u64().unwrap_or(0));
        if n == rows.len() as u64 && d == n {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "QuestDB holds {n} rows ({d} distinct) of {}", rows.len());
        std::thread::sleep(Duration::from_millis(500));
    }
}
