//! What can stop the sink, typed by where it went wrong: the manifests do not fit (found
//! before anything connects), a table in a database does not fit, a server failed, or the
//! broker did. A batch that cannot be written now is not here: that is
//! [`crate::target::WriteError`], which the loop retries.

use rdkafka::error::KafkaError;

/// An error of [`crate::run`] or of opening a target.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifests, the routes and the flags do not fit each other (a column a table reads
    /// is not in the rows, a target without its flag).
    #[error("{0}")]
    Setup(String),
    /// A table already in a database has another shape than the contract needs; the sink
    /// never alters a table.
    #[error("{0}")]
    TableMismatch(String),
    /// PostgreSQL failed while the sink was doing `what`.
    #[error("PostgreSQL: {what}")]
    Postgres {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// QuestDB could not be reached or did not answer as documented while doing `what`.
    #[error("QuestDB: {what}")]
    QuestDb {
        /// What was being done, naming the server.
        what: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// QuestDB refused a statement.
    #[error("QuestDB refused {sql:?}: {message}")]
    QuestDbRefused {
        /// The statement.
        sql: String,
        /// QuestDB's message.
        message: String,
    },
    /// An aggregates topic the manifests name is not on the broker.
    #[error("aggregates topic {0} does not exist (the processor creates it when it starts)")]
    NoTopic(String),
    /// A dead letter was not acknowledged, so the offset behind it is not committed.
    #[error("dead letter for {origin} not acknowledged")]
    DeadLetter {
        /// The row's topic/partition/offset.
        origin: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// A target could not open its write connections.
    #[error(transparent)]
    Write(#[from] crate::target::WriteError),
    /// The Kafka client or the shared Kafka edge failed (topics, partition bounds).
    #[error(transparent)]
    Runtime(#[from] pitgun_runtime::error::Error),
    /// A signal handler could not be installed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The write task or a blocking call panicked or was cancelled.
    #[error("a sink task failed")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    /// A PostgreSQL error while doing `what`.
    pub(crate) fn postgres(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let what = what.into();
        move |source| Error::Postgres { what, source }
    }

    /// A QuestDB client error while doing `what`.
    pub(crate) fn questdb<E: std::error::Error + Send + Sync + 'static>(what: impl Into<String>) -> impl FnOnce(E) -> Error {
        let what = what.into();
        move |source| Error::QuestDb { what, source: Box::new(source) }
    }
}

/// A result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
