//! A worker SIGKILLed mid-drain (docs/emulator.md has the emulator's quirks this works around).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use testkit::elections::{accepted_receipt, Stack, StackOptions, TENANT};
use testkit::{database_addr, eventually, eventually_every, Role, TcpProxy};
use uuid::Uuid;

use crate::support::WorkerProcess;

/// A worker process that reaches Pub/Sub and the database only through proxies the test
/// controls, so the test can stall its database, cut it off from Pub/Sub and kill it when it
/// chooses. One stream, batches of 20 committed one at a time: it leases a whole round at once
/// (the emulator sends a stream 100 messages every 50 ms whatever its flow control) and is
/// still committing when it dies.
struct DoomedWorker {
    process: WorkerProcess,
    pubsub_link: TcpProxy,
    database_link: TcpProxy,
}

impl DoomedWorker {
    async fn spawn(stack: &Stack, subscription: &str, emulator: SocketAddr) -> Self {
        let pubsub_link = TcpProxy::start(emulator).await;
        let database_link = TcpProxy::start(database_addr().await).await;
        let pubsub_host = pubsub_link.addr.to_string();
        let database_url = stack.db.url_via(Role::Worker, database_link.addr);
        let process = WorkerProcess::spawn(
            stack,
            &[
                ("PUBSUB_EMULATOR_HOST", &pubsub_host),
                ("DATABASE_URL", &database_url),
                ("PUBSUB_SUBSCRIPTION", subscription),
                ("STREAMS", "1"),
                ("BATCH_SIZE", "20"),
                ("WRITERS", "1"),
                ("LEASE_EXTENSION_SECS", "10"),
            ],
        );
        Self {
            process,
            pubsub_link,
            database_link,
        }
    }

    /// Its database goes silent mid-batch; Pub/Sub still hears it.
    fn stall_database(&self) {
        self.database_link.freeze();
    }

    /// From now on none of its acks or lease extensions reach Pub/Sub; the emulator sees a client
    /// that went silent (a hung instance, a partition), not a closed stream.
    fn cut_off_pubsub(&self) {
        self.pubsub_link.freeze();
    }

    /// The stalled connection closes (the database rolls its transaction back unless the COMMIT
    /// had arrived) and the worker may connect again.
    fn reconnect_database(&self) {
        self.database_link.down();
        self.database_link.up();
    }

    /// SIGKILL, and its database connections cut.
    fn kill(&mut self) {
        self.process.kill();
        self.database_link.down();
    }

    /// Closes its frozen Pub/Sub connection; call once its subscription is deleted, so the
    /// emulator keeps no sender for it.
    fn disconnect(self) {
        self.pubsub_link.down();
    }
}

/// Receipts decided for `election`.
async fn decided(stack: &Stack, election: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM elections.receipts WHERE election_id = $1")
        .bind(election)
        .fetch_one(&stack.db.owner)
        .await
        .unwrap()
}

/// [`decided`] once no worker has a session in the database any more: a COMMIT sent just
/// before a kill has then landed or been rolled back, so the count is final.
async fn settled_count(stack: &Stack, election: Uuid) -> i64 {
    eventually(Duration::from_secs(30), || async {
        let sessions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
        )
        .bind(&stack.db.name)
        .bind(Role::Worker.login())
        .fetch_one(&stack.db.owner)
        .await
        .unwrap();
        sessions == 0
    })
    .await
    .expect("the killed worker's sessions ended");
    decided(stack, election).await
}

