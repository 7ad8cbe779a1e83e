//! The parts every HTTP service shares: the outer router (OpenAPI document, operational routes,
//! problem+json fallbacks, request logging and metrics) and a bound server that runs until told
//! to stop, with the limits a public listener needs: a header-read timeout (a client that sends
//! half a header is disconnected), a request timeout and a concurrency limit (both answer 503
//! with `Retry-After`, never a hang).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{middleware, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service;

use crate::config::Env;
use crate::metrics::{HttpMetrics, ReadinessCheck};
use crate::problem::Problem;

/// Wraps a service's own routes: `/openapi.json` (generated from the code, completed by
/// [`crate::openapi::complete`] with what this router adds), `/metrics`,
/// `/healthz`, `/readyz`, problem+json for unknown routes and methods, and the layers that
/// give every request a correlation id, a log line and its metrics.
pub fn router(
    api: Router,
    openapi: utoipa::openapi::OpenApi,
    metrics: HttpMetrics,
    ready: ReadinessCheck,
) -> Router {
    let openapi = crate::openapi::complete(openapi, crate::openapi::Operational::WithMetrics);
    api.route(
        "/openapi.json",
        axum::routing::get(move || async move { axum::Json(openapi) }),
    )
    .merge(crate::metrics::operational_routes(metrics.clone(), ready))
    .fallback(crate::problem::not_found_fallback)
    .method_not_allowed_fallback(crate::problem::method_not_allowed_fallback)
    .route_layer(middleware::from_fn(crate::telemetry::record_route))
    .layer(middleware::from_fn_with_state(
        metrics,
        crate::telemetry::observe_requests,
    ))
}

/// [`router`] for a listener the public reaches: no `/metrics` (turnout counters, internal
/// figures), and neither the caller's `X-Correlation-ID` nor its `traceparent` is taken over:
/// each request gets the server's own, so a client reusing one id across its requests (login,
/// token, vote) cannot join them in the logs, traces or the queue's messages.
pub fn public_router(
    api: Router,
    openapi: utoipa::openapi::OpenApi,
    metrics: HttpMetrics,
    ready: ReadinessCheck,
) -> Router {
    let openapi = crate::openapi::complete(openapi, crate::openapi::Operational::Public);
    api.route(
        "/openapi.json",
        axum::routing::get(move || async move { axum::Json(openapi) }),
    )
    .merge(crate::metrics::probe_routes(ready))
    .fallback(crate::problem::not_found_fallback)
    .method_not_allowed_fallback(crate::problem::method_not_allowed_fallback)
    .route_layer(middleware::from_fn(crate::telemetry::record_route))
    .layer(middleware::from_fn_with_state(
        metrics,
        crate::telemetry::observe_requests,
    ))
    .layer(middleware::from_fn(forget_client_ids))
}

async fn forget_client_ids(mut request: Request, next: Next) -> Response {
    let headers = request.headers_mut();
    headers.remove(&crate::telemetry::CORRELATION_HEADER);
    headers.remove("traceparent");
    headers.remove("tracestate");
    next.run(request).await
}

/// Ready when the database answers; asked at most once a second however often `/readyz` is
/// called, so probes (or a stranger) cannot spend the service's few connections.
pub fn database_readiness(pool: PgPool) -> ReadinessCheck {
    crate::metrics::cached_readiness(
        Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move { crate::db::ping(&pool).await })
        }),
        Duration::from_secs(1),
    )
}

/// What every listener enforces (`HTTP_*` variables, read by each service's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// `HTTP_HEADER_READ_TIMEOUT_MS` (5000): a connection that has not sent a whole request head
    /// by then is closed.
    pub header_read_timeout: Duration,
    /// `HTTP_REQUEST_TIMEOUT_MS` (15000): a request not answered by then gets 503 (its work is
    /// dropped; every write behind a request is idempotent or transactional).
    pub request_timeout: Duration,
    /// `HTTP_MAX_CONCURRENT_REQUESTS` (1024): more at once wait for a slot, in arrival order.
    pub max_concurrent_requests: usize,
    /// `HTTP_QUEUE_TIMEOUT_MS` (2000): how long a request over the concurrency limit waits for
    /// a slot before its 503 + `Retry-After` (0: refused at once). At most
    /// `QUEUE_PER_SLOT × max_concurrent_requests` wait; more are refused at once.
    pub queue_timeout: Duration,
}

