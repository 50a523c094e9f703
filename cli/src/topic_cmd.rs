//! `pitgun tail` and `pitgun export`: reading a topic without joining any consumer group, so
//! looking at a topic never moves anyone's offsets.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use pitgun_codec::wire::{sniff, Decoder, WireFormat};
use pitgun_contracts::envelope::Envelope;
use pitgun_engine::row::LastVersions;
use pitgun_runtime::kafka::{headers, partition_bounds, positions, topics, Broker};
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

#[derive(Clone, Copy)]
enum Start {
    Beginning,
    End,
    Offset(i64),
    Time(i64),
}

#[derive(Clone, Copy)]
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

/// A bounded read stopped by a signal (SIGINT, SIGTERM, SIGHUP) before the end it was to reach.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted by a signal before the end of the range")
    }
}

impl std::error::Error for Interrupted {}

/// Reads `topic` (all partitions, or `only` one) over `range`, calling `f` per record, each
/// partition in offset order, until the range's end or `stop` ([`crate::interrupt::stop_flag`]).
/// Returns the number of records seen; a bounded read stopped before its end is an
/// [`Interrupted`] error, a followed one ends there.
fn read_topic(
    broker: &Broker,
    topic: &str,
    only: Option<i32>,
    range: &Range,
    stop: &AtomicBool,
    mut f: impl FnMut(&BorrowedMessage<'_>) -> Result<()>,
) -> Result<u64> {
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
    let mut highs: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        highs.insert(p, high);
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
        let found = consumer.offsets_for_times(by_time, timeout).context("broker cannot look offsets up by time")?;
        // A partition without a record at or after the time is answered with "the end": it
        // starts, and so is done, at its high watermark.
        tpl = TopicPartitionList::new();
        for e in found.elements() {
            e.error().with_context(|| format!("broker cannot look up {topic}/{} by time", e.partition()))?;
            let start = match e.offset() {
                Offset::Offset(o) => o,
                _ => highs.get(&e.partition()).copied().unwrap_or_default(),
            };
            tpl.add_partition_offset(topic, e.partition(), Offset::Offset(start))?;
        }
    }
    if let Stop::Time(ms) = range.stop {
        let mut by_time = TopicPartitionList::new();
        for &p in &parts {
            by_time.add_partition_offset(topic, p, Offset::Offset(ms))?;
        }
        let found = consumer.offsets_for_times(by_time, timeout).context("broker cannot look offsets up by time")?;
        for e in found.elements() {
            e.error().with_context(|| format!("broker cannot look up {topic}/{} by time", e.partition()))?;
            let high = highs.get(&e.partition()).copied().unwrap_or_default();
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
            // Idle: the last offsets may hold transaction markers, which no record carries.
            None => {
                for ((_, p), at) in positions(&consumer) {
                    next.entry(p).and_modify(|n| *n = (*n).max(at));
                }
            }
        }
    }
    if !follow && !done(&next) {
        return Err(Interrupted.into());
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
        // A name given whole, namespace included, gets the namespace twice.
        let twice = broker.base_name(topic).and_then(|base| broker.base_name(base)).filter(|_| !broker.namespace.is_empty());
        let hint = match twice {
            Some(base) => format!(": give --topic without the namespace ({base}); it is added"),
            None => " (check the topic's name and --namespace)".into(),
        };
        bail!("topic {topic} does not exist on {}{hint}", broker.bootstrap);
    }
    Ok(parts)
}

