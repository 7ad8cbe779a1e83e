//! Smoke test of the harness (seconds, for CI): members-fn, events-svc, ingest and a worker in
//! this process on a fresh database and a fresh topic; a tiny burst in queue mode and in
//! direct mode through the same code the `loadtest` binary runs, then a few tokens through
//! events-svc. Every invariant check must pass and the three report files must be written.
//! Performance targets are never asserted here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use loadtest::report::{Body, Report};
use loadtest::scenario::{self, Common, Mode};
use loadtest::schedule::Schedule;
use loadtest::target::{Target, TargetConfig};
use shared::config::Env;
use shared::session::SessionSigner;
use shared::testkit::{Role, TestDb, TestKeys, TestPubSub};
use uuid::Uuid;

const TENANT: &str = "demo-party";

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

struct Stack {
    _db: TestDb,
    _pubsub: TestPubSub,
    config: TargetConfig,
}

async fn start(voters: u32) -> Stack {
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

    let members = members_fn::Application::build(
        members_fn::Settings::from(Env::from_map([
            ("MEMBERS_ADDR", "127.0.0.1:0".to_owned()),
            ("DATABASE_URL", db.url(Role::Members)),
            ("EKKLESIA_PROFILE", "local".into()),
            ("DEV_LOGIN_ENABLED", "true".into()),
            ("SESSION_SIGNING_KEYS", session.config_entry()),
            ("LOGIN_RATE_PER_CLIENT", "1000".into()),
            ("LOGIN_RATE_GLOBAL", "1000".into()),
        ]))
        .expect("members-fn settings"),
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
    let worker = worker::startup::Application::build(
        worker::configuration::Settings::from(Env::from_map(env)).expect("worker settings"),
    )
    .await
    .expect("worker builds");
    let worker_url = format!("http://{}", worker.local_addr());
    serve(worker.run_until(std::future::pending()));

    let signing_keys = keys
        .signers
        .iter()
        .map(|s| format!("{}:{}:{}", s.kid(), s.tenant(), s.seed()))
        .collect::<Vec<_>>()
        .join(",");
    let events = events_svc::Application::build(
        events_svc::Settings::from(Env::from_map([
            ("EVENTS_ADDR", "127.0.0.1:0".to_owned()),
            ("DATABASE_URL", db.url(Role::Events)),
            ("ELECTIONS_URL", internal_url.clone()),
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
        _db: db,
        _pubsub: pubsub,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_burst_in_both_modes_passes_every_check_and_writes_the_reports() {
    let began = Instant::now();
    let stack = start(10).await;
    let target = Arc::new(Target::new(stack.config.clone()).expect("target"));
    let common = Common {
        quiet: true,
        drain_timeout: Duration::from_secs(20),
        replays: 3,
        ..Common::default()
    };
    let votes = 30;
    let body = scenario::votes(target.clone(), &common, &Schedule::Burst { votes })
        .await
        .expect("the burst runs in both modes");
    let report = Report::new(
        "burst",
        chrono::Utc::now(),
        "smoke".into(),
        Vec::new(),
        Body::Votes(body),
    );
    let dir = std::env::temp_dir().join(format!("loadtest-smoke-{}", Uuid::new_v4().simple()));
    let files = report.write(&dir).expect("reports written");
    assert!(report.checks_passed, "{}", report.markdown());
    let Body::Votes(v) = &report.result else {
        panic!("a votes report")
    };
    assert_eq!(
        v.modes.iter().map(|r| r.mode).collect::<Vec<_>>(),
        [Mode::Queue, Mode::Direct]
    );
    for run in &v.modes {
        assert_eq!(run.sent, votes);
        assert_eq!(run.accepted + run.failed, votes, "{}", report.markdown());
        assert!(run.checks.len() >= 6, "{:?}", run.checks);
    }
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["report.json", "report.md", "chart.svg"]);
    for f in &files {
        assert!(
            std::fs::metadata(f).unwrap().len() > 200,
            "{} is empty",
            f.display()
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(json["result"]["kind"], "votes");
    assert!(std::fs::read_to_string(&files[2])
        .unwrap()
        .starts_with("<svg"));

    // Tokens through members-fn and events-svc, then cast at once.
    let tokens = scenario::tokens(
        target,
        &common,
        &Schedule::Constant {
            rate: 20.0,
            secs: 0.5,
        },
        true,
    )
    .await
    .expect("tokens through events-svc");
    assert_eq!(
        tokens.issued, 10,
        "{:?} {:?}",
        tokens.statuses, tokens.checks
    );
    let tokens_dir = dir.join("tokens");
    let report = Report::new(
        "tokens",
        chrono::Utc::now(),
        "smoke".into(),
        Vec::new(),
        Body::Tokens(tokens),
    );
    report.write(&tokens_dir).expect("reports written");
    assert!(report.checks_passed, "{}", report.markdown());
    // LOADTEST_SMOKE_KEEP=1 keeps the reports for a look.
    if std::env::var_os("LOADTEST_SMOKE_KEEP").is_some() {
        eprintln!("reports kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!("smoke test took {:.1} s", began.elapsed().as_secs_f64());
}
