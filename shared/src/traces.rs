//! OpenTelemetry traces: export over OTLP/gRPC (Cloud Trace takes OTLP), a parent-based ratio
//! sampler, and W3C `traceparent` propagation through HTTP headers and Pub/Sub attributes.
//!
//! Spans carry tenant, route, election and outcome: never a token, token hash, receipt, choice,
//! national id or member id (`#[tracing::instrument(skip_all, ...)]` everywhere for that reason),
//! and no SQL text.
//!
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (unset: nothing is exported) and `TRACE_SAMPLE_RATIO` (0.1; 0
//! exports nothing): a trace whose root is sampled is exported whole, whichever service it
//! reaches, because every hop honours the caller's decision (parent-based).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::Env;

/// Where and how much to export.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, e.g. `http://127.0.0.1:4317`.
    pub endpoint: Option<String>,
    /// `TRACE_SAMPLE_RATIO` (default 0.1): the share of new traces exported; 0 turns it off.
    pub sample_ratio: f64,
}

impl TraceSettings {
    pub fn from_env(env: &mut Env) -> Self {
        let sample_ratio: f64 = env.parse_or("TRACE_SAMPLE_RATIO", 0.1);
        if !(0.0..=1.0).contains(&sample_ratio) {
            env.problem("TRACE_SAMPLE_RATIO must be between 0 and 1");
        }
        Self {
            endpoint: env.optional_string("OTEL_EXPORTER_OTLP_ENDPOINT"),
            sample_ratio: sample_ratio.clamp(0.0, 1.0),
        }
    }
}

/// An exporter's own Tokio runtime: the SDK's batch processor exports from a plain thread, and
/// tonic's channel needs a reactor (without one the export panics and every span is lost).
#[derive(Debug)]
struct OnRuntime<E> {
    inner: E,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl<E: SpanExporter> SpanExporter for OnRuntime<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let result = match tokio::runtime::Handle::try_current() {
            // Called from a Tokio thread (a flush from async code): run it where we are.
            Ok(_) => std::thread::scope(|s| {
                s.spawn(|| self.runtime.block_on(self.inner.export(batch)))
                    .join()
                    .unwrap_or_else(|_| {
                        Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                            "span export panicked".into(),
                        ))
                    })
            }),
            Err(_) => self.runtime.block_on(self.inner.export(batch)),
        };
        std::future::ready(result)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A service's tracer provider; flushes what is left when dropped.
pub struct Tracing {
    provider: SdkTracerProvider,
    service: &'static str,
}

impl Tracing {
    /// `None` when no endpoint is configured. A ratio of 0 keeps the provider but samples no
    /// new trace, so nothing is exported.
    pub fn new(service: &'static str, settings: &TraceSettings) -> anyhow::Result<Option<Self>> {
        let Some(endpoint) = settings.endpoint.as_deref() else {
            return Ok(None);
        };
        let runtime = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("otlp-export")
                .enable_all()
                .build()?,
        );
        let exporter = {
            // tonic builds its channel on the runtime it will run on.
            let _entered = runtime.enter();
            use opentelemetry_otlp::WithExportConfig;
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(5))
                .build()?
        };
        Ok(Some(Self::with_exporter(
            service,
            OnRuntime {
                inner: exporter,
                runtime,
            },
            settings.sample_ratio,
        )))
    }

    fn with_exporter(
        service: &'static str,
        exporter: impl SpanExporter + 'static,
        ratio: f64,
    ) -> Self {
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        Self { provider, service }
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans of this provider.
    pub fn layer<S>(
        &self,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer(self.service))
    }

    /// Exports every finished span now (tests, shutdown). Blocks until the exporter answered:
    /// call it where blocking is allowed.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "flushing traces failed");
        }
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);
impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(key.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);
impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MapInjector<'a>(&'a mut HashMap<String, String>);
impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapExtractor<'a>(&'a HashMap<String, String>);
impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Adds the current span's `traceparent` to outgoing headers.
pub fn inject_headers(headers: &mut HeaderMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// Makes `span` continue the caller's trace, if the headers name one.
pub fn continue_from_headers(span: &tracing::Span, headers: &HeaderMap) {
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(context);
}

/// Adds the current span's `traceparent` to a message's attributes.
pub fn inject_attributes(attributes: &mut HashMap<String, String>) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut MapInjector(attributes));
}

/// The trace context a message's attributes carry (empty when none).
pub fn from_attributes(attributes: &HashMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(&MapExtractor(attributes))
}

/// The current span's trace id, for log lines (`None` when no trace is recorded).
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}
