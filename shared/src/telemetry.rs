//! JSON logs, traces, and the correlation id that follows a vote through every hop.
//!
//! Every log line is one JSON object with `ts`, `service`, `severity`, `message` and the fields
//! of the enclosing spans (`correlation_id`, `tenant`, `route`, `election_id`, `latency_ms`),
//! which is what Cloud Logging indexes; with traces on, also the trace id in the field Cloud
//! Logging links to Cloud Trace (`logging.googleapis.com/trace`). Span fields are kept as JSON
//! values when they are recorded (`SpanFields`), not formatted to text and parsed back for every
//! log line.

use std::fmt;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Instrument, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::metrics::HttpMetrics;

pub const CORRELATION_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// What a service keeps alive for its telemetry: dropping it flushes the traces left.
#[must_use = "dropping it stops exporting traces"]
pub struct Telemetry {
    pub tracing: Option<crate::traces::Tracing>,
}

/// Installs the JSON logs (and traces, if `OTEL_EXPORTER_OTLP_ENDPOINT` is set) for a service.
/// `RUST_LOG` overrides the default filter. Safe to call more than once (tests): later calls
/// install nothing.
pub fn init(service: &'static str) -> Telemetry {
    let mut env = crate::config::Env::from_process();
    let settings = crate::traces::TraceSettings::from_env(&mut env);
    let tracing = match env
        .finish(())
        .map(|()| crate::traces::Tracing::new(service, &settings))
    {
        Ok(Ok(tracing)) => tracing,
        Ok(Err(e)) => {
            eprintln!("traces are off: {e}");
            None
        }
        Err(e) => {
            eprintln!("traces are off: {e}");
            None
        }
    };
    let _ = tracing::subscriber::set_global_default(subscriber(service, tracing.as_ref()));
    Telemetry { tracing }
}

/// The subscriber a service logs and traces through (tests install it for their own thread).
pub fn subscriber(
    service: &'static str,
    tracing: Option<&crate::traces::Tracing>,
) -> Box<dyn Subscriber + Send + Sync> {
    use tracing_subscriber::layer::SubscriberExt;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,hyper=warn,tower=warn"));
    let logs = tracing_subscriber::fmt::layer()
        .fmt_fields(NoFields)
        .event_format(JsonLine {
            service,
            project: std::env::var("GOOGLE_CLOUD_PROJECT").ok(),
        })
        .with_writer(std::io::stdout);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(SpanFieldsLayer)
        .with(logs);
    match tracing {
        Some(tracing) => Box::new(registry.with(tracing.layer())),
        None => Box::new(registry),
    }
}

/// A span's fields as JSON values, kept in its extensions as they are recorded.
struct SpanFields(Map<String, Value>);

/// Records every span's fields into [`SpanFields`] (new span, later `record` calls).
struct SpanFieldsLayer;

impl<S> tracing_subscriber::Layer<S> for SpanFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            let mut fields = Map::new();
            attrs.record(&mut JsonVisitor(&mut fields));
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            if let Some(SpanFields(fields)) = span.extensions_mut().get_mut::<SpanFields>() {
                values.record(&mut JsonVisitor(fields));
            }
        }
    }
}

/// The fmt layer formats nothing itself: span fields are in [`SpanFields`] already.
struct NoFields;

impl<'writer> FormatFields<'writer> for NoFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _writer: Writer<'writer>,
        _fields: R,
    ) -> fmt::Result {
        Ok(())
    }
}

