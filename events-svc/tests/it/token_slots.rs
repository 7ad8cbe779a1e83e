//! Token slots (security review C2): nothing written while tokens are issued lets a database
//! reader pair a member with their token's hash; slots that run out are registered in chunks
//! and every token handed out votes; a tenant without a slot key gets a clear problem.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{World, OTHER_TENANT, TENANT};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use testkit::eventually;
use uuid::Uuid;

/// What the elections side stores for a token: sha256 of the token id (the `jti` claim).
fn stored_hash(token: &str) -> Vec<u8> {
    let claims = token.split('.').nth(1).expect("a JWS has claims");
    let claims: Value = serde_json::from_slice(&B64.decode(claims).expect("base64url claims"))
        .expect("JSON claims");
    let id = B64
        .decode(claims["jti"].as_str().expect("a jti claim"))
        .expect("base64url jti");
    Sha256::digest(id).to_vec()
}

async fn member_id(world: &World, national_id: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM members.members WHERE national_id = $1")
        .bind(national_id)
        .fetch_one(&world.db.owner)
        .await
        .expect("member id")
}

#[tokio::test]
async fn a_database_reader_cannot_pair_members_with_token_hashes_by_issuance_order() {
    let world = World::start(true).await;
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let mut voters = Vec::new();
    for _ in 0..50 {
        voters.push(world.person(TENANT, &["member"]).await);
    }
    let election = world.open_election(&admin).await;

    // Members take their tokens one by one, as they would at a meeting.
    let mut truth: HashMap<Uuid, Vec<u8>> = HashMap::new();
    for national_id in &voters {
        let session = world.dev_login(national_id).await;
        let issued = world.token(&session, election).await;
        assert_eq!(issued.status, 201, "{}", issued.body);
        let hash = stored_hash(issued.body["token"].as_str().unwrap());
        truth.insert(member_id(&world, national_id).await, hash);
    }

    // The attacker reads both tables as the owner and pairs their rows by physical order or by
    // transaction id, each ascending or descending, and keeps the best pairing.
    let orders = [
        "ctid",
        "ctid DESC",
        "xmin::text::bigint",
        "xmin::text::bigint DESC",
    ];
    let mut outcomes = Vec::new();
    for issuance_order in orders {
        for hash_order in orders {
            let pairs: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(&format!(
                "WITH i AS (SELECT member_id, row_number() OVER (ORDER BY {issuance_order}) AS n \
                            FROM events.token_issuance WHERE election_id = $1), \
                      t AS (SELECT token_hash, row_number() OVER (ORDER BY {hash_order}) AS n \
                            FROM elections.voting_tokens WHERE election_id = $1) \
                 SELECT i.member_id, t.token_hash FROM i JOIN t USING (n)"
            ))
            .bind(election)
            .fetch_all(&world.db.owner)
            .await
            .expect("pair by order");
            let right = pairs
                .iter()
                .filter(|(member, hash)| truth.get(member) == Some(hash))
                .count();
            outcomes.push((right, issuance_order, hash_order));
        }
    }
    outcomes.sort();
    let (best, issuance_order, hash_order) = outcomes[outcomes.len() - 1];
    // Chance is about 50/114 right per ordering (the election registered 114 slots).
    assert!(
        best <= 6,
        "pairing token_issuance by {issuance_order} with voting_tokens by {hash_order} \
         recovered {best} of 50 members' token hashes: {outcomes:?}"
    );
}

#[tokio::test]
async fn with_small_chunks_every_member_gets_one_token_that_votes() {
    let world = World::start_with(false, &[("TOKEN_SLOT_CHUNK", "4".to_owned())]).await;
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    // One member when it opens: 1 + 4 slots registered.
    let election = world.open_election(&admin).await;
    // An election opened before token slots existed: nothing registered anywhere.
    let older = world.open_election(&admin).await;
    sqlx::query(
        "UPDATE events.elections SET slot_key_id = NULL, slots_registered = 0, slots_issued = 0 \
         WHERE id = $1",
    )
    .bind(older)
    .execute(&world.db.owner)
    .await
    .unwrap();
    sqlx::query("DELETE FROM elections.voting_tokens WHERE election_id = $1")
        .bind(older)
        .execute(&world.db.owner)
        .await
        .unwrap();

    // Twelve more members join while it is open: the slots run out twice.
    let mut sessions = vec![admin];
    for _ in 0..12 {
        sessions.push(
            world
                .dev_login(&world.person(TENANT, &["member"]).await)
                .await,
        );
    }
    for id in [election, older] {
        for session in &sessions {
            let issued = world.token(session, id).await;
            assert_eq!(issued.status, 201, "{}", issued.body);
            let again = world.token(session, id).await;
            assert_eq!(
                (again.status, again.slug()),
                (409, "token-already-issued"),
                "{}",
                again.body
            );
            let vote = world
                .vote(issued.body["token"].as_str().unwrap(), id, &["yes"])
                .await;
            assert_eq!(vote.status, 201, "{}", vote.body);
            assert_eq!(vote.body["status"], "recorded");
        }
    }

    let (registered, issued): (i64, i64) =
        sqlx::query_as("SELECT slots_registered, slots_issued FROM events.elections WHERE id = $1")
            .bind(election)
            .fetch_one(&world.db.owner)
            .await
            .unwrap();
    let hashes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM elections.voting_tokens WHERE election_id = $1")
            .bind(election)
            .fetch_one(&world.db.owner)
            .await
            .unwrap();
    assert_eq!((issued, registered, hashes), (13, 13, 13));
    // The older election registered the 13 members plus a chunk on its first issuance.
    let registered_older: i64 =
        sqlx::query_scalar("SELECT slots_registered FROM events.elections WHERE id = $1")
            .bind(older)
            .fetch_one(&world.db.owner)
            .await
            .unwrap();
    assert_eq!(registered_older, 17);
}

