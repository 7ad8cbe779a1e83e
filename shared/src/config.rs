//! Typed configuration from the environment (12-factor, as Cloud Run passes it).
//!
//! Every service builds its `Settings` through [`Env`], which collects *all* missing or
//! malformed variables and reports them together, naming each variable -- never its value,
//! since many of them are secrets.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Reads variables from a snapshot of the environment (or a map, in tests).
pub struct Env {
    vars: BTreeMap<String, String>,
    problems: Vec<String>,
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
        }
    }

    pub fn optional_string(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .filter(|v| !v.trim().is_empty())
            .cloned()
    }

    pub fn string(&mut self, name: &str) -> String {
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
    fn defaults_are_strict() {
        let mut env = Env::from_map([("DATABASE_URL", "postgres://x")]);
        let db = DatabaseSettings::from_env(&mut env);
        env.finish(()).unwrap();
        assert_eq!(db.max_connections, 3);
        assert_eq!(db.acquire_timeout, Duration::from_secs(2));
    }
}
