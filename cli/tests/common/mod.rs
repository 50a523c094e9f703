//! What the live tests share: the broker `scripts/test.sh` started, a namespace per test (so no
//! test sees another's topics or groups), and running `pitgun` subcommands.
#![allow(dead_code)]

#[path = "../../../sink/tests/support/questdb_standin.rs"]
pub mod questdb_standin;
pub mod schemathesis;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// The `pitgun` binary under test: the one cargo built with the tests, or `PITGUN_TEST_BIN`
/// (scripts/soak.sh runs a copy, so a rebuild during a long soak does not change what it restarts).
pub fn pitgun_bin() -> PathBuf {
    std::env::var_os("PITGUN_TEST_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pitgun")))
}

/// The repository root (tests run in `cli/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The broker started by `scripts/test.sh`. Missing means the test was run outside the test
/// command: fail loudly rather than skip, so a green run always means the test ran.
pub fn brokers() -> String {
    std::env::var("PITGUN_TEST_BROKERS").expect(
        "PITGUN_TEST_BROKERS is not set: run the live tests through scripts/test.sh, which starts a broker \
         (or start one with scripts/stack.sh up and export PITGUN_TEST_BROKERS=127.0.0.1:9092)",
    )
}

/// A test's own namespace: topic and group names are prefixed with it.
pub struct Ns {
    pub name: String,
    pub brokers: String,
}

impl Ns {
    pub fn new(test: &str) -> Ns {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
        Ns { name: format!("t-{test}-{}-{nanos}", std::process::id()), brokers: brokers() }
    }

    pub fn topic(&self, base: &str) -> String {
        format!("{}.{base}", self.name)
    }

