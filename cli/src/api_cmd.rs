//! `pitgun api`: the performance API over the tables the sink writes (see `pitgun-api`).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::broker_args::init_logging;

/// Serve the performance API: runs, leaderboards and per-lap performance, as JSON.
///
/// Reads the PostgreSQL tables `pitgun sink` writes: `runs` (session-summary) and the lap
/// table (lap-performance). Endpoints: GET /v1/runs?player=&track=&car=&since=&limit=&cursor=
/// (newest first, paged), GET /v1/runs/{session} (the run and its lap rows),
/// GET /v1/leaderboard?track=&car=&limit= (best complete lap per player),
/// GET /v1/sessions/{session}/performance (per-lap performance), GET /openapi.json, and
/// /metrics, /healthz, /readyz.
#[derive(Args, Debug)]
pub struct ApiArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// PostgreSQL URL, e.g. postgres://pitgun:pitgun@127.0.0.1:5432/pitgun.
    #[arg(long, env = "PITGUN_POSTGRES")]
    postgres: String,
    /// The runs table (session-summary's `runs` sink).
    #[arg(long, default_value = "runs")]
    runs_table: String,
    /// The lap table (lap-performance's PostgreSQL sink).
    #[arg(long, default_value = "lap_performance_v1")]
    laps_table: String,
    /// PostgreSQL connections in the pool.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    connections: u16,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: ApiArgs) -> Result<ExitCode> {
    init_logging();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(pitgun_api::serve(pitgun_api::Config {
        listen: args.listen,
        postgres: args.postgres,
        runs_table: args.runs_table,
        laps_table: args.laps_table,
        connections: args.connections as usize,
    }))?;
    Ok(ExitCode::SUCCESS)
}
