//! `pitgun simulate`: the reference workload as a dataset file (and its ground truth), and/or
//! posted to an ingest gateway (`--target`, see `simulate_target`).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use pitgun_workload::{check_health_rate, check_sample_rate, simulate_while, Faults, Record, SimConfig};

#[cfg(feature = "live")]
use crate::simulate_target::{Poster, TargetOptions};
use pitgun_codec::dataset::{DatasetError, DatasetWriter};

/// Arguments of `pitgun simulate`.
#[derive(Args)]
#[cfg_attr(not(feature = "live"), allow(dead_code))] // the --target options are read by the live build
#[command(after_help = "Faults (probability per event, comma-separated): reorder_within, late_within_lateness, \
very_late, duplicates, gaps, clock_jumps, malformed, unknown_channels, out_of_range.\n\nExample:\n  \
pitgun simulate --sessions 4 --duration 5m --seed 7 --output racing.ndjson.zst --truth truth.json \
--faults duplicates=0.01,reorder_within=0.05")]
pub struct SimulateArgs {
    /// Concurrent sessions.
    #[arg(long, default_value_t = 4)]
    sessions: u32,
    /// Length of each session, like `90s`, `5m` or `1h`.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Samples per second per session (more than 0, at most 10000).
    #[arg(long, default_value_t = 60.0, value_parser = rate_arg(check_sample_rate))]
    rate: f64,
    /// Client-health events per second per session (0 disables them; at most 1000).
    #[arg(long, default_value_t = 1.0, value_parser = rate_arg(check_health_rate))]
    health_rate: f64,
    /// Seed: the same seed and options give the same file, byte for byte.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file: .ndjson/.jsonl (optionally .gz/.zst) or .avro. Required unless --target.
    #[arg(long, short, required_unless_present = "target")]
    output: Option<PathBuf>,
    /// Post the envelopes to this ingest gateway (`http://host:port`) as NDJSON batches; with
    /// --output as well, both get the same envelopes.
    #[arg(long)]
    target: Option<String>,
    /// Envelopes per posted batch (one source per batch).
    #[arg(long, default_value_t = 500, requires = "target", value_parser = at_least_one)]
    batch: usize,
    /// Keep-alive HTTP/1.1 connections; each session always uses the same one, so its events
    /// arrive in order.
    #[arg(long, default_value_t = 4, requires = "target", value_parser = at_least_one)]
    concurrency: usize,
    /// Post at most this many envelopes per second, at least 0.001 (default: as fast as the
    /// gateway answers).
    #[arg(long, requires = "target", allow_negative_numbers = true, value_parser = rate_arg(check_target_rate))]
    target_rate: Option<f64>,
    /// API keys, one `source=token` per line.
    #[arg(long, requires = "target")]
    api_keys: Option<PathBuf>,
    /// An API key as `source=token` (repeatable).
    #[arg(long, requires = "target", value_parser = parse_key_arg)]
    api_key: Vec<(String, String)>,
    /// How long a batch is resent, when the gateway asks for it again (busy, over a quota) or
    /// cannot be reached, before the run fails.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration, requires = "target")]
    retry_for: std::time::Duration,
    /// Also write the ground truth (every session's real lap times) as JSON here.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Faults to inject, e.g. `duplicates=0.01,gaps=0.001`.
    #[arg(long, value_parser = parse_faults)]
    faults: Option<Faults>,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_key_arg(text: &str) -> Result<(String, String), String> {
    parse_api_key(text).map_err(|e| e.to_string())
}

#[cfg_attr(not(feature = "live"), allow(dead_code))]
/// Reads `source=token` lines (blank lines and `#` comments skipped).
fn read_api_keys(path: &Path, into: &mut HashMap<String, String>) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (s, t) = parse_api_key(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        into.insert(s, t);
    }
    Ok(())
}

/// `source=token`.
fn parse_api_key(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((s, t)) if !s.trim().is_empty() && !t.trim().is_empty() => Ok((s.trim().to_string(), t.trim().to_string())),
        _ => bail!("expected source=token, found {text:?}"),
    }
}

/// A rate flag held to the simulator's own rule on it, so the error names the flag.
fn rate_arg(rule: fn(f64) -> Result<(), String>) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |text| {
        let hz: f64 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
        rule(hz).map(|()| hz)
    }
}

/// A posting pace the pacer can turn into a time: a rate at or below 0, not finite, or so small
/// that one envelope's interval overflows a duration is refused.
fn check_target_rate(per_second: f64) -> Result<(), String> {
    if per_second.is_finite() && per_second >= 0.001 {
        Ok(())
    } else {
        Err(format!("expected at least 0.001 envelopes per second, got {per_second}"))
    }
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number, at least 1, got {text:?}")),
    }
}

fn parse_faults(text: &str) -> Result<Faults, String> {
    Faults::parse_list(text).map_err(|e| e.to_string())
}

