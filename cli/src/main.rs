//! `pitgun`: the one binary. Each subcommand is a thin layer over the library crates.
//!
//! Dependencies of the binary, one line each: `clap` (the command line), `indicatif` (progress
//! on a terminal), `flate2`/`zstd` (compressed datasets), `apache-avro` (Avro OCF datasets),
//! `crossbeam-channel` (bounded queues between replay's reader and its session shards),
//! `xxhash-rust` (routing sessions to shards), `anyhow` (errors at the binary's edge).

mod bench_cmd;
mod dataset;
mod manifest_cmd;
mod project;
mod replay;
mod simulate;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Pitgun — the canonical telemetry runtime.
///
/// Metrics are defined once in a canonical dictionary; analysis is written as versioned
/// manifests; the same manifest gives the same rows over a live stream or a dataset.
#[derive(Parser)]
#[command(name = "pitgun", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a manifest over NDJSON or Avro datasets (the embedded default, no broker needed).
    Replay(replay::ReplayArgs),
    /// Write a deterministic dataset of simulated racing sessions (the reference workload).
    Simulate(simulate::SimulateArgs),
    /// Check documents against their contract (envelope, dictionary, pipeline, bundle, analysis).
    Validate(validate::ValidateArgs),
    /// Manifest tools: run its tests, print its analysis contract, compare versions, hash.
    #[command(subcommand)]
    Manifest(manifest_cmd::ManifestCommand),
    /// Benchmark floor: parse envelopes with serde_json only.
    #[command(hide = true)]
    BenchParse(bench_cmd::BenchParseArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Manifest(cmd) => manifest_cmd::run(cmd),
        Command::BenchParse(args) => bench_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
