//! Every service of the system in this process (members-fn, events-svc, ingest and, unless a
//! test leaves it out, a worker) on a fresh database and a fresh topic, for the harness's tests.

use std::time::Duration;

use loadtest::target::TargetConfig;
use shared::session::SessionSigner;
use testkit::services::{self, Ingest, Running};
use testkit::{TestDb, TestKeys, TestPubSub};

pub const TENANT: &str = "demo-party";

pub struct Stack {
    pub db: TestDb,
    _pubsub: TestPubSub,
    pub config: TargetConfig,
    _services: (Running, Ingest, Option<Running>, Running),
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
pub async fn start_with_pages(voters: u32) -> Stack {
    start_inner(voters, true, true, Vec::new()).await
}

/// The stack with the pages, and members-fn with `members_env` besides (the identity provider).
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
        port_below_the_ephemeral_range()
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

    let mut env = services::members_env(&db, &session);
    env.extend([
        ("LOGIN_RATE_GLOBAL", "1000".to_owned()),
        ("PAGE_ORIGINS", page_origins.clone()),
    ]);
    env.extend(members_env);
    let members = services::spawn_members(&env).await;
    let members_url = members.url();

    let mut env = services::ingest_env(&db, &pubsub, &keys);
    env.extend([
        ("QUEUE_MODE_POLL_MS", "100".to_owned()),
        // The harness is one client address standing for a whole hall (as in loadtest.sh).
        ("RECEIPT_RATE_PER_CLIENT", "100000".into()),
        ("RECEIPT_RATE_GLOBAL", "100000".into()),
        ("PAGE_ORIGINS", page_origins.clone()),
    ]);
    let ingest = services::spawn_ingest(&env).await;
    let ingest_url = ingest.url.clone();
    let internal_url = ingest.internal_url.clone();

    let (worker, worker_url) = if worker {
        let mut env = services::worker_env(&db, &pubsub, &keys);
        env.set("IDLE_AFTER_MS", "200");
        let worker = services::spawn_worker(services::worker_settings(&env)).await;
        let url = worker.url();
        (Some(worker), url)
    } else {
        // Where a worker would be: nothing answers there.
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (None, format!("http://{}", gone.local_addr().unwrap()))
    };

    let mut env = services::events_env(&db, &keys, &internal_url, &members_url);
    env.extend([
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
        // The harness flips the flag between its queue and direct runs.
        ("QUEUE_MODE_CHANGE_INTERVAL_MS", "100".into()),
        ("WORKER_HEALTH_URL", worker_url.clone()),
    ]);
    let events = services::spawn_events(&env).await;
    let events_url = events.url();

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
            signing_keys: keys.signing_keys_config(),
            s2s_keys: keys.s2s_config.clone(),
            admin_national_id: members_fn::national_id::synthetic(0).as_str().to_owned(),
            ops_national_id: members_fn::national_id::synthetic(operator)
                .as_str()
                .to_owned(),
        },
        db,
        _pubsub: pubsub,
        _services: (members, ingest, worker, events),
    }
}

/// A free port below Linux's ephemeral range (32768 and up): a port 0 gave would be free to
/// every other connection of the binary until events-svc binds it, and was once taken in
/// between ("Address already in use").
fn port_below_the_ephemeral_range() -> String {
    use rand::Rng;
    for _ in 0..200 {
        let port = rand::thread_rng().gen_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
    panic!("no free port between 20000 and 32000")
}
