//! The ingest gateway against a real broker: `PITGUN_TEST_BROKERS` (scripts/test.sh starts one
//! and exports it): what needs the whole binary and Kafka (records stored once as Avro, the
//! partition of a key, dead letters on their topic, readiness, back pressure). The HTTP
//! behaviour itself (statuses, limits, keys, validation answers, definitions) is tested through
//! the router in `ingest/tests/router.rs`. Every test here starts its own `pitgun gateway` and
//! uses its own topic namespace, so tests never see each other's records. The back-pressure
//! test starts its own broker (with PostgreSQL storage, so the topic survives the restart)
//! through scripts/stack.sh.

mod common;
#[path = "../../ingest/tests/support/envelopes.rs"]
mod envelopes;

use envelopes::{envelope, ndjson};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pitgun_runtime::kafka::{topics, Broker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_pitgun");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn test_brokers() -> String {
    std::env::var("PITGUN_TEST_BROKERS").unwrap_or_else(|_| {
        panic!(
            "PITGUN_TEST_BROKERS is not set: these tests need a Kafka-protocol broker. Run scripts/test.sh, or start one \
             with `scripts/stack.sh broker start --dir /tmp/s --broker-port 19092` and export PITGUN_TEST_BROKERS=127.0.0.1:19092"
        )
    })
}

fn namespace(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("gw-{test}-{}-{nanos}", std::process::id())
}

fn keygen(keys: &Path, source: &str) -> String {
    let out = Command::new(BIN).args(["gateway", "keygen", "--source", source, "--keys"]).arg(keys).output().unwrap();
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A running `pitgun gateway`, killed on drop.
struct Gateway {
    child: Child,
    url: String,
    web: String,
    sim: String,
    acme: String,
    broker: Broker,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start(test: &str, extra: &[&str]) -> Gateway {
        Gateway::start_on(&test_brokers(), &namespace(test), extra)
    }

    fn start_on(brokers: &str, ns: &str, extra: &[&str]) -> Gateway {
        let broker = Broker::new(brokers, ns);
        broker
            .ensure_topics(&[broker.name(topics::ENVELOPES), broker.name(topics::DEADLETTER_INGEST)], 3, Duration::from_secs(30))
            .expect("create the test's topics");
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.yaml");
        let (web, sim, acme) = (keygen(&keys, "pitgun-web"), keygen(&keys, "pitgun-sim"), keygen(&keys, "acme-telemetry"));
        let mut child = Command::new(BIN)
            .current_dir(repo())
            .args(["gateway", "--listen", "127.0.0.1:0", "--brokers", brokers, "--namespace", ns, "--keys"])
            .arg(&keys)
            .args(["--readiness-interval", "500ms"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("the gateway did not start: {:?}", log.lock().unwrap()));
        Gateway { child, url, web, sim, acme, broker, log, _dir: dir }
    }

    fn topic(&self, base: &str) -> String {
        self.broker.name(base)
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        let (status, _, body) = http(Method::Get, &format!("{}/metrics", self.url), &[], Vec::new());
        assert_eq!(status, 200);
        String::from_utf8(body)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("pitgun_gateway"))
            .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse().unwrap())))
            .collect()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http(Method::Get, &format!("{}/readyz", self.url), &[], Vec::new()).0 != 200 {
            assert!(Instant::now() < deadline, "not ready within 20 s: {:?}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn post(&self, token: Option<&str>, content_type: &str, body: impl Into<Vec<u8>>) -> (u16, Value) {
        self.post_with(token, &[("content-type", content_type)], body)
    }

    fn post_with(&self, token: Option<&str>, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = headers.to_vec();
        if let Some(a) = &auth {
            h.push(("authorization", a));
        }
        let (status, _, body) = http(Method::Post, &format!("{}/v1/envelopes", self.url), &h, body.into());
        (status, serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body))))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Method {
    Get,
    Post,
}

/// One HTTP request; returns status, headers and body.
fn http(method: Method, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut req = match method {
            Method::Get => client.get(url),
            Method::Post => client.post(url).body(body),
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.timeout(Duration::from_secs(30)).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.bytes().await.unwrap().to_vec())
    })
}

/// A record read back from a topic.
struct Record {
    partition: i32,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: BTreeMap<String, String>,
}

/// Every record of `topic` up to its current end (all partitions), within a deadline.
fn read_topic(brokers: &str, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = Broker::new(brokers, "")
        .client_config("gateway-test-reader")
        .set("group.id", format!("gateway-test-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(topic), timeout).unwrap();
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    assert!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, timeout).unwrap();
        if high > low {
            ends.insert(*p, high);
            tpl.add_partition_offset(topic, *p, Offset::Offset(low)).unwrap();
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "could not read {topic} to its end within 30 s");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m.unwrap();
        if ends.get(&m.partition()).is_some_and(|end| m.offset() < *end) {
            let headers = m
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect())
                .unwrap_or_default();
            out.push(Record { partition: m.partition(), key: m.key().map(<[u8]>::to_vec), value: m.payload().unwrap_or_default().to_vec(), headers });
        }
        if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
            ends.remove(&m.partition());
        }
    }
    out
}

fn decode_envelopes(records: &[Record]) -> Vec<Value> {
    let decoder = pitgun_codec::wire::Decoder::default();
    records
        .iter()
        .map(|r| {
            let mut json = String::new();
            decoder.to_json(&r.value, &mut json).expect("an Avro single object");
            let v: Value = serde_json::from_str(&json).unwrap();
            assert_eq!(r.key.as_deref(), Some(v["session_id"].as_str().unwrap().as_bytes()), "keyed by session id");
            v
        })
        .collect()
}

