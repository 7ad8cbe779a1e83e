//! The audit log and the usage counters after a realistic run through every service: an admin
//! opens an election (pushed, tokens registered, pushed open), a member votes, the election
//! closes and its results are read, a platform operator flips the queue flag. Each tenant's chain
//! and the platform's verify and hold no voter identity; each way the database owner can tamper
//! with them (edit a field, delete, insert a forged entry, swap two entries, edit the flag
//! change an entry audits) is named by `audit verify`'s check. The services count logins,
//! requests and votes per tenant and add them to the usage tables.

use std::time::Duration;

use crate::support::{World, OTHER_TENANT, PLATFORM, TENANT};
use reqwest::Method;
use serde_json::{json, Value};
use shared::audit::{Entry, Finding};
use sqlx::PgConnection;
use testkit::eventually;

async fn verify(conn: &mut PgConnection, world: &World, chain: &str) -> shared::audit::Verdict {
    shared::audit::verify(conn, &world.keys.audit_key(), chain)
        .await
        .expect("read the audit log")
}

async fn entries(world: &World, chain: &str) -> Vec<Entry> {
    sqlx::query_as(
        "SELECT chain, seq, at, event, election_id, queue_mode_change, change_mac, actor, \
                summary::text AS summary, prev_mac, mac \
         FROM ops.audit_log WHERE chain = $1 ORDER BY seq",
    )
    .bind(chain)
    .fetch_all(&world.db.owner)
    .await
    .unwrap()
}

/// Tampers as the database owner inside a transaction, verifies `chain` in it, rolls back.
async fn tampered(world: &World, chain: &str, statements: &[String]) -> Option<Finding> {
    let mut tx = world.db.owner.begin().await.unwrap();
    for statement in statements {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    let verdict = verify(&mut tx, world, chain).await;
    tx.rollback().await.unwrap();
    verdict.finding
}

#[tokio::test]
async fn a_realistic_run_leaves_chains_that_verify_and_each_tampering_is_named() {
    let world = World::start(true).await;
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let election = world.open_election(&admin).await;
    let voter = world
        .dev_login(&world.person(TENANT, &["member"]).await)
        .await;
    let token = world.token(&voter, election).await;
    assert_eq!(token.status, 201, "{}", token.body);
    let vote = world
        .vote(token.body["token"].as_str().unwrap(), election, &["yes"])
        .await;
    assert_eq!(vote.status, 202, "{}", vote.body);
    let receipt = vote.body["receipt"].as_str().unwrap().to_owned();
    assert_eq!(world.wait_decided(&receipt).await, "recorded");
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
    assert_eq!(results["tally"]["yes"], 1);
    let operator = world
        .dev_login(&world.person(PLATFORM, &["member", "ops"]).await)
        .await;
    let flipped = world
        .events(
            Method::PUT,
            "/v1/ops/queue-mode",
            &operator,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(flipped.status, 200, "{}", flipped.body);

    // The tenant's chain: what happened, to which election, by which S2S key, with counts.
    let chain = entries(&world, TENANT).await;
    let s2s_key = format!("{TENANT}-s2s");
    let summary = |e: &Entry| serde_json::from_str::<Value>(&e.summary).unwrap();
    let events: Vec<(&str, Value)> = chain
        .iter()
        .map(|e| (e.event.as_str(), summary(e)))
        .collect();
    let registered = events[1].1["registered"].as_u64().unwrap();
    assert!(registered >= 10, "{events:?}");
    assert_eq!(
        events[..4],
        [
            (
                "election_pushed",
                json!({"status": "draft", "previous": null})
            ),
            (
                "tokens_registered",
                json!({"received": registered, "registered": registered})
            ),
            (
                "election_pushed",
                json!({"status": "open", "previous": "draft"})
            ),
            (
                "election_pushed",
                json!({"status": "closed", "previous": "open"})
            ),
        ]
    );
    // Then every read of the results (the admin polled until they were final).
    assert!(events[4..].iter().all(|(e, _)| *e == "results_read"));
    assert_eq!(
        events.last().unwrap().1,
        json!({"sealed": true, "total": 1, "used_tokens": 1})
    );
    assert!(chain
        .iter()
        .all(|e| e.actor == s2s_key && e.election_id == Some(election)));
    let seqs: Vec<i64> = chain.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=chain.len() as i64).collect::<Vec<_>>());

    // The platform's chain: the flag change, by events-svc, bound to its audit row.
    let platform = entries(&world, PLATFORM).await;
    assert_eq!(platform.len(), 1, "{platform:?}");
    assert_eq!(
        (platform[0].event.as_str(), platform[0].actor.as_str()),
        ("queue_mode_changed", "events-svc")
    );
    assert_eq!(summary(&platform[0]), json!({"old": null, "new": false}));
    assert!(entries(&world, OTHER_TENANT).await.is_empty());

    // No voter identity anywhere in the log: no member id, token hash or receipt.
    let log: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws('|', chain, seq, at, event, election_id, queue_mode_change, actor, \
                          summary, encode(prev_mac, 'hex'), encode(mac, 'hex')) \
         FROM ops.audit_log",
    )
    .fetch_all(&world.db.owner)
    .await
    .unwrap();
    let members: Vec<String> = sqlx::query_scalar("SELECT id::text FROM members.members")
        .fetch_all(&world.db.owner)
        .await
        .unwrap();
    let hashes: Vec<String> =
        sqlx::query_scalar("SELECT encode(token_hash, 'hex') FROM elections.voting_tokens")
            .fetch_all(&world.db.owner)
            .await
            .unwrap();
    for secret in members.iter().chain(&hashes).chain([&receipt]) {
        assert!(
            log.iter().all(|line| !line.contains(secret.as_str())),
            "{secret} is in the audit log"
        );
    }

    let mut conn = world.db.owner.acquire().await.unwrap();
    for name in [TENANT, PLATFORM] {
        let verdict = verify(&mut conn, &world, name).await;
        assert!(verdict.intact(), "{name}: {:?}", verdict.finding);
    }

    // Each way the owner can tamper, on the tenant's chain (each rolled back afterwards).
    let a = format!("chain = '{TENANT}'");
    assert_eq!(
        tampered(
            &world,
            TENANT,
            &[format!(
                "UPDATE ops.audit_log SET summary = '{{\"received\":1,\"registered\":1}}' \
                 WHERE {a} AND seq = 2"
            )]
        )
        .await,
        Some(Finding::Edited { seq: 2 })
    );
    assert_eq!(
        tampered(
            &world,
            TENANT,
            &[format!("DELETE FROM ops.audit_log WHERE {a} AND seq = 3")]
        )
        .await,
        Some(Finding::Deleted { from: 3, to: 3 })
    );
    // A forged "tokens registered" slipped in after #2, the later entries moved up one.
    assert_eq!(
        tampered(
            &world,
            TENANT,
            &[
                format!("UPDATE ops.audit_log SET seq = seq + 1000 WHERE {a} AND seq >= 3"),
                format!("UPDATE ops.audit_log SET seq = seq - 999 WHERE {a} AND seq > 1000"),
                format!(
                    "INSERT INTO ops.audit_log \
                       (chain, seq, at, event, election_id, actor, summary, prev_mac, mac) \
                     SELECT chain, 3, at, event, election_id, actor, \
                            '{{\"received\":500,\"registered\":500}}', mac, sha256(mac) \
                       FROM ops.audit_log WHERE {a} AND seq = 2"
                ),
            ]
        )
        .await,
        Some(Finding::Inserted { seq: 3 })
    );
    assert_eq!(
        tampered(
            &world,
            TENANT,
            &[
                format!("UPDATE ops.audit_log SET seq = 1000 WHERE {a} AND seq = 1"),
                format!("UPDATE ops.audit_log SET seq = 1 WHERE {a} AND seq = 2"),
                format!("UPDATE ops.audit_log SET seq = 2 WHERE {a} AND seq = 1000"),
            ]
        )
        .await,
        Some(Finding::Reordered {
            seq: 1,
            written_as: 2
        })
    );
    // The flag change's own row names who made it; its entry covers that row.
    assert_eq!(
        tampered(
            &world,
            PLATFORM,
            &["UPDATE ops.queue_mode_audit SET changed_by = 'someone-else'".to_owned()]
        )
        .await,
        Some(Finding::ChangeEdited {
            seq: 1,
            change: platform[0].queue_mode_change.unwrap()
        })
    );
    for name in [TENANT, PLATFORM] {
        assert!(verify(&mut conn, &world, name).await.intact(), "{name}");
    }
}

