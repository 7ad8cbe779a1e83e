//! The web pages in a real browser: Debian's headless Chromium driven through chromedriver
//! (WebDriver, `fantoccini`) against every service started in this process on a fresh
//! database and topic (`support`). What a voter and the chair see and do: log in, vote, watch
//! `queued` turn into `recorded`; ingest answering 503 twice and the page retrying by itself; a
//! closed election; the chair creating, opening and closing an election and reading the final
//! tally; a member without the role being refused by the API and told so by the page.
//!
//! Chromium is installed with apt-get when missing. If it cannot be installed the tests say so
//! and pass without running, except under CI (`CI` set), where that is a failure.
//! `UPDATE_SCREENSHOTS=1` writes the pages' screenshots to docs/img/.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use loadtest::target::{metric, Target};
use serde_json::json;
use testkit::{eventually, eventually_every};
use tokio::sync::OnceCell;

use crate::support;

// The OIDC driver members-fn's tests use (the local provider's settings and discovery).
use testkit::oidc_provider as provider;

use crate::oidc_proxy;

const PATIENCE: Duration = Duration::from_secs(30);

/// chromedriver's path, installing Debian's packages once if they are missing; `None` (with
/// the reason printed) when they cannot be installed outside CI.
async fn chromedriver() -> Option<&'static str> {
    static FOUND: OnceCell<Option<&'static str>> = OnceCell::const_new();
    *FOUND
        .get_or_init(|| async {
            const DRIVER: &str = "/usr/bin/chromedriver";
            let present = || {
                std::path::Path::new(DRIVER).exists()
                    && std::path::Path::new("/usr/bin/chromium").exists()
            };
            if !present() {
                let started = Instant::now();
                eprintln!("installing chromium and chromium-driver with apt-get…");
                let install = tokio::process::Command::new("sh")
                    .args([
                        "-c",
                        "export DEBIAN_FRONTEND=noninteractive; \
                         apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
                         { apt-get update -q >/dev/null 2>&1 && \
                           apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }",
                    ])
                    .status()
                    .await;
                eprintln!(
                    "apt-get: {install:?} after {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
            if present() {
                return Some(DRIVER);
            }
            let why = "SKIPPED: Chromium and chromedriver are not installed and apt-get could not \
                       install them (packages chromium, chromium-driver)";
            assert!(
                std::env::var_os("CI").is_none(),
                "{why}; CI must run these tests"
            );
            eprintln!("{why}");
            None
        })
        .await
}

/// A headless Chromium with its own chromedriver; both end when this is dropped.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
}

impl Browser {
    async fn start() -> Option<Self> {
        Self::start_via(None).await
    }

