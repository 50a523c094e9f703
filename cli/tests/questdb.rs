//! The sink's QuestDB target inside the whole sink, with the real broker `scripts/test.sh`
//! starts and the in-process stand-in for QuestDB's HTTP interface
//! (`sink/tests/support/questdb_standin.rs`; no QuestDB server can be installed where these
//! tests run): every replay row reaches the table once and a row QuestDB refuses reaches the
//! dead-letter topic with QuestDB's error. The target's own behaviour (ILP lines, dedup,
//! faults) is tested beside it in `sink/tests/questdb.rs`. `real_questdb` runs the flow against a
//! real QuestDB when `PITGUN_QUESTDB_URL` is set.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::questdb_standin::{Fault, QuestDbStandIn};
use common::*;

type Row = serde_json::Map<String, serde_json::Value>;

const LAPS: &str = "manifests/pipelines/lap-performance.v1.yaml";

fn replay_rows(data: &Path) -> Vec<Row> {
    replay(&root().join(LAPS), None, data, &[]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn publish_rows(ns: &Ns, dir: &Path, name: &str, rows: &[Row]) {
    let file = dir.join(name);
    std::fs::write(&file, rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect::<String>()).unwrap();
    ns.create_topic("pitgun.aggregates.lap-performance.v1", 2);
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

#[test]
fn every_row_reaches_the_table_once_and_a_refused_row_the_dead_letter_topic() {
    let ns = Ns::new("qdb-sink");
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

    let q = QuestDbStandIn::start();
    q.refuse_symbol("refuse-me");
    let summary = run_sink(&ns, &q.conf(), &["--linger", "1s"]);
    assert_eq!(summary["deadletters"].as_u64(), Some(1), "{summary}");
    assert_eq!(summary["written"]["questdb:lap_performance_v1"].as_u64(), Some(rows.len() as u64), "{summary}");
    assert_table_equals(&q.rows("lap_performance_v1"), &rows, "QuestDB table");

    // The refused row: on the dead-letter topic with QuestDB's error (message and line).
    let dead = records_with_headers(&ns, "pitgun.deadletter.sink.v1", 1);
    let (payload, h) = &dead[0];
    assert!(payload.contains("refused-by-questdb"), "{payload}");
    assert_eq!(h["pitgun-reason"], "refused_by_target");
    let detail = &h["pitgun-detail"];
    assert!(detail.starts_with("questdb:lap_performance_v1: "), "{detail}");
    assert!(detail.contains("refused by the test") && detail.contains("code: invalid") && detail.contains("line: "), "{detail}");
}

/// A batch still being written when its partition moves to another sink lands before the new
/// owner writes that partition: QuestDB has no conditional write, so an older version landing
/// after a newer one would stay. Sink A's first write (every row's first version) is held 10 s
/// by the stand-in; meanwhile every row gets a second version and sink B joins the group and
/// takes one of the two partitions while A gathers its next batch (a 4 s linger: a sink serves
/// the group only while it reads). At the end every row in QuestDB is its second version.
#[test]
fn a_write_in_flight_at_a_rebalance_lands_before_the_new_owner_writes() {
    let ns = Ns::new("qdb-rebalance");
    ns.create_topic("pitgun.aggregates.lap-performance.v1", 2);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "q.ndjson", 23, 4, "4m", None);
    let first = replay_rows(&data);
    assert!(first.len() >= 8, "test data: laps on both partitions ({})", first.len());
    let second: Vec<Row> = first
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.insert("max_speed".into(), (r["max_speed"].as_f64().unwrap() + 1.0).into());
            r
        })
        .collect();
    publish_rows(&ns, dir.path(), "first.ndjson", &first);

    let q = QuestDbStandIn::start();
    q.push_fault(Fault::Slow(Duration::from_secs(10)));
    let conf = q.conf();
    let args = ["sink", "--manifest", LAPS, "--targets", "questdb", "--questdb", &conf, "--linger", "4s"];
    let mut a = Service::start("a", &args, &ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    while q.counts().0 == 0 {
        assert!(Instant::now() < deadline, "sink A wrote nothing within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    publish_rows(&ns, dir.path(), "second.ndjson", &second);
    let mut b = Service::start("b", &args, &ns);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let table = q.rows("lap_performance_v1");
        let stale: Vec<&str> = second
            .iter()
            .filter(|w| !table.iter().any(|r| r["row_id"] == w["row_id"] && same_value(&r["max_speed"], &w["max_speed"])))
            .map(|w| w["row_id"].as_str().unwrap())
            .collect();
        if stale.is_empty() && q.counts().1 >= 2 {
            assert_table_equals(&table, &second, "QuestDB after the rebalance");
            break;
        }
        assert!(Instant::now() < deadline, "{} rows are not their second version in QuestDB (an older write landed last): {stale:?}", stale.len());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(b.log_count("sink started") == 1 && q.counts().1 >= 2, "sink B never wrote");
    for s in [&mut a, &mut b] {
        s.sigterm();
        assert!(s.wait(Duration::from_secs(60)), "a sink did not stop cleanly");
    }
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
