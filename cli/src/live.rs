//! What a build without the `live` feature says when a live service is asked of it: which
//! command, why it is missing, and the one command that builds it.

use std::process::ExitCode;

/// The subcommands that exist only with the `live` feature.
const LIVE_COMMANDS: [&str; 8] = ["gateway", "process", "sink", "api", "tail", "export", "publish", "topics"];

/// The explanation for `what` (a subcommand or an option) in a build without the services.
pub fn unavailable(what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "`pitgun {what}` is a live service, and this pitgun was built without them (the default \
         build replays, simulates and validates without Kafka or RocksDB).\n  Build them with: \
         cargo build --release -p pitgun --features live\n  (RocksDB's bindings need libclang: \
         `scripts/stack.sh install` installs it with the broker and PostgreSQL.)"
    )
}

/// A subcommand clap did not know: a live one gets [`unavailable`], anything else the usual
/// "unrecognised subcommand" (exit code 2, as clap's own errors).
pub fn other_command(words: &[String]) -> anyhow::Result<ExitCode> {
    let name = words.first().map(String::as_str).unwrap_or_default();
    if LIVE_COMMANDS.contains(&name) {
        return Err(unavailable(name));
    }
    anyhow::bail!("unrecognised subcommand {name:?}; `pitgun --help` lists the commands")
}