/// Print the records of an aggregates topic (or any topic) as they arrive.
///
/// Values are printed one per line, exactly as they were written (for rows: the JSON line
/// `pitgun replay` writes), except envelopes in Avro (what the gateway writes), which are
/// printed as the JSON envelope they encode. With --latest, only the last version of each key is printed,
/// once the end is reached (rows are upserts by row_id; a key whose last record is a tombstone
/// is left out). With --meta, each record is one JSON
/// object that also carries its partition, offset, timestamp, key and headers: how a dead-letter
/// topic shows why each record is there.
#[derive(Args, Debug)]
// `--version` here is the manifest's; the binary's version is `pitgun --version`.
#[command(disable_version_flag = true)]
pub struct TailArgs {
    /// Topic to read, by its base name (e.g. pitgun.deadletter.ingest.v1): the namespace
    /// (--namespace) is added in front.
    #[arg(long, conflicts_with = "manifest", required_unless_present = "manifest")]
    topic: Option<String>,
    /// Read the aggregates topic of the manifest with this name (its `name:`, e.g.
    /// lap-performance; not its file), with --version.
    #[arg(long, requires = "version", value_name = "NAME", value_parser = manifest_name)]
    manifest: Option<String>,
    /// Manifest version, with --manifest.
    #[arg(long, conflicts_with = "topic")]
    version: Option<u32>,
    #[command(flatten)]
    broker: BrokerArgs,
    /// Start at the earliest retained record instead of new records only.
    #[arg(long)]
    from_beginning: bool,
    /// Read what the topic holds now, from the beginning, and stop at the end offsets seen at
    /// start instead of following. (Following asks the broker
    /// for new records every 20 ms; on a broker that answers such a short wait with one record,
    /// like nisshi's PostgreSQL storage, read with this instead.)
    #[arg(long)]
    until_end: bool,
    /// With --until-end: print only the last version of each key (the upserted result); a key
    /// whose last record is a tombstone (no value: deleted) is not printed; records without a
    /// key are all printed.
    #[arg(long, requires = "until_end")]
    latest: bool,
    /// Print each record as one JSON object with its partition, offset, timestamp, key and
    /// headers (name -> value; an array when a name repeats) before its value. A value that is a
    /// JSON object or array (an Avro envelope: the JSON it encodes) is embedded as written; any
    /// other value is a string, or "value_base64" when it is not UTF-8 (keys and header values
    /// likewise; headers whose name is not UTF-8 are in "headers_base64", by the name in
    /// base64); a tombstone is null; an Avro record that cannot be decoded comes with
    /// "decode_error". Dead letters carry their reason in headers: pitgun-reason, pitgun-detail.
    #[arg(long)]
    meta: bool,
}

/// `tail --manifest` takes a name, where `process`, `sink` and `topics` take a file: a file's
/// path would make a topic name that only comes back as "does not exist".
fn manifest_name(text: &str) -> Result<String, String> {
    if text.contains('/') || [".yaml", ".yml", ".json"].iter().any(|ext| text.ends_with(ext)) {
        return Err(format!("{text:?} looks like a file: give the manifest's name (its `name:`, e.g. lap-performance) with --version"));
    }
    Ok(text.to_string())
}

