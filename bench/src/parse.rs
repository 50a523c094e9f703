//! `pitgun-bench parse`: the floor of the replay benchmark — only parse each envelope with
//! serde_json into the contract type, no resolution, no windows.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use pitgun_contracts::envelope::Envelope;

use pitgun_codec::dataset::for_each_record;

/// Arguments of `pitgun-bench parse`.
#[derive(Args)]
pub struct ParseArgs {
    /// Dataset files.
    #[arg(required = true)]
    input: Vec<PathBuf>,
}

pub fn run(args: ParseArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let (mut records, mut bytes, mut bad, mut channels) = (0u64, 0u64, 0u64, 0u64);
    for path in &args.input {
        for_each_record(path, &|_| {}, |_, text| {
            records += 1;
            let Ok(text) = text else {
                bad += 1;
                return Ok(true);
            };
            bytes += text.len() as u64 + 1;
            match serde_json::from_str::<Envelope>(text) {
                Ok(env) => channels += env.channels.len() as u64,
                Err(_) => bad += 1,
            }
            Ok::<_, anyhow::Error>(true)
        })?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "parse-only: {records} records ({bad} unparsable), mean {:.0} bytes, {:.1} channels, in {secs:.2} s: {:.0} envelopes/s, {:.1} MB/s",
        bytes as f64 / records.max(1) as f64,
        channels as f64 / (records - bad).max(1) as f64,
        records as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
    Ok(ExitCode::SUCCESS)
}
