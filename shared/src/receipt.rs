//! Receipts: one per submission, derived from the voting token and what was submitted, so a
//! client's retry gets the same receipt while a different ballot sent with the same token gets a
//! receipt of its own (and its own outcome: one is recorded, the other rejected). Receipts are
//! self-authenticating, so `GET /v1/receipts/{receipt}` can tell a queued vote (valid receipt,
//! no outcome row yet) from a receipt this system never issued (404) without storing anything
//! at accept time.
//!
//! `receipt = "r1." + base64url(election id ‖ n ‖ m)` where
//! `n = HMAC(key, "n" ‖ token id ‖ submission)[..16]` and `m = HMAC(key, "m" ‖ election id ‖ n)[..16]`,
//! `submission` being [`submission_digest`] of the choices and the client's `Idempotency-Key`.
//! The receipt reveals nothing about the token id or the choices, and the token hash stored
//! beside ballots cannot be turned into a receipt without the key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "r1.";

/// The secret receipts are derived with; shared by every ingest instance.
#[derive(Clone)]
pub struct ReceiptKey(Vec<u8>);

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptKey(redacted)")
    }
}

impl ReceiptKey {
    /// At least 32 bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < 32 {
            return Err("the receipt key needs at least 32 bytes".into());
        }
        Ok(Self(bytes))
    }

    pub fn from_base64(raw: &str) -> Result<Self, String> {
        let bytes = B64
            .decode(raw.trim().trim_end_matches('='))
            .map_err(|_| "the receipt key must be base64url".to_owned())?;
        Self::new(bytes)
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 16] {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length");
        for part in parts {
            mac.update(part);
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// The receipt of one submission (`submission` from [`submission_digest`]).
    pub fn derive(&self, election_id: Uuid, token_id: &[u8], submission: &[u8; 32]) -> Receipt {
        // Length-prefixed, so no token id and digest can be re-cut into another pair.
        let len = (token_id.len() as u32).to_be_bytes();
        let n = self.mac(&[b"n", &len, token_id, submission]);
        let m = self.mac(&[b"m", election_id.as_bytes(), &n]);
        let mut raw = Vec::with_capacity(48);
        raw.extend_from_slice(election_id.as_bytes());
        raw.extend_from_slice(&n);
        raw.extend_from_slice(&m);
        Receipt(format!("{PREFIX}{}", B64.encode(raw)))
    }

    /// Checks a receipt presented by a client; `None` if this key never issued it.
    pub fn check(&self, presented: &str) -> Option<(Receipt, Uuid)> {
        let body = presented.strip_prefix(PREFIX)?;
        if body.len() != 64 {
            return None;
        }
        let raw = B64.decode(body).ok()?;
        let (election, rest) = raw.split_at(16);
        let (n, m) = rest.split_at(16);
        // Constant-time comparison of the truncated MAC.
        let mut verifier =
            HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length");
        verifier.update(b"m");
        verifier.update(election);
        verifier.update(n);
        verifier.verify_truncated_left(m).ok()?;
        let election_id = Uuid::from_slice(election).ok()?;
        Some((Receipt(presented.to_owned()), election_id))
    }
}

/// What makes two submissions of one token the same vote: the same choices (in order) under the
/// same `Idempotency-Key` (or both without one). A retry gets the same receipt; another ballot,
/// or the same ballot deliberately sent as a new request (another key), is another submission.
pub fn submission_digest(choices: &[String], idempotency_key: Option<&str>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"ekklesia/submission/v1");
    for choice in choices {
        hasher.update((choice.len() as u32).to_be_bytes());
        hasher.update(choice.as_bytes());
    }
    match idempotency_key {
        // 0xFFFFFFFF cannot be a choice's length prefix (choices are short): no ambiguity.
        Some(key) => {
            hasher.update(u32::MAX.to_be_bytes());
            hasher.update(key.as_bytes());
        }
        None => hasher.update(b"-"),
    }
    hasher.finalize().into()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Receipt(String);

impl Receipt {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Trusts the caller that this receipt came out of [`ReceiptKey::derive`] (e.g. read back
    /// from a vote message ingest published).
    pub fn from_trusted(raw: String) -> Self {
        Self(raw)
    }
}

impl std::fmt::Display for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choices(c: &[&str]) -> Vec<String> {
        c.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn one_receipt_per_submission_and_forgeries_fail() {
        let key = ReceiptKey::new(vec![9; 32]).unwrap();
        let election = Uuid::new_v4();
        let yes = submission_digest(&choices(&["yes"]), None);
        let r1 = key.derive(election, b"token-one", &yes);
        assert_eq!(r1, key.derive(election, b"token-one", &yes), "a retry");
        assert_ne!(r1, key.derive(election, b"token-two", &yes));
        let no = submission_digest(&choices(&["no"]), None);
        assert_ne!(
            r1,
            key.derive(election, b"token-one", &no),
            "another ballot"
        );
        let keyed = submission_digest(&choices(&["yes"]), Some("k-1"));
        assert_ne!(
            r1,
            key.derive(election, b"token-one", &keyed),
            "another request"
        );
        assert_ne!(
            submission_digest(&choices(&["a", "b"]), None),
            submission_digest(&choices(&["ab"]), None)
        );
        assert_ne!(
            submission_digest(&choices(&["a", "b"]), None),
            submission_digest(&choices(&["b", "a"]), None),
            "order is the ranking"
        );
        assert_eq!(key.check(r1.as_str()).unwrap().1, election);
        let other = ReceiptKey::new(vec![8; 32]).unwrap();
        assert!(other.check(r1.as_str()).is_none());
        // Change the last character to one it certainly is not.
        let mut forged = r1.as_str().to_owned();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(key.check(&forged).is_none());
        assert!(key.check("r1.short").is_none());
        assert!(key.check("nonsense").is_none());
    }
}
