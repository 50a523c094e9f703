//! `pitgun replay`: the engine over dataset files — the canonical, embedded way to run a manifest.
//!
//! Sessions are independent, so with `--threads N` the reader routes each record by a hash of its
//! session id to one of N shards, each with its own engine, in file order. A session's events thus
//! reach its engine in the same order whatever N is, and the merged output — final rows in
//! canonical order — is byte-identical for every thread count.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use pitgun_contracts::analysis::{AnalysisContract, ColumnType};
use pitgun_engine::row::{final_rows, LastVersions};
use pitgun_engine::{EventNote, Output, Row, Runner, Stats};

use pitgun_codec::dataset::{for_each_chunk, Chunk, Format};
use pitgun_codec::session::session_id;
use pitgun_codec::Record;
use crate::project::Project;

/// Arguments of `pitgun replay`.
#[derive(Args)]
#[command(after_help = "Output: the last version of every row, ordered by key, window start and row_id; \
floats in shortest round-trip form; timestamps RFC 3339 UTC with microseconds. Byte-identical \
between runs and thread counts.\n\nExample:\n  pitgun replay --manifest manifests/pipelines/lap-performance.v1.yaml \
--input samples/racing-small.ndjson")]
pub struct ReplayArgs {
    /// Pipeline manifest (YAML or JSON).
    #[arg(long, short, required_unless_present = "bundle")]
    manifest: Option<PathBuf>,
    /// Bundle manifest to take the pipeline from (with --pipeline); every pin is checked.
    #[arg(long, requires = "pipeline", conflicts_with = "manifest")]
    bundle: Option<PathBuf>,
    /// Pipeline name inside the bundle.
    #[arg(long)]
    pipeline: Option<String>,
    /// Dictionary file (default: manifests/dictionary/<pinned name>.yaml beside the manifest).
    #[arg(long)]
    dictionary: Option<PathBuf>,
    /// Dataset files: .ndjson/.jsonl/.json (optionally .gz/.zst) or .avro; read in order.
    #[arg(long, short, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Where to write rows (default: standard output).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Row format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Ndjson)]
    format: OutputFormat,
    /// Write every emission in order (per session) instead of the final rows.
    #[arg(long)]
    changelog: bool,
    /// Write events too late for any window here (JSON lines with the reason).
    #[arg(long)]
    late: Option<PathBuf>,
    /// Write refused records here (JSON lines: file, line, reason, detail).
    #[arg(long)]
    rejected: Option<PathBuf>,
    /// Stop at the first refused record (exit code 1).
    #[arg(long)]
    strict: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bar and no summary.
    #[arg(long, short)]
    quiet: bool,
}

/// Row output formats.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    /// One JSON object per line, columns in contract order.
    Ndjson,
    /// CSV with a header of the contract's columns.
    Csv,
}

/// A refused record, located in its file.
struct BadRecord {
    file: usize,
    line: u64,
    reason: &'static str,
    detail: String,
}

/// Everything one shard produced.
#[derive(Default)]
struct ShardResult {
    stats: Stats,
    rows: LastVersions<String, Row>,
    changelog: Vec<Row>,
    notes_late: Vec<EventNote>,
    notes_rejected: Vec<EventNote>,
    bad: Vec<BadRecord>,
    records: u64,
}

/// Records between two looks for ended sessions to close.
const CLOSE_EVERY: u64 = 4096;

struct Shard {
    runner: Option<Runner>,
    out: Vec<Output>,
    result: ShardResult,
    changelog: bool,
    me: usize,
    shards: usize,
    strict: bool,
    records: u64,
}

impl Shard {
    /// Processes this shard's records of a chunk; false when `--strict` should stop the run.
    fn take(&mut self, chunk: &Chunk) -> bool {
        let mut keep_going = true;
        chunk.for_each(|line, record| {
            if !keep_going || (self.shards > 1 && route(record, self.shards) != self.me) {
                return;
            }
            self.records += 1;
            let runner = self.runner.as_mut().expect("runner built before the first chunk");
            // Replay's clock is the event time read so far: an ended session is closed once it
            // is idle_timeout behind (the stream waits out_of_orderness of wall time), so a
            // long file does not hold every ended session until its end.
            let now = runner.newest_event_time().max(0);
            if self.records % CLOSE_EVERY == 0 {
                runner.engine_mut().close_ended(now, &mut self.out);
            }
            if let Err(e) = runner.feed(record, now, &mut self.out) {
                self.result.bad.push(BadRecord { file: chunk.file as usize, line, reason: e.reason.as_str(), detail: e.detail });
                keep_going = !self.strict;
            }
            self.drain();
        });
        keep_going
    }

