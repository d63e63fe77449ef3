//! The gateway's routes and what every request goes through: its `Host`
//! and `Origin` checked (`guard`), then its principal found — a bearer
//! token, else a browser's session cookie, else `anonymous` — and the bus
//! reached on that principal's behalf. Every failure is answered with its
//! status and `{"error", "message"}`.

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State as Extract};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use switchboard_daemon::host::{Principal, RouterHandle};
use switchboard_proto::stats::{METRICS_SCRAPE, METRICS_SERVICE};
use switchboard_proto::supervision as sup;
use switchboard_proto::{sys, ErrorCode};

use crate::cookies::{self, Cookies};
use crate::endpoints;
use crate::leases::Leases;
use crate::listener::Peer;
use crate::ops::{Caller, Failure, Outcome};
use crate::sessions::Sessions;
use crate::{console, guard, ws};

/// Largest request body taken (a call's arguments); the bus's own frame
/// limit still applies after it.
pub const MAX_BODY: usize = 8 << 20;

#[derive(Clone)]
pub struct State(pub Arc<Shared>);

pub struct Shared {
    pub sessions: Sessions,
    pub router: RouterHandle,
    pub site: guard::Site,
    pub leases: Leases,
    pub cookies: Cookies,
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/v1/call/{service}/{method}", post(endpoints::call))
        .route("/v1/notify/{service}/{method}", post(endpoints::notify))
        .route("/v1/broadcast/{service}/{method}", post(endpoints::broadcast))
        .route("/v1/publish/{topic}", post(endpoints::publish))
        .route("/v1/subscribe", get(endpoints::subscribe))
        .route("/v1/queues/{queue}/messages", post(endpoints::put).get(endpoints::pull))
        .route("/v1/queues/{queue}/messages/{receipt}/ack", post(endpoints::ack))
        .route("/v1/queues/{queue}/messages/{receipt}/nack", post(endpoints::nack))
        .route("/v1/session", post(login).delete(logout))
        .route("/v1/ws", get(ws::upgrade))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route(
            "/v1/openapi.json",
            get(|| async {
                let document = crate::openapi::document().to_string();
                ([(header::CONTENT_TYPE, "application/json")], document)
            }),
        )
        .merge(console::routes())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), guarded))
        .with_state(state)
}

/// A failure as its response.
impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// An operation's outcome as a JSON response with `status` on success.
pub fn respond(status: StatusCode, outcome: Outcome) -> Response {
    match outcome {
        Ok(value) => {
            (status, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
        }
        Err(failure) => failure.into_response(),
    }
}

/// Host and Origin first: nothing else is looked at for a request that
/// fails them. A WebSocket upgrade changes state as a POST does.
async fn guarded(Extract(state): Extract<State>, request: Request, next: Next) -> Response {
    let checked = {
        let header = |name: header::HeaderName| request.headers().get(name).and_then(|v| v.to_str().ok());
        let upgrade = request.headers().contains_key(header::UPGRADE);
        let changes_state = upgrade || (request.method() != Method::GET && request.method() != Method::HEAD);
        state.0.site.check(header(header::HOST), header(header::ORIGIN), changes_state)
    };
    if let Err(refused) = checked {
        return Failure::new(StatusCode::FORBIDDEN, "permission_denied", refused.message()).into_response();
    }
    let announced =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|length| length > MAX_BODY as u64) {
        return too_large();
    }
    let mut response = next.run(request).await;
    // A body over the limit is refused by axum in plain text: say it in JSON.
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json(response.headers()) {
        response = too_large();
    }
    response
}

fn too_large() -> Response {
    let message = format!("the request body is over the gateway's {MAX_BODY} bytes");
    Failure::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message).into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|kind| kind.as_bytes().starts_with(b"application/json"))
}

