//! The gateway's HTTP behaviour through its router, in process: statuses, limits, keys, what is
//! queued for the broker and what is dead-lettered, definitions and readiness. A stand-in for
//! the broker records what the gateway hands it and answers as it is told; the Kafka path itself
//! (Avro stored once, partitions, back pressure) is `cli/tests/gateway.rs`'s, against a real broker.

#[path = "support/envelopes.rs"]
mod envelopes;

use envelopes::{envelope, ndjson};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use pitgun_ingest::gateway::{router, watch_readiness, Gateway, Limits};
use pitgun_ingest::produce::{Outgoing, Pending, ProduceError, Publish};
use pitgun_ingest::service::{build_with, Settings};
use pitgun_runtime::kafka::{topics, Broker};
use rdkafka::message::Headers;
use serde_json::{json, Value};
use tower::ServiceExt;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// A record the gateway handed to the broker.
struct Record {
    topic: String,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: BTreeMap<String, String>,
}

/// The broker's stand-in: keeps every record of a batch it acknowledges, none of one it fails.
#[derive(Clone, Default)]
struct StandIn {
    stored: Arc<Mutex<Vec<Record>>>,
    /// What the next batches get: acknowledged, or this failure.
    failure: Arc<Mutex<Option<ProduceError>>>,
    /// What a metadata request gets.
    unreachable: Arc<Mutex<Option<String>>>,
}

impl Publish for StandIn {
    fn enqueue(&self, records: &mut dyn Iterator<Item = Outgoing<'_>>) -> Pending {
        if let Some(e) = self.failure.lock().unwrap().clone() {
            return Pending::settled(Err(e));
        }
        let mut stored = self.stored.lock().unwrap();
        for r in records {
            let headers = r
                .headers
                .map(|h| h.iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect())
                .unwrap_or_default();
            stored.push(Record { topic: r.topic.to_string(), key: r.key.map(<[u8]>::to_vec), value: r.value.to_vec(), headers });
        }
        Pending::settled(Ok(()))
    }

    fn probe(&self, _topic: &str, _timeout: Duration) -> Result<(), String> {
        self.unreachable.lock().unwrap().clone().map_or(Ok(()), Err)
    }

    fn flush(&self, _timeout: Duration) -> Result<(), String> {
        Ok(())
    }
}

/// The limits of most tests: the command's defaults, without a per-credential quota.
fn limits() -> Limits {
    Limits {
        max_body: 8 << 20,
        max_batch: 5000,
        max_item: 256 << 10,
        max_in_flight: 96 << 20,
        body_timeout: Duration::from_secs(30),
        retry_after_secs: 1,
        max_header_bytes: 16 << 10,
        per_credential_per_second: None,
        unauthenticated_per_minute: NonZeroU32::new(1000).unwrap(),
        trust_forwarded_for: false,
    }
}

/// A gateway around a stand-in, with keys for three sources.
struct Harness {
    gw: Arc<Gateway>,
    broker: StandIn,
    web: String,
    sim: String,
    acme: String,
    _dir: tempfile::TempDir,
}

/// The secret of the browser harness's session tokens.
const SESSION_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
/// The one origin the browser harness lets post.
const GAME_ORIGIN: &str = "http://127.0.0.1:8090";

impl Harness {
    fn new(limits: Limits) -> Harness {
        Harness::with(limits, false)
    }

    /// A gateway that also takes browser session tokens and allows [`GAME_ORIGIN`].
    fn browsers() -> Harness {
        Harness::with(limits(), true)
    }

    fn with(limits: Limits, browsers: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.yaml");
        let key = |source: &str| pitgun_ingest::keys::append_new_key(&keys, source, "2026-11-30T00:00:00Z").unwrap();
        let (web, sim, acme) = (key("pitgun-web"), key("pitgun-sim"), key("acme-telemetry"));
        let mut settings = settings(keys, limits);
        if browsers {
            use std::os::unix::fs::PermissionsExt;
            let secret = dir.path().join("session.secret");
            std::fs::write(&secret, SESSION_SECRET).unwrap();
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
            settings.session_secret = Some(secret);
            settings.cors_origins = vec![GAME_ORIGIN.to_string()];
        }
        let broker = StandIn::default();
        let gw = build_with(&settings, Box::new(broker.clone())).unwrap();
        Harness { gw, broker, web, sim, acme, _dir: dir }
    }

    fn standard() -> Harness {
        Harness::new(limits())
    }

    async fn request(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let r = router(self.gw.clone()).oneshot(req).await.unwrap();
        let (parts, body) = r.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
    }

    async fn get(&self, path: &str, if_none_match: Option<&str>) -> (StatusCode, Option<String>, Value) {
        let mut req = Request::get(path);
        if let Some(e) = if_none_match {
            req = req.header("if-none-match", e);
        }
        let (status, headers, body) = self.request(req.body(Body::empty()).unwrap()).await;
        let etag = headers.get("etag").map(|e| e.to_str().unwrap().to_string());
        (status, etag, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn post(&self, token: Option<&str>, content_type: &str, body: impl Into<Vec<u8>>) -> (StatusCode, Value) {
        self.post_with(token, &[("content-type", content_type)], body).await
    }

    async fn post_with(&self, token: Option<&str>, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> (StatusCode, Value) {
        let mut req = Request::post("/v1/envelopes");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let (status, _, body) = self.request(req.body(Body::from(body.into())).unwrap()).await;
        (status, serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body))))
    }

    /// The stored records of one topic.
    fn on(&self, base: &str) -> Vec<Record> {
        let topic = Broker::new("", "router").name(base);
        self.broker.stored.lock().unwrap().drain(..).filter(|r| r.topic == topic).collect()
    }

    fn records(&self) -> (Vec<Record>, Vec<Record>) {
        let all: Vec<Record> = self.broker.stored.lock().unwrap().drain(..).collect();
        let envelopes = Broker::new("", "router").name(topics::ENVELOPES);
        all.into_iter().partition(|r| r.topic == envelopes)
    }

    async fn metrics(&self) -> BTreeMap<String, f64> {
        let (status, _, body) = self.request(Request::get("/metrics").body(Body::empty()).unwrap()).await;
        assert_eq!(status, 200);
        String::from_utf8(body)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("pitgun_gateway"))
            .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse().unwrap())))
            .collect()
    }
}

/// The gateway's settings for the tests: the shipped dictionary and manifests, no browsers.
fn settings(keys: PathBuf, limits: Limits) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        // Names the topics only: nothing connects to it.
        broker: Broker::new("127.0.0.1:9", "router"),
        keys: Some(keys),
        dictionary: repo().join("manifests/dictionary/racing.yaml"),
        manifests: Some(repo().join("manifests")),
        max_future_skew: Duration::from_secs(300),
        limits,
        ack_timeout: Duration::from_secs(5),
        compression: "lz4".into(),
        readiness_interval: Duration::from_millis(20),
        keys_check_interval: Duration::from_secs(3600),
        session_secret: None,
        cors_origins: Vec::new(),
        drain_timeout: Duration::from_secs(1),
        header_timeout: Duration::from_secs(30),
    }
}

