//! OIDC login attempts (security review M10): members-fn, not the client, generates the
//! `state`, the `nonce` and the PKCE verifier of a login, keeps them in PostgreSQL
//! (`members.login_attempts`) for [`TTL`], and names the attempt in an HttpOnly cookie. The
//! callback is accepted only from the browser holding that cookie, with the attempt's state,
//! once; the code is exchanged with the attempt's verifier and the id_token must carry its
//! nonce. A code taken from someone else's login (Referer, history, a proxy log) is therefore
//! useless even at a provider that does not enforce PKCE: it is either refused for its state
//! or its id_token carries the other login's nonce.

use std::time::Duration;

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::error::MembersError;

/// How long a started login may take at the provider.
pub const TTL: Duration = Duration::from_secs(600);

/// The cookie naming the attempt. With `Secure` it takes the `__Host-` prefix, so a sibling
/// subdomain cannot plant one of its own.
fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-ekklesia-login"
    } else {
        "ekklesia-login"
    }
}

/// 32 random bytes, base64url: 43 characters (also a valid PKCE verifier, RFC 7636).
fn random_value() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    B64.encode(bytes)
}

fn id_hash(cookie_value: &str) -> Vec<u8> {
    Sha256::digest(cookie_value.as_bytes()).to_vec()
}

/// A started login: what goes into the cookie and the authorization request.
pub struct Started {
    /// The cookie's value (the attempt's name; stored only hashed).
    pub cookie_value: String,
    pub state: String,
    pub nonce: String,
    /// base64url(SHA-256(verifier)); the verifier itself never leaves members-fn.
    pub code_challenge: String,
    code_verifier: String,
}

/// What the callback needs from its attempt.
pub struct Attempt {
    pub nonce: String,
    pub code_verifier: String,
    pub org: Option<String>,
    pub return_to: Option<String>,
}

impl Started {
    /// Fresh random values for a new login.
    pub fn generate() -> Self {
        let code_verifier = random_value();
        Self {
            cookie_value: random_value(),
            state: random_value(),
            nonce: random_value(),
            code_challenge: B64.encode(Sha256::digest(code_verifier.as_bytes())),
            code_verifier,
        }
    }

    /// Records the attempt, and deletes some long-expired ones in the same statement (each
    /// start removes up to 100, so the table holds little more than the last hour's logins).
    pub async fn save(
        &self,
        pool: &PgPool,
        org: Option<&str>,
        return_to: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "WITH purged AS ( \
                 DELETE FROM members.login_attempts WHERE id_hash IN ( \
                     SELECT id_hash FROM members.login_attempts \
                     WHERE expires_at < now() - interval '1 hour' LIMIT 100)) \
             INSERT INTO members.login_attempts \
                 (id_hash, state, nonce, code_verifier, org_id, return_to, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))",
            id_hash(&self.cookie_value),
            self.state,
            self.nonce,
            self.code_verifier,
            org,
            return_to,
            TTL.as_secs_f64()
        )
        .execute(pool)
        .await?;
        Ok(())
    }
}

/// Uses up the attempt the cookie names, if `state` is its state and it is neither used nor
/// expired; otherwise says which of those it is. A wrong state leaves the attempt usable (a
/// forged callback cannot spoil the real one).
pub async fn consume(
    pool: &PgPool,
    cookie_value: &str,
    state: &str,
) -> Result<Attempt, MembersError> {
    let hash = id_hash(cookie_value);
    let used = sqlx::query_as!(
        Attempt,
        "UPDATE members.login_attempts SET used_at = now() \
         WHERE id_hash = $1 AND state = $2 AND used_at IS NULL AND expires_at > now() \
         RETURNING nonce, code_verifier, org_id AS org, return_to",
        hash,
        state
    )
    .fetch_optional(pool)
    .await?;
    if let Some(attempt) = used {
        return Ok(attempt);
    }
    let why = sqlx::query!(
        r#"SELECT used_at IS NOT NULL AS "used!", expires_at <= now() AS "expired!"
           FROM members.login_attempts WHERE id_hash = $1"#,
        hash
    )
    .fetch_optional(pool)
    .await?
    .map(|row| (row.used, row.expired));
    Err(match why {
        None => MembersError::LoginNotStarted,
        Some((true, _)) => MembersError::LoginReplayed,
        Some((false, true)) => MembersError::LoginExpired,
        Some((false, false)) => MembersError::StateMismatch,
    })
}

/// `Set-Cookie` for a started attempt: HttpOnly, SameSite=Lax (the provider's redirect back
/// is a top-level GET from another site, which Lax lets through), Secure outside the local
/// profile, gone when the attempt expires.
pub fn set_cookie(cookie_value: &str, secure: bool) -> String {
    format!(
        "{}={cookie_value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
        cookie_name(secure),
        TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` removing the attempt's cookie once the login is done.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}",
        cookie_name(secure),
        if secure { "; Secure" } else { "" }
    )
}

/// The attempt the request's cookie names, if it has one of the right shape.
pub fn from_cookie(headers: &HeaderMap, secure: bool) -> Option<String> {
    let name = cookie_name(secure);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 43 && B64.decode(v).is_ok())
}

/// `return_to` as given to `start`, if it is a path on this site: one leading `/`, not `//`
/// or `/\` (which browsers read as another host), visible ASCII only, at most 512 bytes.
pub fn site_path(raw: &str) -> Option<&str> {
    let ok = raw.len() <= 512
        && raw.starts_with('/')
        && !raw.starts_with("//")
        && !raw.contains('\\')
        && raw.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_stays_on_this_site() {
        for good in ["/", "/vote", "/elections/1?tab=open#top"] {
            assert_eq!(site_path(good), Some(good));
        }
        for bad in [
            "",
            "vote",
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "/a b",
            "/\u{7f}",
            "/é",
            &format!("/{}", "a".repeat(512)),
        ] {
            assert_eq!(site_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_cookie_is_read_back_and_nothing_else() {
        let value = random_value();
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "other=1".parse().unwrap());
        headers.append(
            header::COOKIE,
            format!("a=b; ekklesia-login={value}").parse().unwrap(),
        );
        assert_eq!(from_cookie(&headers, false), Some(value.clone()));
        // The production name is another cookie.
        assert_eq!(from_cookie(&headers, true), None);
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "ekklesia-login=short".parse().unwrap());
        assert_eq!(from_cookie(&headers, false), None);
        assert!(set_cookie(&value, true).starts_with("__Host-ekklesia-login="));
        assert!(set_cookie(&value, true).ends_with("; Secure"));
        assert!(!set_cookie(&value, false).contains("Secure"));
    }
}
