//! A client for `POST /v1/envelopes` that resends a batch until it is stored.
//!
//! One [`GatewayClient`] holds one keep-alive HTTP/1.1 connection (requests are sent one after
//! another), so everything a caller routes through it arrives in order. A 503 or a broken
//! connection (or a 408, or a proxy's 502 or 504) resends the same batch after `Retry-After` or an exponential backoff, up to a
//! deadline; that is safe because the engine drops resent event ids. Other statuses are final.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde::Deserialize;

use crate::error::{Error, Result};

/// What the gateway answered for a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Envelopes stored.
    pub accepted: u64,
    /// Envelopes refused.
    pub rejected: u64,
    /// Times the batch was sent again after a 503 or a connection error.
    pub resends: u64,
}

impl std::ops::AddAssign for Outcome {
    fn add_assign(&mut self, o: Outcome) {
        self.accepted += o.accepted;
        self.rejected += o.rejected;
        self.resends += o.resends;
    }
}

#[derive(Deserialize)]
struct Answer {
    accepted: u64,
    rejected: u64,
}

/// One connection to a gateway.
pub struct GatewayClient {
    http: reqwest::Client,
    url: String,
    retry_for: Duration,
}

/// Answers after which a batch is sent again: 408, the body did not arrive in time (a slow
/// link); 429, over a quota until Retry-After; 503, the gateway is busy; 502 and 504, a proxy in
/// front lost its connection to the gateway.
pub const RESENT: [u16; 5] = [408, 429, 502, 503, 504];

impl GatewayClient {
    /// A client for the gateway at `base` (`http://host:port`), resending for up to `retry_for`.
    pub fn new(base: &str, retry_for: Duration) -> Result<GatewayClient> {
        // A URL no request can go to is not worth the retry window.
        let url = reqwest::Url::parse(base).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if url.is_none() {
            return Err(Error::Setup(format!("the gateway URL {base:?} is not an http:// or https:// URL with a host (e.g. http://127.0.0.1:8080)")));
        }
        let http = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| Error::Http { what: "cannot build the HTTP client", source })?;
        Ok(GatewayClient { http, url: format!("{}/v1/envelopes", base.trim_end_matches('/')), retry_for })
    }

    /// Posts one NDJSON batch with `token`, resending on the answers that ask for it ([`RESENT`],
    /// after their Retry-After) and on connection errors, for at most `retry_for`.
    pub async fn post_ndjson(&self, token: &str, body: Bytes) -> Result<Outcome> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut resends = 0;
        loop {
            let sent = self
                .http
                .post(&self.url)
                .bearer_auth(token)
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .body(body.clone())
                .send()
                .await;
            // How long to wait before the next try, and the connection error it follows.
            let (wait, failed) = match sent {
                Ok(r) if r.status().as_u16() == 202 || r.status().as_u16() == 422 => {
                    let a: Answer =
                        r.json().await.map_err(|source| Error::Http { what: "the gateway's answer is not the documented JSON", source })?;
                    return Ok(Outcome { accepted: a.accepted, rejected: a.rejected, resends });
                }
                Ok(r) if RESENT.contains(&r.status().as_u16()) => {
                    // Never sooner than the backoff: a Retry-After of 0 would resend at once for
                    // the whole window.
                    let after = r.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    (after.map_or(backoff, |s| Duration::from_secs(s).max(backoff)), None)
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    return Err(Error::Refused { status, body: text.trim().to_string() });
                }
                Err(e) => (backoff, Some(e)),
            };
            if started.elapsed() + wait > self.retry_for {
                return Err(match failed {
                    Some(source) => Error::Unreachable { url: self.url.clone(), retry_for: self.retry_for, source },
                    None => Error::Overloaded(started.elapsed()),
                });
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            resends += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gateway that never answers is reported as unreachable, naming the URL and the last
    /// connection error (it was reported as "answered 503"); a URL that cannot be posted to is
    /// refused before anything is sent.
    #[tokio::test]
    async fn a_closed_port_is_unreachable_not_overloaded_and_a_bad_url_is_refused_at_once() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let client = GatewayClient::new(&format!("http://127.0.0.1:{port}"), Duration::from_millis(500)).unwrap();
        let started = Instant::now();
        let e = client.post_ndjson("t", Bytes::from_static(b"{}\n")).await.unwrap_err();
        assert!(matches!(e, Error::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        for bad in ["127.0.0.1:8080", "ftp://127.0.0.1:8080", "http://"] {
            let e = GatewayClient::new(bad, Duration::from_secs(60)).err().unwrap_or_else(|| panic!("{bad} was taken"));
            assert!(e.to_string().contains(bad) && e.to_string().contains("http://"), "{bad}: {e}");
        }
    }
    /// A proxy in front of the gateway answers 502 or 504 when it lost the connection to it (it
    /// may have reused one the gateway was closing): the batch is sent again, as on 503. So is
    /// one answered 429 (over a quota), after its Retry-After: it was a final error.
    #[tokio::test]
    async fn a_proxys_502_and_504_and_a_quotas_429_are_resent() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let calls = std::sync::Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let app = axum::Router::new().route(
            "/v1/envelopes",
            axum::routing::post(move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    let none = axum::http::HeaderMap::new();
                    let mut retry = axum::http::HeaderMap::new();
                    retry.insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
                    match n {
                        0 => (axum::http::StatusCode::BAD_GATEWAY, none, String::new()),
                        1 => (axum::http::StatusCode::GATEWAY_TIMEOUT, none, String::new()),
                        2 => (axum::http::StatusCode::TOO_MANY_REQUESTS, retry, String::new()),
                        _ => (axum::http::StatusCode::ACCEPTED, none, r#"{"accepted":1,"rejected":0}"#.to_string()),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = GatewayClient::new(&format!("http://{addr}"), Duration::from_secs(10)).unwrap();
        let started = Instant::now();
        let o = client.post_ndjson("t", Bytes::from_static(b"{}\n")).await.unwrap();
        assert_eq!(o, Outcome { accepted: 1, rejected: 0, resends: 3 });
        // Backoffs of 100 and 200 ms, then the 429's Retry-After of 1 s.
        assert!(started.elapsed() >= Duration::from_millis(1300), "Retry-After not waited for: {:?}", started.elapsed());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