struct JsonLine {
    service: &'static str,
    /// `GOOGLE_CLOUD_PROJECT`: with it, a trace id becomes the link Cloud Logging follows.
    project: Option<String>,
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        line.insert(
            "ts".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        line.insert("service".into(), Value::String(self.service.into()));
        let severity = match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            tracing::Level::DEBUG | tracing::Level::TRACE => "DEBUG",
        };
        line.insert("severity".into(), Value::String(severity.into()));
        line.insert(
            "target".into(),
            Value::String(event.metadata().target().into()),
        );
        // Span fields, outermost first, so the innermost value wins.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    line.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let mut visitor = JsonVisitor(&mut line);
        event.record(&mut visitor);
        if let (Some(project), Some(Value::String(trace))) = (&self.project, line.get("trace_id")) {
            let link = format!("projects/{project}/traces/{trace}");
            line.insert("logging.googleapis.com/trace".into(), Value::String(link));
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
}

/// The request's correlation id, for handlers that pass it on (S2S calls, Pub/Sub attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(pub String);

impl CorrelationId {
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// Accepts a caller's id only if it is short and printable, so it is safe in logs, headers
    /// and message attributes; anything else is replaced by a fresh id.
    pub fn from_header(value: Option<&HeaderValue>) -> Self {
        value
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .filter(|v| {
                v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            })
            .map(|v| Self(v.to_owned()))
            .unwrap_or_default()
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<CorrelationId>()
            .cloned()
            .unwrap_or_default())
    }
}

tokio::task_local! {
    /// The tenant the request turned out to be for, set by [`record_tenant`] while it runs.
    static REQUEST_TENANT: std::cell::RefCell<Option<String>>;
}

/// Says whose request this is, once the service knows (a verified voting token, session or
/// S2S key, a login): it goes on the request's span (every log line of the request carries it)
/// and the request counts for that tenant's usage ([`crate::usage`]).
pub fn record_tenant(tenant: &str) {
    tracing::Span::current().record("tenant", tenant);
    let _ = REQUEST_TENANT.try_with(|t| *t.borrow_mut() = Some(tenant.to_owned()));
}

/// Marks the route template a request matched, for the outer layer's labels.
#[derive(Clone)]
struct RouteTemplate(String);

/// Inner layer (`Router::route_layer`): records which route template matched.
pub async fn record_route(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    if let Some(route) = &route {
        tracing::Span::current().record("route", route.as_str());
    }
    let mut response = next.run(req).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteTemplate(route));
    }
    response
}

/// Outer layer: creates or forwards `X-Correlation-ID`, opens the request span every log line
/// of the request inherits, logs the outcome with its latency, and counts it in Prometheus.
pub async fn observe_requests(
    axum::extract::State(metrics): axum::extract::State<HttpMetrics>,
    mut req: Request,
    next: Next,
) -> Response {
    let correlation = CorrelationId::from_header(req.headers().get(&CORRELATION_HEADER));
    req.extensions_mut().insert(correlation.clone());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        correlation_id = %correlation.0,
        method = %method,
        route = tracing::field::Empty,
        tenant = tracing::field::Empty,
        election_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    // The caller's trace, if it sent one (a public listener drops it first).
    crate::traces::continue_from_headers(&span, req.headers());
    if let Some(trace_id) = span.in_scope(crate::traces::current_trace_id) {
        span.record("trace_id", trace_id.as_str());
    }
    let started = Instant::now();
    let (mut response, tenant) = REQUEST_TENANT
        .scope(std::cell::RefCell::new(None), async {
            let response = next.run(req).instrument(span.clone()).await;
            (response, REQUEST_TENANT.with(|t| t.borrow_mut().take()))
        })
        .await;
    let latency = started.elapsed();
    if let (Some(usage), Some(tenant)) = (metrics.usage(), tenant) {
        usage.request(&tenant);
    }
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16();
    metrics.observe(&route, method.as_str(), status, latency);
    span.in_scope(|| {
        let latency_ms = latency.as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::warn!(status, latency_ms, "request failed");
        } else {
            tracing::info!(status, latency_ms, "request completed");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&correlation.0) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    response
}

/// Resolves on SIGTERM (Cloud Run's stop signal) or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_safe_ids_and_replaces_unsafe_ones() {
        let ok = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(CorrelationId::from_header(Some(&ok)).0, "abc-123_x.y:z");
        let bad = HeaderValue::from_static("has space\"quote");
        assert_ne!(CorrelationId::from_header(Some(&bad)).0, "has space\"quote");
        let long = HeaderValue::from_str(&"a".repeat(500)).unwrap();
        assert_eq!(CorrelationId::from_header(Some(&long)).0.len(), 36);
    }
}
