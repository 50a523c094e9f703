//! `POST /v1/sessions`: a browser game client's credentials.
//!
//! A browser cannot keep an API key, so the API gives each new game session its own
//! short-lived token, bound to a fresh session id and to the `pitgun-web` source
//! ([`pitgun_runtime::browser`]); the gateway accepts it for that session's envelopes only. The
//! answer also names the gateway to send them to, so a page needs to know only the API.
//!
//! Anyone may ask, so requests are limited per client address: the TCP peer, or, behind one
//! trusted proxy (`--trust-forwarded-for`), the address that proxy appended to
//! `X-Forwarded-For`. Without that flag behind a proxy, everyone shares the proxy's quota. A
//! client over its quota gets 429 with `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pitgun_runtime::browser::{SessionClaims, SessionKey};
use pitgun_runtime::quota::{client_address, Quota, MAX_CLIENTS};
use rand::RngCore;
use serde_json::{json, Value};

/// The source a browser session sends for (the game's producer id in the dictionary).
pub const BROWSER_SOURCE: &str = "pitgun-web";

/// How sessions are issued.
pub struct SessionSettings {
    /// The secret shared with the gateway.
    pub key: SessionKey,
    /// The gateway's URL as browsers reach it.
    pub gateway_url: String,
    /// How long a token is valid.
    pub ttl: Duration,
    /// New sessions per client address per minute.
    pub per_minute: NonZeroU32,
    /// Take the client address from the last `X-Forwarded-For` entry (one trusted proxy in front).
    pub trust_forwarded_for: bool,
}

/// Issues session tokens, within each client address's quota.
pub struct Sessions {
    settings: SessionSettings,
    quota: Quota<IpAddr>,
}

/// Why no session was issued.
pub enum Refusal {
    /// The client asked too often; it may ask again after this long.
    TooMany(Duration),
}

impl Sessions {
    /// An issuer; the quota allows a burst of one minute's sessions.
    pub fn new(settings: SessionSettings) -> Sessions {
        let quota = Quota::per_minute(settings.per_minute).with_max_clients(MAX_CLIENTS);
        Sessions { settings, quota }
    }

    /// The address a request's quota is kept under ([`client_address`]).
    pub fn client(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        client_address(peer, headers, self.settings.trust_forwarded_for)
    }

    /// A new session for `client`, as the JSON answer.
    pub fn issue(&self, client: IpAddr) -> Result<Value, Refusal> {
        self.quota.take(&client).map_err(Refusal::TooMany)?;
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let sid = format!("web-{}", hex::encode(id));
        let now = SystemTime::now();
        let exp = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).saturating_add(self.settings.ttl.as_secs());
        let token = self.settings.key.issue(&SessionClaims { sid: sid.clone(), src: BROWSER_SOURCE.into(), exp });
        Ok(json!({
            "session_id": sid,
            "token": token,
            "expires_at": humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(exp)).to_string(),
            // The server's clock: a browser takes its event times from it, its own may be wrong.
            "issued_at": humantime::format_rfc3339_millis(now).to_string(),
            "gateway": self.settings.gateway_url,
            "source": {"kind": "game", "id": BROWSER_SOURCE},
        }))
    }

    /// Forgets clients whose quota is full again, so the table stays as small as the clients
    /// of the last minute.
    pub fn forget_idle_clients(&self) {
        self.quota.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(per_minute: u32) -> Sessions {
        Sessions::new(SessionSettings {
            key: SessionKey::new(&[3u8; 32]).unwrap(),
            gateway_url: "http://127.0.0.1:8080".into(),
            ttl: Duration::from_secs(60),
            per_minute: NonZeroU32::new(per_minute).unwrap(),
            trust_forwarded_for: true,
        })
    }

    #[test]
    fn the_quota_follows_the_forwarded_address_only_when_trusted() {
        let s = sessions(1);
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 198.51.100.2".parse().unwrap());
        assert_eq!(s.client(proxy, &h), "198.51.100.2".parse::<IpAddr>().unwrap());
        let untrusted = Sessions::new(SessionSettings { trust_forwarded_for: false, ..s.settings });
        assert_eq!(untrusted.client(proxy, &h), proxy);
    }

    #[test]
    fn a_token_is_bound_to_its_new_session_and_the_browser_source() {
        let s = sessions(10);
        let a = s.issue("127.0.0.1".parse().unwrap()).ok().unwrap();
        let b = s.issue("127.0.0.1".parse().unwrap()).ok().unwrap();
        assert_ne!(a["session_id"], b["session_id"]);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = SessionKey::new(&[3u8; 32]).unwrap().verify(a["token"].as_str().unwrap(), now).unwrap();
        assert_eq!(claims.sid, a["session_id"].as_str().unwrap());
        assert_eq!(claims.src, BROWSER_SOURCE);
        assert!(claims.exp > now && claims.exp <= now + 61, "{claims:?}");
        // The server's clock, for a browser whose own is wrong: within the test's second.
        let issued = humantime::parse_rfc3339(a["issued_at"].as_str().expect("issued_at")).unwrap();
        let issued = issued.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!(issued >= now.saturating_sub(1) && issued <= now + 1, "{a}");
    }

    #[test]
    fn each_address_has_its_own_quota() {
        let s = sessions(2);
        let (one, two): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(s.issue(one).is_ok() && s.issue(one).is_ok());
        match s.issue(one) {
            Err(Refusal::TooMany(wait)) => assert!(wait > Duration::ZERO && wait <= Duration::from_secs(30), "{wait:?}"),
            Ok(v) => panic!("a third session within the minute was issued: {v}"),
        }
        assert!(s.issue(two).is_ok(), "another address is not limited by the first");
    }
}
