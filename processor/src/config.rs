//! What `pitgun process` is asked to do, and what a run did.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use pitgun_engine::Plan;
use pitgun_runtime::kafka::Broker;

/// Builds a fresh plan (each partition gets its own engine; formulas are not shared).
pub type PlanFactory = Arc<dyn Fn() -> Result<Plan, Box<dyn std::error::Error + Send + Sync>> + Send + Sync>;

/// How to run one manifest version.
pub struct Config {
    /// Broker and namespace.
    pub broker: Broker,
    /// Manifest name and version (the group is `pitgun.<name>.v<version>`).
    pub manifest: String,
    /// Manifest version.
    pub version: u32,
    /// Input topics (base names; the namespace is added).
    pub input_topics: Vec<String>,
    /// Compiles the manifest.
    pub plan: PlanFactory,
    /// RocksDB state folder, one per manifest version and replica.
    pub state_dir: PathBuf,
    /// Time between checkpoints.
    pub checkpoint_interval: Duration,
    /// Consume up to the end offsets seen at start, close every session, checkpoint, exit.
    pub until_end: bool,
    /// Where to serve `/metrics`, `/healthz`, `/readyz`.
    pub metrics_listen: Option<SocketAddr>,
    /// How long closed session ids are remembered (late copies of their events are refused).
    pub closed_retention: Duration,
    /// Consumer-group session timeout: how soon a dead replica's partitions move.
    pub group_session_timeout: Duration,
    /// Static membership (`group.instance.id`): a replica restarted under this name within the
    /// session timeout takes its place in the group without a rebalance.
    pub instance_id: Option<String>,
    /// Partitions of the output topics when the processor creates them.
    pub output_partitions: i32,
    /// How long a checkpoint waits for the broker to acknowledge emitted rows.
    pub flush_timeout: Duration,
    /// Extra librdkafka settings for the consumer (`fetch.max.bytes`, …), applied last.
    pub consumer_settings: Vec<(String, String)>,
    /// Write the state changelog (`pitgun.state.<manifest>.v<version>`) at every checkpoint and
    /// restore partitions taken from another replica from it (else they are rebuilt).
    pub changelog: bool,
    /// Engine threads: owned partitions are fed by this many threads at once (each partition
    /// by one thread at a time, so its order is kept).
    pub threads: usize,
    /// Most sessions one input partition holds open (`usize::MAX`: no bound); an event opening
    /// one more is refused to the dead letters (`too_many_sessions`) until one closes.
    pub max_open_sessions: usize,
    /// Most late notes written to the late topic per second by this processor (`None`: no
    /// bound). Past it notes are shed and counted (`late_shed_total`); each shed event is still
    /// on the envelopes topic, so the bound loses no input, only its note.
    pub late_per_second: Option<std::num::NonZeroU32>,
}

/// What a run did (printed by `pitgun process` at exit).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    /// Records consumed.
    pub records: u64,
    /// Rows produced (re-emissions included).
    pub rows: u64,
    /// Events that reached no window (too late, or after their session ended): their notes
    /// written to the late topic, and those shed (`late_shed`).
    pub late: u64,
    /// Late notes not written: the late topic's rate bound was reached.
    pub late_shed: u64,
    /// Records sent to the dead-letter topic.
    pub deadletters: u64,
    /// Channels no alias of the event's producer version names (dropped, or kept raw).
    pub unknown_channels: u64,
    /// Events from a producer version the dictionary has no aliases for (none of their channels
    /// can be a dictionary metric).
    pub uncovered_sources: u64,
    /// Partitions resumed from a local checkpoint.
    pub restored_partitions: u64,
    /// Partitions restored from the state changelog.
    pub changelog_restored_partitions: u64,
    /// Partitions rebuilt from the earliest offset.
    pub rebuilt_partitions: u64,
    /// Local checkpoints discarded (not at the group's committed offset).
    pub discarded_checkpoints: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Bytes written to the state changelog.
    pub changelog_bytes: u64,
    /// Seconds from the first record consumed to the end (throughput = records / this).
    pub consume_seconds: f64,
    /// The process's peak resident memory at the end, in bytes (Linux; absent elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_resident_bytes: Option<u64>,
}

/// librdkafka's `fetch.wait.max.ms` for the processor's consumers (and `pitgun tail` following a
/// topic).
pub(crate) use pitgun_runtime::kafka::FETCH_WAIT_MS;

impl Config {
    /// The fetch wait of both the group consumer and the changelog reader: `--consumer-config
    /// fetch.wait.max.ms=…` when given (a broker that spends a short wait on its own read, like
    /// nisshi's PostgreSQL storage, needs a longer one), else [`FETCH_WAIT_MS`].
    pub(crate) fn fetch_wait_ms(&self) -> &str {
        fetch_wait_ms(&self.consumer_settings)
    }
}

/// The last `fetch.wait.max.ms` among `settings`, else [`FETCH_WAIT_MS`].
fn fetch_wait_ms(settings: &[(String, String)]) -> &str {
    settings.iter().rev().find(|(k, _)| k == "fetch.wait.max.ms").map_or(FETCH_WAIT_MS, |(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fetch_wait_is_the_consumer_settings_last_word_or_the_default() {
        let wait = |settings: &[(&str, &str)]| {
            let settings: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            fetch_wait_ms(&settings).to_string()
        };
        assert_eq!(wait(&[]), "20");
        assert_eq!(wait(&[("fetch.max.bytes", "1"), ("fetch.wait.max.ms", "100"), ("fetch.wait.max.ms", "500")]), "500");
    }
}
