//! `pitgun simulate`: the reference workload as a dataset file (and its ground truth).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use pitgun_workload::{simulate, Faults, Record, SimConfig};

use crate::dataset::DatasetWriter;

/// Arguments of `pitgun simulate`.
#[derive(Args)]
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
    /// Samples per second per session.
    #[arg(long, default_value_t = 60.0)]
    rate: f64,
    /// Client-health events per second per session (0 disables them).
    #[arg(long, default_value_t = 1.0)]
    health_rate: f64,
    /// Seed: the same seed and options give the same file, byte for byte.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file: .ndjson/.jsonl (optionally .gz/.zst) or .avro.
    #[arg(long, short)]
    output: PathBuf,
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
    if let Err(e) = config.validate() {
        bail!("invalid simulation: {e}");
    }
    let mut writer = DatasetWriter::create(&args.output)?;
    let started = Instant::now();
    let mut error: Option<anyhow::Error> = None;
    let (mut records, mut bytes, mut malformed_skipped) = (0u64, 0u64, 0u64);
    let truth = simulate(&config, |record| {
        if error.is_some() {
            return;
        }
        records += 1;
        let result = match &record {
            Record::Envelope(env) => {
                bytes += serde_json::to_string(env).map(|s| s.len() as u64 + 1).unwrap_or(0);
                writer.envelope(env)
            }
            Record::Malformed(line) => {
                bytes += line.len() as u64 + 1;
                writer.raw_line(line).map(|written| {
                    if !written {
                        malformed_skipped += 1;
                    }
                })
            }
        };
        if let Err(e) = result {
            error = Some(e);
        }
    });
    if let Some(e) = error {
        return Err(e);
    }
    writer.finish()?;
    if let Some(path) = &args.truth {
        let mut f = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        serde_json::to_writer_pretty(&mut f, &truth)?;
        f.write_all(b"\n")?;
    }
    if !args.quiet {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "simulate: {records} records ({} sessions, {} laps) to {} in {secs:.2} s; mean JSON size {:.0} bytes",
            truth.sessions.len(),
            truth.laps.len(),
            args.output.display(),
            bytes as f64 / records.max(1) as f64
        );
        if malformed_skipped > 0 {
            eprintln!("  {malformed_skipped} malformed records not written: Avro files cannot carry broken records");
        }
    }
    Ok(ExitCode::SUCCESS)
}
