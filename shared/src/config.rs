//! Typed configuration from the environment (12-factor, as Cloud Run passes it).
//!
//! Every service builds its `Settings` through [`Env`], which collects *all* missing or
//! malformed variables and reports them together, naming each variable -- never its value,
//! since many of them are secrets.
//!
//! `Env` also records every variable it was asked for ([`Env::requested`]), so a deployment can
//! be checked against the code: building a service's `Settings` from the variables a deployment
//! sets lists exactly the ones the code reads and which of them it requires
//! (`infra/check/tests/terraform.rs`).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Variables whose values are secrets: a deployment takes them from a secret store (Secret
/// Manager), never from a plain value. Per-tenant parts of a list (`NAME__TENANT`, see
/// [`Env::list`]) are secrets when `NAME` is.
pub const SECRET_VARIABLES: &[&str] = &[
    "VOTE_KEYS",
    "RECEIPT_KEY",
    "S2S_KEYS",
    "VOTING_TOKEN_SIGNING_KEYS",
    "TOKEN_SLOT_KEYS",
    "SESSION_SIGNING_KEYS",
    "OIDC_CLIENT_SECRET",
    "AUDIT_KEY",
];

/// How the code asked for a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Asked for with [`Env::string`] or [`Env::list`]: missing, it is a configuration error.
    pub required: bool,
    /// Asked for with [`Env::list`] / [`Env::optional_list`]: also read from `NAME__<suffix>`.
    pub list: bool,
}

/// Every variable an [`Env`] was asked for, shared with whoever holds a clone (the `Env` itself
/// is consumed by the `Settings` it builds).
#[derive(Debug, Clone, Default)]
pub struct Requests(Arc<Mutex<BTreeMap<String, Request>>>);

impl Requests {
    fn note(&self, name: &str, required: bool, list: bool) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(name.to_owned()).or_insert(Request {
            required: false,
            list: false,
        });
        // Asked for both ways: required wins.
        entry.required |= required;
        entry.list |= list;
    }

    /// Name → how it was asked for, in name order.
    pub fn snapshot(&self) -> BTreeMap<String, Request> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Reads variables from a snapshot of the environment (or a map, in tests).
pub struct Env {
    vars: BTreeMap<String, String>,
    problems: Vec<String>,
    requests: Requests,
}

impl Env {
    pub fn from_process() -> Self {
        Self::from_map(std::env::vars())
    }

    pub fn from_map<I: IntoIterator<Item = (K, V)>, K: Into<String>, V: Into<String>>(
        vars: I,
    ) -> Self {
        Self {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            problems: Vec::new(),
            requests: Requests::default(),
        }
    }

    /// A handle on the record of every variable this `Env` is asked for; it outlives the `Env`.
    pub fn requests(&self) -> Requests {
        self.requests.clone()
    }

    /// What this `Env` was asked for so far (see [`Env::requests`] to read it after the `Env`
    /// is consumed).
    pub fn requested(&self) -> BTreeMap<String, Request> {
        self.requests.snapshot()
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .filter(|v| !v.trim().is_empty())
            .cloned()
    }

    pub fn optional_string(&self, name: &str) -> Option<String> {
        self.requests.note(name, false, false);
        self.lookup(name)
    }

