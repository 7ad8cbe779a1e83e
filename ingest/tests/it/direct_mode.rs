//! Direct mode's database side (`ingest::ballot_box::record`, one call of
//! `elections.record_direct_vote` in autocommit) against the real PostgreSQL: every answer
//! (each submission its own: a replay of the same one, or another one with the used token),
//! the `NOWAIT` lock on a token another request holds, the lock on the election row, tenant
//! isolation through the function, and who may call it. The HTTP answers built on these are
//! covered in `http`, `bad_input` and end to end in the worker's `vote_path`.

use std::time::{Duration, Instant};

use ingest::ballot_box::{self, DirectOutcome, DirectVote};
use ingest::error::IngestError;
use shared::domain::{DomainError, ElectionDefinition, TenantId, TokenHash};
use shared::receipt::{submission_digest, Receipt, ReceiptKey};
use shared::vote_keys::VoteKeys;
use sqlx::PgPool;
use testkit::{Role, TestDb};

const TENANT: &str = "party-a";
const OTHER_TENANT: &str = "party-b";

struct Fixture {
    db: TestDb,
    /// Direct mode's pool: ingest role, `shared::db::pool` limits (lock_timeout 1 s).
    ingest: PgPool,
    definition: ElectionDefinition,
    receipt_key: ReceiptKey,
    keys: VoteKeys,
}

/// A registered token: its id (what the voter's token carries) and its hash.
struct Token {
    id: Vec<u8>,
    hash: TokenHash,
}

impl Fixture {
    async fn new() -> Self {
        let db = TestDb::create().await;
        let tenant = TenantId::parse(TENANT).expect("tenant");
        let definition = db.open_election(&tenant, 2).await;
        let ingest = shared::db::pool(&db.settings(Role::Ingest, 1)).expect("ingest pool");
        Self {
            db,
            ingest,
            definition,
            receipt_key: ReceiptKey::new(rand::random::<[u8; 32]>().to_vec()).expect("key"),
            keys: VoteKeys::from_config(&VoteKeys::generate_config("t1")).expect("keys"),
        }
    }

    /// The receipt of one submission, as ingest derives it.
    fn receipt(&self, token: &Token, choice: &str, key: Option<&str>) -> Receipt {
        let submission = submission_digest(&[choice.to_owned()], key);
        self.receipt_key
            .derive(self.definition.id(), &token.id, &submission)
    }

    async fn token(&self) -> Token {
        let id: [u8; 16] = rand::random();
        let hash = TokenHash::of_token_id(&id);
        sqlx::query(
            "INSERT INTO elections.voting_tokens (org_id, election_id, token_hash) VALUES ($1, $2, $3)",
        )
        .bind(TENANT)
        .bind(self.definition.id())
        .bind(&hash.0[..])
        .execute(&self.db.owner)
        .await
        .expect("register token");
        Token {
            id: id.to_vec(),
            hash,
        }
    }

    /// Votes `o1` with `token` (as ingest's direct mode does: receipt per submission, the
    /// ballot encrypted for the box).
    async fn vote(
        &self,
        tenant: &str,
        token: &Token,
        key: Option<&str>,
    ) -> Result<DirectOutcome, IngestError> {
        self.vote_for(tenant, token, "o1", key).await
    }

    async fn vote_for(
        &self,
        tenant: &str,
        token: &Token,
        choice: &str,
        key: Option<&str>,
    ) -> Result<DirectOutcome, IngestError> {
        let tenant = TenantId::parse(tenant).expect("tenant");
        let ballot = self
            .definition
            .ballot(vec![choice.to_owned()])
            .expect("ballot");
        let sealed = self
            .keys
            .encrypt_ballot(&tenant, self.definition.id(), ballot.choices());
        ballot_box::record(
            &self.ingest,
            DirectVote {
                tenant: &tenant,
                election_id: self.definition.id(),
                token_hash: token.hash,
                receipt: &self.receipt(token, choice, key),
                sealed_ballot: &sealed,
                replayable: key.is_some(),
            },
        )
        .await
    }

    /// (token used, ballots in the box, status of the `o1` submission's receipt without a key),
    /// read as the owner (no row-level security).
    async fn state(&self, token: &Token) -> (bool, i64, Option<String>) {
        self.state_of(token, &self.receipt(token, "o1", None)).await
    }

