//! A fresh database per test, cloned from a template migrated once per migration set.
//!
//! It needs the local stack (`infra/local/up.sh`): `EKKLESIA_ADMIN_DATABASE_URL` must be set
//! (`source infra/local/env.sh`).

use std::collections::BTreeMap;
use std::time::Duration;

use shared::config::DatabaseSettings;
use shared::domain::{
    ElectionDefinition, ElectionFields, ElectionKind, ElectionOption, ElectionStatus, TenantId,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;

const DEV_LOGINS: &str = include_str!("../../infra/local/dev-logins.sql");

fn admin_url() -> String {
    std::env::var("EKKLESIA_ADMIN_DATABASE_URL").unwrap_or_else(|_| {
        panic!("EKKLESIA_ADMIN_DATABASE_URL is not set: run the tests with infra/local/test.sh (or `source infra/local/env.sh` after infra/local/up.sh)")
    })
}

fn with_database(url: &str, database: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("a database URL ends in /dbname");
    format!("{base}/{database}")
}

fn with_user(url: &str, user: &str) -> String {
    // postgres://owner:pw@host:port/db -> postgres://user:user@host:port/db
    let (scheme, rest) = url.split_once("://").expect("a database URL has a scheme");
    let (_, host) = rest
        .split_once('@')
        .expect("a database URL has credentials");
    format!("{scheme}://{user}:{user}@{host}")
}

/// A service's login in tests and the local stack.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Ingest,
    Worker,
    Events,
    Members,
}

impl Role {
    pub fn login(self) -> &'static str {
        match self {
            Self::Ingest => "ingest_dev",
            Self::Worker => "worker_dev",
            Self::Events => "events_dev",
            Self::Members => "members_dev",
        }
    }
}

/// Template databases by how many migrations they ran (all of them, or an older release's).
static TEMPLATES: tokio::sync::Mutex<BTreeMap<usize, String>> =
    tokio::sync::Mutex::const_new(BTreeMap::new());

/// The template database migrated with the first `count` migrations: built once per migration
/// set, shared by all test processes.
#[allow(
    clippy::too_many_lines,
    reason = "test support: build or wait for the template, in order"
)]
async fn template(count: usize) -> String {
    let mut templates = TEMPLATES.lock().await;
    if let Some(name) = templates.get(&count) {
        return name.clone();
    }
    let admin = admin_url();
    let migrations: Vec<_> = shared::db::MIGRATOR.iter().take(count).collect();
    let mut fingerprint = Vec::new();
    for m in &migrations {
        fingerprint.extend_from_slice(&m.checksum);
    }
    fingerprint.extend_from_slice(DEV_LOGINS.as_bytes());
    let name = format!(
        "ekklesia_tpl_{}",
        &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&fingerprint))[..12]
    );
    let mut conn = PgConnection::connect(&admin)
        .await
        .expect("connect as the owner (is the local stack up?)");
    // Serialise template creation across test processes.
    conn.execute("SELECT pg_advisory_lock(727274)")
        .await
        .expect("advisory lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .expect("query pg_database");
    if !exists {
        let building = format!("{name}_building");
        conn.execute(format!("DROP DATABASE IF EXISTS {building}").as_str())
            .await
            .expect("drop");
        conn.execute(format!("CREATE DATABASE {building}").as_str())
            .await
            .expect("create template");
        {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&with_database(&admin, &building))
                .await
                .expect("connect template");
            if migrations.len() == shared::db::MIGRATOR.iter().count() {
                shared::db::migrate(&pool).await.expect("migrations");
            } else {
                // An older release's schema: the same migrations, one by one, as sqlx records
                // them, so the rest can be applied later by `shared::db::migrate`.
                use sqlx::migrate::Migrate;
                let mut c = pool.acquire().await.expect("connection");
                c.ensure_migrations_table().await.expect("migrations table");
                for m in &migrations {
                    c.apply(m).await.expect("migration");
                }
            }
            pool.execute(DEV_LOGINS).await.expect("dev logins");
            pool.close().await;
        }
        conn.execute(format!("ALTER DATABASE {building} RENAME TO {name}").as_str())
            .await
            .expect("rename template");
    }
    conn.execute("SELECT pg_advisory_unlock(727274)")
        .await
        .expect("unlock");
    templates.insert(count, name.clone());
    name
}