    pub fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers).set("broker.address.family", "v4");
        c
    }

    /// Creates one topic of this namespace.
    pub fn create_topic(&self, base: &str, partitions: i32) {
        pitgun_runtime::kafka::Broker::new(self.brokers.clone(), "")
            .ensure_topics(&[self.topic(base)], partitions, Duration::from_secs(20))
            .expect("topic created within 20 s");
    }

    /// Deletes one topic of this namespace and, after `while_gone()` returns, creates it again,
    /// empty, with `partitions` (what an operator does to reset a topic under running clients).
    pub fn recreate_topic(&self, base: &str, partitions: i32, while_gone: impl FnOnce()) {
        use rdkafka::admin::{AdminClient, AdminOptions};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let topic = self.topic(base);
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let deleted = rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), admin.delete_topics(&[&topic], &opts)).await });
        let results = deleted.expect("topic deleted within 20 s").expect("delete request answered");
        assert!(results.iter().all(|r| r.is_ok()), "deleting {topic}: {results:?}");
        while_gone();
        // The broker may still hold the name for a moment after the delete.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let created = pitgun_runtime::kafka::Broker::new(self.brokers.clone(), "").ensure_topics(
                std::slice::from_ref(&topic),
                partitions,
                Duration::from_secs(10),
            );
            let consumer: rdkafka::consumer::BaseConsumer = self.config().create().unwrap();
            let md = rdkafka::consumer::Consumer::fetch_metadata(&consumer, Some(&topic), Duration::from_secs(10));
            if created.is_ok() && md.is_ok_and(|m| m.topics().iter().any(|t| t.name() == topic && t.partitions().len() == partitions as usize)) {
                return;
            }
            assert!(Instant::now() < deadline, "{topic} not created again within 20 s: {created:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn create_topics(&self, partitions: i32) {
        let names = [self.topic("pitgun.envelopes.v1"), self.topic("pitgun.deadletter.ingest.v1"), self.topic("pitgun.deadletter.process.v1")];
        pitgun_runtime::kafka::Broker::new(self.brokers.clone(), "")
            .ensure_topics(&names, partitions, Duration::from_secs(20))
            .expect("topics created within 20 s");
    }

    /// Produces NDJSON envelope lines straight to the envelopes topic (as a service publishing
    /// JSON to Kafka would), keyed by session id; waits for every acknowledgement.
    pub fn produce_lines<'a>(&self, lines: impl IntoIterator<Item = &'a str>) -> usize {
        let producer: BaseProducer = self.config().set("enable.idempotence", "true").set("linger.ms", "5").create().unwrap();
        let topic = self.topic("pitgun.envelopes.v1");
        let mut n = 0;
        for line in lines {
            let key = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["session_id"].as_str().map(|s| s.to_string()))
                .unwrap_or_default();
            let mut rec = BaseRecord::to(&topic).key(&key).payload(line);
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        rec = r;
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
            producer.poll(Duration::ZERO);
            n += 1;
        }
        producer.flush(Duration::from_secs(60)).expect("every envelope acknowledged within 60 s");
        n
    }

    /// Produces one record whose header names are any bytes (but NUL), as a Kafka producer
    /// may send them: rdkafka's `Header` takes a name as `&str`, so this goes through
    /// librdkafka's own `rd_kafka_produceva`. Waits until the send is done (a delivery error
    /// is not reported here: the test's reads then miss the record).
    pub fn produce_with_byte_header_names(&self, topic: &str, key: &[u8], value: &[u8], headers: &[(&[u8], &[u8])]) {
        use rd::rd_kafka_vtype_t::*;
        use rdkafka::bindings as rd;
        use std::ffi::CString;
        let producer: BaseProducer = self.config().create().unwrap();
        let topic = CString::new(topic).unwrap();
        let names: Vec<CString> = headers.iter().map(|(name, _)| CString::new(*name).expect("no NUL in a header name")).collect();
        let mem = |b: &[u8]| rd::rd_kafka_vu_s__bindgen_ty_1 {
            mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 { ptr: b.as_ptr() as *mut _, size: b.len() },
        };
        let mut vus = vec![
            rd::rd_kafka_vu_t { vtype: RD_KAFKA_VTYPE_TOPIC, u: rd::rd_kafka_vu_s__bindgen_ty_1 { cstr: topic.as_ptr() } },
            rd::rd_kafka_vu_t { vtype: RD_KAFKA_VTYPE_MSGFLAGS, u: rd::rd_kafka_vu_s__bindgen_ty_1 { i: rd::RD_KAFKA_MSG_F_COPY } },
            rd::rd_kafka_vu_t { vtype: RD_KAFKA_VTYPE_KEY, u: mem(key) },
            rd::rd_kafka_vu_t { vtype: RD_KAFKA_VTYPE_VALUE, u: mem(value) },
        ];
        for (name, (_, value)) in names.iter().zip(headers) {
            let header =
                rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_2 { name: name.as_ptr(), val: value.as_ptr().cast(), size: value.len() as isize };
            vus.push(rd::rd_kafka_vu_t { vtype: RD_KAFKA_VTYPE_HEADER, u: rd::rd_kafka_vu_s__bindgen_ty_1 { header } });
        }
        // SAFETY: every pointer in `vus` is to a value alive through the call, and librdkafka
        // copies the key, the value (RD_KAFKA_MSG_F_COPY) and the headers before it returns.
        let error = unsafe { rd::rd_kafka_produceva(producer.client().native_ptr(), vus.as_ptr(), vus.len()) };
        if !error.is_null() {
            // SAFETY: a non-null result is an error object this call owns; its string lives until it is destroyed.
            let text = unsafe { std::ffi::CStr::from_ptr(rd::rd_kafka_error_string(error)).to_string_lossy().into_owned() };
            unsafe { rd::rd_kafka_error_destroy(error) };
            panic!("produce to {topic:?}: {text}");
        }
        producer.flush(Duration::from_secs(20)).expect("the record acknowledged within 20 s");
    }

    /// `pitgun tail --latest`: the last version of every row on a topic, in arrival order.
    pub fn latest_rows(&self, topic_base: &str) -> Vec<String> {
        let out = pitgun(&["tail", "--topic", topic_base, "--from-beginning", "--until-end", "--latest"], self);
        assert!(out.status.success(), "tail failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(|l| l.to_string()).collect()
    }

    /// Every record on a topic (all versions).
    pub fn all_records(&self, topic_base: &str) -> Vec<String> {
        let out = pitgun(&["tail", "--topic", topic_base, "--from-beginning", "--until-end"], self);
        assert!(out.status.success(), "tail failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(|l| l.to_string()).collect()
    }
}

/// Runs `pitgun ARGS` with the namespace's broker settings and waits (5 min deadline).
pub fn pitgun(args: &[&str], ns: &Ns) -> Output {
    pitgun_within(args, ns, Duration::from_secs(300))
}

/// [`pitgun`] with its own deadline.
pub fn pitgun_within(args: &[&str], ns: &Ns, deadline: Duration) -> Output {
    wait_output(&mut pitgun_started(args, ns), deadline, &format!("pitgun {}", args.join(" ")))
}

/// `pitgun ARGS` started with the namespace's broker settings, its output piped.
pub fn pitgun_started(args: &[&str], ns: &Ns) -> Child {
    Command::new(pitgun_bin())
        .args(args)
        .env("PITGUN_BROKERS", &ns.brokers)
        .env("PITGUN_NAMESPACE", &ns.name)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child with a deadline, collecting its output; kills it and panics past it.
pub fn wait_output(child: &mut Child, deadline: Duration, what: &str) -> Output {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        stdout.read_to_end(&mut v).ok();
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        stderr.read_to_end(&mut v).ok();
        v
    });
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            child.kill().ok();
            let err = err_t.join().unwrap();
            panic!("{what} did not finish within {deadline:?}; stderr:\n{}", String::from_utf8_lossy(&err));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap() }
}

