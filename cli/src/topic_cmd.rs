//! `pitgun tail` and `pitgun export`: reading a topic without joining any consumer group, so
//! looking at a topic never moves anyone's offsets.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use pitgun_codec::wire::{sniff, Decoder, WireFormat};
use pitgun_contracts::envelope::Envelope;
use pitgun_engine::row::LastVersions;
use pitgun_runtime::kafka::{topics, Broker};
use pitgun_runtime::kafka_log::Quiet;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::broker_args::BrokerArgs;
use pitgun_codec::dataset::DatasetWriter;

/// Where to start and stop reading each partition.
struct Range {
    /// Offsets `[from, to)` per partition, or event-time bounds resolved by the broker.
    start: Start,
    stop: Stop,
}

enum Start {
    Beginning,
    End,
    Offset(i64),
    Time(i64),
}

enum Stop {
    /// The end offsets seen at start.
    EndAtStart,
    /// Before this offset.
    Offset(i64),
    /// Before the first record at or after this time (ms).
    Time(i64),
    /// Never (follow).
    Never,
}

/// Reads `topic` (all partitions, or `only` one) over `range`, calling `f` per record, each
/// partition in offset order. Returns the number of records seen.
fn read_topic(broker: &Broker, topic: &str, only: Option<i32>, range: &Range, mut f: impl FnMut(&BorrowedMessage<'_>) -> Result<()>) -> Result<u64> {
    let mut config = broker.consumer_config("pitgun-reader");
    config.set("group.id", "pitgun-reader-unused").set("enable.auto.commit", "false").set("enable.partition.eof", "false");
    if matches!(range.stop, Stop::Never) {
        // Following: a record is shown as soon as it lands, not after librdkafka's 500 ms wait
        // at the end of the topic. A bounded read keeps the default, which a broker that answers
        // a short wait with one record (nisshi's PostgreSQL storage) needs to read a topic whole.
        config.set("fetch.wait.max.ms", pitgun_runtime::kafka::FETCH_WAIT_MS);
    }
    let consumer: BaseConsumer<Quiet> = config.create_with_context(Quiet).context("cannot create a Kafka consumer")?;
    let mut parts = partitions_of(broker, topic)?;
    if let Some(p) = only {
        parts.retain(|&q| q == p);
    }
    let timeout = Duration::from_secs(10);
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        let start = match range.start {
            Start::Beginning => Offset::Offset(low),
            Start::End => Offset::Offset(high),
            Start::Offset(o) => Offset::Offset(o.clamp(low, high)),
            Start::Time(_) => Offset::Offset(low),
        };
        tpl.add_partition_offset(topic, p, start)?;
        let end = match range.stop {
            Stop::EndAtStart => high,
            Stop::Offset(o) => o.min(high),
            Stop::Time(_) | Stop::Never => i64::MAX,
            // Time bounds are resolved below through the broker's time index.
        };
        ends.insert(p, end);
    }
    if let Start::Time(ms) = range.start {
        let mut by_time = TopicPartitionList::new();
        for &p in &parts {
            by_time.add_partition_offset(topic, p, Offset::Offset(ms))?;
        }
        tpl = consumer.offsets_for_times(by_time, timeout).context("broker cannot look offsets up by time")?;
    }
    if let Stop::Time(ms) = range.stop {
        let mut by_time = TopicPartitionList::new();
        for &p in &parts {
            by_time.add_partition_offset(topic, p, Offset::Offset(ms))?;
        }
        let found = consumer.offsets_for_times(by_time, timeout).context("broker cannot look offsets up by time")?;
        for e in found.elements() {
            let high = consumer.fetch_watermarks(topic, e.partition(), timeout)?.1;
            ends.insert(
                e.partition(),
                match e.offset() {
                    Offset::Offset(o) => o,
                    _ => high,
                },
            );
        }
    }
    consumer.assign(&tpl)?;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for e in tpl.elements() {
        if let Offset::Offset(o) = e.offset() {
            next.insert(e.partition(), o);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook_flag(&stop);
    let follow = matches!(range.stop, Stop::Never);
    let done = |next: &BTreeMap<i32, i64>| !follow && ends.iter().all(|(p, &end)| next.get(p).is_some_and(|&n| n >= end));
    let mut seen = 0u64;
    while !done(&next) && !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let end = ends.get(&m.partition()).copied().unwrap_or(i64::MAX);
                next.insert(m.partition(), m.offset() + 1);
                if m.offset() < end {
                    seen += 1;
                    f(&m)?;
                }
            }
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    Ok(seen)
}

fn partitions_of(broker: &Broker, topic: &str) -> Result<Vec<i32>> {
    let consumer: BaseConsumer<Quiet> = broker.client_config("pitgun-reader").create_with_context(Quiet).context("cannot create a Kafka consumer")?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("broker {} did not answer metadata for {topic}", broker.bootstrap))?;
    let parts: Vec<i32> = md.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
    if parts.is_empty() {
        bail!("topic {topic} does not exist on {}", broker.bootstrap);
    }
    Ok(parts)
}

fn signal_hook_flag(stop: &Arc<AtomicBool>) {
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone());
}

