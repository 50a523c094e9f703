//! `pitgun-bench post`: a load generator for the gateway that costs almost nothing per envelope.
//!
//! `pitgun simulate --target` computes every sample's physics and serialises it while it posts,
//! about 3 CPU seconds per million envelopes on the machine the gateway runs on; on two cores
//! that bounds the gateway's figure before the gateway does. This reads a dataset `simulate`
//! wrote beforehand, builds every batch before the clock starts (500 envelopes of one source,
//! a session's envelopes always on the same connection and in file order, as `simulate` sends
//! them), and then only posts: what is measured is the gateway, as with clients on other hosts.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use pitgun_ingest::client::{GatewayClient, Outcome};

/// Arguments of `pitgun-bench post`.
#[derive(Args)]
pub struct PostArgs {
    /// Gateway base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    target: String,
    /// NDJSON dataset (as `pitgun simulate --output` writes it).
    #[arg(long)]
    input: PathBuf,
    /// API keys, one `source=token` per line (as for `pitgun simulate --api-keys`).
    #[arg(long)]
    api_keys: PathBuf,
    /// Envelopes per batch (one source per batch).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Keep-alive HTTP/1.1 connections, each sending its batches one after another.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

struct Batch {
    source: String,
    body: Vec<u8>,
}

/// Splits the dataset into each connection's batches, in the order they are sent.
fn batches(text: &str, batch: usize, concurrency: usize) -> Result<Vec<Vec<Batch>>> {
    let mut out: Vec<Vec<Batch>> = (0..concurrency).map(|_| Vec::new()).collect();
    let mut pending: Vec<HashMap<String, (Vec<u8>, usize)>> = (0..concurrency).map(|_| HashMap::new()).collect();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let view = pitgun_codec::json::decode(line).with_context(|| format!("line {}: not an envelope", i + 1))?;
        // Any fixed hash keeps a session on one connection, which is all the order needs.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        view.session_id.hash(&mut h);
        let conn = (h.finish() % concurrency as u64) as usize;
        let (body, items) = pending[conn].entry(view.source.id.to_string()).or_default();
        body.extend_from_slice(line.as_bytes());
        body.push(b'\n');
        *items += 1;
        if *items == batch {
            out[conn].push(Batch { source: view.source.id.to_string(), body: std::mem::take(body) });
            *items = 0;
        }
    }
    for (conn, left) in pending.into_iter().enumerate() {
        let mut left: Vec<_> = left.into_iter().filter(|(_, (_, n))| *n > 0).collect();
        left.sort_by(|a, b| a.0.cmp(&b.0));
        out[conn].extend(left.into_iter().map(|(source, (body, _))| Batch { source, body }));
    }
    Ok(out)
}

/// Posts the dataset and prints envelopes accepted per second as JSON. Any refused envelope
/// fails the run: the figure is for a clean stream.
pub fn run(args: PostArgs) -> Result<ExitCode> {
    if args.batch == 0 || args.concurrency == 0 {
        bail!("--batch and --concurrency must be positive");
    }
    let keys = std::fs::read_to_string(&args.api_keys).with_context(|| format!("cannot read {}", args.api_keys.display()))?;
    let tokens: HashMap<String, String> =
        keys.lines().filter_map(|l| l.split_once('=')).map(|(s, t)| (s.trim().to_string(), t.trim().to_string())).collect();
    let text = std::fs::read_to_string(&args.input).with_context(|| format!("cannot read {}", args.input.display()))?;
    let plan = batches(&text, args.batch, args.concurrency)?;
    drop(text);
    let mut work = Vec::new();
    for conn in plan {
        let mut sends = Vec::with_capacity(conn.len());
        for b in conn {
            let token = tokens.get(&b.source).with_context(|| format!("no API key for source {:?} in {}", b.source, args.api_keys.display()))?;
            sends.push((token.clone(), axum::body::Bytes::from(b.body)));
        }
        work.push(sends);
    }
    let batches: usize = work.iter().map(Vec::len).sum();
    // One runtime thread: posting prepared bodies is light, and the gateway needs the cores.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let started = Instant::now();
    let total = rt.block_on(async {
        let mut tasks = Vec::new();
        for sends in work {
            let client = GatewayClient::new(&args.target, Duration::from_secs(60))?;
            tasks.push(tokio::spawn(async move {
                let mut total = Outcome::default();
                for (token, body) in sends {
                    total += client.post_ndjson(&token, body).await?;
                }
                anyhow::Ok(total)
            }));
        }
        let mut total = Outcome::default();
        for t in tasks {
            total += t.await??;
        }
        anyhow::Ok(total)
    })?;
    let secs = started.elapsed().as_secs_f64();
    if total.rejected > 0 {
        bail!("the gateway refused {} envelopes: the figure is for a clean stream", total.rejected);
    }
    println!(
        "{}",
        serde_json::json!({"batches": batches, "connections": args.concurrency, "accepted": total.accepted, "resends": total.resends,
            "seconds": secs, "envelopes_per_second": total.accepted as f64 / secs})
    );
    Ok(ExitCode::SUCCESS)
}