/// The partition a Java client's default partitioner gives a keyed record:
/// `toPositive(murmur2(key)) % partitions` (Kafka's `Utils.murmur2`, written from its
/// description: seed 0x9747b28c, little-endian 4-byte blocks).
fn java_partition(key: &[u8], partitions: i32) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let blocks = key.chunks_exact(4);
    let tail = blocks.remainder();
    for b in blocks {
        let mut k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]).wrapping_mul(M);
        k ^= k >> 24;
        h = h.wrapping_mul(M) ^ k.wrapping_mul(M);
    }
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate() {
            h ^= (*byte as u32) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % partitions as u32) as i32
}

fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

/// The stored envelope equals what was sent (booleans of bool metrics stay booleans).
fn same_envelope(stored: &Value, sent: &Value) {
    let s: pitgun_contracts::envelope::Envelope = serde_json::from_value(stored.clone()).unwrap();
    let e: pitgun_contracts::envelope::Envelope = serde_json::from_value(sent.clone()).unwrap();
    let norm = |mut e: pitgun_contracts::envelope::Envelope| {
        for v in e.channels.values_mut() {
            *v = pitgun_contracts::envelope::ChannelValue::Number(v.as_f64());
        }
        e
    };
    assert_eq!(norm(s), norm(e));
    assert!(stored["channels"]["in_pit"].is_boolean(), "in_pit is a bool metric: {stored}");
}

