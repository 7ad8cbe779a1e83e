//! The tamper-evident audit log (`ops.audit_log`, migration 14; seed ADR-002).
//!
//! Every S2S event on the elections side (election pushed, tokens registered, results read) is
//! appended to its tenant's chain, and every queue-flag change to the platform organisation's,
//! in the transaction that has the effect. Each entry carries
//! `mac = HMAC-SHA256(AUDIT_KEY, canonical(entry) ‖ previous entry's mac)`, computed here by the
//! writing service: the key never reaches the database, so its owner (or anyone restoring a
//! backup) can change rows but cannot make a changed chain verify. [`verify`] walks a chain and
//! names the first entry that was edited, deleted, inserted or reordered.
//!
//! Entries hold what happened, to which election, by which S2S key (or which path changed the
//! flag), when, and counts: never a member id, token, hash, receipt or choice. A flag change's
//! entry names its `ops.queue_mode_audit` row and carries a MAC of that row's content (who,
//! the database login, when, old, new), so that row is tamper-evident too.
//!
//! What a chain cannot show by itself: entries cut off its end (the last ones deleted). Each
//! append is logged (`audit entry appended`, chain, seq, mac), and `audit verify` prints the
//! last entry, so the two can be compared.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::TenantId;

mod verify;
pub use verify::{diagnose, verify, Finding, Verdict};

type HmacSha256 = Hmac<Sha256>;

/// The MAC of the entry before the first.
const GENESIS: [u8; 32] = [0; 32];
const DOMAIN: &[u8] = b"ekklesia-audit-v1\0";
const CHANGE_DOMAIN: &[u8] = b"ekklesia-audit-queue-mode-change-v1\0";

/// `AUDIT_KEY`: base64url, at least 32 bytes. Held by the services that write entries (ingest,
/// events-svc, the queue-mode CLI) and by whoever verifies.
#[derive(Clone)]
pub struct AuditKey(Vec<u8>);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(redacted)")
    }
}

impl AuditKey {
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < 32 {
            return Err("the audit key needs at least 32 bytes".into());
        }
        Ok(Self(bytes))
    }

    pub fn from_base64(raw: &str) -> Result<Self, String> {
        let bytes = B64
            .decode(raw.trim().trim_end_matches('='))
            .map_err(|_| "the audit key must be base64url".to_owned())?;
        Self::new(bytes)
    }

    /// A fresh random key as `AUDIT_KEY` holds it (tests, development keys).
    pub fn generate_base64() -> String {
        B64.encode(rand::random::<[u8; 32]>())
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }
}

/// Reads `AUDIT_KEY` (required), recording a problem on `env` if it is missing or malformed.
pub fn key_from_env(env: &mut crate::config::Env) -> AuditKey {
    let raw = env.string("AUDIT_KEY");
    let key = if raw.is_empty() {
        None
    } else {
        AuditKey::from_base64(&raw)
            .map_err(|e| env.problem(format!("AUDIT_KEY: {e}")))
            .ok()
    };
    // A throwaway key when the setting is unusable: `Env::finish` refuses to build anything then.
    key.unwrap_or_else(|| AuditKey(rand::random::<[u8; 32]>().to_vec()))
}

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    ElectionPushed,
    TokensRegistered,
    ResultsRead,
    QueueModeChanged,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ElectionPushed => "election_pushed",
            Self::TokensRegistered => "tokens_registered",
            Self::ResultsRead => "results_read",
            Self::QueueModeChanged => "queue_mode_changed",
        }
    }
}

/// An S2S event to append: the caller's key id is the actor, `summary` holds counts and states.
pub struct NewEntry<'a> {
    pub event: Event,
    pub election_id: Option<Uuid>,
    pub actor: &'a str,
    pub summary: serde_json::Value,
}

/// An entry as stored (`FromRow` for the tests, which read the log with their own SQL).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Entry {
    pub chain: String,
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub event: String,
    pub election_id: Option<Uuid>,
    pub queue_mode_change: Option<i64>,
    /// The MAC of the `ops.queue_mode_audit` row `queue_mode_change` names.
    pub change_mac: Option<Vec<u8>>,
    pub actor: String,
    /// The JSON text exactly as written (the MAC covers these bytes).
    pub summary: String,
    pub prev_mac: Vec<u8>,
    pub mac: Vec<u8>,
}

/// The `ops.queue_mode_audit` row a flag change's entry audits; its MAC covers all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueModeChange {
    pub id: i64,
    pub changed_at: DateTime<Utc>,
    pub changed_by: String,
    pub database_user: Option<String>,
    pub old_enabled: Option<bool>,
    pub new_enabled: bool,
}

fn put_bytes(mac: &mut HmacSha256, bytes: &[u8]) {
    mac.update(&(bytes.len() as u32).to_be_bytes());
    mac.update(bytes);
}

fn put_i64(mac: &mut HmacSha256, value: i64) {
    mac.update(&value.to_be_bytes());
}

fn put_option<T>(mac: &mut HmacSha256, value: Option<T>, put: impl FnOnce(&mut HmacSha256, T)) {
    match value {
        None => mac.update(&[0]),
        Some(v) => {
            mac.update(&[1]);
            put(mac, v);
        }
    }
}

