//! The vocabulary every crate shares. Types here parse, rather than validate: holding an
//! `ElectionDefinition` or a `Ballot` means its invariants already hold.
//!
//! - a **voting token** is the signed credential a member gets once per election (`token`);
//! - a **vote** is one submission of a ballot with a token;
//! - a **ballot** is the choices, stored with no link to the token or voter;
//! - a **receipt** is what the voter gets back and can look the outcome up with.

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A tenant (party organisation). Lower-case letters, digits and `-`, 2–63 characters: safe in
/// logs, metric labels and the `app.org_id` setting.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = (2..=63).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(DomainError::InvalidTenant)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The organisation whose members with the `ops` role are platform operators (the queue flag
/// is platform-wide). events-svc and members-import read it from `PLATFORM_ORG`; no party may
/// be onboarded under this id.
pub const DEFAULT_PLATFORM_ORG: &str = "platform";

impl TryFrom<String> for TenantId {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<TenantId> for String {
    fn from(value: TenantId) -> Self {
        value.0
    }
}
impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ElectionKind {
    /// Exactly one option.
    Single,
    /// One to `max_choices` distinct options, order irrelevant.
    Multiple,
    /// One to `max_choices` distinct options in order of preference.
    Ranked,
}

impl ElectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Multiple => "multiple",
            Self::Ranked => "ranked",
        }
    }
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        match raw {
            "single" => Ok(Self::Single),
            "multiple" => Ok(Self::Multiple),
            "ranked" => Ok(Self::Ranked),
            _ => Err(DomainError::InvalidDefinition(format!(
                "unknown election kind `{raw}`"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ElectionStatus {
    Draft,
    Open,
    Closed,
}

impl ElectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        match raw {
            "draft" => Ok(Self::Draft),
            "open" => Ok(Self::Open),
            "closed" => Ok(Self::Closed),
            _ => Err(DomainError::InvalidDefinition(format!(
                "unknown election status `{raw}`"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ElectionOption {
    pub id: String,
    pub label: String,
}

/// What the elections side needs to accept or refuse a ballot. Built only from checked
/// [`ElectionFields`] (`ElectionDefinition::new`, or deserialized through them), so holding one
/// means its options and limits are consistent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ElectionFields")]
pub struct ElectionDefinition {
    tenant: TenantId,
    id: Uuid,
    kind: ElectionKind,
    options: Vec<ElectionOption>,
    max_choices: u32,
    status: ElectionStatus,
    opens_at: Option<DateTime<Utc>>,
    closes_at: Option<DateTime<Utc>>,
}

/// The parts of an election definition, not yet checked against each other.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ElectionFields {
    pub tenant: TenantId,
    pub id: Uuid,
    pub kind: ElectionKind,
    pub options: Vec<ElectionOption>,
    pub max_choices: u32,
    pub status: ElectionStatus,
    pub opens_at: Option<DateTime<Utc>>,
    pub closes_at: Option<DateTime<Utc>>,
}

pub const MAX_OPTIONS: usize = 256;
pub const MAX_OPTION_ID_LEN: usize = 64;

impl TryFrom<ElectionFields> for ElectionDefinition {
    type Error = DomainError;
    fn try_from(fields: ElectionFields) -> Result<Self, Self::Error> {
        Self::new(fields)
    }
}

impl ElectionFields {
    /// The definition's own consistency: unique, short option ids; a sane `max_choices`; a
    /// window that closes after it opens.
    fn check(&self) -> Result<(), DomainError> {
        check_options(&self.options)?;
        let max = self.max_choices as usize;
        if max == 0 || max > self.options.len() {
            return Err(DomainError::InvalidDefinition(
                "max_choices must be between 1 and the number of options".into(),
            ));
        }
        if self.kind == ElectionKind::Single && max != 1 {
            return Err(DomainError::InvalidDefinition(
                "a single-choice election has max_choices 1".into(),
            ));
        }
        if let (Some(open), Some(close)) = (self.opens_at, self.closes_at) {
            if close <= open {
                return Err(DomainError::InvalidDefinition(
                    "closes_at must be after opens_at".into(),
                ));
            }
        }
        Ok(())
    }
}

fn check_options(options: &[ElectionOption]) -> Result<(), DomainError> {
    if options.is_empty() || options.len() > MAX_OPTIONS {
        return Err(DomainError::InvalidDefinition(format!(
            "an election needs 1 to {MAX_OPTIONS} options"
        )));
    }
    let mut seen = HashSet::new();
    for option in options {
        if option.id.is_empty() || option.id.len() > MAX_OPTION_ID_LEN {
            return Err(DomainError::InvalidDefinition(format!(
                "option ids must be 1 to {MAX_OPTION_ID_LEN} characters"
            )));
        }
        // PostgreSQL text cannot hold NUL, and no voter's client should show a control
        // character: refused here, not discovered when a batch of ballots fails to commit.
        if option.id.chars().any(char::is_control) {
            return Err(DomainError::InvalidDefinition(
                "option ids must not contain control characters".into(),
            ));
        }
        if !seen.insert(option.id.as_str()) {
            return Err(DomainError::InvalidDefinition(format!(
                "duplicate option id `{}`",
                option.id
            )));
        }
    }
    Ok(())
}

impl ElectionDefinition {
    /// The only way to a definition: its fields, checked against each other.
    pub fn new(fields: ElectionFields) -> Result<Self, DomainError> {
        fields.check()?;
        let ElectionFields {
            tenant,
            id,
            kind,
            options,
            max_choices,
            status,
            opens_at,
            closes_at,
        } = fields;
        Ok(Self {
            tenant,
            id,
            kind,
            options,
            max_choices,
            status,
            opens_at,
            closes_at,
        })
    }

    /// The same election with another status (no other invariant depends on it).
    #[must_use]
    pub fn with_status(self, status: ElectionStatus) -> Self {
        Self { status, ..self }
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
    pub fn id(&self) -> Uuid {
        self.id
    }
    pub fn kind(&self) -> ElectionKind {
        self.kind
    }
    pub fn options(&self) -> &[ElectionOption] {
        &self.options
    }
    pub fn max_choices(&self) -> u32 {
        self.max_choices
    }
    pub fn status(&self) -> ElectionStatus {
        self.status
    }
    pub fn opens_at(&self) -> Option<DateTime<Utc>> {
        self.opens_at
    }
    pub fn closes_at(&self) -> Option<DateTime<Utc>> {
        self.closes_at
    }

    /// Whether a vote arriving `at` may be accepted: the status says open and `at` lies
    /// inside the optional window.
    pub fn accepts_votes_at(&self, at: DateTime<Utc>) -> Result<(), DomainError> {
        if self.status != ElectionStatus::Open {
            return Err(DomainError::NotOpen(self.status));
        }
        if self.opens_at.is_some_and(|t| at < t) || self.closes_at.is_some_and(|t| at >= t) {
            return Err(DomainError::OutsideWindow);
        }
        Ok(())
    }

    /// Parses raw choices into a [`Ballot`] valid for this election.
    pub fn ballot(&self, choices: Vec<String>) -> Result<Ballot, DomainError> {
        if choices.is_empty() {
            return Err(DomainError::InvalidBallot(
                "choose at least one option".into(),
            ));
        }
        let max = self.max_choices as usize;
        if choices.len() > max {
            return Err(DomainError::InvalidBallot(format!(
                "{} choices given, at most {max} allowed",
                choices.len()
            )));
        }
        let mut seen = HashSet::with_capacity(choices.len());
        for choice in &choices {
            if !self.options.iter().any(|o| &o.id == choice) {
                let shown: String = choice.chars().take(MAX_OPTION_ID_LEN).collect();
                return Err(DomainError::InvalidBallot(format!(
                    "`{shown}` is not an option of this election"
                )));
            }
            if !seen.insert(choice.as_str()) {
                return Err(DomainError::InvalidBallot(format!(
                    "option `{choice}` chosen more than once"
                )));
            }
        }
        Ok(Ballot { choices })
    }
}

/// Choices valid for their election (ordered by preference for ranked elections).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ballot {
    choices: Vec<String>,
}

impl Ballot {
    pub fn choices(&self) -> &[String] {
        &self.choices
    }
    pub fn into_choices(self) -> Vec<String> {
        self.choices
    }
}

/// sha256 of a voting token's random id: what the elections side stores to recognise a token
/// without being able to recreate it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenHash(#[serde(with = "hex_bytes")] pub [u8; 32]);

impl TokenHash {
    pub fn of_token_id(token_id: &[u8]) -> Self {
        Self(Sha256::digest(token_id).into())
    }
    pub fn from_hex(raw: &str) -> Result<Self, DomainError> {
        let bytes = hex::decode(raw).map_err(|_| DomainError::InvalidTokenHash)?;
        Ok(Self(
            bytes
                .try_into()
                .map_err(|_| DomainError::InvalidTokenHash)?,
        ))
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for TokenHash {
    // Never printed in full: it identifies a voter's token on the elections side.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let raw = String::deserialize(d)?;
        let bytes = hex::decode(raw).map_err(serde::de::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

/// An election's tally, as the elections side computes it and events-svc passes it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Results {
    pub election_id: Uuid,
    /// Ballots recorded so far (the turnout); the only figure shown before the seal.
    pub total: i64,
    /// Ballots naming each option (first preferences for ranked elections). Empty until the
    /// election is sealed: nobody sees a tally of an election that is still open or draining.
    pub tally: std::collections::BTreeMap<String, i64>,
    /// True once the election is closed, every vote accepted before the close is decided (the
    /// queue has drained), the ballots are sealed, and their number equals the tokens used.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The ballots were sealed (decrypted and rewritten in random order) and are tallied.
    #[serde(default)]
    pub sealed: bool,
    /// Voting tokens used: every recorded vote used one, so after the seal this equals `total`.
    #[serde(default)]
    pub used_tokens: i64,
    /// Why sealed results are not final (the ballot count differs from the used tokens: a
    /// ballot was added or removed outside the vote path). Investigate before publishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity_problem: Option<String>,
}

/// Why a vote was refused (HTTP answer) or rejected (receipt).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("tenant ids are 2-63 lower-case letters, digits or dashes")]
    InvalidTenant,
    #[error("invalid election definition: {0}")]
    InvalidDefinition(String),
    #[error("the election is {}, not open", .0.as_str())]
    NotOpen(ElectionStatus),
    #[error("the election is outside its voting window")]
    OutsideWindow,
    #[error("invalid ballot: {0}")]
    InvalidBallot(String),
    #[error("a token hash is 64 hexadecimal characters")]
    InvalidTokenHash,
    #[error("unknown vote status `{0}`")]
    InvalidStatus(String),
}

/// Where a vote stands, as its answer and its receipt say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VoteStatus {
    /// Accepted and on its way through the queue; no outcome yet.
    Queued,
    /// Its ballot is in the ballot box.
    Recorded,
    /// Refused by the worker (or direct mode); the receipt names the reason.
    Rejected,
}

impl VoteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Recorded => "recorded",
            Self::Rejected => "rejected",
        }
    }
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        [Self::Queued, Self::Recorded, Self::Rejected]
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| DomainError::InvalidStatus(raw.chars().take(32).collect()))
    }
}

/// Why the worker (or direct mode) rejected a vote; shown on its receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectionReason {
    /// The token's hash was never registered by events-svc for this election.
    UnknownToken,
    /// Another ballot was already recorded with this token.
    TokenAlreadyUsed,
    /// The vote was accepted after the election closed (or it was never open).
    ElectionClosed,
    /// The choices do not fit the election (only possible if a definition changed in flight).
    InvalidBallot,
}

impl RejectionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownToken => "unknown_token",
            Self::TokenAlreadyUsed => "token_already_used",
            Self::ElectionClosed => "election_closed",
            Self::InvalidBallot => "invalid_ballot",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::UnknownToken,
            Self::TokenAlreadyUsed,
            Self::ElectionClosed,
            Self::InvalidBallot,
        ]
        .into_iter()
        .find(|r| r.as_str() == raw)
    }
}

#[cfg(test)]
mod tests;