    /// A comma-separated list read from `NAME` and from every `NAME__<suffix>` (in name order),
    /// joined: a list of per-tenant entries can come from one variable per tenant (e.g.
    /// `S2S_KEYS__PARTY_A`), each its own secret, so onboarding or rotating one tenant never
    /// touches another's keys. The suffix is only a name; the entries say whose they are.
    pub fn optional_list(&self, name: &str) -> Option<String> {
        self.requests.note(name, false, true);
        let prefix = format!("{name}__");
        // BTreeMap order puts `NAME` itself before every `NAME__…`.
        let parts: Vec<&str> = self
            .vars
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.starts_with(&prefix))
            .map(|(_, v)| v.trim().trim_matches(','))
            .filter(|v| !v.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join(","))
    }

    /// [`Env::optional_list`], required: missing everywhere, it is a configuration error.
    pub fn list(&mut self, name: &str) -> String {
        self.requests.note(name, true, true);
        match self.optional_list(name) {
            Some(v) => v,
            None => {
                self.problems.push(format!(
                    "{name} is required but not set (nor any {name}__<suffix>)"
                ));
                String::new()
            }
        }
    }

    pub fn string(&mut self, name: &str) -> String {
        self.requests.note(name, true, false);
        match self.optional_string(name) {
            Some(v) => v,
            None => {
                self.problems
                    .push(format!("{name} is required but not set"));
                String::new()
            }
        }
    }

    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.optional_string(name)
            .unwrap_or_else(|| default.to_owned())
    }

    pub fn parse_or<T>(&mut self, name: &str, default: T) -> T
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.optional_string(name) {
            None => default,
            Some(raw) => match raw.trim().parse() {
                Ok(v) => v,
                Err(e) => {
                    self.problems.push(format!("{name} is malformed: {e}"));
                    default
                }
            },
        }
    }

    pub fn bool_or(&mut self, name: &str, default: bool) -> bool {
        match self
            .optional_string(name)
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => default,
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => false,
            Some(_) => {
                self.problems.push(format!("{name} must be true or false"));
                default
            }
        }
    }

    pub fn millis_or(&mut self, name: &str, default_ms: u64) -> Duration {
        Duration::from_millis(self.parse_or(name, default_ms))
    }

    /// The address to serve on: `0.0.0.0:$PORT` when `PORT` is set (Cloud Run), else the
    /// service's own variable (`name`, host:port), else `default`.
    pub fn listen_addr(&mut self, name: &str, default: &str) -> std::net::SocketAddr {
        let raw = match self.optional_string("PORT") {
            Some(port) => format!("0.0.0.0:{}", port.trim()),
            None => self.string_or(name, default),
        };
        raw.parse().unwrap_or_else(|_| {
            self.problem(format!(
                "{name} (or PORT) must be host:port (or a port number)"
            ));
            std::net::SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    /// Records a problem found while interpreting an otherwise well-formed value.
    pub fn problem(&mut self, message: impl Into<String>) {
        self.problems.push(message.into());
    }

    pub fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

/// Where a service runs. Production refuses development shortcuts (e.g. dev login).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Local,
    Production,
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" | "dev" | "test" => Ok(Self::Local),
            "production" | "prod" => Ok(Self::Production),
            other => Err(format!(
                "unknown profile `{other}` (expected local or production)"
            )),
        }
    }
}

/// PostgreSQL connection and the strict limits every pool runs with.
#[derive(Clone)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
}

/// The URL holds the password: printed as `(redacted)`, so no `{:?}` of a service's settings
/// can log it.
impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &"(redacted)")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl DatabaseSettings {
    /// `DATABASE_URL`, `DATABASE_MAX_CONNECTIONS` (default 3), `DATABASE_ACQUIRE_TIMEOUT_MS`
    /// (default 2000, capped at 2000: a request must fail fast rather than queue for a
    /// connection), `DATABASE_STATEMENT_TIMEOUT_MS` (default 5000).
    pub fn from_env(env: &mut Env) -> Self {
        let url = env.string("DATABASE_URL");
        let max_connections = env.parse_or("DATABASE_MAX_CONNECTIONS", 3u32);
        if max_connections == 0 {
            env.problem("DATABASE_MAX_CONNECTIONS must be at least 1");
        }
        let acquire_timeout = env.millis_or("DATABASE_ACQUIRE_TIMEOUT_MS", 2000);
        if acquire_timeout > Duration::from_secs(2) {
            env.problem("DATABASE_ACQUIRE_TIMEOUT_MS must be at most 2000 (fail fast, never hang)");
        }
        let statement_timeout = env.millis_or("DATABASE_STATEMENT_TIMEOUT_MS", 5000);
        Self {
            url,
            max_connections: max_connections.max(1),
            acquire_timeout,
            statement_timeout,
        }
    }
}

/// Where the vote topic and subscription live.
#[derive(Debug, Clone)]
pub struct PubSubSettings {
    /// `PUBSUB_EMULATOR_HOST` (host:port): plaintext and anonymous credentials when set.
    pub emulator_host: Option<String>,
    pub project: String,
    pub topic: String,
    pub subscription: String,
}

