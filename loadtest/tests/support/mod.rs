//! Every service of the system in this process (members-fn, events-svc, ingest and, unless a
//! test leaves it out, a worker) on a fresh database and a fresh topic, for the harness's tests.

use std::time::Duration;

use loadtest::target::TargetConfig;
use shared::config::Env;
use shared::session::SessionSigner;
use shared::testkit::{Role, TestDb, TestKeys, TestPubSub};
use uuid::Uuid;

pub const TENANT: &str = "demo-party";

fn serve<F>(run: F)
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = run.await {
            panic!("service stopped: {e}");
        }
    });
}

pub struct Stack {
    pub db: TestDb,
    _pubsub: TestPubSub,
    pub config: TargetConfig,
}

/// The stack with `voters` members (and an admin and a platform operator).
pub async fn start(voters: u32) -> Stack {
    start_with(voters, true).await
}

/// With `worker: false` nothing consumes the votes (a worker that is down).
pub async fn start_with(voters: u32, worker: bool) -> Stack {
    start_inner(voters, worker, false, Vec::new()).await
}

/// The stack with the web pages wired up: events-svc serves them and tells them where
/// members-fn and ingest are, and those two allow events-svc's origin (`PAGE_ORIGINS`).
#[allow(dead_code)] // only tests/pages.rs
pub async fn start_with_pages(voters: u32) -> Stack {
    start_inner(voters, true, true, Vec::new()).await
}

