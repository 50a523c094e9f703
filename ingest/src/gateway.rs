//! The HTTP service: `POST /v1/envelopes`, the definitions API and the health endpoints.
// An early answer travels as `Err(Response)`, once per request; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use pitgun_runtime::browser::{SessionClaims, SessionKey, TOKEN_PREFIX};
use pitgun_runtime::kafka::headers as dl;
use pitgun_runtime::quota::{client_address, retry_after_secs, Quota, MAX_CLIENTS};
use pitgun_runtime::serve::{routes, Health};
use serde_json::json;

use crate::batch::{self, BodyError};
use crate::definitions::Definitions;
use crate::keys::{KeyHash, KeysFile};
use crate::metrics::GatewayMetrics;
use crate::produce::{Outgoing, ProduceError, Publish};
use crate::validate::{Checked, Validator};

/// The gateway's OpenAPI document (`schemas/pitgun-gateway/v1.openapi.json`), served at
/// `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../schemas/pitgun-gateway/v1.openapi.json");

/// Limits and names the gateway runs with.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body, before and after decompression.
    pub max_body: usize,
    /// Most items in one batch.
    pub max_batch: usize,
    /// Largest item (one envelope's JSON); larger ones are refused by index with `too_large`.
    pub max_item: usize,
    /// Bytes of request bodies being read or handled at once (each counted by the bytes it has
    /// sent, an uncompressed one by its declared length first, plus what a compressed one
    /// decodes to; one request counts at most all of it); beyond, 503. At least `max_body`.
    pub max_in_flight: usize,
    /// How long a request's body may take to arrive; then 408.
    pub body_timeout: Duration,
    /// `Retry-After` of a 503, in seconds.
    pub retry_after_secs: u64,
    /// Largest total size of a request's headers (names, values and separators); larger is 431.
    pub max_header_bytes: usize,
    /// Requests per second one credential (an API key, a session token's session) may make,
    /// with a burst of as many; `None`: unlimited.
    pub per_credential_per_second: Option<NonZeroU32>,
    /// Requests without a valid credential one client address may make per minute before its
    /// answers turn from 401 to 429.
    pub unauthenticated_per_minute: NonZeroU32,
    /// Count addresses by the last `X-Forwarded-For` entry (one trusted proxy in front).
    pub trust_forwarded_for: bool,
}

/// Whose quota a request is counted in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Holder {
    Key(KeyHash),
    Session(String),
}

/// The request quotas ([`Limits`]): per credential, and per address for requests without one.
pub struct Quotas {
    per_credential: Option<Quota<Holder>>,
    unauthenticated: Quota<IpAddr>,
    /// Body bytes in flight, so that many slow or large requests together cannot take the
    /// gateway's memory: each request holds its body's share until it is answered.
    in_flight: tokio::sync::Semaphore,
}

impl Quotas {
    /// Quotas as `limits` sets them.
    pub fn new(limits: &Limits) -> Quotas {
        Quotas {
            per_credential: limits.per_credential_per_second.map(Quota::per_second),
            unauthenticated: Quota::per_minute(limits.unauthenticated_per_minute).with_max_clients(MAX_CLIENTS),
            in_flight: tokio::sync::Semaphore::new(limits.max_in_flight.min(u32::MAX as usize)),
        }
    }

    /// Forgets clients whose quota is full again (called every minute).
    pub fn forget_idle(&self) {
        if let Some(q) = &self.per_credential {
            q.forget_idle();
        }
        self.unauthenticated.forget_idle();
    }
}

/// Where valid and refused items go.
#[derive(Debug, Clone)]
pub struct Topics {
    /// `<ns>pitgun.envelopes.v1`.
    pub envelopes: String,
    /// `<ns>pitgun.deadletter.ingest.v1`.
    pub deadletter: String,
}