pub fn tail(args: TailArgs) -> Result<ExitCode> {
    let broker = args.broker.broker();
    let topic = match (&args.topic, &args.manifest, args.version) {
        (Some(t), _, _) => broker.name(t),
        (None, Some(m), Some(v)) => broker.name(&topics::aggregates(m, v)),
        _ => bail!("give --topic, or --manifest with --version"),
    };
    let range = Range {
        // Up to the end seen at start, from that end, would be nothing at all.
        start: if args.from_beginning || args.until_end { Start::Beginning } else { Start::End },
        stop: if args.until_end { Stop::EndAtStart } else { Stop::Never },
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut latest = LastVersions::default();
    let decoder = Decoder::default();
    let mut json = String::new();
    read_topic(&broker, &topic, None, &range, &crate::interrupt::stop_flag(), |m| {
        let payload = m.payload().unwrap_or_default();
        // Envelopes the gateway wrote are Avro single objects: shown as the JSON they encode.
        let decoded = (sniff(payload) == WireFormat::Avro).then(|| decoder.to_json(payload, &mut json));
        let line;
        let value = match (decoded, args.meta) {
            (decoded, true) => {
                line = with_meta(m, headers::of(m), decoded.transpose().map(|d| d.map(|()| json.as_str())));
                line.as_bytes()
            }
            (Some(Ok(())), false) => json.as_bytes(),
            (Some(Err(e)), false) => {
                eprintln!("tail: {topic}/{}/{}: {e} (--meta shows such records as they are)", m.partition(), m.offset());
                return Ok(());
            }
            (None, false) => payload,
        };
        if args.latest {
            // A record without a key is no version of anything: each is kept (Err: its offset).
            let key = m.key().map(<[u8]>::to_vec).ok_or((m.partition(), m.offset()));
            // A tombstone (a key with no value) deletes its key: None, left out at the end.
            let deleted = key.is_ok() && m.payload().is_none();
            latest.keep(key, (!deleted).then(|| value.to_vec()));
        } else {
            out.write_all(value).and_then(|()| out.write_all(b"\n")).map_err(crate::stdout_failed)?;
            if !args.until_end {
                out.flush().map_err(crate::stdout_failed)?;
            }
        }
        Ok(())
    })?;
    for v in latest.into_values().into_iter().flatten() {
        out.write_all(&v).and_then(|()| out.write_all(b"\n")).map_err(crate::stdout_failed)?;
    }
    out.flush().map_err(crate::stdout_failed)?;
    Ok(ExitCode::SUCCESS)
}

/// Write the envelopes of a topic to a dataset file, for `pitgun replay` post-mortem.
///
/// Reads every partition over the chosen range (default: everything retained when the export
/// starts), decodes Avro single objects and JSON envelopes alike, and writes them partition by
/// partition in offset order — each session's events stay in the order they were stored.
/// Records that are not envelopes the engine would take (what the processor dead-letters as
/// `invalid_envelope`: a field, channel or dimension named twice, a `seq` past 64 signed bits…)
/// are counted and reported, not written, so replaying the export gives the stream's rows.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Topic to read, by its base name (default: the envelopes topic); the namespace
    /// (--namespace) is added in front.
    #[arg(long, default_value = topics::ENVELOPES)]
    topic: String,
    #[command(flatten)]
    broker: BrokerArgs,
    /// Output dataset: .avro (Avro OCF) or .ndjson/.jsonl (optionally .gz/.zst).
    #[arg(long, short)]
    output: PathBuf,
    /// First offset (every partition).
    #[arg(long, conflicts_with = "from_time", value_parser = clap::value_parser!(i64).range(0..))]
    from_offset: Option<i64>,
    /// Stop before this offset (every partition; at least 1: a range ending before offset 1 holds nothing).
    #[arg(long, conflicts_with = "to_time", value_parser = clap::value_parser!(i64).range(1..))]
    to_offset: Option<i64>,
    /// First record at or after this broker timestamp (RFC 3339, e.g. 2026-11-26T10:00:00Z).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    from_time: Option<std::time::SystemTime>,
    /// Stop before the first record at or after this broker timestamp (RFC 3339).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    to_time: Option<std::time::SystemTime>,
}

