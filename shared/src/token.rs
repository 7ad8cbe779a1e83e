//! Voting tokens: signed by events-svc, verified by ingest with no database round trip.
//!
//! A token is a JWS in compact form (`header.claims.signature`, base64url), signed with
//! Ed25519 (`alg: EdDSA`). The header's `kid` selects the key; each key belongs to exactly one
//! tenant, so a token signed with tenant A's key can never vote in tenant B's election, and
//! ingest holds only public keys. The claims bind the token to one election and carry a 256-bit
//! random token id whose sha256 events-svc registers with the elections side: a leaked signing
//! key alone cannot mint votes that count.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{TenantId, TokenHash};

/// Tolerated clock difference between events-svc and ingest.
pub const CLOCK_LEEWAY_SECONDS: i64 = 5;
/// Length of a token id (the `jti` claim, base64url).
pub const TOKEN_ID_BYTES: usize = 32;
/// Longer input is refused before any decoding work.
pub const MAX_TOKEN_LEN: usize = 1024;
/// The most tokens [`TokenVerifier::verify_many`] is meant to be given at once: the gain per
/// signature levels off above it, and a failed batch is checked again one by one.
pub const MAX_BATCH: usize = 64;

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Tenant.
    pub ten: TenantId,
    /// Election the token is valid for.
    pub elc: Uuid,
    /// Random token id, base64url of 32 bytes.
    pub jti: String,
    /// Not before (Unix seconds).
    pub nbf: i64,
    /// Expiry (Unix seconds).
    pub exp: i64,
}

/// A token whose signature, key, tenant and validity window have been checked.
#[derive(Clone)]
pub struct VerifiedToken {
    pub tenant: TenantId,
    pub election_id: Uuid,
    pub expires_at: DateTime<Utc>,
    token_id: Vec<u8>,
}

impl VerifiedToken {
    pub fn token_hash(&self) -> TokenHash {
        TokenHash::of_token_id(&self.token_id)
    }
    pub fn token_id(&self) -> &[u8] {
        &self.token_id
    }
}

impl fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("tenant", &self.tenant)
            .field("election_id", &self.election_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the voting token is malformed")]
    Malformed,
    #[error("the voting token was signed with an unknown key")]
    UnknownKey,
    #[error("the voting token's signature is invalid")]
    BadSignature,
    #[error("the voting token's signing key belongs to another tenant")]
    WrongTenant,
    #[error("the voting token has expired")]
    Expired,
    #[error("the voting token is not valid yet")]
    NotYetValid,
    #[error("the voting token is for another election")]
    WrongElection,
}

/// One tenant's signing key (events side).
pub struct TokenSigner {
    kid: String,
    tenant: TenantId,
    key: SigningKey,
}

impl TokenSigner {
    pub fn new(kid: impl Into<String>, tenant: TenantId, key: SigningKey) -> Self {
        Self {
            kid: kid.into(),
            tenant,
            key,
        }
    }