/// Print the rows of an aggregates topic as they arrive.
///
/// Values are printed one per line, exactly as they were written (for rows: the JSON line
/// `pitgun replay` writes), except envelopes in Avro (what the gateway writes), which are
/// printed as the JSON envelope they encode. With --latest, only the last version of each key is printed,
/// once the end is reached (rows are upserts by row_id).
#[derive(Args, Debug)]
// `--version` here is the manifest's; the binary's version is `pitgun --version`.
#[command(disable_version_flag = true)]
pub struct TailArgs {
    /// Topic to read.
    #[arg(long, conflicts_with = "manifest", required_unless_present = "manifest")]
    topic: Option<String>,
    /// Read the aggregates topic of this manifest name (with --version).
    #[arg(long, requires = "version")]
    manifest: Option<String>,
    /// Manifest version, with --manifest.
    #[arg(long)]
    version: Option<u32>,
    #[command(flatten)]
    broker: BrokerArgs,
    /// Start at the earliest retained record instead of new records only.
    #[arg(long)]
    from_beginning: bool,
    /// Stop at the end offsets seen at start instead of following. (Following asks the broker
    /// for new records every 20 ms; on a broker that answers such a short wait with one record,
    /// like nisshi's PostgreSQL storage, read with this instead.)
    #[arg(long)]
    until_end: bool,
    /// With --until-end: print only the last version of each key (the upserted result).
    #[arg(long, requires = "until_end")]
    latest: bool,
}

pub fn tail(args: TailArgs) -> Result<ExitCode> {
    let broker = args.broker.broker();
    let topic = match (&args.topic, &args.manifest, args.version) {
        (Some(t), _, _) => broker.name(t),
        (None, Some(m), Some(v)) => broker.name(&topics::aggregates(m, v)),
        _ => bail!("give --topic, or --manifest with --version"),
    };
    let range = Range {
        start: if args.from_beginning { Start::Beginning } else { Start::End },
        stop: if args.until_end { Stop::EndAtStart } else { Stop::Never },
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut latest = LastVersions::default();
    let decoder = Decoder::default();
    let mut json = String::new();
    read_topic(&broker, &topic, None, &range, |m| {
        let mut value = m.payload().unwrap_or_default();
        // Envelopes the gateway wrote are Avro single objects: shown as the JSON they encode.
        if sniff(value) == WireFormat::Avro {
            if let Err(e) = decoder.to_json(value, &mut json) {
                eprintln!("tail: {topic}/{}/{}: {e}", m.partition(), m.offset());
                return Ok(());
            }
            value = json.as_bytes();
        }
        if args.latest {
            latest.keep(m.key().unwrap_or_default().to_vec(), value.to_vec());
        } else {
            out.write_all(value)?;
            out.write_all(b"\n")?;
            if !args.until_end {
                out.flush()?;
            }
        }
        Ok(())
    })?;
    for v in latest.into_values() {
        out.write_all(&v)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Write the envelopes of a topic to a dataset file, for `pitgun replay` post-mortem.
///
/// Reads every partition over the chosen range (default: everything retained when the export
/// starts), decodes Avro single objects and JSON envelopes alike, and writes them partition by
/// partition in offset order — each session's events stay in the order they were stored.
/// Records that are not envelopes are counted and reported, not written.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Topic to read (default: the envelopes topic).
    #[arg(long, default_value = topics::ENVELOPES)]
    topic: String,
    #[command(flatten)]
    broker: BrokerArgs,
    /// Output dataset: .avro (Avro OCF) or .ndjson/.jsonl (optionally .gz/.zst).
    #[arg(long, short)]
    output: PathBuf,
    /// First offset (every partition).
    #[arg(long, conflicts_with = "from_time")]
    from_offset: Option<i64>,
    /// Stop before this offset (every partition).
    #[arg(long, conflicts_with = "to_time")]
    to_offset: Option<i64>,
    /// First record at or after this broker timestamp (RFC 3339, e.g. 2026-11-26T10:00:00Z).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    from_time: Option<std::time::SystemTime>,
    /// Stop before the first record at or after this broker timestamp (RFC 3339).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    to_time: Option<std::time::SystemTime>,
}

fn millis(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn export(args: ExportArgs) -> Result<ExitCode> {
    if let (Some(from), Some(to)) = (args.from_offset, args.to_offset) {
        if from >= to {
            bail!("--from-offset {from} is not before --to-offset {to}: the range holds no record");
        }
    }
    if let (Some(from), Some(to)) = (args.from_time, args.to_time) {
        if from >= to {
            bail!("--from-time is not before --to-time: the range holds no record");
        }
    }
    let broker = args.broker.broker();
    let topic = broker.name(&args.topic);
    let range = Range {
        start: match (args.from_offset, args.from_time) {
            (Some(o), _) => Start::Offset(o),
            (_, Some(t)) => Start::Time(millis(t)),
            _ => Start::Beginning,
        },
        stop: match (args.to_offset, args.to_time) {
            (Some(o), _) => Stop::Offset(o),
            (_, Some(t)) => Stop::Time(millis(t)),
            _ => Stop::EndAtStart,
        },
    };
    // Partition by partition keeps each session's order (a session lives on one partition).
    let partitions = partitions_of(&broker, &topic)?;
    let decoder = Decoder::default();
    let mut json = String::new();
    let mut skipped = 0u64;
    let mut first_error = None;
    let mut w = DatasetWriter::create(&args.output)?;
    let mut written = 0u64;
    for p in partitions {
        read_topic(&broker, &topic, Some(p), &range, |m| {
            let payload = m.payload().unwrap_or_default();
            let parsed = decoder.to_json(payload, &mut json).and_then(|()| serde_json::from_str::<Envelope>(&json).map_err(|e| e.to_string()));
            match parsed {
                Ok(env) => {
                    w.envelope(&env)?;
                    written += 1;
                }
                Err(e) => {
                    skipped += 1;
                    first_error.get_or_insert(format!("{topic}/{}/{}: {e}", m.partition(), m.offset()));
                }
            }
            Ok(())
        })?;
    }
    w.finish()?;
    eprintln!("export: {written} envelopes from {topic} to {}", args.output.display());
    if let Some(e) = first_error {
        eprintln!("export: {skipped} records were not envelopes and were left out; first: {e}");
    }
    Ok(ExitCode::SUCCESS)
}
