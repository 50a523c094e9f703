//! Benchmarks around the live services: a bare Kafka consumer (the processor's baseline), the
//! processor's engine without Kafka, the QuestDB target's encoding, and HTTP GET load.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use pitgun_codec::dataset::for_each_record;
use pitgun_contracts::dictionary::Dictionary;
use pitgun_contracts::load::{load, Loaded};
use pitgun_contracts::manifest::PipelineManifest;
use pitgun_contracts::schema::ContractKind;
use pitgun_engine::Plan;

/// A manifest and its dictionary, loaded and checked.
struct Project {
    manifest: Loaded<PipelineManifest>,
    dictionary: Loaded<Dictionary>,
}

impl Project {
    fn load(manifest: &Path, dictionary: &Path) -> Result<Project> {
        Ok(Project { manifest: load(ContractKind::Pipeline, manifest)?, dictionary: load(ContractKind::Dictionary, dictionary)? })
    }

    fn compile(&self) -> Result<Plan> {
        Ok(Plan::compile(&self.manifest, &self.dictionary)?)
    }
}

/// Arguments of `pitgun-bench consume`: the processor benchmark's baseline.
#[derive(Args)]
pub struct ConsumeArgs {
    /// Topic (base name; the namespace is added).
    #[arg(long, default_value = pitgun_runtime::kafka::topics::ENVELOPES)]
    topic: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "PITGUN_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Prefix of topic names, as the services were given it.
    #[arg(long, env = "PITGUN_NAMESPACE", default_value = "")]
    namespace: String,
}

/// A bare rdkafka consumer in its own group that only counts the topic's records up to the end
/// offsets seen at start — what the processor's throughput is compared with.
pub fn consume(args: ConsumeArgs) -> Result<ExitCode> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use std::time::Duration;
    let broker = pitgun_runtime::kafka::Broker::new(args.brokers, args.namespace);
    let topic = broker.name(&args.topic);
    let group = format!("pitgun-bench-consume-{}", std::process::id());
    let consumer: BaseConsumer = broker
        // librdkafka's defaults: the raw speed of a plain consumer, not the processor's settings.
        .client_config("pitgun-bench-consume")
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    let mut end_total = 0i64;
    let mut ends = std::collections::HashMap::new();
    for p in md.topics()[0].partitions() {
        let (low, high) = consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(10))?;
        end_total += high - low;
        ends.insert(p.id(), high);
    }
    consumer.subscribe(&[&topic])?;
    let (mut n, mut bytes) = (0i64, 0u64);
    let mut first: Option<Instant> = None;
    while n < end_total {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            first.get_or_insert_with(Instant::now);
            if m.offset() < ends[&m.partition()] {
                n += 1;
                bytes += m.payload_len() as u64;
            }
        }
    }
    let s = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
    println!("{}", serde_json::json!({"records": n, "bytes": bytes, "consume_seconds": s, "records_per_second": n as f64 / s}));
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `pitgun-bench produce`: `pitgun publish`'s baseline.
#[derive(Args)]
pub struct ProduceArgs {
    /// The dataset (NDJSON envelopes, `.zst` or not), as `pitgun publish --input` takes it.
    #[arg(long)]
    input: PathBuf,
    /// Topic (base name; the namespace is added).
    #[arg(long)]
    topic: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "PITGUN_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Prefix of topic names, as the services were given it.
    #[arg(long, env = "PITGUN_NAMESPACE", default_value = "")]
    namespace: String,
}

