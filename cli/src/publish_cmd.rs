//! `pitgun publish`: put a dataset on the envelopes topic straight through Kafka, as a service
//! that publishes to Kafka (not through the gateway) would — backfills, benchmarks, tests.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use pitgun_codec::avro::TextEncoder;
use pitgun_codec::json::{decode_into, DecodeError, EnvelopeView};
use pitgun_codec::rules::check;
use pitgun_runtime::kafka::{send_waiting, topics};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

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
    /// aggregates topic (give --topic): sink backfills and benchmarks.
    Rows,
}

/// Publish a dataset's envelopes to the envelopes topic, keyed by session id.
///
/// Uses the idempotent producer with acks=all and waits until the broker acknowledged every
/// record; records that are not valid envelopes are refused up front (use `pitgun validate`).
/// The topic must exist (scripts/stack.sh topics).
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

pub fn run(args: PublishArgs) -> Result<ExitCode> {
    let broker = args.broker.broker();
    let topic = broker.name(&args.topic);
    let producer: ThreadedProducer<DefaultProducerContext> =
        broker.bulk_producer_config("pitgun-publish").create().context("cannot create the Kafka producer")?;
    let mut encoder = TextEncoder::default();
    let mut buf = Vec::with_capacity(1024);
    let started = Instant::now();
    let mut n = 0u64;
    let mut key = String::new();
    for_each_record(&args.input, &|_| {}, |line, text| {
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
        send_waiting(&producer, BaseRecord::to(&topic).key(key.as_bytes()).payload(&buf), FLUSH)?;
        n += 1;
        Ok::<_, anyhow::Error>(true)
    })?;
    producer.flush(FLUSH).context("the broker did not acknowledge every record within 120 s")?;
    let s = started.elapsed().as_secs_f64();
    eprintln!("publish: {n} records to {topic} in {s:.2} s ({:.0}/s), all acknowledged", n as f64 / s);
    Ok(ExitCode::SUCCESS)
}

/// The gateway's and the engine's rule, so a backfill stores nothing they would refuse.
/// The strictly decoded envelope `text`, if it also keeps the schema's rules.
fn checked(text: &str) -> Result<EnvelopeView<'_>, DecodeError> {
    let mut view = EnvelopeView::empty();
    decode_into(text, &mut view)?;
    check(&view).map_err(|b| DecodeError { pointer: b.pointer, message: b.message })?;
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

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
