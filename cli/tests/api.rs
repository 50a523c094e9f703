//! `pitgun api` on known data: hand-written session-summary and lap rows go through the real
//! broker and `pitgun sink` into the test's own PostgreSQL database; then every endpoint is
//! asked, with paging, ties, filters, bad parameters and an injection attempt. (The end-to-end
//! leaderboard against the simulator's ground truth is in `sink.rs`.)

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A session-summary row (the contract's columns).
fn run(session: &str, player: &str, track: &str, car: &str, start: &str, best: Option<f64>) -> Value {
    json!({
        "row_id": format!("run-{session}"), "session_id": session, "player": player, "track": track, "car": car,
        "window_start": format!("2026-01-01T{start}.000000Z"), "window_end": format!("2026-01-01T{start}.500000Z"),
        "window_anchor": format!("2026-01-01T{start}.000000Z"),
        "laps": if best.is_some() { 3 } else { 0 }, "best_lap": best, "top_speed": 301.5, "distance": 17.25, "events": 1000, "missing_events": 2,
    })
}

/// A lap-performance row (the contract's columns).
fn lap(session: &str, n: i64, start: &str, time: f64, complete: bool) -> Value {
    let mut r = json!({
        "row_id": format!("lap-{session}-{n}"), "session_id": session, "player": "ana", "track": "monza", "car": "gt3",
        "window_start": format!("2026-01-01T{start}.000000Z"), "window_end": format!("2026-01-01T{start}.900000Z"),
        "window_anchor": format!("2026-01-01T{start}.000000Z"), "lap": n, "lap_time": time,
        "max_speed": 300.0 + n as f64, "mean_speed": 200.0, "full_throttle_share": 0.5, "braking_share": 0.125, "distance": 5793.0,
        "samples": 900, "complete": complete,
    });
    for t in ["fl", "fr", "rl", "rr"] {
        r[format!("tyre_{t}_p50")] = json!(80.0);
        r[format!("tyre_{t}_p90")] = json!(90.0);
    }
    r
}

/// `pitgun sink` of the two manifests the API reads, into PostgreSQL only, with `how`
/// (`--until-end` or `--migrate`).
fn postgres_sink<'a>(pg: &'a str, how: &'a str) -> [&'a str; 10] {
    let manifests = ["manifests/pipelines/lap-performance.v1.yaml", "manifests/pipelines/session-summary.v1.yaml"];
    ["sink", "--manifest", manifests[0], "--manifest", manifests[1], "--postgres", pg, "--targets", "postgres", how]
}

fn get(addr: &str, path: &str) -> (u16, Value) {
    let (status, body) = http_get_status(addr, path);
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}")))
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn players(board: &Value) -> Vec<&str> {
    board["entries"].as_array().unwrap().iter().map(|e| e["player"].as_str().unwrap()).collect()
}

