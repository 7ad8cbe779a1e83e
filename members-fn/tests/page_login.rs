//! The OIDC login of the web pages (`hand_back`): a page starts the login with its own URL as
//! `return_to`, and after the real local provider members-fn answers 303 back to that page with
//! the session in the fragment. Only pages on `PAGE_ORIGINS` may be named (anything else would
//! be an open redirect handing out sessions), and the session is in no log line.

#![allow(
    clippy::too_many_lines,
    reason = "a scenario test reads top to bottom: its steps are the story it tells"
)]

// A test binary of its own, as before the move to one binary per crate: the log capture is
// the process's global subscriber, so it sees every span from the start. As a thread's
// subscriber in the shared binary it missed the request spans of lines it captured (tracing
// caches a callsite's interest process-wide; other tests registered them first).
#[allow(dead_code, unused_imports)]
#[path = "it/support/mod.rs"]
mod support;

use reqwest::{header, redirect, StatusCode};
use shared::session::SessionVerifier;
use testkit::oidc_provider as provider;

use crate::support::{kennitala, logs, Members};

const ORG: &str = "party-a";
/// The pages' origin (events-svc); nothing needs to answer there.
const PAGES: &str = "http://127.0.0.1:8081";

async fn members() -> Members {
    let mut env = provider::Settings::from_env().members_env();
    env.push(("PAGE_ORIGINS", PAGES.to_owned()));
    Members::start(&env).await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .expect("client")
}

fn start_url(members: &Members, return_to: &str) -> String {
    let mut url = reqwest::Url::parse(&format!("{}/v1/auth/oidc/start", members.url)).unwrap();
    url.query_pairs_mut().append_pair("return_to", return_to);
    url.into()
}

#[tokio::test]
async fn a_page_gets_the_session_in_its_fragment_and_no_log_line_carries_it() {
    let captured = logs::capture();
    let members = members().await;
    let person = kennitala(21);
    let member_id = members.add_member(ORG, &person, &["member"]).await;

    let page = format!("{PAGES}/pages/vote");
    let started = provider::start(&members.url, &format!("return_to={page}")).await;
    let back = provider::follow(&started.authorization_url, &person).await;
    let answer = no_redirects()
        .get(format!(
            "{}{}?{}",
            members.url,
            back.path(),
            back.query().unwrap_or_default()
        ))
        .header(header::COOKIE, &started.cookie)
        .send()
        .await
        .expect("members-fn answers");
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let headers = answer.headers().clone();
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    let cleared = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let location = headers[header::LOCATION].to_str().unwrap().to_owned();
    let token = location
        .strip_prefix(&format!("{page}#session="))
        .unwrap_or_else(|| panic!("not back to the page with the session: {location}"))
        .to_owned();
    assert!(
        answer.text().await.unwrap().is_empty(),
        "nothing in the body"
    );

    let claims = SessionVerifier::new(
        format!("{}/.well-known/jwks.json", members.url),
        "ekklesia-members".into(),
        reqwest::Client::new(),
    )
    .verify(&token)
    .await
    .expect("the session verifies");
    assert_eq!(claims.sub, member_id);

    // The attempt was used: the same redirect again is a replay, answered as a problem.
    let (status, _) = provider::finish(&members.url, Some(&started.cookie), &back).await;
    assert_eq!(status, 401);

    let logs = captured.text();
    assert!(logs.contains("session issued"), "the logs were captured");
    assert!(
        !logs.contains(&token),
        "a log line carries the session: {logs}"
    );
    // Nor any of its three parts (a line may have cut or quoted it).
    for part in token.split('.') {
        assert!(
            !logs.contains(part),
            "a log line carries part of the session"
        );
    }
}

#[tokio::test]
async fn a_return_to_that_is_not_one_of_the_pages_is_refused() {
    let members = members().await;
    let http = no_redirects();
    for foreign in [
        "https://evil.example/pages/vote",
        "http://127.0.0.1:8081.evil.example/pages/vote",
        "http://127.0.0.1:8081@evil.example/pages/vote",
        "http://127.0.0.1:9999/pages/vote",
        "https://127.0.0.1:8081/pages/vote",
        "http://127.0.0.1:8081/v1/elections",
        "http://127.0.0.1:8081/pages/vote?next=https://evil.example",
        "http://127.0.0.1:8081/pages/vote#session=planted",
        "//evil.example/pages/vote",
        "javascript:alert(1)",
    ] {
        let answer = http
            .get(start_url(&members, foreign))
            .send()
            .await
            .expect("members-fn answers");
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{foreign}");
        let headers = answer.headers().clone();
        assert!(headers.get(header::LOCATION).is_none(), "{foreign}");
        assert!(headers.get(header::SET_COOKIE).is_none(), "{foreign}");
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/problem+json",
            "{foreign}"
        );
        let problem: serde_json::Value = answer.json().await.unwrap();
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("/invalid-return-to")),
            "{foreign}: {problem}"
        );
    }
    // The pages themselves are accepted: to the provider, with the login cookie.
    for page in [
        format!("{PAGES}/pages/vote"),
        format!("{PAGES}/pages/console"),
    ] {
        let answer = http.get(start_url(&members, &page)).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::FOUND, "{page}");
        assert!(answer.headers().get(header::SET_COOKIE).is_some());
    }
}
