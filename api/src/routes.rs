//! The HTTP routes: parameters in, JSON out, errors as `{"error": "..."}` with the status that
//! says whose fault it is (400 the request's, 404 nothing there, 503 the database's).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tracing::warn;

use crate::metrics::Metrics;
use crate::params::{laps_list, query_pairs, runs_list, text_problem, BadRequest, Params};
use crate::performance::performance;
use crate::sessions::{Refusal, Sessions};
use crate::store::{RunFilter, Store};

/// The OpenAPI document, kept in `schemas/pitgun-api/`.
pub const OPENAPI: &str = include_str!("../../schemas/pitgun-api/v1.openapi.json");

/// Shared by the handlers.
pub struct Api {
    /// The database.
    pub store: Store,
    /// Request counters and latencies.
    pub metrics: Metrics,
    /// Browser session tokens (`None`: `POST /v1/sessions` answers 404).
    pub sessions: Option<Sessions>,
}

/// What a handler failed with.
pub enum Failure {
    /// 400.
    Bad(String),
    /// 404.
    NotFound(String),
    /// 429: over the client's quota; ask again after this many seconds.
    TooMany(u64),
    /// 503: the database failed.
    Unavailable(crate::Error),
}

impl From<BadRequest> for Failure {
    fn from(b: BadRequest) -> Failure {
        Failure::Bad(b.0)
    }
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Failure {
        match e.refused_value() {
            Some(pg) => Failure::Bad(format!(
                "a parameter's value is not acceptable: {}",
                pg.as_db_error().map_or_else(|| pg.to_string(), |d| d.message().to_string())
            )),
            None => Failure::Unavailable(e),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Failure::Bad(m) => (StatusCode::BAD_REQUEST, m),
            Failure::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Failure::TooMany(secs) => {
                let m = format!("too many new sessions from this address; try again in {secs} s");
                return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, secs.to_string())], Json(json!({ "error": m }))).into_response();
            }
            Failure::Unavailable(e) => {
                // The details go to the log, not to clients.
                warn!("database: {}", pitgun_runtime::error::Chain(&e));
                (StatusCode::SERVICE_UNAVAILABLE, "the database is not available; try again later".to_string())
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

type Reply = Result<Json<Value>, Failure>;

/// The API's router (health routes are merged by the caller).
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/v1/runs", get(runs))
        .route("/v1/runs/{session}", get(run))
        .route("/v1/leaderboard", get(leaderboard))
        .route("/v1/sessions", post(new_session))
        .route("/v1/sessions/{session}/performance", get(session_performance))
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .fallback(|| async { Failure::NotFound("no such endpoint; see /openapi.json".into()) })
        .with_state(api)
}

/// Answers a method a route does not take as the API's other errors are answered. Call it on
/// the whole router: it covers only the routes added before it.
pub fn method_not_allowed(app: Router) -> Router {
    app.method_not_allowed_fallback(|method: Method, uri: Uri| async move {
        (StatusCode::METHOD_NOT_ALLOWED, Json(json!({ "error": pitgun_runtime::http::method_not_allowed(&method, uri.path()) })))
    })
}

/// The browser game's files at `/play/` (`/play` redirects there with its query, so the page's
/// relative links resolve under it).
pub fn game(dir: &std::path::Path) -> Router {
    let redirect = |uri: axum::http::Uri| async move {
        axum::response::Redirect::temporary(&format!("/play/{}", uri.query().map(|q| format!("?{q}")).unwrap_or_default()))
    };
    Router::new().route("/play", get(redirect)).nest_service("/play/", tower_http::services::ServeDir::new(dir))
}

/// A query string as its pairs, in order: a map would keep one of a repeated name unseen.
type QueryPairs = RawQuery;

/// The path's session id, or the rejection when it is not one (percent-decoding to non-UTF-8).
type SessionPath = Result<Path<String>, PathRejection>;

fn params(RawQuery(q): QueryPairs, allowed: &[&str]) -> Result<Params, Failure> {
    Ok(Params::new(query_pairs(q.as_deref())?, allowed)?)
}

fn session_id(path: SessionPath) -> Result<String, Failure> {
    let Path(s) = path.map_err(|e| Failure::Bad(format!("session id in the path: {}", e.body_text())))?;
    match text_problem(&s) {
        Some(problem) => Err(Failure::Bad(format!("session id: {problem}"))),
        None => Ok(s),
    }
}

/// Counts the request and its latency under its route.
async fn timed(api: &Api, route: &str, reply: impl std::future::Future<Output = Reply>) -> Reply {
    timed_as(api, route, "200", reply).await
}

