//! The vote message: what ingest publishes and the worker commits. Versioned, so a worker can
//! refuse (and dead-letter) a shape it does not know instead of guessing.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use google_cloud_pubsub::model::Message;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{TenantId, TokenHash};
use crate::receipt::Receipt;

pub const VERSION: u16 = 1;
pub const ATTR_VERSION: &str = "v";
pub const ATTR_TENANT: &str = "tenant";
pub const ATTR_ELECTION: &str = "election_id";
pub const ATTR_CORRELATION: &str = "correlation_id";
/// Upper bound of an encoded message; anything larger is not ours.
pub const MAX_ENCODED_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteMessage {
    pub v: u16,
    pub tenant: TenantId,
    pub election_id: Uuid,
    /// Identifies the token on the elections side; claimed by the worker's transaction.
    pub token_hash: TokenHash,
    pub receipt: Receipt,
    /// Ordered by preference for ranked elections.
    pub choices: Vec<String>,
    /// When ingest accepted the vote: votes accepted before the close count, even if the
    /// worker commits them after it. Never stored.
    pub accepted_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message too large ({0} bytes)")]
    TooLarge(usize),
    #[error("message is not a vote: {0}")]
    Malformed(String),
    #[error("unsupported vote message version {0}")]
    UnsupportedVersion(u16),
}

impl VoteMessage {
    pub fn encode(&self, correlation_id: &str) -> Message {
        let data = serde_json::to_vec(self).unwrap_or_default();
        Message::new().set_data(data).set_attributes([
            (ATTR_VERSION, VERSION.to_string()),
            (ATTR_TENANT, self.tenant.to_string()),
            (ATTR_ELECTION, self.election_id.to_string()),
            (ATTR_CORRELATION, correlation_id.to_owned()),
        ])
    }

    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        if data.len() > MAX_ENCODED_LEN {
            return Err(DecodeError::TooLarge(data.len()));
        }
        let message: Self =
            serde_json::from_slice(data).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if message.v != VERSION {
            return Err(DecodeError::UnsupportedVersion(message.v));
        }
        Ok(message)
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

    #[test]
    fn round_trips_and_refuses_other_versions() {
        let message = VoteMessage {
            v: VERSION,
            tenant: TenantId::parse("party-a").unwrap(),
            election_id: Uuid::new_v4(),
            token_hash: TokenHash::of_token_id(b"x"),
            receipt: Receipt::from_trusted("r1.abc".into()),
            choices: vec!["yes".into()],
            accepted_at: Utc::now(),
        };
        let encoded = message.encode("corr-1");
        assert_eq!(encoded.attributes[ATTR_CORRELATION], "corr-1");
        assert_eq!(encoded.attributes[ATTR_TENANT], "party-a");
        assert_eq!(VoteMessage::decode(&encoded.data).unwrap(), message);
        let mut v2 = serde_json::to_value(&message).unwrap();
        v2["v"] = 2.into();
        assert!(matches!(
            VoteMessage::decode(&serde_json::to_vec(&v2).unwrap()),
            Err(DecodeError::UnsupportedVersion(2))
        ));
        assert!(VoteMessage::decode(b"{not json").is_err());
    }
}
