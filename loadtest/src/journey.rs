//! The whole journey through every running service, as voters and an admin live it:
//! log in at the identity provider (OIDC with PKCE, started and finished at members-fn; the
//! local `oidc-provider`), create and open an election, each member lists the open elections,
//! gets a voting token (once: a second request is refused), votes through ingest and checks
//! the receipt; the admin closes the election and everyone reads the final results. Run once
//! in queue mode and once in direct mode, switching the queue flag through events-svc as a
//! platform operator would.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};

// The same browser-side OIDC driver the tests use (it panics with the provider's answer
// when a step fails, which is what a demo should show).
use testkit::oidc_provider as provider;

pub struct Urls {
    pub members: String,
    pub events: String,
    pub ingest: String,
}

struct Api {
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let (status, _, body) =
            crate::target::call_json(&self.http, method, url, bearer, body).await?;
        Ok((status, body))
    }

    async fn expect(
        &self,
        status: u16,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (got, body) = self.call(method.clone(), url, bearer, body).await?;
        if got != status {
            bail!("{method} {url}: expected {status}, got {got}: {body}");
        }
        Ok(body)
    }
}

/// The demo platform operator's person number (`national_id::synthetic`), beyond any demo
/// party's members (`members-csv --voters` stays below it).
pub const PLATFORM_OPERATOR: u32 = 33_599;

/// The members CSV export for the demo party: one admin and `voters` members.
pub fn members_csv(voters: u32) -> String {
    let mut csv = String::from("kennitala,name,roles\n");
    csv.push_str(&format!(
        "{},Demo Admin,admin\n",
        members_fn::national_id::synthetic(0).as_str()
    ));
    for n in 1..=voters {
        csv.push_str(&format!(
            "{},Voter {n},\n",
            members_fn::national_id::synthetic(n).as_str()
        ));
    }
    csv
}

/// The platform organisation's export for the demo: one platform operator (`ops` may be
/// granted only there; it switches the platform-wide queue flag).
pub fn platform_ops_csv() -> String {
    format!(
        "kennitala,name,roles\n{},Demo Platform Operator,ops\n",
        members_fn::national_id::synthetic(PLATFORM_OPERATOR).as_str()
    )
}

/// Logs in as a browser does: start at members-fn (which sets the login cookie and sends the
/// browser to the provider with its state, nonce and PKCE challenge), the provider, and the
/// redirect back to members-fn with the cookie.
async fn login(urls: &Urls, national_id: &str) -> anyhow::Result<String> {
    let (status, session) = provider::login(&urls.members, national_id, "").await;
    if status != 200 {
        bail!("login at {}: {status} {session}", urls.members);
    }
    Ok(session["session_token"]
        .as_str()
        .context("no session token")?
        .to_owned())
}

