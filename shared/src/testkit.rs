//! Test support used by every crate's integration tests (and the demo): a fresh database per
//! test cloned from a migrated template, a fresh topic and subscription per test on the Pub/Sub
//! emulator, generated keys, and a TCP proxy that can cut a connection to simulate an outage.
//!
//! It needs the local stack (`infra/local/up.sh`): `EKKLESIA_ADMIN_DATABASE_URL` and
//! `PUBSUB_EMULATOR_HOST` must be set (`source infra/local/env.sh`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use crate::config::{DatabaseSettings, PubSubSettings};
use crate::domain::{
    ElectionDefinition, ElectionFields, ElectionKind, ElectionOption, ElectionStatus, TenantId,
};
use crate::pubsub::Topology;
use crate::receipt::ReceiptKey;
use crate::s2s::{Keyring, S2sKey};
use crate::token::{encode_public_key, TokenSigner};
use crate::vote_keys::VoteKeys;

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
async fn template(count: usize) -> String {
    let mut templates = TEMPLATES.lock().await;
    if let Some(name) = templates.get(&count) {
        return name.clone();
    }
    let admin = admin_url();
    let migrations: Vec<_> = crate::db::MIGRATOR.iter().take(count).collect();
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
            if migrations.len() == crate::db::MIGRATOR.iter().count() {
                crate::db::migrate(&pool).await.expect("migrations");
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
        Self::create_at(crate::db::MIGRATOR.iter().count()).await
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

/// A fresh topic, subscription and dead-letter topic, with test-sized redelivery settings.
pub struct TestPubSub {
    pub settings: PubSubSettings,
    pub topology: Topology,
}

impl TestPubSub {
    /// Dead letter after 5 attempts, redelivery backoff 1 to 2 s: a test outage of ten seconds
    /// outlasts every delivery attempt, as an outage of hours does in production.
    pub async fn create() -> Self {
        Self::create_with(5).await
    }

    /// With `max_delivery_attempts` before dead-lettering.
    pub async fn create_with(max_delivery_attempts: i32) -> Self {
        Self::create_with_topology(|topology| {
            topology.max_delivery_attempts = max_delivery_attempts;
        })
        .await
    }

    /// With the topology adjusted by `adjust` (from the test defaults above).
    pub async fn create_with_topology(adjust: impl FnOnce(&mut Topology)) -> Self {
        let host = std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| {
            panic!("PUBSUB_EMULATOR_HOST is not set: run the tests with infra/local/test.sh")
        });
        let id = Uuid::new_v4().simple().to_string();
        let settings = PubSubSettings {
            emulator_host: Some(host),
            project: std::env::var("PUBSUB_PROJECT_ID").unwrap_or_else(|_| "ekklesia-local".into()),
            topic: format!("votes-{id}"),
            subscription: format!("votes-{id}-worker"),
        };
        let mut topology = Topology::for_settings(&settings);
        topology.max_delivery_attempts = 5;
        topology.ack_deadline_seconds = 30;
        topology.minimum_backoff = Duration::from_secs(1);
        topology.maximum_backoff = Duration::from_secs(2);
        adjust(&mut topology);
        topology
            .ensure(&settings)
            .await
            .expect("create topic and subscriptions on the emulator");
        Self { settings, topology }
    }

    pub fn dead_letter_subscription_path(&self) -> String {
        self.topology.dead_letter_subscription_path(&self.settings)
    }
}

/// Keys for one test: a token signer per tenant, the receipt key, S2S, token slot and audit
/// keys, with the environment strings the services read.
pub struct TestKeys {
    pub signers: Vec<TokenSigner>,
    pub receipt_key_b64: String,
    /// `VOTE_KEYS` for ingest and the worker.
    pub vote_keys_config: String,
    pub s2s: Keyring,
    pub s2s_config: String,
    /// events-svc's `TOKEN_SLOT_KEYS`: one slot secret per tenant.
    pub slot_keys_config: String,
    /// `AUDIT_KEY` for ingest and events-svc (and the audit and queue-mode CLIs).
    pub audit_key_b64: String,
}

impl TestKeys {
    pub fn new(tenants: &[&str]) -> Self {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signers: Vec<TokenSigner> = tenants
            .iter()
            .map(|t| TokenSigner::generate(format!("{t}-k1"), TenantId::parse(t).expect("tenant")))
            .collect();
        let mut s2s_entries = Vec::new();
        let mut s2s_keys = Vec::new();
        for t in tenants {
            let secret: [u8; 32] = rand::random();
            s2s_entries.push(format!("{t}-s2s:{t}:{}", b64.encode(secret)));
            s2s_keys.push(
                S2sKey::new(
                    format!("{t}-s2s"),
                    TenantId::parse(t).expect("tenant"),
                    secret.to_vec(),
                )
                .expect("key"),
            );
        }
        let receipt: [u8; 32] = rand::random();
        let slot_keys_config = tenants
            .iter()
            .map(|t| format!("{t}-slots:{t}:{}", b64.encode(rand::random::<[u8; 32]>())))
            .collect::<Vec<_>>()
            .join(",");
        Self {
            signers,
            receipt_key_b64: b64.encode(receipt),
            vote_keys_config: VoteKeys::generate_config("test-v1"),
            s2s: Keyring::new(s2s_keys),
            s2s_config: s2s_entries.join(","),
            slot_keys_config,
            audit_key_b64: crate::audit::AuditKey::generate_base64(),
        }
    }

    pub fn audit_key(&self) -> crate::audit::AuditKey {
        crate::audit::AuditKey::from_base64(&self.audit_key_b64).expect("audit key")
    }

    pub fn public_keys_config(&self) -> String {
        self.signers
            .iter()
            .map(|s| {
                format!(
                    "{}:{}:{}",
                    s.kid(),
                    s.tenant(),
                    encode_public_key(&s.verifying_key())
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn vote_keys(&self) -> VoteKeys {
        VoteKeys::from_config(&self.vote_keys_config).expect("vote keys")
    }

    pub fn receipt_key(&self) -> ReceiptKey {
        ReceiptKey::from_base64(&self.receipt_key_b64).expect("receipt key")
    }

    pub fn signer(&self, tenant: &str) -> &TokenSigner {
        self.signers
            .iter()
            .find(|s| s.tenant().as_str() == tenant)
            .expect("signer for tenant")
    }
}

/// A loopback TCP proxy that can refuse and cut connections, to simulate a database outage, or
/// freeze them, to simulate a client that went silent without closing anything.
#[derive(Clone)]
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    frozen: Arc<tokio::sync::watch::Sender<bool>>,
}

impl TcpProxy {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let (frozen, _) = tokio::sync::watch::channel(false);
        let frozen = Arc::new(frozen);
        let proxy = Self {
            addr,
            up: up.clone(),
            generation: generation.clone(),
            frozen: frozen.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    break;
                };
                if !up.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = generation.subscribe();
                let mut freeze = frozen.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let held = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        _ = cut.changed() => false,
                        _ = freeze.wait_for(|frozen| *frozen) => true,
                    };
                    if held {
                        // Neither end is read, written or closed until `down()`: the peers see
                        // silence, as with a hung process or a network partition.
                        let _ = cut.changed().await;
                    }
                    drop((inbound, outbound));
                });
            }
        });
        proxy
    }

    /// Cuts every open connection and refuses new ones.
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accepts and forwards new connections again (after `down()` or `freeze()`).
    pub fn up(&self) {
        self.frozen.send_replace(false);
        self.up.store(true, Ordering::SeqCst);
    }

    /// Stops forwarding on every open connection, in both directions, and refuses new ones, but
    /// closes nothing: both sockets stay open and silent until [`TcpProxy::down`]. Whatever was
    /// in flight inside the proxy is lost, as in a partition.
    pub fn freeze(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.frozen.send_replace(true);
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

/// A real OTLP/gRPC trace collector endpoint (the trace service of `opentelemetry-proto`, served
/// by tonic) on its own thread and runtime, so a flush that blocks a test's thread is still
/// answered.
pub mod otlp {
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    pub use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
    pub use opentelemetry_proto::tonic::common::v1::KeyValue;
    pub use opentelemetry_proto::tonic::trace::v1::Span;

    #[derive(Clone, Default)]
    struct Collector {
        spans: Arc<Mutex<Vec<Span>>>,
    }

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
            for resource in request.into_inner().resource_spans {
                for scope in resource.scope_spans {
                    spans.extend(scope.spans);
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            }))
        }
    }

    /// Starts a collector: its endpoint (`http://127.0.0.1:PORT`) and the spans it received.
    pub fn collector() -> (String, Arc<Mutex<Vec<Span>>>) {
        let collector = Collector::default();
        let spans = collector.spans.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the collector");
        let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                listener.set_nonblocking(true).expect("non-blocking");
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                let _ = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(collector))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                    .await;
            });
        });
        (endpoint, spans)
    }
}
