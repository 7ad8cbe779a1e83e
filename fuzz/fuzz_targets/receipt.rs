//! A receipt presented to `GET /v1/receipts/{receipt}` (`shared::receipt::ReceiptKey::check`).
//!
//! First byte even: the rest is the receipt as presented. Odd: the rest is cut into an election
//! id, a token id, choices and an idempotency key, and the receipt ingest would derive for them
//! is checked (the round trip).
//!
//! Properties: never panics; a receipt that checks has exactly one spelling, names the election
//! it was derived for, survives serde (JSON) unchanged and checks again; another key refuses it;
//! every derived receipt checks and names its election.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ekklesia_fuzz as fx;
use libfuzzer_sys::fuzz_target;
use shared::receipt::{submission_digest, Receipt, ReceiptKey};
use uuid::Uuid;

fn check_valid(presented: &str, receipt: &Receipt, election: Uuid) {
    assert_eq!(receipt.as_str(), presented);
    let body = presented.strip_prefix("r1.").expect("the r1. prefix");
    let raw = B64.decode(body).expect("base64url");
    assert_eq!(
        B64.encode(&raw),
        body,
        "a second spelling of a receipt checks"
    );
    assert_eq!(&raw[..16], election.as_bytes());
    let json = serde_json::to_string(receipt).expect("a receipt serialises");
    let back: Receipt = serde_json::from_str(&json).expect("a receipt parses");
    assert_eq!(&back, receipt);
    assert_eq!(
        fx::receipt_key().check(back.as_str()),
        Some((back.clone(), election))
    );
    let other = ReceiptKey::new(vec![0x45; 32]).expect("a 32-byte key");
    assert_eq!(
        other.check(presented),
        None,
        "another key accepts the receipt"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(presented) = std::str::from_utf8(rest) {
            if let Some((receipt, election)) = fx::receipt_key().check(presented) {
                check_valid(presented, &receipt, election);
            }
        }
        return;
    }
    if rest.len() < 16 {
        return;
    }
    let election = Uuid::from_slice(&rest[..16]).expect("16 bytes");
    let rest = &rest[16..];
    let (token_id, rest) = rest.split_at(rest.len().min(32));
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\n');
    let choices: Vec<String> = parts
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::to_owned)
        .collect();
    let idempotency_key = parts.next();
    let submission = submission_digest(&choices, idempotency_key);
    let receipt = fx::receipt_key().derive(election, token_id, &submission);
    assert_eq!(
        fx::receipt_key().derive(election, token_id, &submission),
        receipt,
        "a retry gets another receipt"
    );
    check_valid(receipt.as_str(), &receipt, election);
});
