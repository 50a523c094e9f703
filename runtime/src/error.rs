//! What can go wrong at the edges the live services share, typed so a caller can tell a broker
//! that did not answer from a name that is not allowed; the binary adds its own context.

use std::net::SocketAddr;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// An error of [`crate::kafka`], [`crate::serve`] or [`crate::sql`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kafka client refused or failed `what` (creating a client, a request, a record).
    #[error("{what}")]
    Kafka {
        /// What was being done, naming the broker, topic or partition.
        what: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The broker did not answer a topic creation in time.
    #[error("broker {bootstrap} did not answer a topic creation within {timeout:?}")]
    TopicCreationTimeout {
        /// The bootstrap servers asked.
        bootstrap: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The broker refused to create a topic.
    #[error("cannot create topic {topic}: {code}")]
    TopicCreation {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
    /// A server could not listen on its address.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
    /// A table or column name that is not a plain SQL identifier.
    #[error("{0:?} is not a plain SQL identifier (a-z, 0-9, _; at most 63 bytes; not starting with a digit)")]
    Identifier(String),
    /// An operating-system call failed (a thread, a socket, a runtime).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A Kafka client error while doing `what`.
    pub fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> Error {
        let what = what.into();
        move |source| Error::Kafka { what, source }
    }
}

/// A result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line (`what: why: why`), for logs: a typed error's
/// `Display` names only its own step.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}
