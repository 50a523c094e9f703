//! `pitgun replay`: the engine over dataset files — the canonical, embedded way to run a manifest.
//! The driver is the `pitgun-replay` library; this command loads the project, shows progress and
//! writes what it returns (rows in canonical order: byte-identical for every thread count).

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use pitgun_codec::dataset::Format;
use pitgun_contracts::analysis::{AnalysisContract, ColumnType};
use pitgun_engine::{Row, Stats};
use pitgun_replay::{Options, Outcome, ReplayError};

use crate::paths::write_whole;
use crate::project::Project;

/// Arguments of `pitgun replay`.
#[derive(Args)]
#[command(after_help = "Output: the last version of every row, ordered by key, window start and row_id; \
floats in shortest round-trip form; timestamps RFC 3339 UTC with microseconds. Byte-identical \
between runs and thread counts.\n\nExample:\n  pitgun replay --manifest manifests/pipelines/lap-performance.v1.yaml \
--input samples/racing-small.ndjson.zst")]
pub struct ReplayArgs {
    /// Pipeline manifest (YAML or JSON).
    #[arg(long, short, required_unless_present = "bundle")]
    manifest: Option<PathBuf>,
    /// Bundle manifest to take the pipeline from (with --pipeline); every pin is checked.
    #[arg(long, requires = "pipeline", conflicts_with = "manifest")]
    bundle: Option<PathBuf>,
    /// Pipeline name inside the bundle.
    #[arg(long, conflicts_with = "manifest")]
    pipeline: Option<String>,
    /// Dictionary file (default: <name>.yaml, the name the manifest pins, in ../dictionary/ from
    /// the manifest's folder, else in that folder). With --bundle, the bundle's pinned
    /// dictionary is used: giving both is refused.
    #[arg(long, conflicts_with = "bundle")]
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
    /// Write events too late for any window here (JSON lines: file, line, session_id, event_id,
    /// seq, time, reason, detail).
    #[arg(long)]
    late: Option<PathBuf>,
    /// Write refused records here (JSON lines: file, line, reason, detail; for events the
    /// engine rejected also session_id, event_id, seq and time). A run that refused every
    /// record it read writes only this, and exits 1.
    #[arg(long)]
    rejected: Option<PathBuf>,
    /// Refuse the whole run at the first refused record (or event the engine rejected): it is
    /// named, nothing is written, exit code 1. The same answer for any --threads.
    #[arg(long)]
    strict: bool,
    /// Worker threads, 1 to 256 (default: all cores, at most 256).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=pitgun_replay::MAX_THREADS as u64))]
    threads: Option<usize>,
    /// No progress bar and no summary. The first refusals (records refused, events the engine
    /// rejected) are still named on stderr.
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

pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    let project = match (&args.manifest, &args.bundle) {
        (Some(m), _) => Project::load(m, args.dictionary.as_deref())?,
        (None, Some(b)) => Project::from_bundle(b, args.pipeline.as_deref().expect("clap requires it"))?,
        _ => bail!("give --manifest or --bundle with --pipeline"),
    };
    let plan = project.compile()?;
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    let contract = plan.contract.clone();
    drop(plan);
    let threads =
        args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).clamp(1, pitgun_replay::MAX_THREADS);
    let total_bytes: u64 = args.input.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    for p in &args.input {
        Format::of(p)?;
        if !p.exists() {
            bail!("{}: no such file", p.display());
        }
    }
    let read = [("--manifest", &args.manifest), ("--dictionary", &args.dictionary), ("--bundle", &args.bundle)];
    let inputs: Vec<(&str, &std::path::Path)> = args
        .input
        .iter()
        .map(|p| ("--input", p.as_path()))
        .chain(read.iter().filter_map(|(flag, p)| p.as_deref().map(|p| (*flag, p))))
        .chain(project.files.iter().map(|(what, p)| (*what, p.as_path())))
        .collect();
    let outputs = [("--output", &args.output), ("--late", &args.late), ("--rejected", &args.rejected)];
    let outputs: Vec<(&str, &std::path::Path)> = outputs.iter().filter_map(|(flag, p)| p.as_deref().map(|p| (*flag, p))).collect();
    crate::paths::distinct(&inputs, &outputs)?;

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
    let options = Options { threads, changelog: args.changelog, strict: args.strict };
    let compile = || project.compile();
    let compile: &(dyn Fn() -> Result<pitgun_engine::Plan> + Sync) = &compile;
    let outcome = pitgun_replay::replay(compile, &args.input, options, &progress);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let outcome = match outcome {
        Err(refused @ ReplayError::Refused { .. }) => return Ok(strict_refusal(&refused.to_string())),
        other => other?,
    };
    let elapsed = started.elapsed();
    let Outcome { rows, late, rejected: rejected_notes, bad, stats, records } = outcome;
    if args.strict && stats.rejected_total() > 0 {
        // The first in file order, as for refused records (the notes are in session order).
        let first = rejected_notes.iter().map(|n| (pitgun_replay::location(n), n)).min_by_key(|(at, _)| at.unwrap_or((usize::MAX, u64::MAX)));
        let what = match first {
            Some((Some((file, line)), n)) => format!("{}:{line}: an event the engine rejected: {}", args.input[file].display(), n.to_json()),
            Some((None, n)) => format!("an event the engine rejected: {}", n.to_json()),
            None => format!("events the engine rejected: {:?}", stats.rejected_by_reason()),
        };
        return Ok(strict_refusal(&what));
    }

    // A run that refused every record read nothing: its empty rows would pass for an answer (the
    // wrong file, format or dictionary). Only the refusals are written, to say why. A resent copy
    // of a refused event counts as a duplicate (its id was seen), not as a refusal.
    let reached_a_window = stats.accepted + stats.late_updates + stats.late > 0;
    let everything_refused = !reached_a_window && stats.rejected_total() > 0 && stats.rejected_total() + stats.duplicates >= records;
    if !everything_refused {
        write_rows(&args, &contract, &rows)?;
        if let Some(path) = &args.late {
            write_whole(path, |w| {
                for n in &late {
                    writeln!(w, "{}", located(n, &args.input))?;
                }
                Ok(())
            })?;
        }
    }
    if let Some(path) = &args.rejected {
        write_whole(path, |w| {
            for b in &bad {
                let line =
                    serde_json::json!({"file": args.input[b.file].display().to_string(), "line": b.line, "reason": b.reason, "detail": b.detail});
                writeln!(w, "{line}")?;
            }
            for n in &rejected_notes {
                writeln!(w, "{}", located(n, &args.input))?;
            }
            Ok(())
        })?;
    }
    // Refusals are named even with --quiet: they are the run's warnings, not its chatter. Records
    // refused before they became events and events the engine rejected are one list, in file order.
    for r in first_refusals(&bad, &rejected_notes, &args.input, 5) {
        eprintln!("{r}");
    }
    let refusals = bad.len() + rejected_notes.len();
    if refusals > 5 {
        let hint = if args.rejected.is_some() { "" } else { " (write them all with --rejected FILE)" };
        eprintln!("… and {} more refused records{hint}", refusals - 5);
    }
    // Not a refusal, but nothing of these events reached a window: said even with --quiet.
    if stats.uncovered_sources > 0 {
        eprintln!("warning: {} {}", stats.uncovered_sources, pitgun_engine::UNCOVERED_SOURCES);
    }
    if !args.quiet {
        summary(&stats, records, rows.len(), bytes_read.load(Ordering::Relaxed), elapsed, threads);
    }
    if everything_refused {
        eprintln!("error: every one of the {records} records read was refused, so no rows were written (the refusals above say why)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The first `n` refusals in file order, as `file:line: reason: detail` (an event the engine
/// noted without a location, e.g. held back and rejected at its session's close, comes last).
/// Only those are formatted: a run may refuse millions.
fn first_refusals(bad: &[pitgun_replay::BadRecord], rejected: &[pitgun_engine::EventNote], inputs: &[PathBuf], n: usize) -> Vec<String> {
    enum Refusal<'a> {
        Record(&'a pitgun_replay::BadRecord),
        Event(&'a pitgun_engine::EventNote),
    }
    let mut all: Vec<((usize, u64), Refusal)> = bad
        .iter()
        .map(|b| ((b.file, b.line), Refusal::Record(b)))
        .chain(rejected.iter().map(|e| (pitgun_replay::location(e).unwrap_or((usize::MAX, u64::MAX)), Refusal::Event(e))))
        .collect();
    if all.len() > n && n > 0 {
        all.select_nth_unstable_by_key(n - 1, |(at, _)| *at);
    }
    all.truncate(n);
    all.sort_by_key(|(at, _)| *at);
    all.iter()
        .map(|(_, r)| match r {
            Refusal::Record(b) => format!("{}:{}: {}: {}", inputs[b.file].display(), b.line, b.reason, b.detail),
            Refusal::Event(e) => match pitgun_replay::location(e) {
                Some((file, line)) => format!("{}:{line}: {}: {}", inputs[file].display(), e.reason, e.detail),
                None => format!("session {} seq {}: {}: {}", e.session_id, e.seq, e.reason, e.detail),
            },
        })
        .collect()
}

/// An engine's note as a JSON line that starts with the file and line the event was read from,
/// as a refused record's does.
fn located(note: &pitgun_engine::EventNote, inputs: &[PathBuf]) -> String {
    let mut first = serde_json::Map::new();
    if let Some((file, line)) = pitgun_replay::location(note) {
        first.insert("file".into(), inputs[file].display().to_string().into());
        first.insert("line".into(), line.into());
    }
    note.to_json_after(first)
}

/// `--strict` met a refusal: it is named, and the run wrote nothing.
fn strict_refusal(what: &str) -> ExitCode {
    eprintln!("error: {what}");
    eprintln!("--strict: the run stops at the first refusal; no rows were written");
    ExitCode::from(1)
}

fn write_rows(args: &ReplayArgs, contract: &AnalysisContract, rows: &[Row]) -> Result<()> {
    match &args.output {
        Some(path) => write_whole(path, |w| write_rows_to(w, args.format, contract, rows)),
        None => {
            let mut w = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            write_rows_to(&mut w, args.format, contract, rows)?;
            Ok(w.flush()?)
        }
    }
}

fn write_rows_to(w: &mut dyn Write, format: OutputFormat, contract: &AnalysisContract, rows: &[Row]) -> Result<()> {
    match format {
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
                let cells: Vec<String> = contract.columns.iter().map(|c| csv_cell(&value[&c.name], c.column_type)).collect();
                writeln!(w, "{}", cells.join(","))?;
            }
        }
    }
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
    eprintln!(
        "replay: {records} records in {:.2} s on {threads} thread(s): {:.0} events/s, {:.1} MB/s",
        secs,
        records as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
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
    if stats.released_early > 0 {
        eprintln!("  released early from a full reorder buffer (arrival order can change rows) {}", stats.released_early);
    }
}
