//! The ballot body: ingest's `BallotRequest` (serde_json, as axum's `Json` reads it), then
//! `ElectionDefinition::ballot` for the same election as a single, multiple and ranked election.
//!
//! Properties: never panics; a ballot holds only the election's options, each once, one to
//! `max_choices` of them, in the order sent; it survives a JSON round trip (as a request body
//! and as a `Ballot`) unchanged; an error message stays short whatever was sent (it shows at most
//! an option id's length of a choice).
#![no_main]

use std::collections::HashSet;

use ekklesia_fuzz as fx;
use ingest::routes::ballots::BallotRequest;
use libfuzzer_sys::fuzz_target;
use shared::domain::{Ballot, ElectionDefinition, MAX_OPTION_ID_LEN};

fn check(definition: &ElectionDefinition, choices: &[String]) {
    match definition.ballot(choices.to_vec()) {
        Ok(ballot) => {
            assert_eq!(ballot.choices(), choices, "the ballot is not what was sent");
            assert!(!choices.is_empty() && choices.len() <= definition.max_choices() as usize);
            let mut seen = HashSet::new();
            for choice in choices {
                assert!(definition.options().iter().any(|o| &o.id == choice));
                assert!(seen.insert(choice), "an option chosen twice");
            }
            // As a request body again, and as the `Ballot` itself.
            let body = serde_json::to_vec(&serde_json::json!({ "choices": ballot.choices() }))
                .expect("a ballot serialises");
            let request: BallotRequest =
                serde_json::from_slice(&body).expect("a ballot's body parses");
            assert_eq!(definition.ballot(request.choices).as_ref(), Ok(&ballot));
            let json = serde_json::to_vec(&ballot).expect("a ballot serialises");
            let back: Ballot = serde_json::from_slice(&json).expect("a ballot parses");
            assert_eq!(back, ballot);
        }
        Err(error) => {
            // At most one option id's worth of a choice (up to 4 bytes a character) is shown,
            // however long the choices sent.
            let text = error.to_string();
            assert!(
                text.len() <= 128 + 4 * MAX_OPTION_ID_LEN,
                "an error message of {} bytes",
                text.len()
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<BallotRequest>(data) else {
        return;
    };
    for definition in fx::definitions() {
        check(definition, &request.choices);
    }
});
