//! The sink against the real broker and PostgreSQL `scripts/test.sh` starts: simulate →
//! gateway → processor → sink, the tables equal replay column for column; a sink killed
//! between a target's commit and the offset commit, and by SIGKILL mid-stream, ends with the
//! same tables and no row doubled. Every test has its own namespace and database.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};

fn manifest(name: &str) -> PathBuf {
    root().join("manifests/pipelines").join(name)
}

fn replay_rows(manifest: &Path, data: &Path) -> Vec<Row> {
    replay(manifest, None, data, &[]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn by_row_id(rows: Vec<Row>) -> Vec<(String, Row)> {
    rows.into_iter().map(|r| (r["row_id"].as_str().unwrap().to_string(), r)).collect()
}

fn sink_args<'a>(pg: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "sink",
        "--manifest",
        "manifests/pipelines/lap-performance.v1.yaml",
        "--manifest",
        "manifests/pipelines/session-summary.v1.yaml",
        "--postgres",
        pg,
        "--targets",
        "postgres",
        "--until-end",
    ];
    v.extend_from_slice(extra);
    v
}

/// Runs both manifests' processors over the topic `--until-end`.
fn process_all(ns: &Ns, dir: &Path) {
    for m in ["lap-performance.v1.yaml", "session-summary.v1.yaml"] {
        let state = dir.join(format!("state-{m}"));
        let path = manifest(m);
        let mut p = Service::start(
            "process",
            &["process", "--manifest", path.to_str().unwrap(), "--state-dir", state.to_str().unwrap(), "--until-end", "--threads", "2"],
            ns,
        );
        assert!(p.wait(Duration::from_secs(240)), "processor {m} failed");
    }
}

