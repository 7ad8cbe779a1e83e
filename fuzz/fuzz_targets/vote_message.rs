//! The vote message the worker reads off Pub/Sub (`shared::vote::VoteMessage::decode` with the
//! vote keys).
//!
//! First byte even: the rest is the message's data as published. Odd: the rest is a payload that
//! ingest's key encrypts and authenticates (what only a key holder can send, e.g. a newer or
//! buggy ingest); before encrypting, every string under `choices`, `receipt` and `token_hash`
//! gets a canary prefix.
//!
//! Properties: never panics; a message that decodes re-encodes (fresh nonce) and decodes to the
//! same vote; decoding errors are classified consistently; and an error never shows what was
//! inside the encryption (the worker logs the error: the choices must stay out of the logs).
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ekklesia_fuzz as fx;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::vote::{DecodeError, VoteMessage, MAX_ENCODED_LEN, VERSION};

const SECRET_FIELDS: &[&str] = &["choices", "receipt", "token_hash"];

fn canary(value: &mut Value) {
    match value {
        Value::String(s) => s.insert(0, fx::CANARY),
        Value::Array(items) => items.iter_mut().for_each(canary),
        Value::Object(fields) => fields.values_mut().for_each(canary),
        _ => {}
    }
}

/// Puts the canary on every string under a secret field, at any depth.
fn mark_secrets(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if SECRET_FIELDS.contains(&name.as_str()) {
                    canary(field);
                } else {
                    mark_secrets(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mark_secrets),
        _ => {}
    }
}

fn check_decoded(vote: &VoteMessage) {
    let again = vote.encode(fx::vote_keys(), "fuzz");
    assert_eq!(
        VoteMessage::decode(fx::vote_keys(), &again.data).as_ref(),
        Ok(vote),
        "a decoded vote does not survive encoding"
    );
    assert_eq!(
        again.attributes[shared::vote::ATTR_TENANT],
        vote.tenant.as_str()
    );
}

fn check_error(data: &[u8], error: &DecodeError) {
    let permanent = matches!(
        error,
        DecodeError::TooLarge(_) | DecodeError::Malformed(_) | DecodeError::Forged
    );
    assert_eq!(error.is_permanent(), permanent);
    assert!(!error.kind().is_empty());
    if data.len() > MAX_ENCODED_LEN {
        assert_eq!(error, &DecodeError::TooLarge(data.len()));
    }
    assert!(
        !fx::shows_canary(&error.to_string()),
        "a decoding error shows a secret: {error}"
    );
}

fn run(data: &[u8]) {
    match VoteMessage::decode(fx::vote_keys(), data) {
        Ok(vote) => check_decoded(&vote),
        Err(error) => check_error(data, &error),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        run(rest);
        return;
    }
    let payload = match serde_json::from_slice::<Value>(rest) {
        Ok(mut value) => {
            mark_secrets(&mut value);
            serde_json::to_vec(&value).expect("a JSON value serialises")
        }
        Err(_) => rest.to_vec(),
    };
    let (kid, nonce, ct) = fx::vote_keys().encrypt_message(&payload);
    let envelope = serde_json::json!({
        "v": VERSION,
        "kid": kid,
        "nonce": B64.encode(nonce),
        "ct": B64.encode(ct),
    });
    let data = serde_json::to_vec(&envelope).expect("an envelope serialises");
    match VoteMessage::decode(fx::vote_keys(), &data) {
        Ok(vote) => check_decoded(&vote),
        Err(error) => {
            check_error(&data, &error);
            // It authenticated: the only way left to fail is a payload that is not a vote.
            if data.len() <= MAX_ENCODED_LEN {
                assert!(matches!(error, DecodeError::Malformed(_)), "{error:?}");
            }
        }
    }
});
