//! `pitgun publish`: put a dataset on the envelopes topic straight through Kafka, as a service
//! that publishes to Kafka (not through the gateway) would — backfills, benchmarks, tests.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use pitgun_codec::avro::TextEncoder;
use pitgun_codec::json::{decode_into, DecodeError, EnvelopeView};
use pitgun_codec::rules::check;
use pitgun_runtime::kafka::{flush_counting, send_waiting, topics, DeliveryReports};

use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;

use crate::broker_args::BrokerArgs;
use pitgun_codec::dataset::for_each_record;

/// Wire format of the published records.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum WireArg {
    /// Avro single-object encoding (what the gateway writes).
    Avro,
    /// The JSON envelope, as the dataset has it.
    Json,
    /// Aggregate rows (the JSON lines `pitgun replay` writes), keyed by `row_id`, to fill an
    /// aggregates topic (--topic, required): sink backfills and benchmarks. They carry no row
    /// version, so the sink takes them for older than any row a processor wrote: they fill
    /// rows a table does not hold yet.
    Rows,
}

/// Publish a dataset's envelopes to the envelopes topic, keyed by session id.
///
/// Uses the idempotent producer with acks=all and waits until the broker acknowledged every
/// record. Each line is checked as the gateway checks an envelope, short of the dictionary and
/// the clock rule; the first that fails stops the publish once the lines before it are
/// acknowledged (`pitgun validate` checks a whole file first).
/// The topic must exist (`pitgun topics` creates it); a missing one is refused before anything
/// is sent.
#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Dataset: .ndjson/.jsonl/.json (optionally .gz/.zst) or .avro.
    #[arg(long, short)]
    input: PathBuf,
    /// Topic (base name; the namespace is added).
    #[arg(long, default_value = topics::ENVELOPES)]
    topic: String,
    #[command(flatten)]
    broker: BrokerArgs,
    /// Record format on the topic.
    #[arg(long, value_enum, default_value = "avro")]
    wire: WireArg,
}

/// How long the broker may take to acknowledge what was sent (and to make room in a full queue).
const FLUSH: Duration = Duration::from_secs(120);

/// How long a record may wait for the broker's acknowledgement (`message.timeout.ms`). Below
/// [`FLUSH`], so a broker that went away fails records, counted and named by their lines, before
/// the flush gives up; librdkafka's default (300 s) outlasted it and the error counted nothing.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(100);

/// How long the broker has to answer before anything is read.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(args: PublishArgs) -> Result<ExitCode> {
    // Each kind of record only where it is read as such: the reader would dead-letter the rest.
    match args.wire {
        WireArg::Rows if !topics::holds_rows(&args.topic) => anyhow::bail!(
            "--wire rows needs --topic, an aggregates topic such as pitgun.aggregates.lap-performance.v1, not {}: whatever reads it would dead-letter rows",
            args.topic
        ),
        WireArg::Avro | WireArg::Json if topics::is_output(&args.topic) => anyhow::bail!(
            "{} is a topic Pitgun writes (rows, late events, state or dead letters), not one envelopes go to: use the envelopes topic, or --wire rows for an aggregates topic",
            args.topic
        ),
        _ => {}
    }
    // The input is opened before the broker is asked: a typo is named at once, by itself.
    pitgun_codec::dataset::Format::of(&args.input)?;
    std::fs::File::open(&args.input).with_context(|| format!("{}: cannot open", args.input.display()))?;
    let broker = args.broker.broker();
    let topic = broker.name(&args.topic);
    let producer: ThreadedProducer<DeliveryReports> = broker
        .bulk_producer_config("pitgun-publish")
        // A topic that does not exist is an error below, not one the broker makes with its defaults.
        .set("allow.auto.create.topics", "false")
        .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string())
        .create_with_context(DeliveryReports::default())
        .context("cannot create the Kafka producer")?;
    // An unreachable broker is named within seconds, not after the acknowledgements' wait.
    let md = producer
        .client()
        .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
        .with_context(|| format!("broker {} did not answer metadata for {topic} within {METADATA_TIMEOUT:?}", broker.bootstrap))?;
    match md.topics().iter().find(|t| t.name() == topic).map(|t| (t.error(), t.partitions().len())) {
        Some((None, n)) if n > 0 => {}
        Some((Some(e), _)) if e != RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART => {
            anyhow::bail!("broker {} answered metadata for {topic} with: {}", broker.bootstrap, rdkafka::error::RDKafkaErrorCode::from(e))
        }
        _ => anyhow::bail!("topic {topic} does not exist on {} (create it: pitgun topics; or check --topic and --namespace)", broker.bootstrap),
    }
    let mut encoder = TextEncoder::default();
    let mut buf = Vec::with_capacity(1024);
    let started = Instant::now();
    let mut n = 0u64;
    let mut key = String::new();
    let read = for_each_record(&args.input, &|_| {}, |line, text| {
        // Once the broker has failed a record, the rest is not sent: each would wait out its
        // delivery timeout too. The error says how many are on the topic and names the first.
        if producer.context().any_failed() {
            anyhow::bail!("{}:{line}: not sent: the broker did not acknowledge a record sent before it", args.input.display());
        }
        let text = text.map_err(|e| anyhow::anyhow!("{}:{line}: not an envelope: {e}", args.input.display()))?;
        buf.clear();
        key.clear();
        if let WireArg::Rows = args.wire {
            #[derive(serde::Deserialize)]
            struct Keyed<'a> {
                #[serde(borrow)]
                row_id: &'a str,
            }
            let row: Keyed = serde_json::from_str(text).with_context(|| format!("{}:{line}: not a row with a row_id", args.input.display()))?;
            key.push_str(row.row_id);
            buf.extend_from_slice(text.as_bytes());
        } else {
            // Checked as the gateway checks an envelope, short of its dictionary.
            let view = match args.wire {
                WireArg::Avro => encoder.encode(text, &mut buf),
                _ => checked(text).inspect(|_| buf.extend_from_slice(text.as_bytes())),
            }
            .map_err(|e| anyhow::anyhow!("{}:{line}: not an envelope: {e}", args.input.display()))?;
            key.push_str(&view.session_id);
        }
        // A full queue waits for the broker as long as a flush may (a backfill has no hurry).
        // Numbered by its line, so that a record the broker refuses later is named by it.
        send_waiting(&producer, BaseRecord::with_opaque_to(&topic, line as usize).key(key.as_bytes()).payload(&buf), FLUSH)
            .with_context(|| format!("{}:{line}", args.input.display()))?;
        n += 1;
        Ok::<_, anyhow::Error>(true)
    });
    // Whatever stopped the reading, what was sent is delivered first: dropping the producer
    // would discard its queue, and the error says what is on the topic.
    let delivered = finish(&producer, FLUSH, &args.input);
    if let Err(e) = read {
        return Err(match delivered {
            Ok(()) => e.context(format!("the {n} records before it are on {topic}")),
            Err(d) => e.context(format!("of the {n} records before it: {d:#}")),
        });
    }
    delivered?;
    let s = started.elapsed().as_secs_f64();
    eprintln!("publish: {n} records to {topic} in {s:.2} s ({:.0}/s), all acknowledged", n as f64 / s);
    Ok(ExitCode::SUCCESS)
}

