//! The axum middleware in front of internal routes, and the extractor for its verified caller.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::idempotency::Begin;
use super::verifier::{S2sCaller, Verifier, VerifyError};
use super::{IDEMPOTENCY_KEY, MAX_BODY};
use crate::problem::Problem;

/// One answer for every refusal, whatever the reason (logged here, never told to the caller):
/// a stranger learns nothing about which keys exist or what failed.
fn verify_problem(error: &VerifyError) -> Problem {
    match error {
        // Not a refusal: the client retries 5xx with a fresh nonce.
        VerifyError::Unavailable => Problem::unavailable(
            "s2s-unavailable",
            "the request could not be checked for replay; retry shortly",
            1,
        ),
        _ => Problem::new(
            StatusCode::UNAUTHORIZED,
            "s2s-unauthorized",
            "Unauthorized",
            "this request is not signed as the internal API requires",
        ),
    }
}

/// axum middleware (`middleware::from_fn_with_state(verifier, verify_layer)`) for internal routes:
/// verify the request, then (with an idempotency key) begin, run, and complete with its answer.
pub async fn verify_layer(
    State(verifier): State<Arc<Verifier>>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    // Headers, key and timestamp first: an unsigned or stale request is refused before its
    // body is read, however large or slow that body is.
    if let Err(e) = verifier.precheck(&parts.headers, now()) {
        return refused(&e);
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return crate::problem::body_too_large().into_response();
    };
    let path = path_and_query(&parts);
    let caller = match verifier
        .verify(&parts.method, &path, &parts.headers, &body, now())
        .await
    {
        Ok(caller) => caller,
        Err(e) => return refused(&e),
    };
    crate::telemetry::record_tenant(caller.tenant.as_str());
    parts.extensions.insert(caller.clone());
    let Some(key) = idempotency_key(&parts.headers) else {
        return next.run(Request::from_parts(parts, Body::from(body))).await;
    };
    let fingerprint = fingerprint(&parts.method, &path, &body);
    let marker = match verifier
        .answers
        .begin(caller.tenant.to_string(), key, fingerprint)
    {
        Begin::Replay(answer) => return answer,
        Begin::Refuse(problem) => return problem.into_response(),
        Begin::Run(marker) => marker,
    };
    // Dropped from here on (the client hung up), this future drops the marker with it.
    let (parts, body) = run_buffered(next, Request::from_parts(parts, Body::from(body))).await;
    let content_type = parts.headers.get(axum::http::header::CONTENT_TYPE);
    marker.complete(parts.status, content_type, &body);
    Response::from_parts(parts, Body::from(body))
}

fn refused(error: &VerifyError) -> Response {
    tracing::warn!(reason = %error, "S2S request refused");
    verify_problem(error).into_response()
}

/// Runs the handler and reads its whole answer, to keep it for the key's retries.
async fn run_buffered(next: Next, req: Request) -> (axum::http::response::Parts, Bytes) {
    let (parts, body) = next.run(req).await.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    (parts, body)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// What the signature covers as the path.
fn path_and_query(parts: &Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned()
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .map(str::to_owned)
}

/// Tells a retry (same request) from a reuse of the key for another request.
fn fingerprint(method: &Method, path: &str, body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str());
    hasher.update(path.as_bytes());
    hasher.update(body);
    hasher.finalize().into()
}

/// Extractor for handlers behind [`verify_layer`].
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for S2sCaller {
    type Rejection = Problem;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<S2sCaller>()
            .cloned()
            .ok_or_else(|| verify_problem(&VerifyError::MissingHeaders))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use axum::routing::post;

    use super::*;
    use crate::domain::TenantId;
    use crate::s2s::{sign, Keyring, S2sKey};

    /// `POST /slow` behind the layer: the first call takes 5 s, later ones answer at once.
    async fn slow_peer(key: S2sKey) -> (String, Arc<AtomicUsize>) {
        serve(Verifier::new(Keyring::new(vec![key]))).await
    }

    async fn serve(verifier: Verifier) -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let verifier = Arc::new(verifier);
        let app = axum::Router::new()
            .route(
                "/slow",
                post(move || {
                    let counted = counted.clone();
                    async move {
                        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        "done"
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(verifier, verify_layer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, calls)
    }

    #[tokio::test]
    async fn a_nonce_store_that_cannot_answer_gives_503_and_runs_nothing() {
        let key = S2sKey::new("k1", TenantId::parse("party-a").unwrap(), vec![1; 32]).unwrap();
        // A database address where nothing listens (bound, then released).
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy(&format!("postgres://nobody:nothing@{closed}/none"))
            .unwrap();
        let verifier = Verifier::new(Keyring::new(vec![key.clone()])).with_nonce_store(pool);
        let (base, calls) = serve(verifier).await;
        let mut request = reqwest::Client::new().post(format!("{base}/slow"));
        for (name, value) in sign(&key, &Method::POST, "/slow", b"", now()) {
            request = request.header(name, value);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(answer.headers().contains_key("retry-after"));
        let problem: Problem = answer.json().await.unwrap();
        assert_eq!(problem.slug(), "s2s-unavailable");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler ran unchecked");
    }

    #[tokio::test]
    async fn a_request_cancelled_by_its_client_does_not_block_the_retry() {
        let key = S2sKey::new("k1", TenantId::parse("party-a").unwrap(), vec![1; 32]).unwrap();
        let (base, calls) = slow_peer(key.clone()).await;
        let http = reqwest::Client::new();
        // A fresh nonce and signature per attempt, the same idempotency key, as the client does.
        let attempt = || {
            let mut request = http
                .post(format!("{base}/slow"))
                .header(IDEMPOTENCY_KEY, "close-1");
            for (name, value) in sign(&key, &Method::POST, "/slow", b"", now()) {
                request = request.header(name, value);
            }
            request.send()
        };
        // The client gives up after 100 ms and drops the connection.
        let first = tokio::time::timeout(Duration::from_millis(100), attempt()).await;
        assert!(first.is_err(), "the first attempt should still be running");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // The server notices the hang-up asynchronously: retry (as the client would) until the
        // handler runs, for at most 1 s.
        let started = Instant::now();
        let deadline = started + Duration::from_secs(1);
        let answer = loop {
            let answer = attempt().await.unwrap();
            if answer.status() != StatusCode::SERVICE_UNAVAILABLE || Instant::now() >= deadline {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let status = answer.status();
        let body = answer.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, "done");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the retry ran the handler");
    }
}
