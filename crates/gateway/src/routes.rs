//! The gateway's endpoints. Each request: its `Host` and `Origin` checked
//! (`guard`), its principal found from its bearer token, then the bus asked
//! on that principal's behalf; every failure answered with its status and
//! `{"error", "message"}`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State as Extract};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use switchboard::{Bus, CallError, CallOptions, Headers, Item, SubscribeError};
use switchboard_proto::json;
use switchboard_proto::stats::{METRICS_SCRAPE, METRICS_SERVICE};

use crate::guard;
use crate::sessions::Sessions;
use crate::status::{body, status_of};

/// Largest request body taken (a call's arguments); the bus's own frame
/// limit still applies after it.
const MAX_BODY: usize = 8 << 20;

#[derive(Clone)]
pub struct State(Arc<Shared>);

struct Shared {
    sessions: Sessions,
    listen: SocketAddr,
}

impl State {
    pub fn new(sessions: Sessions, listen: SocketAddr) -> Self {
        Self(Arc::new(Shared { sessions, listen }))
    }
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/v1/call/{service}/{method}", post(call))
        .route("/v1/subscribe", get(subscribe))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/v1/openapi.json",
            get(|| async {
                let document = crate::openapi::document().to_string();
                ([(header::CONTENT_TYPE, "application/json")], document)
            }),
        )
        .route("/readyz", get(ready))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), guarded))
        .with_state(state)
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body(kind, message)).into_response()
}

fn call_error(err: &CallError) -> Response {
    let status = err.code().map_or(StatusCode::BAD_GATEWAY, status_of);
    error(status, err.kind(), &err.to_string())
}

/// Host and Origin first: nothing else is looked at for a request that fails them.
async fn guarded(Extract(state): Extract<State>, request: Request, next: Next) -> Response {
    let checked = {
        let header = |name: header::HeaderName| request.headers().get(name).and_then(|v| v.to_str().ok());
        let changes_state = request.method() != Method::GET && request.method() != Method::HEAD;
        guard::check(header(header::HOST), header(header::ORIGIN), changes_state, state.0.listen)
    };
    if let Err(refused) = checked {
        return error(StatusCode::FORBIDDEN, "permission_denied", &refused.message());
    }
    next.run(request).await
}

/// The request's session: as the principal of its bearer token, else anonymous.
async fn session(state: &State, headers: &HeaderMap) -> Result<Bus, Response> {
    let bearer = match headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => None,
        Some(Ok(value)) => match value.strip_prefix("Bearer ") {
            Some(token) => Some(token.trim()),
            None => {
                return Err(error(StatusCode::UNAUTHORIZED, "bad_request", "Authorization is Bearer TOKEN"))
            }
        },
        Some(Err(_)) => {
            return Err(error(StatusCode::UNAUTHORIZED, "bad_request", "Authorization is not text"))
        }
    };
    let Some(principal) = state.0.sessions.principal(bearer) else {
        return Err(error(StatusCode::UNAUTHORIZED, "permission_denied", "unknown token"));
    };
    state
        .0
        .sessions
        .bus(principal)
        .await
        .map_err(|err| error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", &err.to_string()))
}

/// `X-Sb-Name: value` request headers, as the call's headers.
fn call_headers(headers: &HeaderMap) -> Result<Headers, String> {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(name, value)| {
            let key = name.as_str().strip_prefix("x-sb-")?;
            Some((key.to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    Headers::from_pairs(pairs).map_err(|err| err.to_string())
}

async fn call(
    Extract(state): Extract<State>,
    Path((service, method)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    payload: Bytes,
) -> Response {
    let bus = match session(&state, &headers).await {
        Ok(bus) => bus,
        Err(refused) => return refused,
    };
    let bad = |message: String| error(StatusCode::BAD_REQUEST, "bad_request", &message);
    let timeout = match query.get("timeout").map(|t| humantime::parse_duration(t)) {
        None => switchboard::DEFAULT_TIMEOUT,
        Some(Ok(timeout)) => timeout.min(Duration::from_secs(3600)),
        Some(Err(err)) => return bad(format!("timeout: {err} (try 500ms, 5s)")),
    };
    let instance = match query.get("instance").map(|i| i.parse()) {
        None => None,
        Some(Ok(instance)) => Some(instance),
        Some(Err(err)) => return bad(format!("instance: {err}")),
    };
    let headers = match call_headers(&headers) {
        Ok(headers) => headers,
        Err(why) => return bad(why),
    };
    let arguments = match json::payload_from_json(Some(&payload)) {
        Ok(arguments) => arguments,
        Err(err) => return bad(err.to_string()),
    };
    let options = CallOptions { timeout, instance, headers, retry: None };
    match bus.call_with(format!("{service}.{method}").as_str(), arguments, options).await {
        Ok(reply) => {
            let reply = json::display_payload(&reply).to_string();
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], reply).into_response()
        }
        Err(err) => call_error(&err),
    }
}

/// `GET /v1/subscribe?pattern=P`: Server-Sent Events, `message` (retained
/// values first) and `lagged` (messages this subscriber missed), until the
/// client goes away.
async fn subscribe(
    Extract(state): Extract<State>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let bus = match session(&state, &headers).await {
        Ok(bus) => bus,
        Err(refused) => return refused,
    };
    let pattern = query.get("pattern").map_or(">", String::as_str);
    let subscription = match bus.subscribe(pattern).await {
        Ok(subscription) => subscription,
        Err(SubscribeError::InvalidPattern(err)) => {
            return error(StatusCode::BAD_REQUEST, "bad_request", &format!("pattern {pattern:?}: {err}"))
        }
        Err(SubscribeError::Refused(err)) => return call_error(&err),
    };
    let events = futures_util::stream::unfold(subscription, |mut subscription| async move {
        let event = match subscription.next().await? {
            Item::Message(message) => Event::default().event("message").data(
                serde_json::json!({
                    "topic": message.topic.as_str(),
                    "payload": json::display_payload(&message.payload),
                    "retained": message.retained,
                    "publisher": message.publisher.principal.to_string(),
                })
                .to_string(),
            ),
            Item::Lagged(missed) => {
                Event::default().event("lagged").data(serde_json::json!({ "missed": missed }).to_string())
            }
        };
        Some((Ok::<_, std::convert::Infallible>(event), subscription))
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

async fn metrics(Extract(state): Extract<State>, headers: HeaderMap) -> Response {
    let bus = match session(&state, &headers).await {
        Ok(bus) => bus,
        Err(refused) => return refused,
    };
    match bus.call(format!("{METRICS_SERVICE}.{METRICS_SCRAPE}").as_str(), Bytes::new()).await {
        Ok(text) => {
            let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            (StatusCode::OK, [(header::CONTENT_TYPE, kind)], text).into_response()
        }
        Err(err) => call_error(&err),
    }
}

/// Ready once the gateway's anonymous session reaches the daemon (which
/// lets apps start only after it listens and has recovered its queues).
async fn ready(Extract(state): Extract<State>) -> Response {
    match state.0.sessions.bus(switchboard_daemon::policy::Principal::anonymous()).await {
        Ok(bus) if bus.whoami().await.is_ok() => (StatusCode::OK, "ready\n").into_response(),
        _ => error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the daemon is not serving"),
    }
}
