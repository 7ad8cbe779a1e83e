//! The keys only ingest and the worker hold (`VOTE_KEYS`), and what they protect:
//!
//! - the **vote message** on Pub/Sub is encrypted and authenticated (AES-256-GCM), so nobody who
//!   can publish to the topic can forge a vote or move its `accepted_at`, and nobody who can read
//!   the subscription or the dead-letter topic learns a choice;
//! - a **ballot** stays encrypted in `elections.ballot_box` until its election is sealed, so a
//!   database reader (or a backup, or the WAL) sees no choice next to the transaction id and order
//!   that tie it to its token or batch; the seal decrypts the ballots and writes them in random order.
//!
//! `VOTE_KEYS` is `kid:base64url-secret,...` (≥ 32 bytes each). The first key encrypts; every key
//! listed decrypts, so a rotation is: add the new key second, roll it out to every instance, move it
//! first, and drop the old one once every election that used it is sealed and its queue drained.
//! Separate subkeys are derived per purpose, so a ciphertext of one kind never opens as the other.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::domain::TenantId;

const MESSAGE_LABEL: &[u8] = b"ekklesia/vote-message/v1";
const BALLOT_LABEL: &[u8] = b"ekklesia/ballot-box/v1";
/// First byte of a sealed ballot: the format, so a later one can be told apart.
const BALLOT_FORMAT: u8 = 1;
pub const MAX_KID_LEN: usize = 32;

struct VoteKey {
    id: String,
    message: LessSafeKey,
    ballot: LessSafeKey,
}

/// Every vote key this instance knows; the first one encrypts.
pub struct VoteKeys {
    keys: Vec<VoteKey>,
}

impl std::fmt::Debug for VoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("VoteKeys").field("ids", &ids).finish()
    }
}

/// Why a ciphertext did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("malformed ciphertext")]
    Malformed,
    /// Encrypted with a key this instance does not hold (a rotation not rolled out here yet).
    #[error("unknown vote key")]
    UnknownKey,
    /// The tag does not verify: altered, forged, or bound to another tenant or election.
    #[error("ciphertext does not authenticate")]
    Forged,
}

fn subkey(secret: &[u8], label: &[u8]) -> LessSafeKey {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(label);
    let bytes = mac.finalize().into_bytes();
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("32-byte AES-256 key"))
}

fn fresh_nonce() -> [u8; NONCE_LEN] {
    // 96 random bits per encryption: far below the collision bound for the votes one key sees.
    rand::random()
}

impl VoteKeys {
    /// Parses `VOTE_KEYS`. Errors name the entry by position, never by content.
    pub fn from_config(raw: &str) -> Result<Self, String> {
        let mut keys: Vec<VoteKey> = Vec::new();
        for (n, entry) in raw
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let position = n + 1;
            let Some((id, secret)) = entry.split_once(':') else {
                return Err(format!("entry {position} is not kid:base64url-secret"));
            };
            if id.is_empty() || id.len() > MAX_KID_LEN || !id.is_ascii() {
                return Err(format!(
                    "entry {position}: a key id is 1 to {MAX_KID_LEN} ASCII characters"
                ));
            }
            let secret = B64
                .decode(secret.trim_end_matches('='))
                .map_err(|_| format!("entry {position}: the secret is not base64url"))?;
            if secret.len() < 32 {
                return Err(format!(
                    "entry {position}: the secret needs at least 32 bytes"
                ));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(format!("entry {position}: key id used twice"));
            }
            keys.push(VoteKey {
                id: id.to_owned(),
                message: subkey(&secret, MESSAGE_LABEL),
                ballot: subkey(&secret, BALLOT_LABEL),
            });
        }
        if keys.is_empty() {
            return Err("at least one key is needed".into());
        }
        Ok(Self { keys })
    }

    /// A fresh random keyring of one key, as `VOTE_KEYS` would hold it (tests, dev keys).
    pub fn generate_config(kid: &str) -> String {
        let secret: [u8; 32] = rand::random();
        format!("{kid}:{}", B64.encode(secret))
    }

    fn current(&self) -> &VoteKey {
        &self.keys[0]
    }

    fn by_id(&self, id: &str) -> Option<&VoteKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Encrypts a vote message's payload: `(key id, nonce, ciphertext with tag)`.
    pub fn encrypt_message(&self, plaintext: &[u8]) -> (String, [u8; NONCE_LEN], Vec<u8>) {
        let key = self.current();
        let nonce = fresh_nonce();
        let mut data = plaintext.to_vec();
        key.message
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(MESSAGE_LABEL),
                &mut data,
            )
            .expect("AES-GCM seals any message shorter than 64 GiB");
        (key.id.clone(), nonce, data)
    }

    pub fn decrypt_message(
        &self,
        kid: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, OpenError> {
        let key = self.by_id(kid).ok_or(OpenError::UnknownKey)?;
        open(&key.message, nonce, MESSAGE_LABEL, ciphertext)
    }

    /// A ballot's choices sealed for `elections.ballot_box`, bound to its tenant and election.
    pub fn encrypt_ballot(&self, tenant: &TenantId, election: Uuid, choices: &[String]) -> Vec<u8> {
        let key = self.current();
        let nonce = fresh_nonce();
        let mut data = serde_json::to_vec(choices).expect("a list of strings serialises");
        key.ballot
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(ballot_aad(tenant, election)),
                &mut data,
            )
            .expect("AES-GCM seals any ballot");
        let mut out = Vec::with_capacity(2 + key.id.len() + NONCE_LEN + data.len());
        out.push(BALLOT_FORMAT);
        out.push(key.id.len() as u8);
        out.extend_from_slice(key.id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        out
    }

    pub fn decrypt_ballot(
        &self,
        tenant: &TenantId,
        election: Uuid,
        sealed: &[u8],
    ) -> Result<Vec<String>, OpenError> {
        let (&format, rest) = sealed.split_first().ok_or(OpenError::Malformed)?;
        let (&kid_len, rest) = rest.split_first().ok_or(OpenError::Malformed)?;
        if format != BALLOT_FORMAT || rest.len() < kid_len as usize + NONCE_LEN {
            return Err(OpenError::Malformed);
        }
        let (kid, rest) = rest.split_at(kid_len as usize);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let kid = std::str::from_utf8(kid).map_err(|_| OpenError::Malformed)?;
        let key = self.by_id(kid).ok_or(OpenError::UnknownKey)?;
        let plaintext = open(
            &key.ballot,
            nonce,
            &ballot_aad(tenant, election),
            ciphertext,
        )?;
        serde_json::from_slice(&plaintext).map_err(|_| OpenError::Malformed)
    }
}

