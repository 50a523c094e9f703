//! What operators do to a running deployment, in one run against the real broker and
//! PostgreSQL: a group of three processor replicas with static ids scaled 3 → 2 → 3, one killed
//! during a backfill, the whole group stopped for longer than `idle_timeout`, one of two sinks
//! stopped, and part of the sessions sent with `pitgun publish` instead of the gateway. At the
//! end the aggregates topic, PostgreSQL and the QuestDB stand-in equal replay of the exported
//! envelopes topic, and `runs` holds one row per session.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const LAPS: &str = "pitgun.aggregates.lap-performance.v1";

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| l.to_string()).collect()
}

/// A processor replica of lap-performance (with a 10 s idle timeout: longer than any pause the steps below make while it runs, shorter than the downtime) under a static id.
struct Replica {
    id: &'static str,
    state: PathBuf,
    metrics: String,
    service: Option<Service>,
    /// Partitions this replica took from the changelog, and rebuilt although the group had
    /// committed them (the changelog failed to give their state), over all its runs.
    from_changelog: usize,
    rebuilt_committed: usize,
}

impl Replica {
    fn start(&mut self, manifest: &str, ns: &Ns) {
        let state = self.state.to_str().unwrap().to_string();
        let args = [
            "process",
            "--manifest",
            manifest,
            "--dictionary",
            "manifests/dictionary/racing.yaml",
            "--state-dir",
            &state,
            "--threads",
            "2",
            "--checkpoint-interval",
            "200ms",
            "--group-session-timeout",
            "6s",
            "--instance-id",
            self.id,
            "--metrics-listen",
            &self.metrics,
        ];
        let s = Service::start(self.id, &args, ns);
        s.wait_for_log("processor started", Duration::from_secs(60));
        self.service = Some(s);
    }

    fn stop(&mut self) {
        let mut s = self.service.take().expect("running");
        s.sigterm();
        assert!(s.wait(Duration::from_secs(60)), "{} did not stop cleanly", self.id);
        self.tally(&s);
    }

    fn kill(&mut self) {
        let mut s = self.service.take().expect("running");
        s.sigkill();
        self.tally(&s);
    }

    fn tally(&mut self, s: &Service) {
        self.from_changelog += s.log_count("restored from the changelog");
        self.rebuilt_committed += s.log_count("emit_from=Some(");
    }
}