/// Requests that may wait per concurrency slot (`ServerLimits::queue_timeout`).
///
/// Why a queue: a burst (a hall voting at once) is over in seconds, and a vote that waits
/// half a second in line is answered sooner than one refused and retried after a whole second
/// of `Retry-After` (a 10,000-vote burst: p99 4.4 s with refusals, see BENCHMARKS.md). A waiting
/// request holds only its connection and head (its body is read once it has a slot), and the
/// bound keeps a flood from queueing without end.
pub const QUEUE_PER_SLOT: usize = 4;

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            max_concurrent_requests: 1024,
            queue_timeout: Duration::from_secs(2),
        }
    }
}

impl ServerLimits {
    pub fn from_env(env: &mut Env) -> Self {
        let default = Self::default();
        let limits = Self {
            header_read_timeout: env.millis_or(
                "HTTP_HEADER_READ_TIMEOUT_MS",
                default.header_read_timeout.as_millis() as u64,
            ),
            request_timeout: env.millis_or(
                "HTTP_REQUEST_TIMEOUT_MS",
                default.request_timeout.as_millis() as u64,
            ),
            max_concurrent_requests: env.parse_or(
                "HTTP_MAX_CONCURRENT_REQUESTS",
                default.max_concurrent_requests,
            ),
            queue_timeout: env.millis_or(
                "HTTP_QUEUE_TIMEOUT_MS",
                default.queue_timeout.as_millis() as u64,
            ),
        };
        if limits.header_read_timeout.is_zero()
            || limits.request_timeout.is_zero()
            || limits.max_concurrent_requests == 0
        {
            env.problem("HTTP_HEADER_READ_TIMEOUT_MS, HTTP_REQUEST_TIMEOUT_MS and HTTP_MAX_CONCURRENT_REQUESTS must be above 0");
        }
        limits
    }

    /// The request timeout and the concurrency limit as the outermost layers of `router`.
    fn apply(self, router: Router) -> Router {
        let admission = Arc::new(Admission {
            slots: Semaphore::new(self.max_concurrent_requests),
            places: Semaphore::new(
                self.max_concurrent_requests
                    .saturating_mul(QUEUE_PER_SLOT + 1)
                    .min(Semaphore::MAX_PERMITS),
            ),
            queue_timeout: self.queue_timeout,
            request_timeout: self.request_timeout,
        });
        router.layer(middleware::from_fn_with_state(admission, limit_request))
    }
}

struct Admission {
    /// Requests being served.
    slots: Semaphore,
    /// Requests being served or waiting for a slot.
    places: Semaphore,
    queue_timeout: Duration,
    request_timeout: Duration,
}

fn overloaded() -> Response {
    Problem::unavailable(
        "overloaded",
        "too many requests are being served; retry shortly",
        1,
    )
    .into_response()
}

async fn limit_request(
    State(admission): State<Arc<Admission>>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_place) = admission.places.try_acquire() else {
        return overloaded();
    };
    // Semaphore waiters are served first come, first served.
    let Ok(Ok(_slot)) =
        tokio::time::timeout(admission.queue_timeout, admission.slots.acquire()).await
    else {
        return overloaded();
    };
    match tokio::time::timeout(admission.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::unavailable(
            "request-timeout",
            "the request took too long and was abandoned; retry shortly",
            1,
        )
        .into_response(),
    }
}

/// A router bound to its address (port 0 picks a free port, as tests do).
pub struct Server {
    name: &'static str,
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
}

/// How long a stop waits for requests in flight before closing their connections.
const DRAIN: Duration = Duration::from_secs(10);

impl Server {
    pub async fn bind(
        name: &'static str,
        addr: SocketAddr,
        router: Router,
    ) -> std::io::Result<Self> {
        Self::bind_with(name, addr, router, ServerLimits::default()).await
    }