/// The gateway refuses to start on a dictionary that breaks its own rules, as the processor
/// does: with a metric defined twice it admitted channels the processor would never place.
#[test]
fn a_dictionary_that_breaks_its_rules_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    pitgun_ingest::keys::append_new_key(&keys, "pitgun-web", "2026-11-30T00:00:00Z").unwrap();
    let text = std::fs::read_to_string(repo().join("manifests/dictionary/racing.yaml")).unwrap();
    let dictionary = dir.path().join("racing.yaml");
    std::fs::write(&dictionary, text.replacen("  - id: vehicle.accel_long", "  - id: vehicle.speed", 1)).unwrap();
    let mut settings = settings(keys, limits());
    settings.dictionary = dictionary;
    let refused = build_with(&settings, Box::new(StandIn::default())).err().expect("refused").to_string();
    assert!(refused.contains("racing.yaml:43: at /metrics/1/id: metric vehicle.speed is already defined at /metrics/0"), "{refused}");
}

fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

/// The event ids of Avro single objects, each checked to be keyed by its session.
fn event_ids(records: &[Record]) -> Vec<String> {
    let decoder = pitgun_codec::wire::Decoder::default();
    records
        .iter()
        .map(|r| {
            let mut text = String::new();
            decoder.to_json(&r.value, &mut text).expect("an Avro single object");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(r.key.as_deref(), Some(v["session_id"].as_str().unwrap().as_bytes()), "keyed by session id");
            v["event_id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// A body that sends its bytes, then nothing more: a client trickling a request.
struct Stalled(Option<Vec<u8>>);

impl http_body::Body for Stalled {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match self.0.take() {
            Some(b) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(b.into())))),
            None => std::task::Poll::Pending,
        }
    }
}

/// A POST of NDJSON with the `header` given, whose body sends `sent` and then nothing more.
fn stalled_post(
    h: &Harness,
    header: (&str, String),
    sent: &[u8],
) -> tokio::task::JoinHandle<Result<axum::response::Response, std::convert::Infallible>> {
    let req = Request::post("/v1/envelopes")
        .header("content-type", "application/x-ndjson")
        .header(header.0, header.1)
        .header("authorization", format!("Bearer {}", h.web))
        .body(Body::new(Stalled(Some(sent.to_vec()))))
        .unwrap();
    let app = router(h.gw.clone());
    tokio::spawn(async move { app.oneshot(req).await })
}

/// Slow compressed bodies hold only the bytes they sent of the in-flight budget: a client
/// trickling gzip bodies (each could decode to --max-body) no longer takes the whole budget
/// from everyone else until the body deadline.
#[tokio::test]
async fn a_slow_compressed_body_holds_only_the_bytes_it_sent() {
    let h = Harness::new(Limits { max_in_flight: 12 << 20, ..limits() });
    let slow: Vec<_> = (0..2).map(|_| stalled_post(&h, ("content-encoding", "gzip".into()), &[0x1f, 0x8b])).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let body = ndjson(&(0..20).map(|i| envelope("slow", i)).collect::<Vec<_>>());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let (status, answer) =
        h.post_with(Some(&h.web), &[("content-type", "application/x-ndjson"), ("content-encoding", "gzip")], gz.finish().unwrap()).await;
    assert_eq!((status, answer["accepted"].as_u64()), (StatusCode::ACCEPTED, Some(20)), "{answer}");
    for s in slow {
        assert!(!s.is_finished(), "the slow requests are still being read");
        s.abort();
    }
}

/// An uncompressed body holds what it sent too, not the length it declares: two clients that
/// declared 6 MiB each and sent two bytes took the whole 12 MiB budget until the body deadline,
/// and every other producer was answered 503.
#[tokio::test]
async fn a_slow_body_holds_only_the_bytes_it_sent_whatever_length_it_declares() {
    let h = Harness::new(Limits { max_in_flight: 12 << 20, ..limits() });
    let slow: Vec<_> = (0..2).map(|_| stalled_post(&h, ("content-length", (6 << 20).to_string()), b"{\"")).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let body = ndjson(&(0..20).map(|i| envelope("slow", i)).collect::<Vec<_>>());
    let (status, answer) = h.post_with(Some(&h.web), &[("content-type", "application/x-ndjson")], body.into_bytes()).await;
    assert_eq!((status, answer["accepted"].as_u64()), (StatusCode::ACCEPTED, Some(20)), "{answer}");
    for s in slow {
        assert!(!s.is_finished(), "the slow requests are still being read");
        s.abort();
    }
}

/// A body whose Content-Length there is no room for is answered 503 at once, compressed or not
/// (as --max-in-flight's help says): a gzip body was read anyway, and a stalled one answered 408
/// at the body deadline instead.
#[tokio::test]
async fn a_body_declaring_more_than_the_room_left_is_answered_503_at_once_in_any_encoding() {
    let h = Harness::new(Limits { max_in_flight: 12 << 20, ..limits() });
    // 10 MiB of the 12 held by two bodies still arriving.
    let held: Vec<_> = (0..2).map(|_| stalled_post(&h, ("content-length", (6 << 20).to_string()), &vec![b' '; 5 << 20])).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for encoding in ["identity", "gzip", "zstd"] {
        let req = Request::post("/v1/envelopes")
            .header("content-type", "application/x-ndjson")
            .header("content-encoding", encoding)
            .header("content-length", (4 << 20).to_string())
            .header("authorization", format!("Bearer {}", h.web))
            .body(Body::new(Stalled(Some(vec![0x1f, 0x8b]))))
            .unwrap();
        let answered = tokio::time::timeout(Duration::from_secs(5), router(h.gw.clone()).oneshot(req)).await;
        let r = answered.unwrap_or_else(|_| panic!("{encoding}: no answer within 5 s")).unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{encoding}");
        assert!(r.headers().contains_key("retry-after"), "{encoding}");
    }
    for s in held {
        assert!(!s.is_finished(), "the slow requests are still being read");
        s.abort();
    }
}