/// Everything a request needs.
pub struct Gateway {
    /// Limits.
    pub limits: Limits,
    /// Topic names.
    pub topics: Topics,
    /// Accepted keys, reloaded when their file changes.
    pub keys: KeysFile,
    /// Request quotas.
    pub quotas: Quotas,
    /// Item validation.
    pub validator: Validator,
    /// Where batches go: the Kafka producer, or a stand-in in tests.
    pub producer: Box<dyn Publish>,
    /// Schemas, dictionary, manifests.
    pub definitions: Definitions,
    /// Metrics.
    pub metrics: GatewayMetrics,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub health: Health,
    /// Browser clients: session tokens and CORS origins.
    pub browsers: Browsers,
}

/// What the gateway accepts from browsers (see [`pitgun_runtime::browser`]).
#[derive(Debug, Clone)]
pub struct Browsers {
    /// The secret session tokens are checked with; `None`: session tokens are refused.
    pub sessions: Option<SessionKey>,
    /// Origins allowed to post envelopes with a session token.
    pub origins: Vec<String>,
    /// The CORS layer for `origins`.
    pub cors: pitgun_runtime::browser::CorsLayer,
}

/// Who sent a request.
enum Caller {
    /// A service, by API key: any session of its source.
    Service { source: String, key: KeyHash },
    /// A browser, by session token: one session of one source.
    Session(SessionClaims),
}

impl Caller {
    fn source(&self) -> &str {
        match self {
            Caller::Service { source, .. } => source,
            Caller::Session(c) => &c.src,
        }
    }

    fn holder(&self) -> Holder {
        match self {
            Caller::Service { key, .. } => Holder::Key(*key),
            Caller::Session(c) => Holder::Session(c.sid.clone()),
        }
    }
}

/// A JSON error answer: `{"error": code, "message": …}`.
pub fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": code, "message": message.into()}))).into_response()
}

/// The router: envelopes, definitions, health; CORS for the allowed browser origins.
pub fn router(gw: Arc<Gateway>) -> Router {
    let definitions = get(|State(gw): State<Arc<Gateway>>, uri: Uri, headers: HeaderMap| async move { gw.definitions.answer(uri.path(), &headers) });
    Router::new()
        .route("/v1/envelopes", post(post_envelopes))
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/schemas", definitions.clone())
        .route("/schemas/{name}/{version}", definitions.clone())
        .route("/dictionary", definitions.clone())
        .route("/dictionary/{metric}", definitions.clone())
        .route("/manifests", definitions.clone())
        .route("/manifests/{name}/{version}", definitions.clone())
        .route("/manifests/{name}/{version}/contract", definitions)
        .fallback(|uri: Uri| async move { json_error(StatusCode::NOT_FOUND, "not_found", format!("no route {}", uri.path())) })
        .with_state(gw.clone())
        .merge(routes(gw.health.clone()))
        // After every route is added: it covers only those before it.
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", pitgun_runtime::http::method_not_allowed(&method, uri.path()))
        })
        // Inside CORS, so a browser can read the 431.
        .layer(axum::middleware::from_fn_with_state(gw.clone(), bound_headers))
        .layer(gw.browsers.cors.clone())
        // The CORS layer answers a preflight itself, without the layers inside it.
        .layer(axum::middleware::from_fn_with_state(gw, bound_preflight_headers))
}

/// Answers 431 to a request whose headers together exceed `--max-header-size`, before any
/// route runs: a producer cannot make the gateway keep or parse an unbounded header. A refused
/// post of envelopes is counted with the other answers to them.
async fn bound_headers(State(gw): State<Arc<Gateway>>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match headers_too_large(req.headers(), gw.limits.max_header_bytes) {
        Some(refusal) => {
            if req.method() == Method::POST && req.uri().path() == "/v1/envelopes" {
                gw.metrics.request(refusal.status().as_u16());
            }
            refusal
        }
        None => next.run(req).await,
    }
}

/// [`bound_headers`] for preflights (`OPTIONS`), which the CORS layer answers before it runs.
async fn bound_preflight_headers(State(gw): State<Arc<Gateway>>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match headers_too_large(req.headers(), gw.limits.max_header_bytes).filter(|_| req.method() == Method::OPTIONS) {
        Some(refusal) => refusal,
        None => next.run(req).await,
    }
}