    pub async fn bind_with(
        name: &'static str,
        addr: SocketAddr,
        router: Router,
        limits: ServerLimits,
    ) -> std::io::Result<Self> {
        Ok(Self {
            name,
            listener: TcpListener::bind(addr).await?,
            router,
            limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `stop` resolves, then finishes the requests in flight (for at most 10 s).
    ///
    /// hyper serves each connection with a timer, so its header-read timeout is on (axum's
    /// `serve` builds connections without one, which silently turns it off).
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr(), "{} listening", self.name);
        let mut make_service = self
            .limits
            .apply(self.router)
            .into_make_service_with_connect_info::<SocketAddr>();
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(stop);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            let service = match make_service.call(peer).await {
                Ok(service) => service,
                Err(infallible) => match infallible {},
            };
            let hyper_service = hyper::service::service_fn(move |request| {
                let mut service = service.clone();
                async move { Ok::<_, Infallible>(service.call(request).await.into_response()) }
            });
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), hyper_service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        if tokio::time::timeout(DRAIN, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "{}: requests still in flight after {DRAIN:?}; closing",
                self.name
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{oneshot, Notify};

    use super::*;

    async fn serve(router: Router, limits: ServerLimits) -> SocketAddr {
        let server = Server::bind_with("test", "127.0.0.1:0".parse().unwrap(), router, limits)
            .await
            .unwrap();
        let addr = server.local_addr();
        tokio::spawn(server.run_until(std::future::pending()));
        addr
    }

    fn limits(header_read_ms: u64, request_ms: u64, concurrent: usize) -> ServerLimits {
        ServerLimits {
            header_read_timeout: Duration::from_millis(header_read_ms),
            request_timeout: Duration::from_millis(request_ms),
            max_concurrent_requests: concurrent,
            queue_timeout: Duration::ZERO,
        }
    }

    fn hello() -> Router {
        Router::new().route("/", axum::routing::get(|| async { "hello" }))
    }

    /// Opens a connection and sends half a request head.
    async fn half_a_header(addr: SocketAddr) -> tokio::net::TcpStream {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /v1/elections HTTP/1.1\r\nHost: localhost\r\nContent-")
            .await
            .unwrap();
        stream
    }

    #[tokio::test]
    async fn a_client_sending_half_a_header_is_disconnected_after_the_header_timeout() {
        let addr = serve(hello(), limits(300, 5000, 64)).await;
        let mut stream = half_a_header(addr).await;
        let started = Instant::now();
        let mut buffer = Vec::new();
        // The server closes the connection (possibly after a 408): read to the end.
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer))
            .await
            .expect("disconnected within 5 s");
        assert!(read.is_ok() || buffer.is_empty(), "{read:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
            "closed after {waited:?}, the header timeout is 300 ms"
        );
    }

