//! The live path against the real broker `scripts/test.sh` starts: the stream through the
//! gateway equals replay, crash safety, replicas, versions side by side, dead letters and
//! metrics. Every test has its own namespace.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn manifest(name: &str) -> PathBuf {
    root().join("manifests/pipelines").join(name)
}

fn dictionary() -> PathBuf {
    root().join("manifests/dictionary/racing.yaml")
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| l.to_string()).collect()
}

/// Every test runs two engine threads, whatever the machine's core count, so the parallel
/// path (partitions fed by different threads) is what the assertions hold.
fn process_args<'a>(manifest: &'a str, state: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["process", "--manifest", manifest, "--dictionary", "manifests/dictionary/racing.yaml", "--state-dir", state, "--threads", "2"];
    v.extend_from_slice(extra);
    v
}

/// A simulated dataset posted through the gateway over several connections, processed with
/// `--until-end`: the rows on the aggregates topic (last version per row_id, in replay's order)
/// are byte-identical to `pitgun replay` over the same dataset — and replay over `pitgun export`
/// of the envelopes topic gives the same bytes again.
#[test]
fn stream_through_the_gateway_equals_replay_and_export() {
    let ns = Ns::new("stream");
    ns.create_topics(4);
    let dir = tempfile::tempdir().unwrap();
    let (gw, url, api_keys_file) = start_gateway(&ns, dir.path());

    // One command writes the dataset and posts the same envelopes over 4 connections.
    let data = dir.path().join("stream.ndjson");
    let out = pitgun(
        &[
            "simulate",
            "--quiet",
            "--seed",
            "5",
            "--sessions",
            "12",
            "--duration",
            "4m",
            "--faults",
            "duplicates=0.01,reorder_within=0.01,late_within_lateness=0.002",
            "--output",
            data.to_str().unwrap(),
            "--target",
            &url,
            "--api-keys",
            api_keys_file.to_str().unwrap(),
            "--concurrency",
            "4",
            "--batch",
            "500",
        ],
        &ns,
    );
    assert!(out.status.success(), "simulate --target: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));

    let m = manifest("lap-performance.v1.yaml");
    let expected = replay(&m, None, &data, &[]);
    let state = dir.path().join("state");
    let mut p = Service::start("process", &process_args(m.to_str().unwrap(), state.to_str().unwrap(), &["--until-end"]), &ns);
    assert!(p.wait(Duration::from_secs(240)), "processor failed");
    let latest = ns.latest_rows("pitgun.aggregates.lap-performance.v1");
    assert_rows_equal_replay(&latest, &expected, "stream through the gateway");

    let export = dir.path().join("export.avro");
    let out = pitgun(&["export", "--output", export.to_str().unwrap()], &ns);
    assert!(out.status.success(), "export: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(replay(&m, None, &export, &[]), expected, "replay of the exported topic differs");
    drop(gw);
}

/// Killed with SIGKILL three times at random points mid-stream, restarted each time: every
/// restart resumes saved state (its local checkpoint, or — when the kill fell between the state
/// write and the offset commit, so the local checkpoint is ahead of the group — the changelog's
/// state at the committed offset), rows are emitted more than once before deduplication, and the
/// final rows (last version per row_id) still equal replay.
/// A lone replica's own state is always its own: the changelog never shows another writer at
/// the committed offset, and a local checkpoint is discarded only when it is not at that offset
/// (the kill fell between the state write and the commit).
fn assert_own_state_resumed(p: &Service) {
    assert_eq!(p.log_count("another replica wrote the state"), 0, "{}: a lone replica took its own checkpoint for another's", p.name);
    for line in p.log.lock().unwrap().iter().filter(|l| l.contains("local checkpoint is not the group's state")) {
        let field = |k: &str| line.split(&format!(" {k}=")).nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default().to_string();
        let (local, committed) = (field("local"), field("committed"));
        assert_ne!(format!("Some({local})"), committed, "{}: discarded a local checkpoint at the committed offset: {line}", p.name);
    }
}

#[test]
fn crash_safety_sigkill_three_times_then_rows_equal_replay() {
    let ns = Ns::new("crash");
    ns.create_topics(4);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "crash.ndjson", 7, 48, "10m", Some("duplicates=0.01,reorder_within=0.01"));
    let produced = ns.produce_lines(lines(&data).iter().map(|s| s.as_str()));
    eprintln!("produced {produced} envelopes");

    let m = manifest("client-health.v1.yaml");
    let expected = replay(&m, None, &data, &[]);
    let changelog = replay(&m, None, &data, &["--changelog"]).lines().count();
    let state = dir.path().join("state");
    let state_s = state.to_str().unwrap().to_string();
    let m_s = m.to_str().unwrap().to_string();

    let seed = seed("crash_safety");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut kills = 0;
    let mut restored_runs = 0;
    for run in 0..3 {
        let args = process_args(&m_s, &state_s, &["--until-end", "--checkpoint-interval", "100ms"]);
        let mut p = Service::start(&format!("run{run}"), &args, &ns);
        p.wait_for_log("checkpoint written", Duration::from_secs(60));
        let wait_ms = rng.random_range(50..400);
        eprintln!("run {run}: SIGKILL {wait_ms} ms after its first checkpoint");
        std::thread::sleep(Duration::from_millis(wait_ms));
        assert!(p.child.try_wait().unwrap().is_none(), "run {run} finished before it could be killed: make the dataset larger");
        p.sigkill();
        kills += 1;
        assert_own_state_resumed(&p);
        let restored = p.log_count("restored checkpoint") + p.log_count("restored from the changelog");
        let rebuilt = p.log_count("rebuilding from the earliest");
        eprintln!("run {run}: {restored} partitions restored, {rebuilt} rebuilt");
        if restored > 0 {
            restored_runs += 1;
        }
    }
    let mut last = Service::start("final", &process_args(&m_s, &state_s, &["--until-end", "--checkpoint-interval", "100ms"]), &ns);
    assert!(last.wait(Duration::from_secs(240)), "final run failed");
    assert_own_state_resumed(&last);
    let summary = last.summary();
    eprintln!("final run: {summary}");
    let resumed = summary["restored_partitions"].as_u64().unwrap() + summary["changelog_restored_partitions"].as_u64().unwrap();
    assert!(resumed > 0, "the final run resumed no saved state: {summary}");
    assert_eq!(summary["rebuilt_partitions"], 0, "the final run read a partition again from its start: {summary}");
    restored_runs += 1;
    assert_eq!(kills, 3);
    assert!(restored_runs >= 3, "only {restored_runs} runs restored a checkpoint");

    let all = ns.all_records("pitgun.aggregates.client-health.v1");
    eprintln!("{} rows on the topic, {changelog} emissions in an uninterrupted replay", all.len());
    assert!(all.len() > changelog, "no row was emitted twice: the recovery path did not run");
    let latest = ns.latest_rows("pitgun.aggregates.client-health.v1");
    assert_rows_equal_replay(&latest, &expected, "after three SIGKILLs");
}

/// Two processors in one group share the partitions; one is killed for good; the other takes
/// its partitions over (rebuilding them from the earliest offset) and the rows equal replay.
#[test]
fn two_replicas_one_killed_survivor_takes_over() {
    let ns = Ns::new("replicas");
    ns.create_topics(4);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "replicas.ndjson", 11, 16, "4m", None);
    ns.produce_lines(lines(&data).iter().map(|s| s.as_str()));
    let m = manifest("lap-performance.v1.yaml");
    let expected = replay(&m, None, &data, &[]);
    let m_s = m.to_str().unwrap().to_string();
    let (sa, sb) = (dir.path().join("a"), dir.path().join("b"));
    let (sa, sb) = (sa.to_str().unwrap().to_string(), sb.to_str().unwrap().to_string());
    let extra = ["--checkpoint-interval", "200ms", "--group-session-timeout", "6s"];

    let a = Service::start("a", &process_args(&m_s, &sa, &extra), &ns);
    a.wait_for_log("partition", Duration::from_secs(60));
    let mut b = Service::start("b", &process_args(&m_s, &sb, &extra), &ns);
    b.wait_for_log("partition", Duration::from_secs(60));
    // Both own partitions now (B only gets some after a rebalance that revokes A's first).
    let started = Instant::now();
    while a.log_count("partition revoked") == 0 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(a.log_count("partition revoked") > 0, "A never gave partitions to B");
    b.sigkill();
    eprintln!("B killed for good");

    // A must take B's partitions over and finish every session.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let latest = ns.latest_rows("pitgun.aggregates.lap-performance.v1");
        if latest.len() == expected.lines().count() {
            assert_rows_equal_replay(&latest, &expected, "survivor");
            break;
        }
        assert!(Instant::now() < deadline, "survivor did not produce every row in time ({} of {})", latest.len(), expected.lines().count());
        std::thread::sleep(Duration::from_millis(500));
    }
    let took = a.log_count("rebuilding from the earliest offset") + a.log_count("restored checkpoint") + a.log_count("restored from the changelog");
    assert!(took > 4, "A did not take partitions over");
}