/// The 431 for headers taking more than `max` bytes together (names, values and separators).
fn headers_too_large(headers: &HeaderMap, max: usize) -> Option<Response> {
    let size: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    (size > max).then(|| {
        json_error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request's headers take {size} bytes; at most {max} are accepted (--max-header-size)"),
        )
    })
}

/// Reloads the keys file when it changes (checked every `interval`) and at once on SIGHUP; a
/// broken new version is logged and counted, and the keys in force stay.
pub async fn watch_keys(gw: Arc<Gateway>, interval: Duration) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP; the keys file is still checked every {interval:?}: {e}");
            None
        }
    };
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let outcome = if forced { Some(gw.keys.reload()) } else { gw.keys.reload_if_changed() };
        match outcome {
            None => {}
            Some(Ok(n)) => {
                gw.metrics.keys_reloaded(n);
                tracing::info!(keys = n, path = %gw.keys.path().display(), "keys file reloaded");
            }
            Some(Err(e)) => {
                gw.metrics.keys_reload_failed();
                let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
                tracing::error!("keys file not reloaded, the previous keys stay in force: {e}{cause}");
            }
        }
    }
}

/// Keeps `/readyz` true only while the broker answers a metadata request for the envelopes
/// topic; checks every `interval`.
pub async fn watch_readiness(gw: Arc<Gateway>, interval: Duration) {
    let mut last_error = String::new();
    loop {
        let g = gw.clone();
        let probe = tokio::task::spawn_blocking(move || g.producer.probe(&g.topics.envelopes, interval.max(Duration::from_secs(1))))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match probe {
            Ok(()) => {
                if !gw.health.ready.swap(true, Ordering::Relaxed) {
                    tracing::info!("broker answers; ready");
                }
                last_error.clear();
            }
            Err(e) => {
                gw.health.ready.store(false, Ordering::Relaxed);
                if e != last_error {
                    tracing::warn!("not ready: broker metadata request failed: {e}");
                    last_error = e;
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

async fn post_envelopes(
    State(gw): State<Arc<Gateway>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Without connection info (a router driven in process), every client shares one address.
    let peer = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |Extension(ConnectInfo(a))| a.ip());
    let response = gw.ingest(&headers, query.as_deref(), peer, body).await;
    gw.metrics.request(response.status().as_u16());
    response
}

/// What a batch turns into before the broker is involved.
struct Prepared {
    pending: crate::produce::Pending,
    accepted: usize,
    /// Reasons of the items refused: counted once their dead letters are acknowledged (a batch
    /// answered 503 counts nothing, as the client sends it again).
    refused: Vec<crate::validate::Reason>,
    answer: Vec<u8>,
    started: Instant,
}

/// Buffers kept per worker thread between requests.
#[derive(Default)]
struct Scratch {
    decoded: Vec<u8>,
    items: Vec<Range<usize>>,
    checked: Checked,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A header that may appear once, as text: repeated or unreadable is an error of its own, not
/// "missing" (an unreadable Content-Encoding was taken as no compression).
fn one_header<'h>(headers: &'h HeaderMap, name: header::HeaderName, shown: &str) -> Result<Option<&'h str>, BodyError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(BodyError::Unsupported(format!("more than one {shown} header: send one")));
    }
    value.to_str().map(Some).map_err(|_| BodyError::Unsupported(format!("the {shown} header is not readable text (visible ASCII)")))
}

/// 413 for a body over --max-body: `declared` is its Content-Length when that said so, `None`
/// when the body grew past the limit while it was read.
fn too_large(max: usize, declared: Option<u64>) -> Response {
    let what = match declared {
        Some(n) => format!("the body's Content-Length, {n} bytes,"),
        None => "the body, as read,".into(),
    };
    body_error(BodyError::TooLarge(format!("{what} is over the {max}-byte limit (--max-body); send smaller batches")))
}

fn body_error(e: BodyError) -> Response {
    match e {
        BodyError::Unsupported(m) => json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", m),
        BodyError::TooLarge(m) => json_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
        BodyError::Malformed(m) => json_error(StatusCode::BAD_REQUEST, "malformed_body", m),
    }
}

/// Where a request's credential was found, as sent.
#[derive(Clone, Copy)]
enum Credential<'a> {
    Bearer(&'a HeaderValue),
    Key(&'a HeaderValue),
    Query(&'a str),
}

impl Gateway {
    /// The credential: `Authorization: Bearer`, `X-Api-Key`, or a session token as
    /// `access_token` in the query (for `navigator.sendBeacon`, which cannot send headers; API
    /// keys never travel in URLs, which proxies log). `Err`: the 401 to answer.
    fn token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Result<Option<&'a str>, Response> {
        let unauthorized = |m: &str| Err(json_error(StatusCode::UNAUTHORIZED, "unauthorized", m));
        let bearer = headers.get_all(header::AUTHORIZATION).iter().map(|v| ("the Authorization header", Credential::Bearer(v)));
        let key = headers.get_all("x-api-key").iter().map(|v| ("the X-Api-Key header", Credential::Key(v)));
        let in_query = query.into_iter().flat_map(|q| q.split('&')).filter_map(|pair| pair.strip_prefix("access_token="));
        let mut given = bearer.chain(key).chain(in_query.map(|t| ("access_token in the query", Credential::Query(t))));
        // A credential given twice, in one place or two, is refused rather than one copy chosen:
        // a proxy, a client library and the gateway need not choose the same one.
        let (first, second) = (given.next(), given.next());
        if let (Some((a, _)), Some((b, _))) = (&first, &second) {
            let places = if a == b { a.to_string() } else { format!("{a} and {b}") };
            return unauthorized(&format!("the credential is given more than once ({places}): send one"));
        }
        match first.map(|(_, c)| c) {
            None => Ok(None),
            Some(Credential::Bearer(v)) => {
                let bearer = v.to_str().ok().and_then(|v| v.trim().split_once(' ')).filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
                match bearer {
                    Some((_, token)) if !token.trim().is_empty() => Ok(Some(token.trim())),
                    _ => unauthorized("the Authorization header must be `Bearer <API key or session token>`"),
                }
            }
            Some(Credential::Key(v)) => match v.to_str() {
                Ok(v) => Ok(Some(v.trim())),
                Err(_) => unauthorized("the X-Api-Key header is not ASCII"),
            },
            Some(Credential::Query(t)) if t.starts_with(TOKEN_PREFIX) => Ok(Some(t)),
            Some(Credential::Query(_)) => unauthorized("only session tokens go in the query; send an API key in the Authorization header"),
        }
    }

    /// Who the request comes from, within its quota: the caller, or the 401 or 429 to answer.
    /// A request without a valid credential counts against its address's quota, and once that
    /// is spent the answer is 429: guessing keys or flooding costs the gateway a hash and no body.
    fn admit(&self, headers: &HeaderMap, query: Option<&str>, peer: IpAddr) -> Result<Caller, Response> {
        let too_many = |wait, limit: &str, message: String| {
            self.metrics.throttled(limit);
            let mut r = json_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message);
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
            r
        };
        let caller = match Self::token(headers, query).and_then(|t| self.caller(t)) {
            Ok(c) => c,
            Err(unauthorized) => {
                let address = client_address(peer, headers, self.limits.trust_forwarded_for);
                return Err(match self.quotas.unauthenticated.take(&address) {
                    Ok(()) => unauthorized,
                    Err(wait) => too_many(
                        wait,
                        "unauthenticated",
                        format!("too many requests without a valid credential from {address} (--unauthenticated-per-minute)"),
                    ),
                });
            }
        };
        if let Some(q) = &self.quotas.per_credential {
            if let Err(wait) = q.take(&caller.holder()) {
                let whose = if matches!(caller, Caller::Session(_)) { "this session token" } else { "this API key" };
                return Err(too_many(wait, "credential", format!("{whose} made more requests than --requests-per-second-per-credential allows")));
            }
        }
        Ok(caller)
    }

    /// Who the credential belongs to, or the 401 to answer.
    fn caller(&self, token: Option<&str>) -> Result<Caller, Response> {
        let unauthorized = |m: String| json_error(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let Some(token) = token else {
            return Err(unauthorized(
                "missing credentials: send `Authorization: Bearer <API key or session token>` or `X-Api-Key: <API key>`".into(),
            ));
        };
        if token.starts_with(TOKEN_PREFIX) {
            let Some(key) = &self.browsers.sessions else {
                return Err(unauthorized("this gateway takes no session tokens (it runs without --session-secret-file)".into()));
            };
            return key.verify(token, now_us().max(0) as u64 / 1_000_000).map(Caller::Session).map_err(|e| unauthorized(e.to_string()));
        }
        match self.keys.current().source_of(token) {
            Some((key, source)) => Ok(Caller::Service { source: source.to_string(), key }),
            None => Err(unauthorized("unknown API key".into())),
        }
    }

    /// Reads a body whose declared length (if any) is within `max_body`: at most that, within
    /// `body_timeout`, taking its share of the in-flight budget into `held` as its bytes arrive —
    /// a client trickling a body holds what it sent, not what it might send.
    async fn read_body(&self, body: Body, held: &mut Budget<'_>) -> Result<Bytes, Response> {
        let max = self.limits.max_body;
        let timeout = self.limits.body_timeout;
        let read = async {
            let mut body = body;
            let (mut chunks, mut len) = (Vec::<Bytes>::new(), 0);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| json_error(StatusCode::BAD_REQUEST, "malformed_body", format!("cannot read the body: {e}")))?;
                let Ok(data) = frame.into_data() else { continue };
                len += data.len();
                if len > max {
                    return Err(too_large(max, None));
                }
                if !held.cover(len) {
                    return Err(self.busy());
                }
                chunks.push(data);
            }
            // A body in one chunk (the usual case) is kept as it came, not copied.
            Ok(match chunks.len() {
                1 => chunks.pop().expect("one chunk"),
                _ => Bytes::from(chunks.concat()),
            })
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(read) => read,
            Err(_) => Err(json_error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the body did not arrive within {} (--body-timeout); nothing was stored", humantime::format_duration(timeout)),
            )),
        }
    }

    /// The 503 for a full in-flight budget.
    fn busy(&self) -> Response {
        self.metrics.failed("in_flight");
        let mut r = json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "the gateway is reading as many request bytes as it may at once (--max-in-flight {} bytes); send again later",
                self.limits.max_in_flight
            ),
        );
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(self.limits.retry_after_secs));
        r
    }

    /// Handles one `POST /v1/envelopes`; `query` is the request's query string.
    pub async fn ingest(&self, headers: &HeaderMap, query: Option<&str>, peer: IpAddr, body: Body) -> Response {
        let caller = match self.admit(headers, query, peer) {
            Ok(c) => c,
            Err(r) => return r,
        };
        if let (Caller::Session(_), Some(origin)) = (&caller, headers.get(header::ORIGIN)) {
            // A beacon is a simple request, sent without a preflight: the allow-list is enforced
            // here too, not only by the browser reading CORS headers.
            if !self.browsers.origins.iter().any(|o| o.as_bytes() == origin.as_bytes()) {
                return json_error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("origin {:?} may not send with a session token (see --cors-origin)", String::from_utf8_lossy(origin.as_bytes())),
                );
            }
        }
        let framing = one_header(headers, header::CONTENT_TYPE, "Content-Type").and_then(batch::framing);
        let encoding = one_header(headers, header::CONTENT_ENCODING, "Content-Encoding").and_then(batch::encoding);
        let (framing, encoding) = match (framing, encoding) {
            (Ok(f), Ok(e)) => (f, e),
            (Err(e), _) | (_, Err(e)) => return body_error(e),
        };
        let max = self.limits.max_body;
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|n| *n > max as u64) {
            return too_large(max, Some(n));
        }
        // The body's share of the in-flight budget, held until the answer (the decoded items and
        // their records live as long): its bytes as they arrive, then what a compressed body
        // decodes to besides. Never what a body declares before it is sent: clients that
        // declared large bodies and stalled held the whole budget until the body deadline. A
        // gateway without room for the declared length says so before reading it, whatever the
        // encoding: a compressed body's bytes are held as they arrive too.
        let mut held = Budget { semaphore: &self.quotas.in_flight, whole: self.limits.max_in_flight, permit: None };
        if !held.has_room(declared.unwrap_or(0) as usize) {
            return self.busy();
        }
        let body = match self.read_body(body, &mut held).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        self.metrics.bytes_in.inc_by(body.len() as u64);
        let prepared = SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            let decoded: &[u8] = if encoding == batch::Encoding::Identity {
                &body
            } else {
                batch::decompress(&body, encoding, self.limits.max_body, &mut s.decoded).map_err(body_error)?;
                if !held.cover(body.len() + s.decoded.len()) {
                    return Err(self.busy());
                }
                &s.decoded
            };
            self.metrics.bytes_decoded.inc_by(decoded.len() as u64);
            batch::split(decoded, framing, self.limits.max_batch, &mut s.items).map_err(body_error)?;
            self.validator.check(decoded, &s.items, Some(caller.source()), now_us(), &mut s.checked);
            if let ([item], Some(refused)) = (&s.items[..], s.checked.rejected.first()) {
                // NDJSON under the wrong type is one item: past --max-item-size it is too large.
                let one_item_refused = matches!(refused.reason, crate::validate::Reason::MalformedJson | crate::validate::Reason::TooLarge);
                if framing == batch::Framing::Json && one_item_refused {
                    if let Some(e) = batch::several_values(&decoded[item.clone()]) {
                        return Err(body_error(e));
                    }
                }
            }
            self.send(&caller, decoded, &s.checked)
        });
        let prepared = match prepared {
            Ok(p) => p,
            Err(r) => return r,
        };
        if let Err(e) = prepared.pending.acknowledged().await {
            self.metrics.failed(if e == ProduceError::QueueFull { "queue_full" } else { "delivery" });
            if e != ProduceError::QueueFull {
                self.health.ready.store(false, Ordering::Relaxed);
            }
            let mut r = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{e}; the batch was not stored in full: send the whole batch again (resent events are dropped by event id)"),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(self.limits.retry_after_secs));
            return r;
        }
        self.metrics.produce_seconds.observe(prepared.started.elapsed().as_secs_f64());
        self.metrics.accepted.inc_by(prepared.accepted as u64);
        for reason in &prepared.refused {
            self.metrics.rejected(*reason);
        }
        self.metrics.deadletters.inc_by(prepared.refused.len() as u64);
        let status = if prepared.accepted > 0 { StatusCode::ACCEPTED } else { StatusCode::UNPROCESSABLE_ENTITY };
        (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], prepared.answer).into_response()
    }

    /// Checks the 403 rules, queues valid items and dead letters, and writes the answer body.
    fn send(&self, caller: &Caller, body: &[u8], checked: &Checked) -> Result<Prepared, Response> {
        let source = caller.source();
        let forbidden = |m: String| Err(json_error(StatusCode::FORBIDDEN, "forbidden", format!("{m}; nothing in the batch was stored")));
        if let Some((index, other)) = &checked.foreign {
            let holder = if matches!(caller, Caller::Session(_)) { "session token" } else { "API key" };
            return forbidden(format!("item {index} has source.id {other:?}, but this {holder} sends for {source:?} only"));
        }
        if let Caller::Session(claims) = caller {
            if let Some(why) = other_session(checked, &claims.sid) {
                return forbidden(format!("{why}, but this session token sends for session {:?} only", claims.sid));
            }
        }
        let envelopes = checked.valid.iter().map(|e| Outgoing {
            topic: &self.topics.envelopes,
            key: Some(&checked.arena[e.key.clone()]),
            value: &checked.arena[e.value.clone()],
            headers: None,
        });
        let origins: Vec<String> = checked.rejected.iter().map(|r| format!("source={source} index={}", r.index)).collect();
        let details: Vec<String> = checked.rejected.iter().map(|r| format!("at {}: {}", display_pointer(&r.pointer), r.message)).collect();
        let deadletters = checked.rejected.iter().zip(origins.iter().zip(&details)).map(|(r, (origin, detail))| {
            let (headers, value) = dl::dead_letter("ingest", r.reason.as_str(), detail, origin, &body[r.bytes.clone()]);
            Outgoing { topic: &self.topics.deadletter, key: r.session_id.as_deref().map(str::as_bytes), value, headers: Some(headers) }
        });
        let started = Instant::now();
        let pending = self.producer.enqueue(&mut envelopes.chain(deadletters));
        let answer = serde_json::to_vec(&json!({
            "accepted": checked.valid.len(),
            "rejected": checked.rejected.len(),
            "errors": checked.rejected,
        }))
        .unwrap_or_default();
        let refused = checked.rejected.iter().map(|r| r.reason).collect();
        Ok(Prepared { pending, accepted: checked.valid.len(), refused, answer, started })
    }
}

