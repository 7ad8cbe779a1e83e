//! What every service's OpenAPI document needs beyond its own `#[utoipa::path]` annotations:
//! the routes [`crate::service`] adds (`/openapi.json`, `/healthz`, `/readyz`, `/metrics`),
//! the 503 its request limits can give on any route, and problems under the media type they
//! are sent with. Done here, once, so a document matches what the shared router answers even
//! for a route whose annotation forgot it (checked with schemathesis, `infra/local/schemathesis.sh`).

use utoipa::openapi::path::{Operation, Paths};
use utoipa::openapi::{OpenApi, RefOr, Response};
use utoipa::{PartialSchema, ToSchema};

use crate::problem::{Problem, CONTENT_TYPE as PROBLEM_CONTENT_TYPE};

/// Which operational routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operational {
    /// `/openapi.json`, `/healthz`, `/readyz` and `/metrics` ([`crate::service::router`]).
    WithMetrics,
    /// The same without `/metrics` ([`crate::service::public_router`]).
    Public,
}

/// Completes a service's generated document (see the module doc).
pub fn complete(mut doc: OpenApi, operational: Operational) -> OpenApi {
    let paths = operational_paths(operational);
    doc.paths.paths.extend(paths.paths);
    doc.components
        .get_or_insert_with(Default::default)
        .schemas
        .entry(Problem::name().into_owned())
        .or_insert_with(Problem::schema);
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        {
            complete_operation(operation);
        }
    }
    doc
}

fn complete_operation(operation: &mut Operation) {
    let responses = &mut operation.responses.responses;
    // The request timeout and the concurrency limit (`service::ServerLimits`) sit in front of
    // every route.
    responses.entry("503".to_owned()).or_insert_with(|| {
        RefOr::T(problem_response(
            "Overloaded or too slow (`overloaded`, `request-timeout`; Retry-After)",
        ))
    });
    for response in responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        // utoipa files every body under `application/json`; a problem is sent as
        // `application/problem+json` (RFC 9457, `Problem::into_response`).
        let is_problem = response
            .content
            .get("application/json")
            .is_some_and(|content| matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == problem_ref()));
        if is_problem {
            if let Some(content) = response.content.shift_remove("application/json") {
                response
                    .content
                    .insert(PROBLEM_CONTENT_TYPE.to_owned(), content);
            }
        }
    }
}

fn problem_ref() -> String {
    format!("#/components/schemas/{}", Problem::name())
}

fn problem_response(description: &str) -> Response {
    utoipa::openapi::ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_CONTENT_TYPE,
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::new(problem_ref()))))
                .build(),
        )
        .build()
}

/// The shared router's own routes, as it answers them (`metrics::operational_routes`).
fn operational_paths(operational: Operational) -> Paths {
    let problem = serde_json::json!({ "$ref": problem_ref() });
    let status = |value: &str| {
        serde_json::json!({
            "type": "object",
            "required": ["status"],
            "properties": { "status": { "type": "string", "enum": [value] } }
        })
    };
    let mut paths = serde_json::json!({
        "/openapi.json": { "get": {
            "tags": ["operational"],
            "summary": "This document",
            "operationId": "openapi",
            "responses": { "200": {
                "description": "The OpenAPI document of this listener",
                "content": { "application/json": { "schema": { "type": "object" } } }
            } }
        } },
        "/healthz": { "get": {
            "tags": ["operational"],
            "summary": "Liveness: the process answers",
            "operationId": "healthz",
            "responses": { "200": {
                "description": "Alive",
                "content": { "application/json": { "schema": status("ok") } }
            } }
        } },
        "/readyz": { "get": {
            "tags": ["operational"],
            "summary": "Readiness: the database answers (checked at most once a second)",
            "operationId": "readyz",
            "responses": {
                "200": {
                    "description": "Ready",
                    "content": { "application/json": { "schema": status("ready") } }
                },
                "503": {
                    "description": "A dependency does not answer (`not-ready`, Retry-After), or overloaded (`overloaded`, `request-timeout`)",
                    "content": { PROBLEM_CONTENT_TYPE: { "schema": problem } }
                }
            }
        } }
    });
    if operational == Operational::WithMetrics {
        paths["/metrics"] = serde_json::json!({ "get": {
            "tags": ["operational"],
            "summary": "Prometheus metrics",
            "operationId": "metrics",
            "responses": { "200": {
                "description": "The metrics in Prometheus' text format (version 0.0.4)",
                "content": { "text/plain": { "schema": { "type": "string" } } }
            } }
        } });
    }
    serde_json::from_value(paths).expect("the operational paths are a valid OpenAPI fragment")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated() -> OpenApi {
        // What a service's `#[utoipa::path]` gives: a problem under `application/json`.
        serde_json::from_value(serde_json::json!({
            "openapi": "3.1.0",
            "info": { "title": "t", "version": "0" },
            "paths": { "/v1/things": { "get": { "responses": {
                "200": { "description": "ok", "content": { "application/json": { "schema": { "type": "object" } } } },
                "404": { "description": "none", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Problem" } } } }
            } } } }
        }))
        .unwrap()
    }

    fn json(doc: &OpenApi) -> serde_json::Value {
        serde_json::to_value(doc).unwrap()
    }

    #[test]
    fn problems_are_documented_as_problem_json_and_other_bodies_stay() {
        let doc = json(&complete(generated(), Operational::WithMetrics));
        let get = &doc["paths"]["/v1/things"]["get"]["responses"];
        assert!(get["404"]["content"]["application/problem+json"]["schema"]["$ref"].is_string());
        assert!(get["404"]["content"]["application/json"].is_null());
        assert!(get["200"]["content"]["application/json"].is_object());
        // The request limits' 503, on every route.
        assert!(get["503"]["content"]["application/problem+json"].is_object());
        assert!(doc["components"]["schemas"]["Problem"].is_object());
    }

    #[test]
    fn the_operational_routes_are_in_the_document_the_listener_serves() {
        let full = json(&complete(generated(), Operational::WithMetrics));
        for path in ["/openapi.json", "/healthz", "/readyz", "/metrics"] {
            assert!(full["paths"][path]["get"].is_object(), "{path}");
            assert!(full["paths"][path]["get"]["responses"]["503"].is_object());
        }
        let readyz = &full["paths"]["/readyz"]["get"]["responses"]["503"]["content"];
        assert!(readyz["application/problem+json"].is_object());
        let public = json(&complete(generated(), Operational::Public));
        assert!(public["paths"]["/healthz"]["get"].is_object());
        assert!(public["paths"]["/metrics"].is_null());
    }
}
