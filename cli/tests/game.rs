//! The browser game end to end, in Debian's chromium driven by `playwright-core`
//! (`game/test/browser-driver.mjs`): the page is served by `pitgun api --game`, gets its
//! session token from `POST /v1/sessions`, and sends its envelopes to the real gateway; two
//! processors (lap-performance, session-summary), the sink and PostgreSQL turn them into the
//! run the page then reads back. A seeded autopilot drives 3 laps, fast-forwarded (several
//! simulation steps per frame; event times stay simulation times).
//!
//! Needs `game/dist` and `game/node_modules` (`scripts/test.sh` runs `npm ci` and
//! `npm run build` in `game/` before the tests).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The driver: one chromium page, commands in on stdin, one JSON answer per line out.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<Value>,
}

impl Browser {
    fn start() -> Browser {
        let game = root().join("game");
        assert!(
            game.join("dist/index.html").is_file() && game.join("node_modules/playwright-core").is_dir(),
            "the game is not built: run `npm ci --prefix game && npm --prefix game run build` (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg(game.join("test/browser-driver.mjs"))
            .current_dir(&game)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs");
        let (tx, answers) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        let _ = tx.send(v);
                    }
                    Err(_) => eprintln!("[browser] {line}"),
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[browser] {line}");
            }
        });
        let stdin = child.stdin.take().unwrap();
        Browser { child, stdin, answers }
    }

    /// Sends one command and waits for its answer (the driver's own timeout plus a margin).
    fn ask(&mut self, command: Value) -> Value {
        let timeout = command["timeout_s"].as_u64().unwrap_or(60) + 30;
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let answer =
            self.answers.recv_timeout(Duration::from_secs(timeout)).unwrap_or_else(|e| panic!("{command}: no answer within {timeout} s ({e})"));
        assert!(answer.get("error").is_none(), "{command}: {answer}");
        answer
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"quit": true}));
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a TCP front of the gateway does with new connections.
const FORWARD: u8 = 0;
/// Answers every request 503 with `Retry-After: 1`, as the gateway does when the broker does
/// not acknowledge (a stand-in: the real 503 needs the shared broker stopped).
const UNAVAILABLE: u8 = 1;
/// Not listening: connections are refused, as when the gateway is down.
const REFUSED: u8 = 2;

