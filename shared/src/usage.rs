//! Usage per tenant: counters the services keep (logins, requests, votes accepted) and the
//! monthly report built from them and from what the database already holds (elections,
//! tokens issued, votes recorded).
//!
//! Each instance counts in memory, per tenant and minute (votes also per second), and adds its
//! counts to `ops.usage_minutes` / `ops.usage_vote_seconds` in one call every
//! `USAGE_FLUSH_MS` (60 s) and when it stops. Counts only: no member, token, receipt or
//! choice. A request counts for a tenant once the service knows whose it is (voting token,
//! session, S2S key, login, a receipt of a known election: [`crate::telemetry::record_tenant`]);
//! probes, metrics, key sets and refused anonymous requests belong to no tenant and are not
//! counted. A flush that fails keeps its counts for the next one.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use sqlx::{PgConnection, PgPool};

/// `USAGE_FLUSH_MS` (default 60000): how often an instance adds its counts to the database.
pub fn flush_interval_from_env(env: &mut crate::config::Env) -> Duration {
    let every = env.millis_or("USAGE_FLUSH_MS", 60_000);
    if every.is_zero() {
        env.problem("USAGE_FLUSH_MS must be at least 1");
    }
    every
}

#[derive(Default)]
struct Counts {
    /// (tenant, minute as Unix seconds) → logins, requests, votes.
    minutes: HashMap<(String, i64), [i64; 3]>,
    /// (tenant, Unix second) → votes.
    seconds: HashMap<(String, i64), i64>,
}

impl Counts {
    fn merge(&mut self, other: Counts) {
        for (key, add) in other.minutes {
            let counts = self.minutes.entry(key).or_default();
            for (c, a) in counts.iter_mut().zip(add) {
                *c += a;
            }
        }
        for (key, add) in other.seconds {
            *self.seconds.entry(key).or_default() += add;
        }
    }
}

const LOGINS: usize = 0;
const REQUESTS: usize = 1;
const VOTES: usize = 2;

/// One instance's counters, shared by its handlers.
#[derive(Default)]
pub struct Usage {
    counts: Mutex<Counts>,
}

impl Usage {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A session issued for `tenant`.
    pub fn login(&self, tenant: &str) {
        self.add(tenant, LOGINS, Utc::now());
    }

    /// A request of `tenant` (any outcome).
    pub fn request(&self, tenant: &str) {
        self.add(tenant, REQUESTS, Utc::now());
    }

    /// A vote accepted (202 or 201) for `tenant`.
    pub fn vote(&self, tenant: &str) {
        let now = Utc::now();
        self.add(tenant, VOTES, now);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts
            .seconds
            .entry((tenant.to_owned(), now.timestamp()))
            .or_default() += 1;
    }

    fn add(&self, tenant: &str, what: usize, at: DateTime<Utc>) {
        let minute = at.timestamp() - at.timestamp().rem_euclid(60);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .minutes
            .entry((tenant.to_owned(), minute))
            .or_default()[what] += 1;
    }

    /// Adds everything counted since the last flush to the database, in one call; on failure
    /// the counts stay for the next flush.
    pub async fn flush(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let taken = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        if taken.minutes.is_empty() && taken.seconds.is_empty() {
            return Ok(());
        }
        let at = |t: i64| DateTime::from_timestamp(t, 0).unwrap_or_default();
        let (mut org, mut minute, mut logins, mut requests, mut votes) =
            (vec![], vec![], vec![], vec![], vec![]);
        for ((tenant, m), c) in &taken.minutes {
            org.push(tenant.clone());
            minute.push(at(*m));
            logins.push(c[LOGINS]);
            requests.push(c[REQUESTS]);
            votes.push(c[VOTES]);
        }
        let (mut vote_org, mut second, mut count) = (vec![], vec![], vec![]);
        for ((tenant, s), n) in &taken.seconds {
            vote_org.push(tenant.clone());
            second.push(at(*s));
            count.push(*n);
        }
        let added = sqlx::query!(
            "SELECT ops.add_usage($1, $2, $3, $4, $5, $6, $7, $8)",
            &org,
            &minute,
            &logins,
            &requests,
            &votes,
            &vote_org,
            &second,
            &count
        )
        .execute(pool)
        .await;
        if let Err(e) = added {
            self.counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .merge(taken);
            return Err(e);
        }
        Ok(())
    }

    /// Flushes every `every` for as long as the task lives.
    pub fn spawn_flusher(self: &Arc<Self>, pool: PgPool, every: Duration) -> Flusher {
        let this = self.clone();
        Flusher(crate::db::spawn_periodic(
            every,
            "adding usage counts",
            move || {
                let (this, pool) = (this.clone(), pool.clone());
                async move { this.flush(&pool).await }
            },
        ))
    }
}

/// The background flush, stopped when dropped.
pub struct Flusher(tokio::task::JoinHandle<()>);