    async fn state_of(&self, token: &Token, receipt: &Receipt) -> (bool, i64, Option<String>) {
        let used: bool = sqlx::query_scalar(
            "SELECT used FROM elections.voting_tokens WHERE election_id = $1 AND token_hash = $2",
        )
        .bind(self.definition.id())
        .bind(&token.hash.0[..])
        .fetch_one(&self.db.owner)
        .await
        .expect("token");
        let ballots: i64 =
            sqlx::query_scalar("SELECT count(*) FROM elections.ballot_box WHERE election_id = $1")
                .bind(self.definition.id())
                .fetch_one(&self.db.owner)
                .await
                .expect("ballots");
        let receipt: Option<String> =
            sqlx::query_scalar("SELECT status FROM elections.receipts WHERE receipt = $1")
                .bind(receipt.as_str())
                .fetch_optional(&self.db.owner)
                .await
                .expect("receipt");
        (used, ballots, receipt)
    }
}

fn slug(error: &IngestError) -> (u16, String) {
    let problem = error.to_problem();
    let slug = problem
        .kind
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    (problem.status, slug)
}

#[tokio::test]
async fn every_submission_gets_its_own_answer() {
    let fx = Fixture::new().await;

    // Never registered.
    let stranger = Token {
        id: b"never registered".to_vec(),
        hash: TokenHash::of_token_id(b"never registered"),
    };
    let error = fx
        .vote(TENANT, &stranger, None)
        .await
        .err()
        .expect("refused");
    assert!(matches!(error, IngestError::UnregisteredToken), "{error:?}");
    assert_eq!(slug(&error), (403, "token-not-registered".into()));

    // First vote, then its replays.
    let token = fx.token().await;
    assert!(matches!(
        fx.vote(TENANT, &token, Some("k-1")).await,
        Ok(DirectOutcome::Recorded)
    ));
    let first = fx.receipt(&token, "o1", Some("k-1"));
    assert_eq!(
        fx.state_of(&token, &first).await,
        (true, 1, Some("recorded".into()))
    );
    assert!(
        matches!(
            fx.vote(TENANT, &token, Some("k-1")).await,
            Ok(DirectOutcome::Replayed)
        ),
        "the same request with the same Idempotency-Key gets the first answer"
    );
    // The same key with other choices is another submission, not a replay: refused.
    let error = fx
        .vote_for(TENANT, &token, "o0", Some("k-1"))
        .await
        .err()
        .expect("conflict");
    assert!(matches!(error, IngestError::TokenUsed), "{error:?}");
    assert_eq!(slug(&error), (409, "token-already-used".into()));
    for key in [Some("k-2"), None] {
        let error = fx.vote(TENANT, &token, key).await.err().expect("conflict");
        assert!(matches!(error, IngestError::TokenUsed), "{error:?}");
        assert_eq!(slug(&error), (409, "token-already-used".into()));
    }
    // A vote recorded without a key is never a replay.
    let keyless = fx.token().await;
    assert!(matches!(
        fx.vote(TENANT, &keyless, None).await,
        Ok(DirectOutcome::Recorded)
    ));
    for key in [None, Some("k-1")] {
        assert!(matches!(
            fx.vote(TENANT, &keyless, key).await,
            Err(IngestError::TokenUsed)
        ));
    }
    assert_eq!(fx.state(&token).await.1, 2, "one ballot per token");

    // Not open: closed, or not yet open. Nothing is written.
    for change in [
        "UPDATE elections.elections SET status = 'closed', closed_at = now() WHERE id = $1",
        "UPDATE elections.elections SET status = 'open', closed_at = NULL, \
         opens_at = now() + interval '1 hour' WHERE id = $1",
        "UPDATE elections.elections SET opens_at = NULL, \
         closes_at = now() - interval '1 second' WHERE id = $1",
    ] {
        sqlx::query(change)
            .bind(fx.definition.id())
            .execute(&fx.db.owner)
            .await
            .expect("change election");
        let late = fx.token().await;
        let error = fx
            .vote(TENANT, &late, Some("k"))
            .await
            .err()
            .expect("closed");
        assert!(
            matches!(error, IngestError::Domain(DomainError::OutsideWindow)),
            "{change}: {error:?}"
        );
        assert_eq!(slug(&error), (403, "election-not-open".into()));
        assert_eq!(fx.state(&late).await, (false, 2, None), "{change}");
    }
}