/// A request's share of the in-flight budget (`--max-in-flight` bytes), taken as it grows and
/// given back when the request is answered.
struct Budget<'a> {
    semaphore: &'a tokio::sync::Semaphore,
    /// The whole budget: one request holds at most all of it (a compressed body and what it
    /// decodes to may together exceed it, and would otherwise never be let in).
    whole: usize,
    permit: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl Budget<'_> {
    /// Whether `bytes` (or the whole budget) could be covered now; takes nothing.
    fn has_room(&self, bytes: usize) -> bool {
        let held = self.permit.as_ref().map_or(0, |p| p.num_permits());
        self.semaphore.available_permits() >= bytes.min(self.whole).saturating_sub(held)
    }

    /// Holds at least `bytes` of the budget in all (or the whole of it), taking what is missing;
    /// false if the budget has not that much left.
    fn cover(&mut self, bytes: usize) -> bool {
        let bytes = bytes.min(self.whole);
        let held = self.permit.as_ref().map_or(0, |p| p.num_permits());
        let want = u32::try_from(bytes.saturating_sub(held)).unwrap_or(u32::MAX);
        if want == 0 {
            return true;
        }
        match self.semaphore.try_acquire_many(want) {
            Ok(more) => {
                match &mut self.permit {
                    Some(p) => p.merge(more),
                    None => self.permit = Some(more),
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// Why the batch is not provably of session `sid` alone, naming the first item that is not: a
/// valid item by its Kafka key, a refused one by the session it names or, if its session cannot
/// be read, by what is wrong with it.
fn other_session(checked: &Checked, sid: &str) -> Option<String> {
    if let Some(key) = checked.valid.iter().map(|e| String::from_utf8_lossy(&checked.arena[e.key.clone()])).find(|k| k != sid) {
        return Some(format!("an item is for session {key:?}"));
    }
    // An item refused for its size was not read at all: it names no session, and its dead letter
    // carries none, so it does not make the rest of the batch another session's.
    let mut read = checked.rejected.iter().filter(|r| r.reason != crate::validate::Reason::TooLarge);
    read.find(|r| r.session_id.as_deref() != Some(sid)).map(|r| match &r.session_id {
        Some(other) => format!("item {} is for session {other:?}", r.index),
        None => format!("item {}'s session cannot be read (at {}: {})", r.index, display_pointer(&r.pointer), r.message),
    })
}

fn display_pointer(p: &str) -> &str {
    if p.is_empty() {
        "/"
    } else {
        p
    }
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}
