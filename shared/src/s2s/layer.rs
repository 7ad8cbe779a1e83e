//! The axum middleware in front of internal routes, and the extractor for its verified caller.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::idempotency::IdempotentEntry;
use super::verifier::{S2sCaller, Verifier, VerifyError};
use super::{IDEMPOTENCY_KEY, MAX_BODY};
use crate::problem::Problem;

fn verify_problem(error: &VerifyError) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "s2s-unauthorized",
        "Unauthorized",
        error.to_string(),
    )
}

/// axum middleware (`middleware::from_fn_with_state(verifier, verify_layer)`) for internal routes.
pub async fn verify_layer(
    State(verifier): State<Arc<Verifier>>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return crate::problem::body_too_large().into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let now = chrono::Utc::now().timestamp();
    let caller = match verifier.verify(&parts.method, &path, &parts.headers, &bytes, now) {
        Ok(caller) => caller,
        Err(e) => {
            tracing::warn!(reason = %e, "S2S request refused");
            return verify_problem(&e).into_response();
        }
    };
    let idempotency_key = parts
        .headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .map(str::to_owned);
    parts.extensions.insert(caller.clone());
    let Some(idempotency_key) = idempotency_key else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };

    // The same key with another request is a client bug, not a retry.
    let mut fingerprint_hasher = Sha256::new();
    fingerprint_hasher.update(parts.method.as_str());
    fingerprint_hasher.update(path.as_bytes());
    fingerprint_hasher.update(&bytes);
    let fingerprint: [u8; 32] = fingerprint_hasher.finalize().into();
    let cache_key = (caller.tenant.to_string(), idempotency_key);
    {
        let mut answers = verifier.answers.lock().unwrap_or_else(|p| p.into_inner());
        let window = verifier.window * 2;
        answers.prune(Instant::now(), window);
        match answers.entries.get(&cache_key) {
            Some(entry) if entry.stored_at.elapsed() < window => {
                if entry.fingerprint != fingerprint {
                    return Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "idempotency-key-reused",
                        "Idempotency key reused",
                        "this idempotency key was used for a different request",
                    )
                    .into_response();
                }
                return match &entry.answer {
                    Some((status, content_type, body)) => {
                        let mut response = (*status, body.clone()).into_response();
                        if let Some(ct) = content_type {
                            response
                                .headers_mut()
                                .insert(axum::http::header::CONTENT_TYPE, ct.clone());
                        }
                        response
                            .headers_mut()
                            .insert("idempotent-replayed", HeaderValue::from_static("true"));
                        response
                    }
                    None => Problem::unavailable(
                        "in-progress",
                        "the first request with this idempotency key is still running",
                        1,
                    )
                    .into_response(),
                };
            }
            _ => {
                answers.insert(
                    cache_key.clone(),
                    IdempotentEntry {
                        fingerprint,
                        stored_at: Instant::now(),
                        answer: None,
                    },
                );
            }
        }
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (response_parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let mut answers = verifier.answers.lock().unwrap_or_else(|p| p.into_inner());
    if response_parts.status.is_server_error()
        || response_parts.status == StatusCode::TOO_MANY_REQUESTS
    {
        // Failures are not answers: let the retry do the work again.
        answers.entries.remove(&cache_key);
    } else if let Some(entry) = answers.entries.get_mut(&cache_key) {
        entry.answer = Some((
            response_parts.status,
            response_parts
                .headers
                .get(axum::http::header::CONTENT_TYPE)
                .cloned(),
            body.clone(),
        ));
    }
    drop(answers);
    Response::from_parts(response_parts, Body::from(body))
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