/// A worker SIGKILLed mid-drain, after committing part of what it leased and before acking all
/// of it: nothing is lost, nothing counts twice, and what it leased reaches the next worker
/// through Pub/Sub redelivery. Three rounds, each on its own subscription. Each round has both
/// crash windows: a transaction in flight while acks flow, and commits whose acks never arrive.
#[tokio::test]
async fn worker_killed_mid_drain_loses_and_doubles_nothing() {
    let stack = Stack::start(StackOptions::default()).await;
    let election = stack.open_election(TENANT, "single", 4, 1).await;
    let per_round = 400;
    let rounds = 3;
    let tokens = stack.tokens(TENANT, election, per_round * rounds).await;
    let mut receipts = Vec::new();
    let admin = shared::pubsub::subscription_admin(&stack.pubsub.settings)
        .await
        .unwrap();
    let emulator = stack.emulator_addr().await;
    for round in 0..rounds {
        // A fresh subscription per round, so no stream of an earlier round is attached to it. No
        // retry policy: the emulator does not redeliver a message whose lease expired twice on a
        // subscription with one (docs/emulator.md); the redelivery proven here is the lease's.
        let subscription = format!("{}-r{round}", stack.pubsub.settings.subscription);
        let subscription_path = format!(
            "projects/{}/subscriptions/{subscription}",
            stack.pubsub.settings.project
        );
        admin
            .create_subscription()
            .set_name(&subscription_path)
            .set_topic(stack.pubsub.settings.topic_path())
            .set_ack_deadline_seconds(30)
            .send()
            .await
            .unwrap();
        let round_tokens = &tokens[round * per_round..(round + 1) * per_round];
        for chunk in round_tokens.chunks(50) {
            let answers =
                futures::future::join_all(chunk.iter().map(|t| stack.vote(election, t, &["o2"])))
                    .await;
            for a in answers {
                receipts.push(accepted_receipt(a, 202).await);
            }
        }

        let before = decided(&stack, election).await;
        let mut doomed = DoomedWorker::spawn(&stack, &subscription, emulator).await;
        eventually_every(
            Duration::from_secs(30),
            Duration::from_millis(10),
            || async { decided(&stack, election).await >= before + 100 },
        )
        .await
        .expect("the doomed worker commits its first 100 votes");
        // 1. Its database stalls mid-batch while Pub/Sub still hears it. This pause is the
        //    behaviour under test: the client flushes acks every 100 ms, so in 500 ms it acks
        //    everything committed, and a worker that acked a batch before committing it would
        //    lose that batch here.
        doomed.stall_database();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // 2. Cut it off from Pub/Sub.
        doomed.cut_off_pubsub();
        let cut_off = decided(&stack, election).await;
        // 3. It reconnects and commits more of what it holds: those votes are committed and
        //    certainly never acked, so they must come back and count once.
        doomed.reconnect_database();
        eventually_every(
            Duration::from_secs(20),
            Duration::from_millis(5),
            || async { decided(&stack, election).await > cut_off },
        )
        .await
        .expect("the doomed worker commits after it was cut off");
        // 4. Crash.
        doomed.kill();
        let at_kill = settled_count(&stack, election).await;
        let unacked = at_kill - cut_off;
        assert!(
            cut_off >= before + 100 && unacked > 0 && at_kill < before + per_round as i64,
            "round {round}: the kill was not mid-drain \
             (before {before}, cut off at {cut_off}, killed at {at_kill})"
        );

        // The next worker gets, through redelivery after the 10 s lease, every vote the doomed
        // one leased: it records exactly the ones not committed, and sees the committed but
        // unacked ones as duplicates. No stalled worker is replaced: a replacement's abandoned
        // streams would take redeliveries away from the live one (docs/emulator.md).
        let started = Instant::now();
        let mut next = WorkerProcess::spawn(&stack, &[("PUBSUB_SUBSCRIPTION", &subscription)]);
        let to_record = before + per_round as i64 - at_kill;
        // Each redelivery may go in part to the frozen stream, which the emulator still serves,
        // and come back one lease later: usually done in 10 to 30 s, but the bound is generous.
        // More recorded than to record ends the wait too: the assertions below say what is wrong.
        let counts = || async { (next.votes("recorded").await, next.votes("duplicate").await) };
        let waited = eventually_every(
            Duration::from_secs(180),
            Duration::from_millis(250),
            || async {
                let (recorded, duplicates) = counts().await;
                let done = (recorded >= to_record && duplicates >= unacked) || recorded > to_record;
                done.then_some((recorded, duplicates))
            },
        )
        .await;
        let (recorded, duplicates) = match waited {
            Ok(counts) => counts,
            Err(_) => counts().await,
        };
        eprintln!(
            "round {round}: the killed worker committed {} votes ({unacked} after it was cut \
             off, never acked); the next worker recorded {recorded} and ignored {duplicates} \
             redelivered duplicates within {:.1} s",
            at_kill - before,
            started.elapsed().as_secs_f64()
        );
        assert_eq!(
            recorded, to_record,
            "round {round}: the next worker must record exactly the votes the killed one leased \
             and did not commit (fewer: votes lost; more: votes counted twice)"
        );
        assert!(
            duplicates >= unacked,
            "round {round}: every committed but unacked vote is redelivered \
             ({duplicates} duplicates, {unacked} unacked)"
        );
        let outcomes = stack.wait_decided(&receipts, Duration::from_secs(5)).await;
        assert!(
            outcomes.values().all(|s| s == "recorded"),
            "round {round}: every accepted vote recorded"
        );
        assert_eq!(
            stack.ballot_count(election).await,
            receipts.len() as i64,
            "round {round}: none twice"
        );
        // Graceful stop: SIGTERM drains and exits within its bound.
        let stopping = Instant::now();
        next.terminate();
        let status = next.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        assert!(stopping.elapsed() < Duration::from_secs(15));
        // Deleting the subscription ends the emulator's senders for it; then the frozen
        // connection can close without leaving one behind.
        admin
            .delete_subscription()
            .set_subscription(&subscription_path)
            .send()
            .await
            .unwrap();
        doomed.disconnect();
    }
    // Every worker is gone: nothing can change the count any more.
    assert_eq!(
        settled_count(&stack, election).await,
        (per_round * rounds) as i64
    );
    assert_eq!(
        stack.ballot_count(election).await,
        (per_round * rounds) as i64
    );
}
