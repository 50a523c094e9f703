//! What can stop the gateway or its client, typed by where it went wrong: a file it reads, the
//! keys file's content, the broker, or the gateway as seen by `pitgun publish`. A request the
//! gateway refuses is not here: that is an HTTP answer ([`crate::gateway`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pitgun_contracts::ContractError;

/// What is wrong inside a keys file.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A file read again found empty: `cat new > keys` empties it before writing it.
    #[error("the file is empty, as one is while it is being written: the keys in force stay (write `[]` to revoke every key)")]
    EmptyOnReload,
    /// The file changed while it was read again: read once more at the next check.
    #[error("the file changed while it was read: the keys in force stay until the next check reads it whole")]
    ChangedWhileRead,
    /// The text is not a YAML list of entries.
    #[error("not a YAML list of {{source, sha256}} entries")]
    NotAList(#[source] serde_yaml_ng::Error),
    /// An entry's hash is not 64 hex digits.
    #[error("entry {entry} (source {source_name}): sha256 must be 64 hex digits")]
    BadHash {
        /// The entry's index.
        entry: usize,
        /// Its source.
        source_name: String,
    },
    /// An entry whose source is not a producer id (an envelope's `source.id` could not match it).
    #[error("entry {entry}: source {problem}")]
    BadSource {
        /// The entry's index.
        entry: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// A file others may change: whoever can write it can add a key.
    #[error("group or others may write it (mode {mode:o}): whoever can write the keys file can add a key; run `chmod go-w` on it")]
    Writable {
        /// The file's permission bits.
        mode: u32,
    },
    /// A file owned by another user than root or the gateway's: its owner can make it writable.
    #[error("it is owned by uid {owner}, neither root nor the user the gateway runs as (uid {gateway}): its owner can change it and add a key; run `chown` on it")]
    Owner {
        /// The file's owner.
        owner: u32,
        /// The gateway's effective user.
        gateway: u32,
    },
    /// One key listed for two sources.
    #[error("entry {entry}: the same key is listed for {first} and {second}")]
    Duplicate {
        /// The second entry's index.
        entry: usize,
        /// The source listed first.
        first: String,
        /// The source of this entry.
        second: String,
    },
}

/// An error of building or running the gateway, of its keys file, or of [`crate::client`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings do not fit together (a missing `--keys`, a skew too long, a dictionary whose
    /// aliases collide, two manifests served at one address).
    #[error("{0}")]
    Setup(String),
    /// A contract (dictionary, manifest, bundle) does not load.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// A file or folder cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
    /// A file cannot be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
    /// A published contract file is not JSON.
    #[error("{} is not JSON", path.display())]
    NotJson {
        /// The path.
        path: PathBuf,
        /// The parser's answer.
        #[source]
        source: serde_json::Error,
    },
    /// A keys file is damaged (`path` is `None` for text not read from a file).
    #[error("keys file {}", path.as_ref().map_or("(text)".into(), |p| p.display().to_string()))]
    Keys {
        /// The file.
        path: Option<PathBuf>,
        /// What is wrong in it.
        #[source]
        source: KeysError,
    },
    /// The Kafka producer cannot be created.
    #[error("cannot create the Kafka producer")]
    Producer(#[source] rdkafka::error::KafkaError),
    /// Records were still unacknowledged when the gateway stopped.
    #[error("records left unacknowledged at shutdown: {0}")]
    Unacknowledged(String),
    /// The gateway could not listen on its address.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built, or the gateway's answer is not the documented JSON.
    #[error("{what}")]
    Http {
        /// What was being done.
        what: &'static str,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The gateway answered with a status that resending cannot fix.
    #[error("the gateway answered {status}: {body}")]
    Refused {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The answer's body.
        body: String,
    },
    /// The gateway could not be reached for the whole retry window.
    #[error("cannot reach the gateway at {url} for {retry_for:?}")]
    Unreachable {
        /// The URL posted to.
        url: String,
        /// How long it was tried.
        retry_for: Duration,
        /// The last connection error.
        #[source]
        source: reqwest::Error,
    },
    /// The gateway (or a proxy in front) kept answering "try again" for the whole retry window.
    #[error("the gateway kept asking for this batch again (busy, over a quota, or a proxy that lost it) for {0:?}; giving up on it")]
    Overloaded(Duration),
    /// The metrics could not be registered.
    #[error("cannot register the gateway's metrics")]
    Metrics(#[from] prometheus::Error),
    /// A runtime, a socket or the HTTP server failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
