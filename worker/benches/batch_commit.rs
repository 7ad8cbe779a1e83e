//! Rows/s of the worker's batch transaction against the real PostgreSQL, beside a raw-SQL
//! ceiling measured in the same run, and the single-vote transaction of direct mode beside its
//! own raw-SQL ceiling.
//!
//! `batch_commit/<writer>/<connections>conn/<batch size>`, one iteration = `<connections>`
//! batches of `<batch size>` fresh votes committed concurrently (one per connection), where
//! `<writer>` is
//! - `worker`: `worker::batch::commit`, the code queue mode runs, on the worker's own pool
//!   (`shared::db::pool`, worker role, at most 3 connections);
//! - `raw_statements`: the same work in the fewest separate statements: one transaction with
//!   the tenant setting, one `UPDATE … FROM unnest` claiming the tokens, one
//!   `INSERT … SELECT unnest` for the ballots and one for the receipts;
//! - `raw_one_statement`: the same work in one statement (data-modifying CTEs) sent in
//!   autocommit on connections whose tenant (`app.org_id`) was set when they were opened: one
//!   round trip per batch, the best this server accepts;
//!
//! Every writer stores what the vote path stores: each ballot encrypted into the ballot box
//! (`elections.ballot_box`, sealed later), the raw ceilings with ciphertexts made outside the
//! timed statement.
//!
//! `single_vote/<writer>/<connections>conn`, one iteration = 20 votes per connection, each in
//! its own transaction, where `<writer>` is `direct_mode` (`ingest::ballot_box::record`,
//! the code direct mode runs: lock with `FOR UPDATE NOWAIT`, check the election, insert the
//! encrypted ballot, mark the token used, record the receipt) or `raw_one_statement` (the same
//! effect in one autocommit statement, on the worker's login: ingest's may write only through
//! direct mode's function).
//!
//! Every vote uses a token registered (untimed) just before its iteration, so each is a first
//! vote, never the cheaper duplicate path; every benchmark gets a fresh database (cloned from
//! the migrated template by `testkit::TestDb`) that is dropped when it ends. Needs the
//! local stack: `source infra/local/env.sh` after `infra/local/up.sh`.
//!
//! `cargo bench -p worker --bench batch_commit -- --warm-up-time 1 --measurement-time 5`;
//! figures and the machine they were measured on: docs/microbenchmarks.md.

#![allow(
    clippy::too_many_lines,
    reason = "a scenario test reads top to bottom: its steps are the story it tells"
)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ingest::ballot_box::{DirectOutcome, DirectVote};
use rand::seq::SliceRandom;
use rand::Rng;
use shared::domain::{ElectionDefinition, TenantId, TokenHash};
use shared::receipt::ReceiptKey;
use shared::vote::VoteMessage;
use shared::vote_keys::VoteKeys;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use testkit::{Role, TestDb};
use tokio::runtime::Runtime;
use uuid::Uuid;
use worker::batch::Outcome;

const TENANT: &str = "party-a";
const OPTIONS: usize = 5;
const BATCH_SIZES: [usize; 3] = [100, 500, 2000];
/// The budget: at most 3 database connections.
const CONNECTIONS: [usize; 2] = [1, 3];
const SINGLE_VOTES_PER_CONNECTION: usize = 20;

/// One database with one open single-choice election.
struct Fixture {
    db: TestDb,
    tenant: TenantId,
    definition: ElectionDefinition,
    receipt_key: ReceiptKey,
    keys: std::sync::Arc<VoteKeys>,
    /// The worker's own pool: worker role, `shared::db::pool` limits.
    worker: PgPool,
    /// Direct mode's pool: ingest role, `shared::db::pool` limits.
    ingest: PgPool,
    /// Worker and ingest role with `app.org_id` set per connection (the raw ceilings).
    worker_tenant: PgPool,
    ingest_tenant: PgPool,
}