/// The stack with the pages, and members-fn with `members_env` besides (the identity provider).
#[allow(dead_code)] // only tests/pages.rs
pub async fn start_with_pages_and_login(
    voters: u32,
    members_env: Vec<(&'static str, String)>,
) -> Stack {
    start_inner(voters, true, true, members_env).await
}

async fn start_inner(
    voters: u32,
    worker: bool,
    pages: bool,
    members_env: Vec<(&'static str, String)>,
) -> Stack {
    // members-fn and ingest must name events-svc's origin before events-svc is built, so its
    // port is chosen first (free now; taken again a moment later by events-svc itself).
    let events_addr = if pages {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        free.local_addr().expect("its address").to_string()
    } else {
        "127.0.0.1:0".to_owned()
    };
    let page_origins = if pages {
        format!("http://{events_addr}")
    } else {
        String::new()
    };
    let db = TestDb::create().await;
    let pubsub = TestPubSub::create().await;
    let keys = TestKeys::new(&[TENANT]);
    let session =
        SessionSigner::generate("s1", "ekklesia-members".into(), Duration::from_secs(900));
    let emulator = pubsub.settings.emulator_host.clone().unwrap_or_default();
    let pubsub_env = |role: Role| {
        vec![
            ("DATABASE_URL", db.url(role)),
            ("PUBSUB_EMULATOR_HOST", emulator.clone()),
            ("PUBSUB_PROJECT_ID", pubsub.settings.project.clone()),
            ("PUBSUB_TOPIC", pubsub.settings.topic.clone()),
            ("PUBSUB_SUBSCRIPTION", pubsub.settings.subscription.clone()),
        ]
    };

    let mut env = vec![
        ("MEMBERS_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", db.url(Role::Members)),
        ("EKKLESIA_PROFILE", "local".into()),
        ("DEV_LOGIN_ENABLED", "true".into()),
        ("SESSION_SIGNING_KEYS", session.config_entry()),
        ("LOGIN_RATE_PER_CLIENT", "1000".into()),
        ("LOGIN_RATE_GLOBAL", "1000".into()),
        ("PAGE_ORIGINS", page_origins.clone()),
    ];
    env.extend(members_env);
    let members = members_fn::Application::build(
        members_fn::Settings::from(Env::from_map(env)).expect("members-fn settings"),
    )
    .await
    .expect("members-fn builds");
    let members_url = format!("http://{}", members.local_addr());
    serve(members.run_until(std::future::pending()));

    let mut env = pubsub_env(Role::Ingest);
    env.extend([
        ("INGEST_ADDR", "127.0.0.1:0".to_owned()),
        ("INTERNAL_ADDR", "127.0.0.1:0".to_owned()),
        ("VOTING_TOKEN_PUBLIC_KEYS", keys.public_keys_config()),
        ("RECEIPT_KEY", keys.receipt_key_b64.clone()),
        ("VOTE_KEYS", keys.vote_keys_config.clone()),
        ("S2S_KEYS", keys.s2s_config.clone()),
        ("AUDIT_KEY", keys.audit_key_b64.clone()),
        ("QUEUE_MODE_POLL_MS", "100".into()),
        ("DEFINITION_REFRESH_MS", "200".into()),
        // The harness is one client address standing for a whole hall (as in loadtest.sh).
        ("RECEIPT_RATE_PER_CLIENT", "100000".into()),
        ("RECEIPT_RATE_GLOBAL", "100000".into()),
        ("PAGE_ORIGINS", page_origins.clone()),
    ]);
    let ingest = ingest::startup::Application::build(
        ingest::configuration::Settings::from(Env::from_map(env)).expect("ingest settings"),
    )
    .await
    .expect("ingest builds");
    let ingest_url = format!("http://{}", ingest.local_addr());
    let internal_url = format!(
        "http://{}",
        ingest.internal_addr().expect("ingest's internal API")
    );
    serve(ingest.run_until(std::future::pending()));

    let mut env = pubsub_env(Role::Worker);
    env.extend([
        ("WORKER_ADDR", "127.0.0.1:0".to_owned()),
        ("WORKER_ID", format!("w-{}", Uuid::new_v4().simple())),
        ("VOTE_KEYS", keys.vote_keys_config.clone()),
        ("IDLE_AFTER_MS", "200".into()),
        ("SEAL_DELAY_MS", "1000".into()),
    ]);
    let worker_url = if worker {
        let worker = worker::startup::Application::build(
            worker::configuration::Settings::from(Env::from_map(env)).expect("worker settings"),
        )
        .await
        .expect("worker builds");
        let url = format!("http://{}", worker.local_addr());
        serve(worker.run_until(std::future::pending()));
        url
    } else {
        // Where a worker would be: nothing answers there.
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", gone.local_addr().unwrap())
    };

    let signing_keys = keys
        .signers
        .iter()
        .map(|s| format!("{}:{}:{}", s.kid(), s.tenant(), s.seed()))
        .collect::<Vec<_>>()
        .join(",");
    let events = events_svc::Application::build(
        events_svc::Settings::from(Env::from_map([
            ("EVENTS_ADDR", events_addr),
            (
                "PAGES_MEMBERS_URL",
                if pages {
                    members_url.clone()
                } else {
                    String::new()
                },
            ),
            (
                "PAGES_INGEST_URL",
                if pages {
                    ingest_url.clone()
                } else {
                    String::new()
                },
            ),
            ("DATABASE_URL", db.url(Role::Events)),
            ("ELECTIONS_URL", internal_url.clone()),
            ("WORKER_HEALTH_URL", worker_url.clone()),
            ("S2S_KEYS", keys.s2s_config.clone()),
            ("VOTING_TOKEN_SIGNING_KEYS", signing_keys.clone()),
            ("TOKEN_SLOT_KEYS", keys.slot_keys_config.clone()),
            ("AUDIT_KEY", keys.audit_key_b64.clone()),
            // The harness flips the flag between its queue and direct runs.
            ("QUEUE_MODE_CHANGE_INTERVAL_MS", "100".into()),
            (
                "SESSION_JWKS_URL",
                format!("{members_url}/.well-known/jwks.json"),
            ),
        ]))
        .expect("events-svc settings"),
    )
    .await
    .expect("events-svc builds");
    let events_url = format!("http://{}", events.local_addr());
    serve(events.run_until(std::future::pending()));

    // The registries: the party's admin and voters, and a platform operator (the queue flag).
    let operator = loadtest::journey::PLATFORM_OPERATOR;
    for n in (0..=voters).chain([operator]) {
        let (org, roles): (&str, Vec<String>) = match n {
            0 => (TENANT, vec!["member".into(), "admin".into()]),
            n if n == operator => (
                shared::domain::DEFAULT_PLATFORM_ORG,
                vec!["member".into(), "ops".into()],
            ),
            _ => (TENANT, vec!["member".into()]),
        };
        sqlx::query(
            "INSERT INTO members.members (org_id, national_id, name, roles) VALUES ($1, $2, 'Smoke', $3)",
        )
        .bind(org)
        .bind(members_fn::national_id::synthetic(n).as_str())
        .bind(&roles)
        .execute(&db.owner)
        .await
        .expect("add member");
    }

    Stack {
        config: TargetConfig {
            ingest_url,
            elections_url: internal_url,
            events_url,
            members_url,
            worker_url: Some(worker_url),
            tenant: TENANT.into(),
            signing_keys,
            s2s_keys: keys.s2s_config.clone(),
            admin_national_id: members_fn::national_id::synthetic(0).as_str().to_owned(),
            ops_national_id: members_fn::national_id::synthetic(operator)
                .as_str()
                .to_owned(),
        },
        db,
        _pubsub: pubsub,
    }
}
