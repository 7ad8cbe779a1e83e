//! A circuit breaker for the client: stop calling a failing peer for a while.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Opens after `threshold` consecutive failed calls; after `cooldown` one trial call is let
/// through (half-open) and its outcome closes or re-opens it.
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            state: Mutex::new(BreakerState::default()),
        }
    }

    pub(super) fn allow(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.open_until {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                // Half-open: this caller is the trial; others stay out until it reports.
                state.open_until = Some(Instant::now() + self.cooldown);
                true
            }
            None => true,
        }
    }

    pub(super) fn record(&self, success: bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if success {
            state.consecutive_failures = 0;
            state.open_until = None;
        } else {
            state.consecutive_failures += 1;
            if state.consecutive_failures >= self.threshold {
                state.open_until = Some(Instant::now() + self.cooldown);
            }
        }
    }

    pub fn is_open(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.open_until.is_some_and(|until| Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_repeated_failures() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(breaker.allow());
            breaker.record(false);
        }
        assert!(!breaker.allow());
        assert!(breaker.is_open());
    }
}