/// A `pitgun` service running in the background, its stderr collected line by line.
pub struct Service {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
    pub name: String,
}

impl Service {
    pub fn start(name: &str, args: &[&str], ns: &Ns) -> Service {
        Service::start_with_env(name, args, ns, &[])
    }

    /// [`Service::start`] with extra environment variables (failpoints).
    pub fn start_with_env(name: &str, args: &[&str], ns: &Ns, env: &[(&str, &str)]) -> Service {
        let mut child = Command::new(pitgun_bin())
            .args(args)
            .envs(env.iter().copied())
            .env("PITGUN_BROKERS", &ns.brokers)
            .env("PITGUN_NAMESPACE", &ns.name)
            .env("RUST_LOG", "info,rdkafka=warn")
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        for stream in [Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stdout.take().unwrap())] {
            let log = log.clone();
            let tag = name.to_string();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[{tag}] {line}");
                    log.lock().unwrap().push(line);
                }
            });
        }
        Service { child, log, name: name.to_string() }
    }

    /// Waits until a log line contains `needle` (deadline), returns it.
    pub fn wait_for_log(&self, needle: &str, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            if Instant::now() > end {
                panic!("{}: no log line with {needle:?} within {deadline:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits for exit (deadline); returns whether it succeeded.
    pub fn wait(&mut self, deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // let the log threads drain
                return s.success();
            }
            if Instant::now() > end {
                self.child.kill().ok();
                panic!("{} did not exit within {deadline:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigkill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    pub fn sigterm(&mut self) {
        unsafe_kill(self.child.id(), "TERM");
    }

    /// The JSON summary `pitgun process` prints at exit.
    pub fn summary(&self) -> serde_json::Value {
        self.log
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok().filter(|v| v.get("records").is_some() || v.get("batches").is_some()))
            .expect("a summary line")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
}

/// Writes a simulated dataset and returns its path.
pub fn simulate(dir: &Path, name: &str, seed: u64, sessions: u32, duration: &str, faults: Option<&str>) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new(pitgun_bin());
    cmd.args(["simulate", "--quiet", "--seed", &seed.to_string(), "--sessions", &sessions.to_string(), "--duration", duration, "--output"])
        .arg(&path);
    if let Some(f) = faults {
        cmd.args(["--faults", f]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "simulate: {}", String::from_utf8_lossy(&out.stderr));
    path
}

/// `pitgun replay` rows for a manifest over a dataset, as text.
pub fn replay(manifest: &Path, dictionary: Option<&Path>, dataset: &Path, extra: &[&str]) -> String {
    let mut cmd = Command::new(pitgun_bin());
    cmd.current_dir(root()).args(["replay", "--quiet", "--manifest"]).arg(manifest).arg("--input").arg(dataset).args(extra);
    if let Some(d) = dictionary {
        cmd.arg("--dictionary").arg(d);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "replay: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn row_id(line: &str) -> String {
    serde_json::from_str::<serde_json::Value>(line).unwrap()["row_id"].as_str().expect("row has row_id").to_string()
}

/// Puts the topic's latest rows in replay's canonical order and compares them byte for byte
/// with replay's output.
pub fn assert_rows_equal_replay(latest: &[String], replay_text: &str, what: &str) {
    if let Err(e) = rows_equal_replay(latest, replay_text) {
        panic!("{what}: {e}");
    }
}

/// [`assert_rows_equal_replay`]'s comparison; the difference, if any, said.
pub fn rows_equal_replay(latest: &[String], replay_text: &str) -> Result<(), String> {
    let by_id: HashMap<String, &String> = latest.iter().map(|l| (row_id(l), l)).collect();
    let mut ordered = String::new();
    let mut missing = Vec::new();
    for line in replay_text.lines() {
        match by_id.get(&row_id(line)) {
            Some(l) => {
                ordered.push_str(l);
                ordered.push('\n');
            }
            None => missing.push(line.to_string()),
        }
    }
    if let Some(first) = missing.first() {
        return Err(format!("{} replay rows missing on the topic, first: {first}", missing.len()));
    }
    if latest.len() != replay_text.lines().count() {
        return Err(format!("the topic has rows replay does not ({} against {})", latest.len(), replay_text.lines().count()));
    }
    match ordered.lines().zip(replay_text.lines()).find(|(a, b)| a != b) {
        Some((stream, replay)) => Err(format!("rows differ from replay; first difference:\n stream: {stream:?}\n replay: {replay:?}")),
        None => Ok(()),
    }
}

/// A free port on 127.0.0.1 (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET a path over plain HTTP/1.0, returning the body (10 s deadline). A server still starting
/// (connection refused) is tried again until the deadline.
pub fn http_get(addr: &str, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{addr} not answering yet ({e}); retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{addr} did not accept a connection within 10 s: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

/// The value of a Prometheus sample whose line starts with `prefix` (name and labels).
/// A service's `/metrics` text passes `promtool check metrics` (Prometheus's own parser and
/// naming lints; Debian's `prometheus` package, which the test command installs).
pub fn assert_promtool_metrics(text: &str, service: &str) {
    assert!(text.contains("pitgun_"), "{service}: no Pitgun metric in /metrics:\n{text}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/stack.sh install installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{service}: promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn metric(text: &str, name: &str, label_contains: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(label_contains))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// A seed for randomised test steps: `PITGUN_TEST_SEED` or a fixed default, always printed.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("PITGUN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261126);
    eprintln!("{test}: seed {s} (rerun with PITGUN_TEST_SEED={s})");
    s
}

/// The gateway on a free port with API keys for the simulator's sources: the service, its URL
/// and the `source=key` file `pitgun simulate --target --api-keys` reads.
pub fn start_gateway(ns: &Ns, dir: &Path) -> (Service, String, PathBuf) {
    let (keys, api_keys_file) = gateway_keys(dir);
    let gw = Service::start("gateway", &["gateway", "--listen", "127.0.0.1:0", "--keys", keys.to_str().unwrap()], ns);
    let line = gw.wait_for_log("listening on ", Duration::from_secs(30));
    let url = line.split("listening on ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    (gw, url, api_keys_file)
}

/// A gateway keys file with a key for each of the simulator's sources, and the `source=key`
/// file `pitgun simulate --target --api-keys` reads.
pub fn gateway_keys(dir: &Path) -> (PathBuf, PathBuf) {
    let keys = dir.join("keys.yaml");
    let mut api_keys = String::new();
    for source in ["pitgun-web", "pitgun-sim"] {
        let out = Command::new(pitgun_bin()).args(["gateway", "keygen", "--source", source, "--keys"]).arg(&keys).output().unwrap();
        assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
        api_keys.push_str(&format!("{source}={}\n", String::from_utf8(out.stdout).unwrap().trim()));
    }
    let api_keys_file = dir.join("api-keys");
    std::fs::write(&api_keys_file, api_keys).unwrap();
    (keys, api_keys_file)
}

/// The PostgreSQL server `scripts/test.sh` starts (admin URL). Missing fails the test, as for
/// the broker.
pub fn postgres() -> String {
    std::env::var("PITGUN_TEST_POSTGRES").expect(
        "PITGUN_TEST_POSTGRES is not set: run the live tests through scripts/test.sh, which starts PostgreSQL \
         (or scripts/stack.sh up and export PITGUN_TEST_POSTGRES=postgres://pitgun:pitgun@127.0.0.1:54329/pitgun)",
    )
}

/// The `psql` client: on the PATH, or where Debian's package puts it.
pub fn psql_bin() -> &'static str {
    ["psql", "/usr/lib/postgresql/15/bin/psql"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("psql not found (scripts/stack.sh install installs postgresql-15)")
}

/// Runs SQL through `psql` (tuples only, unaligned) and returns its output; panics on error.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new(psql_bin()).args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", url, "-c", sql]).output().unwrap();
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh database of the test's own on the test server; returns its URL.
pub fn own_database(name: &str) -> String {
    let admin = postgres();
    let db = format!("t_{}_{}", name, std::process::id());
    psql(&admin, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    psql(&admin, &format!("CREATE DATABASE {db}"));
    let (base, _) = admin.rsplit_once('/').expect("URL with a database");
    format!("{base}/{db}")
}

/// A table's rows as JSON objects keyed by `key`, timestamps written as the engine writes them
/// (`…T00:00:03.677340Z`).
pub fn table_rows(url: &str, table: &str, key: &str) -> HashMap<String, serde_json::Map<String, serde_json::Value>> {
    let text = psql(url, &format!("SET TIME ZONE 'UTC'; SELECT row_to_json(t) FROM \"{table}\" t"));
    let mut rows = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        for v in row.values_mut() {
            if let Some(s) = v.as_str().and_then(engine_time) {
                *v = serde_json::Value::String(s);
            }
        }
        let k = row[key].as_str().unwrap().to_string();
        assert!(rows.insert(k, row).is_none(), "{table}: {key} twice");
    }
    rows
}

/// PostgreSQL's JSON timestamp (`2026-01-01T00:00:03.67734+00:00`) in the engine's form.
fn engine_time(s: &str) -> Option<String> {
    let t = s.strip_suffix("+00:00")?;
    if t.len() < 19 || t.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    Some(format!("{secs}.{frac:0<6}Z"))
}

/// Whether two JSON values are equal, numbers compared as numbers (PostgreSQL writes 240.0 as 240).
pub fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a, b) {
        (serde_json::Value::Number(x), serde_json::Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Records of a topic with their headers, read from the beginning until `n` arrived (30 s).
pub fn records_with_headers(ns: &Ns, topic_base: &str, n: usize) -> Vec<(String, HashMap<String, String>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = ns
        .config()
        .set("group.id", format!("{}-reader", ns.name))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&ns.topic(topic_base)]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(std::time::Instant::now() < deadline, "{topic_base}: {} of {n} records within 30 s", out.len());
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else { continue };
        let mut hs = HashMap::new();
        if let Some(headers) = m.headers() {
            for h in headers.iter() {
                hs.insert(h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned());
            }
        }
        out.push((String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(), hs));
    }
    out
}

/// GET over plain HTTP/1.0: status and body (10 s deadline).
pub fn http_get_status(addr: &str, path: &str) -> (u16, String) {
    let (status, _, body) = http_request(addr, "GET", path);
    (status, body)
}

/// A bodiless request: the status, the head (lowercase) and the body.
pub fn http_request(addr: &str, method: &str, path: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// `pitgun api` over `pg`, once it serves; returns it and its address.
pub fn start_api(pg: &str, ns: &Ns) -> (Service, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let api = Service::start("api", &["api", "--postgres", pg, "--listen", &addr, "--connections", "4"], ns);
    api.wait_for_log("performance API serving", Duration::from_secs(30));
    (api, addr)
}

/// A query-string value, percent-encoded.
pub fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// A row as JSON.
pub type Row = serde_json::Map<String, serde_json::Value>;

/// Every replay row is in the table under its key, every column equal; nothing else is there.
pub fn assert_table_equals(table: &HashMap<String, Row>, expected: &[(String, Row)], what: &str) {
    if let Err(e) = table_equals(table, expected) {
        panic!("{what}: {e}");
    }
}

/// [`assert_table_equals`]'s comparison; the first difference, if any, said.
pub fn table_equals(table: &HashMap<String, Row>, expected: &[(String, Row)]) -> Result<(), String> {
    for (key, want) in expected {
        let got = table.get(key).ok_or_else(|| format!("row {key} missing"))?;
        for (col, v) in want {
            let g = got.get(col).ok_or_else(|| format!("row {key} has no column {col}"))?;
            if !same_value(g, v) {
                return Err(format!("row {key}, column {col}: table {g}, replay {v}"));
            }
        }
    }
    if table.len() != expected.len() {
        return Err(format!("the table has rows replay does not ({} against {})", table.len(), expected.len()));
    }
    Ok(())
}

/// The session-summary replay rows as the `runs` mapping writes them (README, "Sinks").
pub fn expected_runs(summary: &[Row]) -> Vec<(String, Row)> {
    summary
        .iter()
        .map(|r| {
            let secs = |c: &str| {
                let t = r[c].as_str().unwrap();
                let (day, time) = t.split_once('T').unwrap();
                let parts: Vec<f64> = time.trim_end_matches('Z').split(':').map(|p| p.parse().unwrap()).collect();
                (day.to_string(), parts[0] * 3600.0 + parts[1] * 60.0 + parts[2])
            };
            let ((d0, s0), (d1, s1)) = (secs("window_start"), secs("window_end"));
            assert_eq!(d0, d1, "test data: a session within one day");
            let mut run = Row::new();
            for (to, from) in [
                ("session_id", "session_id"),
                ("player", "player"),
                ("track", "track"),
                ("car", "car"),
                ("started_at", "window_start"),
                ("ended_at", "window_end"),
                ("laps", "laps"),
                ("best_lap_s", "best_lap"),
                ("top_speed_kmh", "top_speed"),
                ("distance_km", "distance"),
                ("events", "events"),
                ("missing_events", "missing_events"),
                ("row_id", "row_id"),
            ] {
                run.insert(to.into(), r[from].clone());
            }
            let total = ((s1 - s0) * 1e6).round() / 1e6;
            run.insert("total_time_s".into(), serde_json::json!(total));
            (r["session_id"].as_str().unwrap().to_string(), run)
        })
        .collect()
}

/// Posts envelopes to the gateway as NDJSON, 500 a request, each with its source's API key
/// (`keys`: the `source=key` lines `start_gateway` wrote); every request must be stored (202).
pub fn post(url: &str, keys: &str, envelopes: &[&str]) {
    let key_of: HashMap<&str, &str> = keys.lines().filter_map(|l| l.split_once('=')).collect();
    let mut by_source: Vec<(String, Vec<&str>)> = Vec::new();
    for e in envelopes {
        let source = serde_json::from_str::<serde_json::Value>(e).unwrap()["source"]["id"].as_str().unwrap().to_string();
        match by_source.iter_mut().find(|(s, _)| *s == source) {
            Some((_, v)) => v.push(e),
            None => by_source.push((source, vec![e])),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        for (source, envelopes) in &by_source {
            let key = key_of.get(source.as_str()).unwrap_or_else(|| panic!("no API key for {source}"));
            for chunk in envelopes.chunks(500) {
                let r = client
                    .post(format!("{url}/v1/envelopes"))
                    .header("content-type", "application/x-ndjson")
                    .header("authorization", format!("Bearer {key}"))
                    .body(chunk.join("\n"))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                assert_eq!(status, 202, "the gateway refused a batch: {}", r.text().await.unwrap_or_default());
            }
        }
    });
}

/// The test's own broker and PostgreSQL (scripts/stack.sh), stopped on drop.
pub struct OwnStack {
    dir: tempfile::TempDir,
    broker_port: u16,
    pg_port: u16,
}

impl OwnStack {
    /// A stack on free ports (nothing started yet).
    pub fn new() -> OwnStack {
        OwnStack { dir: tempfile::tempdir().unwrap(), broker_port: free_port(), pg_port: free_port() }
    }

    /// The broker's bootstrap address.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.broker_port)
    }

    pub fn stack(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new("bash")
            .arg(root().join("scripts/stack.sh"))
            .args(args)
            .args(["--dir", self.dir.path().to_str().unwrap(), "--broker-port", &self.broker_port.to_string()])
            .args(["--pg-port", &self.pg_port.to_string(), "--broker-storage", "postgres"])
            .output()
            .unwrap();
        assert!(out.status.success(), "stack.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    pub fn broker_pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("broker.pid")).unwrap().trim().parse().unwrap()
    }
}

impl Drop for OwnStack {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(root().join("scripts/stack.sh")).args(["down", "--dir", self.dir.path().to_str().unwrap()]).output();
    }
}
