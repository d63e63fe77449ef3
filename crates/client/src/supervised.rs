//! Running as a supervised, bus-aware service: `switchboard::service::run`.
//!
//! The supervisor starts the process with a secret in
//! `SWITCHBOARD_INSTANCE_SECRET`. [`run`] registers the service with one more
//! method, `__control` (only the daemon may call it), attaches to the
//! supervisor with the secret and the controls it accepts, and serves until
//! a stop control (or SIGTERM/SIGINT) arrives. Pause, continue, reload and
//! custom codes 128–255 reach the handler given to [`Controls::handler`],
//! which may report progress while it works.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::supervision::{self as sup, Attach, ControlRequest, LogEvent, Progress};

use crate::service::{HandlerResult, Request, ServiceBuilder};
use crate::{Bus, CallError, RegisterError, Reject};

/// Which control arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    Stop,
    Pause,
    Continue,
    Reload,
    /// A code from 128 to 255, with a meaning the service defines.
    Custom(u8),
}

impl ControlKind {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            sup::CODE_STOP => Self::Stop,
            sup::CODE_PAUSE => Self::Pause,
            sup::CODE_CONTINUE => Self::Continue,
            sup::CODE_RELOAD => Self::Reload,
            c if c >= sup::FIRST_CUSTOM_CODE => Self::Custom(c),
            _ => return None,
        })
    }
}

/// A control from the supervisor, handed to the control handler.
pub struct Control {
    pub kind: ControlKind,
    pub payload: Bytes,
    bus: Bus,
}

impl Control {
    /// Tells the supervisor the control is progressing: `checkpoint` must
    /// grow, `wait_hint` is how much longer it may take. A pending control
    /// whose wait hint passes with no progress is treated as hung.
    pub async fn progress(
        &self,
        checkpoint: u32,
        wait_hint: Duration,
        status: &str,
    ) -> Result<(), CallError> {
        let progress = Progress {
            checkpoint,
            wait_hint_ms: u64::try_from(wait_hint.as_millis()).unwrap_or(u64::MAX),
            status: status.to_owned(),
        };
        let target = format!("{}.{}", sup::SERVICES_SERVICE, sup::PROGRESS);
        self.bus.call(target.as_str(), Bytes::from(switchboard_proto::sys::encode(&progress))).await.map(drop)
    }
}

type ControlFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;
type ControlHandler = Arc<dyn Fn(Control) -> ControlFuture + Send + Sync>;

/// The controls a service accepts, and what handles them. Stop is always
/// accepted.
#[derive(Clone, Default)]
pub struct Controls {
    accepts: Vec<u8>,
    handler: Option<ControlHandler>,
}

impl Controls {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accept pause and continue (calls to the service get `service_paused`
    /// while it is paused).
    pub fn accept_pause(mut self) -> Self {
        self.accepts.extend([sup::CODE_PAUSE, sup::CODE_CONTINUE]);
        self
    }

    pub fn accept_reload(mut self) -> Self {
        self.accepts.push(sup::CODE_RELOAD);
        self
    }

    /// Accept a custom code (128–255); [`run`] refuses other numbers.
    pub fn accept_custom(mut self, code: u8) -> Self {
        self.accepts.push(code);
        self
    }

    /// Handles every accepted control; its `Ok` payload is the reply (custom
    /// codes), its `Err` refuses the control (a pause then leaves the
    /// service Running). Without a handler every control succeeds at once.
    pub fn handler<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Control) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.handler = Some(Arc::new(move |control| Box::pin(handler(control))));
        self
    }
}

/// Why [`run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error("control code {0} cannot be declared: custom codes are 128–255")]
    InvalidCode(u8),
    #[error("the supervisor refused to attach this instance: {0}")]
    Attach(CallError),
    #[error("cannot wait for signals: {0}")]
    Signals(std::io::Error),
}