/// A compressed body and what it decodes to may together exceed the whole budget: such a
/// request holds all of it, and is let in when the gateway is otherwise idle.
#[tokio::test]
async fn a_body_that_decodes_to_nearly_the_whole_budget_is_let_in() {
    let h = Harness::new(Limits { max_body: 1 << 20, max_in_flight: 1 << 20, ..limits() });
    let body = ndjson(&(1..=3300).map(|i| envelope("big", i)).collect::<Vec<_>>());
    assert!(body.len() > 900 << 10 && body.len() < 1 << 20, "{} bytes", body.len());
    // Stored, not compressed: the body and what it decodes to are each nearly the budget.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(body.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() + body.len() > 1 << 20 && gz.len() < 1 << 20, "together over the budget, each within --max-body");
    let (status, answer) = h.post_with(Some(&h.web), &[("content-type", "application/x-ndjson"), ("content-encoding", "gzip")], gz).await;
    assert_eq!((status, answer["accepted"].as_u64()), (StatusCode::ACCEPTED, Some(3300)), "{answer}");
}

#[tokio::test]
async fn gzip_and_zstd_bodies_are_read() {
    let h = Harness::standard();
    let body = ndjson(&(0..20).map(|i| envelope("z", i)).collect::<Vec<_>>());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let (status, answer) = h.post_with(Some(&h.web), &[("content-type", "application/x-ndjson"), ("content-encoding", "gzip")], gz).await;
    assert_eq!((status, answer["accepted"].as_u64()), (StatusCode::ACCEPTED, Some(20)), "{answer}");
    let zs = zstd::encode_all(body.as_bytes(), 3).unwrap();
    let (status, answer) = h.post_with(Some(&h.web), &[("content-type", "application/x-ndjson"), ("content-encoding", "zstd")], zs).await;
    assert_eq!((status, answer["accepted"].as_u64()), (StatusCode::ACCEPTED, Some(20)), "{answer}");
    let (status, answer) = h.post_with(Some(&h.web), &[("content-type", "application/x-ndjson"), ("content-encoding", "gzip")], "not gzip").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("gzip"), "{answer}");
    assert_eq!(event_ids(&h.on(topics::ENVELOPES)).len(), 40);
}

#[tokio::test]
async fn bad_items_are_refused_by_index_and_pointer_and_dead_lettered() {
    let h = Harness::standard();
    let good = envelope("b", 1);
    let mut wrong_type = envelope("b", 2);
    wrong_type["seq"] = json!("two");
    let mut unknown_channel = envelope("b", 3);
    unknown_channel["channels"]["warp/drive"] = json!(9);
    let mut old_version = envelope("b", 4);
    old_version["source"]["version"] = json!("7.0.0");
    let mut future = envelope("b", 5);
    future["time_us"] = json!(now_us() + 3_600_000_000);
    let mut extra_field = envelope("b", 6);
    extra_field["colour"] = json!("red");
    let mut long_dim = envelope("b", 7);
    long_dim["dims"]["track"] = json!("m".repeat(300));
    let nan = envelope("b", 8).to_string().replace("\"throttle\":55", "\"throttle\":NaN");
    let inf = envelope("b", 9).to_string().replace("\"throttle\":55", "\"throttle\":-Infinity");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let body = [
        good.to_string(),
        wrong_type.to_string(),
        unknown_channel.to_string(),
        old_version.to_string(),
        future.to_string(),
        extra_field.to_string(),
        long_dim.to_string(),
        nan,
        inf,
        deep,
        "{\"schema\": \"pitgun-envelope/v1\",".into(),
    ]
    .join("\n");
    let before = h.metrics().await;
    let (status, answer) = h.post(Some(&h.web), "application/x-ndjson", body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(1), Some(10)), "{answer:#}");
    let errors: Vec<(u64, &str, &str, &str)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["pointer"].as_str().unwrap(), e["reason"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect();
    let expect = [
        (1, "/seq", "invalid_envelope", "two"),
        (2, "/channels/warp~1drive", "unknown_channel", "warp/drive"),
        (3, "/source/version", "unknown_source", "7.0.0"),
        (4, "/time_us", "future_time", "ahead of the gateway's clock"),
        (5, "/colour", "invalid_envelope", "unknown field `colour`"),
        (6, "/dims/track", "invalid_envelope", "256"),
        (7, "", "malformed_json", "NaN and Infinity are not JSON"),
        (8, "", "malformed_json", "NaN and Infinity are not JSON"),
        (9, "", "malformed_json", "nested deeper than 128"),
        (10, "", "malformed_json", "EOF"),
    ];
    assert_eq!(errors.len(), expect.len(), "{answer:#}");
    for (got, want) in errors.iter().zip(expect) {
        assert_eq!((got.0, got.1, got.2), (want.0, want.1, want.2), "{got:?}");
        assert!(got.3.contains(want.3), "item {}: {:?} should mention {:?}", got.0, got.3, want.3);
    }

    let (stored, dead) = h.records();
    assert_eq!(event_ids(&stored), ["b-1"], "nothing invalid reaches the envelopes topic");
    assert_eq!(dead.len(), 10);
    let reasons: BTreeMap<String, usize> = dead.iter().fold(BTreeMap::new(), |mut m, r| {
        assert_eq!(r.topic, Broker::new("", "router").name(topics::DEADLETTER_INGEST));
        assert_eq!(r.headers["pitgun-stage"], "ingest");
        assert!(r.headers["pitgun-origin"].starts_with("source=pitgun-web index="), "{:?}", r.headers);
        assert!(r.headers["pitgun-detail"].starts_with("at /"), "{:?}", r.headers);
        *m.entry(r.headers["pitgun-reason"].clone()).or_default() += 1;
        m
    });
    assert_eq!(
        reasons,
        BTreeMap::from([
            ("future_time".into(), 1),
            ("invalid_envelope".into(), 3),
            ("malformed_json".into(), 4),
            ("unknown_channel".into(), 1),
            ("unknown_source".into(), 1)
        ])
    );
    let unknown = dead.iter().find(|r| r.headers["pitgun-reason"] == "unknown_channel").unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&unknown.value).unwrap(), unknown_channel, "the item as sent");
    assert_eq!(unknown.headers["pitgun-origin"], "source=pitgun-web index=2");
    assert_eq!(unknown.key.as_deref(), Some(&b"b"[..]), "a dead letter is keyed by its session when it has one");

    let after = h.metrics().await;
    let moved = |name: &str| metric(&after, name) - metric(&before, name);
    assert_eq!(moved("pitgun_gateway_envelopes_rejected_total{reason=\"malformed_json\"}"), 4.0);
    assert_eq!(moved("pitgun_gateway_envelopes_rejected_total{reason=\"invalid_envelope\"}"), 3.0);
    assert_eq!(moved("pitgun_gateway_envelopes_rejected_total{reason=\"future_time\"}"), 1.0);
    assert_eq!(moved("pitgun_gateway_envelopes_accepted_total"), 1.0);
    assert_eq!(moved("pitgun_gateway_deadletters_total"), 10.0);
}

