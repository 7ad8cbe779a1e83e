//! PostgreSQL pools with strict limits, tenant-scoped transactions, and the mapping of
//! database trouble to fail-fast answers.

use std::time::Duration;

use axum::http::StatusCode;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool, Postgres, Transaction};

use crate::config::DatabaseSettings;
use crate::domain::TenantId;
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
    tx.execute(sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(tenant.as_str()))
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
    sqlx::query("SELECT 1")
        .execute(pool)
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

/// An `elections.elections` row as both ingest and the worker read it.
#[derive(sqlx::FromRow)]
pub struct ElectionRow {
    pub org_id: String,
    pub id: uuid::Uuid,
    pub kind: String,
    pub options: sqlx::types::Json<Vec<crate::domain::ElectionOption>>,
    pub max_choices: i32,
    pub status: String,
    pub opens_at: Option<chrono::DateTime<chrono::Utc>>,
    pub closes_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the close was received; votes accepted after it are rejected.
    pub closed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub sealed_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl ElectionRow {
    /// The elections with these ids, in the transaction's tenant.
    pub const SELECT_BY_IDS: &'static str =
        "SELECT org_id, id, kind, options, max_choices, status, opens_at, closes_at, \
         closed_at, sealed_at FROM elections.elections WHERE id = ANY($1)";

    /// `None` if a stored value no longer parses (the definition was checked when stored).
    pub fn definition(&self) -> Option<crate::domain::ElectionDefinition> {
        use crate::domain::{ElectionDefinition, ElectionKind, ElectionStatus, TenantId};
        Some(ElectionDefinition {
            tenant: TenantId::parse(&self.org_id).ok()?,
            id: self.id,
            kind: ElectionKind::parse(&self.kind).ok()?,
            options: self.options.0.clone(),
            max_choices: u32::try_from(self.max_choices).ok()?,
            status: ElectionStatus::parse(&self.status).ok()?,
            opens_at: self.opens_at,
            closes_at: self.closes_at,
        })
    }
}

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