impl Fixture {
    async fn new() -> Self {
        let db = TestDb::create().await;
        let tenant = TenantId::parse(TENANT).expect("tenant");
        let definition = db.open_election(&tenant, OPTIONS).await;
        let worker = shared::db::pool(&db.settings(Role::Worker, 3)).expect("worker pool");
        let ingest = shared::db::pool(&db.settings(Role::Ingest, 3)).expect("ingest pool");
        let worker_tenant = tenant_pool(&db, Role::Worker).await;
        let ingest_tenant = tenant_pool(&db, Role::Ingest).await;
        for pool in [&worker, &ingest, &worker_tenant, &ingest_tenant] {
            warm(pool).await;
        }
        Self {
            db,
            tenant,
            definition,
            receipt_key: ReceiptKey::new(rand::random::<[u8; 32]>().to_vec()).expect("key"),
            keys: std::sync::Arc::new(
                VoteKeys::from_config(&VoteKeys::generate_config("bench")).expect("vote keys"),
            ),
            worker,
            ingest,
            worker_tenant,
            ingest_tenant,
        }
    }

    /// `n` votes with fresh tokens, registered as events-svc would (untimed), in random order.
    async fn votes(&self, n: usize) -> Vec<VoteMessage> {
        let mut rng = rand::thread_rng();
        let now = Utc::now();
        let mut votes = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        for _ in 0..n {
            let token_id: [u8; 32] = rng.gen();
            let token_hash = TokenHash::of_token_id(&token_id);
            hashes.push(token_hash.0.to_vec());
            let choices = vec![format!("o{}", rng.gen_range(0..OPTIONS))];
            let submission = shared::receipt::submission_digest(&choices, None);
            votes.push(VoteMessage {
                tenant: self.tenant.clone(),
                election_id: self.definition.id(),
                token_hash,
                receipt: self
                    .receipt_key
                    .derive(self.definition.id(), &token_id, &submission),
                choices,
                accepted_at: now,
            });
        }
        sqlx::query(
            "INSERT INTO elections.voting_tokens (org_id, election_id, token_hash) \
             SELECT $1, $2, unnest($3::bytea[])",
        )
        .bind(TENANT)
        .bind(self.definition.id())
        .bind(&hashes)
        .execute(&self.db.owner)
        .await
        .expect("register tokens");
        votes
    }

