//! Token slots: voting-token ids known in advance, so that issuing a token writes nothing a
//! database reader could pair with its hash (security review C2).
//!
//! The id of slot `s` of an election is HMAC-SHA256(the tenant's slot secret, [`LABEL`] ‖
//! len(tenant) ‖ tenant ‖ election id ‖ s). When an election opens, the hashes of slots
//! `0..N` (every member plus a margin) go to the elections side in one shuffled batch; issuing
//! a token takes the next slot number (a counter on the election's row, in the transaction
//! that records the member) and signs the slot's id. The elections side's rows are in random
//! order and share their batch's transaction, and the events side stores slot numbers only as
//! a counter: without the secret nobody can tell which hash belongs to which slot.
//!
//! When the slots run out (members added while the election is open), the next
//! `TOKEN_SLOT_CHUNK` are registered, shuffled, before the slot is handed out, with no
//! transaction open during the call (`register_more`); an election opened before slots existed
//! registers on its first issuance. A hash is always registered before its slot is counted as
//! registered, so no token that cannot vote ever leaves (the database checks
//! `slots_issued <= slots_registered` too).

use std::ops::Range;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::seq::SliceRandom;
use sha2::Sha256;
use shared::domain::{DomainError, ElectionStatus, TenantId, TokenHash};
use shared::telemetry::CorrelationId;
use shared::token::TOKEN_ID_BYTES;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::error::EventsError;
use crate::state::AppState;

/// Domain separation: a slot secret derives voting-token ids and nothing else.
pub const LABEL: &[u8] = b"ekklesia/voting-token-slot/v1\0";
/// Most hashes per registration call (ingest's `MAX_TOKENS_PER_CALL`).
pub const MAX_HASHES_PER_CALL: usize = 10_000;
/// Slot secrets are HMAC keys: at least as long as the hash.
pub const MIN_SECRET_BYTES: usize = 32;

/// One tenant's slot secret.
pub struct SlotKey {
    kid: String,
    tenant: TenantId,
    secret: Vec<u8>,
}

