//! `pitgun gateway`: the HTTP ingest gateway, and `pitgun gateway keygen` for its API keys.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use pitgun_ingest::gateway::Limits;
use pitgun_ingest::service::{run, Settings};

use crate::broker_args::{init_logging, BrokerArgs};

/// Largest `--max-item-size`: what a dead letter carries whole, so that every item the gateway
/// would store is dead-lettered whole when refused.
const MAX_ITEM_SIZE: usize = pitgun_runtime::kafka::headers::DEAD_LETTER_PAYLOAD_LIMIT;

/// Arguments of `pitgun gateway`.
#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Endpoints:\n  POST /v1/envelopes            one envelope, a JSON array (application/json) or NDJSON \
(application/x-ndjson), optionally Content-Encoding gzip or zstd; Authorization: Bearer <token> or X-Api-Key\n  \
GET  /schemas[/NAME/VERSION]   the JSON Schemas (ETag, If-None-Match)\n  \
GET  /dictionary[/METRIC]      the dictionary\n  \
GET  /manifests[/NAME/VERSION] pipeline and bundle manifests; /manifests/NAME/VERSION/contract the analysis contract\n  \
GET  /openapi.json             this API's OpenAPI document\n  \
GET  /metrics /healthz /readyz\n\n\
Keys: the keys file is read again when it changes and on SIGHUP; delete an entry to revoke a key.\n\n\
Example:\n  pitgun gateway keygen --source pitgun-web --keys keys.yaml\n  \
pitgun gateway --listen 127.0.0.1:8080 --brokers 127.0.0.1:9092 --keys keys.yaml"
)]
pub struct GatewayArgs {
    #[command(subcommand)]
    command: Option<GatewayCommand>,
    /// Address to listen on; port 0 picks a free port (the address is printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    broker: BrokerArgs,
    /// API keys file (YAML list of {source, sha256}); make keys with `pitgun gateway keygen`.
    #[arg(long, env = "PITGUN_KEYS", required = true)]
    keys: Option<PathBuf>,
    /// The dictionary envelopes are checked against (producer versions and their channels).
    #[arg(long, default_value = "manifests/dictionary/racing.yaml")]
    dictionary: PathBuf,
    /// Folder with `pipelines/` and `bundles/` served under /manifests (skipped if missing).
    #[arg(long, default_value = "manifests")]
    manifests: PathBuf,
    /// Refuse events whose time is further than this ahead of the gateway's clock.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    max_future_skew: Duration,
    /// Largest request body, before and after decompression (bytes; KiB/MiB suffixes allowed).
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    max_body: usize,
    /// Largest total size of a request's headers (1KiB to 256KiB); larger gets 431. Whatever
    /// this says, a head past about 400 KB or with more than 100 headers is refused by the HTTP
    /// layer, with 431 and no body.
    #[arg(long, default_value = "16KiB", value_parser = parse_header_size)]
    max_header_size: usize,
    /// Most envelopes in one request.
    #[arg(long, default_value_t = 5000)]
    max_batch: usize,
    /// Largest envelope (one item's JSON, bytes; KiB suffix allowed): a larger item is refused by
    /// its index as `too_large` and the rest of the batch is stored. At most 900KiB, so that the
    /// item's dead letter always fits a Kafka message (1 MB by default).
    #[arg(long, default_value = "256KiB", value_parser = parse_size)]
    max_item_size: usize,
    /// Request body bytes read or handled at once (bytes; KiB/MiB suffixes allowed): each request
    /// counts the bytes it has sent (not the Content-Length it declares), plus what a compressed
    /// one decodes to, until it is answered; beyond this a request gets 503 with Retry-After, at
    /// once if its Content-Length does not fit, else while its body arrives. Bounds the
    /// gateway's memory (about 3x this at most); at least --max-body.
    #[arg(long, default_value = "96MiB", value_parser = parse_size)]
    max_in_flight: usize,
    /// How long a request's body may take to arrive; a slower one gets 408 and frees its share of
    /// --max-in-flight.
    #[arg(long, default_value = "30s", value_parser = crate::duration_arg::positive)]
    body_timeout: Duration,
    /// How long a request's head (request line and headers) may take to arrive, counted from
    /// when the connection waits for it: a head sent a few bytes at a time is cut off, and a
    /// kept-alive connection idle this long is closed. Keep it longer than the idle timeout of a
    /// proxy or load balancer in front (60 s for nginx and AWS ALB), or it may reuse a
    /// connection just as the gateway closes it and answer 502.
    #[arg(long, default_value = "75s", value_parser = crate::duration_arg::positive)]
    header_timeout: Duration,
    /// After SIGTERM or SIGINT, how long requests in progress may take before their connections
    /// are closed and the producer is flushed (keep it and --ack-timeout within the pod's grace
    /// period).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// How long the broker has to acknowledge a batch before the answer is 503.
    #[arg(long, default_value = "5s", value_parser = crate::duration_arg::positive)]
    ack_timeout: Duration,
    /// `Retry-After` of a 503, in seconds (1 to 3600: 0 would tell clients to resend at once).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    retry_after: u64,
    /// Compression of produced batches: lz4, zstd, gzip, snappy or none.
    #[arg(long, default_value = "lz4")]
    compression: String,
    /// How often /readyz asks the broker for metadata.
    #[arg(long, default_value = "2s", value_parser = crate::duration_arg::positive)]
    readiness_interval: Duration,
    /// How often the keys file is checked for changes; a changed file is read again, so a key
    /// is added or revoked without a restart (SIGHUP reloads it at once). A broken new version
    /// is logged and the keys in force stay.
    #[arg(long, default_value = "5s", value_parser = crate::duration_arg::positive)]
    keys_check_interval: Duration,
    /// Requests per second one API key (or one browser session's token) may make, in bursts of
    /// as many; beyond, 429 with Retry-After. 0: no limit.
    #[arg(long, default_value_t = 1000)]
    requests_per_second_per_credential: u32,
    /// Requests without a valid credential one client address may make per minute; beyond, 429
    /// with Retry-After instead of 401.
    #[arg(long, default_value_t = NonZeroU32::new(60).expect("non-zero"))]
    unauthenticated_per_minute: NonZeroU32,
    /// Behind one trusted proxy (an ingress, a load balancer): count addresses by the entry it
    /// appends to X-Forwarded-For, not by the proxy. Never set it when clients reach the gateway
    /// directly: they could then pick their own address.
    #[arg(long)]
    trust_forwarded_for: bool,
    /// Accept browser session tokens signed with this secret (the file `pitgun api` issues them
    /// with; make one with `pitgun gateway session-secret --out FILE`). A token sends envelopes
    /// of its one session and source only. Without it, session tokens get 401.
    #[arg(long, env = "PITGUN_SESSION_SECRET_FILE")]
    session_secret_file: Option<PathBuf>,
    /// An origin browsers may post envelopes from (`http(s)://host[:port]`, matched as browsers
    /// send it: case and a default port do not matter), e.g. the page serving the game; repeat or
    /// separate with commas. Preflights from other origins get no CORS headers.
    #[arg(long = "cors-origin", env = "PITGUN_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
}