/// Served over TCP, the per-address quota counts each connection's peer; a key deleted from the file is
/// refused after SIGHUP, without a restart, and the other keys keep working.
#[test]
fn keys_are_revoked_on_sighup_and_failures_are_limited_per_address() {
    let gw = Gateway::start("keys-reload", &["--unauthenticated-per-minute", "2", "--keys-check-interval", "1h"]);
    gw.wait_ready();
    let body = ndjson(&[envelope("kr", 1)]);
    assert_eq!(gw.post(Some(&gw.web), "application/x-ndjson", body.clone()).0, 202);
    let keys = gw._dir.path().join("keys.yaml");
    let text = std::fs::read_to_string(&keys).unwrap();
    let kept: Vec<&str> = text.split("\n- ").filter(|e| !e.starts_with("source: \"pitgun-web\"")).collect();
    std::fs::write(&keys, kept.join("\n- ")).unwrap();
    assert_eq!(gw.post(Some(&gw.web), "application/x-ndjson", body.clone()).0, 202, "not read again before the signal (1 h interval)");
    let hup = Command::new("kill").args(["-HUP", &gw.child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, answer) = gw.post(Some(&gw.web), "application/x-ndjson", body.clone());
        if status == 401 {
            assert_eq!(answer["message"], "unknown API key");
            break;
        }
        assert_eq!(status, 202, "{answer}");
        assert!(Instant::now() < deadline, "the key was still accepted 10 s after SIGHUP: {:?}", gw.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut sim = envelope("kr", 2);
    sim["source"] = json!({"kind": "simulator", "id": "pitgun-sim", "version": "2.1.0"});
    sim["channels"] = json!({"speed": 40.0});
    let sim = ndjson(&[sim]);
    assert_eq!(gw.post(Some(&gw.sim), "application/x-ndjson", sim.clone()).0, 202, "the other keys stay");

    // The revoked key's request was this address's first failure.
    assert_eq!(gw.post(None, "application/x-ndjson", body.clone()).0, 401);
    let (status, answer) = gw.post(Some("pgk_wrong"), "application/x-ndjson", body.clone());
    assert_eq!(status, 429, "127.0.0.1 spent its 2 failures: {answer}");
    assert_eq!(gw.post(Some(&gw.sim), "application/x-ndjson", sim).0, 202, "a valid key from the same address still sends");
    // Another address has its own failures: the quota reads the connection's peer, not one
    // address for every client. (127.0.0.2 is loopback too on Linux.)
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let other = rt.block_on(async {
        let client = reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
        let r = client.post(format!("{}/v1/envelopes", gw.url)).header("content-type", "application/x-ndjson").body(body.clone());
        r.timeout(Duration::from_secs(30)).send().await.expect("a request from 127.0.0.2").status().as_u16()
    });
    assert_eq!(other, 401, "127.0.0.2's first failure is not throttled");
    let m = gw.metrics();
    assert_eq!(metric(&m, "pitgun_gateway_keys_reloads_total{result=\"ok\"}"), 1.0);
    assert_eq!(metric(&m, "pitgun_gateway_api_keys"), 2.0);
    assert_eq!(metric(&m, "pitgun_gateway_throttled_total{limit=\"unauthenticated\"}"), 1.0);
    assert!(gw.log.lock().unwrap().iter().any(|l| l.contains("keys file reloaded")), "the reload is logged");
    assert_eq!(metric(&m, "pitgun_gateway_keys_file_refused"), 0.0);
    // A broken file is refused, and says so for as long as it stays (what the alert reads);
    // the keys read before stay in force.
    std::fs::write(&keys, "- source: [unclosed\n").unwrap();
    assert!(Command::new("kill").args(["-HUP", &gw.child.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&gw.metrics(), "pitgun_gateway_keys_file_refused") != 1.0 {
        assert!(Instant::now() < deadline, "the refused file was not reported 10 s after SIGHUP: {:?}", gw.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&gw.metrics(), "pitgun_gateway_keys_reloads_total{result=\"error\"}"), 1.0);
    assert_eq!(
        gw.post(
            Some(&gw.sim),
            "application/x-ndjson",
            ndjson(&[{
                let mut e = envelope("kr", 3);
                e["source"] = json!({"kind": "simulator", "id": "pitgun-sim", "version": "2.1.0"});
                e["channels"] = json!({"speed": 41.0});
                e
            }])
        )
        .0,
        202,
        "the keys read before stay in force"
    );
}

/// Generated requests of every operation in the document the gateway serves (envelopes, the
/// definitions API) are answered as it says: once with a valid key, once with no credential at
/// all (401 on the routes that need one, 429 past the per-address quota).
#[test]
fn the_gateway_answers_as_its_openapi_document_says() {
    let gw = Gateway::start("openapi", &[]);
    gw.wait_ready();
    let seed = common::seed("gateway openapi");
    let auth = format!("Authorization: Bearer {}", gw.web);
    // Which envelopes are accepted depends on the dictionary served, not only on the document, so
    // for postEnvelopes a schema-valid body may be refused (422); every other check still runs.
    let config = "[[operations]]\ninclude-operation-id = \"postEnvelopes\"\nchecks.positive_data_acceptance.enabled = false\n\
                  [dictionaries.names]\nvalues = [\"pitgun-envelope\", \"lap-performance\", \"client-health\", \"vehicle.speed\"]\n\
                  [dictionaries.versions]\nvalues = [\"v1\", \"1\"]\n[parameters]\n\
                  \"path.name\" = { dictionary = \"names\", probability = 0.5 }\n\
                  \"path.metric\" = { dictionary = \"names\", probability = 0.5 }\n\
                  \"path.version\" = { dictionary = \"versions\", probability = 0.5 }\n";
    let document = format!("{}/openapi.json", gw.url);
    common::schemathesis::assert_schemathesis(&document, "gateway with a key", seed, &["-H", &auth], config);
    common::schemathesis::assert_schemathesis(&document, "gateway without a credential", seed, &[], config);
}

#[test]
fn a_valid_batch_is_acknowledged_and_stored_exactly_once_as_avro() {
    let gw = Gateway::start("valid", &[]);
    gw.wait_ready();
    let sent: Vec<Value> = (0..60).map(|i| envelope(&format!("s{}", i % 3), i)).collect();
    let body = ndjson(&sent);
    let before = gw.metrics();
    let (status, answer) = gw.post(Some(&gw.web), "application/x-ndjson", body.clone());
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer, json!({"accepted": 60, "rejected": 0, "errors": []}));
    let array = Value::Array(sent[..2].to_vec()).to_string();
    let (status, answer) = gw.post(Some(&gw.web), "application/json", array.clone());
    assert_eq!((status, answer["accepted"].as_u64()), (202, Some(2)), "JSON array");
    let (status, answer) = gw.post_with(Some(&gw.web), &[("content-type", "application/json")], sent[2].to_string());
    assert_eq!((status, answer["accepted"].as_u64()), (202, Some(1)), "one envelope");

    let stored = decode_envelopes(&read_topic(&test_brokers(), &gw.topic(topics::ENVELOPES)));
    assert_eq!(stored.len(), 63, "exactly what was acknowledged");
    let by_id: BTreeMap<String, &Value> = stored.iter().map(|v| (v["event_id"].as_str().unwrap().to_string(), v)).collect();
    assert_eq!(by_id.len(), 60);
    for e in &sent {
        same_envelope(by_id[e["event_id"].as_str().unwrap()], e);
    }
    // Per session, the topic holds the events in the order they were sent.
    for s in ["s0", "s1", "s2"] {
        let seqs: Vec<u64> = stored.iter().filter(|v| v["session_id"] == s).map(|v| v["seq"].as_u64().unwrap()).take(20).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{s}: {seqs:?}");
    }
    assert!(read_topic(&test_brokers(), &gw.topic(topics::DEADLETTER_INGEST)).is_empty());
    // `pitgun tail` shows the stored Avro envelopes as the JSON they encode.
    let mut shown: Vec<Value> = tail(&gw.topic(topics::ENVELOPES), &[]).iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let mut want = stored.clone();
    let order = |v: &Value| (v["session_id"].to_string(), v["seq"].as_u64(), v["event_id"].to_string());
    shown.sort_by_key(order);
    want.sort_by_key(order);
    assert_eq!(shown, want);

    let after = gw.metrics();
    let moved = |name: &str| metric(&after, name) - metric(&before, name);
    assert_eq!(moved("pitgun_gateway_envelopes_accepted_total"), 63.0);
    assert_eq!(moved("pitgun_gateway_requests_total{status=\"202\"}"), 3.0);
    assert_eq!(moved("pitgun_gateway_request_bytes_total"), (body.len() + array.len() + sent[2].to_string().len()) as f64);
    assert_eq!(moved("pitgun_gateway_produce_seconds_count"), 3.0);
    assert_eq!(moved("pitgun_gateway_deadletters_total"), 0.0);
}

#[test]
fn the_gateway_and_publish_put_a_session_on_the_partition_a_java_client_would() {
    // Kafka's own test vectors for its murmur2 (UtilsTest), so the reference is the reference.
    let positive = |key: &str| java_partition(key.as_bytes(), i32::MAX);
    assert_eq!(positive("21"), -973932308i32 & 0x7fff_ffff);
    assert_eq!(positive("foobar"), -790332482i32 & 0x7fff_ffff);
    assert_eq!(positive("a-little-bit-long-string"), -985981536i32 & 0x7fff_ffff);

    // A session that arrives partly through the gateway and partly through `pitgun publish`
    // (a backfill beside live traffic) must land on one partition, or two engines split it.
    let gw = Gateway::start("partitioner", &[]);
    gw.wait_ready();
    let sessions: Vec<String> = (0..24).map(|i| format!("partitioned-session-{i}")).collect();
    let live: Vec<Value> = sessions.iter().flat_map(|s| (0..3).map(move |q| envelope(s, q))).collect();
    let (status, answer) = gw.post(Some(&gw.web), "application/x-ndjson", ndjson(&live));
    assert_eq!(status, 202, "{answer}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backfill.ndjson");
    let backfill: Vec<Value> = sessions.iter().flat_map(|s| (3..6).map(move |q| envelope(s, q))).collect();
    std::fs::write(&file, ndjson(&backfill)).unwrap();
    let ns = gw.broker.namespace.clone();
    let out = Command::new(BIN).args(["publish", "--brokers", &test_brokers(), "--namespace", &ns, "--input"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "publish: {}", String::from_utf8_lossy(&out.stderr));

    let records = read_topic(&test_brokers(), &gw.topic(topics::ENVELOPES));
    assert_eq!(records.len(), live.len() + backfill.len());
    let mut partitions_of: BTreeMap<&[u8], BTreeSet<i32>> = BTreeMap::new();
    for r in &records {
        let key = r.key.as_deref().expect("keyed by session id");
        assert_eq!(r.partition, java_partition(key, 3), "session {}", String::from_utf8_lossy(key));
        partitions_of.entry(key).or_default().insert(r.partition);
    }
    assert_eq!(partitions_of.len(), sessions.len());
    assert!(partitions_of.values().all(|p| p.len() == 1));
    assert_eq!(partitions_of.values().flatten().collect::<BTreeSet<_>>().len(), 3, "24 sessions spread over all 3 partitions");
}

/// A backfill stopped by a bad line names the line and the rule, and the lines before it are on
/// the topic: the producer's queue is delivered before the error, not dropped with it.
#[test]
fn publish_stops_at_a_bad_line_with_the_lines_before_it_delivered() {
    let gw = Gateway::start("publishstop", &[]);
    let mut lines: Vec<Value> = (0..40).map(|q| envelope("backfill-session", q)).collect();
    let mut bad = envelope("backfill-session", 40);
    bad["event_id"] = json!("e".repeat(129));
    lines.push(bad);
    lines.push(envelope("backfill-session", 41));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backfill.ndjson");
    std::fs::write(&file, ndjson(&lines)).unwrap();
    let ns = gw.broker.namespace.clone();
    let out = Command::new(BIN).args(["publish", "--brokers", &test_brokers(), "--namespace", &ns, "--input"]).arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad line fails the publish: {stderr}");
    assert!(stderr.contains("backfill.ndjson:41") && stderr.contains("/event_id"), "names the line and where: {stderr}");
    assert!(stderr.contains("the 40 records before it are on"), "says what was delivered: {stderr}");
    assert_eq!(read_topic(&test_brokers(), &gw.topic(topics::ENVELOPES)).len(), 40, "the 40 lines before the bad one");
}

#[test]
fn refused_items_reach_the_dead_letter_topic_with_their_reason_in_headers() {
    let gw = Gateway::start("deadletter", &[]);
    let mut acme = envelope("a", 1);
    acme["source"]["id"] = json!("acme-telemetry");
    let (status, answer) = gw.post(Some(&gw.acme), "application/json", Value::Array(vec![acme.clone(), acme.clone()]).to_string());
    assert_eq!(status, 422, "{answer}");
    assert!(read_topic(&test_brokers(), &gw.topic(topics::ENVELOPES)).is_empty());
    let dead = read_topic(&test_brokers(), &gw.topic(topics::DEADLETTER_INGEST));
    assert_eq!(dead.len(), 2);
    for r in &dead {
        assert_eq!(r.key.as_deref(), Some(&b"a"[..]));
        assert_eq!(serde_json::from_slice::<Value>(&r.value).unwrap(), acme, "the item as sent");
        assert_eq!(r.headers["pitgun-stage"], "ingest");
        assert_eq!(r.headers["pitgun-reason"], "unknown_source");
        assert!(r.headers["pitgun-detail"].starts_with("at /source/id: "), "{:?}", r.headers);
        assert!(r.headers.contains_key("pitgun-origin"), "{:?}", r.headers);
    }
    let origins: BTreeSet<&str> = dead.iter().map(|r| r.headers["pitgun-origin"].as_str()).collect();
    assert_eq!(origins, BTreeSet::from(["source=acme-telemetry index=0", "source=acme-telemetry index=1"]));
    // An operator reads the reasons with `pitgun tail --meta`: each line the record, key and headers.
    let lines = tail(&gw.topic(topics::DEADLETTER_INGEST), &["--meta"]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    // Both have key "a", so one partition: both readers see them in one order.
    for (line, r) in lines.iter().zip(&dead) {
        let shown: Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(shown["key"], "a", "{line}");
        assert_eq!(shown["value"], acme, "the item as sent, as JSON: {line}");
        let headers: BTreeMap<String, String> = serde_json::from_value(shown["headers"].clone()).expect("text headers");
        assert_eq!(headers, r.headers, "{line}");
        assert!(shown["offset"].is_i64() && shown["partition"].is_i64() && shown["timestamp_ms"].is_i64(), "{line}");
    }
    // Items that are not JSON have no key: `--latest` keeps every one of them, and the last
    // version of key "a".
    let (status, _) = gw.post(Some(&gw.acme), "application/x-ndjson", "{oops\n[1,\n");
    assert_eq!(status, 422);
    let lines = tail(&gw.topic(topics::DEADLETTER_INGEST), &["--meta", "--latest"]);
    let shown: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    // (Partitions are read side by side: the order across them is not fixed.)
    let (keyed, keyless): (Vec<&Value>, Vec<&Value>) = shown.iter().partition(|v| v["key"] == "a");
    assert_eq!((keyed.len(), keyless.len()), (1, 2), "{lines:?}");
    assert_eq!(keyed[0]["headers"]["pitgun-origin"], "source=acme-telemetry index=1", "the last of key a");
    let values: BTreeSet<&str> = keyless.iter().map(|v| v["value"].as_str().unwrap()).collect();
    assert_eq!(values, BTreeSet::from(["{oops", "[1,"]), "as sent, as text: {lines:?}");
    assert!(keyless.iter().all(|v| v["key"].is_null() && v["headers"]["pitgun-reason"] == "malformed_json"), "{lines:?}");
    assert_eq!(metric(&gw.metrics(), "pitgun_gateway_requests_total{status=\"422\"}"), 2.0, "both requests");
}

/// A header name is bytes on the wire, and one that is not UTF-8 made `tail --meta` panic
/// (inside rdkafka's header reader). It is shown by its name in base64, the others by name.
#[test]
fn tail_meta_shows_a_header_whose_name_is_not_utf8() {
    let ns = common::Ns::new("tail-header-name");
    ns.create_topic("odd-headers", 1);
    let topic = ns.topic("odd-headers");
    ns.produce_with_byte_header_names(&topic, b"k", br#"{"a":1}"#, &[(b"\xff\xfe", b"odd"), (b"pitgun-reason", b"r")]);
    let lines = tail(&topic, &["--meta"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let shown: Value = serde_json::from_str(&lines[0]).expect("a JSON line");
    assert_eq!(shown["headers"], json!({"pitgun-reason": "r"}), "{}", lines[0]);
    assert_eq!(shown["headers_base64"], json!({"//4=": "odd"}), "{}", lines[0]);
    assert_eq!((&shown["key"], &shown["value"]), (&json!("k"), &json!({"a": 1})), "{}", lines[0]);
}

/// `tail --latest` prints what a compacted topic keeps: a key whose last record is a tombstone
/// (no value) was deleted and is not printed (it was printed as an empty line, or as null).
#[test]
fn tail_latest_leaves_out_a_key_whose_last_record_is_a_tombstone() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let ns = common::Ns::new("tail-tombstone");
    ns.create_topic("rows", 1);
    let topic = ns.topic("rows");
    let producer: BaseProducer = ns.config().set("enable.idempotence", "true").create().unwrap();
    let records: [(&str, Option<&str>); 5] = [("gone", Some("1")), ("kept", Some("2")), ("gone", None), ("back", None), ("back", Some("3"))];
    for (key, value) in records {
        let record = BaseRecord::<str, str>::to(&topic).key(key);
        producer
            .send(match value {
                Some(v) => record.payload(v),
                None => record,
            })
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(20)).expect("acknowledged within 20 s");
    assert_eq!(tail(&topic, &["--latest"]), ["2", "3"], "a deleted key is left out; one written after its tombstone is not");
    let shown: Vec<Value> = tail(&topic, &["--latest", "--meta"]).iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(
        shown.iter().map(|v| (v["key"].clone(), v["value"].clone())).collect::<Vec<_>>(),
        [(json!("kept"), json!("2")), (json!("back"), json!("3"))]
    );
    // Without --latest every record is printed, a tombstone as null.
    let all: Vec<Value> = tail(&topic, &["--meta"]).iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(all.iter().filter(|v| v["value"].is_null()).count(), 2, "{all:?}");
}

/// `pitgun tail --topic TOPIC --from-beginning --until-end EXTRA…`: its lines, within 60 s.
fn tail(topic: &str, extra: &[&str]) -> Vec<String> {
    let tail = Command::new(BIN)
        .args(["tail", "--topic", topic, "--brokers", &test_brokers(), "--from-beginning", "--until-end"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read its output while it runs (a full pipe would stall it), with a deadline.
    let (pid, (tx, rx)) = (tail.id(), std::sync::mpsc::channel());
    std::thread::spawn(move || tx.send(tail.wait_with_output()));
    let Ok(tail) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("tail did not end within 60 s");
    };
    let tail = tail.unwrap();
    assert!(tail.status.success(), "tail: {}", String::from_utf8_lossy(&tail.stderr));
    String::from_utf8(tail.stdout).unwrap().lines().map(str::to_string).collect()
}

/// An item larger than the broker takes as one message was once dead-lettered whole: the dead
/// letter failed to send, the batch got 503 "send it again", every resend failed the same way
/// (storing the batch's valid items once more each time) and the gateway marked itself unready.
/// Now it is refused by index with `too_large`, its dead letter keeps a bounded prefix, and the
/// rest of the batch is stored once.
#[test]
fn an_item_over_the_size_limit_is_refused_by_index_and_the_batch_stored() {
    let gw = Gateway::start("oversized", &[]);
    gw.wait_ready();
    let good = envelope("big", 1);
    let huge = json!({"x": "a".repeat(1_100_000)});
    let body = Value::Array(vec![good.clone(), huge]).to_string();
    for attempt in 0..2 {
        let (status, answer) = gw.post(Some(&gw.web), "application/json", body.clone());
        assert_eq!(status, 202, "attempt {attempt}: {answer}");
        assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(1), Some(1)), "{answer}");
        let error = &answer["errors"][0];
        assert_eq!(
            (error["index"].as_u64(), error["reason"].as_str(), error["pointer"].as_str()),
            (Some(1), Some("too_large"), Some("")),
            "{answer}"
        );
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("1100008 bytes") && message.contains("262144-byte") && message.contains("first 921600 bytes"), "{message}");
    }
    let stored = decode_envelopes(&read_topic(&test_brokers(), &gw.topic(topics::ENVELOPES)));
    assert_eq!(stored.len(), 2, "the valid item of each of the two requests");
    let dead = read_topic(&test_brokers(), &gw.topic(topics::DEADLETTER_INGEST));
    assert_eq!(dead.len(), 2);
    for r in &dead {
        assert_eq!(r.headers["pitgun-reason"], "too_large");
        // As every stage's dead letter: the most a Kafka message of 1 MB carries, and the whole
        // length in a header (it gave the limit's 262,144 bytes and no length).
        assert_eq!(r.value.len(), 900 << 10, "the dead letter keeps the first 900 KiB of the item");
        assert_eq!(r.headers.get("pitgun-payload-bytes").map(String::as_str), Some("1100008"), "{:?}", r.headers);
        assert!(body.as_bytes()[good.to_string().len() + 2..].starts_with(&r.value), "a prefix of the item as sent");
    }
    let (ready, _, _) = http(Method::Get, &format!("{}/readyz", gw.url), &[], Vec::new());
    assert_eq!(ready, 200, "a refused item says nothing about the broker");
    // A smaller limit is taken from the command line, and named in the answer.
    let small = Gateway::start("oversized-small", &["--max-item-size", "2KiB"]);
    small.wait_ready();
    let mut wide = envelope("wide", 1);
    wide["dims"]["note"] = json!("n".repeat(3000));
    let (status, answer) = small.post(Some(&small.web), "application/json", Value::Array(vec![envelope("wide", 2), wide]).to_string());
    assert_eq!((status, answer["errors"][0]["reason"].as_str()), (202, Some("too_large")), "{answer}");
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("2048-byte"), "{answer}");
    // Under what a dead letter carries, the item is kept exactly as sent.
    let dead = read_topic(&test_brokers(), &small.topic(topics::DEADLETTER_INGEST));
    assert_eq!(dead.len(), 1);
    assert!(dead[0].value.len() > 3000 && !dead[0].headers.contains_key("pitgun-payload-bytes"), "{:?}", dead[0].headers);
}

/// Opens a connection to the gateway and sends a POST's headers (with `extra` header lines) and
/// the first `sent` bytes of a body declared `declared` bytes long, then nothing more.
fn stalled_post(gw: &Gateway, declared: usize, sent: usize, extra: &str) -> std::net::TcpStream {
    use std::io::Write;
    let addr = gw.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /v1/envelopes HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n{extra}\r\n",
        gw.web
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&vec![b' '; sent]).unwrap();
    s
}

/// The status line's code of what the gateway answered on `s`, read within its read timeout.
fn status_of(s: &mut std::net::TcpStream) -> (u16, String) {
    use std::io::Read;
    let mut buf = vec![0; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

/// A client that stops sending its body cannot hold the gateway: its request ends with 408 at
/// --body-timeout; bodies in flight are bounded by --max-in-flight (beyond: 503 with
/// Retry-After, at once); and SIGTERM stops the gateway within --drain-timeout even while such
/// a client is connected.
#[test]
fn stalled_bodies_time_out_bodies_in_flight_are_bounded_and_shutdown_has_a_deadline() {
    let gw = Gateway::start("stalled", &["--max-body", "4KiB", "--max-in-flight", "8KiB", "--body-timeout", "2s", "--drain-timeout", "1s"]);
    gw.wait_ready();
    let started = Instant::now();
    // A body holds what it sent until it is read (and decoded), whatever it declares: clients
    // trickling bodies do not take the budget from everyone.
    let mut first = stalled_post(&gw, 4000, 3990, "");
    let mut second = stalled_post(&gw, 4000, 10, "content-encoding: gzip\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let mut third = stalled_post(&gw, 4000, 3990, "");
    std::thread::sleep(Duration::from_millis(300));
    // The three hold 3,990 + 10 + 3,990 of the 8 KiB: a fourth is refused at once.
    let (status, headers, body) = http(
        Method::Post,
        &format!("{}/v1/envelopes", gw.url),
        &[("authorization", &format!("Bearer {}", gw.web)), ("content-type", "application/json")],
        ndjson(&[envelope("x", 1)]).into_bytes(),
    );
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after") && body.contains("--max-in-flight"), "{body}");
    for s in [&mut first, &mut second, &mut third] {
        let (code, text) = status_of(s);
        assert_eq!(code, 408, "{text}");
        assert!(text.contains("--body-timeout"), "{text}");
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(10), "408 after {waited:?}");
    // Their budget is back.
    let (status, answer) = gw.post(Some(&gw.web), "application/x-ndjson", ndjson(&[envelope("x", 2)]));
    assert_eq!(status, 202, "{answer}");

    // SIGTERM with a client still sending: the gateway stops within the drain deadline.
    let mut gw = Gateway::start("stalled-drain", &["--body-timeout", "120s", "--drain-timeout", "1s"]);
    gw.wait_ready();
    let _held = stalled_post(&gw, 1000, 10, "");
    std::thread::sleep(Duration::from_millis(300));
    let term = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &gw.child.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gateway still runs 15 s after SIGTERM: {:?}", gw.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}: {:?}", gw.log.lock().unwrap());
    assert!(term.elapsed() < Duration::from_secs(8), "stopped after {:?}", term.elapsed());
}

/// When `s` is closed by the other side: the time since `since` (a read of 0 bytes or a reset),
/// or `None` if it still stands after `within`. Bytes the server sends first (an error status)
/// are read past.
fn closed_within(s: &mut std::net::TcpStream, since: Instant, within: Duration) -> Option<Duration> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    loop {
        let left = within.checked_sub(since.elapsed())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(10)))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if since.elapsed() >= within {
                    return None;
                }
            }
            Err(_) => return Some(since.elapsed()),
        }
    }
}

