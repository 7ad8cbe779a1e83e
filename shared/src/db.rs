//! PostgreSQL pools with strict limits, tenant-scoped transactions, and the mapping of
//! database trouble to fail-fast answers.

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgTypeInfo, PgValueRef};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::config::DatabaseSettings;
use crate::domain::{
    ElectionDefinition, ElectionFields, ElectionKind, ElectionOption, ElectionStatus, TenantId,
    VoteStatus,
};
use crate::problem::Problem;

/// Builds a pool that never makes a request wait more than `acquire_timeout` for a connection
/// and never lets one statement run longer than `statement_timeout`. Connections are opened
/// lazily so a service can start (and report not-ready) while the database is down.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.url.parse()?;
    let statement_timeout_ms = settings.statement_timeout.as_millis();
    let options = options.options([
        ("statement_timeout", statement_timeout_ms.to_string()),
        // A lock we cannot get quickly is a conflict to report, not a reason to wait.
        ("lock_timeout", "1000".to_owned()),
        ("idle_in_transaction_session_timeout", "10000".to_owned()),
    ]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .connect_lazy_with(options))
}

/// Opens a transaction whose row-level-security tenant is `tenant` (`app.org_id`, local to the
/// transaction so a pooled connection never carries it into the next request).
pub async fn begin_for_tenant<'a>(
    pool: &'a PgPool,
    tenant: &TenantId,
) -> Result<Transaction<'a, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    set_tenant(&mut tx, tenant).await?;
    Ok(tx)
}

/// Switches the tenant inside an open transaction (the worker groups a batch by tenant).
pub async fn set_tenant(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &TenantId,
) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT set_config('app.org_id', $1, true)", tenant.as_str())
        .fetch_one(&mut **tx)
        .await?;
    Ok(())
}

/// Runs `refresh` every `every` for as long as the task lives. A failure is logged (without
/// secrets) as `what failed` and whatever the last successful run left stays in force: a
/// database blip must not change a service's view of elections or of the queue flag.
pub fn spawn_periodic<F, Fut>(
    every: Duration,
    what: &'static str,
    mut refresh: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), sqlx::Error>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = refresh().await {
                tracing::warn!(error = %redact(&e), "{what} failed; keeping the last known state");
            }
        }
    })
}

/// SQLSTATE 55P03: `FOR UPDATE NOWAIT` (or `lock_timeout`) could not get the lock.
pub fn is_lock_unavailable(error: &sqlx::Error) -> bool {
    sqlx_state(error).as_deref() == Some("55P03")
}

/// SQLSTATE 57014: the statement ran into `statement_timeout`.
pub fn is_statement_timeout(error: &sqlx::Error) -> bool {
    sqlx_state(error).as_deref() == Some("57014")
}

fn sqlx_state(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

/// True for errors that mean "the database is busy or unreachable", where the caller should
/// retry later, as opposed to a bug or a constraint violation.
pub fn is_transient(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
    ) || is_lock_unavailable(error)
        || is_statement_timeout(error)
        || sqlx_state(error).is_some_and(|s| {
            s.starts_with("08")
                || s.starts_with("53")
                || s.starts_with("57P")
                || s == "40001"
                || s == "40P01"
        })
}

/// The answer for database trouble: a transient problem is a 503 with `Retry-After`, never a
/// hang; anything else is an internal error (logged, without secrets, by the caller).
pub fn problem_for(error: &sqlx::Error) -> Problem {
    if is_lock_unavailable(error) {
        Problem::unavailable(
            "busy",
            "this vote is being processed by another request; retry shortly",
            1,
        )
    } else if matches!(error, sqlx::Error::PoolTimedOut) {
        Problem::unavailable(
            "overloaded",
            "the database is at capacity; retry shortly",
            1,
        )
    } else if is_transient(error) {
        Problem::unavailable(
            "database-unavailable",
            "the database is unavailable; retry shortly",
            2,
        )
    } else {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "an unexpected database error occurred; it has been logged",
        )
    }
}

/// The SQL migrations in `infra/migrations`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../infra/migrations");

/// Runs the embedded migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// A cheap readiness probe.
pub async fn ping(pool: &PgPool) -> Result<(), String> {
    sqlx::query!("SELECT 1 AS one")
        .fetch_one(pool)
        .await
        .map(|_| ())
        .map_err(|e| format!("database unreachable: {}", redact(&e)))
}

/// `CLOUD_SQL_PROXY_QUIT_URL`: where a Cloud Run job's Cloud SQL Auth Proxy sidecar serves
/// `/quitquitquit` (infra/terraform/jobs.tf).
pub const PROXY_QUIT_URL_VAR: &str = "CLOUD_SQL_PROXY_QUIT_URL";

/// Asks a job's Cloud SQL Auth Proxy sidecar to exit, so the Cloud Run task ends when the job's
/// own work does (a sidecar still running would hold the task open until its timeout). Does
/// nothing without a URL (local runs, tests); a proxy that cannot be reached is reported on
/// stderr only: the job's own outcome decides its exit code.
pub async fn quit_proxy(url: Option<&str>) {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return;
    };
    let sent = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(client) => client
            .post(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        eprintln!("could not stop the Cloud SQL Auth Proxy sidecar: {e}");
    }
}

/// sqlx errors can quote the connection string on connect failures; keep only the kind.
pub fn redact(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(e) => format!("database error {}", e.code().unwrap_or_default()),
        sqlx::Error::PoolTimedOut => "pool timed out".into(),
        sqlx::Error::Io(e) => format!("io error: {}", e.kind()),
        sqlx::Error::Configuration(_) => "configuration error".into(),
        other => format!("{}", other)
            .split(['@', '?'])
            .next()
            .unwrap_or("database error")
            .to_owned(),
    }
}

