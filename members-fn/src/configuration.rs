//! members-fn's settings, read from the environment.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::config::{ConfigError, DatabaseSettings, Env, Profile};
use shared::session::SessionSigner;

#[derive(Clone)]
pub struct Settings {
    /// `PORT` (Cloud Run) or `MEMBERS_ADDR`.
    pub addr: SocketAddr,
    pub database: DatabaseSettings,
    /// `HTTP_*`: header-read and request timeouts, concurrency limit of its listener.
    pub server_limits: shared::service::ServerLimits,
    /// `EKKLESIA_PROFILE`: `production` (the default, so a forgotten setting is the safe one)
    /// or `local`.
    pub profile: Profile,
    /// `SESSION_SIGNING_KEYS` (`kid:base64url-seed,...`; the first signs, all are published),
    /// `SESSION_ISSUER` (default `ekklesia-members`), `SESSION_TTL_SECS` (default 900).
    pub session: Arc<SessionSigner>,
    /// `OIDC_ISSUER` and friends; without it only dev login (if enabled) can log anyone in.
    pub oidc: Option<OidcSettings>,
    /// `DEV_LOGIN_ENABLED`: log in by national id alone. Refused in production.
    pub dev_login: bool,
    /// `PAGE_ORIGINS` (default none): the web pages' origins allowed to call the login
    /// (`shared::cors`).
    pub page_origins: shared::cors::AllowedOrigins,
    /// `LOGIN_RATE_PER_CLIENT` / `LOGIN_RATE_GLOBAL`: login attempts per second (bursts of two
    /// seconds' worth). A whole meeting hall may log in from one address behind the venue's
    /// NAT, so the per-client default is 50/s, not a per-person figure; there is no password
    /// to guess here (the provider authenticates), the limit protects the provider and the
    /// database from floods.
    pub login_rate_per_client: u32,
    pub login_rate_global: u32,
    /// `USAGE_FLUSH_MS` (default 60000): how often this instance adds its usage counts
    /// (logins and requests per tenant) to the database.
    pub usage_flush: Duration,
}

#[derive(Clone, Debug)]
pub struct OidcSettings {
    /// `OIDC_ISSUER`: discovery is read from `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// `OIDC_CLIENT_ID`: also the id_token's expected audience.
    pub client_id: String,
    /// `OIDC_CLIENT_SECRET`: sent as `client_secret_post`; omit for a public client.
    pub client_secret: Option<String>,
    /// `OIDC_REDIRECT_URI` (required with `OIDC_ISSUER`): the redirect URI registered with the
    /// provider, which reaches members-fn's `GET /v1/auth/oidc/redirect`.
    pub redirect_uri: String,
    /// `OIDC_SCOPES` (default `openid profile`): the scopes asked for; the national id claim
    /// must come with them. Must include `openid`.
    pub scopes: String,
    /// `OIDC_NATIONAL_ID_CLAIM` (default `national_id`, as Kenni.is names it).
    pub national_id_claim: String,
    /// `OIDC_TIMEOUT_MS`: budget for each call to the provider (default 5000).
    pub timeout: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from(Env::from_process())
    }

    pub fn from(mut env: Env) -> Result<Self, ConfigError> {
        let addr = env.listen_addr("MEMBERS_ADDR", "127.0.0.1:8082");
        let database = DatabaseSettings::from_env(&mut env);
        let profile = env.parse_or("EKKLESIA_PROFILE", Profile::Production);
        let issuer = env.string_or("SESSION_ISSUER", "ekklesia-members");
        let ttl = Duration::from_secs(env.parse_or("SESSION_TTL_SECS", 900u64));
        let session =
            match SessionSigner::from_config(&env.string("SESSION_SIGNING_KEYS"), issuer, ttl) {
                Ok(s) => s,
                Err(e) => {
                    env.problem(format!("SESSION_SIGNING_KEYS: {e}"));
                    SessionSigner::generate("unused", String::new(), ttl)
                }
            };
        let oidc = env
            .optional_string("OIDC_ISSUER")
            .map(|issuer| OidcSettings {
                issuer: issuer.trim_end_matches('/').to_owned(),
                client_id: env.string("OIDC_CLIENT_ID"),
                client_secret: env.optional_string("OIDC_CLIENT_SECRET"),
                redirect_uri: env.string("OIDC_REDIRECT_URI"),
                scopes: env.string_or("OIDC_SCOPES", "openid profile"),
                national_id_claim: env.string_or("OIDC_NATIONAL_ID_CLAIM", "national_id"),
                timeout: env.millis_or("OIDC_TIMEOUT_MS", 5000),
            });
        if let Some(oidc) = &oidc {
            let absolute = reqwest::Url::parse(&oidc.redirect_uri)
                .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.fragment().is_none());
            if !oidc.redirect_uri.is_empty() && !absolute {
                env.problem("OIDC_REDIRECT_URI must be an absolute http(s) URL without a fragment");
            }
            if !oidc.scopes.split(' ').any(|s| s == "openid") {
                env.problem("OIDC_SCOPES must include `openid`");
            }
        }
        let dev_login = env.bool_or("DEV_LOGIN_ENABLED", false);
        if dev_login && profile == Profile::Production {
            env.problem(
                "DEV_LOGIN_ENABLED is refused in the production profile (EKKLESIA_PROFILE)",
            );
        }
        let settings = Self {
            addr,
            server_limits: shared::service::ServerLimits::from_env(&mut env),
            database,
            profile,
            session: Arc::new(session),
            oidc,
            dev_login,
            page_origins: shared::cors::AllowedOrigins::from_env(&mut env),
            login_rate_per_client: env.parse_or("LOGIN_RATE_PER_CLIENT", 50),
            login_rate_global: env.parse_or("LOGIN_RATE_GLOBAL", 500),
            usage_flush: shared::usage::flush_interval_from_env(&mut env),
        };
        if settings.login_rate_per_client == 0 || settings.login_rate_global == 0 {
            env.problem("login rate limits must be at least 1 per second");
        }
        env.finish(settings)
    }
}