/// simulate → gateway (4 connections) → processors → sink: `lap_performance_v1` holds exactly
/// replay's rows (every column) and `runs` one row per simulated session, mapped as documented.
/// The sink's metrics count what it wrote.
#[test]
fn end_to_end_tables_equal_replay() {
    let ns = Ns::new("sink-e2e");
    ns.create_topics(4);
    let pg = own_database("sink_e2e");
    let dir = tempfile::tempdir().unwrap();
    let (gw, url, api_keys) = start_gateway(&ns, dir.path());
    let data = dir.path().join("e2e.ndjson");
    let truth = dir.path().join("truth.json");
    let sessions = 8;
    let out = pitgun(
        &[
            "simulate",
            "--quiet",
            "--seed",
            "11",
            "--sessions",
            &sessions.to_string(),
            "--duration",
            "4m",
            "--faults",
            "duplicates=0.01,reorder_within=0.01",
            "--output",
            data.to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
            "--target",
            &url,
            "--api-keys",
            api_keys.to_str().unwrap(),
            "--concurrency",
            "4",
            "--batch",
            "500",
        ],
        &ns,
    );
    assert!(out.status.success(), "simulate --target: {}", String::from_utf8_lossy(&out.stderr));
    drop(gw);
    process_all(&ns, dir.path());

    let laps = by_row_id(replay_rows(&manifest("lap-performance.v1.yaml"), &data));
    let summary = replay_rows(&manifest("session-summary.v1.yaml"), &data);
    // A long-running sink (no --until-end) writing PostgreSQL and (the in-process stand-in
    // for) QuestDB: wait until the tables are full, scrape its metrics, then SIGTERM (it
    // commits its last batch and exits).
    let questdb = common::questdb_standin::QuestDbStandIn::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let conf = questdb.conf();
    let args = [
        "sink",
        "--manifest",
        "manifests/pipelines/lap-performance.v1.yaml",
        "--manifest",
        "manifests/pipelines/session-summary.v1.yaml",
        "--postgres",
        &pg,
        "--questdb",
        &conf,
        "--metrics-listen",
        &listen,
    ];
    let mut sink = Service::start("sink", &args, &ns);
    sink.wait_for_log("sink started", Duration::from_secs(60));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let count = |t: &str| psql(&pg, &format!("SELECT count(*) FROM {t}")).trim().parse::<usize>().unwrap();
    while count("lap_performance_v1") < laps.len() || count("runs") < sessions || questdb.rows("lap_performance_v1").len() < laps.len() {
        assert!(std::time::Instant::now() < deadline, "the sink did not fill the tables within 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let metrics = http_get(&listen, "/metrics");
    assert_promtool_metrics(&metrics, "sink");
    // Every record of both aggregates topics consumed; at least one write per table row (a
    // window re-emitted in another batch is written again, as an upsert).
    let on_topics = ns.all_records("pitgun.aggregates.lap-performance.v1").len() + ns.all_records("pitgun.aggregates.session-summary.v1").len();
    assert_eq!(metric(&metrics, "pitgun_sink_rows_in_total", ""), on_topics as f64, "rows consumed");
    assert!(metric(&metrics, "pitgun_sink_rows_written_total", "lap_performance_v1") >= laps.len() as f64, "rows written, lap table");
    assert!(metric(&metrics, "pitgun_sink_rows_written_total", "table=\"runs\"") >= sessions as f64, "rows written, runs");
    assert!(metrics.contains("pitgun_sink_flush_seconds_count{target=\"postgres\"}"), "{metrics}");
    sink.sigterm();
    assert!(sink.wait(Duration::from_secs(30)), "sink did not stop on SIGTERM");
    assert_eq!(sink.summary()["deadletters"].as_u64(), Some(0));

    assert_table_equals(&table_rows(&pg, "lap_performance_v1", "row_id"), &laps, "lap_performance_v1");
    assert_eq!(summary.len(), sessions, "replay: one summary per session");
    assert_table_equals(&table_rows(&pg, "runs", "session_id"), &expected_runs(&summary), "runs");
    let registry = psql(&pg, "SELECT table_name || ':' || manifest || ':' || version FROM pitgun_sink_tables ORDER BY 1");
    assert_eq!(registry, "lap_performance_v1:lap-performance:1\nruns:session-summary:1\n");
    // The sink owns the schema: its migrations are recorded, and it made the read indexes the
    // API's queries use (the API runs no DDL); the lap rows' key, led by session_id, serves
    // reads by session.
    assert_eq!(psql(&pg, "SELECT string_agg(version::text, ',' ORDER BY version) FROM pitgun_sink_schema").trim(), "1");
    let indexes = psql(&pg, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND indexname NOT LIKE '%pkey' ORDER BY 1");
    assert_eq!(indexes, "runs_car_started\nruns_laps_ranked\nruns_laps_ranked_car\nruns_player_started\nruns_started\nruns_track_started\n");
    let key = psql(&pg, "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'lap_performance_v1_pkey'");
    assert!(key.trim().ends_with("USING btree (session_id, row_id)"), "{key}");
    // A database a newer sink migrated is refused, not written with an older schema.
    psql(&pg, "INSERT INTO pitgun_sink_schema (version) VALUES (99)");
    let mut migrate = sink_args(&pg, &["--migrate"]);
    migrate.retain(|a| *a != "--until-end");
    let out = pitgun(&migrate, &ns);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("version 99, newer than this sink"), "{err}");
    // QuestDB's table (dedup keys on window_anchor) holds the same rows, each once.
    let in_questdb: HashMap<String, Row> =
        questdb.rows("lap_performance_v1").into_iter().map(|r| (r["row_id"].as_str().unwrap().to_string(), r)).collect();
    assert_eq!(in_questdb.len(), questdb.rows("lap_performance_v1").len(), "a row_id twice in QuestDB");
    assert_table_equals(&in_questdb, &laps, "QuestDB lap_performance_v1");

    // The API's leaderboard against the simulator's ground truth (not the tables): per track,
    // each player's best complete lap, best first; ties to the run that started first.
    let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&truth).unwrap()).unwrap();
    let (_api, addr) = start_api(&pg, &ns);
    let mut tracks: Vec<&str> = truth["sessions"].as_array().unwrap().iter().map(|s| s["track"].as_str().unwrap()).collect();
    tracks.sort_unstable();
    tracks.dedup();
    let mut checked = 0;
    for track in tracks {
        let mut best: HashMap<&str, (f64, i64)> = HashMap::new();
        for s in truth["sessions"].as_array().unwrap().iter().filter(|s| s["track"] == track) {
            let Some(lap) = s["best_lap_s"].as_f64() else { continue };
            let entry = (lap, s["start_us"].as_i64().unwrap());
            let e = best.entry(s["player"].as_str().unwrap()).or_insert(entry);
            if entry.0 < e.0 || (entry.0 == e.0 && entry.1 < e.1) {
                *e = entry;
            }
        }
        let mut want: Vec<(&str, (f64, i64))> = best.into_iter().collect();
        want.sort_by(|a, b| a.1 .0.total_cmp(&b.1 .0).then(a.1 .1.cmp(&b.1 .1)).then(a.0.cmp(b.0)));
        let board: serde_json::Value =
            serde_json::from_str(&http_get(&addr, &format!("/v1/leaderboard?track={}&limit=100", urlencode(track)))).unwrap();
        let got: Vec<(&str, f64)> =
            board["entries"].as_array().unwrap().iter().map(|e| (e["player"].as_str().unwrap(), e["best_lap_s"].as_f64().unwrap())).collect();
        let want: Vec<(&str, f64)> = want.iter().map(|(p, (lap, _))| (*p, *lap)).collect();
        assert_eq!(got.len(), want.len(), "{track}: API {got:?}, truth {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(g.0 == w.0 && (g.1 - w.1).abs() < 1e-9, "{track}: API {got:?}, truth {want:?}");
        }
        checked += want.len();
    }
    assert!(checked > 0, "the truth has complete laps to rank");
}

