//! The browser's HTTP proxy in the test of the real OIDC login from the pages. The browser goes
//! everywhere through it and it forwards every request unchanged, except two, which stand in for
//! what a test cannot arrange otherwise:
//!
//! - the local provider has no login page (the account is the authorization request's
//!   `login_hint`), so the proxy adds `login_hint` to the request for its authorization endpoint,
//!   as the person typing their id would;
//! - the provider redirects only to the registered redirect URI (members-fn of the local stack,
//!   `OIDC_REDIRECT_URI`), so the proxy delivers that request to the test's own members-fn, as
//!   `provider::finish` does for the API tests. The login cookie travels with it: cookies are
//!   per host, not per port.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use reqwest::Url;

#[derive(Clone)]
struct Rules {
    http: reqwest::Client,
    /// The provider's authorization endpoint, and who logs in there.
    authorize: Url,
    login_hint: String,
    /// The registered redirect URI, and where the test's members-fn is.
    redirect: Url,
    members: Url,
}

/// Starts the proxy on a free loopback port; it serves until the test ends.
pub async fn start(
    authorization_endpoint: &str,
    login_hint: &str,
    redirect_uri: &str,
    members_url: &str,
) -> SocketAddr {
    let rules = Rules {
        http: reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        authorize: Url::parse(authorization_endpoint).expect("authorization endpoint"),
        login_hint: login_hint.to_owned(),
        redirect: Url::parse(redirect_uri).expect("redirect URI"),
        members: Url::parse(members_url).expect("members-fn URL"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("its address");
    let app = axum::Router::new().fallback(forward).with_state(rules);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn same_endpoint(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin() && a.path() == b.path()
}

async fn forward(State(rules): State<Rules>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // A proxy is asked for absolute URLs.
    let Ok(mut url) = Url::parse(&parts.uri.to_string()) else {
        return (StatusCode::BAD_REQUEST, "not a proxy request").into_response();
    };
    if same_endpoint(&url, &rules.authorize) && !url.query_pairs().any(|(k, _)| k == "login_hint") {
        url.query_pairs_mut()
            .append_pair("login_hint", &rules.login_hint);
    }
    if same_endpoint(&url, &rules.redirect) {
        let query = url.query().map(str::to_owned);
        url = rules.members.join(rules.redirect.path()).expect("a URL");
        url.set_query(query.as_deref());
    }
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return (StatusCode::BAD_REQUEST, "body too large").into_response();
    };
    let mut outgoing = rules.http.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) && name != "host" {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) && name != "content-length" {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    response
        .body(Body::from(bytes))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "proxy-connection" | "keep-alive" | "transfer-encoding" | "te" | "upgrade"
    )
}
