//! The four services in this process, over real HTTP on 127.0.0.1 port 0: each one's test
//! settings (an environment map a test can change) and a spawn that serves until the handle is
//! dropped. Every stack of every crate's tests is built from these.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use shared::config::Env;
use shared::session::SessionSigner;
use uuid::Uuid;

use crate::{Role, TestDb, TestKeys, TestPubSub};

/// A service's environment: setting a name again replaces its value.
#[derive(Debug, Clone, Default)]
pub struct ServiceEnv(BTreeMap<String, String>);

impl ServiceEnv {
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.insert(name.into(), value.into());
        self
    }

    /// Every pair of `vars`, in order (a later one replaces an earlier one).
    pub fn extend<K: Into<String>, V: Into<String>>(
        &mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> &mut Self {
        for (k, v) in vars {
            self.set(k, v);
        }
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn vars(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone()))
    }

    pub fn env(&self) -> Env {
        Env::from_map(self.vars())
    }
}

/// A service serving in this process until dropped.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs `run_until(stop)` on the test's runtime; the returned sender stops it. A service that
/// stops with an error says so (in the test's output) rather than vanishing.
fn serve<F>(
    run_until: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> F,
) -> Option<tokio::sync::oneshot::Sender<()>>
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let run = run_until(stopped);
    tokio::spawn(async move {
        if let Err(e) = run.await {
            panic!("service stopped: {e}");
        }
    });
    Some(stop)
}

/// Waits for the stop signal; a dropped sender stops too.
async fn until(stopped: tokio::sync::oneshot::Receiver<()>) {
    let _ = stopped.await;
}

/// The settings ingest and the worker share: the database as `role`, the topic and
/// subscription of `pubsub`.
fn pubsub_env(db: &TestDb, role: Role, pubsub: &TestPubSub) -> ServiceEnv {
    let mut env = ServiceEnv::default();
    env.extend([
        ("DATABASE_URL", db.url(role)),
        (
            "PUBSUB_EMULATOR_HOST",
            pubsub.settings.emulator_host.clone().unwrap_or_default(),
        ),
        ("PUBSUB_PROJECT_ID", pubsub.settings.project.clone()),
        ("PUBSUB_TOPIC", pubsub.settings.topic.clone()),
        ("PUBSUB_SUBSCRIPTION", pubsub.settings.subscription.clone()),
    ]);
    env
}

/// ingest's test settings: both listeners on port 0, the test's keys, and the queue flag and
/// election definitions re-read every 200 ms.
pub fn ingest_env(db: &TestDb, pubsub: &TestPubSub, keys: &TestKeys) -> ServiceEnv {
    let mut env = pubsub_env(db, Role::Ingest, pubsub);
    env.extend([
        ("INGEST_ADDR", "127.0.0.1:0".to_owned()),
        ("INTERNAL_ADDR", "127.0.0.1:0".to_owned()),
        ("VOTING_TOKEN_PUBLIC_KEYS", keys.public_keys_config()),
        ("RECEIPT_KEY", keys.receipt_key_b64.clone()),
        ("VOTE_KEYS", keys.vote_keys_config.clone()),
        ("S2S_KEYS", keys.s2s_config.clone()),
        ("AUDIT_KEY", keys.audit_key_b64.clone()),
        ("QUEUE_MODE_POLL_MS", "200".to_owned()),
        ("DEFINITION_REFRESH_MS", "200".to_owned()),
    ]);
    env
}

/// An ingest serving in this process until dropped.
pub struct Ingest {
    pub url: String,
    pub internal_url: String,
    pub internal_addr: SocketAddr,
    _running: Running,
}

