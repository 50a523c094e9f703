//! The performance API (`pitgun api`): runs, leaderboards and per-lap performance, read from
//! the PostgreSQL tables `pitgun sink` writes.
//!
//! Design:
//! - **Its own service, not the gateway's.** The gateway takes telemetry in and must keep
//!   answering producers whatever the dashboards ask; the API reads the database and scales
//!   with its readers. They share nothing but the health routes.
//! - **Reads only what the sink wrote**: `runs` (one row per session, the sink's `runs`
//!   mapping; a session with several summary rows is the one `RUNS_PREFERRED_BY` picks) and a lap table (the `lap-performance` manifest's rows). It runs no DDL: the
//!   sink owns the schema, read indexes included.
//! - **No SQL from requests.** Every value is a bind parameter of a statement prepared once
//!   per connection ([`store`]); parameters are parsed and checked first ([`params`]), and
//!   unknown ones are refused.
//! - **Keyset paging** for `/v1/runs` and for a session's lap rows (`next_cursor`): rows written
//!   meanwhile do not shift pages, a runs page costs the same at any depth, and no answer holds
//!   every lap of a session that has thousands.
//! - **Deterministic leaderboard**: each player's best complete lap, players ranked by it; ties
//!   go to the run that started first, then to the player's name. Read as laps in that order from an
//!   index, keeping each player's first, so its cost follows `limit`, not the number of runs.
//!
//! The OpenAPI document is `schemas/pitgun-api/v1.openapi.json`, served at `/openapi.json`.
//!
//! Dependencies: `axum` (HTTP), `tokio-postgres` with `deadpool-postgres` (the connection
//! pool, with per-connection statement caches), `prometheus`, `humantime` (RFC 3339), `hex`
//! (opaque cursors), `thiserror` ([`error`]: typed, so a value PostgreSQL refuses is a 400 and a
//! database that is not there a 503).
#![deny(missing_docs)]

pub mod error;
pub mod metrics;
pub mod params;
pub mod performance;
pub mod routes;
pub mod sessions;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pitgun_runtime::serve::{routes as health_routes, Health};
use tracing::info;

pub use error::{Error, Result};

/// What `pitgun api` was asked to do.
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// PostgreSQL URL.
    pub postgres: String,
    /// The runs table.
    pub runs_table: String,
    /// The lap table.
    pub laps_table: String,
    /// Connections in the pool.
    pub connections: usize,
    /// Longest query, and longest wait for a connection.
    pub query_timeout: std::time::Duration,
    /// Browser session tokens (`POST /v1/sessions`), if enabled.
    pub sessions: Option<sessions::SessionSettings>,
    /// The built browser game (`game/dist`), served at `/play/`.
    pub game: Option<PathBuf>,
    /// Origins allowed to call the API from a browser page served elsewhere.
    pub cors_origins: Vec<String>,
}

/// Serves until SIGTERM/SIGINT.
pub async fn serve(cfg: Config) -> Result<()> {
    let store = store::Store::open(&cfg.postgres, &cfg.runs_table, &cfg.laps_table, cfg.connections, cfg.query_timeout).await?;
    let m = metrics::Metrics::new();
    let health = Health::new(m.registry.clone());
    let cors = pitgun_runtime::browser::cors(&cfg.cors_origins).map_err(Error::Config)?;
    let sessions = cfg.sessions.map(sessions::Sessions::new);
    let api = Arc::new(routes::Api { store, metrics: m, sessions });
    // Readiness follows the database.
    let (probe, ready) = (api.clone(), health.ready.clone());
    tokio::spawn(async move {
        loop {
            ready.store(probe.store.ping().await, Ordering::Relaxed);
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    });
    let (sessions_on, game_on) = (api.sessions.is_some(), cfg.game.is_some());
    if sessions_on {
        let forget = api.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                forget.sessions.as_ref().map(sessions::Sessions::forget_idle_clients);
            }
        });
    }
    let mut app = routes::router(api).merge(health_routes(health));
    if let Some(dir) = &cfg.game {
        if !dir.join("index.html").is_file() {
            return Err(Error::Config(format!("--game {}: no index.html there; build the game with `npm --prefix game run build`", dir.display())));
        }
        app = app.merge(routes::game(dir));
    }
    let app = routes::method_not_allowed(app).layer(cors);
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.map_err(|source| Error::Listen { addr: cfg.listen, source })?;
    // Before the line that says the API serves: a stop asked for after it is heard.
    let signal = pitgun_runtime::stop::stop_signal()?;
    info!(
        listen = %listener.local_addr()?, browser_sessions = sessions_on, game = game_on,
        "performance API serving /v1/runs, /v1/leaderboard, /v1/sessions/{{id}}/performance, /openapi.json{}{}",
        if sessions_on { ", POST /v1/sessions" } else { "" },
        if game_on { ", the game at /play/" } else { "" }
    );
    pitgun_runtime::http::serve(listener, app, pitgun_runtime::http::HEADER_TIMEOUT, async move {
        info!("{}: stopping", signal.await);
    })
    .await;
    info!("stopped");
    Ok(())
}