/// One player holding the top of a track with many runs (more than the first read of the
/// ranking takes) is ranked once, at their best run, and the players behind still appear, as
/// the same ranking computed with `DISTINCT ON` by PostgreSQL gives them.
#[test]
fn a_player_holding_the_top_with_many_runs_is_ranked_once_and_the_others_follow() {
    let ns = Ns::new("api-top-player");
    let pg = own_database("api_top_player");
    let dir = tempfile::tempdir().unwrap();
    // zed: 80 runs from 80.00 s up, and one more at 80.00 s that started earlier (the one kept).
    let mut runs: Vec<Value> = (0..80)
        .map(|i| run(&format!("z{i}"), "zed", "monza", "gt3", &format!("{:02}:{:02}:00", 5 + i / 60, i % 60), Some(80.0 + i as f64 * 0.01)))
        .collect();
    runs.push(run("z-first", "zed", "monza", "gt3", "04:00:00", Some(80.0)));
    runs.extend([
        run("s1", "ana", "monza", "gt3", "10:00:00", Some(90.5)),
        run("s2", "ana", "monza", "gt3", "11:00:00", Some(89.0)),
        run("s3", "ben", "monza", "gt3", "10:30:00", Some(89.0)),
        run("s4", "cho", "monza", "lmp2", "09:00:00", Some(95.0)),
        run("s5", "dan", "monza", "gt3", "12:00:00", None),
    ]);
    let file = dir.path().join("runs.ndjson");
    std::fs::write(&file, runs.iter().map(|r| r.to_string() + "\n").collect::<String>()).unwrap();
    let topic = "pitgun.aggregates.session-summary.v1";
    ns.create_topic(topic, 2);
    let out = pitgun(&["publish", "--input", file.to_str().unwrap(), "--wire", "rows", "--topic", topic], &ns);
    assert!(out.status.success(), "publish: {}", String::from_utf8_lossy(&out.stderr));
    ns.create_topic("pitgun.aggregates.lap-performance.v1", 1);
    let mut sink = Service::start("sink", &postgres_sink(&pg, "--until-end"), &ns);
    assert!(sink.wait(Duration::from_secs(120)), "sink failed");
    let (_api, addr) = start_api(&pg, &ns);

    let (status, board) = get(&addr, "/v1/leaderboard?track=monza");
    assert_eq!(status, 200, "{board}");
    assert_eq!(players(&board), ["zed", "ben", "ana", "cho"], "{board}");
    assert_eq!(board["entries"][0]["session_id"], "z-first", "zed's best run, the earlier of two at 80.0 s: {board}");
    assert_eq!(players(&get(&addr, "/v1/leaderboard?track=monza&car=gt3&limit=2").1), ["zed", "ben"]);
    assert_eq!(players(&get(&addr, "/v1/leaderboard?track=monza&car=lmp2").1), ["cho"]);
    let reference = psql(
        &pg,
        "SELECT string_agg(player || ' ' || session_id, ',' ORDER BY best_lap_s, started_at, player, session_id) FROM ( \
           SELECT DISTINCT ON (player) player, session_id, best_lap_s, started_at FROM runs \
           WHERE track = 'monza' AND best_lap_s IS NOT NULL ORDER BY player, best_lap_s, started_at, session_id) b",
    );
    let served: Vec<String> = board["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e["player"].as_str().unwrap(), e["session_id"].as_str().unwrap()))
        .collect();
    assert_eq!(served.join(","), reference.trim(), "the API's leaderboard against PostgreSQL's DISTINCT ON");
}

#[test]
fn api_endpoints_on_known_data() {
    let ns = Ns::new("api-known");
    let pg = own_database("api_known");
    let dir = tempfile::tempdir().unwrap();
    let runs = [
        run("s1", "ana", "monza", "gt3", "10:00:00", Some(90.5)),
        run("s2", "ana", "monza", "gt3", "11:00:00", Some(89.0)),
        run("s3", "ben", "monza", "gt3", "10:30:00", Some(89.0)),
        run("s4", "cho", "monza", "lmp2", "09:00:00", Some(95.0)),
        run("s5", "dan", "monza", "gt3", "12:00:00", None),
        run("s6", "ana", "spa", "gt3", "08:00:00", Some(120.0)),
        run("s7", "fay", "monza", "gt3", "14:00:00", Some(89.5)),
        run("s8", "eve", "monza", "gt3", "14:00:00", Some(89.5)),
    ];
    // The car changed after lap 3: the new key's laps are numbered from 1 again.
    let mut other_car = lap("s1", 1, "10:04:00", 20.0, false);
    (other_car["car"], other_car["row_id"]) = (json!("lmp2"), json!("lap-s1-lmp2-1"));
    let laps = [lap("s1", 1, "10:00:00", 91.0, true), lap("s1", 2, "10:01:31", 90.5, true), lap("s1", 3, "10:03:01", 30.25, false), other_car];
    for (topic, rows) in [("pitgun.aggregates.session-summary.v1", &runs[..]), ("pitgun.aggregates.lap-performance.v1", &laps[..])] {
        let file = dir.path().join(format!("{topic}.ndjson"));
        std::fs::write(&file, rows.iter().map(|r| r.to_string() + "\n").collect::<String>()).unwrap();
        ns.create_topic(topic, 2);
        let out = pitgun(&["publish", "--input", file.to_str().unwrap(), "--wire", "rows", "--topic", topic], &ns);
        assert!(out.status.success(), "publish: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut sink = Service::start("sink", &postgres_sink(&pg, "--until-end"), &ns);
    assert!(sink.wait(Duration::from_secs(120)), "sink failed");
    let (_api, addr) = start_api(&pg, &ns);

    // Leaderboard: one entry per player, best lap first; ben and ana tie at 89.0 and ben's run
    // started first; eve and fay tie at 89.5 in the same minute, so by name; dan has no complete lap.
    let (status, board) = get(&addr, "/v1/leaderboard?track=monza");
    assert_eq!(status, 200, "{board}");
    assert_eq!(players(&board), ["ben", "ana", "eve", "fay", "cho"], "{board}");
    assert_eq!(
        board["entries"][1],
        json!({"rank": 2, "player": "ana", "best_lap_s": 89.0, "session_id": "s2", "car": "gt3", "set_at": "2026-01-01T11:00:00.000000Z"})
    );
    assert_eq!(players(&get(&addr, "/v1/leaderboard?track=monza&car=gt3&limit=2").1), ["ben", "ana"]);
    assert_eq!(players(&get(&addr, "/v1/leaderboard?track=spa").1), ["ana"]);
    assert_eq!(players(&get(&addr, "/v1/leaderboard?track=nowhere").1), Vec::<&str>::new());

    // Runs: newest first (ties by session id, descending), three pages of three.
    let mut seen = Vec::new();
    let mut cursors = Vec::new();
    let mut path = "/v1/runs?limit=3".to_string();
    for page in 0.. {
        let (status, body) = get(&addr, &path);
        assert_eq!(status, 200, "{body}");
        seen.extend(body["runs"].as_array().unwrap().iter().map(|r| r["session_id"].as_str().unwrap().to_string()));
        match body["next_cursor"].as_str() {
            Some(c) => {
                cursors.push(format!("{c:?}"));
                path = format!("/v1/runs?limit=3&cursor={c}");
            }
            None => break,
        }
        assert!(page < 5, "paging does not end");
    }
    assert_eq!(seen, ["s8", "s7", "s5", "s2", "s3", "s1", "s4", "s6"]);
    let (_, ana) = get(&addr, "/v1/runs?player=ana&track=monza");
    let ids: Vec<&str> = ana["runs"].as_array().unwrap().iter().map(|r| r["session_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["s2", "s1"]);
    let (_, since) = get(&addr, &format!("/v1/runs?since={}&car=gt3", urlencode("2026-01-01T11:00:00Z")));
    assert_eq!(since["runs"].as_array().unwrap().len(), 4, "{since}");
    let first = &ana["runs"][0];
    assert_eq!(first["started_at"], "2026-01-01T11:00:00.000000Z");
    assert_eq!((first["total_time_s"].as_f64(), first["best_lap_s"].as_f64(), first["events"].as_i64()), (Some(0.5), Some(89.0), Some(1000)));

    // One run with its lap rows; per-lap performance.
    let (status, s1) = get(&addr, "/v1/runs/s1");
    assert_eq!(status, 200, "{s1}");
    assert_eq!(s1["player"], "ana");
    let lap_rows = s1["lap_rows"].as_array().unwrap();
    assert_eq!((lap_rows.len(), &s1["next_cursor"]), (4, &Value::Null));
    assert_eq!((lap_rows[1]["lap"].as_i64(), lap_rows[1]["lap_time"].as_f64()), (Some(2), Some(90.5)));
    let (status, perf) = get(&addr, "/v1/sessions/s1/performance");
    assert_eq!(status, 200, "{perf}");
    assert_eq!(perf["best_lap"], json!({"lap": 2, "lap_time_s": 90.5, "player": "ana", "car": "gt3"}));
    assert_eq!(perf["complete_laps"], 2);
    assert_eq!(perf["laps"][0]["delta_to_best_s"], 0.5);
    assert_eq!(perf["laps"][2]["delta_to_best_s"], Value::Null);
    assert_eq!(perf["mean_complete_lap_s"], 90.75);
    let spread = perf["consistency_s"].as_f64().unwrap();
    assert!((spread - 0.125f64.sqrt()).abs() < 1e-12, "{spread}");
    // In the order they started, each naming its car: by lap number the two keys' laps mixed.
    let in_order: Vec<(i64, &str)> =
        perf["laps"].as_array().unwrap().iter().map(|l| (l["lap"].as_i64().unwrap(), l["car"].as_str().unwrap())).collect();
    assert_eq!(in_order, [(1, "gt3"), (2, "gt3"), (3, "gt3"), (1, "lmp2")]);
    // A page at a time: a session's laps are not all sent at once. The summary is the session's
    // on every page.
    let mut paged = Vec::new();
    let mut path = "/v1/sessions/s1/performance?limit=3".to_string();
    for page in 0.. {
        let (status, body) = get(&addr, &path);
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!((&body["best_lap"], &body["mean_complete_lap_s"]), (&perf["best_lap"], &perf["mean_complete_lap_s"]), "{body}");
        paged.extend(body["laps"].as_array().unwrap().iter().cloned());
        let Some(c) = body["next_cursor"].as_str() else { break };
        path = format!("/v1/sessions/s1/performance?limit=3&cursor={c}");
        assert!(page < 3, "paging does not end");
    }
    assert_eq!(&paged, perf["laps"].as_array().unwrap());
    let (status, first) = get(&addr, "/v1/runs/s1?limit=3");
    assert_eq!((status, first["lap_rows"].as_array().unwrap().len()), (200, 3), "{first}");
    let (_, rest) = get(&addr, &format!("/v1/runs/s1?limit=3&cursor={}", first["next_cursor"].as_str().unwrap()));
    assert_eq!((&rest["lap_rows"][0], &rest["next_cursor"]), (&lap_rows[3], &Value::Null), "{rest}");

    // Bad parameters: a 400 naming the parameter; nothing there: 404.
    for (path, says) in [
        ("/v1/leaderboard", "track is required"),
        ("/v1/leaderboard?track=monza&limit=abc", "limit: expected an integer from 1 to 1000"),
        ("/v1/leaderboard?track=monza&limit=0", "limit: expected an integer from 1 to 1000"),
        ("/v1/runs?since=yesterday", "since: expected an RFC 3339 UTC timestamp"),
        ("/v1/runs?plyer=ana", "unknown parameter \"plyer\""),
        ("/v1/runs?cursor=zz", "cursor: not a cursor this API returned"),
        ("/v1/runs?player=", "player: expected 1 to 256 characters"),
        ("/v1/runs?player=a%00b", "player: NUL characters are not allowed"),
        ("/v1/runs?since=2026-01-01T10:00:00%2B02:00", "since: expected an RFC 3339 UTC timestamp"),
        // The last of a repeated parameter won, the others silently dropped.
        ("/v1/runs?player=ana&player=ben", "player: given more than once"),
        // A path that is not UTF-8 was answered in plain text, not the API's JSON error.
        ("/v1/runs/%FF", "session"),
        ("/v1/sessions/%FF/performance", "session"),
        ("/v1/sessions/s1/performance?limit=2001", "limit: expected an integer from 1 to 2000"),
        ("/v1/runs/s1?cursor=zz", "cursor: not a cursor this API returned"),
    ] {
        let (status, body) = get(&addr, path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{path}: {body}");
    }
    // A cursor this API could not have made (a time past the year 9999) is refused, not sent on.
    let (status, body) = get(&addr, &format!("/v1/runs?cursor={}", hex_of("runs\n99999999999999999999:s1")));
    assert_eq!(status, 400, "{body}");
    // A cursor pages through its own list only: a runs cursor given for a session's laps, or
    // one session's lap cursor for another's, was read as a place in it.
    let (_, lap_page) = get(&addr, "/v1/sessions/s1/performance?limit=1");
    let lap_cursor = lap_page["next_cursor"].as_str().unwrap();
    for path in [
        format!("/v1/sessions/s1/performance?cursor={}", cursors[0].trim_matches('"')),
        format!("/v1/runs/s1?cursor={}", cursors[0].trim_matches('"')),
        format!("/v1/sessions/s2/performance?cursor={lap_cursor}"),
        format!("/v1/runs?cursor={lap_cursor}"),
    ] {
        let (status, body) = get(&addr, &path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains("not a cursor this API returned for this list"), "{path}: {body}");
    }
    let (status, body) = get(&addr, &format!("/v1/runs/s1?cursor={lap_cursor}"));
    assert_eq!((status, body["lap_rows"].as_array().map(Vec::len)), (200, Some(3)), "a session's lap rows and its laps share a list: {body}");
    // Limits count characters, as the envelope's do: a session id of 120 characters in 360 bytes
    // is one the gateway takes, so it is looked up (none here), not refused; so is a cursor
    // ending at it.
    let wide = urlencode(&"赛".repeat(120));
    let (status, body) = get(&addr, &format!("/v1/runs?cursor={}", hex_of(&format!("runs\n1767225600000000:{}", "赛".repeat(120)))));
    assert_eq!(status, 200, "{body}");
    for path in
        ["/v1/runs/nope", "/v1/sessions/nope/performance", "/v2/whatever", &format!("/v1/runs/{wide}"), &format!("/v1/sessions/{wide}/performance")]
    {
        let (status, body) = get(&addr, path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["error"].is_string());
    }
    // A value that is not UTF-8 once percent-decoded is refused, naming it (not read as U+FFFD).
    let (status, body) = get(&addr, "/v1/runs?player=%FF");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("player: not UTF-8"), "{body}");
    // A route asked with a method it does not take: 405, its methods in Allow, the usual body.
    let (status, head, body) = http_request(&addr, "POST", "/v1/leaderboard");
    assert_eq!(status, 405, "{head}{body}");
    assert!(head.contains("\r\nallow: get,head"), "{head}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    assert!(body["error"].as_str().unwrap().contains("/v1/leaderboard does not take POST"), "{body}");
    let (status, head, body) = http_request(&addr, "POST", "/healthz");
    assert_eq!(status, 405, "{head}{body}");
    assert!(body.contains("/healthz does not take POST"), "the health routes answer alike: {body}");
    // Values are bound, never spliced into SQL.
    let (status, body) = get(&addr, &format!("/v1/runs?player={}", urlencode("x' OR '1'='1")));
    assert_eq!((status, body["runs"].as_array().unwrap().len()), (200, 0), "{body}");

    // The OpenAPI document is the one in schemas/ and names every endpoint.
    let (status, doc) = get(&addr, "/openapi.json");
    assert_eq!(status, 200);
    let file: Value = serde_json::from_str(&std::fs::read_to_string(root().join("schemas/pitgun-api/v1.openapi.json")).unwrap()).unwrap();
    assert_eq!(doc, file);
    for p in ["/v1/runs", "/v1/runs/{session}", "/v1/leaderboard", "/v1/sessions/{session}/performance"] {
        assert!(doc["paths"].get(p).is_some(), "{p} documented");
    }
    let metrics = http_get(&addr, "/metrics");
    assert!(metric(&metrics, "pitgun_api_requests_total", "route=\"leaderboard\",status=\"400\"") >= 3.0, "{metrics}");
    assert_promtool_metrics(&metrics, "api");

    // Generated requests of every documented operation: no 5xx, every answer as documented.
    // Stored sessions for half the path ids, and cursors this API returned (of runs, and of
    // session s1's laps). A cursor is opaque:
    // no schema can say which values the API made, and a made-up one is rightly 400, so only
    // for the paged operations a schema-valid request may be refused (every other check still
    // runs on it).
    let config = format!(
        "[dictionaries.sessions]\nvalues = [\"s1\", \"s2\", \"s5\"]\n[dictionaries.cursors]\nvalues = [{}]\n\
         [parameters]\n\"path.session\" = {{ dictionary = \"sessions\", probability = 0.5 }}\n\
         \"query.cursor\" = {{ dictionary = \"cursors\", probability = 1.0 }}\n\
         [[operations]]\ninclude-operation-id = \"listRuns\"\nchecks.positive_data_acceptance.enabled = false\n\
         [[operations]]\ninclude-operation-id = \"getRun\"\nchecks.positive_data_acceptance.enabled = false\n\
         [[operations]]\ninclude-operation-id = \"sessionPerformance\"\nchecks.positive_data_acceptance.enabled = false\n",
        cursors.iter().cloned().chain([format!("{lap_cursor:?}")]).collect::<Vec<_>>().join(", ")
    );
    schemathesis::assert_schemathesis(&format!("http://{addr}/openapi.json"), "performance API", seed("api"), &[], &config);
}

/// A query that waits (here on a lock a migration would hold) is cut off at `--query-timeout`
/// and answered 503, not held until the client gives up; once the lock is gone the same request
/// is answered.
#[test]
fn a_query_that_waits_past_the_query_timeout_is_a_503() {
    use std::io::{BufRead, BufReader, Write};
    let ns = Ns::new("api-query-timeout");
    let pg = own_database("api_query_timeout");
    let out = pitgun(&postgres_sink(&pg, "--migrate"), &ns);
    assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
    let addr = format!("127.0.0.1:{}", free_port());
    let api = Service::start("api", &["api", "--postgres", &pg, "--listen", &addr, "--connections", "2", "--query-timeout", "1s"], &ns);
    api.wait_for_log("performance API serving", Duration::from_secs(30));
    assert_eq!(get(&addr, "/v1/runs").0, 200);

    // A transaction holding the table, as `ALTER TABLE` or `VACUUM FULL` would.
    let mut holder = std::process::Command::new(psql_bin())
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", &pg])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    writeln!(stdin, "BEGIN; LOCK TABLE runs IN ACCESS EXCLUSIVE MODE; SELECT 'locked';").unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "locked");

    let asked = std::time::Instant::now();
    let (status, body) = get(&addr, "/v1/runs?player=ana");
    let took = asked.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(took < Duration::from_secs(4), "answered after {took:?}, not at the 1 s query timeout");

    writeln!(stdin, "ROLLBACK;").unwrap();
    drop(stdin);
    assert!(holder.wait().unwrap().success());
    assert_eq!(get(&addr, "/v1/runs?player=ana").0, 200, "answered again once the lock is gone");
}

/// A database that stops answering (frozen, or its network silently dropping packets) is a 503
/// within `--query-timeout` and a few seconds: the server cannot cancel a query it never
/// reads, and the API waited on it for as long as TCP keeps a connection (hours). The stuck
/// connection is closed, not pooled again, so once the database answers the API does too.
#[test]
fn a_database_that_stops_answering_is_a_503_not_a_hung_request() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let ns = Ns::new("api-no-answer");
    let pg = own_database("api_no_answer");
    let out = pitgun(&postgres_sink(&pg, "--migrate"), &ns);
    assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
    // A relay to PostgreSQL that can stop passing bytes on, as a partition would.
    let (base, db) = pg.rsplit_once('/').unwrap();
    let (creds, target) = base.rsplit_once('@').unwrap();
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_url = format!("{creds}@{}/{db}", relay.local_addr().unwrap());
    let frozen = Arc::new(AtomicBool::new(false));
    let (target, held) = (target.to_string(), Arc::clone(&frozen));
    std::thread::spawn(move || {
        for client in relay.incoming().flatten() {
            let server = std::net::TcpStream::connect(&target).unwrap();
            for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                let held = Arc::clone(&held);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        while held.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    let addr = format!("127.0.0.1:{}", free_port());
    let api = Service::start("api", &["api", "--postgres", &relay_url, "--listen", &addr, "--connections", "1", "--query-timeout", "1s"], &ns);
    api.wait_for_log("performance API serving", Duration::from_secs(30));
    assert_eq!(get(&addr, "/v1/runs").0, 200);

    frozen.store(true, Ordering::Relaxed);
    let asked = std::time::Instant::now();
    let (status, body) = get(&addr, "/v1/runs");
    let took = asked.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
    assert!(body["error"].is_string(), "{body}");
    api.wait_for_log("did not answer within", Duration::from_secs(5));

    frozen.store(false, Ordering::Relaxed);
    assert_eq!(get(&addr, "/v1/runs").0, 200, "answered again once the database is");
}
