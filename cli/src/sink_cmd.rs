//! `pitgun sink`: write manifest versions' rows to the tables their manifests name (see
//! `pitgun-sink`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::broker_args::{init_logging, BrokerArgs, ReplicationArgs};
use crate::project::Project;

/// Write the rows of manifest versions' aggregates topics to PostgreSQL and QuestDB,
/// effectively once.
///
/// Consumes `pitgun.aggregates.<manifest>.v<version>` for each --manifest and writes each row
/// to the tables the manifest's `output.sinks` name: one table per manifest version, created
/// from its analysis contract (or the `runs` table for session-summary). Rows are upserted by
/// key, and offsets are committed only after every target has committed the batch, so a crash
/// or a re-emitted window never doubles a row. A target that is down is retried with backoff
/// while rows wait in Kafka; rows that do not fit their table go to
/// `pitgun.deadletter.sink.v1` with the reason.
#[derive(Args, Debug)]
pub struct SinkArgs {
    /// Pipeline manifest whose rows to write (repeatable).
    #[arg(long, required = true)]
    manifest: Vec<PathBuf>,
    /// Dictionary for every --manifest (default: for each, the one the manifest pins, <name>.yaml
    /// in ../dictionary/ from its folder, else in its folder).
    #[arg(long)]
    dictionary: Option<PathBuf>,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    replication: ReplicationArgs,
    /// PostgreSQL URL for `postgres` sinks, e.g. postgres://pitgun:pitgun@127.0.0.1:5432/pitgun.
    #[arg(long, env = "PITGUN_POSTGRES", hide_env_values = true)]
    postgres: Option<String>,
    /// QuestDB client configuration for `questdb` sinks, e.g. 'http::addr=127.0.0.1:9000;'
    /// (questdb-rs syntax: username=, password=, token=, request_timeout=… may follow).
    /// Tables are created over QuestDB's /exec endpoint at the same address. Plain http only:
    /// https:: (TLS) is refused.
    #[arg(long, env = "PITGUN_QUESTDB", hide_env_values = true)]
    questdb: Option<String>,
    /// Write only to these kinds of target (comma-separated: postgres, questdb); by default
    /// every sink the manifests name, each of which then needs its --postgres or --questdb.
    #[arg(long, value_delimiter = ',', value_parser = parse_target)]
    targets: Vec<pitgun_contracts::manifest::SinkKind>,
    /// PostgreSQL connections: each batch is split by row key into this many shards, written
    /// in parallel, one transaction each.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pg_connections: u16,
    /// Consumer group (default `pitgun.sink.<manifest>.v<version>[+…]` in the namespace, with
    /// `.only-<kind>[+…]` after it under --targets: a sink writing fewer kinds reads apart from one
    /// writing them all, so each kind gets every row).
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    group: Option<String>,
    /// Rows per batch at most (in PostgreSQL, one transaction per table, batch and shard; see
    /// --pg-connections).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch_rows: u32,
    /// How long a batch waits for more rows before it is written.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    linger: Duration,
    /// Longest wait between retries of a target that fails (backoff doubles from 100 ms).
    #[arg(long, default_value = "10s", value_parser = crate::duration_arg::positive)]
    max_backoff: Duration,
    /// After SIGTERM or SIGINT, how long the batches in hand may take to be written and
    /// committed; what is unfinished then is given up, not committed, and its rows are read
    /// again on the next start (a write can hang on a lock held elsewhere). Keep it within the
    /// pod's grace period.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Stop once the end offsets seen at start are written and committed (backfills, tests).
    #[arg(long)]
    until_end: bool,
    /// Create (or check) the tables the manifests name, then exit without reading Kafka: run it
    /// before a new manifest version goes live, or to give the API its tables.
    #[arg(long, conflicts_with_all = ["until_end", "metrics_listen"])]
    migrate: bool,
    /// Serve /metrics, /healthz and /readyz here, e.g. 127.0.0.1:9465.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

pub fn run(args: SinkArgs) -> Result<ExitCode> {
    init_logging();
    let replication = args.replication.replication()?;
    let mut manifests = Vec::new();
    for path in &args.manifest {
        let project = Project::load(path, args.dictionary.as_deref())?;
        let plan = project.compile().with_context(|| format!("manifest {}", path.display()))?;
        let doc = &project.manifest.doc;
        // Twice the same version would consume its topic twice and write every row twice.
        if manifests.iter().any(|m: &pitgun_sink::SinkManifest| m.manifest == doc.name && m.version == doc.version) {
            bail!("{}: manifest {} v{} is given twice (--manifest)", path.display(), doc.name, doc.version);
        }
        manifests.push(pitgun_sink::SinkManifest {
            manifest: doc.name.clone(),
            version: doc.version,
            contract: plan.contract.clone(),
            sinks: doc.output.sinks.clone(),
        });
    }
    let cfg = pitgun_sink::Config {
        broker: args.broker.broker().with_replication(replication),
        manifests,
        postgres: args.postgres,
        questdb: args.questdb,
        targets: if args.targets.is_empty() { None } else { Some(args.targets) },
        pg_connections: args.pg_connections as usize,
        group: args.group,
        batch_rows: args.batch_rows as usize,
        linger: args.linger,
        max_backoff: args.max_backoff,
        drain_timeout: args.drain_timeout,
        until_end: args.until_end,
        migrate_only: args.migrate,
        metrics_listen: args.metrics_listen,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let summary = rt.block_on(pitgun_sink::run(cfg));
    // A task still running on the blocking pool would hold the runtime's drop without bound
    // (none should: a QuestDB write given up is waited for with its client's timeout).
    rt.shutdown_timeout(Duration::from_secs(1));
    let summary = summary?;
    say!("{}", serde_json::to_string(&summary)?)?;
    Ok(ExitCode::SUCCESS)
}

fn parse_target(s: &str) -> Result<pitgun_contracts::manifest::SinkKind, String> {
    use pitgun_contracts::manifest::SinkKind;
    SinkKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
        let names: Vec<&str> = SinkKind::ALL.iter().map(|k| k.name()).collect();
        format!("{s:?} is not a target kind: {}", names.join(" or "))
    })
}
