//! Starting the gateway: load what it serves, connect the producer, serve until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pitgun_contracts::dictionary::Dictionary;
use pitgun_contracts::load::{load, Loaded};
use pitgun_contracts::schema::ContractKind;
use pitgun_contracts::ContractError;
use pitgun_runtime::browser::{self, SessionKey};
use pitgun_runtime::kafka::{topics, Broker};
use pitgun_runtime::serve::Health;
use prometheus::Registry;

use crate::catalog::ChannelCatalog;
use crate::definitions::Definitions;
use crate::error::{Error, Result};
use crate::gateway::{router, watch_keys, watch_readiness, Browsers, Gateway, Limits, Quotas, Topics};
use crate::keys::KeysFile;
use crate::metrics::GatewayMetrics;
use crate::produce::{EnvelopeProducer, Publish};
use crate::validate::Validator;

/// How to run the gateway (the `pitgun gateway` flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on (port 0: any free port, logged at start).
    pub listen: SocketAddr,
    /// The broker and the namespace of topic names.
    pub broker: Broker,
    /// The API keys file.
    pub keys: Option<PathBuf>,
    /// The dictionary envelopes are checked against and `/dictionary` serves.
    pub dictionary: PathBuf,
    /// Folder of pipeline and bundle manifests `/manifests` serves.
    pub manifests: Option<PathBuf>,
    /// How far ahead of the gateway's clock an event time may be.
    pub max_future_skew: Duration,
    /// Body and batch limits, `Retry-After`.
    pub limits: Limits,
    /// How long the broker has to acknowledge a batch before the answer is 503.
    pub ack_timeout: Duration,
    /// Kafka compression codec (`lz4`, `zstd`, `gzip`, `snappy`, `none`).
    pub compression: String,
    /// How often `/readyz` asks the broker for metadata.
    pub readiness_interval: Duration,
    /// How often the keys file is checked for changes (SIGHUP reloads it at once).
    pub keys_check_interval: Duration,
    /// The secret browser session tokens are checked with (`None`: they are refused).
    pub session_secret: Option<PathBuf>,
    /// Origins browsers may post envelopes from.
    pub cors_origins: Vec<String>,
    /// After SIGTERM, how long requests in progress may take before their connections are
    /// closed and the producer is flushed.
    pub drain_timeout: Duration,
    /// How long a request's head may take to arrive (also the longest a kept-alive connection
    /// waits for its next request).
    pub header_timeout: Duration,
}

/// Builds the gateway from `settings` with a Kafka producer (blocking: reads files).
pub fn build(settings: &Settings) -> Result<Arc<Gateway>> {
    let producer = EnvelopeProducer::new(settings.broker.producer_config("pitgun-gateway"), settings.ack_timeout, &settings.compression)?;
    build_with(settings, Box::new(producer))
}

/// Builds the gateway from `settings` around `producer` (blocking: reads files). The broker in
/// `settings` only names the topics here.
pub fn build_with(settings: &Settings, producer: Box<dyn Publish>) -> Result<Arc<Gateway>> {
    let dictionary: Loaded<Dictionary> = load(ContractKind::Dictionary, &settings.dictionary)?;
    let broken = pitgun_contracts::dictionary::issues(&dictionary);
    if !broken.is_empty() {
        return Err(ContractError::Invalid(broken).into());
    }
    for warning in pitgun_contracts::dictionary::warnings(&dictionary) {
        tracing::warn!("{warning}");
    }
    let catalog = ChannelCatalog::new(&dictionary.doc).map_err(|e| Error::Setup(format!("dictionary aliases: {e}")))?;
    let skew_us = i64::try_from(settings.max_future_skew.as_micros()).map_err(|_| Error::Setup("--max-future-skew is too long".into()))?;
    let validator = Validator::new(Arc::new(catalog), skew_us, settings.limits.max_item).map_err(Error::Setup)?;
    let keys = match &settings.keys {
        Some(path) => KeysFile::open(path)?,
        None => return Err(Error::Setup("--keys is required: make keys with `pitgun gateway keygen --source S --keys FILE`".into())),
    };
    if keys.current().is_empty() {
        tracing::warn!("the keys file holds no keys: every request will be answered 401");
    }
    let definitions = Definitions::load(&dictionary, settings.manifests.as_deref())?;
    let sessions = settings.session_secret.as_deref().map(SessionKey::load).transpose().map_err(Error::Setup)?;
    let origins = browser::origins(&settings.cors_origins).map_err(|e| Error::Setup(format!("--cors-origin: {e}")))?;
    let cors = browser::cors(&origins).map_err(|e| Error::Setup(format!("--cors-origin: {e}")))?;
    let registry = Registry::new();
    let metrics = GatewayMetrics::register(&registry)?;
    metrics.api_keys.set(keys.current().len() as i64);
    Ok(Arc::new(Gateway {
        limits: settings.limits.clone(),
        quotas: Quotas::new(&settings.limits),
        topics: Topics { envelopes: settings.broker.name(topics::ENVELOPES), deadletter: settings.broker.name(topics::DEADLETTER_INGEST) },
        keys,
        validator,
        producer,
        definitions,
        metrics,
        health: Health::new(registry),
        browsers: Browsers { sessions, origins, cors },
    }))
}

/// Runs the gateway until SIGTERM or SIGINT, then drains requests and flushes the producer.
pub fn run(settings: Settings) -> Result<()> {
    let gw = build(&settings)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("gateway").build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(settings.listen).await.map_err(|source| Error::Listen { addr: settings.listen, source })?;
        let addr = listener.local_addr()?;
        // Before the line that says the gateway listens: a stop asked for after it is heard.
        let signal = pitgun_runtime::stop::stop_signal()?;
        // Tests and scripts read this line to find the port.
        eprintln!("pitgun gateway: listening on http://{addr}");
        tracing::info!(
            envelopes = %gw.topics.envelopes, deadletter = %gw.topics.deadletter, brokers = %settings.broker.bootstrap,
            "gateway started"
        );
        let readiness = tokio::spawn(watch_readiness(gw.clone(), settings.readiness_interval));
        let keys = tokio::spawn(watch_keys(gw.clone(), settings.keys_check_interval));
        let quotas = gw.clone();
        let forget = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                quotas.quotas.forget_idle();
            }
        });
        // Draining waits for every open request, and a client that stopped sending would hold it
        // past the pod's grace period: it gets --drain-timeout, then the server is dropped.
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = pitgun_runtime::http::serve(listener, router(gw.clone()), settings.header_timeout, async {
            tracing::info!("{}: draining", signal.await);
            let _ = stopping.send(());
        });
        let deadline = async {
            let _ = stopped.await;
            tokio::time::sleep(settings.drain_timeout).await;
        };
        tokio::select! {
            () = server => {}
            () = deadline => tracing::warn!(
                "requests still open {:?} after the signal (--drain-timeout): no longer waiting for them; they end with the process",
                settings.drain_timeout
            ),
        }
        for task in [readiness, keys, forget] {
            task.abort();
        }
        Ok::<_, Error>(())
    })?;
    tracing::info!("shutting down: flushing the producer");
    gw.producer.flush(settings.ack_timeout).map_err(Error::Unacknowledged)?;
    eprintln!("pitgun gateway: stopped");
    Ok(())
}