/// The request's principal: its bearer token's, else its session cookie's,
/// else its TLS client certificate's (`cert:CN`), else anonymous. An
/// unknown token or cookie is refused, not taken as anonymous, so a typo is
/// not silently less privileged.
fn principal(state: &State, parts: &Parts) -> Result<Principal, Failure> {
    let unauthorized = |message: &str| Failure::new(StatusCode::UNAUTHORIZED, "permission_denied", message);
    let headers = &parts.headers;
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| unauthorized("Authorization is not text"))?;
        let token =
            value.strip_prefix("Bearer ").ok_or_else(|| unauthorized("Authorization is Bearer TOKEN"))?;
        return state.0.sessions.principal(Some(token.trim())).ok_or_else(|| unauthorized("unknown token"));
    }
    let cookie =
        headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(cookies::find);
    if let Some(value) = cookie {
        return state
            .0
            .cookies
            .principal(value)
            .ok_or_else(|| unauthorized("the session cookie has expired; sign in again"));
    }
    let certified =
        parts.extensions.get::<ConnectInfo<Peer>>().and_then(|peer| peer.0.common_name.as_deref());
    Ok(certified.map_or_else(Principal::anonymous, Principal::certificate))
}

impl FromRequestParts<State> for Caller {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, Failure> {
        let principal = principal(state, parts)?;
        let bus =
            state.0.sessions.bus(principal.clone()).await.map_err(|err| {
                Failure::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", err.to_string())
            })?;
        Ok(Caller { principal, bus })
    }
}

/// `POST /v1/session` with `Authorization: Bearer TOKEN`: a session cookie
/// for the token's principal.
async fn login(Extract(state): Extract<State>, parts: Parts) -> Response {
    if !parts.headers.contains_key(header::AUTHORIZATION) {
        let message = "send the token once as Authorization: Bearer TOKEN";
        return Failure::new(StatusCode::UNAUTHORIZED, "permission_denied", message).into_response();
    }
    let principal = match principal(&state, &parts) {
        Ok(principal) => principal,
        Err(failure) => return failure.into_response(),
    };
    let name = principal.name.to_string();
    match state.0.cookies.open(principal) {
        Ok(value) => {
            let body = serde_json::json!({ "principal": name }).to_string();
            let headers = [
                (header::SET_COOKIE, cookies::set(&value, state.0.site.https)),
                (header::CONTENT_TYPE, "application/json".into()),
            ];
            (StatusCode::OK, headers, body).into_response()
        }
        Err(err) => Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "other", err.to_string()).into_response(),
    }
}

async fn logout(Extract(state): Extract<State>, headers: HeaderMap) -> Response {
    for value in
        headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).filter_map(cookies::find)
    {
        state.0.cookies.close(value);
    }
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookies::clear(state.0.site.https))]).into_response()
}

async fn metrics(caller: Caller) -> Response {
    match caller.bus.call(format!("{METRICS_SERVICE}.{METRICS_SCRAPE}").as_str(), Bytes::new()).await {
        Ok(text) => {
            let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            (StatusCode::OK, [(header::CONTENT_TYPE, kind)], text).into_response()
        }
        Err(err) => Failure::call(&err).into_response(),
    }
}

/// Ready once the daemon serves (it starts apps only after it listens and
/// has recovered its queues) and no supervised service that starts with the
/// daemon (`start = "auto"`) is still between states.
async fn ready(Extract(state): Extract<State>) -> Response {
    let unready = |message: String| Failure::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message);
    let Ok(bus) = state.0.sessions.bus(Principal::daemon()).await else {
        return unready("the daemon is not serving".into()).into_response();
    };
    let target = format!("{}.{}", sup::SERVICES_SERVICE, sup::STATUS);
    let asked = bus.call(target.as_str(), Bytes::from(sys::encode(&sup::ServiceRef::default()))).await;
    let statuses: Vec<sup::ServiceStatus> = match asked.map(|reply| sys::decode(&reply)) {
        Ok(Ok(statuses)) => statuses,
        Ok(Err(err)) => {
            return unready(format!("the supervisor's status did not decode: {err}")).into_response()
        }
        // No supervisor hosted: nothing to wait for.
        Err(err) if err.code() == Some(ErrorCode::NoSuchService) => Vec::new(),
        Err(err) => return Failure::call(&err).into_response(),
    };
    let settling: Vec<String> = statuses
        .iter()
        .filter(|s| s.start_type == "auto" && s.state.ends_with("Pending"))
        .map(|s| format!("{} ({})", s.service, s.state))
        .collect();
    if settling.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        unready(format!("services still settling: {}", settling.join(", "))).into_response()
    }
}