/// A client that sends a request's head a few bytes at a time (slowloris), opens a connection
/// and sends nothing, or keeps a connection open after its answer, cannot hold it: each is
/// closed at --header-timeout, however steadily the bytes trickle in. Requests that arrive in
/// time are served as before.
#[test]
fn a_request_head_slower_than_the_header_timeout_closes_its_connection() {
    use std::io::{Read, Write};
    let gw = Gateway::start("slow-head", &["--header-timeout", "2s"]);
    gw.wait_ready();
    let addr = gw.url.trim_start_matches("http://").to_string();
    // Each connection is watched on its own thread, from when it starts to wait for a head.
    let watch = |mut s: std::net::TcpStream, since: Instant| std::thread::spawn(move || closed_within(&mut s, since, Duration::from_secs(10)));
    let idle = watch(std::net::TcpStream::connect(&addr).unwrap(), Instant::now());
    let mut kept = std::net::TcpStream::connect(&addr).unwrap();
    kept.write_all(format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes()).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = [0u8; 256];
    let n = kept.read(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..n]));
    let kept = watch(kept, Instant::now());
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    let started = Instant::now();
    slow.write_all(format!("POST /v1/envelopes HTTP/1.1\r\nhost: {addr}\r\n").as_bytes()).unwrap();
    // A header line every 300 ms, each in time for any per-read timeout; the head never ends.
    let mut w = slow.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for i in 0..40 {
            std::thread::sleep(Duration::from_millis(300));
            if w.write_all(format!("x-slow-{i}: a\r\n").as_bytes()).is_err() {
                return;
            }
        }
    });
    let slow = watch(slow, started);
    for (what, closed) in [("a trickled head", slow), ("a connection without a request", idle), ("a kept-alive connection after its answer", kept)] {
        let after = closed.join().unwrap().unwrap_or_else(|| panic!("{what} still holds its connection 10 s later (--header-timeout 2s)"));
        assert!(after >= Duration::from_millis(1500) && after < Duration::from_secs(6), "{what}: closed after {after:?}");
    }
    trickle.join().unwrap();
    let (status, answer) = gw.post(Some(&gw.web), "application/x-ndjson", ndjson(&[envelope("x", 1)]));
    assert_eq!(status, 202, "{answer}");
}

