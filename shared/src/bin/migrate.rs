//! Applies the SQL migrations (`infra/migrations`) to the database named by
//! `EKKLESIA_ADMIN_DATABASE_URL` (or `DATABASE_URL`): the schema owner's connection. As a
//! Cloud Run job it stops its Cloud SQL Auth Proxy sidecar when done (`CLOUD_SQL_PROXY_QUIT_URL`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let result = run().await;
    // On Cloud Run the proxy sidecar would otherwise keep the job's task running.
    shared::db::quit_proxy(
        std::env::var(shared::db::PROXY_QUIT_URL_VAR)
            .ok()
            .as_deref(),
    )
    .await;
    result
}

async fn run() -> anyhow::Result<()> {
    let url = std::env::var("EKKLESIA_ADMIN_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .map_err(|_| {
            anyhow::anyhow!("set EKKLESIA_ADMIN_DATABASE_URL (the schema owner's connection)")
        })?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(&url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect: {}", shared::db::redact(&e)))?;
    shared::db::migrate(&pool).await?;
    println!(
        "migrations applied ({} known)",
        shared::db::MIGRATOR.iter().count()
    );
    Ok(())
}