    #[tokio::test]
    async fn two_thousand_slow_clients_do_not_stop_a_request() {
        let addr = serve(hello(), limits(2000, 5000, 64)).await;
        let mut slow = Vec::new();
        for _ in 0..2000 {
            slow.push(half_a_header(addr).await);
        }
        let started = Instant::now();
        let answer = reqwest::get(format!("http://{addr}/")).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered after {:?}",
            started.elapsed()
        );
        drop(slow);
    }

    #[tokio::test]
    async fn a_request_over_the_time_or_concurrency_limit_gets_503_with_retry_after() {
        let entered = Arc::new(Notify::new());
        let router = Router::new().route(
            "/slow",
            axum::routing::get({
                let entered = entered.clone();
                move || async move {
                    entered.notify_one();
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }
            }),
        );
        let addr = serve(router, limits(1000, 300, 1)).await;
        let first = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
        entered.notified().await;
        // The only slot is taken: refused at once.
        let second = reqwest::get(format!("http://{addr}/slow")).await.unwrap();
        assert_eq!(second.status(), 503);
        assert!(second.headers().contains_key("retry-after"));
        let problem: Problem = second.json().await.unwrap();
        assert_eq!(problem.slug(), "overloaded");
        // The first is abandoned at the request timeout.
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.status(), 503);
        assert!(first.headers().contains_key("retry-after"));
        let problem: Problem = first.json().await.unwrap();
        assert_eq!(problem.slug(), "request-timeout");
    }

    /// A router whose `/slow` holds its slot until the test says so.
    fn held(entered: &Arc<Notify>, release: &Arc<Notify>) -> Router {
        let (entered, release) = (entered.clone(), release.clone());
        Router::new().route(
            "/slow",
            axum::routing::get(move || async move {
                entered.notify_one();
                release.notified().await;
                "done"
            }),
        )
    }

    #[tokio::test]
    async fn a_request_over_the_concurrency_limit_waits_for_a_slot_in_line() {
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let limits = ServerLimits {
            queue_timeout: Duration::from_secs(10),
            ..limits(1000, 10_000, 1)
        };
        let addr = serve(held(&entered, &release), limits).await;
        let first = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
        entered.notified().await;
        // The only slot is taken: the second waits instead of being refused.
        let second = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !second.is_finished(),
            "the second was answered before a slot freed"
        );
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().status(), 200);
        entered.notified().await;
        release.notify_one();
        assert_eq!(second.await.unwrap().unwrap().status(), 200);
    }

    #[tokio::test]
    async fn a_request_that_waited_too_long_or_finds_the_line_full_gets_503() {
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let limits = ServerLimits {
            queue_timeout: Duration::from_millis(300),
            ..limits(1000, 10_000, 1)
        };
        let addr = serve(held(&entered, &release), limits).await;
        let first = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
        entered.notified().await;
        let started = Instant::now();
        let waited = reqwest::get(format!("http://{addr}/slow")).await.unwrap();
        assert_eq!(waited.status(), 503);
        assert!(waited.headers().contains_key("retry-after"));
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(waited.json::<Problem>().await.unwrap().slug(), "overloaded");

        // One slot and QUEUE_PER_SLOT places in line: with the line full, the next is refused
        // at once.
        let line: Vec<_> = (0..QUEUE_PER_SLOT)
            .map(|_| tokio::spawn(reqwest::get(format!("http://{addr}/slow"))))
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let refused = reqwest::get(format!("http://{addr}/slow")).await.unwrap();
        assert_eq!(refused.status(), 503);
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().status(), 200);
        for waiting in line {
            let _ = waiting.await;
        }
    }

    #[test]
    fn limits_come_from_the_environment() {
        let mut env = Env::from_map([
            ("HTTP_HEADER_READ_TIMEOUT_MS", "1500"),
            ("HTTP_MAX_CONCURRENT_REQUESTS", "7"),
            ("HTTP_QUEUE_TIMEOUT_MS", "0"),
        ]);
        let limits = ServerLimits::from_env(&mut env);
        assert_eq!(limits.header_read_timeout, Duration::from_millis(1500));
        assert_eq!(
            limits.request_timeout,
            ServerLimits::default().request_timeout
        );
        assert_eq!(limits.max_concurrent_requests, 7);
        assert_eq!(limits.queue_timeout, Duration::ZERO);
        assert!(env.finish(()).is_ok());
        let mut env = Env::from_map([("HTTP_REQUEST_TIMEOUT_MS", "0")]);
        ServerLimits::from_env(&mut env);
        assert!(env.finish(()).is_err());
    }

    #[tokio::test]
    async fn port_zero_binds_a_free_port_and_stop_lets_requests_in_flight_finish() {
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let router = Router::new().route(
            "/slow",
            axum::routing::get({
                let (entered, release) = (entered.clone(), release.clone());
                move || async move {
                    entered.notify_one();
                    release.notified().await;
                    "done"
                }
            }),
        );
        let server = Server::bind("test", "127.0.0.1:0".parse().unwrap(), router)
            .await
            .unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));

        let request = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
        entered.notified().await;
        stop.send(()).unwrap();
        // Told to stop, it still waits for the request it is serving...
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!running.is_finished(), "stopped with a request in flight");
        release.notify_one();
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "done");
        // ...then returns, and takes no new connections.
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("run_until returns once the request is answered")
            .unwrap()
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
