//! `pitgun`: the one binary. Each subcommand is a thin layer over the library crates.
//!
//! Dependencies of the binary, one line each: `clap` (the command line), `indicatif` (progress
//! on a terminal), `xxhash-rust` (spreading a simulation's sessions over connections to the
//! gateway), `anyhow` (errors at the binary's edge),
//! `rdkafka` (reading topics for `tail`/`export`), `signal-hook` (Ctrl-C/SIGTERM ends a tail),
//! `tracing-subscriber` (service logs to stderr, filtered by `RUST_LOG`).
//!
//! The live services are behind the `live` feature (see `Cargo.toml`): the default build, the
//! README's first command, needs neither librdkafka nor RocksDB, so nothing but the Rust
//! toolchain and a C compiler. Without it a live subcommand says how to get it (`live`).

/// mimalloc for Rust and, through its `override` feature, for the C libraries linked in
/// (librdkafka, RocksDB): librdkafka allocates each fetched message on its broker thread and
/// the engine frees it on another, which under glibc's arenas is a lock handoff per record.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "live")]
mod api_cmd;
mod bench_cmd;
#[cfg(feature = "live")]
mod bench_live;
#[cfg(feature = "live")]
mod broker_args;
#[cfg(feature = "live")]
mod gateway_cmd;
#[cfg(not(feature = "live"))]
mod live;
mod manifest_cmd;
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
    /// Run a manifest version over the envelopes topic as a consumer group (RocksDB state).
    #[cfg(feature = "live")]
    Process(process_cmd::ProcessArgs),
    // Sink and Api: the about text and the long help come from their argument structs' docs.
    #[cfg(feature = "live")]
    Sink(sink_cmd::SinkArgs),
    #[cfg(feature = "live")]
    Api(api_cmd::ApiArgs),
    /// Publish a dataset's envelopes straight to the envelopes topic (no gateway).
    #[cfg(feature = "live")]
    Publish(publish_cmd::PublishArgs),
    /// Print the rows of an aggregates topic (or any topic) as they arrive.
    #[cfg(feature = "live")]
    Tail(topic_cmd::TailArgs),
    /// Write the envelopes of a topic to a dataset file, for `pitgun replay` post-mortem.
    #[cfg(feature = "live")]
    Export(topic_cmd::ExportArgs),
    /// The HTTP ingest gateway: validate envelopes, produce them to Kafka, serve the definitions.
    #[cfg(feature = "live")]
    Gateway(gateway_cmd::GatewayArgs),
    /// Benchmark floor: parse envelopes with serde_json only.
    #[command(hide = true)]
    BenchParse(bench_cmd::BenchParseArgs),
    /// Benchmark baseline: a bare Kafka consumer that only counts a topic's records.
    #[cfg(feature = "live")]
    #[command(hide = true)]
    BenchConsume(bench_live::BenchConsumeArgs),
    /// The processor's CPU per Avro envelope without Kafka (benchmarks).
    #[cfg(feature = "live")]
    #[command(hide = true)]
    BenchEngine(bench_live::BenchEngineArgs),
    /// The QuestDB target's ILP encoding rate, against serde_json (benchmarks).
    #[cfg(feature = "live")]
    #[command(hide = true)]
    BenchIlp(bench_live::BenchIlpArgs),
    /// GET requests at a fixed concurrency: rate and latency percentiles (benchmarks).
    #[cfg(feature = "live")]
    #[command(hide = true)]
    BenchHttp(bench_live::BenchHttpArgs),
    /// A live service asked of a build without them: explains how to build them.
    #[cfg(not(feature = "live"))]
    #[command(external_subcommand)]
    Other(Vec<String>),
}

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the Rust bindings name no constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// `mi_option_allow_thp` in the same enum.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Allocator options, set before `main`: mimalloc reserves its first arena on the first
/// allocation, which the Rust runtime makes before `main` runs.
/// - Transparent huge pages: every fresh arena page faulted in zeroed 2 MB at once, and the
///   processor spent ~12 % of its CPU in the kernel clearing pages; 4 KB pages cost far less.
/// - Purge delay: librdkafka frees each fetch buffer (~1 MB) as its last record is consumed and
///   allocates the next one at once; with the 10 ms default the memory went back to the OS and
///   was faulted in (and zeroed) again for every fetch. A second keeps it for reuse.
///
/// Either stays overridable by mimalloc's usual environment variables (`MIMALLOC_ALLOW_THP`,
/// `MIMALLOC_PURGE_DELAY`), so a benchmark can run a baseline with the allocator's defaults.
extern "C" fn set_allocator_options() {
    extern "C" {
        fn getenv(name: *const std::ffi::c_char) -> *const std::ffi::c_char;
    }
    for (option, env, value) in [(MI_OPTION_ALLOW_THP, c"MIMALLOC_ALLOW_THP", 0), (MI_OPTION_PURGE_DELAY, c"MIMALLOC_PURGE_DELAY", 1000)] {
        // libc's getenv, not std's: std's allocates, and the first allocation sets mimalloc up.
        // SAFETY: a NUL-terminated name; nothing modifies the environment this early.
        if unsafe { getenv(env.as_ptr()) }.is_null() {
            // SAFETY: sets a process-wide allocator option before anything else runs; an option
            // set before mimalloc's own initialisation is kept.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

#[used]
#[link_section = ".init_array"]
static SET_ALLOCATOR_OPTIONS: extern "C" fn() = set_allocator_options;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Manifest(cmd) => manifest_cmd::run(cmd),
        Command::BenchParse(args) => bench_cmd::run(args),
        #[cfg(feature = "live")]
        Command::Gateway(args) => gateway_cmd::run_cmd(args),
        #[cfg(feature = "live")]
        Command::BenchConsume(args) => bench_live::consume(args),
        #[cfg(feature = "live")]
        Command::BenchEngine(args) => bench_live::engine(args),
        #[cfg(feature = "live")]
        Command::BenchIlp(args) => bench_live::ilp(args),
        #[cfg(feature = "live")]
        Command::BenchHttp(args) => bench_live::http(args),
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