/// `ops.usage_minutes` of `tenant`: (logins, requests, votes), summed.
async fn counted(world: &World, tenant: &str) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT coalesce(sum(logins), 0)::bigint, coalesce(sum(requests), 0)::bigint, \
                coalesce(sum(votes), 0)::bigint \
         FROM ops.usage_minutes WHERE org_id = $1",
    )
    .bind(tenant)
    .fetch_one(&world.db.owner)
    .await
    .unwrap()
}

async fn eventually_counted(world: &World, tenant: &str, expected: (i64, i64, i64)) {
    eventually(Duration::from_secs(10), || async {
        let now = counted(world, tenant).await;
        if now == expected {
            Ok(())
        } else {
            Err(format!("counted {now:?}, expected {expected:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{tenant}: {e}"));
}

#[tokio::test]
async fn the_services_count_logins_requests_and_votes_per_tenant() {
    let world = World::start(false).await;
    // members-fn: two logins (one request each).
    let admin = world
        .dev_login(&world.person(TENANT, &["member", "admin"]).await)
        .await;
    let voter = world
        .dev_login(&world.person(TENANT, &["member"]).await)
        .await;
    // events-svc: create, open, token (3); ingest's internal API: the draft pushed, the
    // tokens registered, the open pushed (3); ingest: the vote (1).
    let election = world.open_election(&admin).await;
    let token = world.token(&voter, election).await;
    let vote = world
        .vote(token.body["token"].as_str().unwrap(), election, &["no"])
        .await;
    assert_eq!(vote.status, 201, "{}", vote.body);
    // Requests of no tenant count for nobody: a forged token, probes, the session keys.
    let forged = world.vote("not-a-token", election, &["no"]).await;
    assert_eq!(forged.status, 401);
    for url in [
        format!("{}/readyz", world.events_url),
        format!("{}/.well-known/jwks.json", world.members_url),
    ] {
        world.http.get(url).send().await.unwrap();
    }
    // Another tenant's login and its failed request count for that tenant.
    let other = world
        .dev_login(&world.person(OTHER_TENANT, &["member"]).await)
        .await;
    let refused = world
        .events(Method::POST, "/v1/elections", &other, Some(json!({})))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    eventually_counted(&world, TENANT, (2, 9, 1)).await;
    eventually_counted(&world, OTHER_TENANT, (1, 2, 0)).await;
    let seconds: Vec<(String, i64)> =
        sqlx::query_as("SELECT org_id, votes FROM ops.usage_vote_seconds")
            .fetch_all(&world.db.owner)
            .await
            .unwrap();
    assert_eq!(seconds, [(TENANT.to_owned(), 1)]);
}
