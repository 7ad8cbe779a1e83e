//! Request rate limits (governor): one budget per client address and one for the instance.
//! A refusal carries the seconds until a retry can succeed, for the 429's `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct Limits {
    global: DefaultDirectRateLimiter,
    per_client: DefaultKeyedRateLimiter<IpAddr>,
}

/// `per_second` sustained, bursts of two seconds' worth.
fn quota(per_second: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(per_second.saturating_mul(2).max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl Limits {
    pub fn new(per_client: u32, global: u32) -> Self {
        Self {
            global: RateLimiter::direct(quota(global)),
            per_client: RateLimiter::keyed(quota(per_client)),
        }
    }

    /// `Err(seconds)`: refused; retry after that many seconds (at least 1).
    pub fn check(&self, client: IpAddr) -> Result<(), u64> {
        // The limiters' own clock: building a new one calibrates it (`cpuid` and a timing
        // loop), which cost ingest 7 % of its CPU when it was done on every vote.
        let wait = match (self.per_client.check_key(&client), self.global.check()) {
            (Ok(()), Ok(())) => return Ok(()),
            (Err(not_until), _) => not_until.wait_time_from(self.per_client.clock().now()),
            (_, Err(not_until)) => not_until.wait_time_from(self.global.clock().now()),
        };
        Err(wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Forgets clients not seen lately (call now and then: the keyed map grows with clients).
    pub fn retain_recent(&self) {
        self.per_client.retain_recent();
    }
}