#[derive(Subcommand)]
enum GatewayCommand {
    /// Make a new API key for a source: prints the token once, appends its SHA-256 to the keys file.
    Keygen(KeygenArgs),
    /// Make the secret browser session tokens are signed with (32 random bytes, hex, mode 600),
    /// for `pitgun api` and `pitgun gateway --session-secret-file`. Refuses to overwrite.
    SessionSecret(SessionSecretArgs),
}

#[derive(Args)]
struct SessionSecretArgs {
    /// The file to create.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct KeygenArgs {
    /// The `source.id` the key may send for, e.g. `pitgun-web`.
    #[arg(long)]
    source: String,
    /// Keys file to append to (created if missing).
    #[arg(long)]
    keys: PathBuf,
}

fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: usize = n.parse().map_err(|_| format!("{text:?} is not a size like 8MiB or 1048576"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        u => return Err(format!("unknown size unit {u:?} (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("{text:?} is too large"))
}

/// `--max-header-size`: at least a real client's headers, and well within hyper's head buffer
/// (about 400 KB, request line included), past which hyper answers before the gateway can.
fn parse_header_size(text: &str) -> Result<usize, String> {
    const RANGE: std::ops::RangeInclusive<usize> = (1 << 10)..=(256 << 10);
    parse_size(text).and_then(|n| if RANGE.contains(&n) { Ok(n) } else { Err(format!("{n} bytes is not within 1KiB to 256KiB")) })
}

pub fn run_cmd(args: GatewayArgs) -> Result<ExitCode> {
    if let Some(GatewayCommand::Keygen(k)) = args.command {
        if let Some(problem) = pitgun_codec::rules::producer_id_problem(&k.source) {
            bail!("--source {problem}");
        }
        let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let token = pitgun_ingest::keys::append_new_key(&k.keys, &k.source, &created)?;
        say!("{token}")?;
        eprintln!("key for source {} added to {} (only its SHA-256 is stored; keep the token, it is not shown again)", k.source, k.keys.display());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(GatewayCommand::SessionSecret(a)) = args.command {
        pitgun_runtime::browser::write_new_secret(&a.out).map_err(anyhow::Error::msg)?;
        eprintln!("session secret written to {} (mode 600); give the same file to `pitgun api` and `pitgun gateway`", a.out.display());
        return Ok(ExitCode::SUCCESS);
    }
    init_logging();
    if args.max_batch == 0 || args.max_body == 0 || args.max_item_size == 0 {
        bail!("--max-batch, --max-body and --max-item-size must be positive");
    }
    if args.max_in_flight < args.max_body || args.max_in_flight > u32::MAX as usize {
        bail!("--max-in-flight {} must be at least --max-body ({}) and less than 4GiB", args.max_in_flight, args.max_body);
    }
    if args.max_item_size > MAX_ITEM_SIZE {
        bail!(
            "--max-item-size {} is over {MAX_ITEM_SIZE} bytes: a refused item is kept in the dead-letter topic, and Kafka takes messages of 1 MB by default",
            args.max_item_size
        );
    }
    run(Settings {
        listen: args.listen,
        broker: args.broker.broker(),
        keys: args.keys,
        dictionary: args.dictionary,
        manifests: Some(args.manifests),
        max_future_skew: args.max_future_skew,
        limits: Limits {
            max_body: args.max_body,
            max_batch: args.max_batch,
            max_item: args.max_item_size,
            max_in_flight: args.max_in_flight,
            body_timeout: args.body_timeout,
            retry_after_secs: args.retry_after,
            max_header_bytes: args.max_header_size,
            per_credential_per_second: NonZeroU32::new(args.requests_per_second_per_credential),
            unauthenticated_per_minute: args.unauthenticated_per_minute,
            trust_forwarded_for: args.trust_forwarded_for,
        },
        ack_timeout: args.ack_timeout,
        compression: args.compression,
        readiness_interval: args.readiness_interval,
        keys_check_interval: args.keys_check_interval,
        session_secret: args.session_secret_file,
        cors_origins: args.cors_origins,
        drain_timeout: args.drain_timeout,
        header_timeout: args.header_timeout,
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(super::parse_size("512"), Ok(512));
        assert_eq!(super::parse_size("64 KiB"), Ok(64 << 10));
        assert!(super::parse_size("8 parsecs").is_err());
    }
}
