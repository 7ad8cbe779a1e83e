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

/// An entry as stored.
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
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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
    let changes: Vec<QueueModeChange> = sqlx::query_as(
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
    let (last, prev_mac, at): (i64, Option<Vec<u8>>, DateTime<Utc>) =
        sqlx::query_as("SELECT seq, mac, at FROM ops.audit_tail($1)")
            .bind(chain.as_str())
            .fetch_one(&mut *conn)
            .await?;
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
    sqlx::query(
        "INSERT INTO ops.audit_log (chain, seq, at, event, election_id, queue_mode_change, \
                                    change_mac, actor, summary, prev_mac, mac) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::json, $10, $11)",
    )
    .bind(&entry.chain)
    .bind(entry.seq)
    .bind(entry.at)
    .bind(&entry.event)
    .bind(entry.election_id)
    .bind(entry.queue_mode_change)
    .bind(&entry.change_mac)
    .bind(&entry.actor)
    .bind(&entry.summary)
    .bind(&entry.prev_mac)
    .bind(&entry.mac)
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

/// What is wrong with a chain: its first problem, by the entry's sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The entry's content (or the flag change it audits) is not what was written.
    Edited { seq: i64 },
    /// Entries `from..=to` are missing: the entry after them was written after another one.
    Deleted { from: i64, to: i64 },
    /// The entry was never written with the key; the chain goes on as if it were not there.
    Inserted { seq: i64 },
    /// The entry stands at `seq` but was written as entry `written_as`.
    Reordered { seq: i64, written_as: i64 },
    /// The last entry does not verify: edited, or appended by someone without the key (with
    /// nothing after it, the two look alike).
    NotAuthentic { seq: i64 },
    /// Two genuine entries follow the same one: the writers were not serialised.
    Forked { seq: i64 },
    /// The entry is genuine, but the `ops.queue_mode_audit` row it audits was edited or deleted.
    ChangeEdited { seq: i64, change: i64 },
}

impl Finding {
    /// The sequence number of the entry the finding names.
    pub fn seq(&self) -> i64 {
        match *self {
            Self::Edited { seq }
            | Self::Inserted { seq }
            | Self::Reordered { seq, .. }
            | Self::NotAuthentic { seq }
            | Self::Forked { seq }
            | Self::ChangeEdited { seq, .. } => seq,
            Self::Deleted { from, .. } => from,
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Edited { seq } => write!(f, "entry #{seq} was edited"),
            Self::Deleted { from, to } if from == to => {
                write!(
                    f,
                    "entry #{from} was deleted (#{} follows #{})",
                    to + 1,
                    from - 1
                )
            }
            Self::Deleted { from, to } => write!(
                f,
                "entries #{from} to #{to} were deleted (#{} follows #{})",
                to + 1,
                from - 1
            ),
            Self::Inserted { seq } => {
                write!(f, "entry #{seq} was inserted (not written with the key)")
            }
            Self::Reordered { seq, written_as } => {
                write!(
                    f,
                    "entry #{seq} was reordered (it was written as #{written_as})"
                )
            }
            Self::NotAuthentic { seq } => write!(
                f,
                "entry #{seq} is not authentic: edited, or inserted at the end of the chain"
            ),
            Self::Forked { seq } => write!(
                f,
                "entry #{seq} forks the chain (another genuine entry follows the same one)"
            ),
            Self::ChangeEdited { seq, change } => write!(
                f,
                "entry #{seq} is genuine, but the queue-mode change {change} it audits \
                 (ops.queue_mode_audit) was edited or deleted"
            ),
        }
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone)]
pub struct Verdict {
    pub chain: String,
    pub entries: usize,
    /// How many entries carry a MAC that verifies (0 of many: probably the wrong key).
    pub authentic: usize,
    /// The last entry, as stored (compare with the last `audit entry appended` log line).
    pub last: Option<Entry>,
    pub finding: Option<Finding>,
    /// The entry the finding names, as stored (a deleted entry's successor).
    pub named: Option<Entry>,
}