pub async fn run(urls: Urls, voters: u32) -> anyhow::Result<()> {
    let api = Api {
        http: crate::target::api_client(Duration::from_secs(30)),
    };
    let admin = login(&urls, members_fn::national_id::synthetic(0).as_str()).await?;
    println!(
        "admin logged in through the identity provider (OIDC with PKCE, started at members-fn)"
    );
    let ops = login(
        &urls,
        members_fn::national_id::synthetic(PLATFORM_OPERATOR).as_str(),
    )
    .await?;
    println!("platform operator logged in the same way");
    let mut sessions = Vec::new();
    for n in 1..=voters {
        sessions.push(login(&urls, members_fn::national_id::synthetic(n).as_str()).await?);
    }
    println!("{voters} members logged in the same way");
    for (queue_mode, title) in [
        (true, "Adopt the 2027 budget?"),
        (false, "Elect the treasurer?"),
    ] {
        println!();
        let flag = crate::target::put_queue_mode(&api.http, &urls.events, &ops, queue_mode).await?;
        println!(
            "queue mode {} by {} (audited; ingest follows within a second)",
            if queue_mode { "ON" } else { "OFF" },
            flag["changed_by"].as_str().unwrap_or("?")
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        election(&api, &urls, &admin, &sessions, title).await?;
    }
    crate::target::put_queue_mode(&api.http, &urls.events, &ops, true).await?;
    println!("\nqueue mode back ON");
    Ok(())
}

async fn election(
    api: &Api,
    urls: &Urls,
    admin: &str,
    sessions: &[String],
    question: &str,
) -> anyhow::Result<()> {
    let created = api
        .expect(
            201,
            Method::POST,
            &format!("{}/v1/elections", urls.events),
            Some(admin),
            Some(json!({
                "title": "Demo meeting", "question": question, "kind": "single",
                "options": [{"id": "yes", "label": "Yes"}, {"id": "no", "label": "No"},
                            {"id": "abstain", "label": "Abstain"}],
                "max_choices": 1,
            })),
        )
        .await?;
    let id = created["id"].as_str().context("election id")?.to_owned();
    api.expect(
        200,
        Method::POST,
        &format!("{}/v1/elections/{id}/open", urls.events),
        Some(admin),
        None,
    )
    .await?;
    println!("election {id} open: \"{question}\" (yes / no / abstain)");
    let choices = ["yes", "yes", "no", "abstain", "yes"];
    for (i, session) in sessions.iter().enumerate() {
        member_votes(api, urls, &id, i + 1, session, choices[i % choices.len()]).await?;
    }
    api.expect(
        200,
        Method::POST,
        &format!("{}/v1/elections/{id}/close", urls.events),
        Some(admin),
        None,
    )
    .await?;
    println!("election closed; waiting until every vote is recorded and the ballots are sealed...");
    let reader = sessions.first().map(String::as_str).unwrap_or(admin);
    final_results(api, urls, &id, reader, sessions.len()).await
}

/// Member `member` finds the open election, gets a token (a second request is refused) and
/// votes `choice` with it.
async fn member_votes(
    api: &Api,
    urls: &Urls,
    id: &str,
    member: usize,
    session: &str,
    choice: &str,
) -> anyhow::Result<()> {
    let open = api
        .expect(
            200,
            Method::GET,
            &format!("{}/v1/elections", urls.events),
            Some(session),
            None,
        )
        .await?;
    if !open
        .as_array()
        .is_some_and(|list| list.iter().any(|e| e["id"] == json!(id)))
    {
        bail!("the open election is not listed for member {member}");
    }
    let issued = api
        .expect(
            201,
            Method::POST,
            &format!("{}/v1/elections/{id}/token", urls.events),
            Some(session),
            None,
        )
        .await?;
    let token = issued["token"].as_str().context("token")?;
    let (second, _) = api
        .call(
            Method::POST,
            &format!("{}/v1/elections/{id}/token", urls.events),
            Some(session),
            None,
        )
        .await?;
    let started = Instant::now();
    let (status, vote) = api
        .call(
            Method::POST,
            &format!("{}/v1/elections/{id}/ballots", urls.ingest),
            Some(token),
            Some(json!({ "choices": [choice] })),
        )
        .await?;
    if !(200..300).contains(&status) {
        bail!("vote refused: {status} {vote}");
    }
    println!(
        "member {member} got a token (a second request: {second}), voted {choice:<7} -> {status} {} in {:.1} ms",
        vote["status"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Waits (up to a minute) until the results are final, read as `reader`, and checks that they
/// hold `ballots` ballots.
async fn final_results(
    api: &Api,
    urls: &Urls,
    id: &str,
    reader: &str,
    ballots: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let results = api
            .expect(
                200,
                Method::GET,
                &format!("{}/v1/elections/{id}/results", urls.events),
                Some(reader),
                None,
            )
            .await?;
        if results["final"] == json!(true) {
            println!(
                "final results (read by a member): {} ballots, tally {}",
                results["total"], results["tally"]
            );
            if results["total"] != json!(ballots) {
                bail!("expected {ballots} ballots");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("results not final within 60 s: {results}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
