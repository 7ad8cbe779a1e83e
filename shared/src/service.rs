//! The parts every HTTP service shares: the outer router (OpenAPI document, operational routes,
//! problem+json fallbacks, request logging and metrics) and a bound server that runs until told
//! to stop.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::{middleware, Router};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::metrics::{HttpMetrics, ReadinessCheck};

/// Wraps a service's own routes: `/openapi.json` (generated from the code), `/metrics`,
/// `/healthz`, `/readyz`, problem+json for unknown routes and methods, and the layers that
/// give every request a correlation id, a log line and its metrics.
pub fn router(
    api: Router,
    openapi: utoipa::openapi::OpenApi,
    metrics: HttpMetrics,
    ready: ReadinessCheck,
) -> Router {
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

/// Ready when the database answers.
pub fn database_readiness(pool: PgPool) -> ReadinessCheck {
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move { crate::db::ping(&pool).await })
    })
}

/// A router bound to its address (port 0 picks a free port, as tests do).
pub struct Server {
    name: &'static str,
    listener: TcpListener,
    router: Router,
}

impl Server {
    pub async fn bind(
        name: &'static str,
        addr: SocketAddr,
        router: Router,
    ) -> std::io::Result<Self> {
        Ok(Self {
            name,
            listener: TcpListener::bind(addr).await?,
            router,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `stop` resolves, then finishes the requests in flight.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr(), "{} listening", self.name);
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop)
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::{oneshot, Notify};

    use super::*;

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
