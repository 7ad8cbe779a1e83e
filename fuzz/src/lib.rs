//! What the fuzz targets and the seed generator share: fixed keys, a fixed clock, a fixed
//! election and its definitions. Fixed so that the committed seeds (tokens, vote messages, S2S
//! requests, receipts signed or encrypted with these keys) still verify when the targets run: the
//! fuzzer starts from inputs that pass every check and mutates them from there.
//!
//! None of these keys is used anywhere but here.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use shared::domain::{ElectionDefinition, ElectionFields, ElectionKind, ElectionOption, ElectionStatus, TenantId};
use shared::receipt::ReceiptKey;
use shared::s2s::{Keyring, S2sKey};
use shared::token::{TokenSigner, TokenVerifier};
use shared::vote_keys::VoteKeys;
use uuid::Uuid;

pub const TENANT: &str = "party-a";
pub const OTHER_TENANT: &str = "party-b";
pub const TOKEN_KID: &str = "fuzz-a";
pub const OTHER_TOKEN_KID: &str = "fuzz-b";
/// The clock every target reads: 2026-05-28T20:26:40Z.
pub const NOW: i64 = 1_780_000_000;
/// Prefixed to every secret string a target feeds in, so an error message that echoes one is
/// told apart from one that merely shares a word with it.
pub const CANARY: char = '\u{1F512}';

/// Option ids with everything that needs quoting somewhere: commas, braces, quotes,
/// backslashes, `NULL`, spaces, non-ASCII, and the longest id allowed.
pub const OPTION_IDS: &[&str] = &[
    "yes",
    "no",
    "a,b",
    "{x}",
    r#"say "no""#,
    r"back\slash",
    "NULL",
    " ",
    "Jón Jónsson",
    "中文",
    "🗳",
    "0123456789012345678901234567890123456789012345678901234567890123",
];

pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).expect("a valid timestamp")
}

pub fn tenant() -> TenantId {
    TenantId::parse(TENANT).expect("a valid tenant")
}

pub fn other_tenant() -> TenantId {
    TenantId::parse(OTHER_TENANT).expect("a valid tenant")
}

pub fn election() -> Uuid {
    Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_0001)
}

/// party-a's token signing key (events-svc's side).
pub fn token_signing_key() -> SigningKey {
    SigningKey::from_bytes(&[0x11; 32])
}

pub fn token_signer() -> TokenSigner {
    TokenSigner::new(TOKEN_KID, tenant(), token_signing_key())
}

/// Another tenant's signer: its key is known to the verifier, for that tenant only.
pub fn other_token_signer() -> TokenSigner {
    TokenSigner::new(
        OTHER_TOKEN_KID,
        other_tenant(),
        SigningKey::from_bytes(&[0x12; 32]),
    )
}

pub fn token_verifier() -> &'static TokenVerifier {
    static VERIFIER: OnceLock<TokenVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let (a, b) = (token_signer(), other_token_signer());
        TokenVerifier::new()
            .with_key(TOKEN_KID, tenant(), a.verifying_key())
            .with_key(OTHER_TOKEN_KID, other_tenant(), b.verifying_key())
    })
}

/// Two vote keys, as during a rotation: `fuzz-1` encrypts, `fuzz-0` still decrypts.
pub fn vote_keys_config() -> String {
    format!(
        "fuzz-1:{},fuzz-0:{}",
        B64.encode([0x22; 32]),
        B64.encode([0x23; 32])
    )
}

pub fn vote_keys() -> &'static VoteKeys {
    static KEYS: OnceLock<VoteKeys> = OnceLock::new();
    KEYS.get_or_init(|| VoteKeys::from_config(&vote_keys_config()).expect("fixed vote keys"))
}

/// The retired key alone, to make seeds encrypted with the second key of the ring.
pub fn retired_vote_keys() -> VoteKeys {
    VoteKeys::from_config(&format!("fuzz-0:{}", B64.encode([0x23; 32]))).expect("fixed vote key")
}

pub fn receipt_key() -> &'static ReceiptKey {
    static KEY: OnceLock<ReceiptKey> = OnceLock::new();
    KEY.get_or_init(|| ReceiptKey::new(vec![0x44; 32]).expect("a 32-byte key"))
}

/// The S2S secrets, by key id: `k1` for party-a, `k2` for party-b.
pub const S2S_SECRETS: &[(&str, &str, u8)] = &[("k1", TENANT, 0x55), ("k2", OTHER_TENANT, 0x66)];

pub fn s2s_keys() -> Vec<S2sKey> {
    S2S_SECRETS
        .iter()
        .map(|(id, tenant, byte)| {
            S2sKey::new(
                *id,
                TenantId::parse(tenant).expect("a valid tenant"),
                vec![*byte; 32],
            )
            .expect("a 32-byte secret")
        })
        .collect()
}

pub fn s2s_keyring() -> Keyring {
    Keyring::new(s2s_keys())
}

/// The fixed election as each kind: single, multiple (up to 3), ranked (up to 5).
pub fn definitions() -> &'static [ElectionDefinition] {
    static DEFINITIONS: OnceLock<Vec<ElectionDefinition>> = OnceLock::new();
    DEFINITIONS.get_or_init(|| {
        [
            (ElectionKind::Single, 1),
            (ElectionKind::Multiple, 3),
            (ElectionKind::Ranked, 5),
        ]
        .into_iter()
        .map(|(kind, max_choices)| {
            ElectionDefinition::new(ElectionFields {
                tenant: tenant(),
                id: election(),
                kind,
                options: OPTION_IDS
                    .iter()
                    .map(|id| ElectionOption {
                        id: (*id).to_owned(),
                        label: format!("Option {id}"),
                    })
                    .collect(),
                max_choices,
                status: ElectionStatus::Open,
                opens_at: None,
                closes_at: None,
            })
            .expect("the fixed definitions are valid")
        })
        .collect()
    })
}

/// The HMAC-SHA256 canonical string S2S signatures cover (`shared::s2s`'s module docs), for
/// the target that checks no other request can be cut out of it.
pub fn s2s_canonical(
    method: &str,
    path: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    use sha2::Digest;
    format!(
        "{method}|{path}|{timestamp}|{nonce}|{}",
        hex::encode(sha2::Sha256::digest(body))
    )
}

/// An S2S request as the `s2s` target reads it: `METHOD PATH\n`, then `name: value` header
/// lines, an empty line, and the body.
pub fn s2s_request_text(
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {path}\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// Polls a future that must finish without waiting (the S2S verifier with no nonce store).
pub fn ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("the S2S verifier waited with no nonce store"),
    }
}

/// Whether `text` holds `secret`'s canary (see [`CANARY`]).
pub fn shows_canary(text: &str) -> bool {
    text.contains(CANARY)
}