/// Reads `VOTE_KEYS` (required), recording a problem on `env` if it is missing or malformed.
pub fn from_env(env: &mut crate::config::Env) -> std::sync::Arc<VoteKeys> {
    let raw = env.string("VOTE_KEYS");
    let keys = if raw.is_empty() {
        None
    } else {
        VoteKeys::from_config(&raw)
            .map_err(|e| env.problem(format!("VOTE_KEYS: {e}")))
            .ok()
    };
    // A throwaway key when the setting is unusable: `Env::finish` refuses to build anything then.
    std::sync::Arc::new(keys.unwrap_or_else(|| {
        VoteKeys::from_config(&VoteKeys::generate_config("unset")).expect("a generated key parses")
    }))
}

fn ballot_aad(tenant: &TenantId, election: Uuid) -> Vec<u8> {
    let mut aad = Vec::with_capacity(BALLOT_LABEL.len() + tenant.as_str().len() + 17);
    aad.extend_from_slice(BALLOT_LABEL);
    aad.extend_from_slice(tenant.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(election.as_bytes());
    aad
}

fn open(
    key: &LessSafeKey,
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, OpenError> {
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::Malformed)?;
    let mut data = ciphertext.to_vec();
    let plaintext = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut data,
        )
        .map_err(|_| OpenError::Forged)?;
    Ok(plaintext.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> VoteKeys {
        VoteKeys::from_config(&VoteKeys::generate_config("k1")).unwrap()
    }

    #[test]
    fn a_ballot_opens_only_for_its_tenant_and_election_and_key() {
        let keys = keys();
        let tenant = TenantId::parse("party-a").unwrap();
        let election = Uuid::new_v4();
        let choices = vec!["yes".to_string(), r#"a "quoted", {odd} id"#.to_string()];
        let sealed = keys.encrypt_ballot(&tenant, election, &choices);
        assert_eq!(
            keys.decrypt_ballot(&tenant, election, &sealed),
            Ok(choices.clone())
        );
        // The same choices never give the same bytes (fresh nonce): equal ballots look different.
        assert_ne!(sealed, keys.encrypt_ballot(&tenant, election, &choices));
        let other = TenantId::parse("party-b").unwrap();
        assert_eq!(
            keys.decrypt_ballot(&other, election, &sealed),
            Err(OpenError::Forged)
        );
        assert_eq!(
            keys.decrypt_ballot(&tenant, Uuid::new_v4(), &sealed),
            Err(OpenError::Forged)
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            keys.decrypt_ballot(&tenant, election, &flipped),
            Err(OpenError::Forged)
        );
        assert_eq!(
            self::keys().decrypt_ballot(&tenant, election, &sealed),
            Err(OpenError::Forged),
            "another secret under the same key id"
        );
        assert_eq!(
            keys.decrypt_ballot(&tenant, election, &[1]),
            Err(OpenError::Malformed)
        );
    }

    #[test]
    fn rotation_keeps_old_ciphertexts_readable_and_unknown_keys_are_named() {
        let old = VoteKeys::generate_config("old");
        let new = VoteKeys::generate_config("new");
        let before = VoteKeys::from_config(&old).unwrap();
        let during = VoteKeys::from_config(&format!("{new},{old}")).unwrap();
        let (kid, nonce, ct) = before.encrypt_message(b"vote");
        assert_eq!(during.decrypt_message(&kid, &nonce, &ct).unwrap(), b"vote");
        let (kid, nonce, ct) = during.encrypt_message(b"vote");
        assert_eq!(kid, "new");
        assert_eq!(
            before.decrypt_message(&kid, &nonce, &ct),
            Err(OpenError::UnknownKey)
        );
    }

    #[test]
    fn configuration_errors_never_echo_a_secret() {
        let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA";
        for raw in [
            secret.to_string(),
            format!("k1:{secret}!"),
            format!("k1:{secret},k1:{secret}"),
            "k1:c2hvcnQ".to_string(),
        ] {
            let error = VoteKeys::from_config(&raw).unwrap_err();
            assert!(!error.contains(secret), "{error}");
        }
        assert!(VoteKeys::from_config("").is_err());
    }
}