/// The sink aborts through the failpoint between the target's commit and the offset commit,
/// then is killed with SIGKILL at a random point (seed logged) with one-row batches, then runs
/// to the end: the tables equal replay and no row is doubled.
#[test]
fn sink_crashes_leave_tables_complete_and_nothing_doubled() {
    let seed = seed("sink_crashes");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let ns = Ns::new("sink-crash");
    ns.create_topics(4);
    let pg = own_database("sink_crash");
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "crash.ndjson", 12, 6, "4m", Some("duplicates=0.01"));
    let out = pitgun(&["publish", "--input", data.to_str().unwrap(), "--wire", "avro"], &ns);
    assert!(out.status.success(), "publish: {}", String::from_utf8_lossy(&out.stderr));
    process_all(&ns, dir.path());

    let mut first = Service::start_with_env("sink-failpoint", &sink_args(&pg, &[]), &ns, &[("PITGUN_SINK_FAILPOINT", "after-target-commit")]);
    assert!(!first.wait(Duration::from_secs(120)), "the failpoint must stop the sink");
    first.wait_for_log("failpoint PITGUN_SINK_FAILPOINT", Duration::from_secs(5));
    let committed: u64 = psql(&pg, "SELECT count(*) FROM lap_performance_v1").trim().parse::<u64>().unwrap()
        + psql(&pg, "SELECT count(*) FROM runs").trim().parse::<u64>().unwrap();
    assert!(committed > 0, "the target committed before the abort");

    let mut second = Service::start("sink-killed", &sink_args(&pg, &["--batch-rows", "1", "--linger", "10ms"]), &ns);
    second.wait_for_log("sink started", Duration::from_secs(60));
    let after = Duration::from_millis(rng.random_range(100..1500));
    eprintln!("sink crash test: seed {seed}, SIGKILL {after:?} after start");
    std::thread::sleep(after);
    second.sigkill();

    let mut last = Service::start("sink-final", &sink_args(&pg, &[]), &ns);
    assert!(last.wait(Duration::from_secs(120)), "final sink failed");
    let laps = by_row_id(replay_rows(&manifest("lap-performance.v1.yaml"), &data));
    let summary = replay_rows(&manifest("session-summary.v1.yaml"), &data);
    assert_table_equals(&table_rows(&pg, "lap_performance_v1", "row_id"), &laps, "lap_performance_v1 after crashes");
    assert_table_equals(&table_rows(&pg, "runs", "session_id"), &expected_runs(&summary), "runs after crashes");
    assert!(last.summary()["rows"].as_u64().unwrap() > 0, "the last run re-read what was not committed");
}

/// A sink that writes only some target kinds (`--targets`) reads in a group of its own by
/// default: it shared the manifests' group with the sink of every kind, whose committed offsets
/// it then moved past rows it never wrote to the kinds it left out, and they were never written.
#[test]
fn a_sink_writing_one_kind_of_target_leaves_the_others_their_rows() {
    let ns = Ns::new("sink-kinds");
    ns.create_topics(2);
    let pg = own_database("sink_kinds");
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "kinds.ndjson", 23, 4, "4m", None);
    let out = pitgun(&["publish", "--input", data.to_str().unwrap()], &ns);
    assert!(out.status.success(), "publish: {}", String::from_utf8_lossy(&out.stderr));
    let lap = manifest("lap-performance.v1.yaml");
    let state = dir.path().join("state");
    let mut p =
        Service::start("process", &["process", "--manifest", lap.to_str().unwrap(), "--state-dir", state.to_str().unwrap(), "--until-end"], &ns);
    assert!(p.wait(Duration::from_secs(240)), "processor failed");
    let laps = by_row_id(replay_rows(&lap, &data));

    // PostgreSQL first (QuestDB had no address yet), then QuestDB alone.
    let only_pg = ["sink", "--manifest", lap.to_str().unwrap(), "--postgres", &pg, "--targets", "postgres", "--until-end"];
    let mut first = Service::start("sink-postgres", &only_pg, &ns);
    assert!(first.wait(Duration::from_secs(120)), "the PostgreSQL sink failed");
    assert_table_equals(&table_rows(&pg, "lap_performance_v1", "row_id"), &laps, "lap_performance_v1");
    let questdb = common::questdb_standin::QuestDbStandIn::start();
    let conf = questdb.conf();
    let only_questdb = ["sink", "--manifest", lap.to_str().unwrap(), "--questdb", &conf, "--targets", "questdb", "--until-end"];
    let mut second = Service::start("sink-questdb", &only_questdb, &ns);
    assert!(second.wait(Duration::from_secs(120)), "the QuestDB sink failed");
    let in_questdb: HashMap<String, Row> =
        questdb.rows("lap_performance_v1").into_iter().map(|r| (r["row_id"].as_str().unwrap().to_string(), r)).collect();
    assert_table_equals(&in_questdb, &laps, "QuestDB lap_performance_v1 written after PostgreSQL's sink");
}

