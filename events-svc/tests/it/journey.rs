//! The whole journey with every service running: log in (OIDC), list elections, get a voting
//! token, vote through ingest, close, read final results; in queue mode and in direct mode.

use crate::support::{World, TENANT};
use reqwest::Method;
use serde_json::json;

async fn journey(queue_mode: bool) {
    let world = World::start(queue_mode).await;
    let admin = world
        .login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let election = world.open_election(&admin).await;

    let choices = ["yes", "yes", "no", "abstain", "yes"];
    let mut receipts = Vec::new();
    for choice in choices {
        let voter = world.login(&world.person(TENANT, &["member"]).await).await;
        let open = world
            .events(Method::GET, "/v1/elections", &voter, None)
            .await;
        assert_eq!(open.status, 200);
        let listed = open
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == election.to_string())
            .cloned();
        let listed = listed.expect("the open election is listed");
        assert_eq!(listed["token_issued"], false);

        let issued = world.token(&voter, election).await;
        assert_eq!(issued.status, 201, "{}", issued.body);
        assert_eq!(issued.headers["cache-control"], "no-store");
        let token = issued.body["token"].as_str().unwrap().to_owned();
        // Once per member and election.
        let again = world.token(&voter, election).await;
        assert_eq!(
            (again.status, again.slug()),
            (409, "token-already-issued"),
            "{}",
            again.body
        );
        let open = world
            .events(Method::GET, "/v1/elections", &voter, None)
            .await;
        assert!(open
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == election.to_string() && e["token_issued"] == true));
        // Members read results only after the close.
        let early = world
            .events(
                Method::GET,
                &format!("/v1/elections/{election}/results"),
                &voter,
                None,
            )
            .await;
        assert_eq!((early.status, early.slug()), (403, "results-not-published"));

        let vote = world.vote(&token, election, &[choice]).await;
        let (status, state) = if queue_mode {
            (202, "queued")
        } else {
            (201, "recorded")
        };
        assert_eq!(vote.status, status, "{}", vote.body);
        assert_eq!(vote.body["status"], state);
        receipts.push(vote.body["receipt"].as_str().unwrap().to_owned());
    }

    let closed = world
        .events(
            Method::POST,
            &format!("/v1/elections/{election}/close"),
            &admin,
            None,
        )
        .await;
    assert_eq!(closed.status, 200, "{}", closed.body);
    assert_eq!(closed.body["status"], "closed");
    let last_voter = world.login(&world.person(TENANT, &["member"]).await).await;
    let late = world.token(&last_voter, election).await;
    assert_eq!((late.status, late.slug()), (403, "election-not-open"));

    let results = world.final_results(&last_voter, election).await;
    assert_eq!(results["total"], 5, "{results}");
    assert_eq!(results["tally"], json!({"yes": 3, "no": 1, "abstain": 1}));
    for receipt in receipts {
        let r = world
            .call(
                Method::GET,
                &format!("{}/v1/receipts/{receipt}", world.ingest_url),
                None,
                None,
            )
            .await;
        assert_eq!(r.body["status"], "recorded", "{}", r.body);
    }
    // The events side knows who received a token, never the token or its hash.
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'events'",
    )
    .fetch_all(&world.db.owner)
    .await
    .unwrap();
    assert!(
        columns
            .iter()
            .all(|c| !c.contains("token") || c == "token_issued"),
        "{columns:?}"
    );
    let issued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events.token_issuance WHERE election_id = $1")
            .bind(election)
            .fetch_one(&world.db.owner)
            .await
            .unwrap();
    assert_eq!(issued, 5);
}

#[tokio::test]
async fn journey_in_queue_mode() {
    journey(true).await;
}

#[tokio::test]
async fn journey_in_direct_mode() {
    journey(false).await;
}