#[tokio::test]
async fn keys_are_required_and_bound_to_their_source() {
    let h = Harness::standard();
    let body = ndjson(&[envelope("k", 1), envelope("k", 2)]);
    let (status, answer) = h.post(None, "application/x-ndjson", body.clone()).await;
    assert_eq!(status, 401);
    assert!(answer["message"].as_str().unwrap().contains("Authorization: Bearer"), "{answer}");
    let (status, answer) = h.post(Some("pgk_0000"), "application/x-ndjson", body.clone()).await;
    assert_eq!((status, answer["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("unknown API key")));
    let (status, answer) = h.post_with(None, &[("content-type", "application/x-ndjson"), ("x-api-key", &h.web)], body.clone()).await;
    assert_eq!(status, 202, "X-Api-Key is accepted too: {answer}");
    let mut sim = envelope("k", 3);
    sim["source"] = json!({"kind": "simulator", "id": "pitgun-sim", "version": "2.1.0"});
    let mixed = format!("{body}{sim}\n");
    let (status, answer) = h.post(Some(&h.web), "application/x-ndjson", mixed.clone()).await;
    assert_eq!(status, 403, "{answer}");
    let m = answer["message"].as_str().unwrap();
    assert!(m.contains("item 2") && m.contains("pitgun-sim") && m.contains("pitgun-web"), "{m}");
    let (status, _) = h.post(Some(&h.sim), "application/x-ndjson", mixed).await;
    assert_eq!(status, 403, "the web items are foreign to the sim key");
    // Another source's item that the strict decoder refuses too (an unknown field, a wrong
    // type) still refuses the batch: it was dead-lettered under this key's source.
    for broken in [json!({"extra": 1}), json!({"seq": "three"})] {
        let mut item = sim.clone();
        item.as_object_mut().unwrap().extend(broken.as_object().unwrap().clone());
        let (status, answer) = h.post(Some(&h.web), "application/x-ndjson", format!("{body}{item}\n")).await;
        assert_eq!(status, 403, "{item}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains("item 2 has source.id \"pitgun-sim\""), "{answer}");
    }
    let (stored, dead) = h.records();
    assert_eq!(event_ids(&stored), ["k-1", "k-2"], "only the X-Api-Key batch");
    assert!(dead.is_empty(), "refused requests leave no dead letters");
    let m = h.metrics().await;
    assert_eq!(metric(&m, "pitgun_gateway_requests_total{status=\"401\"}"), 2.0);
    assert_eq!(metric(&m, "pitgun_gateway_requests_total{status=\"403\"}"), 4.0);
}

/// An item whose `source` cannot be read as an object with a string `id` (an array, a number)
/// is refused on its own, not taken for another source's (which would refuse the whole batch).
#[tokio::test]
async fn an_item_whose_source_is_not_an_object_is_refused_alone() {
    let h = Harness::standard();
    let body = ndjson(&[envelope("a", 1)]);
    for odd in [r#"[["pitgun-sim"]]"#, r#"{"source": ["pitgun-sim"]}"#, r#"{"source": {"id": 7}}"#] {
        let (status, answer) = h.post(Some(&h.web), "application/x-ndjson", format!("{body}{odd}\n")).await;
        assert_eq!(status, 202, "{odd}: {answer}");
        assert_eq!(answer["rejected"], 1, "{odd}: {answer}");
    }
}

/// A `POST /v1/envelopes` of `body` from `peer`, as the served router sees it.
fn from_peer(peer: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut req = Request::post("/v1/envelopes").header("content-type", "application/x-ndjson");
    if let Some(t) = token {
        req = req.header("x-api-key", t);
    }
    let mut req = req.body(Body::from(body.to_string())).unwrap();
    req.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    req
}

#[tokio::test]
async fn a_credential_over_its_quota_gets_429_with_retry_after_and_other_credentials_do_not() {
    let h = Harness::new(Limits { per_credential_per_second: NonZeroU32::new(3), ..limits() });
    let body = ndjson(&[envelope("q", 1)]);
    for i in 0..3 {
        let (status, answer) = h.post(Some(&h.web), "application/x-ndjson", body.clone()).await;
        assert_eq!(status, 202, "request {i} is within the burst: {answer}");
    }
    let (status, headers, answer) = h.request(from_peer("10.0.0.1:5000", Some(&h.web), &body)).await;
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert!(answer["message"].as_str().unwrap().contains("this API key"), "{answer}");
    let mut sim = envelope("q", 2);
    sim["source"] = json!({"kind": "simulator", "id": "pitgun-sim", "version": "2.1.0"});
    sim["channels"] = json!({"speed": 40.0});
    let (status, answer) = h.post(Some(&h.sim), "application/x-ndjson", ndjson(&[sim])).await;
    assert_eq!(status, 202, "another key has its own quota: {answer}");
    let (stored, _) = h.records();
    assert_eq!(stored.len(), 4, "the refused request stored nothing");
    let m = h.metrics().await;
    assert_eq!(metric(&m, "pitgun_gateway_throttled_total{limit=\"credential\"}"), 1.0);
    assert_eq!(metric(&m, "pitgun_gateway_requests_total{status=\"429\"}"), 1.0);
}

#[tokio::test]
async fn requests_without_a_valid_credential_are_limited_per_address() {
    let h = Harness::new(Limits { unauthenticated_per_minute: NonZeroU32::new(2).unwrap(), ..limits() });
    let body = ndjson(&[envelope("u", 1)]);
    for token in [None, Some("pgk_guess")] {
        let (status, _, _) = h.request(from_peer("192.0.2.7:4000", token, &body)).await;
        assert_eq!(status, 401);
    }
    let (status, headers, answer) = h.request(from_peer("192.0.2.7:4001", Some("pgk_guess2"), &body)).await;
    assert_eq!(status, 429, "the address's quota of failures is spent: {}", String::from_utf8_lossy(&answer));
    let wait: u64 = headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "Retry-After {wait}");
    assert!(String::from_utf8_lossy(&answer).contains("192.0.2.7"), "the answer names the address");
    let (status, _, _) = h.request(from_peer("192.0.2.8:4000", None, &body)).await;
    assert_eq!(status, 401, "another address has its own quota");
    let (status, _, answer) = h.request(from_peer("192.0.2.7:4002", Some(&h.web), &body)).await;
    assert_eq!(status, 202, "a valid key from the same address still sends: {}", String::from_utf8_lossy(&answer));
    let m = h.metrics().await;
    assert_eq!(metric(&m, "pitgun_gateway_throttled_total{limit=\"unauthenticated\"}"), 1.0);
}

#[tokio::test]
async fn a_key_deleted_from_the_file_is_refused_after_the_reload_and_a_new_one_accepted() {
    let h = Harness::standard();
    let body = ndjson(&[envelope("r", 1)]);
    assert_eq!(h.post(Some(&h.web), "application/x-ndjson", body.clone()).await.0, 202);
    let path = h.gw.keys.path().to_path_buf();
    let text = std::fs::read_to_string(&path).unwrap();
    let entries: Vec<&str> = text.split("\n- ").collect();
    let kept: Vec<&str> = entries.iter().copied().filter(|e| !e.starts_with("source: \"pitgun-web\"")).collect();
    assert_eq!(kept.len() + 1, entries.len(), "one entry removed");
    std::fs::write(&path, kept.join("\n- ")).unwrap();
    let new = pitgun_ingest::keys::append_new_key(&path, "pitgun-web", "2026-12-02T00:00:00Z").unwrap();
    assert_eq!(h.gw.keys.reload().unwrap(), 3);
    let (status, answer) = h.post(Some(&h.web), "application/x-ndjson", body.clone()).await;
    assert_eq!((status, answer["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("unknown API key")), "revoked");
    assert_eq!(h.post(Some(&new), "application/x-ndjson", body).await.0, 202, "the new key sends at once");
}

#[tokio::test]
async fn a_batch_without_valid_items_is_422_and_an_unknown_source_is_named() {
    let h = Harness::standard();
    let mut acme = envelope("a", 1);
    acme["source"]["id"] = json!("acme-telemetry");
    let (status, answer) = h.post(Some(&h.acme), "application/json", Value::Array(vec![acme.clone(), acme]).to_string()).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["accepted"], 0);
    assert_eq!(answer["errors"][0]["reason"], "unknown_source");
    assert_eq!(answer["errors"][0]["pointer"], "/source/id");
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("no aliases for producer \"acme-telemetry\""), "{answer}");
    assert_eq!(answer["errors"][1]["index"], 1);
    let (stored, dead) = h.records();
    assert!(stored.is_empty());
    assert_eq!(dead.len(), 2);
    assert_eq!(metric(&h.metrics().await, "pitgun_gateway_requests_total{status=\"422\"}"), 1.0);
}

#[tokio::test]
async fn limits_content_types_and_broken_bodies_have_their_statuses() {
    let h = Harness::new(Limits { max_body: 64 << 10, max_batch: 10, ..limits() });
    let eleven = ndjson(&(0..11).map(|i| envelope("l", i)).collect::<Vec<_>>());
    let (status, answer) = h.post(Some(&h.web), "application/x-ndjson", eleven).await;
    assert_eq!(status, 413);
    assert!(answer["message"].as_str().unwrap().contains("more than 10 items"), "{answer}");
    let big = format!("{}\n{}", envelope("l", 1), " ".repeat(70 * 1024));
    let (status, answer) = h.post(Some(&h.web), "application/x-ndjson", big).await;
    assert_eq!(status, 413);
    // Named by the flag that sets it.
    assert!(answer["message"].as_str().unwrap().contains("65536-byte limit (--max-body)"), "{answer}");
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b' '; 50 << 20]).unwrap();
    let bomb = bomb.finish().unwrap();
    assert!(bomb.len() < 64 * 1024);
    let (status, answer) = h.post_with(Some(&h.web), &[("content-type", "application/x-ndjson"), ("content-encoding", "gzip")], bomb).await;
    assert_eq!(status, 413, "a zip bomb is cut off: {answer}");
    assert!(answer["message"].as_str().unwrap().contains("expands to more than"), "{answer}");
    // NDJSON sent as application/json: a 400 that says so, not one malformed item (422).
    let two = ndjson(&[envelope("l", 1), envelope("l", 2)]);
    let (status, answer) = h.post(Some(&h.web), "application/json", two).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("as application/x-ndjson"), "{answer}");
    let (status, answer) = h.post(Some(&h.web), "text/csv", envelope("l", 1).to_string()).await;
    assert_eq!(status, 415);
    assert!(answer["message"].as_str().unwrap().contains("application/x-ndjson"), "{answer}");
    let (status, _) = h.post_with(Some(&h.web), &[("content-type", "application/json"), ("content-encoding", "br")], "{}").await;
    assert_eq!(status, 415);
    // An unreadable or repeated Content-Type or Content-Encoding is refused for what it is: it was
    // taken as missing (an unreadable encoding as no compression, the body then dead-lettered).
    for (name, values, says) in [
        ("content-encoding", vec![&b"gzip\xe9"[..]], "Content-Encoding header is not readable"),
        ("content-encoding", vec![&b"gzip"[..], &b"gzip"[..]], "more than one Content-Encoding"),
        ("content-type", vec![&b"application/json\xe9"[..]], "Content-Type header is not readable"),
        ("content-type", vec![&b"application/json"[..], &b"text/csv"[..]], "more than one Content-Type"),
    ] {
        let mut req = Request::post("/v1/envelopes").header("authorization", format!("Bearer {}", h.web));
        if name == "content-encoding" {
            req = req.header("content-type", "application/x-ndjson");
        }
        for v in &values {
            req = req.header(name, axum::http::HeaderValue::from_bytes(v).unwrap());
        }
        let (status, _, body) = h.request(req.body(Body::from(envelope("l", 1).to_string())).unwrap()).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 415, "{name} {values:?}: {body}");
        assert!(body.contains(says), "{name} {values:?}: {body}");
    }
    for (body, says) in [("[{\"a\":1}, {\"b\":", "not closed"), ("[]", "no envelopes"), ("[1,,2]", "two commas")] {
        let (status, answer) = h.post(Some(&h.web), "application/json", body).await;
        assert_eq!(status, 400, "{body}");
        assert!(answer["message"].as_str().unwrap().contains(says), "{body}: {answer}");
    }
    let (stored, dead) = h.records();
    assert!(stored.is_empty() && dead.is_empty(), "a refused request queues nothing");
    let m = h.metrics().await;
    assert_eq!(metric(&m, "pitgun_gateway_requests_total{status=\"413\"}"), 3.0);
    assert_eq!(metric(&m, "pitgun_gateway_requests_total{status=\"415\"}"), 6.0);
    assert_eq!(metric(&m, "pitgun_gateway_requests_total{status=\"400\"}"), 4.0);
}