/// Before it has written a row, the sink exports every table's rows-written counter at 0: a
/// sink whose target was down from its start had no rows-written series at all, and a panel or
/// alert over it saw nothing rather than 0.
#[test]
fn a_sink_that_wrote_nothing_exports_each_tables_counter_at_zero() {
    let ns = Ns::new("sink-zero");
    ns.create_topics(1);
    let pg = own_database("sink_zero");
    let manifests = ["manifests/pipelines/lap-performance.v1.yaml", "manifests/pipelines/session-summary.v1.yaml"];
    let out = pitgun(&["topics", "--manifest", manifests[0], "--manifest", manifests[1], "--partitions", "1"], &ns);
    assert!(out.status.success(), "topics: {}", String::from_utf8_lossy(&out.stderr));
    let listen = format!("127.0.0.1:{}", free_port());
    let args =
        ["sink", "--manifest", manifests[0], "--manifest", manifests[1], "--postgres", &pg, "--targets", "postgres", "--metrics-listen", &listen];
    let mut sink = Service::start("sink", &args, &ns);
    sink.wait_for_log("sink started", Duration::from_secs(60));
    let metrics = http_get(&listen, "/metrics");
    for table in ["lap_performance_v1", "runs"] {
        let series: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                l.starts_with("pitgun_sink_rows_written_total{") && l.contains(&format!("table=\"{table}\"")) && l.contains("target=\"postgres\"")
            })
            .collect();
        assert_eq!(series.len(), 1, "one rows-written series for {table}:\n{metrics}");
        assert!(series[0].ends_with(" 0"), "{}", series[0]);
    }
    sink.sigterm();
    assert!(sink.wait(Duration::from_secs(30)), "the sink did not stop");
}

/// The test's own PostgreSQL cluster (not the one the other tests share) is stopped while the
/// sink starts writing, and started again: the sink retries with backoff meanwhile, commits no
/// offset, and afterwards the tables equal replay with nothing doubled.
#[test]
fn target_down_then_back_tables_complete() {
    let ns = Ns::new("sink-down");
    ns.create_topics(4);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "down.ndjson", 13, 6, "4m", None);
    let out = pitgun(&["publish", "--input", data.to_str().unwrap(), "--wire", "avro"], &ns);
    assert!(out.status.success(), "publish: {}", String::from_utf8_lossy(&out.stderr));
    process_all(&ns, dir.path());

    let cluster = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let stack = |action: &str| {
        let out = std::process::Command::new("bash")
            .current_dir(root())
            .args(["scripts/stack.sh", "postgres", action, "--dir", cluster.path().to_str().unwrap(), "--pg-port", &port])
            .output()
            .unwrap();
        assert!(out.status.success(), "stack.sh postgres {action}: {}", String::from_utf8_lossy(&out.stderr));
    };
    stack("start");
    let pg = format!("postgres://pitgun:pitgun@127.0.0.1:{port}/pitgun");
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "sink",
        "--manifest",
        "manifests/pipelines/lap-performance.v1.yaml",
        "--manifest",
        "manifests/pipelines/session-summary.v1.yaml",
        "--postgres",
        &pg,
        "--targets",
        "postgres",
        "--metrics-listen",
        &listen,
        "--batch-rows",
        "3",
        "--max-backoff",
        "500ms",
    ];
    let mut sink = Service::start("sink", &args, &ns);
    sink.wait_for_log("PostgreSQL target ready", Duration::from_secs(60));
    stack("stop");
    sink.wait_for_log("write failed", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let retries = metric(&http_get(&listen, "/metrics"), "pitgun_sink_retries_total", "postgres");
    assert!(retries >= 2.0, "retried with backoff while the target was down: {retries}");
    stack("start");

    let laps = by_row_id(replay_rows(&manifest("lap-performance.v1.yaml"), &data));
    let summary = replay_rows(&manifest("session-summary.v1.yaml"), &data);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let count = |t: &str| psql(&pg, &format!("SELECT count(*) FROM {t}")).trim().parse::<usize>().unwrap();
    while count("lap_performance_v1") < laps.len() || count("runs") < summary.len() {
        assert!(std::time::Instant::now() < deadline, "the sink did not catch up within 120 s of the target's return");
        std::thread::sleep(Duration::from_millis(200));
    }
    sink.sigterm();
    assert!(sink.wait(Duration::from_secs(30)), "sink did not stop on SIGTERM");
    assert_table_equals(&table_rows(&pg, "lap_performance_v1", "row_id"), &laps, "lap_performance_v1 after the outage");
    assert_table_equals(&table_rows(&pg, "runs", "session_id"), &expected_runs(&summary), "runs after the outage");
    stack("stop");
}

