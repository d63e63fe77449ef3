//! What the daemon offers the apps `switchboard up` hosts beside the router
//! (the supervisor today; the gateway, the fleet bridge and metrics next).
//!
//! An app talks to the bus like any client, over a session the host opens
//! for it ([`RouterHandle::open_session`]), and reaches the router only
//! through the few methods of [`RouterHandle`]: call holds, instance
//! secrets, instance ownership. It never sees the router's lock; every
//! method takes and releases it within the call. The app interface itself
//! ([`App`]: start with its own config section, reload, stop, hand off) is
//! in [`app`].

pub mod app;

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use switchboard_proto::{ErrorCode, Frame, InstanceId, MethodName, ServiceName, SessionId, Topic};
use switchboard_transport::{Endpoint, Stream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::config_file::{ConfigError, ConfigFile, Section};
pub use crate::policy::users;
pub use crate::policy::{Op, Principal};
pub use crate::router::access::{constant_time_eq, new_secret, InstanceIdentity};
pub use crate::router::queues::remote::{RemoteAdmin, RemoteQueueOp, REMOTE_TAG};
pub use crate::router::Hold;
use crate::router::Router;
use crate::session::{self, lock, Admission, Origin, SharedRouter};
use crate::Limits;
pub use app::{App, AppError, Apps, Reports};

/// Makes a connected socket whose other end is a session of the daemon
/// (`switchboard::Bus::connect_hosted` takes it as its dialer).
pub type Dial = Arc<dyn Fn() -> io::Result<Stream> + Send + Sync>;

/// The narrow handle: everything an app may do to the router. It does not
/// keep the router alive: once the daemon has stopped, its methods do
/// nothing and sessions are refused.
#[derive(Clone)]
pub struct RouterHandle {
    router: Weak<Mutex<Router>>,
    limits: Limits,
    /// Ends every session at shutdown.
    stop: CancellationToken,
    sessions: TaskTracker,
    /// The daemon's connection limit, which sessions opened for a
    /// principal other than the daemon count against.
    permits: Arc<Semaphore>,
}

impl RouterHandle {
    pub(crate) fn new(
        router: SharedRouter,
        limits: Limits,
        stop: CancellationToken,
        sessions: TaskTracker,
        permits: Arc<Semaphore>,
    ) -> Self {
        Self { router: Arc::downgrade(&router), limits, stop, sessions, permits }
    }

    fn with_router<T>(&self, act: impl FnOnce(&mut Router) -> T) -> Option<T> {
        self.router.upgrade().map(|router| act(&mut lock(&router)))
    }

    /// Whether `topic`'s retained value is `payload` now: a live
    /// publication a subscriber just got was (as far as anyone can still
    /// tell) published to be retained.
    pub fn retains(&self, topic: &Topic, payload: &[u8]) -> bool {
        self.with_router(|router| router.topics().retains(topic, payload)).unwrap_or(false)
    }

    /// Takes the queues `names`: from now on their puts, consumers, acks and
    /// nacks go to `app` (the router checks the policy first), which answers
    /// the sessions with [`RouterHandle::deliver`].
    pub fn attach_remote_queues(&self, names: HashSet<String>, app: mpsc::UnboundedSender<RemoteQueueOp>) {
        self.with_router(|router| router.attach_remote_queues(names, app));
    }

    /// The app keeps `queue` from now on (`keep`), or no longer.
    pub fn keep_remote_queue(&self, queue: &str, keep: bool) {
        self.with_router(|router| router.keep_remote_queue(queue, keep));
    }

    pub fn detach_remote_queues(&self) {
        self.with_router(Router::detach_remote_queues);
    }

    /// Sends `frame` to session `session`, as the router would.
    pub fn deliver(&self, session: SessionId, frame: &Frame) {
        self.with_router(|router| router.deliver_to(session, frame));
    }

    /// Tells the router this host's name in the fleet: a call that names it
    /// (`sb-host`) is served here, not sent out.
    pub fn set_fleet_host(&self, host: Option<String>) {
        self.with_router(|router| router.set_fleet_host(host));
    }

    /// Makes calls to `service` wait while it starts (`Hold::Starting`) or
    /// fail with a typed error while it cannot serve; `None` lifts it.
    pub fn set_hold(&self, service: &ServiceName, hold: Option<Hold>) {
        self.with_router(|router| router.set_hold(service, hold));
    }

    /// Lets a process of `identity`'s session connect as that instance by
    /// presenting `secret`.
    pub fn register_secret(&self, secret: String, identity: InstanceIdentity) {
        self.with_router(|router| router.register_secret(secret, identity));
    }

    pub fn forget_secret(&self, secret: &str) {
        self.with_router(|router| router.forget_secret(secret));
    }

    /// The session that registered bus instance `instance`, and for which service.
    pub fn instance_owner(&self, instance: InstanceId) -> Option<(SessionId, String)> {
        self.with_router(|router| {
            router.registry().get(instance).map(|i| (i.session, i.service.to_string()))
        })?
    }

    /// The principal a bearer token from the config stands for
    /// (`token:NAME`), compared in constant time; `None` for an unknown one.
    pub fn token_principal(&self, token: &str) -> Option<Principal> {
        self.with_router(|router| router.token_principal(token))?
    }

    /// Whether the policy lets `principal` do `op` on `target` now, with
    /// the refusal a session of it would get. For an app that must answer
    /// for a one-way operation (a notification, a publication), which the
    /// daemon refuses without a reply; the daemon still checks it again
    /// when the operation arrives on the principal's session.
    pub fn permits(&self, principal: &Principal, op: Op, target: &str) -> Result<(), (ErrorCode, String)> {
        let shut = || (ErrorCode::ShuttingDown, "the daemon is shutting down".to_owned());
        self.with_router(|router| router.permits_principal(principal, op, target))
            .unwrap_or_else(|| Err(shut()))
    }

    /// Whether an instance of `service` serving `method` is registered
    /// now; if not, the typed error a call would get.
    pub fn serving(&self, service: &ServiceName, method: &MethodName) -> Result<(), (ErrorCode, String)> {
        let shut = || (ErrorCode::ShuttingDown, "the daemon is shutting down".to_owned());
        self.with_router(|router| router.registry().serving(service, method).map(drop))
            .unwrap_or_else(|| Err(shut()))
    }

    /// The services with an instance on this host (stand-ins for other
    /// hosts' left out, the daemon's own `$` services too), sorted by name.
    pub fn local_services(&self) -> Vec<LocalService> {
        self.with_router(|router| {
            let mut local = Vec::new();
            for (service, instances) in router.registry().services() {
                let here: Vec<_> = instances.iter().filter(|(_, instance)| !instance.remote).collect();
                if service.is_reserved() || here.is_empty() {
                    continue;
                }
                let mut methods: Vec<MethodName> = here
                    .iter()
                    .flat_map(|(_, instance)| instance.methods.iter().map(|m| m.name.clone()))
                    .collect();
                methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                methods.dedup();
                let instances = u32::try_from(here.len()).unwrap_or(u32::MAX);
                local.push(LocalService { name: service.clone(), methods, instances });
            }
            local
        })
        .unwrap_or_default()
    }

    /// Opens a session as `principal` and returns the app's end of it.
    /// The router treats it as any connection of that principal: its
    /// policy, its connection and rate limits, and a reload that takes
    /// its rights away. Only [`Principal::daemon`] is the daemon itself,
    /// allowed everything and counted against no limit.
    pub fn open_session(&self, principal: Principal, client: &str) -> io::Result<Stream> {
        let router = self.router.upgrade().filter(|_| !self.stop.is_cancelled());
        let Some(router) = router else {
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "the daemon is shutting down"));
        };
        // In-process: the app's frames reach the session without a socket.
        let (ours, theirs) = Stream::memory_pair();
        let permits = (!principal.is_daemon()).then(|| self.permits.clone());
        let admission = Admission { handshake: None, permits };
        let origin = Origin::Hosted { principal };
        let (limits, stop) = (self.limits.clone(), self.stop.clone());
        let peer = format!("hosted {client}");
        self.sessions.spawn(session::serve(ours, peer, origin, router, limits, stop, admission));
        Ok(theirs)
    }

    /// A dialer that opens a new session as `principal` each time (a
    /// client reconnecting dials again).
    pub fn dialer(&self, principal: Principal, client: &str) -> Dial {
        let (handle, client) = (self.clone(), client.to_owned());
        Arc::new(move || handle.open_session(principal.clone(), &client))
    }
}