impl PubSubSettings {
    pub fn from_env(env: &mut Env) -> Self {
        Self {
            emulator_host: env.optional_string("PUBSUB_EMULATOR_HOST"),
            project: env.string_or("PUBSUB_PROJECT_ID", "ekklesia-local"),
            topic: env.string_or("PUBSUB_TOPIC", "votes"),
            subscription: env.string_or("PUBSUB_SUBSCRIPTION", "votes-worker"),
        }
    }

    pub fn topic_path(&self) -> String {
        format!("projects/{}/topics/{}", self.project, self.topic)
    }

    pub fn subscription_path(&self) -> String {
        format!(
            "projects/{}/subscriptions/{}",
            self.project, self.subscription
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_settings_never_print_their_url() {
        let mut env = Env::from_map([("DATABASE_URL", "postgres://u:hunter2@db/x")]);
        let printed = format!("{:?}", DatabaseSettings::from_env(&mut env));
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn collects_every_problem_and_names_no_value() {
        let mut env = Env::from_map([
            ("DATABASE_MAX_CONNECTIONS", "lots"),
            ("DATABASE_ACQUIRE_TIMEOUT_MS", "30000"),
        ]);
        let _ = DatabaseSettings::from_env(&mut env);
        let err = env.finish(()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("DATABASE_URL is required"), "{text}");
        assert!(
            text.contains("DATABASE_MAX_CONNECTIONS is malformed"),
            "{text}"
        );
        assert!(text.contains("at most 2000"), "{text}");
        assert!(!text.contains("lots"), "values must not be echoed: {text}");
    }

    #[test]
    fn records_every_variable_asked_for_and_whether_it_is_required() {
        let mut env = Env::from_map([("PORT", "8080")]);
        let requests = env.requests();
        let _ = DatabaseSettings::from_env(&mut env);
        let _ = env.listen_addr("INGEST_ADDR", "127.0.0.1:8080");
        let _ = env.optional_list("VOTING_TOKEN_PUBLIC_KEYS");
        // Consumed, as `Settings::from` consumes it: the handle still reads the record.
        let _ = env.finish(());
        let asked = requests.snapshot();
        let required = |name: &str| asked.get(name).map(|r| r.required);
        assert_eq!(required("DATABASE_URL"), Some(true));
        assert_eq!(required("DATABASE_MAX_CONNECTIONS"), Some(false));
        assert_eq!(required("PORT"), Some(false));
        // With PORT set (Cloud Run) the service's own address variable is not read at all.
        assert_eq!(required("INGEST_ADDR"), None, "{asked:?}");
        assert!(asked["VOTING_TOKEN_PUBLIC_KEYS"].list);
        assert!(!asked["DATABASE_URL"].list);
    }

    #[test]
    fn a_list_joins_its_per_tenant_parts_in_name_order() {
        let mut env = Env::from_map([
            ("S2S_KEYS__PARTY_B", "b1:party-b:x,"),
            ("S2S_KEYS", "k0:platform:y"),
            ("S2S_KEYS__PARTY_A", " a1:party-a:z,a0:party-a:w "),
            ("S2S_KEYS_OTHER", "not:a:part"),
            ("S2S_KEYS__EMPTY", "  "),
        ]);
        assert_eq!(
            env.list("S2S_KEYS"),
            "k0:platform:y,a1:party-a:z,a0:party-a:w,b1:party-b:x"
        );
        assert_eq!(env.optional_list("TOKEN_SLOT_KEYS"), None);
        env.finish(()).unwrap();
    }

    #[test]
    fn a_missing_required_list_is_named_never_valued() {
        let mut env = Env::from_map([("S2S_KEYS_TYPO", "secret-value")]);
        assert_eq!(env.list("S2S_KEYS"), "");
        let text = env.finish(()).unwrap_err().to_string();
        assert!(text.contains("S2S_KEYS is required"), "{text}");
        assert!(!text.contains("secret-value"), "{text}");
    }

    #[test]
    fn defaults_are_strict() {
        let mut env = Env::from_map([("DATABASE_URL", "postgres://x")]);
        let db = DatabaseSettings::from_env(&mut env);
        env.finish(()).unwrap();
        assert_eq!(db.max_connections, 3);
        assert_eq!(db.acquire_timeout, Duration::from_secs(2));
    }
}
