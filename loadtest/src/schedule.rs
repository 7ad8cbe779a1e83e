//! Open-loop arrival schedules: when each request is *due*, decided before the run starts and
//! independent of how fast the system answers (so a slow answer cannot hold back the next
//! request and hide its own latency — no coordinated omission).

use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

/// A schedule that sends something and stays within a run's bounds: built only by
/// [`Schedule::constant`], [`Schedule::ramp`], [`Schedule::burst`] or [`Schedule::parse`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Schedule(Shape);

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Shape {
    /// `rate` requests per second for `secs` seconds, evenly spaced.
    Constant { rate: f64, secs: f64 },
    /// The rate grows linearly from `from` to `to` per second over `secs` seconds.
    Ramp { from: f64, to: f64, secs: f64 },
    /// `votes` requests all due at the same instant.
    Burst { votes: usize },
}

/// The most requests one schedule may hold (a bound on what one run can send).
pub const MAX_REQUESTS: usize = 200_000;

impl Schedule {
    /// `rate` requests per second for `secs` seconds, evenly spaced.
    pub fn constant(rate: f64, secs: f64) -> anyhow::Result<Self> {
        Self::checked(Shape::Constant { rate, secs })
    }

    /// The rate grows linearly from `from` to `to` per second over `secs` seconds.
    pub fn ramp(from: f64, to: f64, secs: f64) -> anyhow::Result<Self> {
        Self::checked(Shape::Ramp { from, to, secs })
    }

    /// `votes` requests all due at the same instant.
    pub fn burst(votes: usize) -> anyhow::Result<Self> {
        Self::checked(Shape::Burst { votes })
    }

    /// `constant:RATE:SECS`, `ramp:FROM:TO:SECS` or `burst:N`.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = raw.split(':').collect();
        let num = |s: &str, what: &str| -> anyhow::Result<f64> {
            let v: f64 = s
                .trim()
                .parse()
                .with_context(|| format!("{what} must be a number, got `{s}`"))?;
            if !v.is_finite() || v < 0.0 {
                bail!("{what} must be a non-negative number, got `{s}`");
            }
            Ok(v)
        };
        match parts.as_slice() {
            ["constant", rate, secs] => Self::constant(num(rate, "rate")?, num(secs, "seconds")?),
            ["ramp", from, to, secs] => Self::ramp(
                num(from, "start rate")?,
                num(to, "end rate")?,
                num(secs, "seconds")?,
            ),
            ["burst", n] => Self::burst(
                n.trim()
                    .parse()
                    .with_context(|| format!("burst size must be a whole number, got `{n}`"))?,
            ),
            _ => bail!(
                "a schedule is constant:RATE:SECS, ramp:FROM:TO:SECS or burst:N (got `{raw}`)"
            ),
        }
    }

    fn checked(shape: Shape) -> anyhow::Result<Self> {
        let schedule = Self(shape);
        schedule.check()?;
        Ok(schedule)
    }

    fn check(&self) -> anyhow::Result<()> {
        let n = self.requests();
        if n == 0 {
            bail!("the schedule sends nothing ({})", self.describe());
        }
        if n > MAX_REQUESTS {
            bail!(
                "the schedule sends {n} requests; at most {MAX_REQUESTS} per run ({})",
                self.describe()
            );
        }
        if let Shape::Constant { secs, .. } | Shape::Ramp { secs, .. } = self.0 {
            if secs > 600.0 {
                bail!("a schedule lasts at most 600 s");
            }
        }
        Ok(())
    }

    /// How many requests the schedule sends.
    pub fn requests(&self) -> usize {
        match self.0 {
            Shape::Constant { rate, secs } => (rate * secs).round() as usize,
            Shape::Ramp { from, to, secs } => ((from + to) / 2.0 * secs).round() as usize,
            Shape::Burst { votes } => votes,
        }
    }

    /// When each request is due, from the start of the run.
    pub fn offsets(&self) -> Vec<Duration> {
        let n = self.requests();
        match self.0 {
            Shape::Constant { rate, .. } => (0..n)
                .map(|i| Duration::from_secs_f64(i as f64 / rate))
                .collect(),
            Shape::Ramp { from, to, secs } => {
                // Requests due by t: N(t) = from·t + (to−from)·t²/(2·secs); request i is due
                // when N(t) = i.
                let a = (to - from) / (2.0 * secs);
                (0..n)
                    .map(|i| {
                        let i = i as f64;
                        let t = if a.abs() < 1e-12 {
                            i / from
                        } else {
                            (-from + (from * from + 4.0 * a * i).max(0.0).sqrt()) / (2.0 * a)
                        };
                        Duration::from_secs_f64(t.clamp(0.0, secs))
                    })
                    .collect()
            }
            Shape::Burst { .. } => vec![Duration::ZERO; n],
        }
    }

    /// How long the schedule lasts (0 for a burst).
    pub fn span(&self) -> Duration {
        match self.0 {
            Shape::Constant { secs, .. } | Shape::Ramp { secs, .. } => {
                Duration::from_secs_f64(secs)
            }
            Shape::Burst { .. } => Duration::ZERO,
        }
    }

    pub fn describe(&self) -> String {
        match self.0 {
            Shape::Constant { rate, secs } => format!("{rate} requests/s for {secs} s"),
            Shape::Ramp { from, to, secs } => {
                format!("ramp from {from} to {to} requests/s over {secs} s")
            }
            Shape::Burst { votes } => format!("{votes} requests all at once"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_spaces_requests() {
        let c = Schedule::parse("constant:300:5").unwrap();
        assert_eq!(c.requests(), 1500);
        let o = c.offsets();
        assert_eq!(o.len(), 1500);
        assert!((o[300].as_secs_f64() - 1.0).abs() < 1e-9);
        let r = Schedule::parse("ramp:100:300:10").unwrap();
        assert_eq!(r.requests(), 2000);
        let o = r.offsets();
        assert!(o.windows(2).all(|w| w[0] <= w[1]));
        assert!(o.last().unwrap().as_secs_f64() <= 10.0);
        // Half-way through a 100→300 ramp, 100·5 + 200·25/20 = 750 requests are due.
        let due_by_5s = o.iter().filter(|d| d.as_secs_f64() < 5.0).count();
        assert!((749..=751).contains(&due_by_5s), "{due_by_5s}");
        assert_eq!(Schedule::parse("burst:1000").unwrap().offsets().len(), 1000);
        for bad in [
            "burst:x",
            "constant:1",
            "ramp:1:2",
            "constant:-1:5",
            "nope",
            "burst:0",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_schedule_is_checked_however_it_is_built() {
        assert!(Schedule::constant(300.0, 5.0).is_ok());
        assert!(Schedule::constant(0.0, 5.0).is_err(), "sends nothing");
        assert!(
            Schedule::constant(1000.0, 601.0).is_err(),
            "over the request bound"
        );
        assert!(Schedule::constant(1.0, 601.0).is_err(), "longer than 600 s");
        assert!(
            Schedule::ramp(1.0, 2.0, 700.0).is_err(),
            "longer than 600 s"
        );
        assert!(Schedule::burst(0).is_err(), "sends nothing");
        assert!(Schedule::burst(MAX_REQUESTS + 1).is_err());
        let burst = serde_json::to_value(Schedule::burst(3).unwrap()).unwrap();
        assert_eq!(burst, serde_json::json!({"kind": "burst", "votes": 3}));
    }
}