/// A fresh, migrated database for one test.
pub struct TestDb {
    pub name: String,
    pub owner: PgPool,
    admin_url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        Self::create_at(shared::db::MIGRATOR.iter().count()).await
    }

    /// A fresh database with only the first `count` migrations applied: the schema of the
    /// release before them, for tests that migrate it under running services.
    pub async fn create_at(count: usize) -> Self {
        let template = template(count).await;
        let admin = admin_url();
        let name = format!("ekklesia_test_{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("connect as the owner");
        conn.execute(format!("CREATE DATABASE {name} TEMPLATE {template}").as_str())
            .await
            .expect("create test database");
        let owner_url = with_database(&admin, &name);
        let owner = PgPoolOptions::new()
            .max_connections(4)
            .connect(&owner_url)
            .await
            .expect("connect test db");
        Self {
            name,
            owner,
            admin_url: owner_url,
        }
    }

    /// The owner's URL for this database (what an operator's tools use).
    pub fn admin_url(&self) -> String {
        self.admin_url.clone()
    }

    /// Connection URL for a service role's login.
    pub fn url(&self, role: Role) -> String {
        with_user(&self.admin_url, role.login())
    }

    pub fn settings(&self, role: Role, max_connections: u32) -> DatabaseSettings {
        DatabaseSettings {
            url: self.url(role),
            max_connections,
            acquire_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
        }
    }

    /// The URL with its host and port replaced (to route through a [`TcpProxy`]).
    pub fn url_via(&self, role: Role, addr: std::net::SocketAddr) -> String {
        let url = self.url(role);
        let (scheme_user, rest) = url.rsplit_once('@').expect("credentials");
        let (_, db) = rest.split_once('/').expect("database");
        format!("{scheme_user}@{addr}/{db}")
    }

    pub async fn pool(&self, role: Role) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url(role))
            .await
            .expect("connect as service role")
    }

    /// How many lock requests wait directly for the backend `pid` (a test's open transaction),
    /// so a test can tell that a service is blocked behind it.
    pub async fn lock_waiters_of(&self, pid: i32) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(pid)
        .fetch_one(&self.owner)
        .await
        .expect("read pg_locks")
    }

    /// An open single-choice election of `tenant` with options `o0`…, stored as the owner
    /// (for tests and benchmarks of the elections side that do not run ingest's S2S API).
    pub async fn open_election(&self, tenant: &TenantId, options: usize) -> ElectionDefinition {
        let definition = ElectionDefinition::new(ElectionFields {
            tenant: tenant.clone(),
            id: Uuid::new_v4(),
            kind: ElectionKind::Single,
            options: (0..options)
                .map(|i| ElectionOption {
                    id: format!("o{i}"),
                    label: format!("Option {i}"),
                })
                .collect(),
            max_choices: 1,
            status: ElectionStatus::Open,
            opens_at: None,
            closes_at: None,
        })
        .expect("a valid election");
        sqlx::query(
            "INSERT INTO elections.elections (org_id, id, kind, options, max_choices, status) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant.as_str())
        .bind(definition.id())
        .bind(definition.kind().as_str())
        .bind(sqlx::types::Json(definition.options()))
        .bind(definition.max_choices() as i32)
        .bind(definition.status().as_str())
        .execute(&self.owner)
        .await
        .expect("open election");
        definition
    }
}

/// Host and port of the admin database URL (what a proxy forwards to).
pub async fn database_addr() -> std::net::SocketAddr {
    let url = admin_url();
    let host_port = url
        .rsplit_once('@')
        .expect("creds")
        .1
        .split('/')
        .next()
        .expect("host")
        .to_owned();
    tokio::net::lookup_host(host_port)
        .await
        .expect("resolve")
        .next()
        .expect("an address")
}
