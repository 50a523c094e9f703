//! `pitgun process`: run one manifest version over the envelopes topic (see `pitgun-processor`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::broker_args::{init_logging, BrokerArgs, ReplicationArgs};
use crate::project::Project;

/// Run a manifest version as a consumer group `pitgun.<manifest>.v<version>`.
///
/// Reads the manifest's input topics from the earliest retained offset the first time, keeps
/// session state in RocksDB under --state-dir, writes rows to
/// `pitgun.aggregates.<manifest>.v<version>` (key = row_id, value = the JSON line `pitgun replay`
/// writes), late events to `pitgun.late.<manifest>.v<version>` and refused records to
/// `pitgun.deadletter.process.v1`. Checkpoints are atomic (state + offsets), so a crash loses
/// and doubles nothing; run several replicas with the same manifest to share the partitions.
#[derive(Args, Debug)]
pub struct ProcessArgs {
    /// Pipeline manifest (YAML or JSON).
    #[arg(long, conflicts_with = "bundle", required_unless_present = "bundle")]
    manifest: Option<PathBuf>,
    /// Dictionary for --manifest (default: the one the manifest pins, <name>.yaml in ../dictionary/
    /// from its folder, else in its folder).
    #[arg(long, requires = "manifest")]
    dictionary: Option<PathBuf>,
    /// Bundle manifest; pick the pipeline with --pipeline.
    #[arg(long, requires = "pipeline")]
    bundle: Option<PathBuf>,
    /// Pipeline name inside --bundle.
    #[arg(long, conflicts_with = "manifest")]
    pipeline: Option<String>,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    replication: ReplicationArgs,
    /// RocksDB state folder of this replica (default `.pitgun-state/<manifest>.v<version>`).
    /// One folder per manifest version and replica; never shared by two processes.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Time between checkpoints (rows acknowledged, then state and offsets written atomically).
    #[arg(long, default_value = "1s", value_parser = crate::duration_arg::positive)]
    checkpoint_interval: Duration,
    /// Read up to the end offsets seen at start, close every session as replay does at end of
    /// input, checkpoint and exit (batch backfills, tests).
    #[arg(long)]
    until_end: bool,
    /// Serve /metrics, /healthz and /readyz here, e.g. 127.0.0.1:9464.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// How long ids of closed sessions stay in memory. The state folder keeps them for good, so
    /// a late copy of an event never opens its closed session again, whenever it comes.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    closed_retention: Duration,
    /// Most sessions one input partition holds open (0: no bound, the default). Past it, an
    /// event that would open one more is refused to the dead-letter topic (`too_many_sessions`,
    /// counted) until a session closes; open sessions keep taking events. Set it above the most
    /// sessions a partition ever holds: sessions without an end event stay open while a partition
    /// is rebuilt or a backlog is read faster than idle_timeout, so a bound too close to that
    /// refuses real events.
    #[arg(long, default_value_t = 0)]
    max_open_sessions: usize,
    /// Most late notes this processor writes to the late topic per second (0: no bound, the
    /// default). Past it, notes are shed and counted by reason
    /// (`pitgun_processor_late_shed_total{reason}`, `late_shed` in the exit summary) so a producer
    /// sending nothing but stale events cannot flood the topic; the events themselves stay on the
    /// envelopes topic, and rows are never affected. Off by default: catching up after downtime
    /// or a silence, real late notes come in bursts far above their usual rate, so set it well
    /// above those.
    #[arg(long, default_value_t = 0)]
    late_per_second: u32,
    /// A stable name for this replica in the group (static membership, Kafka's
    /// `group.instance.id`), e.g. the StatefulSet pod name. A replica restarted under the same
    /// name within --group-session-timeout gets its partitions back and nothing else moves;
    /// two live replicas must never share one (the broker fences the older).
    #[arg(long, env = "PITGUN_INSTANCE_ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    instance_id: Option<String>,
    /// Consumer-group session timeout: how soon a dead replica's partitions move to the others.
    #[arg(long, default_value = "10s", value_parser = crate::duration_arg::positive)]
    group_session_timeout: Duration,
    /// Partitions of the output topics when this processor has to create them.
    #[arg(long, default_value_t = 4)]
    output_partitions: i32,
    /// How long a checkpoint waits for the broker to acknowledge emitted rows before the
    /// processor stops with an error (it never checkpoints past an unacknowledged row).
    #[arg(long, default_value = "30s", value_parser = crate::duration_arg::positive)]
    flush_timeout: Duration,
    /// Extra librdkafka consumer setting `KEY=VALUE` (repeatable), e.g.
    /// `--consumer-config fetch.max.bytes=104857600`. `fetch.wait.max.ms` (20 by default) also
    /// sets the changelog reader's: against nisshi's PostgreSQL storage use 500, or a processor
    /// that falls behind catches up at a few records per second.
    #[arg(long = "consumer-config", value_name = "KEY=VALUE", value_parser = parse_setting)]
    consumer_config: Vec<(String, String)>,
    /// Do not write the state changelog (`pitgun.state.<manifest>.v<version>`). By default each
    /// checkpoint's state changes go there too, so a replica that takes a partition (rebalance,
    /// rescaling, a lost volume) restores its sessions from it and goes on from the group's
    /// offset; without it such a partition is rebuilt by reading its input from the start.
    #[arg(long)]
    no_changelog: bool,
    /// Engine threads (default: the machine's cores). Partitions are spread over them; one
    /// partition is fed by one thread at a time, so more threads than partitions gain nothing.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

pub fn run(args: ProcessArgs) -> Result<ExitCode> {
    init_logging();
    let replication = args.replication.replication()?;
    let project = match (&args.manifest, &args.bundle) {
        (Some(m), _) => Project::load(m, args.dictionary.as_deref())?,
        (None, Some(b)) => Project::from_bundle(b, args.pipeline.as_deref().expect("clap requires it"))?,
        _ => bail!("give --manifest or --bundle with --pipeline"),
    };
    let manifest = project.manifest.doc.name.clone();
    let version = project.manifest.doc.version;
    let input_topics = project.manifest.doc.input.topics.clone();
    if input_topics.is_empty() {
        bail!("manifest {manifest} v{version} names no input topics (input.topics)");
    }
    let state_dir = args.state_dir.unwrap_or_else(|| PathBuf::from(format!(".pitgun-state/{manifest}.v{version}")));
    let project = Arc::new(project);
    let plan = {
        let project = project.clone();
        Arc::new(move || project.compile().map_err(Into::into)) as pitgun_processor::PlanFactory
    };
    let summary = pitgun_processor::run(pitgun_processor::Config {
        broker: args.broker.broker().with_replication(replication),
        manifest,
        version,
        input_topics,
        plan,
        state_dir,
        checkpoint_interval: args.checkpoint_interval,
        until_end: args.until_end,
        metrics_listen: args.metrics_listen,
        closed_retention: args.closed_retention,
        max_open_sessions: if args.max_open_sessions == 0 { usize::MAX } else { args.max_open_sessions },
        late_per_second: std::num::NonZeroU32::new(args.late_per_second),
        group_session_timeout: args.group_session_timeout,
        instance_id: args.instance_id,
        output_partitions: args.output_partitions,
        flush_timeout: args.flush_timeout,
        consumer_settings: args.consumer_config,
        changelog: !args.no_changelog,
        threads: args.threads.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
    })?;
    say!("{}", serde_json::to_string(&summary)?)?;
    Ok(ExitCode::SUCCESS)
}