    /// Drops the benchmark's database, so a run leaves nothing behind.
    async fn drop_database(self) {
        let Self {
            db,
            worker,
            ingest,
            worker_tenant,
            ingest_tenant,
            ..
        } = self;
        let name = db.name.clone();
        // `close` can return while a connection is still on its way back to the pool (sqlx
        // pings it on release and then parks it as idle); dropping the pools closes those too.
        for pool in [
            worker,
            ingest,
            worker_tenant,
            ingest_tenant,
            db.owner.clone(),
        ] {
            pool.close().await;
            drop(pool);
        }
        drop(db);
        let admin = std::env::var("EKKLESIA_ADMIN_DATABASE_URL").expect("admin URL");
        let mut conn = PgConnection::connect(&admin).await.expect("connect admin");
        // DROP DATABASE itself waits up to 5 s for the last backends to exit.
        for attempt in 1..=3 {
            match conn
                .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
                .await
            {
                Ok(_) => return,
                Err(e) if attempt == 3 => {
                    eprintln!("could not drop {name} ({e}); infra/local/test.sh drops it later")
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
}

/// A pool of at most 3 connections of `role` whose tenant is set for the whole session.
async fn tenant_pool(db: &TestDb, role: Role) -> PgPool {
    let options: PgConnectOptions = db.url(role).parse().expect("url");
    let options = options.options([
        ("app.org_id", TENANT),
        ("statement_timeout", "5000"),
        ("lock_timeout", "1000"),
    ]);
    PgPoolOptions::new()
        .max_connections(3)
        .connect_with(options)
        .await
        .expect("tenant pool")
}

/// Opens all 3 connections of a pool, so no iteration pays for a connection.
async fn warm(pool: &PgPool) {
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = pool.acquire().await.expect("connection");
        conn.execute("SELECT 1").await.expect("ping");
        held.push(conn);
    }
}

#[derive(Debug, Clone, Copy)]
enum BatchWriter {
    Worker,
    RawStatements,
    RawOneStatement,
}

impl BatchWriter {
    fn name(self) -> &'static str {
        match self {
            Self::Worker => "worker",
            Self::RawStatements => "raw_statements",
            Self::RawOneStatement => "raw_one_statement",
        }
    }

    /// Commits `votes`; returns how many were recorded.
    async fn write(
        self,
        keys: &VoteKeys,
        worker: PgPool,
        tenant_pool: PgPool,
        votes: Vec<VoteMessage>,
    ) -> usize {
        match self {
            Self::Worker => worker::batch::commit(&worker, keys, &votes)
                .await
                .expect("worker batch commits")
                .outcomes
                .iter()
                .filter(|o| **o == Outcome::Recorded)
                .count(),
            Self::RawStatements => {
                raw_statements(&worker, &columns(keys, votes.iter()), &votes).await
            }
            Self::RawOneStatement => {
                let mut shuffled: Vec<&VoteMessage> = votes.iter().collect();
                shuffled.shuffle(&mut rand::thread_rng());
                raw_one_statement(&tenant_pool, &columns(keys, shuffled.into_iter())).await
            }
        }
    }
}

struct Columns {
    election_ids: Vec<Uuid>,
    hashes: Vec<Vec<u8>>,
    receipts: Vec<String>,
    sealed: Vec<Vec<u8>>,
}

/// The votes' columns, ballots encrypted (outside the raw ceilings' timed statements: the
/// database's share is what they measure).
fn columns<'a>(keys: &VoteKeys, votes: impl Iterator<Item = &'a VoteMessage>) -> Columns {
    let mut c = Columns {
        election_ids: Vec::new(),
        hashes: Vec::new(),
        receipts: Vec::new(),
        sealed: Vec::new(),
    };
    for v in votes {
        c.election_ids.push(v.election_id);
        c.hashes.push(v.token_hash.0.to_vec());
        c.receipts.push(v.receipt.to_string());
        c.sealed
            .push(keys.encrypt_ballot(&v.tenant, v.election_id, &v.choices));
    }
    c
}

/// The batch's work in the fewest separate statements, in one transaction.
async fn raw_statements(pool: &PgPool, all: &Columns, votes: &[VoteMessage]) -> usize {
    let tenant = &votes[0].tenant;
    let mut tx = shared::db::begin_for_tenant(pool, tenant)
        .await
        .expect("begin");
    let claimed: HashSet<Vec<u8>> = sqlx::query_scalar(
        "UPDATE elections.voting_tokens t SET used = true \
         FROM unnest($1::uuid[], $2::bytea[]) AS m(election_id, token_hash) \
         WHERE t.election_id = m.election_id AND t.token_hash = m.token_hash AND NOT t.used \
         RETURNING t.token_hash",
    )
    .bind(&all.election_ids)
    .bind(&all.hashes)
    .fetch_all(&mut *tx)
    .await
    .expect("claim")
    .into_iter()
    .collect();
    let mut recorded: Vec<usize> = (0..votes.len())
        .filter(|&i| claimed.contains(&votes[i].token_hash.0[..]))
        .collect();
    recorded.shuffle(&mut rand::thread_rng());
    let election_ids: Vec<Uuid> = recorded.iter().map(|&i| all.election_ids[i]).collect();
    let sealed: Vec<&[u8]> = recorded.iter().map(|&i| &all.sealed[i][..]).collect();
    sqlx::query(
        "INSERT INTO elections.ballot_box (org_id, election_id, sealed) \
         SELECT $1, m.election_id, m.sealed \
         FROM unnest($2::uuid[], $3::bytea[]) AS m(election_id, sealed)",
    )
    .bind(tenant.as_str())
    .bind(&election_ids)
    .bind(&sealed)
    .execute(&mut *tx)
    .await
    .expect("ballots");
    let statuses: Vec<&str> = votes
        .iter()
        .map(|v| {
            if claimed.contains(&v.token_hash.0[..]) {
                "recorded"
            } else {
                "rejected"
            }
        })
        .collect();
    let reasons: Vec<Option<&str>> = statuses
        .iter()
        .map(|s| (*s == "rejected").then_some("token_already_used"))
        .collect();
    sqlx::query(
        "INSERT INTO elections.receipts (receipt, org_id, election_id, status, reason) \
         SELECT m.receipt, $1, m.election_id, m.status, m.reason \
         FROM unnest($2::text[], $3::uuid[], $4::text[], $5::text[]) AS m(receipt, election_id, status, reason) \
         ON CONFLICT (receipt) DO UPDATE SET status = excluded.status, reason = excluded.reason \
         WHERE elections.receipts.status <> 'recorded'",
    )
    .bind(tenant.as_str())
    .bind(&all.receipts)
    .bind(&all.election_ids)
    .bind(&statuses)
    .bind(&reasons)
    .execute(&mut *tx)
    .await
    .expect("receipts");
    tx.commit().await.expect("commit");
    claimed.len()
}

/// The batch's work in one statement: one round trip, its own transaction.
async fn raw_one_statement(tenant_pool: &PgPool, c: &Columns) -> usize {
    let recorded: i64 = sqlx::query_scalar(
        "WITH m AS ( \
           SELECT * FROM unnest($2::uuid[], $3::bytea[], $4::text[], $5::bytea[]) \
             AS m(election_id, token_hash, receipt, sealed) \
         ), claimed AS ( \
           UPDATE elections.voting_tokens t SET used = true FROM m \
           WHERE t.election_id = m.election_id AND t.token_hash = m.token_hash AND NOT t.used \
           RETURNING t.election_id, t.token_hash \
         ), ballots AS ( \
           INSERT INTO elections.ballot_box (org_id, election_id, sealed) \
           SELECT $1, m.election_id, m.sealed FROM m \
           JOIN claimed c ON c.election_id = m.election_id AND c.token_hash = m.token_hash \
         ), receipts AS ( \
           INSERT INTO elections.receipts (receipt, org_id, election_id, status, reason) \
           SELECT m.receipt, $1, m.election_id, \
                  CASE WHEN c.token_hash IS NULL THEN 'rejected' ELSE 'recorded' END, \
                  CASE WHEN c.token_hash IS NULL THEN 'token_already_used' END \
           FROM m LEFT JOIN claimed c \
             ON c.election_id = m.election_id AND c.token_hash = m.token_hash \
           ON CONFLICT (receipt) DO UPDATE SET status = excluded.status, reason = excluded.reason \
           WHERE elections.receipts.status <> 'recorded' \
         ) \
         SELECT count(*) FROM claimed",
    )
    .bind(TENANT)
    .bind(&c.election_ids)
    .bind(&c.hashes)
    .bind(&c.receipts)
    .bind(&c.sealed)
    .fetch_one(tenant_pool)
    .await
    .expect("one-statement batch");
    usize::try_from(recorded).unwrap_or(0)
}

#[derive(Debug, Clone, Copy)]
enum SingleWriter {
    DirectMode,
    RawOneStatement,
}

impl SingleWriter {
    fn name(self) -> &'static str {
        match self {
            Self::DirectMode => "direct_mode",
            Self::RawOneStatement => "raw_one_statement",
        }
    }

