//! A sealed ballot from `elections.ballot_box` (`shared::vote_keys::VoteKeys::decrypt_ballot`),
//! which the seal decrypts.
//!
//! First byte even: the rest is the sealed bytes as stored. Odd: the rest is a JSON list of
//! choices that the current key seals, for the round trip.
//!
//! Properties: never panics; what opens seals again (fresh nonce) and opens to the same choices,
//! and opens for its own tenant and election only; an error is one of a few fixed messages.
#![no_main]

use ekklesia_fuzz as fx;
use libfuzzer_sys::fuzz_target;
use shared::vote_keys::OpenError;
use uuid::Uuid;

fn check_opened(choices: &[String]) {
    let keys = fx::vote_keys();
    let sealed = keys.encrypt_ballot(&fx::tenant(), fx::election(), choices);
    assert_eq!(
        keys.decrypt_ballot(&fx::tenant(), fx::election(), &sealed)
            .as_deref(),
        Ok(choices),
        "a ballot does not survive sealing"
    );
    assert_eq!(
        keys.decrypt_ballot(&fx::other_tenant(), fx::election(), &sealed),
        Err(OpenError::Forged)
    );
    assert_eq!(
        keys.decrypt_ballot(&fx::tenant(), Uuid::from_u128(7), &sealed),
        Err(OpenError::Forged)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        if let Ok(choices) = serde_json::from_slice::<Vec<String>>(rest) {
            check_opened(&choices);
        }
        return;
    }
    match fx::vote_keys().decrypt_ballot(&fx::tenant(), fx::election(), rest) {
        Ok(choices) => check_opened(&choices),
        // Fixed messages: nothing of the ballot is shown.
        Err(error) => assert!(error.to_string().len() < 64, "{error}"),
    }
});