    fn drain(&mut self) {
        for o in self.out.drain(..) {
            match o {
                Output::Row(r) if self.changelog => self.result.changelog.push(r),
                Output::Row(r) => {
                    self.result.rows.keep(r.row_id.clone(), r);
                }
                Output::Late(n) => self.result.notes_late.push(n),
                Output::Rejected(n) => self.result.notes_rejected.push(n),
            }
        }
    }

    fn finish(mut self) -> ShardResult {
        let mut runner = self.runner.take().expect("runner");
        let now = runner.newest_event_time().max(0);
        runner.finish(now, &mut self.out);
        self.drain();
        self.result.stats = runner.engine().stats().clone();
        self.result.records = self.records;
        self.result
    }
}

pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let project = match (&args.manifest, &args.bundle) {
        (Some(m), _) => Project::load(m, args.dictionary.as_deref())?,
        (None, Some(b)) => Project::from_bundle(b, args.pipeline.as_deref().expect("clap requires it"))?,
        _ => bail!("give --manifest or --bundle with --pipeline"),
    };
    let project = Arc::new(project);
    let plan = project.compile()?;
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    let contract = plan.contract.clone();
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let total_bytes: u64 = args.input.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    for p in &args.input {
        Format::of(p)?;
        if !p.exists() {
            bail!("{}: no such file", p.display());
        }
    }

    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let bar = if show_progress {
        let bar = indicatif::ProgressBar::new(total_bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} replay [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("template")
                .progress_chars("=> "),
        );
        Some(bar)
    } else {
        None
    };
    let bytes_read = AtomicU64::new(0);
    let progress = |n: u64| {
        bytes_read.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &bar {
            b.inc(n);
        }
    };

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut results: Vec<ShardResult> = Vec::new();
    let (changelog, strict) = (args.changelog, args.strict);
    let new_shard = move |me: usize, runner: Runner| Shard {
        runner: Some(runner),
        out: Vec::new(),
        result: ShardResult::default(),
        changelog,
        me,
        shards: threads,
        strict,
        records: 0,
    };

    if threads == 1 {
        let mut shard = new_shard(0, Runner::new(plan));
        for (fi, path) in args.input.iter().enumerate() {
            for_each_chunk(path, fi as u32, &progress, |chunk| Ok::<_, anyhow::Error>(shard.take(&chunk)))?;
        }
        results.push(shard.finish());
    } else {
        // Every worker sees every chunk and keeps the records of its own sessions: the reader does
        // no per-record work, and each session's events reach one engine in file order.
        let (senders, handles): (Vec<_>, Vec<_>) = (0..threads)
            .map(|me| {
                let (tx, rx) = crossbeam_channel::bounded::<Arc<Chunk>>(8);
                let project = project.clone();
                let stop = stop.clone();
                let handle = std::thread::spawn(move || -> Result<ShardResult> {
                    let mut shard = new_shard(me, Runner::new(project.compile()?));
                    for chunk in rx {
                        if !shard.take(&chunk) {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Ok(shard.finish())
                });
                (tx, handle)
            })
            .unzip();
        drop(plan);
        for (fi, path) in args.input.iter().enumerate() {
            for_each_chunk(path, fi as u32, &progress, |chunk| {
                let chunk = Arc::new(chunk);
                for tx in &senders {
                    tx.send(chunk.clone()).context("a replay worker stopped")?;
                }
                Ok::<_, anyhow::Error>(!stop.load(Ordering::Relaxed))
            })?;
        }
        drop(senders);
        for h in handles {
            results.push(h.join().map_err(|_| anyhow::anyhow!("a replay worker panicked"))??);
        }
    }
    let records: u64 = results.iter().map(|r| r.records).sum();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let elapsed = started.elapsed();

    // Merge shards.
    let mut stats = Stats::default();
    let mut rows: Vec<Row> = Vec::new();
    let mut versions: Vec<Row> = Vec::new();
    let mut late = Vec::new();
    let mut rejected_notes = Vec::new();
    let mut bad = Vec::new();
    for r in results {
        stats.merge(&r.stats);
        if args.changelog {
            rows.extend(r.changelog);
        } else {
            versions.extend(r.rows.into_values());
        }
        late.extend(r.notes_late);
        rejected_notes.extend(r.notes_rejected);
        bad.extend(r.bad);
    }
    if args.changelog {
        rows.sort_by(|a, b| (&a.key[0], a.emission).cmp(&(&b.key[0], b.emission)));
    } else {
        rows = final_rows(versions);
    }
    let note_order = |a: &EventNote, b: &EventNote| (&a.session_id, a.seq, &a.event_id).cmp(&(&b.session_id, b.seq, &b.event_id));
    late.sort_by(note_order);
    rejected_notes.sort_by(note_order);
    bad.sort_by_key(|b| (b.file, b.line));

    write_rows(&args, &contract, &rows)?;
    if let Some(path) = &args.late {
        let mut w = BufWriter::new(File::create(path).with_context(|| format!("cannot create {}", path.display()))?);
        for n in &late {
            writeln!(w, "{}", n.to_json())?;
        }
        w.flush()?;
    }
    if let Some(path) = &args.rejected {
        let mut w = BufWriter::new(File::create(path).with_context(|| format!("cannot create {}", path.display()))?);
        for b in &bad {
            let line = serde_json::json!({"file": args.input[b.file].display().to_string(), "line": b.line, "reason": b.reason, "detail": b.detail});
            writeln!(w, "{line}")?;
        }
        for n in &rejected_notes {
            writeln!(w, "{}", n.to_json())?;
        }
        w.flush()?;
    }
    if !args.quiet {
        for b in bad.iter().take(5) {
            eprintln!("{}:{}: {}: {}", args.input[b.file].display(), b.line, b.reason, b.detail);
        }
        if bad.len() > 5 {
            let hint = if args.rejected.is_some() { "" } else { " (write them all with --rejected FILE)" };
            eprintln!("… and {} more refused records{hint}", bad.len() - 5);
        }
        summary(&stats, records, rows.len(), bytes_read.load(Ordering::Relaxed), elapsed, threads);
    }
    if args.strict && (!bad.is_empty() || stats.rejected_total() > 0) {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Routes a record to a shard by its session id; one without any goes to shard 0 (it will be
/// refused there).
fn route(record: Record<'_>, shards: usize) -> usize {
    session_id(record).map_or(0, |id| (xxhash_rust::xxh3::xxh3_64(&id) % shards as u64) as usize)
}

fn write_rows(args: &ReplayArgs, contract: &AnalysisContract, rows: &[Row]) -> Result<()> {
    let sink: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = BufWriter::with_capacity(1 << 20, sink);
    match args.format {
        OutputFormat::Ndjson => {
            for r in rows {
                w.write_all(r.json.as_bytes())?;
                w.write_all(b"\n")?;
            }
        }
        OutputFormat::Csv => {
            let names: Vec<&str> = contract.columns.iter().map(|c| c.name.as_str()).collect();
            writeln!(w, "{}", names.join(","))?;
            for r in rows {
                let value: serde_json::Value = serde_json::from_str(&r.json)?;
                let cells: Vec<String> = contract
                    .columns
                    .iter()
                    .map(|c| csv_cell(&value[&c.name], c.column_type))
                    .collect();
                writeln!(w, "{}", cells.join(","))?;
            }
        }
    }
    w.flush()?;
    Ok(())
}

fn csv_cell(v: &serde_json::Value, t: ColumnType) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) if t == ColumnType::String && (s.contains([',', '"', '\n', '\r'])) => {
            format!("\"{}\"", s.replace('"', "\"\""))
        }
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn summary(stats: &Stats, records: u64, rows: usize, bytes: u64, elapsed: std::time::Duration, threads: usize) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    eprintln!("replay: {records} records in {:.2} s on {threads} thread(s): {:.0} events/s, {:.1} MB/s", secs, records as f64 / secs, bytes as f64 / 1e6 / secs);
    eprintln!(
        "  accepted {}  filtered {}  duplicates {}  late (updated a window) {}  late (to late output) {}",
        stats.accepted, stats.filtered, stats.duplicates, stats.late_updates, stats.late
    );
    let rejected = stats.rejected_by_reason();
    if rejected.is_empty() {
        eprintln!("  rejected 0");
    } else {
        let parts: Vec<String> = rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
        eprintln!("  rejected {}: {}", stats.rejected_total(), parts.join(", "));
    }
    eprintln!(
        "  sessions {}  missing events (sequence gaps) {}  unknown channels dropped {}",
        stats.sessions_opened, stats.missing_events, stats.unknown_channels
    );
    eprintln!("  windows emitted {}  row emissions {}  rows written {rows}", stats.windows_emitted, stats.rows_emitted);
}
