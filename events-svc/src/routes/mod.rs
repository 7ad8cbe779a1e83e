//! The HTTP routes; what they share in their OpenAPI answers is said once here.

pub mod elections;
pub mod live;
pub mod ops;
pub mod tokens;

/// What the session check (`crate::auth::Caller`) answers on every route.
pub const SESSION_401: &str = "No valid session (`missing-session`, `session-expired`, `invalid-session`): send members-fn's session token as `Authorization: Bearer <token>`";
/// The session check's 503, where a route has no other.
pub const SESSION_503: &str = "Session keys unavailable (`session-keys-unavailable`), database unavailable or overloaded (Retry-After)";
/// Bodies that are not the route's JSON.
pub const BAD_BODY: &str = "`malformed-json` or `invalid-body`: not the documented JSON";
pub const NOT_JSON: &str = "`unsupported-media-type`: the body is not `application/json`";
pub const TOO_LARGE: &str = "`body-too-large`: over 64 KiB";
/// The elections side refusing what this side accepted: its checks and ours disagree (logged).
pub const REFUSED: &str =
    "`elections-side-refused`: the elections side refused the change; nothing changed";