/// One record as a JSON object around its value (`tail --meta`). `decoded` is the JSON an Avro
/// value encodes (`Ok(None)`: the value is not Avro), or why it could not be decoded.
fn with_meta<'h, M: Message>(m: &M, headers: impl IntoIterator<Item = headers::Raw<'h>>, decoded: Result<Option<&str>, String>) -> String {
    use rdkafka::message::Timestamp;
    use serde_json::{json, Map, Value};
    let mut meta = Map::new();
    meta.insert("partition".into(), json!(m.partition()));
    meta.insert("offset".into(), json!(m.offset()));
    meta.insert("timestamp_ms".into(), json!(m.timestamp().to_millis()));
    let kind = match m.timestamp() {
        Timestamp::NotAvailable => Value::Null,
        Timestamp::CreateTime(_) => json!("create"),
        Timestamp::LogAppendTime(_) => json!("log_append"),
    };
    meta.insert("timestamp_type".into(), kind);
    bytes(&mut meta, "key", m.key());
    // Headers by name; those whose name is not UTF-8 apart, by the name in base64.
    let (mut by_text, mut by_base64) = (Map::new(), Map::new());
    for (name, value) in headers {
        let shown = match value.map(text) {
            None => Value::Null,
            Some(Ok(t)) => json!(t),
            Some(Err(b)) => json!({ "base64": b }),
        };
        let (named, name) = match text(name) {
            Ok(t) => (&mut by_text, t.to_string()),
            Err(b) => (&mut by_base64, b),
        };
        match named.get_mut(&name) {
            None => {
                named.insert(name, shown);
            }
            // A single value is never an array (a string, null or {"base64"}): an array is a repeat.
            Some(Value::Array(all)) => all.push(shown),
            Some(first) => *first = json!([first.take(), shown]),
        }
    }
    meta.insert("headers".into(), Value::Object(by_text));
    if !by_base64.is_empty() {
        meta.insert("headers_base64".into(), Value::Object(by_base64));
    }
    match decoded {
        Ok(Some(json)) => return close_with_json(meta, json),
        Ok(None) => {}
        Err(e) => {
            meta.insert("decode_error".into(), json!(e));
            meta.insert("value_base64".into(), json!(base64(m.payload().unwrap_or_default())));
            return Value::Object(meta).to_string();
        }
    }
    match m.payload() {
        Some(value) if value.trim_ascii_start().starts_with(b"{") || value.trim_ascii_start().starts_with(b"[") => {
            // Parsed into values, not skipped: only that checks each string is UTF-8 and has no
            // lone surrogate, which would make the printed line unreadable as JSON.
            match std::str::from_utf8(value) {
                // Raw line breaks in valid JSON lie between tokens: spaces mean the same.
                Ok(json) if serde_json::from_str::<Value>(json).is_ok() => return close_with_json(meta, &json.trim().replace(['\n', '\r'], " ")),
                _ => bytes(&mut meta, "value", Some(value)),
            }
        }
        // A tombstone is null; any other value that is not an object or array is shown as the
        // bytes it is (text or base64), so `null`, `"a"` and `a` are told apart.
        value => bytes(&mut meta, "value", value),
    }
    Value::Object(meta).to_string()
}

/// `name`: the bytes as a string when they are UTF-8, else `name_base64`; null when absent.
fn bytes(meta: &mut serde_json::Map<String, serde_json::Value>, name: &str, value: Option<&[u8]>) {
    match value.map(text) {
        None => meta.insert(name.into(), serde_json::Value::Null),
        Some(Ok(t)) => meta.insert(name.into(), t.into()),
        Some(Err(b)) => meta.insert(format!("{name}_base64"), b.into()),
    };
}

/// Bytes as text when they are UTF-8, else (`Err`) in base64.
fn text(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|_| base64(bytes))
}

fn base64(bytes: &[u8]) -> String {
    use base64::{engine::general_purpose::STANDARD, Engine};
    STANDARD.encode(bytes)
}