#[test]
fn operations_end_with_every_table_equal_to_replay() {
    let seed = seed("operations");
    let ns = Ns::new("operations");
    ns.create_topics(4);
    let pg = own_database("operations");
    let dir = tempfile::tempdir().unwrap();
    let sessions = 12;
    let data = simulate(dir.path(), "ops.ndjson", seed, sessions, "3m", Some("duplicates=0.01,reorder_within=0.01"));
    let all = lines(&data);
    let session_of = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["session_id"].as_str().unwrap().to_string();
    let mut ids: Vec<String> = all.iter().map(|l| session_of(l)).collect();
    ids.sort();
    ids.dedup();
    // Every other session's middle third is a backfill through `pitgun publish`.
    let by_publish: Vec<&String> = ids.iter().step_by(2).collect();
    let third = all.len() / 3;
    let (one, rest) = all.split_at(third);
    let (two, three) = rest.split_at(third);
    let (two_published, two_posted): (Vec<&String>, Vec<&String>) = two.iter().partition(|l| by_publish.contains(&&session_of(l)));
    let backfill = dir.path().join("backfill.ndjson");
    std::fs::write(&backfill, two_published.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();

    let text = std::fs::read_to_string(root().join("manifests/pipelines/lap-performance.v1.yaml")).unwrap();
    assert!(text.contains("idle_timeout: 10m"), "the manifest's idle timeout changed; update this test");
    let lap_manifest = dir.path().join("lap-performance.v1.yaml");
    std::fs::write(&lap_manifest, text.replace("idle_timeout: 10m", "idle_timeout: 10s")).unwrap();
    let lap_s = lap_manifest.to_str().unwrap().to_string();

    let (_gateway, url, api_keys) = start_gateway(&ns, dir.path());
    let keys = std::fs::read_to_string(&api_keys).unwrap();
    let mut replicas: Vec<Replica> = ["r0", "r1", "r2"]
        .into_iter()
        .map(|id| Replica {
            id,
            state: dir.path().join(id),
            metrics: format!("127.0.0.1:{}", free_port()),
            service: None,
            from_changelog: 0,
            rebuilt_committed: 0,
        })
        .collect();
    for r in &mut replicas {
        r.start(&lap_s, &ns);
    }
    // session-summary's rows (for `runs`), from a group of its own.
    let summary_manifest = root().join("manifests/pipelines/session-summary.v1.yaml");
    let summary_state = dir.path().join("summary-state");
    let summary = Service::start(
        "summary",
        &["process", "--manifest", summary_manifest.to_str().unwrap(), "--state-dir", summary_state.to_str().unwrap(), "--threads", "2"],
        &ns,
    );
    summary.wait_for_log("processor started", Duration::from_secs(60));
    let questdb = common::questdb_standin::QuestDbStandIn::start();
    let conf = questdb.conf();
    let sink_args = [
        "sink",
        "--manifest",
        lap_s.as_str(),
        "--manifest",
        "manifests/pipelines/session-summary.v1.yaml",
        "--dictionary",
        "manifests/dictionary/racing.yaml",
        "--postgres",
        &pg,
        "--questdb",
        &conf,
    ];
    let mut sink_a = Service::start("sink-a", &sink_args, &ns);
    let sink_b = Service::start("sink-b", &sink_args, &ns);
    sink_a.wait_for_log("sink started", Duration::from_secs(60));
    sink_b.wait_for_log("sink started", Duration::from_secs(60));

    // First third through the gateway, to three replicas; then scale to two.
    post(&url, &keys, &one.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_secs(2));
    replicas[2].stop();
    eprintln!("scaled 3 -> 2");

    // Second third: half through the gateway, half a backfill with `pitgun publish`, during
    // which r1 is killed; one sink stops for good.
    post(&url, &keys, &two_posted.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let backfill_s = backfill.to_str().unwrap().to_string();
    let mut publish = Service::start("publish", &["publish", "--input", &backfill_s], &ns);
    std::thread::sleep(Duration::from_millis(300));
    replicas[1].kill();
    eprintln!("r1 killed during the backfill");
    assert!(publish.wait(Duration::from_secs(120)), "publish failed");
    sink_a.sigterm();
    assert!(sink_a.wait(Duration::from_secs(60)), "sink a did not stop cleanly");
    replicas[1].start(&lap_s, &ns);
    replicas[2].start(&lap_s, &ns);
    eprintln!("scaled back to 3; sink a stopped");
    std::thread::sleep(Duration::from_secs(1));

    // The whole group down for longer than the idle timeout, then back; the last third follows.
    for r in &mut replicas {
        r.stop();
    }
    std::thread::sleep(Duration::from_secs(15));
    for r in &mut replicas {
        r.start(&lap_s, &ns);
    }
    eprintln!("group back after 15 s down");
    post(&url, &keys, &three.iter().map(|s| s.as_str()).collect::<Vec<_>>());

    // Replay of what the envelopes topic holds.
    let exported = dir.path().join("exported.avro");
    let out = pitgun(&["export", "--output", exported.to_str().unwrap()], &ns);
    assert!(out.status.success(), "export: {}", String::from_utf8_lossy(&out.stderr));
    let dictionary = root().join("manifests/dictionary/racing.yaml");
    let expected = replay(&lap_manifest, Some(&dictionary), &exported, &[]);
    let expected_rows: Vec<Row> = expected.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summaries: Vec<Row> = replay(&summary_manifest, None, &exported, &[]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(summaries.len(), sessions as usize, "replay: one summary per session");

    // Every session ends: the live group closes them all and emits replay's rows.
    let deadline = Instant::now() + Duration::from_secs(180);
    while let Err(e) = rows_equal_replay(&ns.latest_rows(LAPS), &expected) {
        assert!(Instant::now() < deadline, "aggregates topic after the operations: {e}");
        std::thread::sleep(Duration::from_millis(500));
    }
    for r in &mut replicas {
        r.stop();
    }
    // Every partition that moved after the group's first commit came from the changelog.
    let (from_changelog, rebuilt): (usize, usize) =
        replicas.iter().map(|r| (r.from_changelog, r.rebuilt_committed)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    eprintln!("partitions restored from the changelog: {from_changelog}; rebuilt after a commit: {rebuilt}");
    assert!(from_changelog > 0, "no partition moved through the changelog");
    assert_eq!(rebuilt, 0, "partitions the group had committed were rebuilt from the input");
    let closed_late: usize = ns.all_records("pitgun.late.lap-performance.v1").iter().filter(|l| l.contains("session_closed")).count();
    assert_eq!(closed_late, 0, "events went to the late topic as session_closed");
    // The remaining sink fills both targets.
    let laps: Vec<(String, Row)> = expected_rows.iter().map(|r| (r["row_id"].as_str().unwrap().to_string(), r.clone())).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let count = |t: &str| psql(&pg, &format!("SELECT count(*) FROM {t}")).trim().parse::<usize>().unwrap();
    while count("lap_performance_v1") < laps.len() || count("runs") < sessions as usize || questdb.rows("lap_performance_v1").len() < laps.len() {
        assert!(Instant::now() < deadline, "the sink did not fill the tables within 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Rows still in flight settle (a newer version may follow an older one).
    std::thread::sleep(Duration::from_secs(2));
    assert_table_equals(&table_rows(&pg, "lap_performance_v1", "row_id"), &laps, "PostgreSQL lap_performance_v1");
    assert_table_equals(&table_rows(&pg, "runs", "session_id"), &expected_runs(&summaries), "runs");
    let in_questdb: HashMap<String, Row> =
        questdb.rows("lap_performance_v1").into_iter().map(|r| (r["row_id"].as_str().unwrap().to_string(), r)).collect();
    assert_eq!(in_questdb.len(), questdb.rows("lap_performance_v1").len(), "a row_id twice in QuestDB");
    assert_table_equals(&in_questdb, &laps, "QuestDB lap_performance_v1");
}
