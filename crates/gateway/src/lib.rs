//! The gateway, hosted by `switchboard up` when the config has
//! `[gateway] listen = "127.0.0.1:8080"`: the bus over HTTP. Every request
//! is a principal — a bearer token from the config (`token:NAME`), else
//! `anonymous` — and the gateway opens its bus sessions on that principal's
//! behalf, so the policy and the limits apply exactly as on the socket,
//! never as the daemon's own user.
//!
//! Endpoints (docs/gateway.md, and `/v1/openapi.json`): calls,
//! notifications and broadcasts (`/v1/call|notify|broadcast/{service}/{method}`),
//! topics (`/v1/publish/{topic}`, `/v1/subscribe` as Server-Sent Events),
//! queues (`/v1/queues/{queue}/messages`, with receipts to ack or nack), one
//! WebSocket for all of it (`/v1/ws`), browser sessions (`/v1/session`),
//! `/metrics`, `/healthz`, `/readyz`, and the web console at `/`. Errors
//! carry the status of their kind (`status.rs`) and the body the CLI
//! prints. Plain HTTP, so loopback only (TLS for it is not built yet).

mod console;
mod cookies;
mod endpoints;
mod guard;
mod leases;
mod openapi;
mod ops;
mod routes;
mod sessions;
mod status;
mod ws;

use std::net::SocketAddr;

use bytes::Bytes;
use serde::Deserialize;
use switchboard_daemon::host::{App, AppContext, AppError, ConfigError, Section};
use tokio_util::sync::CancellationToken;

/// `[gateway]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: String,
}

/// Where the gateway listens, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    pub listen: Option<SocketAddr>,
}

pub struct Gateway {
    stop: CancellationToken,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl App for Gateway {
    const NAME: &'static str = "gateway";
    const SECTIONS: &'static [&'static str] = &["gateway"];
    type Config = GatewayConfig;

    fn configure(section: &Section<'_>) -> Result<GatewayConfig, ConfigError> {
        #[derive(Deserialize)]
        struct File {
            gateway: Option<Raw>,
        }
        let Some(raw) = section.parse::<File>()?.gateway else { return Ok(GatewayConfig { listen: None }) };
        let listen: SocketAddr = raw.listen.parse().map_err(|err| {
            section.invalid("gateway.listen", format!("{:?} is not an address and port: {err}", raw.listen))
        })?;
        if !listen.ip().is_loopback() {
            let why = format!(
                "{listen} is not loopback: the gateway speaks plain HTTP, so it listens on loopback only"
            );
            return Err(section.invalid("gateway.listen", why));
        }
        Ok(GatewayConfig { listen: Some(listen) })
    }

    async fn start(context: AppContext, config: GatewayConfig, _: Option<Bytes>) -> Result<Self, AppError> {
        let stop = CancellationToken::new();
        let Some(listen) = config.listen else { return Ok(Self { stop, serving: None }) };
        let socket = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|err| AppError::new(Self::NAME, format!("cannot listen on {listen}: {err}")))?;
        let listen = socket.local_addr().map_err(|err| AppError::new(Self::NAME, err))?;
        let endpoint = context
            .endpoints
            .first()
            .cloned()
            .ok_or_else(|| AppError::new(Self::NAME, "the daemon listens nowhere"))?;
        let shared = routes::Shared {
            sessions: sessions::Sessions::new(context.router.clone(), endpoint),
            router: context.router,
            listen,
            leases: leases::Leases::default(),
            cookies: cookies::Cookies::default(),
        };
        let state = routes::State(std::sync::Arc::new(shared));
        let app = routes::router(state);
        let shutdown = stop.clone();
        tracing::info!("gateway listening on http://{listen}");
        let serving = tokio::spawn(async move {
            let served = axum::serve(socket, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
            if let Err(err) = served {
                tracing::warn!("the gateway stopped: {err}");
            }
        });
        Ok(Self { stop, serving: Some(serving) })
    }

    async fn reload(&mut self, config: GatewayConfig) -> Result<Bytes, String> {
        // Moving the listener is a restart of the daemon's: say so instead of
        // pretending.
        let _ = config;
        Ok(Bytes::from_static(b"the gateway's address changes when the daemon restarts"))
    }

    async fn stop(self) {
        self.stop.cancel();
        if let Some(serving) = self.serving {
            let _ = serving.await;
        }
    }
}