#[test]
fn health_and_readiness_follow_the_broker() {
    let gw = Gateway::start("health", &[]);
    assert_eq!(http(Method::Get, &format!("{}/healthz", gw.url), &[], Vec::new()).0, 200);
    gw.wait_ready();
    // A gateway whose broker does not answer is alive but not ready.
    let port = free_port();
    let nowhere = format!("127.0.0.1:{port}");
    let gw2 = NoBrokerGateway::start(&nowhere);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(http(Method::Get, &format!("{}/healthz", gw2.url), &[], Vec::new()).0, 200);
    assert_eq!(http(Method::Get, &format!("{}/readyz", gw2.url), &[], Vec::new()).0, 503);
    // librdkafka reports the refused connection at every reconnect, several times a second:
    // the log says so once per kind, naming the broker, not at every attempt.
    let log = gw2.log.lock().unwrap().clone();
    let refused = log.iter().filter(|l| l.contains("librdkafka") && l.contains(&nowhere)).count();
    assert!(refused >= 1, "librdkafka's report of the unreachable broker is missing: {log:#?}");
    let kafka_lines = log.iter().filter(|l| l.contains("librdkafka")).count();
    assert!(kafka_lines <= 4, "{kafka_lines} lines from librdkafka in 4 s: {log:#?}");
}