/// Version 1 and version 2 of a manifest run as two groups over the same topic; each writes its
/// own rows; stopping version 1 mid-stream does not disturb version 2.
#[test]
fn two_versions_side_by_side() {
    let ns = Ns::new("versions");
    ns.create_topics(4);
    let dir = tempfile::tempdir().unwrap();
    let v1 = manifest("client-health.v1.yaml");
    let v2 = dir.path().join("client-health.v2.yaml");
    let text = std::fs::read_to_string(&v1).unwrap();
    let text = text
        .replacen("version: 1\n", "version: 2\n", 1)
        .replace("size: 10s", "size: 5s")
        .replace("pitgun.aggregates.client-health.v1", "pitgun.aggregates.client-health.v2");
    std::fs::write(&v2, text).unwrap();
    let data = simulate(dir.path(), "versions.ndjson", 13, 16, "4m", None);
    ns.produce_lines(lines(&data).iter().map(|s| s.as_str()));
    let dict = dictionary();
    let exp1 = replay(&v1, Some(&dict), &data, &[]);
    let exp2 = replay(&v2, Some(&dict), &data, &[]);
    assert_ne!(exp1, exp2);

    let (s1, s2) = (dir.path().join("v1"), dir.path().join("v2"));
    let (s1, s2) = (s1.to_str().unwrap().to_string(), s2.to_str().unwrap().to_string());
    let (v1s, v2s) = (v1.to_str().unwrap().to_string(), v2.to_str().unwrap().to_string());
    let mut p1 = Service::start("v1", &process_args(&v1s, &s1, &["--until-end", "--checkpoint-interval", "200ms"]), &ns);
    let mut p2 = Service::start("v2", &process_args(&v2s, &s2, &["--until-end", "--checkpoint-interval", "200ms"]), &ns);
    p1.wait_for_log("partition", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    p1.sigterm();
    assert!(p1.wait(Duration::from_secs(60)), "v1 did not stop cleanly on SIGTERM");
    assert!(p1.log_count("final checkpoint written") > 0);
    assert!(p2.wait(Duration::from_secs(240)), "v2 failed");
    assert_rows_equal_replay(&ns.latest_rows("pitgun.aggregates.client-health.v2"), &exp2, "version 2");

    // Version 1 resumes from its checkpoint and completes on its own topic.
    let mut p1 = Service::start("v1-again", &process_args(&v1s, &s1, &["--until-end"]), &ns);
    assert!(p1.wait(Duration::from_secs(240)), "v1 restart failed");
    assert!(p1.log_count("restored checkpoint") > 0);
    assert_rows_equal_replay(&ns.latest_rows("pitgun.aggregates.client-health.v1"), &exp1, "version 1");
}

/// Bad records go to the dead-letter topic with the reason, the consumer goes on, and the
/// metrics move by exactly the expected amounts.
#[test]
fn dead_letters_and_metrics() {
    let ns = Ns::new("metrics");
    ns.create_topics(2);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "m.ndjson", 17, 3, "90s", None);
    let good = lines(&data);
    // 5 exact copies right after their originals (resent events), then 2 broken JSON, 1 not an
    // envelope, 1 with a bad producer version.
    let mut records: Vec<String> = Vec::new();
    for (i, line) in good.iter().enumerate() {
        records.push(line.clone());
        if (100..135).contains(&i) && (i - 100) % 7 == 0 {
            records.push(line.clone());
        }
    }
    records.push("{\"schema\": \"pitgun-envelope/v1\", \"event_id\": ".into());
    records.push("{not json".into());
    records.push("{\"hello\": 1}".into());
    let mut foreign: serde_json::Value = serde_json::from_str(&good[50]).unwrap();
    foreign["source"]["version"] = "nobody-knows-me".into();
    foreign["event_id"] = "foreign-1".into();
    records.push(foreign.to_string());
    // Accepted, but nothing of them reaches a metric: three samples of one session (so one
    // partition) from a producer version the dictionary has no aliases for (all their channels
    // unknown: the channels of a kind the manifest does not take are not looked at), and a
    // channel no alias names.
    let field = |line: &str, name: &str| serde_json::from_str::<serde_json::Value>(line).unwrap()[name].clone();
    let same_session = |l: &&String| field(l, "session_id") == field(&good[60], "session_id") && field(l, "kind") == "sample";
    let mut unknown_in_uncovered = 0.0;
    for (i, line) in good[60..].iter().filter(same_session).take(3).enumerate() {
        let mut uncovered: serde_json::Value = serde_json::from_str(line).unwrap();
        uncovered["source"]["version"] = "3.0.0".into();
        uncovered["event_id"] = format!("uncovered-{i}").into();
        unknown_in_uncovered += uncovered["channels"].as_object().unwrap().len() as f64;
        records.push(uncovered.to_string());
    }
    let mut stray: serde_json::Value = serde_json::from_str(&good[70]).unwrap();
    stray["channels"]["mystery_gauge"] = 1.0.into();
    stray["event_id"] = "stray-channel-1".into();
    records.push(stray.to_string());
    ns.produce_lines(records.iter().map(|s| s.as_str()));

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let state = dir.path().join("s");
    let p = Service::start(
        "metrics",
        &process_args(
            root().join("manifests/pipelines/lap-performance.v1.yaml").to_str().unwrap(),
            state.to_str().unwrap(),
            &["--metrics-listen", &addr],
        ),
        &ns,
    );
    let total = records.len() as f64;
    let deadline = Instant::now() + Duration::from_secs(90);
    let text = loop {
        std::thread::sleep(Duration::from_millis(300));
        let t = http_get(&addr, "/metrics");
        // Windows are emitted as sessions end: out_of_orderness of the processor's clock after
        // their last event, at a checkpoint.
        if metric(&t, "pitgun_processor_events_in_total", "") >= total
            && metric(&t, "pitgun_processor_checkpoints_total", "") >= 2.0
            && metric(&t, "pitgun_processor_windows_emitted_total", "") > 0.0
        {
            break t;
        }
        assert!(Instant::now() < deadline, "processor did not consume {total} records in time:\n{t}");
    };
    assert_eq!(metric(&text, "pitgun_processor_events_in_total", ""), total);
    assert_eq!(metric(&text, "pitgun_processor_duplicates_total", ""), 5.0);
    assert_eq!(metric(&text, "pitgun_processor_deadletters_total", ""), 4.0);
    assert_eq!(metric(&text, "pitgun_processor_rejected_total", "invalid_envelope"), 4.0, "{text}");
    assert_eq!(metric(&text, "pitgun_processor_uncovered_sources_total", ""), 3.0, "{text}");
    assert_eq!(metric(&text, "pitgun_processor_unknown_channels_total", ""), unknown_in_uncovered + 1.0, "{text}");
    assert!(metric(&text, "pitgun_processor_windows_emitted_total", "") > 0.0);
    assert!(metric(&text, "pitgun_processor_checkpoint_duration_seconds_count", "") >= 2.0);
    assert_eq!(metric(&text, "pitgun_processor_consumer_lag", ""), 0.0);
    assert!(metric(&text, "pitgun_processor_state_size_bytes", "") > 0.0);
    let (rss, peak) = (metric(&text, "process_resident_memory_bytes", ""), metric(&text, "process_resident_memory_peak_bytes", ""));
    assert!(rss > 1e6 && peak >= rss, "resident {rss}, peak {peak}");
    assert_promtool_metrics(&text, "processor");
    assert_eq!(http_get(&addr, "/readyz").trim(), "ready");

    let dead = ns.all_records("pitgun.deadletter.process.v1");
    assert_eq!(dead.len(), 4, "{dead:?}");
    assert!(dead.iter().any(|d| d.contains("nobody-knows-me")));
    // Said once for the partition, not once per event (the log is read by another thread).
    let said = || p.log_count("producer version the dictionary has no aliases for");
    let deadline = Instant::now() + Duration::from_secs(10);
    while said() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(said(), 1);
    drop(p);
}

/// Waits until the processor serving `/metrics` at `addr` holds no open session.
fn wait_no_open_session(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&http_get(addr, "/metrics"), "pitgun_processor_sessions_open", "") > 0.0 {
        assert!(Instant::now() < deadline, "{what} did not close in time");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A copy of lap-performance in `dir` whose `idle_timeout` is `idle`.
fn lap_performance_idle(dir: &std::path::Path, idle: &str) -> PathBuf {
    let text = std::fs::read_to_string(manifest("lap-performance.v1.yaml")).unwrap();
    assert!(text.contains("idle_timeout: 10m"), "the manifest's idle timeout changed; update this helper");
    let m = dir.join("lap-performance.v1.yaml");
    std::fs::write(&m, text.replace("idle_timeout: 10m", &format!("idle_timeout: {idle}"))).unwrap();
    m
}

/// Waits until the processor serving `/metrics` at `addr` has taken `records` records in and
/// written a checkpoint after that (so a SIGTERM then loses nothing it has read).
fn wait_consumed(addr: &str, records: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen_at: Option<f64> = None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let t = http_get(addr, "/metrics");
        let checkpoints = metric(&t, "pitgun_processor_checkpoints_total", "");
        if metric(&t, "pitgun_processor_events_in_total", "") >= records as f64 {
            match seen_at {
                Some(at) if checkpoints > at => return,
                None => seen_at = Some(checkpoints),
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "{what}: {records} records not consumed in time:\n{t}");
    }
}

/// A group stopped for longer than the manifest's `idle_timeout` and started again: the time it
/// was down is not idleness. Every session open at the stop resumes with the events that
/// follow (none goes to the late topic as `session_closed`), and the rows equal replay of the
/// whole dataset, which has no gap in event time.
#[test]
fn downtime_longer_than_idle_timeout_closes_no_session() {
    let ns = Ns::new("downtime");
    ns.create_topics(2);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "downtime.ndjson", 23, 6, "3m", None);
    let all = lines(&data);
    let (first, second) = all.split_at(all.len() / 2);

    let m = lap_performance_idle(dir.path(), "4s");
    let m_s = m.to_str().unwrap().to_string();
    let expected = replay(&m, Some(&dictionary()), &data, &[]);
    let state = dir.path().join("state");
    let state_s = state.to_str().unwrap().to_string();
    let addr = format!("127.0.0.1:{}", free_port());
    let with_metrics = process_args(&m_s, &state_s, &["--checkpoint-interval", "200ms", "--metrics-listen", &addr]);
    let until_end = process_args(&m_s, &state_s, &["--checkpoint-interval", "200ms", "--until-end"]);

    // Run 1 reads the first half of every session and stops (SIGTERM: final checkpoint).
    ns.produce_lines(first.iter().map(|s| s.as_str()));
    let mut run1 = Service::start("run1", &with_metrics, &ns);
    wait_consumed(&addr, first.len(), "run 1");
    run1.sigterm();
    assert!(run1.wait(Duration::from_secs(30)), "run 1 did not stop cleanly");
    eprintln!("run 1 stopped: {}", run1.summary());

    // Down for three idle timeouts; then run 2 restores and checks idleness a few times
    // before any new record arrives.
    std::thread::sleep(Duration::from_secs(12));
    let mut run2 = Service::start("run2", &with_metrics, &ns);
    run2.wait_for_log("restored checkpoint", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1500));
    ns.produce_lines(second.iter().map(|s| s.as_str()));
    wait_consumed(&addr, second.len(), "run 2");
    run2.sigterm();
    assert!(run2.wait(Duration::from_secs(30)), "run 2 did not stop cleanly");

    // Run 3 finds the end of input and closes what is still open, as replay does.
    let mut run3 = Service::start("run3", &until_end, &ns);
    assert!(run3.wait(Duration::from_secs(120)), "run 3 failed");

    let closed: Vec<String> = ns.all_records("pitgun.late.lap-performance.v1").into_iter().filter(|l| l.contains("session_closed")).collect();
    assert!(closed.is_empty(), "{} events went to the late topic as session_closed, e.g. {}", closed.len(), closed[0]);
    let latest = ns.latest_rows("pitgun.aggregates.lap-performance.v1");
    assert_rows_equal_replay(&latest, &expected, "after a downtime longer than idle_timeout");
}