/// The entry's MAC with `seq` in place of its own (a reordered entry verifies at its old place).
/// Every field is length-prefixed or fixed-size, so no two entries share an input.
fn mac_of(key: &AuditKey, entry: &Entry, seq: i64) -> [u8; 32] {
    let mut mac = key.mac();
    mac.update(DOMAIN);
    put_bytes(&mut mac, entry.chain.as_bytes());
    put_i64(&mut mac, seq);
    put_i64(&mut mac, entry.at.timestamp_micros());
    put_bytes(&mut mac, entry.event.as_bytes());
    put_option(&mut mac, entry.election_id, |m, id| m.update(id.as_bytes()));
    put_option(&mut mac, entry.queue_mode_change, put_i64);
    put_option(&mut mac, entry.change_mac.as_deref(), put_bytes);
    put_bytes(&mut mac, entry.actor.as_bytes());
    put_bytes(&mut mac, entry.summary.as_bytes());
    put_bytes(&mut mac, &entry.prev_mac);
    mac.finalize().into_bytes().into()
}

/// The MAC of a flag change's row, which its entry carries.
fn change_mac_of(key: &AuditKey, change: &QueueModeChange) -> [u8; 32] {
    let mut mac = key.mac();
    mac.update(CHANGE_DOMAIN);
    put_i64(&mut mac, change.id);
    put_i64(&mut mac, change.changed_at.timestamp_micros());
    put_bytes(&mut mac, change.changed_by.as_bytes());
    put_option(
        &mut mac,
        change.database_user.as_deref().map(str::as_bytes),
        put_bytes,
    );
    put_option(&mut mac, change.old_enabled, |m, b| {
        m.update(&[u8::from(b)])
    });
    mac.update(&[u8::from(change.new_enabled)]);
    mac.finalize().into_bytes().into()
}

fn verifies(key: &AuditKey, entry: &Entry, seq: i64) -> bool {
    mac_of(key, entry, seq).as_slice() == entry.mac.as_slice()
}

/// Appends `entry` to `chain`, in the caller's transaction (whose tenant, `app.org_id`, must
/// be `chain`). Takes the chain's lock until that transaction ends: call it last, just before
/// the commit.
pub async fn append(
    conn: &mut PgConnection,
    key: &AuditKey,
    chain: &TenantId,
    entry: NewEntry<'_>,
) -> Result<Entry, sqlx::Error> {
    // serde_json's maps are ordered by key, so the same summary is always the same text.
    let summary = entry.summary.to_string();
    write(
        conn,
        key,
        chain,
        entry.event,
        entry.election_id,
        None,
        entry.actor,
        summary,
    )
    .await
}

/// Appends the entry of every queue-flag change this transaction made (`ops.set_queue_mode`,
/// also through `ops.change_queue_mode`) to `chain` (the platform organisation's; the
/// transaction's tenant), naming `path`, the way the change came (`events-svc`,
/// `queue-mode-cli`). Call it in every transaction that changes the flag.
pub async fn append_queue_mode_changes(
    conn: &mut PgConnection,
    key: &AuditKey,
    chain: &TenantId,
    path: &str,
) -> Result<Vec<Entry>, sqlx::Error> {
    let changes = sqlx::query_as!(
        QueueModeChange,
        "SELECT id, changed_at, changed_by, database_user, old_enabled, new_enabled \
         FROM ops.queue_mode_audit WHERE txid = pg_current_xact_id() ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut entries = Vec::with_capacity(changes.len());
    for change in changes {
        let summary = serde_json::json!({"old": change.old_enabled, "new": change.new_enabled});
        entries.push(
            write(
                conn,
                key,
                chain,
                Event::QueueModeChanged,
                None,
                Some(&change),
                path,
                summary.to_string(),
            )
            .await?,
        );
    }
    Ok(entries)
}

#[allow(clippy::too_many_arguments)]
async fn write(
    conn: &mut PgConnection,
    key: &AuditKey,
    chain: &TenantId,
    event: Event,
    election_id: Option<Uuid>,
    change: Option<&QueueModeChange>,
    actor: &str,
    summary: String,
) -> Result<Entry, sqlx::Error> {
    let tail = sqlx::query!(
        r#"SELECT seq AS "seq!", mac, at AS "at!" FROM ops.audit_tail($1)"#,
        chain.as_str()
    )
    .fetch_one(&mut *conn)
    .await?;
    let (last, prev_mac, at) = (tail.seq, tail.mac, tail.at);
    let mut entry = Entry {
        chain: chain.as_str().to_owned(),
        seq: last + 1,
        at,
        event: event.as_str().to_owned(),
        election_id,
        queue_mode_change: change.map(|c| c.id),
        change_mac: change.map(|c| change_mac_of(key, c).to_vec()),
        actor: actor.to_owned(),
        summary,
        prev_mac: prev_mac.unwrap_or_else(|| GENESIS.to_vec()),
        mac: Vec::new(),
    };
    entry.mac = mac_of(key, &entry, entry.seq).to_vec();
    // The summary goes in as text so the stored JSON is the very bytes the MAC covers.
    sqlx::query!(
        "INSERT INTO ops.audit_log (chain, seq, at, event, election_id, queue_mode_change, \
                                    change_mac, actor, summary, prev_mac, mac) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::json, $10, $11)",
        &entry.chain,
        entry.seq,
        entry.at,
        &entry.event,
        entry.election_id,
        entry.queue_mode_change,
        entry.change_mac.as_deref(),
        &entry.actor,
        &entry.summary,
        &entry.prev_mac,
        &entry.mac
    )
    .execute(&mut *conn)
    .await?;
    // An anchor outside the database: the log shows how far each chain went.
    tracing::info!(
        audit_chain = %entry.chain,
        audit_seq = entry.seq,
        audit_mac = %hex::encode(&entry.mac),
        event = %entry.event,
        "audit entry appended"
    );
    Ok(entry)
}

#[cfg(test)]
mod tests;
