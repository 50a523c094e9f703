//! What can stop the processor, typed by where it went wrong: its state folder, the broker,
//! a checkpoint that cannot be made safely, or the manifest. A record the engine refuses is not
//! here: that goes to the dead-letter topic and the processor goes on.

use std::path::PathBuf;
use std::time::Duration;

use crate::state::Meta;

/// An error of [`crate::run`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest does not compile (the processor checks once before joining the group, and
    /// compiles again for each partition it takes).
    #[error("the manifest does not compile")]
    Plan(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The state folder cannot be created or opened.
    #[error("cannot open the state folder {}", path.display())]
    StateFolder {
        /// The folder.
        path: PathBuf,
        /// The operating system's or RocksDB's answer.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The state folder was written for another manifest version or group.
    #[error(
        "state folder {} belongs to {} v{} (group {}), not {} v{} (group {}); give each manifest version its own --state-dir",
        path.display(), found.manifest, found.version, found.group, want.manifest, want.version, want.group
    )]
    ForeignState {
        /// The folder.
        path: PathBuf,
        /// Whose it is.
        found: Box<Meta>,
        /// Whose it should be.
        want: Box<Meta>,
    },
    /// A record in the state folder cannot be decoded; `what` names the partition and session.
    #[error("{0}; clear the state folder to rebuild from the log")]
    CorruptState(String),
    /// RocksDB failed while the processor was doing `what`.
    #[error("RocksDB: {what}")]
    Rocks {
        /// What was being done.
        what: &'static str,
        /// RocksDB's error.
        #[source]
        source: rocksdb::Error,
    },
    /// An input topic is not on the broker.
    #[error("input topic {0} does not exist (create it: pitgun topics)")]
    NoInputTopic(String),
    /// Emitted rows were not acknowledged in time, so no checkpoint may pass them.
    #[error("{in_flight} emitted records not acknowledged within {timeout:?}")]
    Unacknowledged {
        /// Records still waiting.
        in_flight: i32,
        /// How long the checkpoint waited.
        timeout: Duration,
    },
    /// The broker refused emitted rows, so no checkpoint may pass them.
    #[error("{failed} emitted records were not stored by the broker ({last}); not checkpointing past them")]
    NotStored {
        /// How many.
        failed: u64,
        /// The last delivery error.
        last: String,
    },
    /// The state changelog could not be read as expected (the partition is rebuilt instead).
    #[error("state changelog {0}")]
    Changelog(String),
    /// The changelog topic has too few partitions for the input's.
    #[error("the changelog topic {topic} has {has} partitions; input partition {needs} needs one of its own (delete the topic, or give it more partitions)")]
    ChangelogPartitions {
        /// The changelog topic.
        topic: String,
        /// Its partitions.
        has: usize,
        /// The highest input partition number.
        needs: i32,
    },
    /// A checkpoint of partitions being revoked failed.
    #[error("checkpoint of revoked partitions failed")]
    RevokeCheckpoint(#[source] Box<Error>),
    /// An engine thread panicked.
    #[error("an engine thread panicked")]
    EnginePanicked,
    /// The Kafka client or the shared Kafka edge failed (topics, partition bounds, a record not queued).
    #[error(transparent)]
    Runtime(#[from] pitgun_runtime::error::Error),
    /// A thread or a signal handler could not be started.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A RocksDB error while doing `what`.
    pub(crate) fn rocks(what: &'static str) -> impl FnOnce(rocksdb::Error) -> Error {
        move |source| Error::Rocks { what, source }
    }
}

/// A result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