/// A partition goes back to a replica whose local checkpoint is at the group's committed offset,
/// after another replica wrote a different state at that same offset: with no new input, its
/// idle clock closed the session. The first replica restores the state from the changelog, not
/// its own checkpoint: the session stays closed, and its next event goes to the late topic as
/// `session_closed` instead of continuing it.
#[test]
fn a_local_checkpoint_written_over_at_the_same_offset_is_not_resumed() {
    let ns = Ns::new("aba");
    ns.create_topics(1);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "aba.ndjson", 37, 1, "40s", None);
    let open: Vec<String> = lines(&data).into_iter().filter(|l| !l.contains("\"kind\":\"session_end\"")).collect();
    let (first, next) = open.split_at(open.len() - 1);
    let m = lap_performance_idle(dir.path(), "3s");
    let m_s = m.to_str().unwrap().to_string();
    let (sa, sb) = (dir.path().join("a"), dir.path().join("b"));
    let (sa, sb) = (sa.to_str().unwrap().to_string(), sb.to_str().unwrap().to_string());
    let addr = format!("127.0.0.1:{}", free_port());
    let args = |state: &str| {
        process_args(&m_s, state, &["--checkpoint-interval", "200ms", "--metrics-listen", &addr]).into_iter().map(String::from).collect::<Vec<_>>()
    };
    let start = |name: &str, state: &str| Service::start(name, &args(state).iter().map(|s| s.as_str()).collect::<Vec<_>>(), &ns);
    let stop = |mut s: Service| {
        s.sigterm();
        assert!(s.wait(Duration::from_secs(30)), "{} did not stop cleanly", s.name);
        s
    };

    ns.produce_lines(first.iter().map(|s| s.as_str()));
    let a = start("a", &sa);
    wait_consumed(&addr, first.len(), "a");
    stop(a);
    // B takes the partition from the changelog; idle for its timeout, the session closes.
    let b = start("b", &sb);
    b.wait_for_log("restored from the changelog", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&http_get(&addr, "/metrics"), "pitgun_processor_sessions_closed_total", "idle") < 1.0 {
        assert!(Instant::now() < deadline, "B's idle clock closed no session");
        std::thread::sleep(Duration::from_millis(100));
    }
    let checkpoints = metric(&http_get(&addr, "/metrics"), "pitgun_processor_checkpoints_total", "");
    while metric(&http_get(&addr, "/metrics"), "pitgun_processor_checkpoints_total", "") <= checkpoints {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(b);

    let a2 = start("a2", &sa);
    a2.wait_for_log("restored", Duration::from_secs(60));
    ns.produce_lines(next.iter().map(|s| s.as_str()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let late = ns.all_records("pitgun.late.lap-performance.v1");
        if late.iter().any(|l| l.contains("session_closed")) {
            break;
        }
        assert!(Instant::now() < deadline, "A resumed its own checkpoint: the closed session took its next event (late topic: {late:?})");
        std::thread::sleep(Duration::from_millis(200));
    }
    let a2 = stop(a2);
    assert_eq!(a2.summary()["changelog_restored_partitions"], 1, "A2: {}", a2.summary());
}

/// The changelog topic is deleted and created again under a running processor (an operator
/// resetting it), twice: at once, between two checkpoints (the processor's next marks then land
/// before its earlier ones), and with checkpoints waiting while it is gone (the new topic holds
/// no sequence for the processor's idempotent producer, and librdkafka takes the broker's
/// refusal as fatal to that producer). Neither may stop the processor or leave it writing marks
/// that name a snapshot the topic no longer has: it starts each partition's chain again, from a
/// snapshot, under a new writer (and a new producer), so a replica with no local state restores
/// every partition from the new topic, and the rows equal replay.
#[test]
fn a_changelog_topic_reset_under_the_processor_is_written_again_from_snapshots() {
    let ns = Ns::new("reset");
    ns.create_topics(2);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "reset.ndjson", 41, 8, "2m", None);
    let all = lines(&data);
    let (first, rest) = all.split_at(all.len() / 3);
    let (second, third) = rest.split_at(rest.len() / 2);
    let m = manifest("lap-performance.v1.yaml");
    let m_s = m.to_str().unwrap().to_string();
    let expected = replay(&m, Some(&dictionary()), &data, &[]);
    let (sa, sb) = (dir.path().join("a"), dir.path().join("b"));
    let (sa, sb) = (sa.to_str().unwrap().to_string(), sb.to_str().unwrap().to_string());
    let addr = format!("127.0.0.1:{}", free_port());
    let a_args = process_args(&m_s, &sa, &["--checkpoint-interval", "200ms", "--metrics-listen", &addr]);
    let restarts = |cause: &str| metric(&http_get(&addr, "/metrics"), "pitgun_processor_changelog_restarts_total", cause);

    ns.produce_lines(first.iter().map(|s| s.as_str()));
    let mut a = Service::start("a", &a_args, &ns);
    wait_consumed(&addr, first.len(), "a, first third");
    ns.recreate_topic("pitgun.state.lap-performance.v1", 2, || {});
    ns.produce_lines(second.iter().map(|s| s.as_str()));
    wait_consumed(&addr, first.len() + second.len(), "a, second third");
    let after_first = restarts("topic_reset");
    assert!(after_first >= 1.0, "the first reset was not seen as one (records stored before the chain's last mark)");
    let not_stored = restarts("not_stored");
    ns.recreate_topic("pitgun.state.lap-performance.v1", 2, || {
        ns.produce_lines(third.iter().map(|s| s.as_str()));
        std::thread::sleep(Duration::from_millis(1500));
    });
    wait_consumed(&addr, all.len(), "a, last third");
    // Records sent while the topic is gone wait for it (the processor does not create it), then
    // land on the new topic below the last mark, or fail: either way the chain starts again.
    assert!(
        restarts("topic_reset") + restarts("not_stored") > after_first + not_stored,
        "no changelog chain was started again after the second reset"
    );
    a.sigterm();
    assert!(a.wait(Duration::from_secs(30)), "a did not stop cleanly after its changelog topic was reset");

    let mut b = Service::start("b", &process_args(&m_s, &sb, &["--checkpoint-interval", "200ms", "--until-end"]), &ns);
    assert!(b.wait(Duration::from_secs(120)), "b failed");
    assert_eq!(b.summary()["changelog_restored_partitions"], 2, "b restored every partition from the new topic: {}", b.summary());
    let latest = ns.latest_rows("pitgun.aggregates.lap-performance.v1");
    assert_rows_equal_replay(&latest, &expected, "after the changelog topic was reset");
}