pub async fn spawn_ingest(env: &ServiceEnv) -> Ingest {
    crate::log::init();
    let settings = ingest::configuration::Settings::from(env.env()).expect("ingest settings");
    let app = ingest::startup::Application::build(settings)
        .await
        .expect("ingest builds");
    let addr = app.local_addr();
    let internal_addr = app.internal_addr().expect("ingest serves its internal API");
    let stop = serve(|stopped| app.run_until(until(stopped)));
    Ingest {
        url: format!("http://{addr}"),
        internal_url: format!("http://{internal_addr}"),
        internal_addr,
        _running: Running { addr, stop },
    }
}

/// The worker's test settings: a fresh `WORKER_ID`, idle after 300 ms, sealing 1 s after the
/// close.
pub fn worker_env(db: &TestDb, pubsub: &TestPubSub, keys: &TestKeys) -> ServiceEnv {
    let mut env = pubsub_env(db, Role::Worker, pubsub);
    env.extend([
        ("WORKER_ADDR", "127.0.0.1:0".to_owned()),
        ("WORKER_ID", format!("w-{}", Uuid::new_v4().simple())),
        ("VOTE_KEYS", keys.vote_keys_config.clone()),
        ("IDLE_AFTER_MS", "300".to_owned()),
        ("SEAL_DELAY_MS", "1000".to_owned()),
    ]);
    env
}

/// A worker in this process until dropped; its address serves /metrics.
pub async fn spawn_worker(settings: worker::configuration::Settings) -> Running {
    crate::log::init();
    let app = worker::startup::Application::build(settings)
        .await
        .expect("worker builds");
    let addr = app.local_addr();
    let stop = serve(|stopped| app.run_until(until(stopped)));
    Running { addr, stop }
}

pub fn worker_settings(env: &ServiceEnv) -> worker::configuration::Settings {
    worker::configuration::Settings::from(env.env()).expect("worker settings")
}

/// members-fn's test settings: dev login on, sessions signed by `session`, a login budget no
/// test reaches by accident.
pub fn members_env(db: &TestDb, session: &SessionSigner) -> ServiceEnv {
    let mut env = ServiceEnv::default();
    env.extend([
        ("MEMBERS_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", db.url(Role::Members)),
        ("EKKLESIA_PROFILE", "local".into()),
        ("DEV_LOGIN_ENABLED", "true".into()),
        ("SESSION_SIGNING_KEYS", session.config_entry()),
        ("LOGIN_RATE_PER_CLIENT", "1000".into()),
    ]);
    env
}

pub async fn spawn_members(env: &ServiceEnv) -> Running {
    crate::log::init();
    let settings = members_fn::Settings::from(env.env()).expect("members-fn settings");
    let app = members_fn::Application::build(settings)
        .await
        .expect("members-fn builds");
    let addr = app.local_addr();
    let stop = serve(|stopped| app.run_until(until(stopped)));
    Running { addr, stop }
}

/// events-svc's test settings: the elections side at `elections_url`, sessions verified with
/// members-fn's keys at `members_url`.
pub fn events_env(
    db: &TestDb,
    keys: &TestKeys,
    elections_url: &str,
    members_url: &str,
) -> ServiceEnv {
    let mut env = ServiceEnv::default();
    env.extend([
        ("EVENTS_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", db.url(Role::Events)),
        ("ELECTIONS_URL", elections_url.to_owned()),
        ("S2S_KEYS", keys.s2s_config.clone()),
        ("VOTING_TOKEN_SIGNING_KEYS", keys.signing_keys_config()),
        ("TOKEN_SLOT_KEYS", keys.slot_keys_config.clone()),
        ("AUDIT_KEY", keys.audit_key_b64.clone()),
        (
            "SESSION_JWKS_URL",
            format!("{members_url}/.well-known/jwks.json"),
        ),
    ]);
    env
}

pub async fn spawn_events(env: &ServiceEnv) -> Running {
    crate::log::init();
    let settings = events_svc::Settings::from(env.env()).expect("events-svc settings");
    let app = events_svc::Application::build(settings)
        .await
        .expect("events-svc builds");
    let addr = app.local_addr();
    let stop = serve(|stopped| app.run_until(until(stopped)));
    Running { addr, stop }
}