/// NDJSON sent as application/json is one item; past --max-item-size it was refused as an
/// envelope too large (422, dead-lettered) rather than as a body sent under the wrong type.
#[tokio::test]
async fn ndjson_sent_as_json_past_the_item_limit_is_400() {
    let h = Harness::new(Limits { max_item: 1024, ..limits() });
    let lines = ndjson(&(0..8).map(|i| envelope("n", i)).collect::<Vec<_>>());
    assert!(lines.len() > 1024 && lines.lines().all(|l| l.len() < 1024), "each line fits, the body does not");
    let (status, answer) = h.post(Some(&h.web), "application/json", lines.clone()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("as application/x-ndjson"), "{answer}");
    let (stored, dead) = h.records();
    assert!(stored.is_empty() && dead.is_empty(), "nothing is queued: {} stored, {} dead letters", stored.len(), dead.len());
    let (status, answer) = h.post(Some(&h.web), "application/x-ndjson", lines).await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test]
async fn a_batch_the_broker_does_not_take_is_503_with_retry_after() {
    let h = Harness::new(Limits { retry_after_secs: 7, ..limits() });
    h.gw.health.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let body = ndjson(&[envelope("u", 1), envelope("u", 2)]);
    for (failure, cause, stays_ready) in
        [(ProduceError::QueueFull, "queue_full", true), (ProduceError::Delivery("Broker: Not enough in-sync replicas".into()), "delivery", false)]
    {
        *h.broker.failure.lock().unwrap() = Some(failure);
        let (status, headers, answer) = h
            .request(
                Request::post("/v1/envelopes")
                    .header("content-type", "application/x-ndjson")
                    .header("authorization", format!("Bearer {}", h.web))
                    .body(Body::from(body.clone()))
                    .unwrap(),
            )
            .await;
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(status, 503, "{answer}");
        assert_eq!(headers.get("retry-after").map(|v| v.to_str().unwrap()), Some("7"));
        assert!(answer["message"].as_str().unwrap().contains("send the whole batch again"), "{answer}");
        assert_eq!(
            h.gw.health.ready.load(std::sync::atomic::Ordering::Relaxed),
            stays_ready,
            "{cause}: a full queue is load, a failed delivery is the broker"
        );
        let m = h.metrics().await;
        assert_eq!(metric(&m, &format!("pitgun_gateway_batches_failed_total{{cause=\"{cause}\"}}")), 1.0, "{m:?}");
    }
    *h.broker.failure.lock().unwrap() = None;
    let (status, answer) = h.post(Some(&h.web), "application/x-ndjson", body).await;
    assert_eq!(status, 202, "the resent batch is stored: {answer}");
    assert_eq!(event_ids(&h.on(topics::ENVELOPES)), ["u-1", "u-2"]);
    let m = h.metrics().await;
    assert_eq!(metric(&m, "pitgun_gateway_requests_total{status=\"503\"}"), 2.0);
    assert_eq!(metric(&m, "pitgun_gateway_envelopes_accepted_total"), 2.0, "a failed batch is not counted as accepted");
}