/// A bare producer with `pitgun publish`'s settings, sending the dataset's records already
/// encoded as Avro single objects (each keyed by its session), timed from the first send to the
/// broker's acknowledgement of the last: what publish would cost if reading, checking and
/// encoding were free.
pub fn produce(args: ProduceArgs) -> Result<ExitCode> {
    use pitgun_runtime::kafka::{flush_counting, DeliveryReports};
    use rdkafka::producer::{BaseRecord, ThreadedProducer};
    use std::time::Duration;
    let mut encoder = pitgun_codec::avro::TextEncoder::default();
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    for_each_record(&args.input, &|_| {}, |_, text| {
        let mut bytes = Vec::new();
        let view = encoder.encode(text.map_err(Clone::clone)?, &mut bytes)?;
        records.push((view.session_id.to_string(), bytes));
        Ok::<_, anyhow::Error>(true)
    })?;
    let broker = pitgun_runtime::kafka::Broker::new(args.brokers, args.namespace);
    let topic = broker.name(&args.topic);
    let producer: ThreadedProducer<DeliveryReports> =
        broker.bulk_producer_config("pitgun-bench-produce").create_with_context(DeliveryReports::default())?;
    let wait = Duration::from_secs(120);
    let started = Instant::now();
    for (i, (key, bytes)) in records.iter().enumerate() {
        pitgun_runtime::kafka::send_waiting(&producer, BaseRecord::with_opaque_to(&topic, i + 1).key(key.as_bytes()).payload(bytes), wait)?;
    }
    let (failed, first) = flush_counting(&producer, wait)?;
    let s = started.elapsed().as_secs_f64();
    anyhow::ensure!(failed == 0, "{failed} records were not acknowledged (the first: {first:?}): no baseline");
    println!("{}", serde_json::json!({"records": records.len(), "seconds": s, "records_per_second": records.len() as f64 / s}));
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `pitgun-bench engine`: the processor's per-envelope CPU without Kafka.
#[derive(Args)]
pub struct EngineArgs {
    /// Manifest to run.
    #[arg(long)]
    manifest: PathBuf,
    /// The dictionary it pins.
    #[arg(long, default_value = "manifests/dictionary/racing.yaml")]
    dictionary: PathBuf,
    /// Dataset (NDJSON, optionally compressed); its envelopes are Avro-encoded in memory first.
    #[arg(long)]
    input: PathBuf,
    /// At most this many envelopes.
    #[arg(long, default_value_t = 1_000_000)]
    limit: u64,
    /// Runs over the same envelopes, each with a fresh engine; the fastest is reported (a
    /// shared machine's noise only ever slows a run down).
    #[arg(long, default_value_t = 3)]
    passes: u32,
}

/// Encodes up to `limit` envelopes as Avro single objects (as the gateway writes them), then
/// times one engine (the processor's `Runner` with RocksDB-backed session state in memory)
/// over them: decode, resolve, windows — what the processor adds to a bare consumer per record.
pub fn engine(args: EngineArgs) -> Result<ExitCode> {
    use pitgun_codec::{wire::Decoder, Record};
    let project = Project::load(&args.manifest, &args.dictionary)?;
    let mut encoder = pitgun_codec::avro::TextEncoder::default();
    let mut records: Vec<Vec<u8>> = Vec::new();
    for_each_record(&args.input, &|_| {}, |_, text| {
        let mut bytes = Vec::new();
        encoder.encode(text.map_err(Clone::clone)?, &mut bytes)?;
        records.push(bytes);
        Ok::<_, anyhow::Error>((records.len() as u64) < args.limit)
    })?;
    let decoder = Decoder::default();
    let mut best: Option<(f64, u64, u64)> = None;
    for _ in 0..args.passes.max(1) {
        let mut runner = pitgun_engine::Runner::with_store(project.compile()?, pitgun_processor::state::PartitionStore::default());
        let mut out = Vec::new();
        let (mut rows, mut errors) = (0u64, 0u64);
        let started = Instant::now();
        for bytes in &records {
            let fed = match decoder.classify(bytes) {
                Ok(Record::Avro(datum)) => runner.feed_avro(datum, 0, &mut out),
                _ => anyhow::bail!("not an Avro single object"),
            };
            errors += u64::from(fed.is_err());
            rows += out.len() as u64;
            out.clear();
        }
        runner.finish(0, &mut out);
        let secs = started.elapsed().as_secs_f64();
        rows += out.len() as u64;
        if best.is_none_or(|(b, _, _)| secs < b) {
            best = Some((secs, rows, errors));
        }
    }
    let (secs, rows, errors) = best.expect("at least one pass");
    println!(
        "{}",
        serde_json::json!({"records": records.len(), "rows": rows, "errors": errors, "seconds": secs, "passes": args.passes,
            "records_per_second": records.len() as f64 / secs, "ns_per_record": secs * 1e9 / records.len() as f64})
    );
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `pitgun-bench ilp`: the QuestDB target's encoding cost.
#[derive(Args)]
pub struct IlpArgs {
    /// Rows as `pitgun replay` writes them (JSON lines) of the manifest below.
    #[arg(long)]
    rows: PathBuf,
    /// The manifest whose contract the rows follow.
    #[arg(long, default_value = "manifests/pipelines/lap-performance.v1.yaml")]
    manifest: PathBuf,
    /// The dictionary it pins.
    #[arg(long, default_value = "manifests/dictionary/racing.yaml")]
    dictionary: PathBuf,
    /// Rows per ILP request (the sink's --batch-rows).
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// Passes over the rows (the fastest counts).
    #[arg(long, default_value_t = 3)]
    passes: usize,
}

/// Encodes rows as the QuestDB target does (contract cells → ILP v2 in the official client's
/// buffer, one buffer per batch) and, as the baseline in the same run, writes the same rows back
/// as JSON with serde_json. Also times the sink's whole per-row CPU path: JSON line → cells → ILP.
pub fn ilp(args: IlpArgs) -> Result<ExitCode> {
    use pitgun_sink::questdb::{Buffer, ProtocolVersion, QuestTable};
    use pitgun_sink::table::RowParser;
    let plan = Project::load(&args.manifest, &args.dictionary)?.compile()?;
    let table = QuestTable::from_contract(&plan.contract, "bench")?;
    let text = std::fs::read_to_string(&args.rows)?;
    let lines: Vec<&str> = text.lines().collect();
    let maps: Vec<serde_json::Map<String, serde_json::Value>> = lines.iter().map(|l| serde_json::from_str(l)).collect::<Result<_, _>>()?;
    let cells: Vec<_> = maps.iter().map(|m| table.shape.convert(m)).collect::<Result<Vec<_>, _>>().map_err(|e| anyhow::anyhow!(e))?;
    let n = lines.len() as f64;
    let best = |f: &mut dyn FnMut() -> usize| -> (f64, usize) {
        let mut fastest = f64::MAX;
        let mut bytes = 0;
        for _ in 0..args.passes.max(1) {
            let started = Instant::now();
            bytes = f();
            fastest = fastest.min(started.elapsed().as_secs_f64());
        }
        (fastest, bytes)
    };
    let mut buf = Buffer::new(ProtocolVersion::V2);
    let (ilp_s, ilp_bytes) = best(&mut || {
        let mut bytes = 0;
        for batch in cells.chunks(args.batch) {
            buf.clear();
            for row in batch {
                table.encode(&mut buf, row).expect("encodable");
            }
            bytes += buf.len();
        }
        bytes
    });
    let mut out = Vec::new();
    let (json_s, json_bytes) = best(&mut || {
        let mut bytes = 0;
        for batch in maps.chunks(args.batch) {
            out.clear();
            for m in batch {
                serde_json::to_writer(&mut out, m).expect("serialisable");
                out.push(b'\n');
            }
            bytes += out.len();
        }
        bytes
    });
    let parser = RowParser::of(&plan.contract);
    let binding = table.shape.bind(&parser)?;
    let (full_s, _) = best(&mut || {
        let mut bytes = 0;
        for batch in lines.chunks(args.batch) {
            buf.clear();
            for line in batch {
                let fields = parser.parse(line.as_bytes()).expect("a row");
                table.encode(&mut buf, &table.shape.convert_fields(&binding, &fields).expect("fits")).expect("encodable");
            }
            bytes += buf.len();
        }
        bytes
    });
    // The sink's read path for PostgreSQL (JSON line → fields → cells), and its parse against
    // serde_json's general parse of the same rows, the baseline in the same run.
    let (cells_s, _) = best(&mut || {
        let mut n = 0;
        for line in &lines {
            let fields = parser.parse(line.as_bytes()).expect("a row");
            n += table.shape.convert_fields(&binding, &fields).expect("fits").cells.len();
        }
        n
    });
    let parse_with = |general: bool| {
        best(&mut || {
            let mut n = 0;
            for line in &lines {
                let fields = if general { parser.parse_general(line.as_bytes()) } else { parser.parse(line.as_bytes()) };
                n += fields.expect("a row").len();
            }
            n
        })
        .0
    };
    let (scan_s, serde_s) = (parse_with(false), parse_with(true));
    println!(
        "JSON line to fields: {:.0} ns per row (serde_json alone: {:.0} ns; ratio {:.2}); JSON line to cells as the PostgreSQL target takes them: {:.0} ns per row",
        scan_s * 1e9 / n,
        serde_s * 1e9 / n,
        serde_s / scan_s,
        cells_s * 1e9 / n
    );
    println!(
        "{} rows, {} per batch, fastest of {} passes: ILP v2 encoding {:.0} rows/s ({:.0} bytes/row); serde_json writing the same rows {:.0} rows/s ({:.0} bytes/row); ratio {:.2}; JSON line to ILP as the sink does it (parse into fields, convert, encode) {:.0} rows/s",
        lines.len(),
        args.batch,
        args.passes,
        n / ilp_s,
        ilp_bytes as f64 / n,
        n / json_s,
        json_bytes as f64 / n,
        json_s / ilp_s,
        n / full_s
    );
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `pitgun-bench http`: latency and rate of GET requests at a fixed concurrency.
#[derive(Args)]
pub struct HttpArgs {
    /// Server, e.g. 127.0.0.1:8090.
    #[arg(long)]
    addr: String,
    /// Paths to GET, in turn (repeatable), e.g. '/v1/leaderboard?track=monza'.
    #[arg(long = "path", required = true)]
    paths: Vec<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// How long to measure (after a one-second warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
}

/// Keeps `concurrency` keep-alive connections busy for `duration` and prints requests/s and
/// latency percentiles. Any non-200 answer fails the run.
pub fn http(args: HttpArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let latencies = rt.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
        let run = |measure: std::time::Duration| {
            let mut tasks = Vec::new();
            for w in 0..args.concurrency {
                let (client, paths, addr) = (client.clone(), args.paths.clone(), args.addr.clone());
                tasks.push(tokio::spawn(async move {
                    let end = Instant::now() + measure;
                    let mut lat = Vec::new();
                    let mut i = w;
                    while Instant::now() < end {
                        let url = format!("http://{addr}{}", paths[i % paths.len()]);
                        i += 1;
                        let started = Instant::now();
                        let resp = client.get(&url).send().await?;
                        let status = resp.status();
                        let body = resp.bytes().await?;
                        if status != 200 {
                            anyhow::bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
                        }
                        lat.push(started.elapsed().as_secs_f64());
                    }
                    Ok(lat)
                }));
            }
            tasks
        };
        for t in run(std::time::Duration::from_secs(1)) {
            t.await??;
        }
        let mut all = Vec::new();
        for t in run(args.duration) {
            all.extend(t.await??);
        }
        anyhow::Ok(all)
    })?;
    let mut l = latencies;
    l.sort_by(f64::total_cmp);
    let at = |q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)] * 1e3;
    println!(
        "{} requests in {:?} at concurrency {}: {:.0} requests/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        l.len(),
        args.duration,
        args.concurrency,
        l.len() as f64 / args.duration.as_secs_f64(),
        at(0.5),
        at(0.9),
        at(0.99),
        l[l.len() - 1] * 1e3
    );
    Ok(ExitCode::SUCCESS)
}