impl Verdict {
    pub fn intact(&self) -> bool {
        self.finding.is_none()
    }
}

/// Walks `chain` in sequence order and names its first problem. Run it as the database owner
/// (the services cannot read the log).
pub async fn verify(
    conn: &mut PgConnection,
    key: &AuditKey,
    chain: &str,
) -> Result<Verdict, sqlx::Error> {
    let entries: Vec<Entry> = sqlx::query_as(
        "SELECT chain, seq, at, event, election_id, queue_mode_change, change_mac, actor, \
                summary::text AS summary, prev_mac, mac \
         FROM ops.audit_log WHERE chain = $1 ORDER BY seq",
    )
    .bind(chain)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<i64> = entries.iter().filter_map(|e| e.queue_mode_change).collect();
    let changes: Vec<QueueModeChange> = sqlx::query_as(
        "SELECT id, changed_at, changed_by, database_user, old_enabled, new_enabled \
         FROM ops.queue_mode_audit WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(diagnose(key, chain, entries, &changes))
}

/// The walk itself, on entries sorted by `seq` (separate from the database for unit tests).
pub fn diagnose(
    key: &AuditKey,
    chain: &str,
    entries: Vec<Entry>,
    changes: &[QueueModeChange],
) -> Verdict {
    let valid: Vec<bool> = entries.iter().map(|e| verifies(key, e, e.seq)).collect();
    // A genuine entry's flag change is as it was written, or gone.
    let change_intact = |e: &Entry| match (e.queue_mode_change, &e.change_mac) {
        (None, _) => true,
        (Some(id), Some(mac)) => changes
            .iter()
            .find(|c| c.id == id)
            .is_some_and(|c| change_mac_of(key, c).as_slice() == mac.as_slice()),
        (Some(_), None) => false,
    };
    let mut finding = None;
    let mut named = None;
    let (mut expected_seq, mut expected_prev) = (1i64, GENESIS.to_vec());
    for (i, entry) in entries.iter().enumerate() {
        if valid[i] && entry.seq == expected_seq && entry.prev_mac == expected_prev {
            if !change_intact(entry) {
                finding = Some(Finding::ChangeEdited {
                    seq: entry.seq,
                    change: entry.queue_mode_change.unwrap_or_default(),
                });
                named = Some(entry.clone());
                break;
            }
            expected_seq += 1;
            expected_prev = entry.mac.clone();
            continue;
        }
        let found = if valid[i] {
            // Genuine where it stands (the MAC covers its seq), but not after the entry before.
            if entry.seq > expected_seq {
                Finding::Deleted {
                    from: expected_seq,
                    to: entry.seq - 1,
                }
            } else {
                Finding::Forked { seq: entry.seq }
            }
        } else {
            let last_seq = entries.last().map_or(0, |e| e.seq);
            let limit = last_seq.max(entries.len() as i64) + 1;
            let written_as = (1..=limit)
                .filter(|&s| s != entry.seq)
                .find(|&s| verifies(key, entry, s));
            let next = entries.get(i + 1);
            if let Some(written_as) = written_as {
                Finding::Reordered {
                    seq: entry.seq,
                    written_as,
                }
            } else if entries[i + 1..].iter().any(|l| l.prev_mac == entry.mac) {
                // Its MAC is the one the chain goes on from: the MAC is genuine, the content not.
                Finding::Edited { seq: entry.seq }
            } else if next.is_some_and(|n| n.prev_mac == expected_prev) {
                Finding::Inserted { seq: entry.seq }
            } else {
                Finding::NotAuthentic { seq: entry.seq }
            }
        };
        finding = Some(found);
        named = Some(entry.clone());
        break;
    }
    Verdict {
        chain: chain.to_owned(),
        entries: entries.len(),
        authentic: valid.iter().filter(|v| **v).count(),
        last: entries.last().cloned(),
        finding,
        named,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::new(vec![7; 32]).unwrap()
    }

    /// A chain of `n` entries as `append` writes them.
    fn chain(key: &AuditKey, n: i64) -> Vec<Entry> {
        let mut prev = GENESIS.to_vec();
        (1..=n)
            .map(|seq| {
                let mut e = Entry {
                    chain: "party-a".into(),
                    seq,
                    at: DateTime::from_timestamp_micros(1_700_000_000_000_000 + seq).unwrap(),
                    event: "tokens_registered".into(),
                    election_id: Some(Uuid::from_u128(seq as u128)),
                    queue_mode_change: None,
                    change_mac: None,
                    actor: "party-a-s2s".into(),
                    summary: format!("{{\"received\":{seq}}}"),
                    prev_mac: prev.clone(),
                    mac: Vec::new(),
                };
                e.mac = mac_of(key, &e, seq).to_vec();
                prev = e.mac.clone();
                e
            })
            .collect()
    }

    fn finding(entries: Vec<Entry>) -> Option<Finding> {
        let mut entries = entries;
        entries.sort_by_key(|e| e.seq);
        diagnose(&key(), "party-a", entries, &[]).finding
    }

    #[test]
    fn an_intact_chain_verifies_and_each_tampering_is_named() {
        let key = key();
        assert_eq!(finding(chain(&key, 6)), None);
        assert_eq!(finding(Vec::new()), None);

        let mut edited = chain(&key, 6);
        edited[2].summary = "{\"received\":999}".into();
        assert_eq!(finding(edited), Some(Finding::Edited { seq: 3 }));

        let mut deleted = chain(&key, 6);
        deleted.remove(2);
        assert_eq!(finding(deleted), Some(Finding::Deleted { from: 3, to: 3 }));
        let mut first_gone = chain(&key, 3);
        first_gone.remove(0);
        assert_eq!(
            finding(first_gone),
            Some(Finding::Deleted { from: 1, to: 1 })
        );

        // A forged entry slipped in after #3: the later ones moved up one place.
        let mut inserted = chain(&key, 6);
        let mut forged = inserted[2].clone();
        forged.summary = "{\"received\":1000}".into();
        forged.prev_mac = inserted[2].mac.clone();
        forged.mac = vec![1; 32];
        for e in &mut inserted[3..] {
            e.seq += 1;
        }
        forged.seq = 4;
        inserted.push(forged);
        assert_eq!(finding(inserted), Some(Finding::Inserted { seq: 4 }));

        let mut swapped = chain(&key, 6);
        swapped[1].seq = 3;
        swapped[2].seq = 2;
        assert_eq!(
            finding(swapped),
            Some(Finding::Reordered {
                seq: 2,
                written_as: 3
            })
        );

        let mut appended = chain(&key, 3);
        let mut forged = appended[2].clone();
        forged.seq = 4;
        forged.prev_mac = appended[2].mac.clone();
        forged.mac = vec![2; 32];
        appended.push(forged);
        assert_eq!(finding(appended), Some(Finding::NotAuthentic { seq: 4 }));
    }

    #[test]
    fn another_key_verifies_nothing() {
        let entries = chain(&key(), 3);
        let other = AuditKey::new(vec![8; 32]).unwrap();
        let verdict = diagnose(&other, "party-a", entries, &[]);
        assert_eq!(verdict.authentic, 0);
        assert!(!verdict.intact());
    }

    #[test]
    fn the_key_is_never_printed_and_must_be_long_enough() {
        let raw = AuditKey::generate_base64();
        let key = AuditKey::from_base64(&raw).unwrap();
        assert!(!format!("{key:?}").contains(&raw));
        assert!(AuditKey::from_base64(&B64.encode([1u8; 31])).is_err());
        assert!(AuditKey::from_base64("not base64!").is_err());
    }
}
