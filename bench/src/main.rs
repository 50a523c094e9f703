//! `pitgun-bench`: the programs the scripts in `bench/` measure Pitgun against, kept out of the
//! product binary. Baselines (what a figure in BENCHMARKS.md is a ratio to): `parse` (serde_json
//! only), `consume` (a bare Kafka consumer), `produce` (a bare Kafka producer), `gateway` (an HTTP server that only parses), `http`
//! (the load generator for GET endpoints), `post` (the gateway's load, batches built beforehand). Timings of one product component alone: `engine`
//! (the processor's engine without Kafka) and `ilp` (the QuestDB target's encoding).
//!
//! `parse` needs only the toolchain; the others come with the `live` feature (librdkafka,
//! RocksDB), as in `pitgun`. Built with the same allocator and its options as `pitgun` (`cli/src/allocator.rs` is
//! included), so a figure taken here is comparable with one taken from the product binary.

#[path = "../../cli/src/allocator.rs"]
mod allocator;
#[cfg(feature = "live")]
mod gateway;
#[cfg(feature = "live")]
mod live;
mod parse;
#[cfg(feature = "live")]
mod post;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Pitgun's benchmark programs (run by the scripts in bench/).
#[derive(Parser)]
#[command(name = "pitgun-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay's floor: parse a dataset's envelopes with serde_json, nothing else.
    Parse(parse::ParseArgs),
    /// The processor's baseline: a bare Kafka consumer that only counts a topic's records.
    #[cfg(feature = "live")]
    Consume(live::ConsumeArgs),
    /// `pitgun publish`'s baseline: a bare producer of the same records, encoded beforehand.
    #[cfg(feature = "live")]
    Produce(live::ProduceArgs),
    /// The gateway's baseline: the same HTTP framing, then only a parse of every item, and 202.
    #[cfg(feature = "live")]
    Gateway(gateway::GatewayArgs),
    /// The processor's CPU per Avro envelope, without Kafka.
    #[cfg(feature = "live")]
    Engine(live::EngineArgs),
    /// The QuestDB target's ILP encoding rate, against serde_json.
    #[cfg(feature = "live")]
    Ilp(live::IlpArgs),
    /// GET requests at a fixed concurrency: rate and latency percentiles.
    #[cfg(feature = "live")]
    Http(live::HttpArgs),
    /// The gateway's load: a dataset's batches built beforehand, then posted at full speed.
    #[cfg(feature = "live")]
    Post(post::PostArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Parse(args) => parse::run(args),
        #[cfg(feature = "live")]
        Command::Consume(args) => live::consume(args),
        #[cfg(feature = "live")]
        Command::Produce(args) => live::produce(args),
        #[cfg(feature = "live")]
        Command::Gateway(args) => gateway::run(args),
        #[cfg(feature = "live")]
        Command::Engine(args) => live::engine(args),
        #[cfg(feature = "live")]
        Command::Ilp(args) => live::ilp(args),
        #[cfg(feature = "live")]
        Command::Http(args) => live::http(args),
        #[cfg(feature = "live")]
        Command::Post(args) => post::run(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}