/// A gateway pointed at a port nobody listens on (no topic creation possible).
struct NoBrokerGateway {
    child: Child,
    url: String,
    /// Its stderr.
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl NoBrokerGateway {
    fn start(brokers: &str) -> NoBrokerGateway {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.yaml");
        keygen(&keys, "pitgun-web");
        let mut child = Command::new(BIN)
            .current_dir(repo())
            .args(["gateway", "--listen", "127.0.0.1:0", "--brokers", brokers, "--readiness-interval", "300ms", "--keys"])
            .arg(&keys)
            // The default filter, whatever the developer's environment says.
            .env("RUST_LOG", "info,rdkafka=warn,tokio_postgres=warn")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                let url = l.split("listening on ").nth(1).map(|a| a.trim().to_string());
                log.lock().unwrap().push(l);
                url
            })
            .expect("the gateway prints its address");
        let sink = log.clone();
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| sink.lock().unwrap().push(l)));
        NoBrokerGateway { child, url, log, _dir: dir }
    }
}

impl Drop for NoBrokerGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn back_pressure_answers_503_within_the_deadline_and_resent_batches_are_stored() {
    let _ = test_brokers(); // the suite runs against a broker; this test adds its own
    let stack = common::OwnStack::new();
    stack.stack(&["broker", "start"]);
    let brokers = stack.brokers();
    let gw = Gateway::start_on(&brokers, &namespace("backpressure"), &["--ack-timeout", "5s"]);
    gw.wait_ready();
    let batch = |from: u64| ndjson(&(from..from + 100).map(|i| envelope(&format!("bp{}", i % 4), i)).collect::<Vec<_>>());
    // The batch refused with 503 carries one item the gateway refuses: counted (and its dead
    // letter) only once a resend of the batch is stored.
    let with_refused = |from: u64| format!("{}\n{{\"not\": \"an envelope\"}}\n", batch(from).trim_end());

