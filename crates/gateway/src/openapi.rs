//! The OpenAPI document of what the gateway serves (`GET /v1/openapi.json`),
//! for clients in languages without a Switchboard library. Kept beside the
//! routes it describes; `gateway.rs` checks every path it names is served.

use serde_json::{json, Value};

/// An operation's responses: `ok`, and the errors any request may meet.
fn responses(ok: Value) -> Value {
    let mut all = error_responses();
    if let (Some(all), Some(ok)) = (all.as_object_mut(), ok.as_object()) {
        all.extend(ok.clone());
    }
    all
}

fn error_responses() -> Value {
    let error = json!({ "$ref": "#/components/schemas/Error" });
    let described =
        |what: &str| json!({ "description": what, "content": { "application/json": { "schema": error } } });
    json!({
        "400": described("bad_request, bad_arguments"),
        "401": described("an unknown token, or an Authorization that is not Bearer"),
        "403": described("permission_denied, or a foreign Host or Origin"),
        "404": described("no_such_service, no_such_method, no_such_instance"),
        "413": described("payload_too_large"),
        "422": described("rejected by the service"),
        "429": described("overloaded"),
        "503": described("shutting_down, service_paused, service_failed"),
        "504": described("timeout"),
    })
}

/// The document.
pub fn document() -> Value {
    let bearer = json!([{ "bearer": [] }, {}]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The bus over HTTP. Requests are the principal of their bearer token, else anonymous; the daemon's policy applies as on its socket."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": { "error": { "type": "string" }, "message": { "type": "string" } }
                }
            }
        },
        "paths": {
            "/v1/call/{service}/{method}": {
                "post": {
                    "summary": "Call SERVICE.METHOD with the JSON body as its arguments",
                    "security": bearer,
                    "parameters": [
                        { "name": "service", "in": "path", "required": true, "schema": { "type": "string" } },
                        { "name": "method", "in": "path", "required": true, "schema": { "type": "string" } },
                        { "name": "timeout", "in": "query", "schema": { "type": "string", "example": "500ms" } },
                        { "name": "instance", "in": "query", "schema": { "type": "integer" } }
                    ],
                    "requestBody": { "content": { "application/json": {} } },
                    "responses": responses(json!({ "200": { "description": "the reply, as JSON", "content": { "application/json": {} } } }))
                }
            },
            "/v1/subscribe": {
                "get": {
                    "summary": "Messages matching a topic pattern, as Server-Sent Events (message, lagged)",
                    "security": bearer,
                    "parameters": [{ "name": "pattern", "in": "query", "schema": { "type": "string", "example": "db.>" } }],
                    "responses": responses(json!({ "200": { "description": "an event stream", "content": { "text/event-stream": {} } } }))
                }
            },
            "/metrics": {
                "get": {
                    "summary": "The Prometheus exposition (needs the metrics permission)",
                    "security": bearer,
                    "responses": responses(json!({ "200": { "description": "OpenMetrics text", "content": { "application/openmetrics-text": {} } } }))
                }
            },
            "/healthz": { "get": { "summary": "Alive", "responses": { "200": { "description": "ok" } } } },
            "/readyz": { "get": { "summary": "Ready: the daemon is serving", "responses": { "200": { "description": "ready" } } } },
            "/v1/openapi.json": { "get": { "summary": "This document", "responses": { "200": { "description": "OpenAPI 3.1" } } } }
        }
    })
}
