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

fn path_parameter(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
}

fn query_parameter(name: &str, kind: &str, example: &str) -> Value {
    json!({ "name": name, "in": "query", "schema": { "type": kind, "example": example } })
}

/// A POST to a `{service}/{method}` path.
fn target_operation(summary: &str, extra: &[Value], ok: Value) -> Value {
    let mut parameters = vec![
        path_parameter("service"),
        path_parameter("method"),
        query_parameter("timeout", "string", "500ms"),
        query_parameter("instance", "integer", "3"),
    ];
    parameters.extend_from_slice(extra);
    json!({
        "post": {
            "summary": summary,
            "security": security(),
            "parameters": parameters,
            "requestBody": { "content": { "application/json": {} } },
            "responses": responses(ok)
        }
    })
}

/// A bearer token, a session cookie, a client certificate (over HTTPS), or
/// nothing (anonymous).
fn security() -> Value {
    json!([{ "bearer": [] }, { "cookie": [] }, { "certificate": [] }, {}])
}

fn json_answer(status: &str, what: &str) -> Value {
    json!({ status: { "description": what, "content": { "application/json": {} } } })
}

/// The queue and session paths.
fn queue_paths() -> Value {
    let queue = path_parameter("queue");
    let receipt = path_parameter("receipt");
    json!({
        "/v1/queues/{queue}/messages": {
            "post": {
                "summary": "Put the JSON body on the queue; answered once it is on disk",
                "security": security(),
                "parameters": [queue, query_parameter("priority", "integer", "5"), query_parameter("id", "string", "order-17"), query_parameter("ttl", "string", "1h")],
                "requestBody": { "content": { "application/json": {} } },
                "responses": responses(json_answer("201", "{queue, id}"))
            },
            "get": {
                "summary": "Take up to count messages, waiting up to wait for the first; each has a receipt to ack or nack before its lease passes",
                "security": security(),
                "parameters": [queue, query_parameter("count", "integer", "10"), query_parameter("wait", "string", "5s"), query_parameter("lease", "string", "60s")],
                "responses": responses(json_answer("200", "{queue, messages: [{receipt, id, attempt, priority, headers, payload}]}"))
            }
        },
        "/v1/queues/{queue}/messages/{receipt}/ack": {
            "post": { "summary": "Done: the message is removed", "security": security(), "parameters": [queue, receipt], "responses": responses(json_answer("200", "{acked: id}")) }
        },
        "/v1/queues/{queue}/messages/{receipt}/nack": {
            "post": {
                "summary": "Not done: the message returns to the queue after delay",
                "security": security(),
                "parameters": [queue, receipt, query_parameter("delay", "string", "5s")],
                "responses": responses(json_answer("200", "{nacked: id}"))
            }
        },
        "/v1/session": {
            "post": { "summary": "Exchange a bearer token for an HttpOnly, SameSite=Strict session cookie (for browsers)", "security": [{ "bearer": [] }], "responses": responses(json_answer("200", "{principal}")) },
            "delete": { "summary": "End the browser session", "responses": { "204": { "description": "the cookie is cleared" } } }
        },
        "/v1/ws": {
            "get": { "summary": "A WebSocket speaking JSON ops (call, notify, broadcast, publish, subscribe, put, consume, ack, nack); see docs/gateway.md", "security": security(), "responses": responses(json!({ "101": { "description": "switching to WebSocket" } })) }
        },
        "/": { "get": { "summary": "The web console", "responses": { "200": { "description": "the page", "content": { "text/html": {} } } } } }
    })
}

/// The document.
pub fn document() -> Value {
    let bearer = security();
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The bus over HTTP. Requests are the principal of their bearer token, else anonymous; the daemon's policy applies as on its socket."
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "cookie": { "type": "apiKey", "in": "cookie", "name": crate::cookies::NAME },
                "certificate": { "type": "mutualTLS", "description": "a client certificate signed by [gateway.tls] client_ca: the principal cert:CN" }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": { "error": { "type": "string" }, "message": { "type": "string" } }
                }
            }
        },
        "paths": {
            "/v1/call/{service}/{method}": target_operation(
                "Call SERVICE.METHOD with the JSON body as its arguments",
                &[],
                json_answer("200", "the reply, as JSON")
            ),
            "/v1/notify/{service}/{method}": target_operation(
                "Send a one-way notification (to every instance with all=true)",
                &[query_parameter("all", "boolean", "true")],
                json_answer("202", "{notified, all}")
            ),
            "/v1/broadcast/{service}/{method}": target_operation(
                "Call every instance; one entry per instance",
                &[],
                json_answer("200", "{complete, replies: [{instance, reply} | {instance, error, message}]}")
            ),
            "/v1/publish/{topic}": {
                "post": {
                    "summary": "Publish the JSON body on TOPIC (retain=true keeps it as the topic's last value)",
                    "security": bearer,
                    "parameters": [path_parameter("topic"), query_parameter("retain", "boolean", "true")],
                    "requestBody": { "content": { "application/json": {} } },
                    "responses": responses(json_answer("202", "{published, retain}"))
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
    });
    if let (Some(paths), Value::Object(more)) = (document["paths"].as_object_mut(), queue_paths()) {
        paths.extend(more);
    }
    document
}