#[tokio::test]
async fn readiness_follows_the_broker_and_health_does_not() {
    let h = Harness::standard();
    let watcher = tokio::spawn(watch_readiness(h.gw.clone(), Duration::from_millis(20)));
    let status_of = |path: &'static str| {
        let h = &h;
        async move { h.request(Request::get(path).body(Body::empty()).unwrap()).await.0 }
    };
    let wait_for = |want: StatusCode| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while status_of("/readyz").await != want {
            assert!(tokio::time::Instant::now() < deadline, "/readyz did not turn {want} within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_for(StatusCode::OK).await;
    *h.broker.unreachable.lock().unwrap() = Some("Local: Broker transport failure".into());
    wait_for(StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(status_of("/healthz").await, 200, "alive while the broker is away");
    *h.broker.unreachable.lock().unwrap() = None;
    wait_for(StatusCode::OK).await;
    watcher.abort();
}

#[tokio::test]
async fn definitions_are_served_with_etags() {
    let h = Harness::standard();
    let (status, etag, schema) = h.get("/schemas/pitgun-envelope/v1", None).await;
    assert_eq!(status, 200);
    assert_eq!(schema["$id"], "https://api.pitgun.io/schemas/pitgun-envelope/v1");
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("schemas/pitgun-envelope/v1.json")).unwrap()).unwrap();
    assert_eq!(schema, on_disk);
    let etag = etag.expect("an ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "strong: {etag}");
    assert_eq!(h.get("/schemas/pitgun-envelope/v1", Some(&etag)).await.0, 304);
    assert_eq!(h.get("/schemas/pitgun-envelope/v1", Some(&format!("\"x\", W/{etag}"))).await.0, 304);
    assert_eq!(h.get("/schemas/pitgun-envelope/v1", Some("\"other\"")).await.0, 200);
    let (_, _, list) = h.get("/schemas", None).await;
    let names: Vec<&str> = list["schemas"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"pitgun-dictionary") && names.contains(&"pitgun-common"), "{list}");
    let (status, _, dict) = h.get("/dictionary", None).await;
    assert_eq!((status, dict["name"].as_str()), (StatusCode::OK, Some("racing")));
    let (status, _, speed) = h.get("/dictionary/vehicle.speed", None).await;
    assert_eq!((status, speed["unit"].as_str()), (StatusCode::OK, Some("m/s")));
    let (_, _, manifests) = h.get("/manifests", None).await;
    let urls: Vec<&str> = manifests["manifests"].as_array().unwrap().iter().map(|m| m["url"].as_str().unwrap()).collect();
    assert!(urls.contains(&"/manifests/lap-performance/v1") && urls.contains(&"/manifests/racing/1.0.0"), "{urls:?}");
    let (status, _, m) = h.get("/manifests/lap-performance/v1", None).await;
    assert_eq!((status, m["name"].as_str()), (StatusCode::OK, Some("lap-performance")));
    assert_eq!(h.get("/manifests/lap-performance/1", None).await.2, m);
    let (status, _, contract) = h.get("/manifests/lap-performance/v1/contract", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        h.get("/manifests/lap-performance/1/contract", None).await,
        (StatusCode::OK, h.get("/manifests/lap-performance/v1/contract", None).await.1, contract),
        "the bare version number serves the contract too"
    );
    for (path, says) in [
        ("/schemas/pitgun-nope/v1", "no schema \"pitgun-nope/v1\""),
        ("/dictionary/vehicle.warp", "metric \"vehicle.warp\" is not in dictionary racing"),
        ("/manifests/lap-performance/v9", "no manifest \"lap-performance/v9\""),
        ("/v2/envelopes", "no route /v2/envelopes"),
    ] {
        let (status, _, body) = h.get(path, None).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"], "not_found");
        assert!(body["message"].as_str().unwrap().contains(says), "{path}: {body}");
    }
    // A route asked with a method it does not take: 405, its methods in Allow, a JSON body.
    for (method, path, allowed) in [("GET", "/v1/envelopes", "POST"), ("POST", "/dictionary", "GET,HEAD"), ("POST", "/healthz", "GET,HEAD")] {
        let req = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        let (status, headers, body) = h.request(req).await;
        assert_eq!(status, 405, "{method} {path}");
        assert_eq!(headers.get("allow").map(|v| v.to_str().unwrap()), Some(allowed), "{method} {path}");
        let body: Value = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {:?}", String::from_utf8_lossy(&body)));
        assert_eq!(body["error"], "method_not_allowed", "{method} {path}");
        assert!(body["message"].as_str().unwrap().contains(&format!("{path} does not take {method}")), "{method} {path}: {body}");
    }
}