    /// Commits each vote in its own transaction, one after the other; returns how many were
    /// recorded.
    async fn write(
        self,
        keys: std::sync::Arc<VoteKeys>,
        ingest: PgPool,
        tenant_pool: PgPool,
        votes: Vec<VoteMessage>,
    ) -> usize {
        let mut recorded = 0;
        for vote in &votes {
            // Encrypting the ballot is part of direct mode's work, so it is timed.
            let sealed = keys.encrypt_ballot(&vote.tenant, vote.election_id, &vote.choices);
            let ok = match self {
                Self::DirectMode => matches!(
                    ingest::ballot_box::record(
                        &ingest,
                        DirectVote {
                            tenant: &vote.tenant,
                            election_id: vote.election_id,
                            token_hash: vote.token_hash,
                            receipt: &vote.receipt,
                            sealed_ballot: &sealed,
                            replayable: false,
                        },
                    )
                    .await,
                    Ok(DirectOutcome::Recorded)
                ),
                Self::RawOneStatement => raw_single(&tenant_pool, vote, &sealed).await,
            };
            recorded += usize::from(ok);
        }
        recorded
    }
}

/// Direct mode's effect in one autocommit statement: claim the token if the election is open,
/// insert the ballot, record the receipt.
async fn raw_single(tenant_pool: &PgPool, vote: &VoteMessage, sealed: &[u8]) -> bool {
    let result = sqlx::query(
        "WITH claimed AS ( \
           UPDATE elections.voting_tokens t SET used = true \
           WHERE t.election_id = $2 AND t.token_hash = $3 AND NOT t.used \
             AND EXISTS (SELECT 1 FROM elections.elections e WHERE e.id = $2 AND e.status = 'open' \
                         AND (e.opens_at IS NULL OR e.opens_at <= now()) \
                         AND (e.closes_at IS NULL OR e.closes_at > now())) \
           RETURNING t.election_id \
         ), ballot AS ( \
           INSERT INTO elections.ballot_box (org_id, election_id, sealed) \
           SELECT $1, election_id, $4 FROM claimed \
         ) \
         INSERT INTO elections.receipts (receipt, org_id, election_id, status, reason) \
         SELECT $5, $1, election_id, 'recorded', NULL FROM claimed \
         ON CONFLICT (receipt) DO UPDATE SET status = 'recorded', reason = NULL",
    )
    .bind(TENANT)
    .bind(vote.election_id)
    .bind(&vote.token_hash.0[..])
    .bind(sealed)
    .bind(vote.receipt.as_str())
    .execute(tenant_pool)
    .await
    .expect("one-statement vote");
    result.rows_affected() == 1
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn batches(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("batch_commit");
    group.sample_size(10);
    for conns in CONNECTIONS {
        for size in BATCH_SIZES {
            for writer in [
                BatchWriter::Worker,
                BatchWriter::RawStatements,
                BatchWriter::RawOneStatement,
            ] {
                group.throughput(Throughput::Elements((conns * size) as u64));
                let mut fixture: Option<Fixture> = None;
                group.bench_function(
                    BenchmarkId::new(format!("{}/{conns}conn", writer.name()), size),
                    |b| {
                        let fx = &*fixture.get_or_insert_with(|| rt.block_on(Fixture::new()));
                        b.to_async(&rt).iter_custom(|iters| async move {
                            let mut elapsed = Duration::ZERO;
                            for _ in 0..iters {
                                let votes = fx.votes(conns * size).await;
                                let (took, recorded) =
                                    concurrently(votes, conns, size, |set| {
                                        let (keys, worker, tenant_pool) = (
                                            fx.keys.clone(),
                                            fx.worker.clone(),
                                            fx.worker_tenant.clone(),
                                        );
                                        async move {
                                            writer.write(&keys, worker, tenant_pool, set).await
                                        }
                                    })
                                    .await;
                                elapsed += took;
                                assert_eq!(recorded, conns * size, "every fresh vote is recorded");
                            }
                            elapsed
                        });
                    },
                );
                if let Some(fx) = fixture.take() {
                    rt.block_on(fx.drop_database());
                }
            }
        }
    }
    group.finish();
}

/// Splits `votes` into `conns` sets of `per_conn` and writes them concurrently, one task per
/// set (so one connection each); returns the time from the first start to the last end (the
/// split is not timed) and how many votes were recorded.
async fn concurrently<W, F>(
    mut votes: Vec<VoteMessage>,
    conns: usize,
    per_conn: usize,
    write: W,
) -> (Duration, usize)
where
    W: Fn(Vec<VoteMessage>) -> F,
    F: std::future::Future<Output = usize> + Send + 'static,
{
    let sets: Vec<Vec<VoteMessage>> = (0..conns)
        .map(|_| votes.split_off(votes.len() - per_conn))
        .collect();
    let start = Instant::now();
    let tasks: Vec<_> = sets
        .into_iter()
        .map(|set| tokio::spawn(write(set)))
        .collect();
    let mut recorded = 0;
    for task in tasks {
        recorded += task.await.expect("writer task");
    }
    (start.elapsed(), recorded)
}

fn single_votes(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("single_vote");
    group.sample_size(10);
    for conns in CONNECTIONS {
        for writer in [SingleWriter::DirectMode, SingleWriter::RawOneStatement] {
            let per_iteration = conns * SINGLE_VOTES_PER_CONNECTION;
            group.throughput(Throughput::Elements(per_iteration as u64));
            let mut fixture: Option<Fixture> = None;
            group.bench_function(format!("{}/{conns}conn", writer.name()), |b| {
                let fx = &*fixture.get_or_insert_with(|| rt.block_on(Fixture::new()));
                b.to_async(&rt).iter_custom(|iters| async move {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        let votes = fx.votes(per_iteration).await;
                        let (took, recorded) =
                            concurrently(votes, conns, SINGLE_VOTES_PER_CONNECTION, |set| {
                                // The raw ceiling on the worker's login: ingest's may write
                                // only through direct mode's function.
                                writer.write(
                                    fx.keys.clone(),
                                    fx.ingest.clone(),
                                    fx.worker_tenant.clone(),
                                    set,
                                )
                            })
                            .await;
                        elapsed += took;
                        assert_eq!(recorded, per_iteration, "every fresh vote is recorded");
                    }
                    elapsed
                });
            });
            if let Some(fx) = fixture.take() {
                rt.block_on(fx.drop_database());
            }
        }
    }
    group.finish();
}

criterion_group!(benches, batches, single_votes);
criterion_main!(benches);
