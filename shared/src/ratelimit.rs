//! Request rate limits (governor). A refusal carries the seconds until a retry can succeed, for
//! the 429's `Retry-After`.
//!
//! Budgets are checked from the narrowest to the widest, and a wider one is charged only when the
//! narrower ones passed: a client that is refused spends nothing of the budget everyone shares.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::http::HeaderMap;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// `per_second` sustained, bursts of `burst` (at least 1 each).
fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

fn retry_after(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// One budget per key (a client address, a voting token).
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            limiter: RateLimiter::keyed(quota(per_second, burst)),
        }
    }

    /// Spends one request of `key`'s budget; `Err(seconds)` if it is spent.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        // The limiter's own clock: building a new one calibrates it (`cpuid` and a timing
        // loop), which cost ingest 7 % of its CPU when it was done on every vote.
        self.limiter
            .check_key(key)
            .map_err(|not_until| retry_after(not_until.wait_time_from(self.limiter.clock().now())))
    }

    /// Forgets keys not seen lately (call now and then: the map grows with keys).
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
    }
}

/// A budget per client address and one for the whole instance.
pub struct Limits {
    global: DefaultDirectRateLimiter,
    per_client: KeyedLimit<IpAddr>,
}

impl Limits {
    /// Each budget allows bursts of two seconds' worth.
    pub fn new(per_client: u32, global: u32) -> Self {
        Self {
            global: RateLimiter::direct(quota(global, global.saturating_mul(2))),
            per_client: KeyedLimit::new(per_client, per_client.saturating_mul(2)),
        }
    }

    /// `Err(seconds)`: refused; retry after that many seconds (at least 1). The instance's
    /// budget is charged only once the client's own budget allowed the request.
    pub fn check(&self, client: IpAddr) -> Result<(), u64> {
        self.per_client.check(&client)?;
        self.global
            .check()
            .map_err(|not_until| retry_after(not_until.wait_time_from(self.global.clock().now())))
    }

    /// Forgets clients not seen lately (call now and then: the keyed map grows with clients).
    pub fn retain_recent(&self) {
        self.per_client.retain_recent();
    }
}

/// The client's address: the peer's, or, behind `trusted_hops` proxies that each append the
/// address they saw to `X-Forwarded-For` (Cloud Run's front end is one), the entry the farthest
/// trusted proxy appended. Entries to its left were written by the client and prove nothing;
/// a header shorter than the trusted chain falls back to the peer.
pub fn client_address(peer: SocketAddr, headers: &HeaderMap, trusted_hops: usize) -> IpAddr {
    if trusted_hops == 0 {
        return peer.ip();
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    entries
        .len()
        .checked_sub(trusted_hops)
        .and_then(|i| entries.get(i))
        .and_then(|entry| entry.parse().ok())
        .unwrap_or_else(|| peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_refused_spends_nothing_of_the_shared_budget() {
        let limits = Limits::new(1, 3);
        let flooder: IpAddr = "10.0.0.1".parse().unwrap();
        // The flooder's own burst (2), then refusals that must not touch the global budget.
        assert!(limits.check(flooder).is_ok());
        assert!(limits.check(flooder).is_ok());
        for _ in 0..1000 {
            assert!(limits.check(flooder).is_err());
        }
        // Global burst is 6: 2 spent by the flooder, 4 left for everyone else.
        for n in 0..4 {
            let voter: IpAddr = format!("10.0.1.{n}").parse().unwrap();
            assert!(limits.check(voter).is_ok(), "voter {n}");
        }
    }

    #[test]
    fn keyed_budgets_are_separate_and_say_when_to_retry() {
        let limit = KeyedLimit::new(1, 2);
        assert!(limit.check(&"a").is_ok());
        assert!(limit.check(&"a").is_ok());
        assert_eq!(limit.check(&"a"), Err(1));
        assert!(limit.check(&"b").is_ok());
    }

    #[test]
    fn the_client_address_comes_from_the_trusted_hop_only() {
        let peer: SocketAddr = "10.9.9.9:443".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(client_address(peer, &headers, 1), peer.ip(), "no header");
        headers.append("x-forwarded-for", "6.6.6.6, 1.2.3.4".parse().unwrap());
        headers.append("x-forwarded-for", "5.6.7.8".parse().unwrap());
        assert_eq!(
            client_address(peer, &headers, 0),
            peer.ip(),
            "no proxy trusted"
        );
        assert_eq!(
            client_address(peer, &headers, 1),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_address(peer, &headers, 2),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_address(peer, &headers, 4),
            peer.ip(),
            "shorter than the chain"
        );
        let mut forged = HeaderMap::new();
        forged.append("x-forwarded-for", "not-an-address".parse().unwrap());
        assert_eq!(client_address(peer, &forged, 1), peer.ip());
    }
}