/// A session token as the API issues it, for `session`, valid for `ttl_s` more seconds (negative:
/// expired that long ago).
fn session_token(session: &str, source: &str, ttl_s: i64) -> String {
    use pitgun_runtime::browser::{SessionClaims, SessionKey};
    let exp = (now_us() / 1_000_000 + ttl_s) as u64;
    SessionKey::new(SESSION_SECRET).unwrap().issue(&SessionClaims { sid: session.into(), src: source.into(), exp })
}

#[tokio::test]
async fn a_session_token_sends_for_its_one_session_and_source_only() {
    let h = Harness::browsers();
    let token = session_token("web-1", "pitgun-web", 600);
    let body = ndjson(&(0..3).map(|i| envelope("web-1", i)).collect::<Vec<_>>());
    let (status, answer) = h.post(Some(&token), "application/x-ndjson", body.clone()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(event_ids(&h.on(topics::ENVELOPES)), ["web-1-0", "web-1-1", "web-1-2"]);

    // Another session in the batch: 403, and nothing of the batch is stored.
    let mixed = ndjson(&[envelope("web-1", 3), envelope("web-2", 1)]);
    let (status, answer) = h.post(Some(&token), "application/x-ndjson", mixed).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("\"web-2\""), "names the other session: {answer}");
    // Another source, even for the right session: 403.
    let mut sim = envelope("web-1", 4);
    sim["source"] = json!({"kind": "simulator", "id": "pitgun-sim", "version": "2.1.0"});
    let (status, answer) = h.post(Some(&token), "application/json", sim.to_string()).await;
    assert_eq!(status, 403, "{answer}");
    // An item over the size limit is never read, so it names no session: it is refused by its
    // index and the rest of the batch stored (it used to make the whole batch 403).
    let huge = json!({"x": "a".repeat(300 << 10)}).to_string();
    let oversized = format!("{}\n{huge}\n", envelope("web-1", 6));
    let (status, answer) = h.post(Some(&token), "application/x-ndjson", oversized).await;
    assert_eq!(
        (status, answer["accepted"].as_u64(), answer["errors"][0]["reason"].as_str()),
        (StatusCode::ACCEPTED, Some(1), Some("too_large")),
        "{answer}"
    );
    let (stored, dead) = h.records();
    assert_eq!((event_ids(&stored), dead.len()), (vec!["web-1-6".to_string()], 1));
    // An item of the token's own session that the decoder refuses (an unknown field) is
    // dead-lettered under its session, and the rest of the batch stored: it made the whole batch
    // 403, and the game drops a batch refused so.
    let mut extra = envelope("web-1", 8);
    extra["colour"] = json!("red");
    let (status, answer) = h.post(Some(&token), "application/x-ndjson", ndjson(&[envelope("web-1", 7), extra])).await;
    assert_eq!(
        (status, answer["accepted"].as_u64(), answer["errors"][0]["reason"].as_str()),
        (StatusCode::ACCEPTED, Some(1), Some("invalid_envelope")),
        "{answer}"
    );
    let (stored, dead) = h.records();
    assert_eq!(event_ids(&stored), ["web-1-7"]);
    assert_eq!(dead.iter().map(|d| d.key.as_deref()).collect::<Vec<_>>(), [Some(&b"web-1"[..])], "keyed by its session");
    // An invalid item naming another session is refused as a whole too, not dead-lettered.
    let mut bad = envelope("web-9", 5);
    bad["seq"] = json!("x");
    let (status, answer) = h.post(Some(&token), "application/x-ndjson", ndjson(&[envelope("web-1", 5), bad])).await;
    assert_eq!(status, 403, "{answer}");
    // An invalid item of another source is refused with the batch too, not dead-lettered.
    let mut foreign_bad = envelope("web-1", 6);
    foreign_bad["source"] = json!({"kind": "simulator", "id": "pitgun-sim", "version": "2.1.0"});
    foreign_bad["kind"] = json!("no-such-kind");
    let (status, answer) = h.post(Some(&token), "application/x-ndjson", ndjson(&[envelope("web-1", 6), foreign_bad])).await;
    assert_eq!(status, 403, "{answer}");
    assert!(h.broker.stored.lock().unwrap().is_empty(), "a refused batch queues nothing");

    // Expired, forged, or signed for another source: 401.
    let (status, answer) = h.post(Some(&session_token("web-1", "pitgun-web", -1)), "application/x-ndjson", body.clone()).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("expired"), "{answer}");
    let forged = format!("{}x", &token[..token.len() - 1]);
    let (status, answer) = h.post(Some(&forged), "application/x-ndjson", body.clone()).await;
    assert_eq!(status, 401, "{answer}");
    let other_secret = pitgun_runtime::browser::SessionKey::new(&[9u8; 32]).unwrap().issue(&pitgun_runtime::browser::SessionClaims {
        sid: "web-1".into(),
        src: "pitgun-web".into(),
        exp: u64::MAX,
    });
    let (status, _) = h.post(Some(&other_secret), "application/x-ndjson", body.clone()).await;
    assert_eq!(status, 401);
    // A gateway without the secret refuses every session token, naming the flag.
    let plain = Harness::standard();
    let (status, answer) = plain.post(Some(&token), "application/x-ndjson", body).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("--session-secret-file"), "{answer}");
    assert!(h.broker.stored.lock().unwrap().is_empty() && plain.broker.stored.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_beacon_sends_its_token_in_the_query_and_its_body_as_text() {
    let h = Harness::browsers();
    let token = session_token("web-3", "pitgun-web", 600);
    let req = Request::post(format!("/v1/envelopes?access_token={token}"))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", GAME_ORIGIN)
        .body(Body::from(ndjson(&[envelope("web-3", 1), envelope("web-3", 2)])))
        .unwrap();
    let (status, headers, body) = h.request(req).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some(GAME_ORIGIN));
    assert_eq!(event_ids(&h.on(topics::ENVELOPES)), ["web-3-1", "web-3-2"]);
}