/// [`timed`], for a route whose success is `ok` (e.g. 201).
async fn timed_as(api: &Api, route: &str, ok: &str, reply: impl std::future::Future<Output = Reply>) -> Reply {
    let started = Instant::now();
    let out = reply.await;
    let status = match &out {
        Ok(_) => ok,
        Err(Failure::Bad(_)) => "400",
        Err(Failure::NotFound(_)) => "404",
        Err(Failure::TooMany(_)) => "429",
        Err(Failure::Unavailable(_)) => "503",
    };
    api.metrics.requests.with_label_values(&[route, status]).inc();
    api.metrics.seconds.with_label_values(&[route]).observe(started.elapsed().as_secs_f64());
    out
}

async fn runs(State(api): State<Arc<Api>>, q: QueryPairs) -> Reply {
    timed(&api, "runs", async {
        let p = params(q, &["player", "track", "car", "since", "limit", "cursor"])?;
        let filter = RunFilter { player: p.text("player")?, track: p.text("track")?, car: p.text("car")?, since: p.time("since")? };
        let limit = p.limit("limit", 50, 1, 500)?;
        let (runs, next) = api.store.runs(&filter, p.cursor("cursor", &runs_list())?.as_ref(), limit).await?;
        Ok(Json(json!({ "runs": runs, "next_cursor": next.map(|c| c.encode(&runs_list())) })))
    })
    .await
}

/// Lap rows on one page of `/v1/runs/{session}` and `/performance`: by default and at most.
const LAP_PAGE: (i64, i64) = (500, 2000);

async fn run(State(api): State<Arc<Api>>, session: SessionPath, q: QueryPairs) -> Reply {
    timed(&api, "run", async {
        let p = params(q, &["limit", "cursor"])?;
        let session = session_id(session)?;
        let limit = p.limit("limit", LAP_PAGE.0, 1, LAP_PAGE.1)?;
        match api.store.run(&session, p.cursor("cursor", &laps_list(&session))?.as_ref(), limit).await? {
            Some((mut run, next)) => {
                run["next_cursor"] = next.map(|c| c.encode(&laps_list(&session))).into();
                Ok(Json(run))
            }
            None => Err(Failure::NotFound(format!("no run for session {session:?}"))),
        }
    })
    .await
}

async fn leaderboard(State(api): State<Arc<Api>>, q: QueryPairs) -> Reply {
    timed(&api, "leaderboard", async {
        let p = params(q, &["track", "car", "limit"])?;
        let track = p.required("track")?;
        let car = p.text("car")?;
        let limit = p.limit("limit", 10, 1, 1000)?;
        let entries = api.store.leaderboard(&track, car.as_deref(), limit).await?;
        Ok(Json(json!({ "track": track, "car": car, "entries": entries })))
    })
    .await
}

async fn session_performance(State(api): State<Arc<Api>>, session: SessionPath, q: QueryPairs) -> Reply {
    timed(&api, "performance", async {
        let p = params(q, &["limit", "cursor"])?;
        let session = session_id(session)?;
        let limit = p.limit("limit", LAP_PAGE.0, 1, LAP_PAGE.1)?;
        let (summary, laps, next) = api.store.performance(&session, p.cursor("cursor", &laps_list(&session))?.as_ref(), limit).await?;
        if summary.laps == 0 {
            return Err(Failure::NotFound(format!("no laps recorded for session {session:?}")));
        }
        Ok(Json(performance(&session, &summary, &laps, next.map(|c| c.encode(&laps_list(&session))))))
    })
    .await
}

/// `POST /v1/sessions`: a new browser session and its token (201). The body is not read.
async fn new_session(State(api): State<Arc<Api>>, ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>, headers: axum::http::HeaderMap) -> Response {
    let reply = timed_as(&api, "sessions", "201", async {
        let Some(sessions) = &api.sessions else {
            return Err(Failure::NotFound("this API issues no browser sessions: it runs without --session-secret-file".into()));
        };
        match sessions.issue(sessions.client(peer.ip(), &headers)) {
            Ok(session) => Ok(Json(session)),
            Err(Refusal::TooMany(wait)) => Err(Failure::TooMany(pitgun_runtime::quota::retry_after_secs(wait))),
        }
    })
    .await;
    match reply {
        Ok(body) => (StatusCode::CREATED, [(header::CACHE_CONTROL, "no-store")], body).into_response(),
        Err(f) => f.into_response(),
    }
}
