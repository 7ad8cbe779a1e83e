//! RFC 9457 problem details: the one error shape every service answers with.
//!
//! Each crate keeps its own error enum (thiserror) and converts it into a [`Problem`]; the
//! `Retry-After` header is set here, so a 503 or 429 can never leave without it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Problem {
    /// A stable URI naming the problem, e.g. `https://ekklesia.is/problems/token-expired`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Seconds to wait before retrying (also sent as the `Retry-After` header).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retry_after: Option<u64>,
    /// The receipt this answer concerns, when there is one (e.g. a replayed vote).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub receipt: Option<String>,
}

impl Problem {
    /// `slug` is the last segment of the problem type URI; it is what clients match on.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://ekklesia.is/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: match status {
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => Some(1),
                _ => None,
            },
            receipt: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn with_receipt(mut self, receipt: impl Into<String>) -> Self {
        self.receipt = Some(receipt.into());
        self
    }

    /// The last segment of the type URI.
    pub fn slug(&self) -> &str {
        self.kind.rsplit('/').next().unwrap_or("")
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn bad_request(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, "Bad request", detail)
    }

    pub fn unavailable(slug: &str, detail: impl Into<String>, retry_after: u64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            slug,
            "Service unavailable",
            detail,
        )
        .retry_after(retry_after)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "an unexpected error occurred; it has been logged",
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.slug(), self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Turns axum's own rejections (bad JSON, wrong content type, body too large, bad path) into
/// problems that name what was wrong, instead of axum's plain-text bodies.
pub fn from_json_rejection(rejection: axum::extract::rejection::JsonRejection) -> Problem {
    use axum::extract::rejection::JsonRejection as R;
    match rejection {
        R::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "the request body must be JSON with `Content-Type: application/json`",
        ),
        R::JsonSyntaxError(e) => Problem::bad_request("malformed-json", e.body_text()),
        R::JsonDataError(e) => Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            "Bad request",
            e.body_text(),
        ),
        R::BytesRejection(e) => {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                body_too_large()
            } else {
                Problem::bad_request("unreadable-body", e.body_text())
            }
        }
        other => Problem::bad_request("invalid-body", other.body_text()),
    }
}

pub fn body_too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        "Payload too large",
        "the request body exceeds the limit for this endpoint",
    )
}

pub fn from_path_rejection(rejection: axum::extract::rejection::PathRejection) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-path",
        "Bad request",
        rejection.body_text(),
    )
}

/// Fallback for a known route called with the wrong method.
pub async fn method_not_allowed_fallback() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this route does not accept that method",
    )
}

/// Fallback for unknown routes, so even a 404 is problem+json.
pub async fn not_found_fallback() -> Problem {
    Problem::not_found("no such route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_carries_retry_after_header() {
        let response = Problem::unavailable("db-busy", "try again", 2).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }

    #[test]
    fn too_many_requests_defaults_retry_after() {
        let p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many",
            "slow down",
        );
        let response = p.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn client_errors_have_no_retry_after() {
        let response = Problem::bad_request("x", "y").into_response();
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }
}