    /// With `proxy`, every request of the browser goes through that HTTP proxy, loopback too.
    async fn start_via(proxy: Option<std::net::SocketAddr>) -> Option<Self> {
        let driver_path = chromedriver().await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = tokio::process::Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let mut caps = serde_json::Map::new();
        // A phone-sized window: the pages must work there.
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=412,860".into(),
        ];
        if let Some(proxy) = proxy {
            args.push(format!("--proxy-server=http://{proxy}"));
            // Chromium never proxies loopback unless told to.
            args.push("--proxy-bypass-list=<-loopback>".into());
        }
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": "/usr/bin/chromium", "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = eventually(PATIENCE, || async {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
        })
        .await
        .unwrap_or_else(|e| panic!("chromedriver: {e}"));
        Some(Self {
            client,
            _driver: driver,
        })
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("page loads");
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    /// Clicks once the element is there and can be clicked (a page shows sections only after
    /// its calls answer).
    async fn click(&self, css: &str) {
        eventually(PATIENCE, || async { self.find(css).await.click().await })
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.find(css).await.send_keys(text).await.expect(css);
    }

    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the element's text contains `want`; returns it.
    async fn wait_text(&self, css: &str, want: &str) -> String {
        eventually(PATIENCE, || async {
            let text = self.text(css).await;
            if text.contains(want) {
                Ok(text)
            } else {
                Err(format!("it says {text:?}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{css} never said {want:?}: {e}"))
    }

    /// Dev login as `national_id` on the page at `url`.
    async fn log_in(&self, url: &str, national_id: &str) {
        self.goto(url).await;
        self.type_into("#national-id", national_id).await;
        self.click("#login-button").await;
    }

    /// A screenshot, into docs/img/ with `UPDATE_SCREENSHOTS=1`, else beside the build.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/img")
        } else {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        };
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        std::fs::write(dir.join(name), png).expect("screenshot written");
    }
}

fn voter(n: u32) -> String {
    members_fn::national_id::synthetic(n).as_str().to_owned()
}

fn vote_page(stack: &support::Stack) -> String {
    format!("{}/pages/vote", stack.config.events_url)
}

/// Votes the first option of the only open election: log in, Vote, choose, cast.
async fn cast_first_option(browser: &Browser, stack: &support::Stack, voter_no: u32) {
    browser.log_in(&vote_page(stack), &voter(voter_no)).await;
    browser.click("#election-list button").await;
    browser.click("#opt-0").await;
    browser.click("#submit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_logs_in_votes_and_sees_queued_turn_into_recorded() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    // Queue mode: the page shows `queued` for at least the second before its first look-up.
    let stack = support::start_with_pages(2).await;
    let target = Target::new(stack.config.clone()).expect("target");
    let election = target
        .open_election("Adopt the budget?")
        .await
        .expect("open");

    cast_first_option(&browser, &stack, 1).await;
    let queued = browser.wait_text("#vote-status", "Queued").await;
    let receipt = browser.text("#receipt").await;
    assert!(receipt.starts_with("r1."), "{receipt:?} ({queued})");
    browser.wait_text("#vote-status", "Recorded").await;
    browser.screenshot("vote-page.png").await;
    assert_eq!(
        target.receipt(&receipt).await.expect("receipt").1,
        "recorded"
    );

    // A second visit: "already voted", and nothing about the choice.
    browser.goto("about:blank").await;
    browser.log_in(&vote_page(&stack), &voter(1)).await;
    let item = browser.wait_text("#election-list", "Already voted").await;
    for option in loadtest::OPTIONS {
        assert!(!item.to_lowercase().contains(option), "{item}");
    }
    assert!(
        browser
            .client
            .find_all(Locator::Css("#election-list button"))
            .await
            .expect("list")
            .is_empty(),
        "no Vote button on a second visit"
    );
    // Nothing was kept in the browser: a reload is logged out.
    browser.client.refresh().await.expect("reload");
    let storage = browser
        .client
        .execute(
            "return [localStorage.length, sessionStorage.length, document.cookie, location.href]",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(storage[0], 0, "{storage}");
    assert_eq!(storage[1], 0, "{storage}");
    assert_eq!(storage[2], "", "{storage}");
    assert!(!browser.text("#login").await.is_empty());
    assert_eq!(
        target
            .results_via_events(election)
            .await
            .expect("results")
            .total,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_logs_in_through_the_identity_provider_from_the_vote_page_and_votes() {
    let oidc = provider::Settings::from_env();
    let authorize = provider::discovery(&oidc.issuer).await["authorization_endpoint"]
        .as_str()
        .expect("an authorization endpoint")
        .to_owned();
    let redirect_uri = oidc.redirect_uri.clone();
    let stack = support::start_with_pages_and_login(2, oidc.members_env()).await;
    let proxy = oidc_proxy::start(
        &authorize,
        &voter(2),
        &redirect_uri,
        &stack.config.members_url,
    )
    .await;
    let Some(browser) = Browser::start_via(Some(proxy)).await else {
        return;
    };
    let target = Target::new(stack.config.clone()).expect("target");
    let election = target
        .open_election("Adopt the budget?")
        .await
        .expect("open");

    // From the page to members-fn, the provider, members-fn again and back to the page.
    browser.goto(&vote_page(&stack)).await;
    browser.click("#oidc-login").await;
    browser.click("#election-list button").await;
    // The session came in the fragment and is gone from the URL and the history entry.
    let url = browser.client.current_url().await.expect("url");
    assert_eq!(url.as_str(), vote_page(&stack), "{url}");
    let kept = browser
        .client
        .execute(
            "return [location.hash, localStorage.length, sessionStorage.length, document.cookie]",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(kept, json!(["", 0, 0, ""]));

    browser.click("#opt-0").await;
    browser.click("#submit").await;
    browser.wait_text("#vote-status", "Recorded").await;
    let receipt = browser.text("#receipt").await;
    assert_eq!(
        target.receipt(&receipt).await.expect("receipt").1,
        "recorded"
    );
    // The vote is voter 2's: their token was issued (and nobody else's).
    let issued: Vec<String> = sqlx::query_scalar(
        "SELECT m.national_id FROM events.token_issuance t \
         JOIN members.members m ON m.id = t.member_id WHERE t.election_id = $1",
    )
    .bind(election)
    .fetch_all(&stack.db.owner)
    .await
    .expect("issuance");
    assert_eq!(issued, vec![voter(2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ingest_answering_503_twice_the_page_retries_and_the_vote_counts_once() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let stack = support::start_with_pages(2).await;
    let target = Target::new(stack.config.clone()).expect("target");
    let election = target
        .open_election("Adopt the budget?")
        .await
        .expect("open");
    // Direct mode, where a vote whose token row is locked is told 503 + Retry-After (`busy`).
    target.set_queue_mode(false).await.expect("flag off");
    eventually(PATIENCE, || async {
        let following: Option<bool> =
            sqlx::query_scalar("SELECT bool_and(queue_mode = false) FROM ops.ingest_ledger")
                .fetch_one(&stack.db.owner)
                .await
                .expect("ledger");
        following == Some(true)
    })
    .await
    .expect("ingest follows the flag");

    browser.log_in(&vote_page(&stack), &voter(1)).await;
    browser.click("#election-list button").await;
    browser.click("#opt-0").await;
    // The fault: every token of the election locked by another transaction.
    let mut lock = stack.db.owner.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM elections.voting_tokens WHERE election_id = $1 FOR UPDATE")
        .bind(election)
        .execute(&mut *lock)
        .await
        .expect("lock the tokens");
    browser.click("#submit").await;

    // Released once ingest has answered 503 twice; the voter does nothing meanwhile.
    let busy = || async {
        let text = target
            .metrics_text(Some(stack.config.elections_url.as_str()))
            .await
            .unwrap_or_default();
        metric(&text, "votes_total", "outcome=\"busy\"").unwrap_or(0.0)
    };
    // Polled often: the lock must be released soon after the second 503, before a third.
    eventually_every(PATIENCE, Duration::from_millis(20), || async {
        busy().await >= 2.0
    })
    .await
    .expect("ingest answers 503 twice");
    let retrying = browser.text("#vote-status").await;
    lock.rollback().await.expect("release");
    browser.wait_text("#vote-status", "Recorded").await;
    assert!(retrying.contains("attempt"), "the page said {retrying:?}");
    assert_eq!(busy().await, 2.0, "exactly two 503s");

    let used: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM elections.voting_tokens WHERE election_id = $1 AND used",
    )
    .bind(election)
    .fetch_one(&stack.db.owner)
    .await
    .expect("count");
    assert_eq!(used, 1, "counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_election_closed_the_page_says_so() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let stack = support::start_with_pages(2).await;
    let target = Target::new(stack.config.clone()).expect("target");
    let election = target
        .open_election("Adopt the budget?")
        .await
        .expect("open");
    browser.log_in(&vote_page(&stack), &voter(1)).await;
    browser.click("#election-list button").await;
    browser.click("#opt-0").await;
    // The chair closes the election while the voter is choosing.
    target.close_election(election).await.expect("close");
    browser.click("#submit").await;
    browser.wait_text("#vote-status", "closed").await;
    browser.click("#done").await;
    browser
        .wait_text("#elections-status", "No election is open")
        .await;
}

fn console_page(stack: &support::Stack) -> String {
    format!("{}/pages/console", stack.config.events_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chair_creates_opens_and_closes_an_election_and_sees_the_final_tally() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let stack = support::start_with_pages(1).await;
    let target = Target::new(stack.config.clone()).expect("target");
    browser
        .log_in(&console_page(&stack), &stack.config.admin_national_id)
        .await;
    browser.click("#create summary").await;
    browser.type_into("#new-title", "Annual meeting").await;
    browser
        .type_into("#new-question", "Adopt the budget?")
        .await;
    browser.click("#create-button").await;
    browser.wait_text("#election-rows", "draft").await;
    browser
        .click("#election-rows button[data-action=open]")
        .await;
    browser
        .wait_text("#election-rows", "Turnout so far: 0")
        .await;

    // A member votes (through the API: the voter's page has tests of its own).
    let row = browser.find("#election-rows tr").await;
    let election: uuid::Uuid = row
        .attr("data-election")
        .await
        .expect("attribute")
        .expect("election id")
        .parse()
        .expect("uuid");
    let token = target
        .bulk_tokens(election, 1)
        .await
        .expect("token")
        .remove(0);
    let answer = target
        .http()
        .post(format!(
            "{}/v1/elections/{election}/ballots",
            stack.config.ingest_url
        ))
        .bearer_auth(token)
        .json(&json!({"choices": ["o1"]}))
        .send()
        .await
        .expect("vote");
    assert_eq!(answer.status(), 202);
    browser
        .wait_text("#election-rows", "Turnout so far: 1")
        .await;
    assert!(
        !browser.text("#election-rows").await.contains("Yes: "),
        "no tally while open"
    );

    browser
        .click("#election-rows button[data-action=close]")
        .await;
    let results = browser.wait_text("#election-rows", "FINAL").await;
    assert!(results.contains("Yes: 1"), "{results}");
    assert!(
        results.contains("No: 0") || !results.contains("No:"),
        "{results}"
    );
    browser.screenshot("console-page.png").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_operator_flips_the_flag_with_a_confirmation_and_sees_it_audited() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let stack = support::start_with_pages(1).await;
    browser
        .log_in(&console_page(&stack), &stack.config.ops_national_id)
        .await;
    browser.wait_text("#flag", "Queue mode is ON").await;
    browser.wait_text("#counters", "ingest").await;
    browser.click("#flip").await;
    browser.wait_text("#confirm-text", "direct mode").await;
    browser.click("#confirm-yes").await;
    browser.wait_text("#flag", "Queue mode is OFF").await;
    let history = browser.wait_text("#history", "→ off").await;
    assert!(history.contains("member:"), "{history}");
    // The admin part is refused by the server to the platform's operator (no admin role).
    browser.wait_text("#admin-status", "Not allowed").await;
}

/// A counter of the console's vote path (`[data-counter=NAME] b`) as a number, once it is one.
async fn console_counter(browser: &Browser, name: &str) -> Option<i64> {
    browser
        .text(&format!("#vote-path [data-counter=\"{name}\"] b"))
        .await
        .trim()
        .parse()
        .ok()
}

/// Waits until `ok` holds for the console's counter `name`; returns its value.
async fn wait_counter(browser: &Browser, name: &str, ok: impl Fn(i64) -> bool) -> i64 {
    let waited = eventually(PATIENCE, || async {
        let value = console_counter(browser, name).await;
        value
            .filter(|v| ok(*v))
            .ok_or_else(|| format!("it shows {value:?}"))
    })
    .await;
    match waited {
        Ok(value) => value,
        Err(e) => panic!(
            "the console's {name} never got there: {e} ({})",
            browser.text("#vote-path").await
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ops_user_flips_the_flag_and_sees_the_counters_move_while_the_load_generator_casts_votes(
) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let stack = support::start_with_pages(1).await;
    let target = Target::new(stack.config.clone()).expect("target");
    let election = target
        .open_election("Adopt the budget?")
        .await
        .expect("open");
    browser
        .log_in(&console_page(&stack), &stack.config.ops_national_id)
        .await;
    browser.wait_text("#flag", "Queue mode is ON").await;
    browser.wait_text("#ingest-modes", "1 in queue mode").await;
    browser.wait_text("#counters", "worker").await;
    assert_eq!(wait_counter(&browser, "accepted", |v| v == 0).await, 0);
    assert_eq!(wait_counter(&browser, "recorded", |v| v == 0).await, 0);
    let counters = browser.text("#counters").await;
    assert!(!counters.contains("NOT READY"), "{counters}");

    // The load generator's own engine: 400 votes at 80/s, open loop, in the background.
    const VOTES: usize = 400;
    let tokens = target.bulk_tokens(election, VOTES).await.expect("tokens");
    let schedule = loadtest::schedule::Schedule::parse("constant:80:5").expect("schedule");
    let offsets = schedule.offsets();
    assert_eq!(offsets.len(), VOTES);
    let shot = std::sync::Arc::new(loadtest::fire::Votes::new(
        &stack.config.ingest_url,
        election,
        tokens,
    ));
    let load = tokio::spawn(async move {
        loadtest::fire::fire(
            &loadtest::fire::voter_client(),
            shot,
            &offsets,
            &loadtest::fire::RetryPolicy::default(),
            64,
            tokio::time::Instant::now(),
            &indicatif::ProgressBar::hidden(),
        )
        .await
    });

    // The counters rise while the votes arrive (queue mode: the ledger, then the ballot box).
    let accepted = wait_counter(&browser, "accepted", |v| v > 0).await;
    let recorded = wait_counter(&browser, "recorded", |v| v > 0).await;
    wait_counter(&browser, "accepted", |v| v > accepted).await;
    wait_counter(&browser, "recorded", |v| v > recorded).await;
    let row = browser.text("#live-elections").await;
    assert!(row.contains(&election.to_string()[..8]), "{row}");

    // The flip, through the page: the flag and then every ingest's mode say direct mode.
    browser.click("#flip").await;
    browser.wait_text("#confirm-text", "direct mode").await;
    browser.click("#confirm-yes").await;
    browser.wait_text("#flag", "Queue mode is OFF").await;
    browser.wait_text("#ingest-modes", "1 in direct mode").await;

    // Every vote answered; the console ends on the generator's own count: every queued vote
    // in the ledger, every accepted vote (both modes) in the ballot box, none undecided.
    let answers = load.await.expect("the load ran");
    let queued = answers.iter().filter(|a| a.status == 202).count() as i64;
    let direct = answers.iter().filter(|a| a.status == 201).count() as i64;
    assert_eq!(
        (queued + direct) as usize,
        VOTES,
        "every vote was accepted: {:?}",
        answers
            .iter()
            .filter(|a| !a.ok())
            .map(|a| (a.status, a.problem.clone()))
            .collect::<Vec<_>>()
    );
    wait_counter(&browser, "recorded", |v| v == queued + direct).await;
    wait_counter(&browser, "accepted", |v| v == queued).await;
    wait_counter(&browser, "undecided", |v| v == 0).await;
    let path = browser.text("#vote-path").await;
    assert!(path.contains("dead letters"), "{path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_the_roles_is_refused_by_the_api_and_told_so_by_the_console() {
    let stack = support::start_with_pages(1).await;
    // The API decides, whatever a page shows: a member and a tenant admin are refused the
    // operators' live view; a member is refused election administration.
    let member = loadtest::ops::dev_login(&stack.config.members_url, &voter(1))
        .await
        .expect("login");
    let admin =
        loadtest::ops::dev_login(&stack.config.members_url, &stack.config.admin_national_id)
            .await
            .expect("login");
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let events = &stack.config.events_url;
    for session in [&member, &admin] {
        let live = http
            .get(format!("{events}/v1/ops/live"))
            .bearer_auth(session)
            .send()
            .await
            .expect("live");
        assert_eq!(live.status(), 403);
    }
    let create = http
        .post(format!("{events}/v1/elections"))
        .bearer_auth(&member)
        .json(&json!({"title": "t", "question": "q", "kind": "single",
            "options": [{"id": "a", "label": "A"}], "max_choices": 1,
            "opens_at": null, "closes_at": null}))
        .send()
        .await
        .expect("create");
    assert_eq!(create.status(), 403);

    let Some(browser) = Browser::start().await else {
        return;
    };
    browser.log_in(&console_page(&stack), &voter(1)).await;
    browser.wait_text("#admin-status", "Not allowed").await;
    browser.wait_text("#ops-status", "Not allowed").await;
    for hidden in ["#admin-actions", "#ops-actions"] {
        assert!(!browser
            .find(hidden)
            .await
            .is_displayed()
            .await
            .expect("displayed"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_pages_origin_may_call_members_fn_and_ingest_from_a_browser() {
    let stack = support::start_with_pages(1).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let page = stack.config.events_url.clone();
    for (base, path) in [
        (&stack.config.members_url, "/v1/auth/dev-login"),
        (&stack.config.ingest_url, "/v1/receipts:lookup"),
    ] {
        for (origin, allowed) in [(page.as_str(), true), ("http://evil.example", false)] {
            let preflight = http
                .request(reqwest::Method::OPTIONS, format!("{base}{path}"))
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "POST")
                .header("Access-Control-Request-Headers", "content-type")
                .send()
                .await
                .expect("preflight");
            let allow = preflight
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            assert_eq!(
                allow.as_deref() == Some(origin),
                allowed,
                "{base}{path} {origin}"
            );
            assert!(preflight
                .headers()
                .get("access-control-allow-credentials")
                .is_none());
        }
    }
    // The page reads Retry-After cross-origin, so ingest exposes it.
    let refused = http
        .post(format!("{}/v1/receipts:lookup", stack.config.ingest_url))
        .header("Origin", &page)
        .json(&json!({"receipt": "r1.nonsense"}))
        .send()
        .await
        .expect("lookup");
    assert_eq!(
        refused.headers()["access-control-expose-headers"],
        "retry-after"
    );
    // The pages come with a policy that allows scripts from events-svc only and calls to the
    // two services they need.
    let html = http
        .get(format!("{page}/pages/vote"))
        .send()
        .await
        .expect("page");
    let csp = html.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains(&stack.config.ingest_url), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
}