#[tokio::test]
async fn a_credential_given_twice_is_refused_not_chosen_from() {
    // Which copy a proxy, a client library or the gateway reads differs between them: a second
    // credential in one request is a 401 naming where it was repeated, and nothing is stored.
    let h = Harness::browsers();
    let body = ndjson(&[envelope("web-9", 1)]);
    let token = session_token("web-9", "pitgun-web", 600);
    let other = session_token("web-8", "pitgun-web", 600);
    // (URI, headers, where the repeat is named)
    type Case = (String, Vec<(&'static str, String)>, &'static str);
    let cases: Vec<Case> = vec![
        (format!("/v1/envelopes?access_token={token}&access_token={other}"), vec![], "access_token"),
        (format!("/v1/envelopes?access_token={token}&access_token={token}"), vec![], "access_token"),
        ("/v1/envelopes".into(), vec![("authorization", format!("Bearer {token}")), ("authorization", format!("Bearer {}", h.web))], "Authorization"),
        ("/v1/envelopes".into(), vec![("x-api-key", h.web.clone()), ("x-api-key", h.web.clone())], "X-Api-Key"),
        // In two places: still two credentials.
        ("/v1/envelopes".into(), vec![("authorization", format!("Bearer {}", h.web)), ("x-api-key", h.web.clone())], "X-Api-Key"),
        (format!("/v1/envelopes?access_token={token}"), vec![("authorization", format!("Bearer {token}"))], "access_token"),
    ];
    for (uri, headers, named) in cases {
        let mut req = Request::post(&uri).header("content-type", "text/plain;charset=UTF-8").header("origin", GAME_ORIGIN);
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        let (status, _, answer) = h.request(req.body(Body::from(body.clone())).unwrap()).await;
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, 401, "{uri} {headers:?}: {answer}");
        assert!(answer.contains(named) && answer.contains("more than once"), "{uri} {headers:?}: {answer}");
    }
    assert!(h.broker.stored.lock().unwrap().is_empty(), "nothing refused is queued");
    // One credential is still read.
    let req = Request::post(format!("/v1/envelopes?access_token={token}"))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", GAME_ORIGIN)
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(h.request(req).await.0, 202);
}

#[tokio::test]
async fn credentials_are_read_from_one_place_and_keys_never_from_the_url() {
    let h = Harness::browsers();
    let body = ndjson(&[envelope("web-4", 1)]);
    let post = |uri: String, headers: Vec<(&'static str, String)>| {
        let mut req = Request::post(uri).header("content-type", "application/x-ndjson");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.body(Body::from(body.clone())).unwrap()
    };
    // An API key in the query: refused (URLs end up in proxy logs), and so named.
    let (status, _, answer) = h.request(post(format!("/v1/envelopes?access_token={}", h.web), vec![])).await;
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&answer).contains("Authorization header"), "{}", String::from_utf8_lossy(&answer));
    // Another scheme: a clear 401, not "missing credentials".
    let (status, _, answer) = h.request(post("/v1/envelopes".into(), vec![("authorization", "Basic dXNlcjpwYXNz".into())])).await;
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&answer).contains("Bearer"), "{}", String::from_utf8_lossy(&answer));
    // A session token from a page of an origin not on the list: 403, even without a preflight.
    let token = session_token("web-4", "pitgun-web", 600);
    let (status, _, answer) =
        h.request(post("/v1/envelopes".into(), vec![("authorization", format!("Bearer {token}")), ("origin", "http://evil.example".into())])).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&answer));
    assert!(h.broker.stored.lock().unwrap().is_empty(), "nothing refused is queued");
    // The same token from the game's origin, or from no page at all (bots): stored.
    for origin in [Some(GAME_ORIGIN), None] {
        let mut headers = vec![("authorization", format!("Bearer {token}"))];
        headers.extend(origin.map(|o| ("origin", o.to_string())));
        let (status, _, answer) = h.request(post("/v1/envelopes".into(), headers)).await;
        assert_eq!(status, 202, "{origin:?}: {}", String::from_utf8_lossy(&answer));
    }
    assert_eq!(event_ids(&h.on(topics::ENVELOPES)), ["web-4-1", "web-4-1"]);
}

#[tokio::test]
async fn preflights_are_answered_for_allowed_origins_only() {
    let h = Harness::browsers();
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/envelopes")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type, content-encoding")
            .body(Body::empty())
            .unwrap()
    };
    let (status, headers, _) = h.request(preflight(GAME_ORIGIN)).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some(GAME_ORIGIN));
    let allowed = headers.get("access-control-allow-headers").unwrap().to_str().unwrap().to_ascii_lowercase();
    for h in ["authorization", "content-type", "content-encoding"] {
        assert!(allowed.contains(h), "{h} not in {allowed}");
    }
    assert!(headers.get("access-control-allow-methods").unwrap().to_str().unwrap().contains("POST"));
    let (_, headers, _) = h.request(preflight("http://evil.example")).await;
    assert!(headers.get("access-control-allow-origin").is_none(), "another origin is not allowed: {headers:?}");
    assert!(h.broker.stored.lock().unwrap().is_empty());
}

#[tokio::test]
async fn headers_beyond_the_bound_are_refused_with_431() {
    let h = Harness::standard();
    let body = ndjson(&[envelope("h", 1)]);
    let with_header = |bytes: usize| {
        Request::post("/v1/envelopes")
            .header("content-type", "application/x-ndjson")
            .header("authorization", format!("Bearer {}", h.web))
            .header("x-padding", "a".repeat(bytes))
            .body(Body::from(body.clone()))
            .unwrap()
    };
    let (status, _, answer) = h.request(with_header(200 << 10)).await;
    assert_eq!(status, 431, "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("--max-header-size"), "{}", String::from_utf8_lossy(&answer));
    assert!(h.broker.stored.lock().unwrap().is_empty(), "a refused request queues nothing");
    let (status, _, answer) = h.request(with_header(8 << 10)).await;
    assert_eq!(status, 202, "a header within the bound is read: {}", String::from_utf8_lossy(&answer));
    let (status, _, _) = h.request(Request::get("/healthz").header("x-padding", "a".repeat(200 << 10)).body(Body::empty()).unwrap()).await;
    assert_eq!(status, 431, "every route is bounded");
    let m = h.metrics().await;
    assert_eq!(metric(&m, "pitgun_gateway_requests_total{status=\"431\"}"), 1.0, "the refused post is counted, the health probe is not");
}

/// A preflight is answered by the CORS layer without reaching the routes: it was not bounded.
#[tokio::test]
async fn a_preflight_beyond_the_header_bound_is_refused_with_431() {
    let h = Harness::browsers();
    let preflight = |bytes: usize| {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/envelopes")
            .header("origin", GAME_ORIGIN)
            .header("access-control-request-method", "POST")
            .header("x-padding", "a".repeat(bytes))
            .body(Body::empty())
            .unwrap()
    };
    let (status, _, answer) = h.request(preflight(200 << 10)).await;
    assert_eq!(status, 431, "{}", String::from_utf8_lossy(&answer));
    let (status, headers, _) = h.request(preflight(1 << 10)).await;
    assert!(status.is_success(), "a preflight within the bound is answered: {status}");
    assert_eq!(headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some(GAME_ORIGIN));
}
