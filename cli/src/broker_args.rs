//! The broker options every live subcommand takes.

use clap::Args;
use pitgun_runtime::kafka::{Broker, Replication};

/// Where the broker is, and the namespace of topic and group names.
#[derive(Args, Debug, Clone)]
pub struct BrokerArgs {
    /// Kafka bootstrap servers, `host:port[,host:port…]`.
    #[arg(long, env = "PITGUN_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Prefix of every topic and consumer-group name (`NS.pitgun.envelopes.v1`), so several
    /// tenants or test runs can share one broker without seeing each other's data.
    #[arg(long, env = "PITGUN_NAMESPACE", default_value = "")]
    pub namespace: String,
}

impl BrokerArgs {
    /// The broker these options name.
    pub fn broker(&self) -> Broker {
        Broker::new(self.brokers.clone(), self.namespace.clone())
    }
}

/// How the topics a command creates are replicated (`process`, `sink`, `topics`).
#[derive(Args, Debug, Clone)]
pub struct ReplicationArgs {
    /// Replicas of each partition of a topic this command creates (a topic that exists is left
    /// as it is). Default: the broker's `default.replication.factor`.
    #[arg(long, env = "PITGUN_REPLICATION", value_parser = clap::value_parser!(i32).range(1..=64))]
    pub replication: Option<i32>,
    /// Replicas that must hold a record before a write to a topic this command creates is
    /// acknowledged (its `min.insync.replicas`). Default: a majority of --replication when it is
    /// 3 or more (2 of 3), else the broker's default.
    #[arg(long, env = "PITGUN_MIN_INSYNC_REPLICAS", value_parser = clap::value_parser!(i32).range(1..=64))]
    pub min_insync_replicas: Option<i32>,
}

impl ReplicationArgs {
    /// The replication these options ask for, checked.
    pub fn replication(&self) -> anyhow::Result<Replication> {
        Replication::new(self.replication, self.min_insync_replicas).map_err(anyhow::Error::msg)
    }
}

/// Logs to stderr, `info` unless `RUST_LOG` says otherwise (services only; tools stay quiet).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rdkafka=warn,tokio_postgres=warn".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}