/// A row that does not fit its table and a row PostgreSQL refuses (a NUL character in text)
/// go to `pitgun.deadletter.sink.v1` with the reason and the server's message; every other row
/// of the batch is written.
#[test]
fn bad_rows_go_to_the_dead_letter_topic_and_the_rest_is_written() {
    let ns = Ns::new("sink-dead");
    let topic = ns.topic("pitgun.aggregates.lap-performance.v1");
    pitgun_runtime::kafka::Broker::new(ns.brokers.clone(), "")
        .ensure_topics(std::slice::from_ref(&topic), 2, Duration::from_secs(20))
        .expect("topic");
    let pg = own_database("sink_dead");
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "dead.ndjson", 14, 3, "4m", None);
    let mut rows = replay_rows(&manifest("lap-performance.v1.yaml"), &data);
    let good = rows.len();
    let mut misfit = rows[0].clone();
    misfit.insert("row_id".into(), "misfit".into());
    misfit.insert("lap".into(), "one".into());
    let mut refused = rows[1].clone();
    refused.insert("row_id".into(), "refused".into());
    refused.insert("player".into(), "nul\u{0}player".into());
    // A key longer than an index row may be (SQLSTATE 54000): it stalled the sink, retried
    // forever. Random letters, so PostgreSQL cannot compress it under the limit.
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261204);
    let long_id: String = (0..3000).map(|_| rng.random_range(b'a'..=b'z') as char).collect();
    let mut too_long = rows[2].clone();
    too_long.insert("row_id".into(), long_id.clone().into());
    // One row_id in another session: a row of its own in a table keyed by (session_id, row_id),
    // as schemas/topics.md says. In one batch with the first, one of them was lost.
    let mut twin = rows[3].clone();
    twin.insert("session_id".into(), "twin-session".into());
    let twin_id = twin["row_id"].as_str().unwrap().to_string();
    rows.insert(1, misfit);
    rows.push(refused);
    rows.push(too_long);
    rows.push(twin);
    let file = dir.path().join("rows.ndjson");
    std::fs::write(&file, rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect::<String>()).unwrap();
    let out = pitgun(&["publish", "--input", file.to_str().unwrap(), "--wire", "rows", "--topic", "pitgun.aggregates.lap-performance.v1"], &ns);
    assert!(out.status.success(), "publish: {}", String::from_utf8_lossy(&out.stderr));
    // A row too big to be dead-lettered whole (its dead letter, row and headers, is over
    // librdkafka's 1 MB): the sink stopped on it at every start. This producer takes what the
    // broker takes (about 1 MiB).
    let huge = format!("{{\"row_id\":\"{}\"}}", "h".repeat(1_040_000));
    {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = ns.config().set("message.max.bytes", "2000000").create().unwrap();
        producer.send(BaseRecord::to(&topic).key("huge").payload(&huge)).map_err(|(e, _)| e).unwrap();
        producer.flush(Duration::from_secs(30)).expect("the huge row acknowledged within 30 s");
    }

    let mut sink = Service::start(
        "sink",
        &["sink", "--manifest", "manifests/pipelines/lap-performance.v1.yaml", "--postgres", &pg, "--targets", "postgres", "--until-end"],
        &ns,
    );
    assert!(sink.wait(Duration::from_secs(120)), "sink failed");
    assert_eq!(sink.summary()["deadletters"].as_u64(), Some(4));
    let twins = psql(
        &pg,
        &format!("SELECT string_agg(session_id, ',' ORDER BY session_id = 'twin-session') FROM lap_performance_v1 WHERE row_id = '{twin_id}'"),
    );
    assert!(twins.trim().ends_with(",twin-session") && twins.contains(','), "both sessions' rows of {twin_id} stored: {twins}");
    psql(&pg, "DELETE FROM lap_performance_v1 WHERE session_id = 'twin-session'");
    let table = table_rows(&pg, "lap_performance_v1", "row_id");
    assert_eq!(table.len(), good, "every good row written");
    assert!(!table.contains_key("misfit") && !table.contains_key("refused") && !table.contains_key(&long_id));

    let mut dead = records_with_headers(&ns, "pitgun.deadletter.sink.v1", 4);
    let at = dead.iter().position(|(payload, _)| payload.contains(&long_id)).expect("the long key's dead letter");
    let (_, h) = dead.remove(at);
    assert_eq!(h["pitgun-reason"], "refused_by_target");
    assert!(h["pitgun-detail"].contains("54000"), "{h:?}");
    let at = dead.iter().position(|(payload, _)| huge.starts_with(payload.as_str())).expect("the huge row's dead letter");
    let (payload, h) = dead.remove(at);
    assert_eq!((payload.len(), h.get("pitgun-payload-bytes")), (900 << 10, Some(&huge.len().to_string())), "cut to 900 KiB: {h:?}");
    assert_eq!(h["pitgun-reason"], "invalid_row");
    dead.sort_by(|a, b| a.1["pitgun-reason"].cmp(&b.1["pitgun-reason"]));
    let (payload, h) = &dead[0];
    assert_eq!(h["pitgun-reason"], "invalid_row");
    assert_eq!(h["pitgun-stage"], "sink");
    assert!(h["pitgun-detail"].contains("column \"lap\": expected bigint"), "{h:?}");
    assert!(payload.contains("\"misfit\""));
    let (payload, h) = &dead[1];
    assert_eq!(h["pitgun-reason"], "refused_by_target");
    assert!(h["pitgun-detail"].contains("postgres:lap_performance_v1") && h["pitgun-detail"].contains("22021"), "{h:?}");
    assert!(payload.contains("\"refused\""));
    assert!(h["pitgun-origin"].starts_with(&ns.topic("pitgun.aggregates.lap-performance.v1")));
}