/// `pitgun topics` creates every topic of a deployment from the manifests folder — the shared
/// ones and each manifest version's aggregates, late and changelog topics — with the partitions
/// asked; a second run keeps them ("existed"); and a changelog with fewer partitions than the
/// envelopes topic is refused (exit 1, naming it), as a processor would refuse it.
#[test]
fn topics_creates_every_topic_of_the_manifests_and_refuses_a_short_changelog() {
    let ns = Ns::new("topics");
    let out = pitgun(&["topics", "--partitions", "3", "--retention", "2d", "--manifest", "manifests/pipelines"], &ns);
    assert!(out.status.success(), "topics: {}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8(out.stdout).unwrap();
    let mut expected = vec!["pitgun.envelopes.v1", "pitgun.deadletter.ingest.v1", "pitgun.deadletter.process.v1", "pitgun.deadletter.sink.v1"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    for entry in std::fs::read_dir(root().join("manifests/pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".yaml") {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).unwrap().trim().to_string();
        let (name, version) = (field("name:"), field("version:"));
        for kind in ["aggregates", "late", "state"] {
            expected.push(format!("pitgun.{kind}.{name}.v{version}"));
        }
    }
    for topic in &expected {
        let line = format!("{}\t3 partitions\tcreated", ns.topic(topic));
        assert!(listed.lines().any(|l| l == line), "{topic} not created with 3 partitions:\n{listed}");
    }
    assert_eq!(listed.lines().count(), expected.len(), "only the deployment's topics:\n{listed}");

    let again = pitgun(&["topics", "--partitions", "3", "--manifest", "manifests/pipelines"], &ns);
    assert!(again.status.success());
    assert!(String::from_utf8(again.stdout).unwrap().lines().all(|l| l.ends_with("\texisted")), "a second run creates nothing");

    let short = Ns::new("topics-short");
    short.create_topic("pitgun.envelopes.v1", 4);
    short.create_topic("pitgun.state.lap-performance.v1", 2);
    let refused = pitgun(&["topics", "--partitions", "4", "--manifest", "manifests/pipelines/lap-performance.v1.yaml"], &short);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "a short changelog is refused: {stderr}");
    assert!(stderr.contains(&format!("{} has 2 partitions, the envelopes topic 4", short.topic("pitgun.state.lap-performance.v1"))), "{stderr}");

    // An envelopes topic with more partitions than asked: the changelogs this run creates take
    // its count (a processor sizes them the same way), the other topics the count asked.
    let wide = Ns::new("topics-wide");
    wide.create_topic("pitgun.envelopes.v1", 6);
    let out = pitgun(&["topics", "--partitions", "2", "--manifest", "manifests/pipelines/lap-performance.v1.yaml"], &wide);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "topics beside a wider envelopes topic: {stderr}\n{stdout}");
    for (topic, says) in [
        ("pitgun.envelopes.v1", "6 partitions\texisted"),
        ("pitgun.state.lap-performance.v1", "6 partitions\tcreated"),
        ("pitgun.aggregates.lap-performance.v1", "2 partitions\tcreated"),
    ] {
        let line = format!("{}\t{says}", wide.topic(topic));
        assert!(stdout.lines().any(|l| l == line), "{line}:\n{stdout}");
    }
}

/// Checks the emissions on an aggregates topic against replay's changelog (every emission, in
/// order): each row's emissions on the topic are replay's for that row, in replay's order, each
/// once — none repeated, none going back to an older version.
fn assert_each_version_once_in_order(topic: &[String], changelog: &str, what: &str) {
    let id = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["row_id"].as_str().unwrap().to_string();
    let mut versions: std::collections::HashMap<String, Vec<&str>> = Default::default();
    for line in changelog.lines() {
        versions.entry(id(line)).or_default().push(line);
    }
    // Per row, the index in replay's sequence of the next emission expected at the earliest.
    let mut next: std::collections::HashMap<String, usize> = Default::default();
    for (n, line) in topic.iter().enumerate() {
        let row = id(line);
        let seq = versions.get(&row).unwrap_or_else(|| panic!("{what}: emission {n} is of a row replay never emits: {line}"));
        let from = next.get(&row).copied().unwrap_or(0);
        match seq.iter().enumerate().skip(from).find(|(_, v)| **v == line) {
            Some((i, _)) => {
                next.insert(row, i + 1);
            }
            None => {
                let earlier = seq.iter().position(|v| *v == line);
                panic!("{what}: emission {n} of row {row} is its version {earlier:?} again, after version {}: {line}", from as i64 - 1);
            }
        }
    }
}

/// A partition has one owner's state. Replica A reads the first third and stops; replica B
/// (no local state) takes every partition and reads the second third; A comes back with a
/// checkpoint that is no longer the group's. Neither may re-emit what the other already
/// emitted: B restores A's state from the changelog and goes on from the group's offsets, A
/// discards its stale checkpoint and restores B's from the changelog. Every row version
/// reaches the topic once, in replay's order.
#[test]
fn a_partition_that_comes_back_does_not_resume_a_stale_checkpoint() {
    hand_offs(true);
}

/// The same hand-offs without the changelog: B rebuilds the partitions from the earliest
/// offset and catches up to the group's offsets without emitting; A discards its stale
/// checkpoint and rebuilds too.
#[test]
fn without_the_changelog_a_taken_partition_is_rebuilt_without_re_emitting() {
    hand_offs(false);
}

fn hand_offs(changelog_on: bool) {
    let ns = Ns::new(if changelog_on { "owner" } else { "owner-rebuild" });
    ns.create_topics(2);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "owner.ndjson", 29, 8, "3m", None);
    let mut all = lines(&data);
    // One event from a producer version the dictionary has no aliases for, in the first third:
    // counted by the replica that reads it first, not again by one that rebuilds its partition.
    let mut uncovered: serde_json::Value = serde_json::from_str(&all[40]).unwrap();
    uncovered["source"]["version"] = "3.0.0".into();
    uncovered["event_id"] = "uncovered-1".into();
    all.insert(41, uncovered.to_string());
    std::fs::write(&data, all.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let third = all.len() / 3;
    let (first, rest) = all.split_at(third);
    let (second, last) = rest.split_at(third);
    let m = manifest("lap-performance.v1.yaml");
    let m_s = m.to_str().unwrap().to_string();
    let expected = replay(&m, None, &data, &[]);
    let changelog = replay(&m, None, &data, &["--changelog"]);
    let (sa, sb) = (dir.path().join("a"), dir.path().join("b"));
    let (sa, sb) = (sa.to_str().unwrap().to_string(), sb.to_str().unwrap().to_string());
    let addr = format!("127.0.0.1:{}", free_port());
    let mode: &[&str] = if changelog_on { &[] } else { &["--no-changelog"] };
    let run = |state: &str, name: &str, consumed: usize| {
        let extra = [&["--checkpoint-interval", "200ms", "--metrics-listen", &addr][..], mode].concat();
        let mut p = Service::start(name, &process_args(&m_s, state, &extra), &ns);
        wait_consumed(&addr, consumed, name);
        let rebuilt = |cause: &str| metric(&http_get(&addr, "/metrics"), "pitgun_processor_partitions_rebuilt_total", &format!("cause=\"{cause}\""));
        let rebuilt = (rebuilt("first_read"), rebuilt("state_unavailable"));
        p.sigterm();
        assert!(p.wait(Duration::from_secs(30)), "{name} did not stop cleanly");
        eprintln!("{name}: {}", p.summary());
        (p.summary(), rebuilt)
    };

    ns.produce_lines(first.iter().map(|s| s.as_str()));
    let (a1, rebuilt) = run(&sa, "a1", first.len());
    assert_eq!(rebuilt, (2.0, 0.0), "A1 read both partitions first: (first_read, state_unavailable)");
    assert_eq!(a1["uncovered_sources"], 1, "A1: {a1}");
    ns.produce_lines(second.iter().map(|s| s.as_str()));
    // With the changelog B restores A's state and reads the second third; without, it rebuilds
    // both partitions from the earliest offset: the first third again, silently.
    let (b, rebuilt) = match changelog_on {
        true => run(&sb, "b", second.len()),
        false => run(&sb, "b", first.len() + second.len()),
    };
    let taken = if changelog_on { "changelog_restored_partitions" } else { "rebuilt_partitions" };
    assert_eq!(b[taken], 2, "B: {b}");
    // B has no local state at all: without the changelog the state at A's committed offsets is
    // lost, which is what PitgunPartitionRebuilt tells an operator (it once needed a discarded
    // stale checkpoint as well, so a new replica's volume never fired it).
    let lost = if changelog_on { 0.0 } else { 2.0 };
    assert_eq!(rebuilt, (0.0, lost), "B: (first_read, state_unavailable)");
    assert_eq!(b["uncovered_sources"], 0, "B counted the first third's event again: {b}");
    ns.produce_lines(last.iter().map(|s| s.as_str()));
    let extra = [&["--checkpoint-interval", "200ms", "--until-end"][..], mode].concat();
    let mut a2 = Service::start("a2", &process_args(&m_s, &sa, &extra), &ns);
    assert!(a2.wait(Duration::from_secs(120)), "a2 failed");
    let a = a2.summary();
    eprintln!("a2: {a}");

    let topic = ns.all_records("pitgun.aggregates.lap-performance.v1");
    eprintln!("{} emissions on the topic, {} in replay's changelog", topic.len(), changelog.lines().count());
    assert_each_version_once_in_order(&topic, &changelog, "two hand-offs");
    assert_eq!(
        topic.len(),
        changelog.lines().count(),
        "every version once: the topic has {} emissions, replay {}",
        topic.len(),
        changelog.lines().count()
    );
    // Each emission carries its version, and a row's versions never fall.
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for (payload, h) in records_with_headers(&ns, "pitgun.aggregates.lap-performance.v1", topic.len()) {
        let version: i64 = h.get("pitgun-row-version").unwrap_or_else(|| panic!("a row without its version: {payload}")).parse().unwrap();
        let id = serde_json::from_str::<serde_json::Value>(&payload).unwrap()["row_id"].as_str().unwrap().to_string();
        if let Some(before) = last.insert(id.clone(), version) {
            assert!(version >= before, "row {id}: version {version} after {before}");
        }
    }
    assert_rows_equal_replay(&ns.latest_rows("pitgun.aggregates.lap-performance.v1"), &expected, "after two hand-offs");
    assert_eq!((a["restored_partitions"].as_u64(), a["discarded_checkpoints"].as_u64()), (Some(0), Some(2)), "A resumed a stale checkpoint: {a}");
    assert_eq!(a[taken], 2, "A2: {a}");
}

/// Cooperative assignment and static membership: replicas named with `--instance-id` (a
/// StatefulSet's pod names). When B joins, A gives up only the partitions B takes. B is stopped
/// and started again under its name within the session timeout: it gets its own partitions back
/// from its checkpoint, A gives up nothing, and the rows equal replay.
#[test]
fn a_static_member_restarted_in_time_moves_no_partition() {
    let ns = Ns::new("static");
    ns.create_topics(4);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "static.ndjson", 31, 12, "3m", None);
    let all = lines(&data);
    let (first, second) = all.split_at(all.len() / 2);
    let m = manifest("lap-performance.v1.yaml");
    let expected = replay(&m, None, &data, &[]);
    let m_s = m.to_str().unwrap().to_string();
    let (sa, sb) = (dir.path().join("a"), dir.path().join("b"));
    let (sa, sb) = (sa.to_str().unwrap().to_string(), sb.to_str().unwrap().to_string());
    let a_metrics = format!("127.0.0.1:{}", free_port());
    let args = |state: &'static str, dir: &str, more: &[&str]| -> Vec<String> {
        let extra = [&["--checkpoint-interval", "200ms", "--group-session-timeout", "30s", "--instance-id", state][..], more].concat();
        process_args(&m_s, dir, &extra).into_iter().map(String::from).collect()
    };
    let start = |name: &str, args: &[String]| Service::start(name, &args.iter().map(|s| s.as_str()).collect::<Vec<_>>(), &ns);

    ns.produce_lines(first.iter().map(|s| s.as_str()));
    let (args_a, args_b) = (args("replica-a", &sa, &["--metrics-listen", &a_metrics]), args("replica-b", &sb, &[]));
    let a = start("a", &args_a);
    a.wait_for_log("partition", Duration::from_secs(60));
    let mut b = start("b", &args_b);
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.log_count("checkpoint written") == 0 || a.log_count("partition revoked") == 0 {
        assert!(Instant::now() < deadline, "the two replicas did not share the partitions in time");
        std::thread::sleep(Duration::from_millis(100));
    }
    let taken = b.log_count("restored from the changelog");
    let revoked = a.log_count("partition revoked");
    eprintln!("B took {taken} partitions; A gave up {revoked}");
    assert_eq!(revoked, taken, "cooperative assignment: A gives up only the partitions B takes, and B restores them from the changelog");
    assert_eq!(b.log_count("rebuilding from the earliest offset"), 0, "B rebuilt a partition the changelog holds");
    // A reports only the partitions it still reads: a lag frozen at revocation would be added
    // to B's in the group's sum, and keep lag alerts firing.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = http_get(&a_metrics, "/metrics");
        let series = |name: &str| text.lines().filter(|l| l.starts_with(&format!("{name}{{"))).count();
        let shown = (series("pitgun_processor_consumer_lag"), series("pitgun_processor_watermark_lag_seconds"));
        if shown == (4 - revoked, 4 - revoked) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A still reports partitions it gave up: (consumer_lag, watermark_lag) series {shown:?}, kept {}",
            4 - revoked
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    b.sigterm();
    assert!(b.wait(Duration::from_secs(30)), "B did not stop cleanly");

    // B again under its name, well within the session timeout.
    let mut b2 = start("b2", &args_b);
    b2.wait_for_log("restored checkpoint", Duration::from_secs(30));
    ns.produce_lines(second.iter().map(|s| s.as_str()));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let latest = ns.latest_rows("pitgun.aggregates.lap-performance.v1");
        if latest.len() == expected.lines().count() {
            assert_rows_equal_replay(&latest, &expected, "static members");
            break;
        }
        assert!(Instant::now() < deadline, "rows not complete in time ({} of {})", latest.len(), expected.lines().count());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(a.log_count("partition revoked"), revoked, "A gave partitions up when B came back");
    b2.sigterm();
    assert!(b2.wait(Duration::from_secs(30)), "B2 did not stop cleanly");
    let s = b2.summary();
    eprintln!("b2: {s}");
    assert_eq!((s["restored_partitions"].as_u64(), s["rebuilt_partitions"].as_u64()), (Some(taken as u64), Some(0)), "B2: {s}");
}

