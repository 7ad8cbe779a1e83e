//! The vote message: what ingest publishes and the worker commits.
//!
//! The payload travels encrypted and authenticated under the vote keys only ingest and the
//! worker hold (`shared::vote_keys`): whoever can publish to the topic cannot forge a vote or
//! move its `accepted_at`, and whoever can read the subscription or the dead-letter topic learns
//! no choice. The envelope is versioned, so a worker can leave a shape it does not know for one
//! that does, instead of guessing.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use google_cloud_pubsub::model::Message;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{TenantId, TokenHash};
use crate::receipt::Receipt;
use crate::vote_keys::{OpenError, VoteKeys};

/// Version 2: the payload is encrypted (version 1 carried it in the clear and is refused).
pub const VERSION: u16 = 2;
pub const ATTR_VERSION: &str = "v";
pub const ATTR_TENANT: &str = "tenant";
pub const ATTR_ELECTION: &str = "election_id";
pub const ATTR_CORRELATION: &str = "correlation_id";
/// Set by Pub/Sub on a message it dead-lettered: when the original was published.
pub const ATTR_DEAD_LETTER_PUBLISH_TIME: &str = "CloudPubSubDeadLetterSourceTopicPublishTime";
/// Upper bound of an encoded message; anything larger is not ours.
pub const MAX_ENCODED_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteMessage {
    pub tenant: TenantId,
    pub election_id: Uuid,
    /// Identifies the token on the elections side; claimed by the worker's transaction.
    pub token_hash: TokenHash,
    /// This submission's receipt (a token's different ballots get different receipts).
    pub receipt: Receipt,
    /// Ordered by preference for ranked elections.
    pub choices: Vec<String>,
    /// When ingest accepted the vote: votes accepted before the close count, even if the
    /// worker commits them after it. Never stored.
    pub accepted_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    v: u16,
    kid: String,
    nonce: String,
    ct: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message too large ({0} bytes)")]
    TooLarge(usize),
    #[error("message is not a vote: {0}")]
    Malformed(String),
    #[error("unsupported vote message version {0}")]
    UnsupportedVersion(u16),
    #[error("vote message encrypted with a key this worker does not hold")]
    UnknownKey,
    #[error("vote message does not authenticate (forged or altered)")]
    Forged,
}

impl DecodeError {
    /// No worker will ever decode it: not ours, altered or forged. The other errors may be a
    /// newer ingest (a version or a key this worker does not know yet) and wait for one that does.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::TooLarge(_) | Self::Malformed(_) | Self::Forged)
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::Malformed(_) => "malformed",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::UnknownKey => "unknown_key",
            Self::Forged => "forged",
        }
    }
}

impl VoteMessage {
    pub fn encode(&self, keys: &VoteKeys, correlation_id: &str) -> Message {
        let payload = serde_json::to_vec(self).expect("a vote message serialises");
        let (kid, nonce, ct) = keys.encrypt_message(&payload);
        let envelope = Envelope {
            v: VERSION,
            kid,
            nonce: B64.encode(nonce),
            ct: B64.encode(ct),
        };
        let data = serde_json::to_vec(&envelope).expect("an envelope serialises");
        Message::new().set_data(data).set_attributes([
            (ATTR_VERSION, VERSION.to_string()),
            (ATTR_TENANT, self.tenant.to_string()),
            (ATTR_ELECTION, self.election_id.to_string()),
            (ATTR_CORRELATION, correlation_id.to_owned()),
        ])
    }

