//! `pitgun api`: the performance API over the tables the sink writes (see `pitgun-api`).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::broker_args::init_logging;

/// Serve the performance API: runs, leaderboards and per-lap performance, as JSON.
///
/// Reads the PostgreSQL tables `pitgun sink` writes: `runs` (session-summary) and the lap
/// table (lap-performance). Endpoints: GET /v1/runs?player=&track=&car=&since=&limit=&cursor=
/// (newest first, paged), GET /v1/runs/{session}?limit=&cursor= (the run and a page of its lap
/// rows), GET /v1/leaderboard?track=&car=&limit= (best complete lap per player),
/// GET /v1/sessions/{session}/performance?limit=&cursor= (a page of laps, as they started, with
/// the session's best, mean and consistency), GET /openapi.json, and
/// /metrics, /healthz, /readyz. With --session-secret-file, POST /v1/sessions gives a browser
/// game a token for one new session (see --gateway-url); with --game, the game is at /play/.
#[derive(Args, Debug)]
pub struct ApiArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// PostgreSQL URL, e.g. postgres://pitgun:pitgun@127.0.0.1:5432/pitgun.
    #[arg(long, env = "PITGUN_POSTGRES", hide_env_values = true)]
    postgres: String,
    /// The runs table (session-summary's `runs` sink).
    #[arg(long, default_value = "runs")]
    runs_table: String,
    /// The lap table (lap-performance's PostgreSQL sink).
    #[arg(long, default_value = "lap_performance_v1")]
    laps_table: String,
    /// How long one query may take (waiting on a lock included) before PostgreSQL cancels it and
    /// the request is answered 503: 1ms to 24h, or 0 to leave it to the server's settings (a
    /// `statement_timeout` in the URL's `options` wins too). Sent as a connection option, which
    /// PgBouncer refuses: give 0 behind it. A database that does not cancel it (frozen, its
    /// packets dropped) is given 5 s more for the request's reads, then the request is a 503 and
    /// the connection is dropped from the pool (the URL's timeout counts instead where it sets
    /// one; with neither, no such deadline).
    #[arg(long, default_value = "5s", value_parser = crate::duration_arg::query_timeout)]
    query_timeout: Duration,
    /// PostgreSQL connections in the pool.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    connections: u16,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Issue browser session tokens (POST /v1/sessions) signed with this secret; the gateway
    /// must be given the same file. Make one with `pitgun gateway session-secret --out FILE`.
    #[arg(long, env = "PITGUN_SESSION_SECRET_FILE", requires = "gateway_url")]
    session_secret_file: Option<PathBuf>,
    /// The gateway's URL as browsers reach it, told to each new session.
    #[arg(long, env = "PITGUN_GATEWAY_URL", requires = "session_secret_file", value_parser = pitgun_runtime::browser::browser_url)]
    gateway_url: Option<String>,
    /// How long a session token is valid (1m to 24h).
    #[arg(long, default_value = "2h", value_parser = parse_ttl)]
    session_ttl: Duration,
    /// Behind one trusted proxy (an ingress, a load balancer): keep the session quota per the
    /// address it appends to X-Forwarded-For, not per the proxy. Never set it when clients reach
    /// the API directly: they could then pick their own address.
    #[arg(long)]
    trust_forwarded_for: bool,
    /// New browser sessions per client address per minute (429 with Retry-After beyond).
    #[arg(long, default_value_t = NonZeroU32::new(30).expect("non-zero"))]
    sessions_per_minute: NonZeroU32,
    /// The built browser game (`npm --prefix game run build` makes game/dist), served at /play/.
    #[arg(long)]
    game: Option<PathBuf>,
    /// An origin whose pages may call the API (`http(s)://host[:port]`, matched as browsers send
    /// it: case and a default port do not matter); repeat or separate with commas. Not needed for
    /// the game at /play/, which is the API's own origin.
    #[arg(long = "cors-origin", env = "PITGUN_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(24 * 3600) {
        return Err(format!("{text}: a session token lives between 1m and 24h"));
    }
    Ok(ttl)
}

pub fn run(args: ApiArgs) -> Result<ExitCode> {
    init_logging();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build()?;
    let sessions = match (&args.session_secret_file, args.gateway_url) {
        (Some(path), Some(gateway_url)) => Some(pitgun_api::sessions::SessionSettings {
            key: pitgun_runtime::browser::SessionKey::load(path).map_err(anyhow::Error::msg)?,
            gateway_url,
            ttl: args.session_ttl,
            per_minute: args.sessions_per_minute,
            trust_forwarded_for: args.trust_forwarded_for,
        }),
        _ => None,
    };
    rt.block_on(pitgun_api::serve(pitgun_api::Config {
        listen: args.listen,
        postgres: args.postgres,
        runs_table: args.runs_table,
        laps_table: args.laps_table,
        connections: args.connections as usize,
        query_timeout: args.query_timeout,
        sessions,
        game: args.game,
        cors_origins: args.cors_origins,
    }))?;
    Ok(ExitCode::SUCCESS)
}