/// A copy of an event that arrives after its session closed and after `--closed-retention`
/// has passed does not open the session again: it goes to the late topic as `session_closed`,
/// and the session's rows stay those replay gives (replay remembers every closed session, and
/// refuses or drops the copy too).
#[test]
fn a_copy_after_closed_retention_does_not_reopen_its_session() {
    let ns = Ns::new("closed-copy");
    ns.create_topics(2);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "closed.ndjson", 29, 3, "40s", None);
    let all = lines(&data);
    let copy = all.iter().find(|l| l.contains("\"sample\"")).expect("a sample event").clone();
    let m = manifest("lap-performance.v1.yaml");
    let m_s = m.to_str().unwrap().to_string();
    let expected = replay(&m, Some(&dictionary()), &data, &[]);
    let with_copy = dir.path().join("with-copy.ndjson");
    std::fs::write(&with_copy, format!("{}\n{copy}\n", all.join("\n"))).unwrap();
    assert_rows_equal_replay(
        &expected.lines().map(|l| l.to_string()).collect::<Vec<_>>(),
        &replay(&m, Some(&dictionary()), &with_copy, &[]),
        "replay with the late copy",
    );

    let state = dir.path().join("state");
    let state_s = state.to_str().unwrap().to_string();
    let addr = format!("127.0.0.1:{}", free_port());
    let args = process_args(&m_s, &state_s, &["--checkpoint-interval", "200ms", "--closed-retention", "1s", "--metrics-listen", &addr]);
    ns.produce_lines(all.iter().map(|s| s.as_str()));
    let mut p = Service::start("processor", &args, &ns);
    wait_consumed(&addr, all.len(), "the dataset");
    // Every session ended: each closes once the out-of-orderness (2 s) has passed, and its id
    // is forgotten from memory a retention (1 s) later.
    wait_no_open_session(&addr, "the 3 ended sessions");
    let closed = |cause: &str| metric(&http_get(&addr, "/metrics"), "pitgun_processor_sessions_closed_total", &format!("cause=\"{cause}\""));
    assert_eq!((closed("end"), closed("idle"), closed("gap")), (3.0, 0.0, 0.0), "closed by their end");
    std::thread::sleep(Duration::from_secs(3));
    ns.produce_lines([copy.as_str()]);
    wait_consumed(&addr, all.len() + 1, "the copy");
    p.sigterm();
    assert!(p.wait(Duration::from_secs(30)), "the processor did not stop cleanly");

    let event_id = serde_json::from_str::<serde_json::Value>(&copy).unwrap()["event_id"].as_str().unwrap().to_string();
    let late = ns.all_records("pitgun.late.lap-performance.v1");
    assert!(
        late.iter().any(|l| l.contains(&event_id) && l.contains("session_closed")),
        "the copy {event_id} is not on the late topic as session_closed: {late:?}"
    );
    let latest = ns.latest_rows("pitgun.aggregates.lap-performance.v1");
    assert_rows_equal_replay(&latest, &expected, "after a copy past --closed-retention");
}

/// A session silent for longer than `idle_timeout` in its own event time, then heard again: it
/// ended at the silence, in the stream (whose wall clock expired it meanwhile) and in replay
/// (which reads the gap in event time) alike. The events after the gap go to the late topic as
/// `session_closed`, and the rows equal replay's.
#[test]
fn a_gap_longer_than_idle_timeout_ends_the_session_in_stream_and_replay_alike() {
    let ns = Ns::new("event-gap");
    ns.create_topics(2);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "gap-source.ndjson", 31, 3, "1m", None);
    let all = lines(&data);
    let (first, second) = all.split_at(all.len() / 2);
    // The second half 20 s later in event time: a silence of four idle timeouts.
    let second: Vec<String> = second
        .iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let t = v["time_us"].as_i64().unwrap();
            v["time_us"] = serde_json::json!(t + 20_000_000);
            v.to_string()
        })
        .collect();
    let gapped = dir.path().join("gap.ndjson");
    std::fs::write(&gapped, format!("{}\n{}\n", first.join("\n"), second.join("\n"))).unwrap();

    let m = lap_performance_idle(dir.path(), "5s");
    let m_s = m.to_str().unwrap().to_string();
    let expected = replay(&m, Some(&dictionary()), &gapped, &[]);
    let state = dir.path().join("state");
    let state_s = state.to_str().unwrap().to_string();
    let addr = format!("127.0.0.1:{}", free_port());
    let live = process_args(&m_s, &state_s, &["--checkpoint-interval", "200ms", "--metrics-listen", &addr]);

    ns.produce_lines(first.iter().map(|s| s.as_str()));
    let mut run1 = Service::start("run1", &live, &ns);
    wait_consumed(&addr, first.len(), "the first half");
    // Silent in wall time too, for longer than the idle timeout: the stream expires them.
    wait_no_open_session(&addr, "the silent sessions");
    let closed = |cause: &str| metric(&http_get(&addr, "/metrics"), "pitgun_processor_sessions_closed_total", &format!("cause=\"{cause}\""));
    assert_eq!((closed("end"), closed("idle"), closed("gap")), (0.0, 3.0, 0.0), "closed by the wall clock's idle timeout");
    ns.produce_lines(second.iter().map(|s| s.as_str()));
    wait_consumed(&addr, all.len(), "the second half");
    run1.sigterm();
    assert!(run1.wait(Duration::from_secs(30)), "the processor did not stop cleanly");
    let mut run2 = Service::start("run2", &process_args(&m_s, &state_s, &["--checkpoint-interval", "200ms", "--until-end"]), &ns);
    assert!(run2.wait(Duration::from_secs(120)), "the run to the end failed");

    let closed = ns.all_records("pitgun.late.lap-performance.v1").into_iter().filter(|l| l.contains("session_closed")).count();
    // Kinds the manifest does not take (health) are only counted, never late.
    let taken = ["session_start", "sample", "lap", "session_end"];
    let kind = |l: &String| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string();
    let after_gap = second.iter().filter(|l| taken.contains(&kind(l).as_str())).count();
    assert!(after_gap < second.len(), "the dataset has events of kinds lap-performance does not take");
    assert_eq!(closed, after_gap, "every event after the gap of a kind the manifest takes goes to the late topic as session_closed");
    let latest = ns.latest_rows("pitgun.aggregates.lap-performance.v1");
    assert_rows_equal_replay(&latest, &expected, "a session silent longer than idle_timeout, then heard again");
}

/// Devices whose clock was not set yet when they started a session (a month behind), then set
/// it: the stream and replay each refuse the one wild event per session as `clock_jump` and
/// count the rest, with the same rows (before, every later event of those sessions was a jump).
#[test]
fn a_session_started_on_a_clock_not_yet_set_gives_the_same_rows_in_stream_and_replay() {
    let ns = Ns::new("wild-clock");
    ns.create_topics(2);
    let dir = tempfile::tempdir().unwrap();
    // 24 sessions: some share one of replay's 256 clock groups (whose clock a wild time moves).
    let data = simulate(dir.path(), "wild-source.ndjson", 37, 24, "20s", None);
    let month_us = 30 * 24 * 3600 * 1_000_000i64;
    let mut wild = 0;
    let lines: Vec<String> = lines(&data)
        .into_iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(&l).unwrap();
            if v["kind"] == "session_start" {
                v["time_us"] = serde_json::json!(v["time_us"].as_i64().unwrap() - month_us);
                wild += 1;
            }
            v.to_string()
        })
        .collect();
    assert_eq!(wild, 24, "one session_start per session");
    let dataset = dir.path().join("wild.ndjson");
    std::fs::write(&dataset, lines.join("\n") + "\n").unwrap();
    let m = manifest("lap-performance.v1.yaml");
    let rejected = dir.path().join("rejected.ndjson");
    let expected = replay(&m, Some(&dictionary()), &dataset, &["--rejected", rejected.to_str().unwrap()]);
    let reasons = |notes: &[String]| {
        notes.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(reasons(&self::lines(&rejected)), ["clock_jump"; 24], "replay refuses the wild starts alone");

    ns.produce_lines(lines.iter().map(|s| s.as_str()));
    let state = dir.path().join("state");
    let (m_s, state_s) = (m.to_str().unwrap().to_string(), state.to_str().unwrap().to_string());
    let mut p = Service::start("processor", &process_args(&m_s, &state_s, &["--until-end"]), &ns);
    assert!(p.wait(Duration::from_secs(120)), "the processor failed");
    let dead = records_with_headers(&ns, "pitgun.deadletter.process.v1", 24);
    assert!(dead.iter().all(|(_, h)| h.get("pitgun-reason").map(String::as_str) == Some("clock_jump")), "{dead:?}");
    assert_eq!(ns.all_records("pitgun.deadletter.process.v1").len(), 24, "nothing else is refused");
    let latest = ns.latest_rows("pitgun.aggregates.lap-performance.v1");
    assert_rows_equal_replay(&latest, &expected, "sessions started on a clock a month behind");
}

/// A producer sending mostly events too late for any window cannot flood the late topic: past
/// `--late-per-second` the late notes are shed and counted (`late_shed` in the summary,
/// `pitgun_processor_late_shed_total{reason}`), never dropped uncounted — each shed event is
/// still on the envelopes topic. Every late event counts in `late`, as many as replay's notes.
#[test]
fn the_late_topic_rate_bound_sheds_with_a_count() {
    let ns = Ns::new("late-bound");
    ns.create_topics(2);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "late.ndjson", 29, 4, "2m", Some("very_late=0.05"));
    let m = manifest("lap-performance.v1.yaml");
    let late_file = dir.path().join("late-notes.ndjson");
    replay(&m, None, &data, &["--late", late_file.to_str().unwrap()]);
    let late_in_replay = lines(&late_file).len() as u64;
    assert!(late_in_replay > 200, "test data: {late_in_replay} late events");
    ns.produce_lines(lines(&data).iter().map(|s| s.as_str()));

    let state = dir.path().join("state");
    let mut p = Service::start("late", &process_args(m.to_str().unwrap(), state.to_str().unwrap(), &["--until-end", "--late-per-second", "20"]), &ns);
    assert!(p.wait(Duration::from_secs(120)), "processor failed");
    let summary = p.summary();
    let (late, shed) = (summary["late"].as_u64().unwrap(), summary["late_shed"].as_u64().unwrap());
    assert_eq!(late, late_in_replay, "every late event is counted, written or shed");
    let written = ns.all_records("pitgun.late.lap-performance.v1").len() as u64;
    assert_eq!(written + shed, late, "the late topic holds every note not shed");
    // A full bucket of 20, then 20 a second while the processor ran.
    let most = 20 + (20.0 * summary["consume_seconds"].as_f64().unwrap()).ceil() as u64 + 20;
    assert!(shed > 0 && (20..=most).contains(&written), "the bound was crossed: {written} written (at most {most}), {shed} shed");
}