/// Waits for every record's delivery report: an error unless the broker acknowledged them all,
/// naming the first refused by its line of `input`.
fn finish(producer: &ThreadedProducer<DeliveryReports>, wait: Duration, input: &Path) -> Result<()> {
    match flush_counting(producer, wait)? {
        (0, _) => Ok(()),
        (n, first) => anyhow::bail!(
            "{n} records were not acknowledged by the broker (the first: {}); the others are on the topic. Publishing the file \
             again does not count an event twice: the engine drops a copy by its event id (or refuses it as late, past the \
             session's dedup horizon), and the sink replaces a row by its row id",
            first.map_or_else(|| "no reason given".into(), |(line, reason)| format!("{}:{line}: {reason}", input.display()))
        ),
    }
}

/// The strictly decoded envelope `text`, if it also keeps the schema's rules: the gateway's
/// checks short of the dictionary and the clock rule.
fn checked(text: &str) -> Result<EnvelopeView<'_>, DecodeError> {
    let mut view = EnvelopeView::empty();
    decode_into(text, &mut view)?;
    check(&view)?;
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record the broker never acknowledged (here: no broker at all, and a 300 ms delivery
    /// timeout) fails the publish, saying how many and naming the first by its line (a broker's
    /// refusal comes in a delivery report, after the line was sent); a flush that merely ends is
    /// not success.
    #[test]
    fn records_the_broker_never_acknowledged_fail_the_publish() {
        let broker = pitgun_runtime::kafka::Broker::new("127.0.0.1:1", "");
        let producer: ThreadedProducer<DeliveryReports> = broker
            .bulk_producer_config("pitgun-publish-test")
            .set("message.timeout.ms", "300")
            .create_with_context(DeliveryReports::default())
            .unwrap();
        for line in [4, 2, 7] {
            send_waiting(&producer, BaseRecord::with_opaque_to("t", line).key("s").payload(&format!("{line}")), FLUSH).unwrap();
        }
        let err = finish(&producer, Duration::from_secs(10), Path::new("d.ndjson")).expect_err("nothing was acknowledged");
        // The first refused is named by its line, whatever order the reports came in.
        assert!(format!("{err:#}").contains("3 records") && format!("{err:#}").contains("(the first: d.ndjson:2: "), "{err:#}");
    }

    #[test]
    fn a_channel_named_twice_is_refused_before_it_is_published() {
        let text = r#"{"schema":"pitgun-envelope/v1","event_id":"e","source":{"kind":"game","id":"pitgun-web","version":"1.4.2"},"session_id":"s","seq":1,"time_us":1,"kind":"sample","channels":{"speed_kmh":1,"speed_kmh":2}}"#;
        let err = TextEncoder::default().encode(text, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("/channels/speed_kmh") && err.to_string().contains("more than once"), "{err}");
        assert_eq!(checked(text).unwrap_err().pointer, "/channels/speed_kmh", "--wire json applies the same rule");
    }

    #[test]
    fn an_envelope_the_gateway_would_refuse_by_the_schema_is_not_published() {
        let long_id = "e".repeat(129);
        let text = format!(
            r#"{{"schema":"pitgun-envelope/v1","event_id":"{long_id}","source":{{"kind":"game","id":"pitgun-web","version":"1.4.2"}},"session_id":"s","seq":1,"time_us":1,"kind":"sample","channels":{{"speed_kmh":1}}}}"#
        );
        for err in [TextEncoder::default().encode(&text, &mut Vec::new()).unwrap_err(), checked(&text).unwrap_err()] {
            assert_eq!(err.pointer, "/event_id", "{err}");
        }
    }
}