pub fn run(args: SimulateArgs) -> Result<ExitCode> {
    let duration_us = i64::try_from(args.duration.as_micros()).context("duration too long")?;
    let mut config = SimConfig::new(args.sessions, duration_us, args.seed);
    config.rate_hz = args.rate;
    config.health_rate_hz = args.health_rate;
    if let Some(f) = args.faults {
        config.faults = f;
    }
    config.validate()?;
    #[cfg(not(feature = "live"))]
    if args.target.is_some() {
        // Before --output is created: a refused run leaves no empty file behind.
        return Err(crate::live::unavailable("simulate --target"));
    }
    let outputs = [("--output", &args.output), ("--truth", &args.truth)];
    let outputs: Vec<(&str, &Path)> = outputs.iter().filter_map(|(flag, p)| p.as_deref().map(|p| (*flag, p))).collect();
    crate::paths::distinct(&[], &outputs)?;
    #[cfg(not(feature = "live"))]
    let mut poster: Option<Poster> = None;
    #[cfg(feature = "live")]
    let mut poster = match &args.target {
        Some(url) => {
            let mut tokens = std::collections::HashMap::new();
            if let Some(path) = &args.api_keys {
                read_api_keys(path, &mut tokens)?;
            }
            tokens.extend(args.api_key.iter().cloned());
            // Every source the run sends from needs its key: known now, before anything is sent
            // or written, rather than at its first batch.
            let sources = pitgun_workload::source_ids(config.sessions);
            let missing: Vec<&str> = sources.iter().copied().filter(|s| !tokens.contains_key(*s)).collect();
            if !missing.is_empty() {
                bail!(
                    "no API key for source {}: this run sends from {}; pass --api-key SOURCE=TOKEN or --api-keys FILE",
                    missing.join(", "),
                    sources.join(" and ")
                );
            }
            Some(Poster::start(TargetOptions {
                url: url.clone(),
                batch: args.batch,
                concurrency: args.concurrency,
                rate: args.target_rate,
                tokens,
                retry_for: args.retry_for,
            })?)
        }
        None => None,
    };
    // Last, once the target's URL and keys are known good: a refused run leaves --output as it was.
    // Written whole or not at all; errors name the file as given, not the hidden one written.
    let output = args.output.as_deref().map(crate::paths::Replacing::new);
    let as_given = |e: DatasetError| match &output {
        Some(o) => o.named(e),
        None => e,
    };
    let mut writer = output.as_ref().map(|o| DatasetWriter::create(o.file())).transpose().map_err(as_given)?;
    let mut line = Vec::new();
    let started = Instant::now();
    let mut error: Option<anyhow::Error> = None;
    let (mut records, mut bytes, mut malformed_skipped) = (0u64, 0u64, 0u64);
    let truth = simulate_while(&config, |record| {
        records += 1;
        let result = match &record {
            Record::Envelope(env) => {
                line.clear();
                serde_json::to_writer(&mut line, env).expect("envelopes serialise");
                bytes += line.len() as u64 + 1;
                let posted = poster.as_mut().map_or(Ok(()), |p| p.envelope(env, &line));
                posted.and_then(|()| writer.as_mut().map_or(Ok(()), |w| Ok(w.envelope(env).map_err(as_given)?)))
            }
            Record::Malformed(raw) => {
                bytes += raw.len() as u64 + 1;
                let posted = poster.as_mut().map_or(Ok(()), |p| p.malformed(raw));
                posted.and_then(|()| {
                    writer.as_mut().map_or(Ok(()), |w| {
                        w.raw_line(raw).map_err(|e| anyhow::Error::from(as_given(e))).map(|written| {
                            if !written {
                                malformed_skipped += 1;
                            }
                        })
                    })
                })
            }
        };
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                error = Some(e);
                ControlFlow::Break(())
            }
        }
    });
    if let Some(e) = error {
        return Err(e);
    }
    if let Some(w) = writer {
        w.finish().map_err(as_given)?;
    }
    // The gateway's last answers and the truth file before --output replaces the file: a run
    // that fails leaves it as it was.
    if let Some(p) = poster {
        p.finish(args.quiet)?;
    }
    if let Some(path) = &args.truth {
        crate::paths::write_whole(path, |f| {
            serde_json::to_writer_pretty(&mut *f, &truth)?;
            Ok(f.write_all(b"\n")?)
        })?;
    }
    if let Some(output) = output {
        output.commit()?;
    }
    if !args.quiet {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "simulate: {records} records ({} sessions, {} laps) to {} in {secs:.2} s; mean JSON size {:.0} bytes",
            truth.sessions.len(),
            truth.laps.len(),
            args.output.as_ref().map_or_else(|| args.target.clone().unwrap_or_default(), |p| p.display().to_string()),
            bytes as f64 / records.max(1) as f64
        );
        if malformed_skipped > 0 {
            eprintln!("  {malformed_skipped} malformed records not written: Avro files cannot carry broken records");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The gateway client of `--target`, in a build without the live services: `--target` is
/// refused before one could be made, so no value of this type exists.
#[cfg(not(feature = "live"))]
enum Poster {}

#[cfg(not(feature = "live"))]
impl Poster {
    fn envelope(&mut self, _: &pitgun_contracts::envelope::Envelope, _: &[u8]) -> Result<()> {
        match *self {}
    }
    fn malformed(&mut self, _: &str) -> Result<()> {
        match *self {}
    }
    fn finish(self, _: bool) -> Result<()> {
        match self {}
    }
}
