//! Request quotas kept per client: the API's session issuing and the gateway's per-credential and
//! per-address limits count the same way (`governor`'s GCRA: a full bucket of `n` requests,
//! refilled at `n` per period), and find the client's address the same way.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota as Rate, RateLimiter};

/// Most client addresses a quota keyed by address remembers at once ([`Quota::with_max_clients`]).
/// Requests from more distinct addresses than this between two [`Quota::forget_idle`] calls (a
/// botnet, or one network's many prefixes) are refused as a whole until idle ones are forgotten,
/// so the table cannot grow without bound. Quotas keyed by credential are not capped: credentials
/// exist only as issued.
pub const MAX_CLIENTS: usize = 100_000;

/// What a full table asks a client to wait: the services forget idle clients every minute.
const FULL_TABLE_WAIT: Duration = Duration::from_secs(60);

/// At most `n` requests per period per key; a quiet key may spend a whole period's `n` at once.
pub struct Quota<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    max_clients: usize,
}

impl<K: Hash + Eq + Clone> Quota<K> {
    /// `n` per second.
    pub fn per_second(n: NonZeroU32) -> Quota<K> {
        Quota { limiter: RateLimiter::keyed(Rate::per_second(n)), max_clients: usize::MAX }
    }

    /// `n` per minute.
    pub fn per_minute(n: NonZeroU32) -> Quota<K> {
        Quota { limiter: RateLimiter::keyed(Rate::per_minute(n)), max_clients: usize::MAX }
    }

    /// The same quota remembering at most `max` clients (no bound by default; address-keyed
    /// quotas use [`MAX_CLIENTS`]): while `max` are remembered, every request is refused.
    pub fn with_max_clients(self, max: usize) -> Quota<K> {
        Quota { max_clients: max, ..self }
    }

    /// Takes one request from `key`'s quota; `Err`: how long until it may ask again.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        if self.limiter.len() >= self.max_clients {
            return Err(FULL_TABLE_WAIT);
        }
        self.limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Forgets keys whose quota is full again, so the table holds only recent clients.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// `Retry-After` for a wait: whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The address a request is counted under: the TCP peer or, behind one trusted proxy
/// (`trust_forwarded_for`), the last `X-Forwarded-For` entry, the one that proxy appended;
/// earlier entries are the client's own word. IPv4-mapped IPv6 counts as IPv4, and an IPv6
/// address as its /64 — what one subscriber is usually given, so hopping between addresses of
/// one network does not buy a fresh quota.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = || {
        let last = headers.get_all("x-forwarded-for").iter().next_back()?.to_str().ok()?;
        last.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
    };
    let ip = if trust_forwarded_for { forwarded().unwrap_or(peer) } else { peer };
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !(u64::MAX as u128))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_a_trusted_proxy_the_address_is_the_one_it_appended() {
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 198.51.100.2".parse().unwrap());
        assert_eq!(client_address(proxy, &h, true), "198.51.100.2".parse::<IpAddr>().unwrap());
        assert_eq!(client_address(proxy, &HeaderMap::new(), true), proxy);
        assert_eq!(client_address("::ffff:10.1.2.3".parse().unwrap(), &HeaderMap::new(), false), "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!(client_address(proxy, &h, false), proxy, "a header an untrusted client sends is ignored");
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let a = client_address("2001:db8:7:1::1".parse().unwrap(), &HeaderMap::new(), false);
        let b = client_address("2001:db8:7:1:ffff:1234:5678:9abc".parse().unwrap(), &HeaderMap::new(), false);
        assert_eq!(a, b);
        assert_eq!(a, "2001:db8:7:1::".parse::<IpAddr>().unwrap());
        assert_ne!(a, client_address("2001:db8:7:2::1".parse().unwrap(), &HeaderMap::new(), false));
    }

    #[test]
    fn a_full_table_refuses_until_idle_clients_are_forgotten() {
        let q: Quota<u32> = Quota::per_second(NonZeroU32::new(1000).unwrap()).with_max_clients(3);
        for k in 0..3 {
            assert!(q.take(&k).is_ok());
        }
        assert_eq!(q.take(&3), Err(FULL_TABLE_WAIT), "a fourth client while three are remembered");
        assert_eq!(q.len(), 3, "the refused client is not remembered");
        std::thread::sleep(Duration::from_millis(20));
        q.forget_idle();
        assert!(q.take(&3).is_ok(), "room again once idle clients are forgotten");
    }

    #[test]
    fn each_key_has_its_own_bucket_and_the_wait_is_named() {
        let q: Quota<u8> = Quota::per_minute(NonZeroU32::new(2).unwrap());
        assert!(q.take(&1).is_ok() && q.take(&1).is_ok());
        let wait = q.take(&1).unwrap_err();
        assert!(wait > Duration::from_secs(20) && wait <= Duration::from_secs(30), "{wait:?}");
        assert_eq!(retry_after_secs(wait), wait.as_secs() + 1);
        assert!(q.take(&2).is_ok(), "another key is not affected");
        assert_eq!(q.len(), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
    }
}