impl std::fmt::Debug for SlotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotKey")
            .field("kid", &self.kid)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl SlotKey {
    pub fn new(kid: impl Into<String>, tenant: TenantId, secret: Vec<u8>) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the secret needs at least {MIN_SECRET_BYTES} bytes"
            ));
        }
        Ok(Self {
            kid: kid.into(),
            tenant,
            secret,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The token id of slot `slot` of `election`.
    pub fn token_id(&self, election: Uuid, slot: u64) -> [u8; TOKEN_ID_BYTES] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC accepts any key length");
        mac.update(LABEL);
        // Tenant ids are at most 63 bytes; the length keeps the input unambiguous anyway.
        let tenant = self.tenant.as_str().as_bytes();
        mac.update(&(tenant.len() as u16).to_be_bytes());
        mac.update(tenant);
        mac.update(election.as_bytes());
        mac.update(&slot.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The hashes of `slots` of `election`, in random order: the order the elections side
    /// stores them in must say nothing about the slot numbers.
    pub fn shuffled_hashes(&self, election: Uuid, slots: Range<u64>) -> Vec<TokenHash> {
        let mut hashes: Vec<TokenHash> = slots
            .map(|s| TokenHash::of_token_id(&self.token_id(election, s)))
            .collect();
        hashes.shuffle(&mut rand::rngs::OsRng);
        hashes
    }
}

/// `TOKEN_SLOT_KEYS`: every tenant's slot secrets; a tenant's first key is its current one.
#[derive(Debug, Default)]
pub struct SlotKeys {
    keys: Vec<SlotKey>,
}

impl SlotKeys {
    pub fn new(keys: Vec<SlotKey>) -> Self {
        Self { keys }
    }

    /// Parses `kid:tenant:base64url-secret` entries separated by commas, the current key of
    /// each tenant first. Errors name the entry by position, never a field: with the fields in
    /// the wrong order the first one could be the secret.
    pub fn from_config(raw: &str) -> Result<Self, String> {
        let mut keys: Vec<SlotKey> = Vec::new();
        let entries = raw.split(',').map(str::trim).filter(|e| !e.is_empty());
        for (index, entry) in entries.enumerate() {
            let position = index + 1;
            let mut parts = entry.splitn(3, ':');
            let (Some(kid), Some(tenant), Some(secret)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "entry {position}: each key is kid:tenant:base64url-secret"
                ));
            };
            if kid.is_empty() {
                return Err(format!("entry {position}: the key id is empty"));
            }
            let tenant = TenantId::parse(tenant)
                .map_err(|_| format!("entry {position}: the tenant is not a tenant id"))?;
            let secret = B64
                .decode(secret.trim_end_matches('='))
                .map_err(|_| format!("entry {position}: the secret is not base64url"))?;
            // An election records the id of its key: two secrets under one id would make some
            // of its tokens unable to vote.
            if keys.iter().any(|k| k.kid == kid) {
                return Err(format!(
                    "entry {position}: the key id is used by an earlier entry"
                ));
            }
            let key =
                SlotKey::new(kid, tenant, secret).map_err(|e| format!("entry {position}: {e}"))?;
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// The key new elections of `tenant` derive their slots with.
    pub fn current_for(&self, tenant: &TenantId) -> Option<&SlotKey> {
        self.keys.iter().find(|k| &k.tenant == tenant)
    }

    /// `tenant`'s key `kid` (an election keeps the key it started with).
    pub fn get(&self, tenant: &TenantId, kid: &str) -> Option<&SlotKey> {
        self.keys
            .iter()
            .find(|k| k.kid == kid && &k.tenant == tenant)
    }
}

/// How many slots an election registers when it opens: every member of the registry plus a
/// margin for members added while it is open (a tenth, at least one chunk), so that in the
/// usual case one shuffled batch holds every hash that will ever be handed out.
pub fn initial_slots(members: u64, chunk: u64) -> u64 {
    members + chunk.max(members.div_ceil(10))
}

fn not_configured(tenant: &TenantId, what: &str) -> EventsError {
    tracing::error!(tenant = %tenant, "{what}");
    EventsError::TenantNotConfigured
}

/// The tenant's current slot key, or the clear problem an operator must fix.
pub fn current_key<'a>(state: &'a AppState, tenant: &TenantId) -> Result<&'a SlotKey, EventsError> {
    state
        .settings
        .token_slot_keys
        .current_for(tenant)
        .ok_or_else(|| not_configured(tenant, "TOKEN_SLOT_KEYS has no key for this tenant"))
}

fn key_by_id<'a>(
    state: &'a AppState,
    tenant: &TenantId,
    kid: &str,
) -> Result<&'a SlotKey, EventsError> {
    state
        .settings
        .token_slot_keys
        .get(tenant, kid)
        .ok_or_else(|| {
            not_configured(
                tenant,
                &format!("TOKEN_SLOT_KEYS no longer has key {kid}, which an open election of this tenant uses"),
            )
        })
}

async fn register(
    state: &AppState,
    key: &SlotKey,
    election: Uuid,
    slots: Range<u64>,
    correlation: &CorrelationId,
) -> Result<(), EventsError> {
    let count = slots.end - slots.start;
    let hashes = key.shuffled_hashes(election, slots);
    state
        .elections
        .register_tokens(key.tenant(), election, &hashes, correlation)
        .await?;
    tracing::info!(election_id = %election, tenant = %key.tenant(), slots = count, "token slots registered");
    Ok(())
}