    let (status, answer) = gw.post(Some(&gw.web), "application/x-ndjson", batch(0));
    assert_eq!(status, 202, "{answer}");

    let pid = stack.broker_pid();
    stack.stack(&["broker", "stop"]);
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "broker pid {pid} stopped");
    let started = Instant::now();
    let (status, headers, body) = http(
        Method::Post,
        &format!("{}/v1/envelopes", gw.url),
        &[("content-type", "application/x-ndjson"), ("authorization", &format!("Bearer {}", gw.web))],
        with_refused(100).into_bytes(),
    );
    let elapsed = started.elapsed();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(headers.get("retry-after").is_some(), "Retry-After on a 503");
    assert!(elapsed >= Duration::from_secs(4) && elapsed <= Duration::from_secs(7), "503 after {elapsed:?}, not within 5–7 s");
    let failed = metric(&gw.metrics(), "pitgun_gateway_batches_failed_total{cause=\"delivery\"}");
    assert_eq!(failed, 1.0);

    // A new broker over the same storage; the client resends the refused batch until stored.
    stack.stack(&["broker", "start"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer) = gw.post(Some(&gw.web), "application/x-ndjson", with_refused(100));
        if status == 202 {
            assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(100), Some(1)), "{answer}");
            break;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(Instant::now() < deadline, "the gateway did not recover within 60 s of the broker's return");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (status, _) = gw.post(Some(&gw.web), "application/x-ndjson", batch(200));
    assert_eq!(status, 202);

    let stored = decode_envelopes(&read_topic(&brokers, &gw.topic(topics::ENVELOPES)));
    let ids: BTreeSet<&str> = stored.iter().map(|v| v["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 300, "every event of the three batches is stored (duplicates only as repeated ids)");
    assert!(stored.len() >= 300);
    let m = gw.metrics();
    let failed = metric(&m, "pitgun_gateway_batches_failed_total{cause=\"delivery\"}")
        + metric(&m, "pitgun_gateway_batches_failed_total{cause=\"queue_full\"}");
    assert_eq!(metric(&m, "pitgun_gateway_requests_total{status=\"503\"}"), failed);
    assert_eq!(metric(&m, "pitgun_gateway_envelopes_accepted_total"), 300.0, "503 answers count no envelopes");
    let refused: f64 = m.iter().filter(|(k, _)| k.starts_with("pitgun_gateway_envelopes_rejected_total{")).map(|(_, v)| v).sum();
    assert_eq!(refused, 1.0, "503 answers count none of their refused items either");
    assert_eq!(metric(&m, "pitgun_gateway_deadletters_total"), 1.0, "one dead letter stored");
}

/// `simulate --target --output` leaves a file already there as it was when the run fails: the
/// file was put in place before the last batches were answered, so a gateway that could not be
/// reached still replaced it. A source without a key is refused before anything is sent or
/// written, not at its first batch.
#[test]
fn simulate_target_that_fails_leaves_the_output_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sim.ndjson");
    std::fs::write(&file, "the file before\n").unwrap();
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let simulate = |keys: &[&str]| {
        let mut cmd = Command::new(BIN);
        // One batch per source, posted when the stream ends: the failure comes after the whole
        // file is written, where the output was once put in place.
        cmd.args(["simulate", "--quiet", "--sessions", "2", "--duration", "5s", "--seed", "3", "--retry-for", "1s", "--batch", "100000", "--output"]);
        cmd.arg(&file).args(["--target", &unreachable]);
        for key in keys {
            cmd.args(["--api-key", key]);
        }
        cmd.output().unwrap()
    };
    let out = simulate(&["pitgun-web=k1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no API key for source pitgun-sim"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "the file before\n");

    let started = Instant::now();
    let out = simulate(&["pitgun-web=k1", "pitgun-sim=k2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60), "gave up after {:?}", started.elapsed());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "the file before\n", "a failed run replaced --output: {stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 1, "no partial file is left beside it: {left:?}");
}

#[test]
fn simulate_target_posts_what_the_file_holds_in_session_order() {
    let gw = Gateway::start("simulate", &[]);
    gw.wait_ready();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sim.ndjson");
    let out = Command::new(BIN)
        .args(["simulate", "--sessions", "4", "--duration", "20s", "--seed", "9", "--batch", "100", "--concurrency", "3"])
        .arg("--output")
        .arg(&file)
        .args(["--target", &gw.url, "--api-key", &format!("pitgun-web={}", gw.web), "--api-key", &format!("pitgun-sim={}", gw.sim)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let sent: Vec<Value> = std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(sent.len() > 4000, "{}", sent.len());
    assert!(stderr.contains(&format!("accepted {}, rejected 0", sent.len())), "{stderr}");
    let stored = decode_envelopes(&read_topic(&test_brokers(), &gw.topic(topics::ENVELOPES)));
    assert_eq!(stored.len(), sent.len());
    // Same events, and per session in the order the file has them.
    let order = |items: &[Value]| {
        items.iter().fold(BTreeMap::<String, Vec<String>>::new(), |mut m, v| {
            m.entry(v["session_id"].as_str().unwrap().into()).or_default().push(v["event_id"].as_str().unwrap().into());
            m
        })
    };
    assert_eq!(order(&stored), order(&sent));
}

/// hyper answers a head past its own buffer (about 400 KB) with a bare 431 before any handler
/// runs, so a `--max-header-size` near or past it would not be the limit it says it is: the
/// flag takes 1KiB to 256KiB and names itself otherwise.
#[test]
fn a_header_size_the_http_layer_would_not_honour_is_refused_naming_the_flag() {
    for value in ["0", "512", "257KiB", "1MiB"] {
        let out = Command::new(BIN).args(["gateway", "--keys", "/dev/null", "--max-header-size", value]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert!(stderr.contains("--max-header-size") && stderr.contains("1KiB to 256KiB"), "{value}: {stderr}");
    }
}