    pub fn generate(kid: impl Into<String>, tenant: TenantId) -> Self {
        Self::new(kid, tenant, SigningKey::generate(&mut rand::rngs::OsRng))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The signing key's seed, base64url: a secret, for the events side's configuration.
    pub fn seed(&self) -> String {
        encode_signing_key(&self.key)
    }

    /// Issues a token for `election_id`, valid from `not_before` until `expires_at`.
    /// Returns the token and the hash of its id (what the elections side registers).
    pub fn issue(
        &self,
        election_id: Uuid,
        not_before: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> (String, TokenHash) {
        let mut token_id = [0u8; TOKEN_ID_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut token_id);
        self.issue_with_id(election_id, &token_id, not_before, expires_at)
    }

    /// Issues a token whose id is `token_id`, for a caller that chose the id itself (events-svc
    /// derives it from a token slot whose hash it registered in advance). Returns the token and
    /// the hash of its id.
    pub fn issue_with_id(
        &self,
        election_id: Uuid,
        token_id: &[u8; TOKEN_ID_BYTES],
        not_before: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> (String, TokenHash) {
        let claims = Claims {
            ten: self.tenant.clone(),
            elc: election_id,
            jti: B64.encode(token_id),
            nbf: not_before.timestamp(),
            exp: expires_at.timestamp(),
        };
        (self.sign_claims(&claims), TokenHash::of_token_id(token_id))
    }

    /// Signs arbitrary claims (tests use it to craft expired or foreign tokens).
    pub fn sign_claims(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "EdDSA".into(),
            typ: "vote+jwt".into(),
            kid: self.kid.clone(),
        };
        let header = B64.encode(serde_json::to_vec(&header).unwrap_or_default());
        let claims = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{claims}");
        let signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(signature.to_bytes()))
    }
}

/// Public keys by key id, each bound to its tenant (ingest side).
#[derive(Clone, Default)]
pub struct TokenVerifier {
    keys: HashMap<String, (TenantId, VerifyingKey)>,
}

impl TokenVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_key(mut self, kid: impl Into<String>, tenant: TenantId, key: VerifyingKey) -> Self {
        self.keys.insert(kid.into(), (tenant, key));
        self
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parses `kid:tenant:base64url(public key)` entries separated by commas
    /// (`VOTING_TOKEN_PUBLIC_KEYS`).
    /// Errors name the entry by position, never by a field; a key id listed twice is refused
    /// (one would silently replace the other).
    pub fn from_config(raw: &str) -> Result<Self, String> {
        let mut verifier = Self::new();
        for (n, entry) in entries(raw) {
            let at = format!("key entry {n}");
            let mut parts = entry.splitn(3, ':');
            let (Some(kid), Some(tenant), Some(key)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("{at}: each key is kid:tenant:base64url-public-key"));
            };
            let tenant = TenantId::parse(tenant).map_err(|e| format!("{at}: {e}"))?;
            let bytes: [u8; 32] = B64
                .decode(key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("{at}: not a base64url Ed25519 public key"))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| format!("{at}: not an Ed25519 public key"))?;
            // A small-order key: `verify_strict` would refuse every token it signed, a batch
            // check (`verify_many`) would not; refuse it here, once.
            if key.is_weak() {
                return Err(format!("{at}: a weak (small-order) Ed25519 public key"));
            }
            if verifier.keys.contains_key(kid) {
                return Err(format!("{at}: its key id is used by an earlier entry"));
            }
            verifier = verifier.with_key(kid, tenant, key);
        }
        Ok(verifier)
    }

    /// Verifies `token` for a vote in `election_id` at `now`.
    pub fn verify(
        &self,
        token: &str,
        election_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<VerifiedToken, TokenError> {
        let signed = self.parse(token)?;
        // verify_strict: also refuses non-canonical signatures and weak (small-order) keys.
        signed
            .key
            .verify_strict(signed.signing_input, &signed.signature)
            .map_err(|_| TokenError::BadSignature)?;
        signed.claims(election_id, now)
    }

    /// Verifies several tokens at once, each for its own election; answers in their order,
    /// exactly what [`verify`](Self::verify) answers for each.
    ///
    /// Why: checking Ed25519 signatures together (`ed25519_dalek::verify_batch`, one
    /// multi-scalar multiplication for all) costs about half as much per signature from 16 on
    /// (`cargo bench -p shared --bench micro -- ed25519_verify_batch`), and a burst of votes
    /// arrives together. A batch that fails is checked again one by one, so one forged
    /// signature costs its neighbours time, never their vote (at most 1.5× the one-by-one cost
    /// at [`MAX_BATCH`]).
    ///
    /// The batch equation is the one `verify_strict` checks, with random weights (a forged
    /// signature passes with probability 2⁻¹²⁸). What `verify_strict` refuses beyond it (a weak
    /// key, a small-order or non-canonical `R`) only the holder of the signing key could
    /// produce, and a vote counts once per token id (`jti`, signed), not per token string.
    pub fn verify_many(
        &self,
        tokens: &[(&str, Uuid)],
        now: DateTime<Utc>,
    ) -> Vec<Result<VerifiedToken, TokenError>> {
        let parsed: Vec<Result<SignedToken<'_>, TokenError>> =
            tokens.iter().map(|(token, _)| self.parse(token)).collect();
        let signed: Vec<&SignedToken<'_>> = parsed.iter().filter_map(|p| p.as_ref().ok()).collect();
        let batch_passed = signed.len() >= 2 && {
            let messages: Vec<&[u8]> = signed.iter().map(|t| t.signing_input).collect();
            let signatures: Vec<Signature> = signed.iter().map(|t| t.signature).collect();
            let keys: Vec<VerifyingKey> = signed.iter().map(|t| *t.key).collect();
            ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        };
        parsed
            .into_iter()
            .zip(tokens)
            .map(|(signed, (_, election_id))| {
                let signed = signed?;
                if !batch_passed {
                    signed
                        .key
                        .verify_strict(signed.signing_input, &signed.signature)
                        .map_err(|_| TokenError::BadSignature)?;
                }
                signed.claims(*election_id, now)
            })
            .collect()
    }

    /// The token's form, header and key: everything before the signature check.
    fn parse<'t>(&'t self, token: &'t str) -> Result<SignedToken<'t>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = decode_json(header_b64)?;
        if header.alg != "EdDSA" || header.typ != "vote+jwt" {
            return Err(TokenError::Malformed);
        }
        let (key_tenant, key) = self.keys.get(&header.kid).ok_or(TokenError::UnknownKey)?;
        let signature: [u8; 64] = B64
            .decode(signature_b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(TokenError::Malformed)?;
        let signing_input_len = header_b64.len() + 1 + claims_b64.len();
        Ok(SignedToken {
            signing_input: &token.as_bytes()[..signing_input_len],
            signature: Signature::from_bytes(&signature),
            key,
            key_tenant,
            claims_b64,
        })
    }
}