async fn member_count(tx: &mut Transaction<'_, Postgres>) -> Result<u64, EventsError> {
    let members = sqlx::query_scalar!(r#"SELECT events.tenant_member_count() AS "members!""#)
        .fetch_one(&mut **tx)
        .await?;
    Ok(members.max(0) as u64)
}

/// When `election` opens: registers every member's slot plus a margin and records how many,
/// inside the transition's transaction (the election's row is locked). If anything fails the
/// election does not open; hashes already registered are harmless, and a retry registers the
/// same ones again (derived, not random), which the elections side ignores.
pub async fn register_at_open(
    state: &AppState,
    tx: &mut Transaction<'_, Postgres>,
    tenant: &TenantId,
    election: Uuid,
    correlation: &CorrelationId,
) -> Result<(), EventsError> {
    let key = current_key(state, tenant)?;
    let registered = sqlx::query_scalar!(
        "SELECT slots_registered FROM events.elections WHERE id = $1",
        election
    )
    .fetch_one(&mut **tx)
    .await?;
    if registered > 0 {
        return Ok(());
    }
    let slots = initial_slots(member_count(tx).await?, state.settings.token_slot_chunk);
    register(state, key, election, 0..slots, correlation).await?;
    sqlx::query!(
        "UPDATE events.elections SET slot_key_id = $2, slots_registered = $3 WHERE id = $1",
        election,
        key.kid(),
        slots as i64
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes the next registered slot of the open `election` for a member's token, in the issuing
/// transaction: its number and the key to derive its id with, or `None` when every registered
/// slot is taken (then [`register_more`], with the transaction closed, and try again). The row
/// lock this takes is held until the transaction ends, so slots are handed out one at a time,
/// in order (which tells nothing: slot numbers are not visible on the elections side).
pub async fn take<'a>(
    state: &'a AppState,
    tx: &mut Transaction<'_, Postgres>,
    tenant: &TenantId,
    election: Uuid,
) -> Result<Option<(u64, &'a SlotKey)>, EventsError> {
    let taken = sqlx::query!(
        r#"UPDATE events.elections SET slots_issued = slots_issued + 1
           WHERE id = $1 AND status = 'open' AND slots_issued < slots_registered
           RETURNING slots_issued - 1 AS "slot!", slot_key_id"#,
        election
    )
    .fetch_optional(&mut **tx)
    .await?;
    let Some(taken) = taken else {
        return Ok(None);
    };
    let (slot, kid) = (taken.slot, taken.slot_key_id);
    // A registered slot always has its key (constraint `slots_keyed`).
    let kid = kid.ok_or_else(shared::Problem::internal)?;
    Ok(Some((slot as u64, key_by_id(state, tenant, &kid)?)))
}

/// Registers more slots of the open `election` once every registered one is taken: the next
/// `TOKEN_SLOT_CHUNK`, shuffled (an election opened before slots existed registers as an
/// opening would). No transaction is open while the elections side is called, so a slow
/// elections side holds neither a database connection nor the election's row (review L7).
///
/// Registrations are one at a time per instance (`AppState::slot_registrations`), and one
/// that finds free slots again (another request registered them) calls nobody. Instances may
/// still register the same range at once: the hashes are derived, not random, so the elections
/// side keeps each once, and the count only grows (`GREATEST`). A slot is counted as registered
/// only after its hash was registered, so no token that cannot vote is ever handed out.
pub async fn register_more(
    state: &AppState,
    tenant: &TenantId,
    election: Uuid,
    correlation: &CorrelationId,
) -> Result<(), EventsError> {
    let _one_at_a_time = state.slot_registrations.lock().await;
    let mut tx = shared::db::begin_for_tenant(&state.pool, tenant).await?;
    let row = sqlx::query!(
        "SELECT status, slot_key_id, slots_registered, slots_issued FROM events.elections \
         WHERE id = $1",
        election
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(EventsError::UnknownElection)?;
    let (kid, registered, issued) = (row.slot_key_id, row.slots_registered, row.slots_issued);
    let status = ElectionStatus::parse(&row.status)?;
    if status != ElectionStatus::Open {
        return Err(DomainError::NotOpen(status).into());
    }
    let (registered, issued) = (registered.max(0) as u64, issued.max(0) as u64);
    if issued < registered {
        return Ok(());
    }
    let key = match kid.as_deref() {
        Some(kid) => key_by_id(state, tenant, kid)?,
        None => current_key(state, tenant)?,
    };
    let chunk = state.settings.token_slot_chunk;
    let wanted = if registered == 0 {
        initial_slots(member_count(&mut tx).await?, chunk)
    } else {
        registered + chunk
    }
    .max(issued + 1);
    tx.commit().await?;
    register(state, key, election, registered..wanted, correlation).await?;
    let mut tx = shared::db::begin_for_tenant(&state.pool, tenant).await?;
    // Only under the key the election's slots are derived with (another instance may have
    // started a legacy election's slots with another current key meanwhile: then this round
    // counts nothing and the next one uses that key).
    sqlx::query!(
        "UPDATE events.elections \
         SET slot_key_id = $2, slots_registered = GREATEST(slots_registered, $3) \
         WHERE id = $1 AND status = 'open' AND (slot_key_id IS NULL OR slot_key_id = $2)",
        election,
        key.kid(),
        wanted as i64
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn secret(byte: u8) -> String {
        B64.encode([byte; 32])
    }

    #[test]
    fn slot_ids_depend_on_secret_tenant_election_and_slot() {
        let a = SlotKey::new("k1", tenant("party-a"), vec![1; 32]).unwrap();
        let election = Uuid::new_v4();
        let id = a.token_id(election, 0);
        assert_eq!(id, a.token_id(election, 0), "derived, not random");
        assert_ne!(id, a.token_id(election, 1));
        assert_ne!(id, a.token_id(Uuid::new_v4(), 0));
        let b = SlotKey::new("k1", tenant("party-b"), vec![1; 32]).unwrap();
        assert_ne!(id, b.token_id(election, 0));
        let other = SlotKey::new("k1", tenant("party-a"), vec![2; 32]).unwrap();
        assert_ne!(id, other.token_id(election, 0));
    }

    #[test]
    fn shuffled_hashes_are_the_slots_hashes_in_another_order() {
        let key = SlotKey::new("k1", tenant("party-a"), vec![1; 32]).unwrap();
        let election = Uuid::new_v4();
        let in_order: Vec<TokenHash> = (0..200)
            .map(|s| TokenHash::of_token_id(&key.token_id(election, s)))
            .collect();
        let shuffled = key.shuffled_hashes(election, 0..200);
        assert_ne!(shuffled, in_order, "1 in 200! to fail by chance");
        let mut a: Vec<String> = shuffled.iter().map(TokenHash::to_hex).collect();
        let mut b: Vec<String> = in_order.iter().map(TokenHash::to_hex).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    #[test]
    fn config_takes_the_first_key_of_a_tenant_and_finds_others_by_id() {
        let raw = format!(
            "a2:party-a:{}, a1:party-a:{},b1:party-b:{}",
            secret(1),
            secret(2),
            secret(3)
        );
        let keys = SlotKeys::from_config(&raw).unwrap();
        assert_eq!(keys.current_for(&tenant("party-a")).unwrap().kid(), "a2");
        assert_eq!(keys.current_for(&tenant("party-b")).unwrap().kid(), "b1");
        assert!(keys.get(&tenant("party-a"), "a1").is_some());
        assert!(
            keys.get(&tenant("party-a"), "b1").is_none(),
            "another tenant's key"
        );
        assert!(keys.current_for(&tenant("party-c")).is_none());
    }

    #[test]
    fn config_errors_name_the_entry_never_the_secret() {
        let long = secret(7);
        let short = B64.encode([7u8; 16]);
        for (raw, expected) in [
            (format!("party-a:{long}:k1"), "entry 1: the tenant"),
            (format!("{long}:party-a:k1"), "entry 1: the secret is not"),
            (format!("k1:party-a:{long},{long}"), "entry 2: each key"),
            (format!("k1:party-a:{short}"), "entry 1: the secret needs"),
            (format!("k1:party-a:{long}!"), "entry 1: the secret is not"),
            (
                format!("k1:party-a:{long},k1:party-b:{long}"),
                "entry 2: the key id",
            ),
            (format!(":party-a:{long}"), "entry 1: the key id is empty"),
        ] {
            let error = SlotKeys::from_config(&raw).unwrap_err();
            assert!(error.starts_with(expected), "{raw}: {error}");
            assert!(!error.contains(&long) && !error.contains(&short), "{error}");
        }
        assert!(SlotKeys::from_config("").unwrap().keys.is_empty());
    }

    #[test]
    fn an_opening_registers_every_member_and_a_margin_of_at_least_a_chunk() {
        assert_eq!(initial_slots(0, 64), 64);
        assert_eq!(initial_slots(50, 64), 114);
        assert_eq!(initial_slots(5000, 64), 5500);
        assert_eq!(initial_slots(5001, 64), 5502);
    }
}