/// A TCP front of the gateway at a fixed address, so the browser's gateway URL stays valid
/// while the test takes the gateway away.
struct Front {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    /// The client side of every forwarded connection, cut when the gateway is taken away (a
    /// browser keeps its connection alive across requests).
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Front {
    fn start(gateway: SocketAddr) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let open = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (m, o) = (mode.clone(), open.clone());
        std::thread::spawn(move || {
            let mut listener = Some(listener);
            loop {
                if m.load(Ordering::SeqCst) == REFUSED {
                    listener = None;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let l = listener.get_or_insert_with(|| TcpListener::bind(addr).expect("the front's port again"));
                l.set_nonblocking(true).unwrap();
                match l.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        if m.load(Ordering::SeqCst) == UNAVAILABLE {
                            std::thread::spawn(move || answer_unavailable(client, gateway));
                        } else {
                            o.lock().unwrap().push(client.try_clone().unwrap());
                            std::thread::spawn(move || forward(client, gateway));
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(e) => panic!("front: {e}"),
                }
            }
        });
        Front { addr, mode, open }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        if mode != FORWARD {
            for c in self.open.lock().unwrap().drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// 503 with `Retry-After: 1` and the CORS headers the gateway's own 503 carries; preflights
/// still reach the gateway, which answers them without the broker.
fn answer_unavailable(mut client: TcpStream, gateway: SocketAddr) {
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = client.read(&mut buf).unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    if head.starts_with("OPTIONS ") {
        let Ok(mut server) = TcpStream::connect(gateway) else { return };
        if server.write_all(&buf[..n]).is_ok() {
            pipe(client, server);
        }
        return;
    }
    let origin = head.lines().find_map(|l| l.to_ascii_lowercase().starts_with("origin:").then(|| l[7..].trim().to_string())).unwrap_or_default();
    let body = r#"{"error":"unavailable","message":"the broker did not acknowledge (test front)"}"#;
    let _ = write!(
        client,
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nAccess-Control-Allow-Origin: {origin}\r\nAccess-Control-Expose-Headers: retry-after\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn forward(client: TcpStream, to: SocketAddr) {
    if let Ok(server) = TcpStream::connect(to) {
        pipe(client, server);
    }
}

/// Copies both ways until each side has finished.
fn pipe(client: TcpStream, server: TcpStream) {
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (mut c, mut s) = (client, server);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut s, &mut c);
    let _ = c.shutdown(std::net::Shutdown::Write);
}

/// The live stack behind the page.
struct Stack {
    _services: Vec<Service>,
    front: Front,
    api: String,
    pg: String,
    _dir: tempfile::TempDir,
}

fn start_stack(test: &str) -> Stack {
    let ns = Ns::new(test);
    ns.create_topics(2);
    let pg = own_database(test);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("session.secret");
    let out = Command::new(env!("CARGO_BIN_EXE_pitgun")).args(["gateway", "session-secret", "--out"]).arg(&secret).output().unwrap();
    assert!(out.status.success(), "session-secret: {}", String::from_utf8_lossy(&out.stderr));
    let secret = secret.to_str().unwrap().to_string();
    let api_port = free_port();
    let api = format!("127.0.0.1:{api_port}");
    let origin = format!("http://{api}");

    let keys = dir.path().join("keys.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_pitgun")).args(["gateway", "keygen", "--source", "pitgun-sim", "--keys"]).arg(&keys).output().unwrap();
    assert!(out.status.success());
    // Fast-forwarded sessions send simulation times up to a few minutes ahead of the clock.
    let gw = Service::start(
        "gateway",
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--keys",
            keys.to_str().unwrap(),
            "--session-secret-file",
            &secret,
            "--cors-origin",
            &origin,
            "--max-future-skew",
            "30m",
        ],
        &ns,
    );
    let line = gw.wait_for_log("listening on ", Duration::from_secs(30));
    let gw_addr: SocketAddr = line.split("listening on http://").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    let front = Front::start(gw_addr);

    let mut services = vec![gw];
    for m in ["lap-performance", "session-summary"] {
        let state = dir.path().join(format!("state-{m}"));
        let manifest = format!("manifests/pipelines/{m}.v1.yaml");
        let p = Service::start(
            "process",
            &["process", "--manifest", &manifest, "--state-dir", state.to_str().unwrap(), "--threads", "1", "--checkpoint-interval", "200ms"],
            &ns,
        );
        services.push(p);
    }
    let sink = Service::start(
        "sink",
        &[
            "sink",
            "--manifest",
            "manifests/pipelines/lap-performance.v1.yaml",
            "--manifest",
            "manifests/pipelines/session-summary.v1.yaml",
            "--targets",
            "postgres",
            "--postgres",
            &pg,
        ],
        &ns,
    );
    sink.wait_for_log("sink started", Duration::from_secs(60));
    services.push(sink);
    let game = root().join("game/dist");
    let api_service = Service::start(
        "api",
        &[
            "api",
            "--postgres",
            &pg,
            "--listen",
            &api,
            "--connections",
            "2",
            "--session-secret-file",
            &secret,
            "--gateway-url",
            &format!("http://{}", front.addr),
            "--sessions-per-minute",
            "4",
            "--game",
            game.to_str().unwrap(),
        ],
        &ns,
    );
    api_service.wait_for_log("performance API serving", Duration::from_secs(30));
    services.push(api_service);
    Stack { _services: services, front, api, pg, _dir: dir }
}

/// The page's own numbers, the results screen's and the leaderboard's, as the driver read them.
struct PageRun {
    session: String,
    /// Per completed lap: the page's lap timer, µs.
    timer_us: Vec<i64>,
    /// Per lap on the results screen: the API's lap time, s.
    results_s: Vec<f64>,
    leaderboard: Vec<String>,
}

fn read_page(browser: &mut Browser, tab: u32) -> PageRun {
    let page = browser.ask(json!({"read": true, "tab": tab}));
    let laps = |key: &str, field: &str| -> Vec<Value> {
        let mut v: Vec<Value> = page[key].as_array().unwrap_or_else(|| panic!("{key} in {page}")).clone();
        v.sort_by_key(|l| l["lap"].as_i64().unwrap());
        v.into_iter().map(|l| l[field].clone()).collect()
    };
    PageRun {
        session: page["session"].as_str().unwrap().to_string(),
        timer_us: laps("laps", "us").iter().map(|v| v.as_i64().unwrap()).collect(),
        results_s: laps("results", "lap_time_s").iter().map(|v| v.as_f64().unwrap()).collect(),
        leaderboard: page["leaderboard"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect(),
    }
}

/// The complete laps of the session's run, from the API (waits until the run has `laps`).
fn api_laps(api: &str, session: &str, laps: usize) -> Vec<f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get_status(api, &format!("/v1/runs/{session}"));
        if status == 200 {
            let run: Value = serde_json::from_str(&body).unwrap();
            if run["laps"].as_u64() == Some(laps as u64) {
                let mut rows: Vec<&Value> = run["lap_rows"].as_array().unwrap().iter().filter(|r| r["complete"] == json!(true)).collect();
                rows.sort_by_key(|r| r["lap"].as_i64().unwrap());
                return rows.iter().map(|r| r["lap_time"].as_f64().unwrap()).collect();
            }
        }
        assert!(Instant::now() < deadline, "the run of {session} did not reach {laps} laps within 60 s: {status} {body}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn assert_same_laps(page: &PageRun, api: &[f64], what: &str) {
    assert_eq!(page.timer_us.len(), api.len(), "{what}: the page timed {:?}, the API has {api:?}", page.timer_us);
    for (i, (us, s)) in page.timer_us.iter().zip(api).enumerate() {
        let diff_ms = (*us as f64 / 1000.0 - s * 1000.0).abs();
        assert!(diff_ms <= 1.0, "{what}: lap {}: page timer {us} µs, API {s} s ({diff_ms} ms apart)", i + 1);
    }
}

fn screenshot(browser: &mut Browser, name: &str) -> PathBuf {
    let path = root().join("docs").join(name);
    browser.ask(json!({"screenshot": path}));
    path
}

fn page_url(stack: &Stack, player: &str, seed: u64) -> String {
    format!("http://{}/play/?autopilot={seed}&speed=8&player={player}&track=monza&car=gt3&laps=3", stack.api)
}

/// Three laps driven by the seeded autopilot: the API's lap times equal the page's lap timer
/// within 1 ms, the results screen shows the API's numbers and the leaderboard the player.
#[test]
fn three_autopilot_laps_in_chromium_equal_the_apis_run() {
    let seed = seed("game-three-laps");
    let stack = start_stack("game_three_laps");
    let mut browser = Browser::start();
    browser.ask(json!({"open": page_url(&stack, "ada", seed)}));
    browser.ask(json!({"wait": "lap", "n": 1, "timeout_s": 120}));
    screenshot(&mut browser, "game.png");
    browser.ask(json!({"wait": "results", "timeout_s": 240}));
    let page = read_page(&mut browser, 0);
    let api = api_laps(&stack.api, &page.session, 3);
    assert_same_laps(&page, &api, "three laps");
    assert_eq!(page.results_s.len(), api.len(), "the results screen lists each lap");
    for (shown, stored) in page.results_s.iter().zip(&api) {
        assert!((shown - stored).abs() < 1e-6, "the results screen shows {shown} s, the API {stored} s");
    }
    assert!(page.leaderboard.iter().any(|p| p == "ada"), "the leaderboard shows the player: {:?}", page.leaderboard);
    screenshot(&mut browser, "game-results.png");

    // The session endpoint: a quota per address (a burst of 4, then one every 15 s here).
    let answers: Vec<(u16, String)> = (0..6).map(|_| post(&stack.api, "/v1/sessions")).collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert!(statuses.iter().filter(|s| **s == 201).count() <= 4 && statuses[4..] == [429, 429], "{statuses:?}");
    let refused = &answers[5].1.to_ascii_lowercase();
    assert!(refused.contains("retry-after:"), "a 429 says when to ask again: {refused}");
}

/// The gateway away for 10 s in the middle of a session (5 s of 503s, then 5 s of refused
/// connections) and the page reloaded in the middle of another lap: the run in PostgreSQL is
/// complete, no lap doubled, and its laps are the page's.
#[test]
fn a_gateway_outage_and_a_reload_mid_session_lose_and_double_nothing() {
    let seed = seed("game-outage") + 1;
    let stack = start_stack("game_outage");
    let mut browser = Browser::start();
    browser.ask(json!({"open": page_url(&stack, "bo", seed)}));
    browser.ask(json!({"wait": "lap", "n": 1, "timeout_s": 120}));
    stack.front.set(UNAVAILABLE);
    std::thread::sleep(Duration::from_secs(5));
    stack.front.set(REFUSED);
    std::thread::sleep(Duration::from_secs(5));
    stack.front.set(FORWARD);
    browser.ask(json!({"wait": "lap", "n": 2, "timeout_s": 120}));
    let seen = browser.ask(json!({"read": true}))["telemetry"].clone();
    assert!(seen["responses503"].as_u64() > Some(0) && seen["networkErrors"].as_u64() > Some(0), "the page met both kinds of outage: {seen}");
    browser.ask(json!({"reload": true, "timeout_s": 60}));
    browser.ask(json!({"wait": "results", "timeout_s": 240}));
    let page = read_page(&mut browser, 0);
    let api = api_laps(&stack.api, &page.session, 3);
    assert_same_laps(&page, &api, "outage and reload");
    assert_no_lap_stored_twice(&stack.pg, &page.session);
    let laps = psql(&stack.pg, &format!("SELECT laps FROM runs WHERE session_id = '{}'", page.session));
    assert_eq!(laps.trim(), "3", "the run counts 3 laps");
}

/// A second tab opened on a race in progress waits (it neither resumes the saved race nor sends
/// its stored batches) and takes the race over when the first tab closes: the run is complete,
/// no lap doubled, and its laps are the second tab's.
#[test]
fn a_second_tab_waits_while_the_first_drives_and_takes_the_race_over_when_it_closes() {
    let seed = seed("game-two-tabs") + 2;
    let stack = start_stack("game_two_tabs");
    let mut browser = Browser::start();
    let url = page_url(&stack, "cy", seed);
    let second = open_beside_a_race(&mut browser, &url);
    assert_eq!(second["session"], Value::Null, "the second tab drives no session: {second}");
    let first = browser.ask(json!({"read": true}));
    assert_eq!(first["state"], json!("racing"), "the first tab races on: {first}");
    browser.ask(json!({"close": true}));
    browser.ask(json!({"wait": "results", "tab": 1, "timeout_s": 240}));
    let page = read_page(&mut browser, 1);
    assert_eq!(json!(page.session), first["session"], "the second tab took over the first tab's race");
    let api = api_laps(&stack.api, &page.session, 3);
    assert_same_laps(&page, &api, "two tabs");
    assert_no_lap_stored_twice(&stack.pg, &page.session);
}

/// "Race again" lets the race go with the results: a tab that waited beside the finished race
/// offers a new one instead of driving, the first tab's next race is its own, and the waiting
/// tab's start is then refused, saying why.
#[test]
fn after_the_results_race_again_races_in_its_own_tab_and_a_second_start_beside_it_is_refused() {
    let seed = seed("game-race-again") + 3;
    let stack = start_stack("game_race_again");
    let mut browser = Browser::start();
    let url = page_url(&stack, "ed", seed);
    open_beside_a_race(&mut browser, &url);
    // A hidden tab's race pauses, as a player's does when they switch tabs.
    browser.ask(json!({"front": true}));
    browser.ask(json!({"wait": "results", "timeout_s": 240}));
    let first = read_page(&mut browser, 0);
    assert_same_laps(&first, &api_laps(&stack.api, &first.session, 3), "the first race");
    // The finished race no longer holds the lock: the waiting tab offers a new race, driving none.
    let second = read_when(&mut browser, 1, 10, |p| p["state"] != json!("elsewhere"));
    assert_eq!(second["state"], json!("start"), "the waiting tab offers a new race once the first is over: {second}");
    assert_eq!(second["session"], Value::Null, "the waiting tab drives no session: {second}");
    browser.ask(json!({"click": "#again", "loads": true}));
    let again = read_when(&mut browser, 0, 30, |p| p["state"] == json!("start"));
    assert_eq!(again["state"], json!("start"), "race again shows the start form: {again}");
    browser.ask(json!({"click": "#go"}));
    let again = read_when(&mut browser, 0, 30, |p| p["state"] == json!("racing"));
    assert_eq!(again["state"], json!("racing"), "race again races in the tab it was clicked in: {again}");
    assert!(again["session"].is_string() && again["session"] != json!(first.session), "a new session: {again}");
    browser.ask(json!({"click": "#go", "tab": 1}));
    let second = read_when(&mut browser, 1, 10, |p| p["start_error"] != json!(""));
    assert!(second["start_error"].as_str().unwrap().contains("another tab"), "the second start is refused, saying why: {second}");
    assert_eq!(second["session"], Value::Null, "the refused tab drives no session: {second}");
    let again = browser.ask(json!({"read": true}));
    assert_eq!(again["state"], json!("racing"), "the first tab races on: {again}");
    assert_no_lap_stored_twice(&stack.pg, &first.session);
}

/// Starts the race at `url` in tab 0 and, once it has a lap, opens `url` in tab 1, which waits
/// for it (asserted); tab 1's state.
fn open_beside_a_race(browser: &mut Browser, url: &str) -> Value {
    browser.ask(json!({"open": url}));
    browser.ask(json!({"wait": "lap", "n": 1, "timeout_s": 120}));
    browser.ask(json!({"open": url, "tab": 1}));
    // The page settles which tab drives as it starts: give it a moment to (wrongly) start racing.
    let second = read_when(browser, 1, 5, |p| p["state"] != json!("start"));
    assert_eq!(second["state"], json!("elsewhere"), "the second tab waits for the first: {second}");
    second
}

/// The page's state once `done` holds, or after `secs` seconds (the caller's assertion then
/// shows the state it was left in).
fn read_when(browser: &mut Browser, tab: u32, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let page = browser.ask(json!({"read": true, "tab": tab}));
        if done(&page) || Instant::now() > deadline {
            return page;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_no_lap_stored_twice(pg: &str, session: &str) {
    let rows = psql(pg, &format!("SELECT lap, count(*) FROM lap_performance_v1 WHERE session_id = '{session}' GROUP BY lap HAVING count(*) > 1"));
    assert!(rows.trim().is_empty(), "a lap of {session} is stored twice: {rows}");
}

/// POST with an empty body; the status and the whole answer.
fn post(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    (buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), buf)
}