/// A test's own namespace (its lap-performance rows topic made), database, and the rows of one
/// simulated session written as `rows.ndjson` in `dir`, ready for `publish --wire rows`.
struct LapRows {
    ns: Ns,
    pg: String,
    _dir: tempfile::TempDir,
    rows: Vec<Row>,
    file: PathBuf,
}

impl LapRows {
    fn new(name: &str, seed: u64) -> LapRows {
        LapRows::on(Ns::new(&format!("sink-{name}")), name, seed)
    }

    /// The rows on the broker `ns` names.
    fn on(ns: Ns, name: &str, seed: u64) -> LapRows {
        let topic = ns.topic("pitgun.aggregates.lap-performance.v1");
        pitgun_runtime::kafka::Broker::new(ns.brokers.clone(), "").ensure_topics(&[topic], 1, Duration::from_secs(20)).expect("topic");
        let pg = own_database(&format!("sink_{name}"));
        let dir = tempfile::tempdir().unwrap();
        let data = simulate(dir.path(), &format!("{name}.ndjson"), seed, 1, "2m", None);
        let rows = replay_rows(&manifest("lap-performance.v1.yaml"), &data);
        let file = dir.path().join("rows.ndjson");
        std::fs::write(&file, rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect::<String>()).unwrap();
        LapRows { ns, pg, _dir: dir, rows, file }
    }

