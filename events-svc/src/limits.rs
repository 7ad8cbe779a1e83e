//! Request budgets (security review L7): one per member (the session's `sub`) and one for the
//! instance, so that a member flooding a route gets 429s while everyone else is served.
//!
//! The member's own budget is checked first and a refused request spends nothing of the
//! instance's: one member cannot drain the budget everyone shares. Admins and platform
//! operators are held to their own budget only (`counts_globally` false): they are few, and
//! closing an election must not wait behind a crowd. (`shared::ratelimit` keys on the client
//! address and checks both budgets at once, which is what the vote path needs today.)

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

/// How often members not seen lately are forgotten (the keyed map grows with members).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct Limits {
    per_member: DefaultKeyedRateLimiter<Uuid>,
    global: DefaultDirectRateLimiter,
    started: Instant,
    /// Seconds after `started` of the last sweep.
    last_sweep: AtomicU64,
}

/// `per_second` sustained, bursts of two seconds' worth.
fn quota(per_second: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(per_second.saturating_mul(2).max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl Limits {
    pub fn new(per_member: u32, global: u32) -> Self {
        Self {
            per_member: RateLimiter::keyed(quota(per_member)),
            global: RateLimiter::direct(quota(global)),
            started: Instant::now(),
            last_sweep: AtomicU64::new(0),
        }
    }

    /// `Err(seconds)`: refused; retry after that many seconds (at least 1).
    pub fn check(&self, member: Uuid, counts_globally: bool) -> Result<(), u64> {
        self.sweep_now_and_then();
        let refused = match self.per_member.check_key(&member) {
            Err(not_until) => Some(not_until.wait_time_from(self.per_member.clock().now())),
            Ok(()) if counts_globally => self
                .global
                .check()
                .err()
                .map(|not_until| not_until.wait_time_from(self.global.clock().now())),
            Ok(()) => None,
        };
        match refused {
            None => Ok(()),
            Some(wait) => Err(wait.as_secs_f64().ceil().max(1.0) as u64),
        }
    }

    fn sweep_now_and_then(&self) {
        let now = self.started.elapsed().as_secs();
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now >= last + SWEEP_EVERY.as_secs()
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.per_member.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_over_budget_is_refused_without_spending_the_shared_budget() {
        let limits = Limits::new(1, 3);
        let flooder = Uuid::new_v4();
        for attempt in 0..100 {
            let answer = limits.check(flooder, true);
            // Their own burst (2) passes, then only they are refused.
            assert_eq!(answer.is_ok(), attempt < 2, "attempt {attempt}");
        }
        // The shared burst (6) lost only the flooder's 2 that passed, not the 98 refused.
        for _ in 0..4 {
            assert!(limits.check(Uuid::new_v4(), true).is_ok());
        }
        assert!(limits.check(Uuid::new_v4(), true).unwrap_err() >= 1);
    }

    #[test]
    fn admins_count_against_their_own_budget_only() {
        let limits = Limits::new(1, 1);
        for _ in 0..2 {
            assert!(limits.check(Uuid::new_v4(), true).is_ok());
        }
        assert!(
            limits.check(Uuid::new_v4(), true).is_err(),
            "shared budget spent"
        );
        let admin = Uuid::new_v4();
        assert!(limits.check(admin, false).is_ok());
        assert!(limits.check(admin, false).is_ok());
        assert!(
            limits.check(admin, false).is_err(),
            "their own budget holds"
        );
    }
}
