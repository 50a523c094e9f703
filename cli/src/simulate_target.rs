//! `pitgun simulate --target URL`: the simulated stream posted to a gateway.
//!
//! Sessions are spread over `--concurrency` connections by a hash of their id, and a connection
//! sends its batches one after another, so each session's events arrive in order. A batch holds
//! one source's envelopes only (a key sends for one source) and is resent as a whole on 503.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pitgun_contracts::envelope::Envelope;
use pitgun_ingest::client::{GatewayClient, Outcome};
use tokio::sync::mpsc;

/// Where and how to post.
pub struct TargetOptions {
    /// Gateway base URL.
    pub url: String,
    /// Envelopes per batch.
    pub batch: usize,
    /// Connections.
    pub concurrency: usize,
    /// Envelopes per second (None: as fast as the gateway answers).
    pub rate: Option<f64>,
    /// Token per source.
    pub tokens: HashMap<String, String>,
    /// How long one batch may be resent before the run fails.
    pub retry_for: Duration,
}

struct Batch {
    token: String,
    body: Vec<u8>,
    items: usize,
}

#[derive(Default)]
struct Pending {
    body: Vec<u8>,
    items: usize,
}

/// Collects the stream into per-connection, per-source batches and posts them.
pub struct Poster {
    opts: TargetOptions,
    rt: tokio::runtime::Runtime,
    senders: Vec<mpsc::Sender<Batch>>,
    workers: Vec<tokio::task::JoinHandle<Result<Outcome>>>,
    pending: Vec<HashMap<String, Pending>>,
    last: Option<(usize, String)>,
    started: Instant,
    envelopes: u64,
    batches: u64,
}

impl Poster {
    /// Opens `concurrency` connections.
    pub fn start(opts: TargetOptions) -> Result<Poster> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..opts.concurrency {
            let (tx, mut rx) = mpsc::channel::<Batch>(4);
            let client = GatewayClient::new(&opts.url, opts.retry_for)?;
            senders.push(tx);
            workers.push(rt.spawn(async move {
                let mut total = Outcome::default();
                while let Some(b) = rx.recv().await {
                    let o = client.post_ndjson(&b.token, b.body.into()).await.with_context(|| format!("a batch of {} envelopes", b.items))?;
                    // Resends are counted in envelopes: each may arrive twice.
                    total += Outcome { resends: o.resends * b.items as u64, ..o };
                }
                Ok(total)
            }));
        }
        let pending = (0..opts.concurrency).map(|_| HashMap::new()).collect();
        Ok(Poster { opts, rt, senders, workers, pending, last: None, started: Instant::now(), envelopes: 0, batches: 0 })
    }

    fn push_line(&mut self, conn: usize, source: &str, line: &[u8]) -> Result<()> {
        let p = self.pending[conn].entry(source.to_string()).or_default();
        p.body.extend_from_slice(line);
        p.body.push(b'\n');
        p.items += 1;
        if p.items >= self.opts.batch {
            self.flush(conn, source)?;
        }
        Ok(())
    }

    fn flush(&mut self, conn: usize, source: &str) -> Result<()> {
        let Some(p) = self.pending[conn].get_mut(source).filter(|p| p.items > 0) else {
            return Ok(());
        };
        let token = self
            .opts
            .tokens
            .get(source)
            .with_context(|| format!("no API key for source {source:?}: pass --api-key {source}=TOKEN or --api-keys FILE"))?
            .clone();
        let batch = Batch { token, body: std::mem::take(&mut p.body), items: std::mem::take(&mut p.items) };
        self.batches += 1;
        if self.senders[conn].blocking_send(batch).is_err() {
            // The worker stopped on an error; `finish` reports it.
            return self.fail_fast();
        }
        Ok(())
    }

    fn fail_fast(&mut self) -> Result<()> {
        self.senders.clear();
        let workers = std::mem::take(&mut self.workers);
        for w in workers {
            self.rt.block_on(w).context("a connection task panicked")??;
        }
        bail!("a connection stopped")
    }

    /// Adds one envelope (`line` is its JSON).
    pub fn envelope(&mut self, env: &Envelope, line: &[u8]) -> Result<()> {
        let conn = (xxhash_rust::xxh3::xxh3_64(env.session_id.as_bytes()) % self.opts.concurrency as u64) as usize;
        self.last = Some((conn, env.source.id.clone()));
        self.pace();
        self.envelopes += 1;
        self.push_line(conn, &env.source.id, line)
    }

    /// Adds an undecodable line; it rides with the previous envelope's session.
    pub fn malformed(&mut self, line: &str) -> Result<()> {
        let Some((conn, source)) = self.last.clone() else { return Ok(()) };
        self.envelopes += 1;
        self.push_line(conn, &source, line.as_bytes())
    }

    fn pace(&self) {
        if let Some(rate) = self.opts.rate {
            let due = Duration::from_secs_f64(self.envelopes as f64 / rate);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }

    /// Sends what is left, waits for every answer and prints the summary.
    pub fn finish(mut self, quiet: bool) -> Result<()> {
        for conn in 0..self.pending.len() {
            let sources: Vec<String> = self.pending[conn].keys().cloned().collect();
            for s in sources {
                self.flush(conn, &s)?;
            }
        }
        self.senders.clear();
        let mut total = Outcome::default();
        let mut first_error = None;
        for w in std::mem::take(&mut self.workers) {
            match self.rt.block_on(w).context("a connection task panicked")? {
                Ok(o) => total += o,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let secs = self.started.elapsed().as_secs_f64();
        if !quiet {
            eprintln!(
                "simulate: posted {} records in {} batches over {} connections to {}: accepted {}, rejected {}, resent {} (possible duplicates, dropped by event id); {:.0} envelopes/s accepted in {secs:.2} s",
                self.envelopes,
                self.batches,
                self.opts.concurrency,
                self.opts.url,
                total.accepted,
                total.rejected,
                total.resends,
                total.accepted as f64 / secs.max(1e-9)
            );
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