    pub fn decode(keys: &VoteKeys, data: &[u8]) -> Result<Self, DecodeError> {
        if data.len() > MAX_ENCODED_LEN {
            return Err(DecodeError::TooLarge(data.len()));
        }
        // The version first, so a newer shape is told apart from garbage.
        #[derive(Deserialize)]
        struct Version {
            v: u16,
        }
        let version: Version =
            serde_json::from_slice(data).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if version.v != VERSION {
            return Err(DecodeError::UnsupportedVersion(version.v));
        }
        let envelope: Envelope =
            serde_json::from_slice(data).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let malformed = |_| DecodeError::Malformed("envelope fields are not base64url".into());
        let nonce = B64.decode(&envelope.nonce).map_err(malformed)?;
        let ct = B64.decode(&envelope.ct).map_err(malformed)?;
        let payload = keys
            .decrypt_message(&envelope.kid, &nonce, &ct)
            .map_err(|e| match e {
                OpenError::UnknownKey => DecodeError::UnknownKey,
                OpenError::Forged => DecodeError::Forged,
                OpenError::Malformed => DecodeError::Malformed("bad nonce".into()),
            })?;
        // Not serde's message: it can quote the decrypted payload (a choice), and the worker
        // logs this error.
        serde_json::from_slice(&payload).map_err(|e| {
            DecodeError::Malformed(format!(
                "the decrypted payload is not a vote message ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }
}

pub fn correlation_of(attributes: &HashMap<String, String>) -> &str {
    attributes
        .get(ATTR_CORRELATION)
        .map(String::as_str)
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> VoteMessage {
        VoteMessage {
            tenant: TenantId::parse("party-a").unwrap(),
            election_id: Uuid::new_v4(),
            token_hash: TokenHash::of_token_id(b"x"),
            receipt: Receipt::from_trusted("r1.abc".into()),
            choices: vec!["yes".into()],
            accepted_at: Utc::now(),
        }
    }

    #[test]
    fn round_trips_encrypted_and_refuses_other_versions_and_forgeries() {
        let keys = VoteKeys::from_config(&VoteKeys::generate_config("k1")).unwrap();
        let message = message();
        let encoded = message.encode(&keys, "corr-1");
        assert_eq!(encoded.attributes[ATTR_CORRELATION], "corr-1");
        assert_eq!(encoded.attributes[ATTR_TENANT], "party-a");
        assert_eq!(VoteMessage::decode(&keys, &encoded.data).unwrap(), message);
        // Nothing of the payload is readable on the wire.
        let wire = String::from_utf8_lossy(&encoded.data);
        assert!(!wire.contains("yes") && !wire.contains("r1.abc"), "{wire}");

        let mut v3: serde_json::Value = serde_json::from_slice(&encoded.data).unwrap();
        v3["v"] = 3.into();
        assert_eq!(
            VoteMessage::decode(&keys, &serde_json::to_vec(&v3).unwrap()),
            Err(DecodeError::UnsupportedVersion(3))
        );
        // Version 1 was the clear payload: whoever can publish could have written any.
        let v1 = serde_json::json!({"v": 1, "tenant": "party-a", "choices": ["yes"]});
        assert!(
            !VoteMessage::decode(&keys, &serde_json::to_vec(&v1).unwrap())
                .unwrap_err()
                .is_permanent()
        );
        assert!(VoteMessage::decode(&keys, b"{not json")
            .unwrap_err()
            .is_permanent());

        // Someone who can publish but holds no vote key cannot make a vote the worker accepts.
        let stranger = VoteKeys::from_config(&VoteKeys::generate_config("k1")).unwrap();
        let forged = message.encode(&stranger, "corr-2");
        assert_eq!(
            VoteMessage::decode(&keys, &forged.data),
            Err(DecodeError::Forged)
        );
        let unknown = VoteKeys::from_config(&VoteKeys::generate_config("k2")).unwrap();
        assert_eq!(
            VoteMessage::decode(&keys, &message.encode(&unknown, "c").data),
            Err(DecodeError::UnknownKey)
        );
    }

    /// Found by the `vote_message` fuzz target: serde's message quoted the decrypted payload, and
    /// the worker logs this error.
    #[test]
    fn a_payload_that_authenticates_but_is_not_a_vote_is_refused_without_showing_it() {
        let keys = VoteKeys::from_config(&VoteKeys::generate_config("k1")).unwrap();
        for payload in [
            r#"{"choices":"secret-choice"}"#,
            r#"{"choices":[1,"secret-choice"]}"#,
            r#"{"token_hash":"secret-token-hash"}"#,
            r#"{"receipt":["secret-receipt"]}"#,
        ] {
            let (kid, nonce, ct) = keys.encrypt_message(payload.as_bytes());
            let envelope = Envelope {
                v: VERSION,
                kid,
                nonce: B64.encode(nonce),
                ct: B64.encode(ct),
            };
            let error =
                VoteMessage::decode(&keys, &serde_json::to_vec(&envelope).unwrap()).unwrap_err();
            assert!(matches!(error, DecodeError::Malformed(_)), "{error:?}");
            assert!(!error.to_string().contains("secret"), "{payload}: {error}");
        }
    }
}
