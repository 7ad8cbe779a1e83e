//! The open-loop engine: every request is sent when the schedule says it is due, whatever
//! happened to the earlier ones, and its latency is measured from that *scheduled* instant, so
//! a stall shows up in every request it delayed (no coordinated omission). A 429 or 503 is
//! retried after its `Retry-After`, at most `max_retries` times, as a voter's client would; the
//! latency then covers every attempt, as the voter experiences it.

use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use reqwest::header::RETRY_AFTER;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Client retries after a 429/503 (honouring `Retry-After`) or a transport error.
    pub max_retries: u32,
    /// A longer `Retry-After` is shortened to this (a bound on the run's length).
    pub max_retry_after: Duration,
    /// Wait before retrying a transport error (no answer at all).
    pub transport_backoff: Duration,
    /// Bound on one attempt.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            max_retry_after: Duration::from_secs(5),
            transport_backoff: Duration::from_millis(250),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What the engine sends: request `i`, attempt `attempt` (from 1).
pub trait Shot: Send + Sync + 'static {
    fn request(&self, http: &reqwest::Client, i: usize, attempt: u32) -> reqwest::RequestBuilder;
    /// The field of a successful answer worth keeping (a receipt, a token).
    fn keep(&self) -> &'static str;
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub index: usize,
    /// When the request was due, from the start of the run.
    pub scheduled: Duration,
    /// When its final answer arrived, from the start of the run.
    pub done: Duration,
    /// `done - scheduled`: queueing in the client, every attempt and every retry wait.
    pub latency: Duration,
    /// The final HTTP status; 0 when no answer came (transport error or timeout).
    pub status: u16,
    pub attempts: u32,
    /// The statuses that were retried (0 = transport error).
    pub retried: Vec<u16>,
    /// The kept field of a successful answer. May be a secret (a voting token): never print it.
    pub kept: Option<String>,
    /// Why it failed: the problem type of a refusal, or the transport error's kind.
    pub problem: Option<String>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    }
}

/// Why a request failed: the last segment of its problem type, or `None` for a 2xx.
fn problem_of(status: u16, body: &Value) -> Option<String> {
    if (200..300).contains(&status) {
        return None;
    }
    Some(
        body["type"]
            .as_str()
            .and_then(|t| t.rsplit('/').next())
            .unwrap_or("no-problem-body")
            .to_owned(),
    )
}

async fn send_one<S: Shot>(
    http: &reqwest::Client,
    shot: &S,
    index: usize,
    due: Instant,
    start: Instant,
    policy: &RetryPolicy,
) -> Answer {
    let mut attempts = 0;
    let mut retried = Vec::new();
    loop {
        attempts += 1;
        let may_retry = attempts <= policy.max_retries;
        let sent = shot
            .request(http, index, attempts)
            .timeout(policy.request_timeout)
            .send()
            .await;
        let (status, kept, problem) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let wait = retry_after(&response);
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if (status == 429 || status == 503) && may_retry {
                    retried.push(status);
                    tokio::time::sleep(
                        wait.unwrap_or(Duration::from_secs(1))
                            .min(policy.max_retry_after),
                    )
                    .await;
                    continue;
                }
                let kept = body[shot.keep()].as_str().map(str::to_owned);
                (status, kept, problem_of(status, &body))
            }
            Err(e) => {
                if may_retry {
                    retried.push(0);
                    tokio::time::sleep(policy.transport_backoff).await;
                    continue;
                }
                (0, None, Some(transport_kind(&e).to_owned()))
            }
        };
        let now = Instant::now();
        return Answer {
            index,
            scheduled: due - start,
            done: now - start,
            latency: now - due,
            status,
            attempts,
            retried,
            kept,
            problem,
        };
    }
}

/// Sends request `i` at `start + offsets[i]`; returns every answer, by index. At most
/// `max_in_flight` requests are open at once (a bound on sockets; a request held back by it
/// still counts its latency from when it was due).
pub async fn fire<S: Shot>(
    http: &reqwest::Client,
    shot: Arc<S>,
    offsets: &[Duration],
    policy: &RetryPolicy,
    max_in_flight: usize,
    start: Instant,
    bar: &ProgressBar,
) -> Vec<Answer> {
    let limit = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut set = JoinSet::new();
    for (index, offset) in offsets.iter().enumerate() {
        let due = start + *offset;
        tokio::time::sleep_until(due).await;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let (http, shot, policy, bar) = (http.clone(), shot.clone(), policy.clone(), bar.clone());
        set.spawn(async move {
            let answer = send_one(&http, &*shot, index, due, start, &policy).await;
            drop(permit);
            bar.inc(1);
            answer
        });
    }
    let mut answers = Vec::with_capacity(offsets.len());
    while let Some(joined) = set.join_next().await {
        if let Ok(answer) = joined {
            answers.push(answer);
        }
    }
    answers.sort_by_key(|a| a.index);
    answers
}

/// Votes: request `i` casts `choice_of(offset + i)` with voting token `i`. Each vote carries
/// its own `Idempotency-Key`, the same on every retry, as a careful client sends it.
pub struct Votes {
    pub url: String,
    pub tokens: Vec<String>,
    pub idempotency_keys: Vec<Uuid>,
    /// Index of the first vote in the whole run (a stress step continues the earlier ones).
    pub offset: usize,
}

impl Votes {
    pub fn new(ingest_url: &str, election: Uuid, tokens: Vec<String>) -> Self {
        let idempotency_keys = tokens.iter().map(|_| Uuid::new_v4()).collect();
        Self {
            url: format!("{ingest_url}/v1/elections/{election}/ballots"),
            tokens,
            idempotency_keys,
            offset: 0,
        }
    }

    pub fn body(i: usize) -> String {
        format!(
            "{{\"choices\":[\"{}\"]}}",
            crate::OPTIONS[crate::choice_of(i)]
        )
    }
}

impl Shot for Votes {
    fn request(&self, http: &reqwest::Client, i: usize, _attempt: u32) -> reqwest::RequestBuilder {
        http.post(&self.url)
            .bearer_auth(&self.tokens[i])
            .header("idempotency-key", self.idempotency_keys[i].to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(Self::body(self.offset + i))
    }
    fn keep(&self) -> &'static str {
        "receipt"
    }
}

/// Voting-token requests at events-svc: request `i` is member `i`'s (session `i`).
pub struct TokenRequests {
    pub url: String,
    pub sessions: Vec<String>,
}

impl Shot for TokenRequests {
    fn request(&self, http: &reqwest::Client, i: usize, _attempt: u32) -> reqwest::RequestBuilder {
        http.post(&self.url).bearer_auth(&self.sessions[i])
    }
    fn keep(&self) -> &'static str {
        "token"
    }
}

/// The HTTP client of the simulated voters: many connections, no idle cap, no proxy.
pub fn voter_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}