/// The memory ceiling the README documents: a producer opening a million sessions (one event
/// each, 4 partitions) against `--max-open-sessions 20000` — 80,000 sessions held, 920,000 events
/// refused to the dead-letter topic as `too_many_sessions` — peaks under 768 MiB resident.
#[test]
fn a_million_sessions_stay_under_the_memory_ceiling() {
    const SESSIONS: usize = 1_000_000;
    const BOUND: usize = 20_000;
    const CEILING: u64 = 768 << 20;
    let ns = Ns::new("million");
    ns.create_topics(4);
    let t0 = 1_767_225_603_677_340i64;
    let lines: Vec<String> = (0..SESSIONS)
        .map(|i| {
            format!(
                r#"{{"schema":"pitgun-envelope/v1","event_id":"m-{i}","source":{{"kind":"game","id":"pitgun-web","version":"1.4.2"}},"session_id":"m-{i}","seq":1,"time_us":{},"kind":"sample","channels":{{"speed_kmh":100.0,"lap":1.0,"lap_dist":0.0}},"dims":{{"car":"lmp2","player":"p","track":"monza"}}}}"#,
                t0 + i as i64 * 1000
            )
        })
        .collect();
    ns.produce_lines(lines.iter().map(|s| s.as_str()));
    drop(lines);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let m = manifest("lap-performance.v1.yaml");
    let bound = BOUND.to_string();
    let mut p =
        Service::start("million", &process_args(m.to_str().unwrap(), state.to_str().unwrap(), &["--until-end", "--max-open-sessions", &bound]), &ns);
    assert!(p.wait(Duration::from_secs(300)), "processor failed");
    let s = p.summary();
    eprintln!("a million sessions: {s}");
    assert_eq!(s["records"].as_u64(), Some(SESSIONS as u64));
    assert_eq!(s["rows"].as_u64(), Some(4 * BOUND as u64), "one row per session held");
    assert_eq!(s["deadletters"].as_u64(), Some((SESSIONS - 4 * BOUND) as u64), "every other session refused");
    let peak = s["peak_resident_bytes"].as_u64().expect("the summary gives the peak resident memory");
    assert!(peak < CEILING, "peak resident memory {} MiB over the 768 MiB ceiling", peak >> 20);
}

/// Settings a run cannot work with are refused on the command line, before any broker is
/// asked: a zero interval or timeout (a checkpoint interval of 0s wrote a checkpoint per
/// poll), --pipeline beside --manifest (it was ignored), an export range that holds no record,
/// a manifest given twice to the sink (every row was written twice).
#[test]
fn settings_that_cannot_work_are_refused_before_anything_runs() {
    let m = "manifests/pipelines/lap-performance.v1.yaml";
    let dead = "127.0.0.1:1";
    let cases: [(&[&str], &str); 15] = [
        (
            &["sink", "--manifest", m, "--manifest", m, "--brokers", dead, "--targets", "postgres", "--postgres", "postgres://127.0.0.1:1/x"],
            "given twice",
        ),
        (&["process", "--manifest", m, "--brokers", dead, "--checkpoint-interval", "0s"], "must be greater than zero"),
        (&["process", "--manifest", m, "--brokers", dead, "--flush-timeout", "0ms"], "must be greater than zero"),
        (&["gateway", "--keys", "k.yaml", "--brokers", dead, "--ack-timeout", "0s"], "must be greater than zero"),
        (&["process", "--manifest", m, "--brokers", dead, "--pipeline", "laps"], "cannot be used with"),
        (&["replay", "--manifest", m, "--pipeline", "laps", "--input", "samples/racing-small.ndjson.zst"], "cannot be used with"),
        (&["export", "--brokers", dead, "--output", "/tmp/never.avro", "--from-offset", "100", "--to-offset", "10"], "not before --to-offset"),
        // Rows on the envelopes topic would be dead-lettered by every processor.
        (&["publish", "--brokers", dead, "--input", "samples/racing-small.ndjson.zst", "--wire", "rows"], "--wire rows needs --topic"),
        // Offsets are never negative, and a range ending before offset 1 holds nothing.
        (&["export", "--brokers", dead, "--output", "/tmp/never.avro", "--to-offset", "0"], "--to-offset"),
        (&["export", "--brokers", dead, "--output", "/tmp/never.avro", "--from-offset=-5"], "--from-offset"),
        // The input is opened before the broker is asked (it said "the 0 records before it are on …").
        (&["publish", "--brokers", dead, "--input", "/nonexistent/no-such.ndjson"], "/nonexistent/no-such.ndjson: cannot open"),
        // --version belongs to --manifest; with --topic it was ignored.
        (&["tail", "--brokers", dead, "--topic", "pitgun.envelopes.v1", "--version", "7"], "--version"),
        (&["sink", "--manifest", m, "--brokers", dead, "--targets", "postgres", "--postgres", "postgres://127.0.0.1:1/x", "--group", ""], "--group"),
        (
            &["sink", "--manifest", m, "--brokers", dead, "--postgres", "postgres://127.0.0.1:1/x", "--migrate", "--metrics-listen", "127.0.0.1:1"],
            "cannot be used with",
        ),
        (&["process", "--manifest", m, "--brokers", dead, "--instance-id", ""], "--instance-id"),
    ];
    for (args, says) in cases {
        let started = Instant::now();
        let out = std::process::Command::new(pitgun_bin()).current_dir(root()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?} took {:?}: no broker was asked", started.elapsed());
    }
    // simulate --target with a URL no request can go to leaves --output as it was.
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("keep.ndjson");
    std::fs::write(&keep, "kept\n").unwrap();
    let out = std::process::Command::new(pitgun_bin())
        .args(["simulate", "--sessions", "1", "--duration", "10s", "--quiet", "--target", "127.0.0.1:1", "--api-key", "pitgun-sim=x", "--output"])
        .arg(&keep)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "kept\n", "the output file is untouched");
    // publish names a broker that does not answer within seconds (it waited 120 s in silence).
    let started = Instant::now();
    let out = std::process::Command::new(pitgun_bin())
        .current_dir(root())
        .args(["publish", "--brokers", dead, "--input", "samples/racing-small.ndjson.zst"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("broker {dead} did not answer")), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "publish took {:?}", started.elapsed());
}

/// An event the engine refuses as it leaves the reorder buffer (here a lap number that goes
/// back, `segment_regressed`) is named by where it was read: replay's `--rejected` and
/// `--strict` give its file and line, the processor's dead letter its offset. Both used to name
/// nothing (replay) or the later record whose arrival released it (the processor).
#[test]
fn a_refusal_at_release_names_where_the_event_was_read() {
    let ns = Ns::new("origin");
    ns.create_topics(1);
    let dir = tempfile::tempdir().unwrap();
    // (seconds, kind, lap): the 5th event's lap 1 comes after lap 2 began; it leaves the buffer
    // when an event 2 s (out_of_orderness) later arrives, the 7th. The 9th comes after the
    // session's end: late.
    let events = [
        (1.0, "session_start", 1),
        (2.0, "sample", 1),
        (4.0, "lap", 2),
        (5.0, "sample", 2),
        (5.5, "sample", 1),
        (6.0, "sample", 2),
        (8.0, "sample", 2),
        (9.0, "session_end", 2),
        (20.0, "sample", 2),
    ];
    let records: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(i, (t, kind, lap))| {
            serde_json::json!({
                "schema": "pitgun-envelope/v1", "event_id": format!("o{i}"),
                "source": {"kind": "simulator", "id": "pitgun-sim", "version": "2.1.0"},
                "session_id": "origin-1", "seq": i + 1, "time_us": (t * 1e6) as i64, "kind": kind,
                "channels": {"lap_number": lap, "speed": 10},
                "dims": {"player": "ana", "track": "monza", "car": "gt3"},
            })
            .to_string()
        })
        .collect();
    let data = dir.path().join("origin.ndjson");
    std::fs::write(&data, records.join("\n") + "\n").unwrap();
    let m = manifest("lap-performance.v1.yaml");
    let (rejected, late) = (dir.path().join("rejected.ndjson"), dir.path().join("late.ndjson"));
    replay(&m, Some(&dictionary()), &data, &["--rejected", rejected.to_str().unwrap(), "--late", late.to_str().unwrap()]);
    let late_notes = lines(&late);
    assert_eq!(late_notes.len(), 1, "{late_notes:?}");
    let note: serde_json::Value = serde_json::from_str(&late_notes[0]).unwrap();
    assert_eq!((note["event_id"].as_str(), note["line"].as_u64()), (Some("o8"), Some(9)), "{note}");
    let notes = lines(&rejected);
    assert_eq!(notes.len(), 1, "{notes:?}");
    let note: serde_json::Value = serde_json::from_str(&notes[0]).unwrap();
    assert_eq!((note["reason"].as_str(), note["event_id"].as_str()), (Some("segment_regressed"), Some("o4")), "{note}");
    assert_eq!((note["file"].as_str(), note["line"].as_u64()), (Some(data.to_str().unwrap()), Some(5)), "{note}");
    let strict = pitgun(&["replay", "--strict", "--manifest", m.to_str().unwrap(), "--input", data.to_str().unwrap()], &ns);
    let err = String::from_utf8_lossy(&strict.stderr);
    assert_eq!(strict.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{}:5: an event the engine rejected", data.display())), "{err}");

    ns.produce_lines(records.iter().map(|s| s.as_str()));
    let state = dir.path().join("state");
    let mut p = Service::start("origin", &process_args(m.to_str().unwrap(), state.to_str().unwrap(), &["--until-end"]), &ns);
    assert!(p.wait(Duration::from_secs(60)), "the run to the end failed");
    assert_eq!(ns.all_records("pitgun.deadletter.process.v1").len(), 1, "one event refused");
    let dead = records_with_headers(&ns, "pitgun.deadletter.process.v1", 1);
    let (value, headers) = &dead[0];
    let note: serde_json::Value = serde_json::from_str(value).unwrap();
    assert_eq!(note["event_id"], "o4", "{value}");
    let origin = &headers["pitgun-origin"];
    assert!(origin.ends_with("pitgun.envelopes.v1/0/4"), "the 5th record is at offset 4: {origin}");
    assert_eq!(&note["origin"], origin.as_str(), "{value}");
    let late = ns.all_records("pitgun.late.lap-performance.v1");
    assert_eq!(late.len(), 1, "{late:?}");
    let note: serde_json::Value = serde_json::from_str(&late[0]).unwrap();
    assert_eq!(note["event_id"], "o8", "{note}");
    assert!(note["origin"].as_str().unwrap().ends_with("pitgun.envelopes.v1/0/8"), "{note}");
}