#[tokio::test]
async fn a_vote_on_a_token_another_request_holds_is_told_to_retry_at_once() {
    let fx = Fixture::new().await;
    let token = fx.token().await;
    let mut holder = fx.db.owner.begin().await.expect("begin");
    sqlx::query(
        "SELECT 1 FROM elections.voting_tokens WHERE election_id = $1 AND token_hash = $2 FOR UPDATE",
    )
    .bind(fx.definition.id())
    .bind(&token.hash.0[..])
    .execute(&mut *holder)
    .await
    .expect("hold the token");

    let started = Instant::now();
    let error = fx.vote(TENANT, &token, None).await.err().expect("busy");
    let waited = started.elapsed();
    match &error {
        IngestError::Database(e) => assert!(shared::db::is_lock_unavailable(e), "{error:?}"),
        other => panic!("{other:?}"),
    }
    let problem = error.to_problem();
    assert_eq!(slug(&error), (503, "busy".into()));
    assert!(problem.retry_after.is_some(), "503 without Retry-After");
    assert!(
        waited < Duration::from_millis(900),
        "NOWAIT, not the 1 s lock_timeout: waited {waited:?}"
    );
    assert_eq!(fx.state(&token).await, (false, 0, None));

    holder.rollback().await.expect("rollback");
    assert!(matches!(
        fx.vote(TENANT, &token, None).await,
        Ok(DirectOutcome::Recorded)
    ));
}

#[tokio::test]
async fn the_election_row_is_locked_against_removal_not_against_closing() {
    let fx = Fixture::new().await;

    // A transaction that may delete the row or change its key (FOR UPDATE) holds the vote
    // off: it waits lock_timeout and is told to retry, and nothing is written.
    let token = fx.token().await;
    let mut holder = fx.db.owner.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM elections.elections WHERE id = $1 FOR UPDATE")
        .bind(fx.definition.id())
        .execute(&mut *holder)
        .await
        .expect("hold the election");
    let error = fx.vote(TENANT, &token, None).await.err().expect("busy");
    assert_eq!(slug(&error), (503, "busy".into()), "{error:?}");
    assert_eq!(fx.state(&token).await, (false, 0, None));
    holder.rollback().await.expect("rollback");

    // An update of other columns (what closing does) does not block it.
    let mut holder = fx.db.owner.begin().await.expect("begin");
    sqlx::query("UPDATE elections.elections SET updated_at = now() WHERE id = $1")
        .bind(fx.definition.id())
        .execute(&mut *holder)
        .await
        .expect("update the election");
    let started = Instant::now();
    assert!(matches!(
        fx.vote(TENANT, &token, None).await,
        Ok(DirectOutcome::Recorded)
    ));
    assert!(started.elapsed() < Duration::from_millis(900));
    holder.commit().await.expect("commit");
    assert_eq!(fx.state(&token).await, (true, 1, Some("recorded".into())));
}

#[tokio::test]
async fn another_tenant_cannot_touch_a_token_through_the_function() {
    let fx = Fixture::new().await;
    let token = fx.token().await;

    // Through ingest's code with the other tenant: the token does not exist for it.
    let error = fx
        .vote(OTHER_TENANT, &token, None)
        .await
        .err()
        .expect("refused");
    assert!(matches!(error, IngestError::UnregisteredToken), "{error:?}");
    // Through the function directly, as the ingest role.
    let (outcome,): (String,) =
        sqlx::query_as("SELECT elections.record_direct_vote($1, $2, $3, $4, $5, false)")
            .bind(OTHER_TENANT)
            .bind(fx.definition.id())
            .bind(&token.hash.0[..])
            .bind(fx.receipt(&token, "o0", None).as_str())
            .bind(b"a ballot box entry of thirty bytes or more".to_vec())
            .fetch_one(&fx.ingest)
            .await
            .expect("call");
    assert_eq!(outcome, "unregistered");
    assert_eq!(fx.state(&token).await, (false, 0, None));

    // The function sets no tenant for its caller: the same (only) connection sees no row.
    assert!(matches!(
        fx.vote(TENANT, &token, None).await,
        Ok(DirectOutcome::Recorded)
    ));
    let (setting, visible): (Option<String>, i64) = sqlx::query_as(
        "SELECT current_setting('app.org_id', true), \
         (SELECT count(*) FROM elections.voting_tokens)",
    )
    .fetch_one(&fx.ingest)
    .await
    .expect("read");
    assert_eq!(setting.unwrap_or_default(), "");
    assert_eq!(visible, 0);
}

#[tokio::test]
async fn only_ingest_may_call_it() {
    let fx = Fixture::new().await;
    let token = fx.token().await;
    for role in [Role::Worker, Role::Events, Role::Members] {
        let pool = fx.db.pool(role).await;
        let error = sqlx::query("SELECT elections.record_direct_vote($1, $2, $3, $4, $5, false)")
            .bind(TENANT)
            .bind(fx.definition.id())
            .bind(&token.hash.0[..])
            .bind(fx.receipt(&token, "o0", None).as_str())
            .bind(b"a ballot box entry of thirty bytes or more".to_vec())
            .execute(&pool)
            .await
            .expect_err("refused");
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        // 42501: permission denied (for the function, or for the schema before it).
        assert_eq!(code.as_deref(), Some("42501"), "{role:?}: {error}");
    }
    assert_eq!(fx.state(&token).await, (false, 0, None));
}