    fn publish(&self) {
        let out = pitgun(
            &["publish", "--input", self.file.to_str().unwrap(), "--wire", "rows", "--topic", "pitgun.aggregates.lap-performance.v1"],
            &self.ns,
        );
        assert!(out.status.success(), "publish: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `pitgun sink` of lap-performance into PostgreSQL alone, with `extra` arguments.
    fn sink(&self, extra: &[&str]) -> Service {
        let mut args = vec!["sink", "--manifest", "manifests/pipelines/lap-performance.v1.yaml", "--postgres", &self.pg, "--targets", "postgres"];
        args.extend_from_slice(extra);
        Service::start("sink", &args, &self.ns)
    }
}

/// A psql session that takes an exclusive lock on the lap table and holds it until `COMMIT;`
/// is written to the stdin returned with it.
fn lock_laps(pg: &str) -> (std::process::Child, std::process::ChildStdin) {
    use std::io::Write as _;
    let mut locker = std::process::Command::new(psql_bin())
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", pg])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    let mut hold = locker.stdin.take().unwrap();
    writeln!(hold, "BEGIN; LOCK TABLE lap_performance_v1 IN ACCESS EXCLUSIVE MODE;").unwrap();
    (locker, hold)
}

/// SIGTERM stops a sink whose target refuses every attempt at the batch in hand (a table
/// changed by hand, so every write fails with an error worth retrying): it waited for the batch
/// forever, and neither SIGTERM nor SIGINT stopped it. The batch is not committed: its rows are
/// read again on the next start.
#[test]
fn sigterm_stops_a_sink_retrying_a_batch_its_target_refuses() {
    let lap = LapRows::new("stuck", 15);
    let LapRows { pg, rows, .. } = &lap;
    // Changed once the sink has started (one changed before is refused at start).
    let mut stuck = lap.sink(&["--max-backoff", "500ms"]);
    stuck.wait_for_log("sink started", Duration::from_secs(60));
    psql(pg, "ALTER TABLE lap_performance_v1 RENAME COLUMN player TO driver");
    lap.publish();
    stuck.wait_for_log("write failed", Duration::from_secs(60));
    stuck.sigterm();
    assert!(stuck.wait(Duration::from_secs(20)), "the sink did not stop on SIGTERM");
    assert!(stuck.log_count("not committed") > 0, "it says the batch in hand was not committed");
    psql(pg, "ALTER TABLE lap_performance_v1 RENAME COLUMN driver TO player");
    let mut after = lap.sink(&["--until-end"]);
    assert!(after.wait(Duration::from_secs(60)), "the next run failed");
    assert_eq!(table_rows(pg, "lap_performance_v1", "row_id").len(), rows.len(), "the batch not committed is read again");
}

/// SIGTERM stops a sink whose write hangs rather than fails: another session holds a lock on the
/// table, and the write waits for it without end. The write in progress has --drain-timeout to
/// finish; then it is given up, its query cancelled on the server (it no longer waits in the
/// lock's queue, where it held up whoever came after it), and the batch not committed: its rows
/// are read again on the next start. Before, the sink waited for the lock as long as it was held.
/// A consumer joins the sink's group meanwhile, so the stop comes while the sink's revocation
/// waits for that write (it holds the sink's loop, which once alone heard signals).
#[test]
fn sigterm_stops_a_sink_whose_write_waits_for_a_lock() {
    let lap = LapRows::new("lock", 16);
    let LapRows { ns, pg, rows, .. } = &lap;
    // One batch of every row, then a long linger: the loop gathers the next batch (polling the
    // consumer, where a rebalance arrives) for two minutes after the write begins, rather than
    // waiting for that write.
    let batch = rows.len().to_string();
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut waiting = lap.sink(&["--drain-timeout", "2s", "--batch-rows", &batch, "--linger", "120s", "--metrics-listen", &metrics]);
    let started = waiting.wait_for_log("sink started", Duration::from_secs(60));
    let group = started.split("group=").nth(1).and_then(|g| g.split_whitespace().next()).expect("the group in the log").to_string();
    // The lock, held by a session that stays open until the test ends it.
    let (mut locker, mut hold) = lock_laps(pg);
    use std::io::Write as _;
    let count = |sql: &str| psql(pg, sql).trim().parse::<i64>().unwrap();
    let held = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'lap_performance_v1' AND l.mode = 'AccessExclusiveLock' AND l.granted";
    let blocked = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let until = |what: &str, sql: &str, want: fn(i64) -> bool| {
        let end = std::time::Instant::now() + Duration::from_secs(60);
        while !want(count(sql)) {
            assert!(std::time::Instant::now() < end, "{what} within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until("the lock is held", held, |n| n == 1);
    let handed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    lap.publish();
    until("the sink's write waits for the lock", blocked, |n| n >= 1);
    // A write that hangs raises no error and so no retry: the age of the batch in the targets'
    // hands is what PitgunSinkStuck sees.
    let since = metric(&http_get(&metrics, "/metrics"), "pitgun_sink_write_started_timestamp_seconds", "");
    assert!((handed - 1.0..=handed + 60.0).contains(&since), "the waiting write started at {since}, the rows were published at {handed}");
    let joiner: rdkafka::consumer::BaseConsumer = ns.config().set("group.id", &group).set("enable.auto.commit", "false").create().unwrap();
    rdkafka::consumer::Consumer::subscribe(&joiner, &[&ns.topic("pitgun.aggregates.lap-performance.v1")]).unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while waiting.log_count("revocation waits for the batch being written") == 0 {
        assert!(std::time::Instant::now() < end, "the sink's revocation did not wait for its write within 60 s");
        let _ = joiner.poll(Duration::from_millis(100));
    }
    let asked = std::time::Instant::now();
    waiting.sigterm();
    assert!(waiting.wait(Duration::from_secs(20)), "the sink did not stop on SIGTERM");
    let took = asked.elapsed();
    assert!(took >= Duration::from_secs(2), "the write had its --drain-timeout ({took:?})");
    assert!(waiting.log_count("not committed") > 0, "it says the batch in hand was not committed");
    drop(joiner);
    until("the cancelled write leaves the lock's queue", blocked, |n| n == 0);
    assert_eq!(count(held), 1, "while the lock is still held");
    writeln!(hold, "COMMIT;").unwrap();
    drop(hold);
    assert!(locker.wait().unwrap().success(), "the locking session ended well");
    assert!(table_rows(pg, "lap_performance_v1", "row_id").is_empty(), "nothing was written under the lock");
    let mut after = lap.sink(&["--until-end"]);
    assert!(after.wait(Duration::from_secs(60)), "the next run failed");
    assert_eq!(table_rows(pg, "lap_performance_v1", "row_id").len(), rows.len(), "the batch not committed is read again");
}

/// A sink stopped while its broker does not answer (a hung broker: connections open, nothing
/// answered) still stops within its --drain-timeout and a few seconds. Its write is held on a
/// lock while the broker is stopped, then let go, so the sink is in its offset commit, which
/// waits on the broker, when SIGTERM comes; the consumer's close waits on it too. Neither may
/// hold the pod past its grace (before, the sink never stopped). What was not committed is read
/// again on the next start, and upserted.
#[test]
fn sigterm_stops_a_sink_whose_broker_hangs_within_its_drain_timeout() {
    use std::io::Write as _;
    let stack = OwnStack::new();
    stack.stack(&["broker", "start"]);
    let ns = Ns { name: Ns::new("sink-hung-broker").name, brokers: stack.brokers() };
    let lap = LapRows::on(ns, "hungbroker", 17);
    let mut sink = lap.sink(&["--drain-timeout", "2s", "--linger", "100ms"]);
    sink.wait_for_log("sink started", Duration::from_secs(60));
    let (mut locker, mut hold) = lock_laps(&lap.pg);
    let blocked = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
    lap.publish();
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while psql(&lap.pg, blocked).trim() != "1" {
        assert!(std::time::Instant::now() < end, "the sink's write did not wait for the lock within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let broker = stack.broker_pid().to_string();
    let signal = |sig: &str| assert!(std::process::Command::new("kill").args([sig, &broker]).status().unwrap().success(), "kill {sig} {broker}");
    /// Lets the broker go on however the test ends, so its stack can be stopped.
    struct Resume(String);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["-CONT", &self.0]).status();
        }
    }
    signal("-STOP");
    let _resume = Resume(broker.clone());
    writeln!(hold, "COMMIT;").unwrap();
    drop(hold);
    assert!(locker.wait().unwrap().success());
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while table_rows(&lap.pg, "lap_performance_v1", "row_id").len() < lap.rows.len() {
        assert!(std::time::Instant::now() < end, "the rows were not written within 30 s of the lock's release");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500)); // into the offset commit
    let asked = std::time::Instant::now();
    sink.sigterm();
    let stopped = sink.wait(Duration::from_secs(40));
    let took = asked.elapsed();
    assert!(stopped, "the sink did not stop within 40 s of SIGTERM with its broker hung");
    assert!(took < Duration::from_secs(8), "the sink took {took:?} to stop with --drain-timeout 2s");
}

/// A row never goes back to an older version. After a rebalance the sink can read a row's
/// older emission after a newer one (the replica that lost the partition wrote its batch late);
/// every emission carries its version in the `pitgun-row-version` header (the input offset
/// it follows), and the table keeps the highest, however the versions arrive.
#[test]
fn an_older_row_version_read_last_does_not_replace_a_newer_one() {
    let ns = Ns::new("sink-version");
    let topic = ns.topic("pitgun.aggregates.lap-performance.v1");
    pitgun_runtime::kafka::Broker::new(ns.brokers.clone(), "")
        .ensure_topics(std::slice::from_ref(&topic), 2, Duration::from_secs(20))
        .expect("topic");
    let pg = own_database("sink_version");
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "version.ndjson", 15, 2, "4m", None);
    let rows = replay_rows(&manifest("lap-performance.v1.yaml"), &data);
    let (a, b) = (rows[0].clone(), rows[1].clone());
    let older = |row: &Row| {
        let mut r = row.clone();
        r.insert("samples".into(), serde_json::json!(r["samples"].as_i64().unwrap() - 7));
        r
    };
    // Row a: newer, then older. Row b: older, then newer. Then an unversioned copy of each
    // (as written before versions existed), which replaces neither.
    let sends: Vec<(Row, Option<i64>)> = vec![(a.clone(), Some(900)), (older(&a), Some(400)), (older(&b), Some(500)), (b.clone(), Some(800))];
    let unversioned = vec![(older(&a), None), (older(&b), None)];
    for (row, version) in sends.iter().chain(&unversioned) {
        let payload = serde_json::to_string(row).unwrap();
        let key = row["row_id"].as_str().unwrap();
        let text = version.map(|v| v.to_string());
        // Before the version, a header whose name is not UTF-8 (any producer can send one):
        // read past, where it once made the sink panic.
        let headers: Vec<(&[u8], &[u8])> =
            text.iter().flat_map(|t| [(&b"\xffnot-utf8"[..], &b"x"[..]), (b"pitgun-row-version", t.as_bytes())]).collect();
        ns.produce_with_byte_header_names(&topic, key.as_bytes(), payload.as_bytes(), &headers);
    }
    let mut sink = Service::start(
        "sink",
        // One record per batch: PostgreSQL's upsert decides, not the batch.
        &[
            "sink",
            "--manifest",
            "manifests/pipelines/lap-performance.v1.yaml",
            "--postgres",
            &pg,
            "--targets",
            "postgres",
            "--until-end",
            "--batch-rows",
            "1",
        ],
        &ns,
    );
    assert!(sink.wait(Duration::from_secs(120)), "sink failed");
    let table = table_rows(&pg, "lap_performance_v1", "row_id");
    for (row, what) in [(&a, "newer first"), (&b, "older first")] {
        let got = &table[row["row_id"].as_str().unwrap()];
        assert_eq!(got["samples"], row["samples"], "{what}: the table holds {} samples, the newest version {}", got["samples"], row["samples"]);
    }
}

/// Two versions of a manifest whose outputs name one QuestDB table are refused at start, naming
/// the table and both versions: their rows (distinct row ids) would pile up in one table.
#[test]
fn two_manifest_versions_naming_one_questdb_table_are_refused() {
    let ns = Ns::new("sink-shared-questdb");
    let dir = tempfile::tempdir().unwrap();
    let v1 = root().join("manifests/pipelines/lap-performance.v1.yaml");
    let v2 = dir.path().join("lap-performance.v2.yaml");
    let text = std::fs::read_to_string(&v1).unwrap().replacen("version: 1\n", "version: 2\n", 1);
    std::fs::write(&v2, text.replace("pitgun.aggregates.lap-performance.v1", "pitgun.aggregates.lap-performance.v2")).unwrap();
    for version in [1, 2] {
        ns.create_topic(&format!("pitgun.aggregates.lap-performance.v{version}"), 1);
    }
    let questdb = common::questdb_standin::QuestDbStandIn::start();
    let conf = questdb.conf();
    let dictionary = root().join("manifests/dictionary/racing.yaml");
    let (v1, v2, dictionary) = (v1.to_str().unwrap(), v2.to_str().unwrap(), dictionary.to_str().unwrap());
    let args = ["sink", "--manifest", v1, "--manifest", v2, "--dictionary", dictionary, "--targets", "questdb", "--questdb", &conf, "--until-end"];
    let out = pitgun(&args, &ns);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "two versions writing one QuestDB table were accepted: {stderr}");
    assert!(
        stderr.contains("QuestDB table \"lap_performance_v1\"") && stderr.contains("lap-performance v1") && stderr.contains("lap-performance v2"),
        "{stderr}"
    );
}
