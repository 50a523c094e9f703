//! `pitgun`: the one binary. Each subcommand is a thin layer over the library crates.
//!
//! Dependencies of the binary, one line each: `clap` (the command line), `indicatif` (progress
//! on a terminal), `xxhash-rust` (spreading a simulation's sessions over connections to the
//! gateway), `anyhow` (errors at the binary's edge),
//! `rdkafka` (reading topics for `tail`/`export`), `base64` (`tail --meta` shows bytes that are
//! not text), `signal-hook` (Ctrl-C/SIGTERM ends a tail, and removes an output not yet whole),
//! `libc` (whether a signal was ignored when the process started), `tracing-subscriber`
//! (service logs to stderr, filtered by `RUST_LOG`).
//!
//! The live services are behind the `live` feature (see `Cargo.toml`): the default build, the
//! README's first command, needs neither librdkafka nor RocksDB, so nothing but the Rust
//! toolchain and a C compiler. Without it a live subcommand says how to get it (`live`).

/// Writes one line to standard output, or fails the command saying so (exit 2). `println!`
/// panics when the reader has gone (`| head -1`) or the disk is full.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::stdout_failed)
    }};
}

/// A write to standard output that failed (`| head -1` closed it, a full disk), named as such.
fn stdout_failed(e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot write to standard output: {e}")
}

mod allocator;
#[cfg(feature = "live")]
mod api_cmd;
#[cfg(feature = "live")]
mod broker_args;
#[cfg(feature = "live")]
mod duration_arg;
#[cfg(feature = "live")]
mod gateway_cmd;
mod interrupt;
#[cfg(not(feature = "live"))]
mod live;
mod manifest_cmd;
mod paths;
#[cfg(feature = "live")]
mod process_cmd;
mod project;
#[cfg(feature = "live")]
mod publish_cmd;
mod replay;
mod simulate;
#[cfg(feature = "live")]
mod simulate_target;
#[cfg(feature = "live")]
mod sink_cmd;
#[cfg(feature = "live")]
mod topic_cmd;
#[cfg(feature = "live")]
mod topics_cmd;
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
    // The live commands below carry no doc here: a variant's doc would replace the long help
    // their argument structs' docs give (`--help`), leaving only its one line. (Gateway keeps
    // one: its arguments' doc has no description, its help an after-help section.)
    #[cfg(feature = "live")]
    Process(process_cmd::ProcessArgs),
    #[cfg(feature = "live")]
    Sink(sink_cmd::SinkArgs),
    #[cfg(feature = "live")]
    Api(api_cmd::ApiArgs),
    #[cfg(feature = "live")]
    Publish(publish_cmd::PublishArgs),
    #[cfg(feature = "live")]
    Tail(topic_cmd::TailArgs),
    #[cfg(feature = "live")]
    Export(topic_cmd::ExportArgs),
    /// The HTTP ingest gateway: validate envelopes, produce them to Kafka, serve the definitions.
    #[cfg(feature = "live")]
    Gateway(gateway_cmd::GatewayArgs),
    #[cfg(feature = "live")]
    Topics(topics_cmd::TopicsArgs),
    /// A live service asked of a build without them: explains how to build them.
    #[cfg(not(feature = "live"))]
    #[command(external_subcommand)]
    Other(Vec<String>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Manifest(cmd) => manifest_cmd::run(cmd),
        #[cfg(feature = "live")]
        Command::Gateway(args) => gateway_cmd::run_cmd(args),
        #[cfg(feature = "live")]
        Command::Process(args) => process_cmd::run(args),
        #[cfg(feature = "live")]
        Command::Sink(args) => sink_cmd::run(args),
        #[cfg(feature = "live")]
        Command::Api(args) => api_cmd::run(args),
        #[cfg(feature = "live")]
        Command::Tail(args) => topic_cmd::tail(args),
        #[cfg(feature = "live")]
        Command::Publish(args) => publish_cmd::run(args),
        #[cfg(feature = "live")]
        Command::Export(args) => topic_cmd::export(args),
        #[cfg(feature = "live")]
        Command::Topics(args) => topics_cmd::run(args),
        #[cfg(not(feature = "live"))]
        Command::Other(words) => live::other_command(&words),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
