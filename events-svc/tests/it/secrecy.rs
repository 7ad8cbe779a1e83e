//! Ballot secrecy against anyone who can read the database (or a backup of it): members take
//! their tokens and vote one after the other, in direct mode (one transaction per vote, the
//! strongest link PostgreSQL keeps), and an attacker with the owner's read access tries to pair
//! members with choices by physical order and transaction ids, before and after the seal.

use std::collections::HashMap;

use crate::support::{World, TENANT};
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

const OPTIONS: usize = 8;
const VOTERS: usize = 40;

/// The orders an attacker would try on a table: physical, and by writing transaction.
const ORDERS: [&str; 4] = [
    "ctid",
    "ctid DESC",
    "xmin::text::bigint, ctid",
    "xmin::text::bigint DESC, ctid",
];

/// Pairs members (by issuance order) with sealed ballots (by their order) in every combination;
/// returns the best number of members whose choice the pairing gets right.
async fn best_pairing(world: &World, election: Uuid, truth: &HashMap<Uuid, String>) -> usize {
    let mut best = 0;
    for issuance in ORDERS {
        for ballots in ORDERS {
            let pairs: Vec<(Uuid, String)> = sqlx::query_as(&format!(
                "WITH i AS (SELECT member_id, row_number() OVER (ORDER BY {issuance}) AS n \
                            FROM events.token_issuance WHERE election_id = $1), \
                      b AS (SELECT choices[1] AS choice, row_number() OVER (ORDER BY {ballots}) AS n \
                            FROM elections.ballots WHERE election_id = $1) \
                 SELECT i.member_id, b.choice FROM i JOIN b USING (n)"
            ))
            .bind(election)
            .fetch_all(&world.db.owner)
            .await
            .expect("pair by order");
            let right = pairs
                .iter()
                .filter(|(member, choice)| truth.get(member) == Some(choice))
                .count();
            best = best.max(right);
        }
    }
    best
}

#[tokio::test]
async fn a_database_reader_cannot_tell_how_members_voted_before_or_after_the_seal() {
    let world = World::start(false).await;
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let mut voters = Vec::new();
    for _ in 0..VOTERS {
        voters.push(world.person(TENANT, &["member"]).await);
    }
    let options: Vec<String> = (0..OPTIONS).map(|i| format!("option-{i}")).collect();
    let created = world
        .events(
            Method::POST,
            "/v1/elections",
            &admin,
            Some(json!({
                "title": "Chair", "question": "Who chairs?", "kind": "single",
                "options": options.iter().map(|o| json!({"id": o, "label": o})).collect::<Vec<_>>(),
                "max_choices": 1,
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let election: Uuid = created.body["id"].as_str().unwrap().parse().unwrap();
    let opened = world
        .events(
            Method::POST,
            &format!("/v1/elections/{election}/open"),
            &admin,
            None,
        )
        .await;
    assert_eq!(opened.status, 200, "{}", opened.body);

    // Each member takes a token and votes at once: issuance order is vote order.
    let mut truth: HashMap<Uuid, String> = HashMap::new();
    for (i, national_id) in voters.iter().enumerate() {
        let session = world.dev_login(national_id).await;
        let issued = world.token(&session, election).await;
        assert_eq!(issued.status, 201, "{}", issued.body);
        let choice = &options[(i * 3) % OPTIONS];
        let vote = world
            .vote(issued.body["token"].as_str().unwrap(), election, &[choice])
            .await;
        assert_eq!(vote.status, 201, "{}", vote.body);
        let member: Uuid =
            sqlx::query_scalar("SELECT id FROM members.members WHERE national_id = $1")
                .bind(national_id)
                .fetch_one(&world.db.owner)
                .await
                .unwrap();
        truth.insert(member, choice.clone());
    }

    // Before the seal: no choice is readable anywhere, so no order or transaction id helps
    // (on the code before the ballot box, pairing by ctid recovered all 40).
    assert_eq!(best_pairing(&world, election, &truth).await, 0);
    let plaintext: i64 =
        sqlx::query_scalar("SELECT count(*) FROM elections.ballots WHERE election_id = $1")
            .bind(election)
            .fetch_one(&world.db.owner)
            .await
            .unwrap();
    assert_eq!(plaintext, 0, "no plaintext ballot before the seal");
    let boxed_with_a_choice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM elections.ballot_box b, unnest($2::text[]) AS o \
         WHERE b.election_id = $1 AND position(convert_to(o, 'UTF8') IN b.sealed) > 0",
    )
    .bind(election)
    .bind(&options)
    .fetch_one(&world.db.owner)
    .await
    .unwrap();
    assert_eq!(
        boxed_with_a_choice, 0,
        "the ballot box holds no readable choice"
    );
    let boxed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM elections.ballot_box WHERE election_id = $1")
            .bind(election)
            .fetch_one(&world.db.owner)
            .await
            .unwrap();
    assert_eq!(boxed, VOTERS as i64);

    let closed = world
        .events(
            Method::POST,
            &format!("/v1/elections/{election}/close"),
            &admin,
            None,
        )
        .await;
    assert_eq!(closed.status, 200, "{}", closed.body);
    let results = world.final_results(&admin, election).await;
    assert_eq!(results["total"], json!(VOTERS));

    // After the seal: plaintext ballots in random order, all written by one transaction.
    let best = best_pairing(&world, election, &truth).await;
    // Chance is 1 in 8 per member (5 of 40 expected); 14 or more has a probability near 1e-4.
    assert!(
        best < 14,
        "pairing members with sealed ballots by order recovered {best} of {VOTERS} choices"
    );
    let xmins: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT xmin::text) FROM elections.ballots WHERE election_id = $1",
    )
    .bind(election)
    .fetch_one(&world.db.owner)
    .await
    .unwrap();
    assert_eq!(
        xmins, 1,
        "every sealed ballot was written by the seal's transaction"
    );
}