/// A token taken apart, its signature not checked yet.
struct SignedToken<'t> {
    signing_input: &'t [u8],
    signature: Signature,
    key: &'t VerifyingKey,
    key_tenant: &'t TenantId,
    claims_b64: &'t str,
}

impl SignedToken<'_> {
    /// The claims, once the signature is known to be good.
    fn claims(self, election_id: Uuid, now: DateTime<Utc>) -> Result<VerifiedToken, TokenError> {
        let claims: Claims = decode_json(self.claims_b64)?;
        if &claims.ten != self.key_tenant {
            return Err(TokenError::WrongTenant);
        }
        let now_s = now.timestamp();
        if claims.exp <= now_s - CLOCK_LEEWAY_SECONDS {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now_s + CLOCK_LEEWAY_SECONDS {
            return Err(TokenError::NotYetValid);
        }
        if claims.elc != election_id {
            return Err(TokenError::WrongElection);
        }
        let token_id = B64.decode(&claims.jti).map_err(|_| TokenError::Malformed)?;
        if token_id.len() < 16 {
            return Err(TokenError::Malformed);
        }
        Ok(VerifiedToken {
            tenant: claims.ten,
            election_id: claims.elc,
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(now),
            token_id,
        })
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(b64: &str) -> Result<T, TokenError> {
    let bytes = B64.decode(b64).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// Encodes a public key for `VOTING_TOKEN_PUBLIC_KEYS`.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    B64.encode(key.to_bytes())
}

/// Encodes a signing key's seed for `VOTING_TOKEN_SIGNING_KEYS` (a secret).
pub fn encode_signing_key(key: &SigningKey) -> String {
    B64.encode(key.to_bytes())
}

/// The signing keys of `VOTING_TOKEN_SIGNING_KEYS`: `kid:tenant:base64url(seed)` entries
/// separated by commas. The first key of a tenant signs; later ones are the next key of a
/// rotation (publish its public key to ingest first, then move it to the front).
pub fn signers_from_config(raw: &str) -> Result<Vec<TokenSigner>, String> {
    let mut signers: Vec<TokenSigner> = Vec::new();
    for (n, entry) in entries(raw) {
        // By position, never a field: written in the wrong order, the first may be the seed.
        let at = format!("key entry {n}");
        let mut parts = entry.splitn(3, ':');
        let (Some(kid), Some(tenant), Some(seed)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{at}: each key is kid:tenant:base64url-seed"));
        };
        let tenant = TenantId::parse(tenant).map_err(|e| format!("{at}: {e}"))?;
        let key = decode_signing_key(seed).ok_or_else(|| format!("{at}: not an Ed25519 seed"))?;
        if signers.iter().any(|s| s.kid() == kid) {
            return Err(format!("{at}: its key id is used by an earlier entry"));
        }
        signers.push(TokenSigner::new(kid, tenant, key));
    }
    Ok(signers)
}

/// The non-empty comma-separated entries of a key list, numbered from 1.
fn entries(raw: &str) -> impl Iterator<Item = (usize, &str)> {
    raw.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .enumerate()
        .map(|(n, e)| (n + 1, e))
}

pub fn decode_signing_key(raw: &str) -> Option<SigningKey> {
    let bytes: [u8; 32] = B64.decode(raw).ok()?.try_into().ok()?;
    Some(SigningKey::from_bytes(&bytes))
}

#[cfg(test)]
mod tests;