/// Serves `service` until the supervisor stops it (or SIGTERM/SIGINT), as a
/// bus-aware supervised instance. Outside a supervisor (no
/// `SWITCHBOARD_INSTANCE_SECRET`) it simply serves until a signal.
///
/// ```no_run
/// # async fn demo(bus: switchboard::Bus) -> Result<(), switchboard::service::RunError> {
/// use switchboard::service::{run, ControlKind, Controls};
/// let service = bus.serve("cache").unwrap().method("get", |_req| async { Ok(bytes::Bytes::new()) });
/// let controls = Controls::new().accept_pause().accept_custom(130).handler(|control| async move {
///     match control.kind {
///         ControlKind::Custom(130) => Ok(bytes::Bytes::from_static(b"flushed")),
///         _ => Ok(bytes::Bytes::new()),
///     }
/// });
/// run(service, controls).await
/// # }
/// ```
pub async fn run(service: ServiceBuilder, controls: Controls) -> Result<(), RunError> {
    for code in &controls.accepts {
        if ControlKind::from_code(*code).is_none_or(|k| k == ControlKind::Stop) {
            return Err(RunError::InvalidCode(*code));
        }
    }
    let bus = service.bus.clone();
    let stopping = Arc::new(tokio::sync::Notify::new());
    let on_control = {
        let (bus, stopping, controls) = (bus.clone(), stopping.clone(), controls.clone());
        move |request: Request| {
            let (bus, stopping, controls) = (bus.clone(), stopping.clone(), controls.clone());
            async move { handle_control(request, bus, &controls, &stopping).await }
        }
    };
    let running = service.method(sup::CONTROL_METHOD, on_control).start().await?;
    let mut reattaching = None;
    if let Ok(secret) = std::env::var(sup::ENV_SECRET) {
        let (accepts, caller) = (controls.accepts.clone(), bus.clone());
        let attach = move |control_instance| {
            let attach = Attach { secret: secret.clone(), control_instance, accepts: accepts.clone() };
            let (bus, target) = (caller.clone(), format!("{}.{}", sup::SERVICES_SERVICE, sup::ATTACH));
            async move { bus.call(target.as_str(), Bytes::from(switchboard_proto::sys::encode(&attach))).await }
        };
        attach(running.instance()).await.map_err(RunError::Attach)?;
        // After a reconnect (the daemon re-executed itself, or dropped this
        // connection) the service is registered again under a new instance
        // id: attach again, so controls keep reaching it.
        let mut restored = bus.shared.restored.subscribe();
        let registration = running.state();
        reattaching = Some(tokio::spawn(async move {
            while restored.changed().await.is_ok() {
                if let Err(err) = attach(registration.instance()).await {
                    tracing::warn!("could not attach to the supervisor again after a reconnect: {err}");
                }
            }
        }));
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(RunError::Signals)?;
    tokio::select! {
        () = stopping.notified() => {
            // Let the stop control's reply leave before the registration goes.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    if let Some(task) = reattaching {
        task.abort();
    }
    let _ = running.stop().await;
    Ok(())
}

async fn handle_control(
    request: Request,
    bus: Bus,
    controls: &Controls,
    stopping: &tokio::sync::Notify,
) -> HandlerResult {
    let ControlRequest { code, payload, .. } = request.decode()?;
    let kind =
        ControlKind::from_code(code).ok_or_else(|| Reject::new(format!("unknown control code {code}")))?;
    if kind != ControlKind::Stop && !controls.accepts.contains(&code) {
        return Err(Reject::new(format!("this service does not accept control {code}")));
    }
    let control = Control { kind, payload: Bytes::from(payload), bus };
    let result = match &controls.handler {
        Some(handler) => handler(control).await,
        None => Ok(Bytes::new()),
    };
    if kind == ControlKind::Stop {
        stopping.notify_one();
    }
    result
}

/// Logs a structured event into this instance's service log (`switchboard
/// logs SERVICE` shows it as an `event` line). Only an attached supervised
/// instance may log.
///
/// Logged while serving a request, the event also records the request's
/// trace id (`trace_id=…`), so a chain of calls can be found in every
/// service's log.
pub async fn log(bus: &Bus, level: &str, message: &str, fields: &[(&str, &str)]) -> Result<(), CallError> {
    let mut fields: Vec<(String, String)> =
        fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    if let Some(trace) = crate::trace::current() {
        fields.push(("trace_id".to_owned(), trace.trace_id_hex()));
    }
    let event = LogEvent { level: level.to_owned(), message: message.to_owned(), fields, id: String::new() };
    let target = format!("{}.{}", sup::SERVICES_SERVICE, sup::LOG);
    bus.call(target.as_str(), Bytes::from(switchboard_proto::sys::encode(&event))).await.map(drop)
}

/// Tells a supervisor (Switchboard's, or systemd) that this process is
/// ready, through the notify protocol: sends `READY=1` to `$NOTIFY_SOCKET`.
/// Does nothing when not supervised. For services configured with
/// `ready = "notify"` that do not use [`run`].
pub fn notify_ready() -> std::io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => std::os::unix::net::UnixDatagram::unbound()?.send_to(b"READY=1", socket).map(drop),
        None => Ok(()),
    }
}