/// A refused record too big to be dead-lettered whole is dead-lettered cut, and the run goes
/// on. Its dead letter (the record and its headers) was over librdkafka's 1 MB: the run stopped
/// with an error, yet closing the consumer checkpointed past the record, so the next run went on
/// after it and the record was in no topic and no count.
#[test]
fn a_refused_record_too_big_to_dead_letter_whole_is_dead_lettered_cut() {
    let ns = Ns::new("oversize");
    ns.create_topics(1);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "o.ndjson", 23, 2, "30s", None);
    let good = lines(&data);
    let huge = format!("{{\"schema\":\"{}\"}}", "a".repeat(1_040_000));
    {
        // This producer takes what the broker takes (about 1 MiB); librdkafka's own bound is 1 MB.
        let producer: BaseProducer = ns.config().set("message.max.bytes", "2000000").create().unwrap();
        producer.send(BaseRecord::to(&ns.topic("pitgun.envelopes.v1")).key("huge").payload(&huge)).map_err(|(e, _)| e).unwrap();
        producer.flush(Duration::from_secs(30)).expect("the huge record acknowledged within 30 s");
    }
    ns.produce_lines(good.iter().map(|s| s.as_str()));
    let m = root().join("manifests/pipelines/lap-performance.v1.yaml");
    let state = dir.path().join("state");
    let mut p = Service::start("oversize", &process_args(m.to_str().unwrap(), state.to_str().unwrap(), &["--until-end"]), &ns);
    assert!(p.wait(Duration::from_secs(90)), "the run to the end failed");
    let summary = p.summary();
    assert_eq!((summary["records"].as_u64(), summary["deadletters"].as_u64()), (Some(good.len() as u64 + 1), Some(1)), "{summary}");
    let dead = records_with_headers(&ns, "pitgun.deadletter.process.v1", 1);
    let (value, headers) = &dead[0];
    assert_eq!(value.len(), 900 << 10, "the dead letter carries the first 900 KiB");
    assert!(huge.starts_with(value.as_str()));
    assert_eq!(headers.get("pitgun-payload-bytes"), Some(&huge.len().to_string()), "{headers:?}");
    assert!(headers["pitgun-origin"].ends_with("pitgun.envelopes.v1/0/0"), "{headers:?}");
    let expected = replay(&m, None, &data, &[]);
    assert_eq!(ns.latest_rows("pitgun.aggregates.lap-performance.v1").len(), expected.lines().count(), "every good record's rows");
}

/// Bounded reads end whatever a partition holds. `export --from-time` past a partition's last
/// record waited forever for a record that partition would never get (the broker answers "the
/// end" for it, and the read only counted offsets); `tail --until-end` without
/// `--from-beginning` started at the end it was to stop at, and printed nothing.
#[test]
fn bounded_reads_end_whatever_a_partition_holds() {
    let ns = Ns::new("bounded");
    ns.create_topics(2);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "b.ndjson", 5, 2, "5s", None);
    let sent = lines(&data);
    ns.produce_lines(sent.iter().map(|s| s.as_str()));
    let exported = |from: std::time::SystemTime| {
        let out = dir.path().join("e.ndjson");
        let from = humantime::format_rfc3339(from).to_string();
        let o = pitgun_within(&["export", "--output", out.to_str().unwrap(), "--from-time", &from], &ns, Duration::from_secs(60));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        lines(&out).len()
    };
    let now = std::time::SystemTime::now();
    assert_eq!(exported(now + Duration::from_secs(86_400)), 0, "a day ahead: no partition has a record at or after it");
    assert_eq!(exported(now - Duration::from_secs(3_600)), sent.len(), "an hour back: every record");
    let out = pitgun(&["tail", "--topic", "pitgun.envelopes.v1", "--until-end"], &ns);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), sent.len(), "tail --until-end reads what the topic holds");
}

/// An interrupted export is a failure: it stops, leaves nothing under the output's name and
/// exits non-zero. It took the first SIGTERM as the end of the partition it was reading, went
/// on with the next one, and exited 0 with the partial file. Each partition is read by a
/// consumer of its own, so 40 partitions take seconds; the signal is sent once the export has
/// created the file it writes before renaming (its signal handlers are set by then).
#[test]
fn an_interrupted_export_fails_and_leaves_no_partial_file() {
    let ns = Ns::new("interrupt");
    ns.create_topic("many", 40);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "i.ndjson", 9, 40, "5s", None);
    let sent = lines(&data);
    let producer: rdkafka::producer::BaseProducer = ns.config().create().unwrap();
    for (i, line) in sent.iter().enumerate() {
        let partition = (i % 40) as i32;
        producer.send(rdkafka::producer::BaseRecord::<(), str>::to(&ns.topic("many")).partition(partition).payload(line.as_str())).unwrap();
        producer.poll(Duration::ZERO);
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();
    eprintln!("{} records on 40 partitions", sent.len());
    let out = dir.path().join("partial.ndjson");
    let started = Instant::now();
    let mut child = pitgun_started(&["export", "--topic", "many", "--output", out.to_str().unwrap()], &ns);
    let writing = dir.path().join(format!(".partial-{}-partial.ndjson", child.id()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !writing.exists() {
        assert!(child.try_wait().unwrap().is_none(), "export ended before it began to write");
        assert!(Instant::now() < deadline, "export did not begin to write within 60 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let o = wait_output(&mut child, Duration::from_secs(30), "interrupted export");
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("export interrupted after {:?}: {stderr}", started.elapsed());
    assert!(!o.status.success(), "an interrupted export exited 0: {stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!out.exists(), "a partial file was left under the output's name");
    assert!(!writing.exists(), "the file being written was left behind");
}

/// `export` leaves out what the engine refuses, so replaying an export gives the stream's rows:
/// a JSON record naming a dimension or a channel twice was written with the last value kept
/// (and replayed as a valid event), as was one past the schema's limits, and one whose `seq` does not fit 64 signed bits stopped an
/// Avro export, of the whole topic, with a 4 KB schema dump and no offset. Its output is named
/// as given, not as the hidden file it writes first.
#[test]
fn export_leaves_out_what_the_engine_refuses() {
    let ns = Ns::new("export-strict");
    ns.create_topics(1);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "x.ndjson", 29, 2, "40s", None);
    let good = lines(&data);
    let sample = good.iter().find(|l| l.contains("\"kind\":\"sample\"")).unwrap();
    let fields = serde_json::from_str::<serde_json::Value>(sample).unwrap();
    let (event_id, seq) = (fields["event_id"].as_str().unwrap().to_string(), format!("\"seq\":{},", fields["seq"]));
    let session = format!("\"session_id\":\"{}\"", fields["session_id"].as_str().unwrap());
    let long_session = format!("\"session_id\":\"{}\"", "s".repeat(129));
    let bad = |id: &str, from: &str, to: &str| {
        assert!(sample.contains(from), "{from}");
        sample.replacen(&event_id, id, 1).replacen(from, to, 1)
    };
    let refused = [
        bad("dup-dim", "\"dims\":{", "\"dims\":{\"player\":\"mallory\","),
        bad("dup-channel", "\"channels\":{", "\"channels\":{\"speed\":1.0,"),
        bad("huge-seq", &seq, "\"seq\":18446744073709551615,"),
        // Past the schema's limits, which the engine holds the stream to as the gateway does.
        bad("long-session", &session, &long_session),
    ];
    let mut records: Vec<&str> = good.iter().map(String::as_str).collect();
    records.extend(refused.iter().map(String::as_str));
    ns.produce_lines(records);
    let m = root().join("manifests/pipelines/lap-performance.v1.yaml");
    let expected = replay(&m, None, &data, &[]);
    for name in ["strict.avro", "strict.ndjson"] {
        let out = dir.path().join(name);
        let o = pitgun(&["export", "--output", out.to_str().unwrap()], &ns);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{name}: {stderr}");
        assert!(stderr.contains("4 records were not valid envelopes"), "{name}: {stderr}");
        assert_eq!(replay(&m, None, &out, &[]), expected, "{name}: replay of the export differs from replay of the good records");
    }
    ns.create_topic("junk", 1);
    let producer: rdkafka::producer::BaseProducer = ns.config().create().unwrap();
    for record in &refused {
        producer.send(rdkafka::producer::BaseRecord::<(), str>::to(&ns.topic("junk")).payload(record.as_str())).unwrap();
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();
    let junk = dir.path().join("junk.avro");
    let o = pitgun(&["export", "--topic", "junk", "--output", junk.to_str().unwrap()], &ns);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "a topic without one envelope is an error: {stderr}");
    assert!(stderr.contains("none of the 4 records") && !junk.exists(), "{stderr}");
    let missing = dir.path().join("no-such-folder/x.avro");
    let o = pitgun(&["export", "--output", missing.to_str().unwrap()], &ns);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(missing.to_str().unwrap()) && !stderr.contains(".partial-"), "names the output as given: {stderr}");
}

/// `publish` to a topic that does not exist is refused before anything is sent, as its help
/// says: the broker made the topic with its defaults, so a typo in --topic or --namespace sent
/// a whole backfill to a topic nobody reads, and publish said it was all acknowledged.
#[test]
fn publish_refuses_a_topic_that_does_not_exist() {
    let ns = Ns::new("publish-missing");
    let out = pitgun(&["publish", "--input", "samples/racing-small.ndjson.zst", "--topic", "pitgun.envelopes.v1"], &ns);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let topic = ns.topic("pitgun.envelopes.v1");
    assert!(stderr.contains(&format!("topic {topic} does not exist")), "{stderr}");
    let consumer: rdkafka::consumer::BaseConsumer = ns.config().create().unwrap();
    let md = rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(10)).unwrap();
    assert!(!md.topics().iter().any(|t| t.name() == topic), "the refused publish created {topic}");
}

/// A replica whose checkpoint's group offsets are gone (expired, or the group deleted) rebuilds
/// the partition from its input: state it had is lost, which PitgunPartitionRebuilt reports as
/// `cause="state_unavailable"`, where it once counted as a group's first read.
#[test]
fn a_checkpoint_whose_group_offsets_are_gone_is_counted_as_lost_state() {
    let ns = Ns::new("offsets-gone");
    ns.create_topics(1);
    let dir = tempfile::tempdir().unwrap();
    ns.produce_lines(lines(&simulate(dir.path(), "gone.ndjson", 37, 2, "30s", None)).iter().map(String::as_str));
    let state = dir.path().join("state");
    let (m, state) = (manifest("lap-performance.v1.yaml"), state.to_str().unwrap().to_string());
    let m = m.to_str().unwrap();
    let first = pitgun(&process_args(m, &state, &["--until-end"]), &ns);
    let first = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(first.contains("rebuilding from the earliest offset") && first.contains("cause=\"first_read\""), "{first}");
    // The same state folder under a group with no offsets: the checkpoint is the replica's own.
    let group = format!("{}.another-group", ns.name);
    let again = pitgun(&process_args(m, &state, &["--until-end", "--consumer-config", &format!("group.id={group}")]), &ns);
    let again = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(again.contains("discarded") && again.contains("cause=\"state_unavailable\""), "{again}");
}

/// `tail` and `export` take a topic's base name and add the namespace; a name given whole, with
/// the namespace, came back only as "does not exist". The error now says what to give.
#[test]
fn tail_and_export_say_when_the_namespace_was_given_twice() {
    let ns = Ns::new("tail-twice");
    ns.create_topics(1);
    let whole = ns.topic("pitgun.envelopes.v1");
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("x.avro");
    for args in
        [vec!["tail", "--topic", whole.as_str(), "--until-end"], vec!["export", "--topic", whole.as_str(), "--output", output.to_str().unwrap()]]
    {
        let out = pitgun(&args, &ns);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("give --topic without the namespace (pitgun.envelopes.v1)"), "{args:?}: {stderr}");
    }
}

/// `tail` into a pipe closed early (`| head -1`) says it could not write to standard output; it
/// said only "Broken pipe (os error 32)".
#[test]
fn tail_names_standard_output_when_it_cannot_write() {
    let ns = Ns::new("tail-pipe");
    ns.create_topics(1);
    let dir = tempfile::tempdir().unwrap();
    let data = lines(&simulate(dir.path(), "t.ndjson", 31, 2, "60s", None));
    ns.produce_lines(data.iter().map(String::as_str));
    let mut child = pitgun_started(&["tail", "--topic", "pitgun.envelopes.v1", "--from-beginning", "--until-end"], &ns);
    drop(child.stdout.take());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "tail into a closed pipe did not end within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot write to standard output"), "{stderr}");
}