/// An `elections.elections` row as both ingest and the worker read it. `kind` and `status`
/// are enums (the table's CHECK constraints admit nothing else); what the row cannot promise
/// (a valid tenant, options that parse and fit `max_choices`) is checked by
/// [`ElectionRow::definition`].
#[derive(Debug)]
pub struct ElectionRow {
    pub org_id: String,
    pub id: Uuid,
    pub kind: ElectionKind,
    pub options: serde_json::Value,
    pub max_choices: i32,
    pub status: ElectionStatus,
    pub opens_at: Option<DateTime<Utc>>,
    pub closes_at: Option<DateTime<Utc>>,
    /// When the close was received; votes accepted after it are rejected.
    pub closed_at: Option<DateTime<Utc>>,
    pub sealed_at: Option<DateTime<Utc>>,
}

/// A stored election no vote can be checked against, and why. Its votes are refused; the
/// caller logs this (the definition was checked when stored, so it means the row was edited).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("stored election {election_id} of `{tenant}` is unusable: {reason}")]
pub struct UnusableElection {
    pub election_id: Uuid,
    pub tenant: String,
    pub reason: String,
}

impl ElectionRow {
    /// The definition the row holds, or why it holds none.
    pub fn definition(&self) -> Result<ElectionDefinition, UnusableElection> {
        let unusable = |reason: String| UnusableElection {
            election_id: self.id,
            tenant: self.org_id.chars().take(64).collect(),
            reason,
        };
        let tenant = TenantId::parse(&self.org_id).map_err(|e| unusable(e.to_string()))?;
        let options: Vec<ElectionOption> = serde_json::from_value(self.options.clone())
            .map_err(|e| unusable(format!("options do not parse: {e}")))?;
        let max_choices = u32::try_from(self.max_choices)
            .map_err(|_| unusable(format!("max_choices {} is negative", self.max_choices)))?;
        ElectionDefinition::new(ElectionFields {
            tenant,
            id: self.id,
            kind: self.kind,
            options,
            max_choices,
            status: self.status,
            opens_at: self.opens_at,
            closes_at: self.closes_at,
        })
        .map_err(|e| unusable(e.to_string()))
    }

    /// The definition, or `None` once the reason there is none was logged as an error: its
    /// votes are then refused as for an election this side does not know.
    pub fn usable_definition(&self) -> Option<ElectionDefinition> {
        self.definition()
            .inspect_err(|e| {
                tracing::error!(election_id = %e.election_id, tenant = %e.tenant,
                    reason = %e.reason, "stored election is unusable; its votes are refused");
            })
            .ok()
    }
}

/// Enums stored as `text` columns whose CHECK constraints list their values: read with
/// `AS "col: Type"` in the query macros.
macro_rules! text_enum {
    ($($ty:ty),+) => {$(
        impl sqlx::Type<Postgres> for $ty {
            fn type_info() -> PgTypeInfo {
                <str as sqlx::Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <str as sqlx::Type<Postgres>>::compatible(ty)
            }
        }
        impl<'r> sqlx::Decode<'r, Postgres> for $ty {
            fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<$ty>::parse(<&str as sqlx::Decode<Postgres>>::decode(value)?)?)
            }
        }
    )+};
}
text_enum!(ElectionKind, ElectionStatus, VoteStatus);

#[cfg(test)]
mod quit_proxy_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_job_asks_its_proxy_sidecar_to_quit_and_only_when_told_where() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/quitquitquit",
            axum::routing::post(move || {
                let seen = seen.clone();
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        super::quit_proxy(None).await;
        super::quit_proxy(Some("  ")).await;
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        super::quit_proxy(Some(&format!("http://{addr}/quitquitquit"))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

#[cfg(test)]
mod election_row_tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn row() -> ElectionRow {
        ElectionRow {
            org_id: "party-a".into(),
            id: Uuid::from_u128(7),
            kind: ElectionKind::Multiple,
            options: serde_json::json!([{"id": "yes", "label": "Yes"}, {"id": "no", "label": "No"}]),
            max_choices: 2,
            status: ElectionStatus::Open,
            opens_at: None,
            closes_at: None,
            closed_at: None,
            sealed_at: None,
        }
    }

    type Edit = fn(&mut ElectionRow);

    #[test]
    fn an_unusable_row_says_why() {
        assert!(row().definition().is_ok());
        let cases: [(Edit, &str); 4] = [
            (|r| r.org_id = "Party A".into(), "tenant ids"),
            (
                |r| r.options = serde_json::json!({"yes": 1}),
                "options do not parse",
            ),
            (|r| r.max_choices = -1, "max_choices -1 is negative"),
            (|r| r.max_choices = 3, "max_choices must be between 1"),
        ];
        for (edit, why) in cases {
            let mut bad = row();
            edit(&mut bad);
            let e = bad.definition().expect_err(why);
            assert_eq!(e.election_id, Uuid::from_u128(7));
            assert!(e.reason.contains(why), "{why}: {e}");
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_unusable_row_is_logged_not_dropped_silently() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let mut bad = row();
        bad.max_choices = 3;
        let usable = tracing::subscriber::with_default(subscriber, || {
            (row().usable_definition(), bad.usable_definition())
        });
        assert!(usable.0.is_some() && usable.1.is_none());
        let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(logged.lines().count(), 1, "{logged}");
        assert!(logged.contains("ERROR"), "{logged}");
        assert!(logged.contains(&Uuid::from_u128(7).to_string()), "{logged}");
        assert!(logged.contains("max_choices must be between 1"), "{logged}");
    }
}
