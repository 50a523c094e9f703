//! `pitgun topics`: create the topics a deployment uses, for a cluster where no operator manages
//! them (with Strimzi, `k8s/topics/` declares them as `KafkaTopic`s instead). Idempotent: a
//! topic that exists is kept as it is, and named when it has fewer partitions than asked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use pitgun_contracts::load::{load, Loaded};
use pitgun_contracts::manifest::PipelineManifest;
use pitgun_contracts::schema::ContractKind;
use pitgun_runtime::kafka::{partition_bounds, topics, TopicSpec};
use pitgun_runtime::kafka_log::Quiet;
use rdkafka::consumer::BaseConsumer;

use crate::broker_args::{BrokerArgs, ReplicationArgs};

/// Create every topic of a deployment: the envelopes topic, the dead-letter topics, and for
/// each manifest version its aggregates, late and state changelog topics.
///
/// Topics that exist are kept as they are. Every state changelog needs at least as many
/// partitions as the envelopes topic (partition p holds input partition p): one this command
/// creates gets as many, and for one that exists with fewer a processor refuses to start, and so
/// does this command (exit 1), naming the topic.
#[derive(Args, Debug)]
pub struct TopicsArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    replication: ReplicationArgs,
    /// A pipeline manifest whose topics to create, or a folder: every manifest in it (`.yaml`,
    /// `.yml`, `.json`; not the `.contract.json` files beside them). Repeatable.
    #[arg(long = "manifest", value_name = "FILE_OR_FOLDER")]
    manifests: Vec<PathBuf>,
    /// Partitions of every topic created.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Retention of every topic created, like `7d` or `72h`. Keep the state changelog's above
    /// the longest time a group may be down (a restore reads its latest snapshot).
    #[arg(long, default_value = "7d", value_parser = crate::duration_arg::positive)]
    retention: Duration,
    /// How long the broker has to answer.
    #[arg(long, default_value = "30s", value_parser = crate::duration_arg::positive)]
    timeout: Duration,
}

/// The manifest files `path` names: itself, or the manifests in the folder (sorted).
fn manifest_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read the folder {}", path.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    // Beside each manifest lies its analysis contract (`<name>.v<N>.contract.json`): not a manifest.
    let is_manifest = |f: &Path| {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")) && !name.ends_with(".contract.json")
    };
    files.retain(|f| is_manifest(f));
    files.sort();
    if files.is_empty() {
        bail!("no manifest (.yaml, .yml, .json) in {}", path.display());
    }
    Ok(files)
}

pub fn run(args: TopicsArgs) -> Result<ExitCode> {
    let replication = args.replication.replication()?;
    let broker = args.broker.broker();
    let mut names: Vec<String> =
        [topics::ENVELOPES, topics::DEADLETTER_INGEST, topics::DEADLETTER_PROCESS, topics::DEADLETTER_SINK].iter().map(|t| t.to_string()).collect();
    let mut changelogs = Vec::new();
    for path in &args.manifests {
        for file in manifest_files(path)? {
            let m: Loaded<PipelineManifest> = load(ContractKind::Pipeline, &file)?;
            let (name, version) = (&m.doc.name, m.doc.version);
            changelogs.push(broker.name(&topics::changelog(name, version)));
            for t in [topics::aggregates(name, version), topics::late(name, version), topics::changelog(name, version)] {
                if !names.contains(&t) {
                    names.push(t);
                }
            }
        }
    }
    let names: Vec<String> = names.iter().map(|t| broker.name(t)).collect();
    let spec = |partitions: i32| TopicSpec {
        partitions,
        replication,
        config: vec![("cleanup.policy".into(), "delete".into()), ("retention.ms".into(), args.retention.as_millis().to_string())],
    };
    let admin: BaseConsumer<Quiet> = broker.client_config("pitgun-topics").create_with_context(Quiet).context("cannot create a Kafka client")?;
    let count = |name: &str| -> Result<i32> { Ok(partition_bounds(&admin, name)?.len() as i32) };
    // The changelogs last: each takes a partition per envelopes partition, as a processor
    // sizes one, so an envelopes topic wider than asked gets changelogs as wide.
    let (logs, others): (Vec<String>, Vec<String>) = names.iter().cloned().partition(|n| changelogs.contains(n));
    let mut made: HashMap<String, bool> = others.iter().cloned().zip(broker.create_topics(&others, &spec(args.partitions), args.timeout)?).collect();
    let envelopes = count(&names[0])?;
    made.extend(logs.iter().cloned().zip(broker.create_topics(&logs, &spec(args.partitions.max(envelopes)), args.timeout)?));
    let created: Vec<bool> = names.iter().map(|n| made[n]).collect();
    let mut partitions = Vec::with_capacity(names.len());
    for name in &names {
        partitions.push(count(name)?);
    }
    let mut short = Vec::new();
    for ((name, new), has) in names.iter().zip(created).zip(&partitions) {
        let fewer = if *has < args.partitions { format!(" (fewer than the {} asked)", args.partitions) } else { String::new() };
        say!("{name}\t{has} partitions\t{}{fewer}", if new { "created" } else { "existed" })?;
        if changelogs.contains(name) && *has < envelopes {
            short.push(format!("{name} has {has} partitions, the envelopes topic {envelopes}"));
        }
    }
    if !short.is_empty() {
        eprintln!(
            "error: a state changelog needs a partition per envelopes partition (a processor refuses to start): {}; \
             delete it (a processor then rebuilds its state) or give it more partitions",
            short.join("; ")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