/// The object `meta` closed by `"value": json`, the JSON spliced in as written (not re-encoded,
/// so its numbers and key order are the stored ones).
fn close_with_json(meta: serde_json::Map<String, serde_json::Value>, json: &str) -> String {
    let mut line = serde_json::Value::Object(meta).to_string();
    line.pop(); // the closing brace
    line.push_str(",\"value\":");
    line.push_str(json);
    line.push('}');
    line
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
    // The output's format and folder are checked before the broker is asked anything, and
    // named as given (the file written first is a hidden one beside it).
    pitgun_codec::dataset::Format::of(&args.output)?;
    crate::paths::distinct(&[], &[("--output", &args.output)])?;
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
    let stop = crate::interrupt::stop_flag();
    // With no end given, every partition's end as the export starts, all taken before any is
    // read (and before the output is opened): a partition read after others must not take in
    // what was produced meanwhile. (An end given as an offset or a time is each partition's
    // own, resolved as its turn comes.)
    let ends = match range.stop {
        Stop::EndAtStart => {
            let consumer: BaseConsumer<Quiet> =
                broker.client_config("pitgun-reader").create_with_context(Quiet).context("cannot create a Kafka consumer")?;
            Some(partition_bounds(&consumer, &topic)?)
        }
        _ => None,
    };
    // Written beside the output and renamed onto it once whole: an export that stops early
    // (interrupted, an error, killed) never leaves a partial dataset under the name asked for.
    let output = crate::paths::Replacing::new(&args.output);
    let mut w = DatasetWriter::create(output.file()).map_err(|e| output.named(e))?;
    let mut written = 0u64;
    let read = partitions.iter().try_for_each(|&p| {
        let stop_at = match ends.as_ref().and_then(|e| e.get(&p)) {
            Some(&(_, high)) => Stop::Offset(high),
            None => range.stop,
        };
        read_topic(&broker, &topic, Some(p), &Range { start: range.start, stop: stop_at }, &stop, |m| {
            let payload = m.payload().unwrap_or_default();
            let parsed = decoder.to_json(payload, &mut json).and_then(|()| engine_takes(&json));
            match parsed {
                Ok(env) => {
                    w.envelope(&env).map_err(|e| output.named(e))?;
                    written += 1;
                }
                Err(e) => {
                    skipped += 1;
                    first_error.get_or_insert(format!("{topic}/{}/{}: {e}", m.partition(), m.offset()));
                }
            }
            Ok(())
        })
        .map(drop)
        .with_context(|| format!("reading {topic}/{p}"))
    });
    // A topic with records and not one envelope is the wrong topic (rows, dead letters), not
    // an empty dataset.
    let read = read.and_then(|()| match (written, &first_error) {
        (0, Some(e)) => bail!("none of the {skipped} records of {topic} is an envelope (is it the envelopes topic?); first: {e}"),
        _ => Ok(()),
    });
    let finished = match read {
        Ok(()) => w.finish().map_err(|e| anyhow::Error::from(output.named(e))).and_then(|()| output.commit()),
        Err(e) => Err(e),
    };
    if let Err(e) = finished {
        return Err(e.context(format!("nothing was written to {}: a partial dataset would replay as if it were whole", args.output.display())));
    }
    eprintln!("export: {written} envelopes from {topic} to {}", args.output.display());
    if let Some(e) = first_error {
        eprintln!("export: {skipped} records were not valid envelopes and were left out; first: {e}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The envelope in `json`, if the engine would take it as one: the strict decoder's rules (a
/// field or dimension named twice, a `seq` past 64 signed bits) and the schema's limits and names
/// (`rules::check`: a channel named once, ids of at most 128 characters…).
/// `serde` alone keeps the last of two values and reads any unsigned `seq`, so an export
/// replayed as valid what the processor had refused.
fn engine_takes(json: &str) -> Result<Envelope, String> {
    let view = pitgun_codec::json::decode(json).map_err(|e| format!("at {}: {}", e.pointer, e.message))?;
    pitgun_codec::rules::check(&view).map_err(|b| format!("at {}: {}", b.pointer, b.message))?;
    serde_json::from_str::<Envelope>(json).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};
    use serde_json::{json, Value};

    /// A record with its headers (given apart: they are read from the consumed record's own).
    struct Record<'a>(OwnedMessage, &'a [headers::Raw<'a>]);

    fn message<'a>(key: Option<&[u8]>, payload: Option<&[u8]>, headers: &'a [headers::Raw<'a>]) -> Record<'a> {
        Record(
            OwnedMessage::new(
                payload.map(<[u8]>::to_vec),
                key.map(<[u8]>::to_vec),
                "t".into(),
                Timestamp::CreateTime(1_700_000_000_123),
                3,
                42,
                None,
            ),
            headers,
        )
    }

    /// The line `tail --meta` prints for a value that is not Avro, checked to be one JSON line.
    fn line(r: &Record) -> String {
        let line = with_meta(&r.0, r.1.iter().copied(), Ok(None));
        assert!(!line.contains('\n'), "one line: {line}");
        line
    }

    fn shown(r: &Record) -> Value {
        let line = line(r);
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    #[test]
    fn a_dead_letter_is_shown_with_its_place_key_and_reason() {
        let m = message(
            Some(b"s1"),
            Some(b"{\"b\": 1.50, \"a\": [1]}"),
            &[(b"pitgun-reason", Some(b"unknown_source")), (b"pitgun-detail", Some(b"at /source/id: x"))],
        );
        assert!(line(&m).ends_with(r#","value":{"b": 1.50, "a": [1]}}"#), "the value as written: {}", line(&m));
        let v = shown(&m);
        assert_eq!((v["partition"].as_i64(), v["offset"].as_i64(), v["timestamp_ms"].as_i64()), (Some(3), Some(42), Some(1_700_000_000_123)));
        assert_eq!((&v["timestamp_type"], &v["key"]), (&json!("create"), &json!("s1")));
        assert_eq!(v["headers"], json!({"pitgun-reason": "unknown_source", "pitgun-detail": "at /source/id: x"}));
    }

    #[test]
    fn bytes_that_are_not_text_or_one_line_are_shown_without_loss() {
        let binary = [0xff, 0x00, 0xfe];
        let v = shown(&message(
            Some(&binary),
            Some(&binary),
            &[(b"h", Some(b"one")), (b"h", Some(&binary)), (b"h", None), (b"n", None), (b"\xffh", Some(b"x")), (b"\xffh", None)],
        ));
        assert_eq!((&v["key_base64"], &v["value_base64"]), (&json!("/wD+"), &json!("/wD+")));
        assert_eq!(v["headers"], json!({"h": ["one", {"base64": "/wD+"}, null], "n": null}));
        // A name that is not UTF-8 (any producer can send one) is keyed by its base64.
        assert_eq!(v["headers_base64"], json!({"/2g=": ["x", null]}));
        assert_eq!(shown(&message(None, None, &[]))["headers_base64"], Value::Null, "only when there is one");
        // JSON over several lines keeps its every byte but the line breaks, and a repeated name.
        let pretty = message(None, Some(b"{\n  \"a\": 1.50,\r\n  \"a\": 2\n}\n"), &[]);
        assert!(line(&pretty).ends_with(r#","value":{   "a": 1.50,    "a": 2 }}"#), "{}", line(&pretty));
        assert_eq!(shown(&pretty)["key"], Value::Null);
        // JSON whose strings hold bytes that are not UTF-8 (a dead letter refused as not UTF-8),
        // or a lone surrogate no JSON reader takes, is shown as its bytes, not mended.
        assert_eq!(shown(&message(None, Some(b"{\"a\":\"\xff\"}"), &[]))["value_base64"], json!("eyJhIjoi/yJ9"));
        assert_eq!(shown(&message(None, Some(br#"{"a":"\ud800"}"#), &[]))["value"], json!(r#"{"a":"\ud800"}"#));
    }

    #[test]
    fn values_that_read_alike_are_told_apart() {
        let value = |payload: Option<&[u8]>| shown(&message(Some(b"k"), payload, &[]))["value"].clone();
        assert_eq!(value(None), Value::Null, "a tombstone");
        assert_eq!(value(Some(b"null")), json!("null"));
        assert_eq!(value(Some(b"\"a\"")), json!("\"a\""));
        assert_eq!(value(Some(b"a")), json!("a"));
        assert_eq!(value(Some(b"")), json!(""));
        assert_eq!(value(Some(b"{not json")), json!("{not json"));
        assert_eq!(value(Some(b" [1, 2]")), json!([1, 2]));
    }

    #[test]
    fn an_avro_value_is_its_json_or_its_bytes_with_the_reason() {
        let Record(m, _) = message(Some(b"k"), Some(&[0xc3, 0x01, 7]), &[]);
        assert!(with_meta(&m, [], Ok(Some(r#"{"seq":1.0}"#))).ends_with(r#","value":{"seq":1.0}}"#));
        let v: Value = serde_json::from_str(&with_meta(&m, [], Err("a truncated record".into()))).unwrap();
        assert_eq!((&v["decode_error"], &v["value_base64"]), (&json!("a truncated record"), &json!("wwEH")));
    }
}