/// A service with instances on this host: the methods they serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalService {
    pub name: ServiceName,
    pub methods: Vec<MethodName>,
    pub instances: u32,
}

/// What an app is given when it starts.
#[derive(Clone)]
pub struct AppContext {
    pub router: RouterHandle,
    /// Where clients reach the daemon; the first is what processes the
    /// daemon starts are told to connect to.
    pub endpoints: Vec<Endpoint>,
    /// The daemon's data directory (apps keep their files in a subdirectory).
    pub data_dir: PathBuf,
    pub reloader: Reloader,
    pub successor: Successor,
}

/// Asks the host to re-read the config file and reload the policy and
/// every app (what SIGHUP does), and waits for the outcome.
#[derive(Clone)]
pub struct Reloader(pub(crate) mpsc::Sender<oneshot::Sender<Result<Reports, String>>>);

impl Reloader {
    /// Each app's report, or why the file was refused (then nothing changed).
    pub async fn reload(&self) -> Result<Reports, String> {
        let (reply, answer) = oneshot::channel();
        self.0.send(reply).await.map_err(|_| "the daemon is shutting down".to_owned())?;
        answer.await.map_err(|_| "the daemon is shutting down".to_owned())?
    }
}

/// Asks the host to hand off to a successor process (`switchboard reexec`:
/// the daemon re-executes itself, keeping its sockets and its services).
#[derive(Clone)]
pub struct Successor(pub(crate) mpsc::Sender<oneshot::Sender<Result<String, String>>>);

impl Successor {
    /// Once accepted (the answer names the successor's binary), the daemon
    /// is already stopping; an error says why it will not hand off, and
    /// then nothing changed.
    pub async fn request(&self) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        self.0.send(reply).await.map_err(|_| "the daemon is shutting down".to_owned())?;
        answer.await.map_err(|_| "the daemon is shutting down".to_owned())?
    }
}
