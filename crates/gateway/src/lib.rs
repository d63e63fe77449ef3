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
//! prints. Plain HTTP on loopback, HTTPS anywhere (`[gateway.tls]`), where a
//! client certificate signed by the configured CA makes a `cert:CN` principal.

mod console;
mod cookies;
mod endpoints;
mod guard;
mod leases;
mod listener;
mod openapi;
mod ops;
mod routes;
mod sessions;
mod status;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;

use bytes::Bytes;
use serde::Deserialize;
use switchboard_daemon::host::{App, AppContext, AppError, ConfigError, Section};
use switchboard_transport::tls::TlsServer;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// `[gateway]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: String,
    /// Names the gateway answers to in `Host`, besides loopback names and
    /// its own address (`bus.example.com` behind a DNS name).
    #[serde(default)]
    hosts: Vec<String>,
    tls: Option<RawTls>,
}

/// `[gateway.tls]`: the gateway's certificate and key, and the CA whose
/// client certificates make `cert:CN` principals (optional: a browser
/// rarely has one, so by default a client without one is let in as its
/// token's, cookie's or anonymous principal).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    #[serde(default)]
    require_client_cert: bool,
}

/// Where and how the gateway listens, if anywhere.
#[derive(Clone)]
pub struct GatewayConfig {
    pub listen: Option<SocketAddr>,
    pub hosts: Vec<String>,
    /// HTTPS with this server; plain HTTP (loopback only) without.
    tls: Option<Arc<TlsServer>>,
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
        let Some(raw) = section.parse::<File>()?.gateway else {
            return Ok(GatewayConfig { listen: None, hosts: Vec::new(), tls: None });
        };
        let listen: SocketAddr = raw.listen.parse().map_err(|err| {
            section.invalid("gateway.listen", format!("{:?} is not an address and port: {err}", raw.listen))
        })?;
        let tls = match raw.tls {
            Some(tls) => {
                let server = TlsServer::from_files(
                    &tls.cert,
                    &tls.key,
                    tls.client_ca.as_deref(),
                    tls.require_client_cert,
                )
                .map_err(|err| section.invalid("gateway.tls", err.to_string()))?;
                Some(Arc::new(server))
            }
            None if !listen.ip().is_loopback() => {
                let why = format!(
                    "{listen} is not loopback: plain HTTP listens on loopback only; \
                     give [gateway.tls] cert and key for HTTPS"
                );
                return Err(section.invalid("gateway.listen", why));
            }
            None => None,
        };
        Ok(GatewayConfig { listen: Some(listen), hosts: raw.hosts, tls })
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
        let site = guard::Site { listen, https: config.tls.is_some(), hosts: config.hosts };
        let shared = routes::Shared {
            sessions: sessions::Sessions::new(context.router.clone(), endpoint),
            router: context.router,
            site,
            leases: leases::Leases::default(),
            cookies: cookies::Cookies::default(),
        };
        let app = routes::router(routes::State(Arc::new(shared)));
        let shutdown = stop.clone().cancelled_owned();
        let serving = match config.tls {
            Some(server) => {
                tracing::info!("gateway listening on https://{listen}");
                tokio::spawn(serve(listener::Tls::new(socket, server), app, shutdown))
            }
            None => {
                tracing::info!("gateway listening on http://{listen}");
                tokio::spawn(serve(listener::Plain(socket), app, shutdown))
            }
        };
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

/// Serves `app` on `listener` until `shutdown`, each request knowing its
/// connection's [`listener::Peer`].
async fn serve<L>(listener: L, app: axum::Router, shutdown: WaitForCancellationFutureOwned)
where
    L: axum::serve::Listener<Addr = listener::Peer>,
    for<'a> listener::Peer: Connected<IncomingStream<'a, L>>,
{
    let app = app.into_make_service_with_connect_info::<listener::Peer>();
    if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::warn!("the gateway stopped: {err}");
    }
}
