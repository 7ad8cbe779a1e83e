//! HTTP to the services: the API client, the loopback guard, one JSON call, and the queue flag.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};

/// A client for the services' APIs. Idle connections are dropped after 4 s: every service closes
/// a connection that sends no request within `HTTP_HEADER_READ_TIMEOUT_MS` (5 s by default), and
/// a request sent on one just as the server closes it gets no answer at all (seen when a caller
/// waits out a 5 s `Retry-After`).
pub fn api_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(4))
        .timeout(timeout)
        .build()
        .unwrap_or_default()
}

/// Refuses anything but a loopback http URL.
pub fn loopback(url: &str, what: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{what}: not a URL: `{url}`"))?;
    let host = parsed.host_str().unwrap_or_default();
    if parsed.scheme() != "http" || !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        bail!("{what}: the load test only talks to http://127.0.0.1 or http://localhost (got `{url}`)");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Switches the live queue flag through events-svc as the platform operator `session`. The
/// flag changes at most once per interval, platform-wide: a 429 is waited out (Retry-After).
pub(crate) async fn put_queue_mode(
    http: &reqwest::Client,
    events_url: &str,
    session: &str,
    enabled: bool,
) -> anyhow::Result<Value> {
    let url = format!("{events_url}/v1/ops/queue-mode");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, retry_after, answer) = call_json(
            http,
            Method::PUT,
            &url,
            Some(session),
            Some(json!({ "enabled": enabled })),
        )
        .await?;
        match status {
            200 => return Ok(answer),
            429 if Instant::now() < deadline => {
                tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1))).await;
            }
            _ => bail!(
                "PUT /v1/ops/queue-mode at events-svc: expected 200, got {status}: {}",
                answer["detail"]
            ),
        }
    }
}

/// One JSON request to a service: its status, its `Retry-After` (seconds) if any, and its body
/// (`null` when it is not JSON).
pub(crate) async fn call_json(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(u16, Option<Duration>, Value)> {
    let mut request = http.request(method.clone(), url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {url}: no answer (is the service running?)"))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok((
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(loopback("http://127.0.0.1:8080/", "x").is_ok());
        assert!(loopback("http://localhost:1", "x").is_ok());
        assert!(loopback("http://example.com", "x").is_err());
        assert!(loopback("https://127.0.0.1", "x").is_err());
        assert!(loopback("nonsense", "x").is_err());
    }
}
