//! What can stop the API or fail one of its reads, typed so the router can tell a value
//! PostgreSQL refused (the request's fault, 400) from a database that is not there (503).

use std::net::SocketAddr;

/// An error of [`crate::serve`] or [`crate::store::Store`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value cannot be used.
    #[error("{0}")]
    Config(String),
    /// `--postgres` does not parse.
    #[error("--postgres is not a PostgreSQL URL")]
    Url(#[source] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("cannot set up the PostgreSQL connection pool")]
    Pool(#[from] deadpool_postgres::BuildError),
    /// No connection could be had within the pool's deadline.
    #[error("no PostgreSQL connection")]
    Connection(#[from] deadpool_postgres::PoolError),
    /// A table the API reads has not been created by the sink yet.
    #[error("table {0:?} does not exist yet: start `pitgun sink` for its manifest first (it creates the table)")]
    NoTable(String),
    /// A table lacks a column the API reads.
    #[error("table {table:?} has no column {column:?}; is it the table of the right manifest?")]
    NoColumn {
        /// The table.
        table: String,
        /// The first missing column.
        column: String,
    },
    /// The database did not answer a read in time (nor cancel it at its query timeout).
    #[error("the database did not answer within {0:?}; the connection was dropped from the pool")]
    NoAnswer(std::time::Duration),
    /// A statement failed.
    #[error("query failed")]
    Query(#[from] tokio_postgres::Error),
    /// A table name that is not a plain identifier.
    #[error(transparent)]
    Runtime(#[from] pitgun_runtime::error::Error),
    /// The API could not listen on its address.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
    /// A signal handler or the server itself failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The SQLSTATE of a statement PostgreSQL refused because of a value (class 22), which
    /// is the request's fault rather than the database's.
    pub fn refused_value(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Error::Query(e) => e.code().filter(|c| c.code().starts_with("22")).map(|_| e),
            _ => None,
        }
    }
}

/// A result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
