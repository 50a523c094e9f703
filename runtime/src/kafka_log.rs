//! librdkafka's errors and log lines, each kind said once per interval.
//!
//! While a broker is down, librdkafka reports the refused connection at every reconnect
//! attempt, several times a second and from every client in the process, as an error event and
//! as a log line: left alone, that is over thirty lines a second in an operator's log, all
//! alike. Here each kind (an error's code, a log line's level and facility, and the text without
//! its numbers) is logged the first time, then at most once per [`REPEAT_EVERY`] with how many
//! like it were left out; a fatal error always. The
//! service's own state (`/readyz`, its metrics) says whether the broker is reachable meanwhile.
//!
//! Every Kafka client context in Pitgun forwards `ClientContext::error` and `ClientContext::log`
//! here; [`Quiet`] is the context for clients that need nothing else.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
pub use rdkafka::error::KafkaError;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientContext;

/// The shortest time between two lines of one kind.
pub const REPEAT_EVERY: Duration = Duration::from_secs(30);

/// Per kind: when it was last logged, and how many of it were left out since.
static SEEN: Mutex<Option<HashMap<String, (Instant, u64)>>> = Mutex::new(None);

/// Whether a report of `kind` at `now` is logged: `Some(left out since the last line)`.
fn admit(seen: &mut HashMap<String, (Instant, u64)>, kind: &str, now: Instant) -> Option<u64> {
    match seen.get_mut(kind) {
        Some((last, left_out)) if now.duration_since(*last) < REPEAT_EVERY => {
            *left_out += 1;
            None
        }
        Some((last, left_out)) => {
            *last = now;
            Some(std::mem::take(left_out))
        }
        None => {
            seen.insert(kind.to_string(), (now, 0));
            Some(0)
        }
    }
}

fn admitted(kind: &str) -> Option<u64> {
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    admit(seen.get_or_insert_with(HashMap::new), kind, Instant::now())
}

fn left_out(n: u64) -> String {
    match n {
        0 => String::new(),
        n => format!(" ({n} more like it since the last such line)"),
    }
}

/// What makes two reports alike: `what` and the text without its numbers (broker addresses,
/// ports, times) and without librdkafka's closing parenthesis ("after 0ms in state CONNECT, 3
/// identical error(s) suppressed"). A refused connection and a failed TLS handshake differ.
fn kind(what: &str, text: &str) -> String {
    let text = text.split_once(" (").map_or(text, |(head, _)| head);
    format!("{what} {}", text.chars().filter(|c| !c.is_ascii_digit()).collect::<String>())
}

/// `ClientContext::error`: a client-wide error (a broker unreachable, all brokers down…). A
/// fatal one is always logged, as an error: the client it came from is of no further use.
pub fn error(error: &KafkaError, reason: &str) {
    if matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::Fatal)) {
        tracing::error!(target: "librdkafka", "kafka: {error}: {reason}");
        return;
    }
    if let Some(n) = admitted(&kind(&format!("error {:?}", error.rdkafka_error_code()), reason)) {
        tracing::warn!(target: "librdkafka", "kafka: {error}: {reason}{}", left_out(n));
    }
}

/// `ClientContext::log`: one of librdkafka's own log lines, at its level.
pub fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    if matches!(level, RDKafkaLogLevel::Debug) {
        tracing::debug!(target: "librdkafka", "librdkafka: {facility} {message}");
        return;
    }
    let Some(n) = admitted(&kind(&format!("log {level:?} {facility}"), message)) else { return };
    let more = left_out(n);
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", "librdkafka: {facility} {message}{more}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {facility} {message}{more}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
            tracing::info!(target: "librdkafka", "librdkafka: {facility} {message}{more}")
        }
    }
}

/// Inside a context's `impl ClientContext`: its `log` and `error` are the ones here.
#[macro_export]
macro_rules! forward_kafka_logs {
    () => {
        fn log(&self, level: $crate::kafka_log::RDKafkaLogLevel, facility: &str, message: &str) {
            $crate::kafka_log::log(level, facility, message);
        }

        fn error(&self, error: $crate::kafka_log::KafkaError, reason: &str) {
            $crate::kafka_log::error(&error, reason);
        }
    };
}

/// The context of a client that needs nothing but these logs (topic readers, admin clients).
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl ClientContext for Quiet {
    forward_kafka_logs!();
}

impl ConsumerContext for Quiet {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_logged_once_per_interval_with_the_count_left_out() {
        let mut seen = HashMap::new();
        let t0 = Instant::now();
        assert_eq!(admit(&mut seen, "a", t0), Some(0));
        for i in 1..=40 {
            assert_eq!(admit(&mut seen, "a", t0 + Duration::from_millis(100 * i)), None, "repeat {i}");
        }
        // Another kind is not held back by the first.
        assert_eq!(admit(&mut seen, "b", t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(admit(&mut seen, "a", t0 + REPEAT_EVERY), Some(40));
        assert_eq!(admit(&mut seen, "a", t0 + REPEAT_EVERY + Duration::from_secs(1)), None);
        assert_eq!(admit(&mut seen, "a", t0 + REPEAT_EVERY * 2), Some(1));
    }

    #[test]
    fn reports_are_alike_when_only_their_numbers_differ() {
        let refused = |port: u32, ms: u32| {
            kind(
                "log Error FAIL",
                &format!("127.0.0.1:{port}/bootstrap: Connect to ipv4#127.0.0.1:{port} failed: Connection refused (after {ms}ms in state CONNECT)"),
            )
        };
        assert_eq!(refused(9092, 0), refused(19092, 12));
        assert_ne!(refused(9092, 0), kind("log Error FAIL", "127.0.0.1:9092/bootstrap: SSL handshake failed: certificate verify failed"));
        assert_ne!(refused(9092, 0), kind("log Warning FAIL", "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused"));
    }
}