impl Drop for Flusher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A calendar month in UTC (`YYYY-MM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl std::str::FromStr for Month {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        let bad = || format!("`{raw}` is not a month (YYYY-MM)");
        let (year, month) = raw.split_once('-').ok_or_else(bad)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(bad());
        }
        let (year, month): (i32, u32) = (
            year.parse().map_err(|_| bad())?,
            month.parse().map_err(|_| bad())?,
        );
        let first = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(bad)?;
        let next = if month == 12 {
            NaiveDate::from_ymd_opt(year + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(year, month + 1, 1)
        }
        .ok_or_else(bad)?;
        let utc = |d: NaiveDate| Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN));
        Ok(Self {
            start: utc(first),
            end: utc(next),
        })
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.start.year(), self.start.month())
    }
}

/// The unit prices the cost estimate uses, in USD. Planning figures, not a bill: set them
/// from the billing export (`usage-report --price-*`). The defaults:
/// - an election, 0.05: its definition pushes, token-slot registration and seal;
/// - a voting token issued, 0.0001: one events-svc transaction and a signature;
/// - a vote recorded, 0.0002: a Pub/Sub publish and delivery (≈ 2 KB), a share of a worker
///   batch and of its database transaction;
/// - a login, 0.0005: the OIDC exchange and a registry look-up;
/// - 1,000 requests, 0.002: Cloud Run's per-request price and a few milliseconds of CPU each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitPrices {
    pub election: f64,
    pub token: f64,
    pub vote: f64,
    pub login: f64,
    pub thousand_requests: f64,
}

impl Default for UnitPrices {
    fn default() -> Self {
        Self {
            election: 0.05,
            token: 0.0001,
            vote: 0.0002,
            login: 0.0005,
            thousand_requests: 0.002,
        }
    }
}

/// One tenant's month.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantUsage {
    pub tenant: String,
    pub elections: i64,
    pub tokens_issued: i64,
    pub votes_recorded: i64,
    pub logins: i64,
    pub requests: i64,
    pub peak_votes_per_second: i64,
    pub estimated_cost: f64,
    /// Percent of every tenant's estimated cost.
    pub cost_share: f64,
}

/// The report of one month.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageReport {
    pub month: Month,
    pub prices: UnitPrices,
    /// Whether any service counted anything in the month; if not, logins, requests and peak
    /// votes/s have no source (the counters did not exist yet, or no service ran) and are
    /// shown as `n/a` and left out of the cost.
    pub counted: bool,
    pub tenants: Vec<TenantUsage>,
}

type Row = (String, i64, i64, i64, i64, i64, i64);

/// Builds the report of `month` (read as the database owner: it reads every tenant's rows).
pub async fn report(
    conn: &mut PgConnection,
    month: Month,
    prices: UnitPrices,
) -> Result<UsageReport, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query!(
        r#"WITH e AS (SELECT org_id, id FROM events.elections WHERE created_at >= $1 AND created_at < $2),
              elections AS (SELECT org_id, count(*) AS n FROM e GROUP BY 1),
              tokens AS (SELECT t.org_id, count(*) AS n FROM events.token_issuance t
                           JOIN e ON e.id = t.election_id GROUP BY 1),
              votes AS (SELECT v.org_id, count(*) AS n FROM elections.voting_tokens v
                          JOIN e ON e.id = v.election_id WHERE v.used GROUP BY 1),
              counted AS (SELECT org_id, sum(logins) AS logins, sum(requests) AS requests
                            FROM ops.usage_minutes WHERE minute >= $1 AND minute < $2 GROUP BY 1),
              peak AS (SELECT org_id, max(votes) AS peak FROM ops.usage_vote_seconds
                         WHERE second >= $1 AND second < $2 GROUP BY 1),
              orgs AS (SELECT org_id FROM elections UNION SELECT org_id FROM counted
                       UNION SELECT org_id FROM peak)
         SELECT o.org_id AS "org_id!", coalesce(elections.n, 0) AS "elections!",
                coalesce(tokens.n, 0) AS "tokens!", coalesce(votes.n, 0) AS "votes!",
                coalesce(counted.logins, 0)::bigint AS "logins!",
                coalesce(counted.requests, 0)::bigint AS "requests!",
                coalesce(peak.peak, 0) AS "peak!"
           FROM orgs o
           LEFT JOIN elections USING (org_id) LEFT JOIN tokens USING (org_id)
           LEFT JOIN votes USING (org_id) LEFT JOIN counted USING (org_id)
           LEFT JOIN peak USING (org_id)
          ORDER BY o.org_id"#,
        month.start,
        month.end
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| (r.org_id, r.elections, r.tokens, r.votes, r.logins, r.requests, r.peak))
    .collect();
    let counted = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM ops.usage_minutes WHERE minute >= $1 AND minute < $2)
           AS "counted!""#,
        month.start,
        month.end
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(UsageReport::from_rows(month, prices, counted, rows))
}

impl UsageReport {
    fn from_rows(month: Month, prices: UnitPrices, counted: bool, rows: Vec<Row>) -> Self {
        let mut tenants: Vec<TenantUsage> = rows
            .into_iter()
            .map(
                |(tenant, elections, tokens, votes, logins, requests, peak)| {
                    let mut cost = elections as f64 * prices.election
                        + tokens as f64 * prices.token
                        + votes as f64 * prices.vote;
                    if counted {
                        cost += logins as f64 * prices.login
                            + requests as f64 / 1000.0 * prices.thousand_requests;
                    }
                    TenantUsage {
                        tenant,
                        elections,
                        tokens_issued: tokens,
                        votes_recorded: votes,
                        logins,
                        requests,
                        peak_votes_per_second: peak,
                        estimated_cost: cost,
                        cost_share: 0.0,
                    }
                },
            )
            .collect();
        let total: f64 = tenants.iter().map(|t| t.estimated_cost).sum();
        if total > 0.0 {
            for t in &mut tenants {
                t.cost_share = t.estimated_cost / total * 100.0;
            }
        }
        Self {
            month,
            prices,
            counted,
            tenants,
        }
    }

    fn counted_figure(&self, value: i64) -> String {
        if self.counted {
            value.to_string()
        } else {
            "n/a".into()
        }
    }

    /// A Markdown table, a total row and what each figure means.
    pub fn markdown(&self) -> String {
        let mut out = format!("# Usage report {} (UTC)\n\n", self.month);
        out.push_str("| tenant | elections | tokens issued | votes recorded | logins | requests | peak votes/s | estimated cost (USD) | cost share |\n");
        out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for t in &self.tenants {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {:.4} | {:.1} % |",
                t.tenant,
                t.elections,
                t.tokens_issued,
                t.votes_recorded,
                self.counted_figure(t.logins),
                self.counted_figure(t.requests),
                self.counted_figure(t.peak_votes_per_second),
                t.estimated_cost,
                t.cost_share,
            );
        }
        self.total_row(&mut out);
        out.push('\n');
        self.legend(&mut out);
        out
    }

    fn total_row(&self, out: &mut String) {
        let sum = |f: fn(&TenantUsage) -> i64| self.tenants.iter().map(f).sum::<i64>();
        // Tenants peak at different moments: the sum of their peaks is no peak, so none is given.
        let _ = writeln!(
            out,
            "| **all tenants** | {} | {} | {} | {} | {} | – | {:.4} | {} |",
            sum(|t| t.elections),
            sum(|t| t.tokens_issued),
            sum(|t| t.votes_recorded),
            self.counted_figure(sum(|t| t.logins)),
            self.counted_figure(sum(|t| t.requests)),
            self.tenants.iter().map(|t| t.estimated_cost).sum::<f64>(),
            if self.tenants.is_empty() {
                "–"
            } else {
                "100 %"
            },
        );
    }

    /// What each figure means.
    fn legend(&self, out: &mut String) {
        out.push_str(
            "Elections: created in the month; tokens issued and votes recorded: those of these \
             elections (votes recorded = voting tokens used).\n",
        );
        if self.counted {
            out.push_str(
                "Logins (sessions issued), requests and peak votes/s (votes ingest accepted in \
                 one second, all instances together) come from the services' usage counters; a \
                 request counts once its tenant is known (voting token, session, S2S key, login, \
                 receipt of a known election): probes, metrics, key sets and refused anonymous \
                 requests belong to no tenant.\n",
            );
        } else {
            out.push_str(
                "Logins, requests and peak votes/s: n/a, no service counted anything in this \
                 month (the usage counters did not exist yet, or nothing ran); the cost leaves \
                 them out.\n",
            );
        }
        let p = &self.prices;
        let _ = writeln!(
            out,
            "Estimated cost: unit prices (USD, planning figures, not a bill; `--price-*` \
             overrides them): election {}, token issued {}, vote recorded {}, login {}, \
             1,000 requests {}. Cost share: the tenant's part of all tenants' estimate.",
            p.election, p.token, p.vote, p.login, p.thousand_requests
        );
    }

    /// One line per tenant; `n/a` figures are empty.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "month,tenant,elections,tokens_issued,votes_recorded,logins,requests,\
             peak_votes_per_second,estimated_cost_usd,cost_share_percent\n",
        );
        let counted = |v: i64| {
            if self.counted {
                v.to_string()
            } else {
                String::new()
            }
        };
        for t in &self.tenants {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{:.4},{:.2}",
                self.month,
                t.tenant,
                t.elections,
                t.tokens_issued,
                t.votes_recorded,
                counted(t.logins),
                counted(t.requests),
                counted(t.peak_votes_per_second),
                t.estimated_cost,
                t.cost_share
            );
        }
        out
    }
}

#[cfg(test)]
mod tests;