#[tokio::test]
async fn concurrent_requests_take_distinct_slots_that_all_vote() {
    let world = World::start_with(false, &[("TOKEN_SLOT_CHUNK", "4".to_owned())]).await;
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let election = world.open_election(&admin).await;
    let mut sessions = Vec::new();
    for _ in 0..24 {
        sessions.push(
            world
                .dev_login(&world.person(TENANT, &["member"]).await)
                .await,
        );
    }
    // All at once, while the slots run out every few tokens. A request that meets another's
    // registration may get a 503 with Retry-After; the member asks again.
    let tokens = futures::future::join_all(sessions.iter().map(|session| async {
        eventually(Duration::from_secs(30), || async {
            let answer = world.token(session, election).await;
            if answer.status == 201 {
                return Ok(answer.body["token"].as_str().unwrap().to_owned());
            }
            assert_eq!(answer.status, 503, "{}", answer.body);
            assert!(answer.headers.contains_key("retry-after"));
            Err(answer.body)
        })
        .await
        .expect("every member gets a token")
    }))
    .await;
    let distinct: std::collections::HashSet<Vec<u8>> =
        tokens.iter().map(|t| stored_hash(t)).collect();
    assert_eq!(distinct.len(), 24, "every member has a slot of their own");
    for token in &tokens {
        let vote = world.vote(token, election, &["no"]).await;
        assert_eq!(vote.status, 201, "{}", vote.body);
    }
}

#[tokio::test]
async fn a_tenant_without_a_slot_key_gets_a_clear_problem_and_nothing_changes() {
    let only_a = format!("a-only:{TENANT}:{}", B64.encode(rand::random::<[u8; 32]>()));
    let world = World::start_with(true, &[("TOKEN_SLOT_KEYS", only_a)]).await;
    let admin_b = world
        .dev_login(&world.person(OTHER_TENANT, &["member", "admin"]).await)
        .await;
    let created = world
        .events(
            Method::POST,
            "/v1/elections",
            &admin_b,
            Some(json!({
                "title": "t", "question": "q", "kind": "single",
                "options": [{"id": "yes", "label": "Yes"}], "max_choices": 1})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let election = created.body["id"].as_str().unwrap().to_owned();

    let opened = world
        .events(
            Method::POST,
            &format!("/v1/elections/{election}/open"),
            &admin_b,
            None,
        )
        .await;
    assert_eq!(
        (opened.status, opened.slug()),
        (503, "tenant-not-configured"),
        "{}",
        opened.body
    );
    assert!(opened.headers.contains_key("retry-after"));
    let still = world
        .events(
            Method::GET,
            &format!("/v1/elections/{election}"),
            &admin_b,
            None,
        )
        .await;
    assert_eq!(still.body["status"], "draft");

    // An election that is open anyway (opened before the key was withdrawn): no token either.
    sqlx::query("UPDATE events.elections SET status = 'open' WHERE id = $1::uuid")
        .bind(&election)
        .execute(&world.db.owner)
        .await
        .unwrap();
    let refused = world.token(&admin_b, election.parse().unwrap()).await;
    assert_eq!(
        (refused.status, refused.slug()),
        (503, "tenant-not-configured"),
        "{}",
        refused.body
    );
    assert!(refused.headers.contains_key("retry-after"));
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM events.token_issuance")
        .fetch_one(&world.db.owner)
        .await
        .unwrap();
    assert_eq!(recorded, 0);

    // The configured tenant is unaffected.
    let admin_a = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let election_a = world.open_election(&admin_a).await;
    let issued = world.token(&admin_a, election_a).await;
    assert_eq!(issued.status, 201, "{}", issued.body);
}

#[tokio::test]
async fn an_opening_registers_more_hashes_than_one_call_may_carry() {
    // One member and a margin of 10,000: 10,001 hashes, two calls to the elections side.
    let world = World::start_with(true, &[("TOKEN_SLOT_CHUNK", "10000".to_owned())]).await;
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let election = world.open_election(&admin).await;
    let hashes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM elections.voting_tokens WHERE election_id = $1")
            .bind(election)
            .fetch_one(&world.db.owner)
            .await
            .unwrap();
    assert_eq!(hashes, 10_001);
    let issued = world.token(&admin, election).await;
    assert_eq!(issued.status, 201, "{}", issued.body);
    let vote = world
        .vote(issued.body["token"].as_str().unwrap(), election, &["yes"])
        .await;
    assert_eq!(vote.status, 202, "{}", vote.body);
}

#[test]
fn registration_calls_fit_the_elections_sides_limit() {
    assert_eq!(
        events_svc::slots::MAX_HASHES_PER_CALL,
        ingest::routes::internal::MAX_TOKENS_PER_CALL
    );
}