/// `publish` puts envelopes only where envelopes go, and rows only on an aggregates topic:
/// envelopes sent to an aggregates or dead-letter topic were acknowledged, and the sink then
/// dead-lettered every one.
#[test]
fn publish_refuses_a_topic_of_the_other_kind() {
    let ns = Ns::new("publish-kind");
    for (wire, topic) in [
        ("json", "pitgun.aggregates.lap-performance.v1"),
        ("avro", "pitgun.deadletter.process.v1"),
        ("json", "pitgun.late.lap-performance.v1"),
        ("rows", "pitgun.deadletter.sink.v1"),
        ("rows", "pitgun.state.lap-performance.v1"),
    ] {
        let out = pitgun(&["publish", "--input", "samples/racing-small.ndjson.zst", "--wire", wire, "--topic", topic], &ns);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--wire {wire} --topic {topic}: {stderr}");
        assert!(stderr.contains(topic) && stderr.contains("--wire"), "--wire {wire} --topic {topic}: {stderr}");
    }
}

/// The topics a processor and a sink create themselves (a processor's aggregates, late, dead
/// letters and state changelog; a sink's dead letters) take `--replication` (or
/// `PITGUN_REPLICATION`, as the Kubernetes config sets it for every service), where they were
/// made with one replica whatever the cluster: a lost broker then lost the state changelog.
#[test]
fn topics_a_service_creates_take_the_replication_asked_for() {
    let ns = Ns::new("replication");
    ns.create_topics(2);
    let dir = tempfile::tempdir().unwrap();
    let m = manifest("lap-performance.v1.yaml");
    let m_s = m.to_str().unwrap().to_string();
    let state = dir.path().join("state");
    let state_s = state.to_str().unwrap().to_string();
    let mut p = Service::start("processor", &process_args(&m_s, &state_s, &["--until-end", "--replication", "3"]), &ns);
    assert!(p.wait(Duration::from_secs(60)), "the processor failed");
    let mut sink = Service::start_with_env(
        "sink",
        &["sink", "--manifest", &m_s, "--postgres", &own_database("replication"), "--targets", "postgres", "--until-end"],
        &ns,
        &[("PITGUN_REPLICATION", "2"), ("PITGUN_MIN_INSYNC_REPLICAS", "2")],
    );
    assert!(sink.wait(Duration::from_secs(60)), "the sink failed");
    let consumer: rdkafka::consumer::BaseConsumer = ns.config().create().unwrap();
    // Three replicas take a majority in sync by default: a write acknowledged by `acks=all` is
    // then on two brokers, not only on the leader.
    for (base, want, insync) in [
        ("pitgun.aggregates.lap-performance.v1", 3, "2"),
        ("pitgun.late.lap-performance.v1", 3, "2"),
        ("pitgun.state.lap-performance.v1", 3, "2"),
        ("pitgun.deadletter.sink.v1", 2, "2"),
    ] {
        let topic = ns.topic(base);
        let md = rdkafka::consumer::Consumer::fetch_metadata(&consumer, Some(&topic), Duration::from_secs(10)).unwrap();
        let replicas: Vec<usize> = md.topics()[0].partitions().iter().map(|p| p.replicas().len()).collect();
        assert!(!replicas.is_empty() && replicas.iter().all(|r| *r == want), "{topic}: replicas per partition {replicas:?}, asked for {want}");
        assert_eq!(topic_config(&ns, &topic, "min.insync.replicas").as_deref(), Some(insync), "{topic}");
    }
}

/// A topic's configuration value as the broker describes it.
fn topic_config(ns: &Ns, topic: &str, name: &str) -> Option<String> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ns.config().create().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(15), admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &opts)).await });
    let resource = described.expect("the broker answers within 15 s").expect("describe configs").remove(0).expect("the topic's configs");
    resource.get(name).and_then(|e| e.value.clone())
}

/// Fewer replicas than must stay in sync could never acknowledge a write: refused before any
/// topic is made, naming both.
#[test]
fn more_replicas_in_sync_than_replicas_is_refused() {
    let ns = Ns::new("insync");
    let out = pitgun(&["topics", "--replication", "2", "--min-insync-replicas", "3"], &ns);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--min-insync-replicas 3") && err.contains("--replication 2"), "{err}");
}

/// `export` writes the topic as it was when the export started: a partition read after
/// others does not take in records produced while those were read. Partition 0 holds a long
/// dataset; once the export has begun (its partial file exists), other sessions' envelopes go
/// to partition 1, and none of them may be in the export.
#[test]
fn export_ends_every_partition_where_it_was_when_the_export_started() {
    let ns = Ns::new("export-snapshot");
    ns.create_topic("pitgun.envelopes.v1", 2);
    let dir = tempfile::tempdir().unwrap();
    let dataset = |seed: &str, sessions: &str, duration: &str| {
        let file = dir.path().join(format!("sim-{seed}.ndjson"));
        let out =
            pitgun(&["simulate", "--quiet", "--sessions", sessions, "--duration", duration, "--seed", seed, "--output", file.to_str().unwrap()], &ns);
        assert!(out.status.success(), "simulate: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::read_to_string(file).unwrap()
    };
    let before = dataset("31", "20", "300s");
    let after = dataset("32", "4", "20s");
    let topic = ns.topic("pitgun.envelopes.v1");
    let produce = |text: &str, partition: i32| {
        let producer: BaseProducer = ns.config().set("linger.ms", "5").create().unwrap();
        for line in text.lines() {
            let mut rec = BaseRecord::<(), str>::to(&topic).partition(partition).payload(line);
            while let Err((_, r)) = producer.send(rec) {
                rec = r;
                producer.poll(Duration::from_millis(10));
            }
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(60)).expect("every envelope acknowledged within 60 s");
    };
    produce(&before, 0);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let output = out_dir.join("export.ndjson");
    let export = std::thread::scope(|s| {
        let export = s.spawn(|| pitgun(&["export", "--output", output.to_str().unwrap()], &ns));
        let deadline = Instant::now() + Duration::from_secs(60);
        let begun = || std::fs::read_dir(&out_dir).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".partial-"));
        while !begun() && !export.is_finished() {
            assert!(Instant::now() < deadline, "the export did not begin within 60 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!export.is_finished(), "the export ended before records could be produced during it: partition 0 too short");
        produce(&after, 1);
        export.join().unwrap()
    });
    assert!(export.status.success(), "export: {}", String::from_utf8_lossy(&export.stderr));
    let exported = std::fs::read_to_string(&output).unwrap();
    let sessions = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["session_id"].as_str().unwrap().to_string()).collect()
    };
    let late = sessions(&after);
    assert!(sessions(&before).is_disjoint(&late), "the two datasets' sessions differ");
    let taken = exported.lines().filter(|l| late.iter().any(|s| l.contains(&format!("\"session_id\":\"{s}\"")))).count();
    assert_eq!(taken, 0, "records produced after the export began are in it");
    assert_eq!(exported.lines().count(), before.lines().count(), "the export holds every record there when it began");
}

/// A device whose clock stands still: every envelope of its session at one time. Its events
/// all waited in the reorder buffer, so the session's record outgrew a changelog record (1 MB)
/// and the processor stopped at its first checkpoint, and again at every restart. The buffer is
/// bounded now (`MAX_BUFFERED_EVENTS`): the run, checkpointed every 10 ms while the session is
/// open, ends with replay's rows.
#[test]
fn a_session_whose_clock_stands_still_is_checkpointed() {
    let ns = Ns::new("frozen");
    ns.create_topics(1);
    let dir = tempfile::tempdir().unwrap();
    let data = simulate(dir.path(), "f.ndjson", 31, 1, "300s", None);
    let mut time = None;
    let frozen: Vec<String> = lines(&data)
        .iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["time_us"] = time.get_or_insert_with(|| v["time_us"].clone()).clone();
            v.to_string()
        })
        .collect();
    assert!(frozen.len() > 16_000, "enough events to pass 1 MB buffered: {}", frozen.len());
    let data = dir.path().join("frozen.ndjson");
    std::fs::write(&data, frozen.join("\n") + "\n").unwrap();
    ns.produce_lines(frozen.iter().map(|s| s.as_str()));
    let m = root().join("manifests/pipelines/lap-performance.v1.yaml");
    let state = dir.path().join("state");
    let mut p =
        Service::start("frozen", &process_args(m.to_str().unwrap(), state.to_str().unwrap(), &["--until-end", "--checkpoint-interval", "10ms"]), &ns);
    assert!(p.wait(Duration::from_secs(120)), "the run to the end failed");
    let summary = p.summary();
    assert_eq!(summary["records"].as_u64(), Some(frozen.len() as u64), "{summary}");
    let expected = replay(&m, None, &data, &[]);
    assert!(expected.lines().count() > 0, "replay gives rows");
    assert_rows_equal_replay(&ns.latest_rows("pitgun.aggregates.lap-performance.v1"), &expected, "a clock standing still");
}
