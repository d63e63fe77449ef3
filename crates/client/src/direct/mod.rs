//! Direct channels (`switchboard_proto::direct`): once the daemon grants it,
//! a caller's calls to a service travel on their own socket to one instance
//! and back — one hop instead of two, no daemon on the path.
//!
//! The first call to a service goes through the daemon and asks, in the
//! background, for a grant; later calls use the channel once it is open.
//! Any refusal, revocation or broken channel sends calls back through the
//! daemon, which gives them their usual answers (`service_paused`,
//! `permission_denied`…); the grant is asked for again later. A call is
//! never sent twice: it goes on the channel or through the daemon, not both.
//!
//! Calls that name an instance, notifications and broadcasts always go
//! through the daemon. A channel the caller closes itself is released with a
//! `Revoke` to the daemon, so the daemon's count of grants stays true.

mod channel;
mod listener;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_proto::direct::{DirectGrant, DirectRequest, DAEMON_DIRECT};
use switchboard_proto::{sys, ErrorCode, Frame, InstanceId, Request, ServiceName};

pub(crate) use channel::{Channel, Sent};
use listener::Listener;

use crate::bus::encode;
use crate::calls::CallOptions;
use crate::connection::{lock, Link, Shared};
use crate::service::ServiceState;
use crate::Bus;

/// After a refused grant or a revoked or broken channel, calls go through
/// the daemon this long before a grant is asked for again (one small call
/// a second at most, per service; most refusals are passing states).
const RETRY_AFTER: Duration = Duration::from_secs(1);
const GRANT_TIMEOUT: Duration = Duration::from_secs(5);

/// How calls to one service travel now.
enum Route {
    /// A grant is being asked for; calls go through the daemon meanwhile.
    Asking,
    Open(Arc<Channel>),
    /// Through the daemon until then.
    Routed(Instant),
}

type Routes = HashMap<ServiceName, Route>;

/// Both ends of this connection's direct channels.
pub(crate) struct Direct {
    enabled: AtomicBool,
    routes: Mutex<Routes>,
    /// Where this connection's services accept channels (bound on first grant).
    listener: Mutex<Option<Arc<Listener>>>,
}

impl Direct {
    pub fn new() -> Self {
        let enabled =
            !matches!(std::env::var("SWITCHBOARD_DIRECT").as_deref(), Ok("0" | "false" | "off" | "no"));
        Self {
            enabled: AtomicBool::new(enabled),
            routes: Mutex::new(Routes::default()),
            listener: Mutex::new(None),
        }
    }

    /// Whether our calls may take direct channels; off closes ours (the
    /// channels others hold to our services are not affected).
    pub fn set_enabled(&self, shared: &Shared, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
        if !enabled {
            self.close_routes(shared, "direct calls were turned off");
        }
    }

    /// The instance a call to `service` would reach directly, if a channel is open.
    pub fn instance_for(&self, service: &ServiceName) -> Option<InstanceId> {
        match lock(&self.routes).get(service) {
            Some(Route::Open(channel)) if channel.usable() => Some(channel.instance),
            _ => None,
        }
    }

    /// Closes every channel we call on, telling the daemon if connected.
    fn close_routes(&self, shared: &Shared, why: &str) {
        for (_, route) in lock(&self.routes).drain() {
            if let Route::Open(channel) = route {
                channel.close(why);
                release(shared, channel.grant);
            }
        }
    }

    /// Closes every channel we call on (telling the daemon, if connected)
    /// and stops every channel we serve.
    pub fn close_all(&self, shared: &Shared, why: &str) {
        self.close_routes(shared, why);
        if let Some(listener) = lock(&self.listener).as_ref() {
            listener.revoke(None, ErrorCode::ShuttingDown, why);
        }
    }
}

/// Tells the daemon we are done with `grant` (it forgets it and tells the
/// instance). Without a connection there is nothing to tell: the daemon
/// forgets a lost connection's grants itself.
fn release(shared: &Shared, grant: u64) {
    if let Some(link) = shared.link.borrow().as_ref() {
        let message = "the caller closed the channel".to_owned();
        let _ = link.outbox.push(&Frame::Revoke { grant, code: ErrorCode::ShuttingDown, message });
    }
}

/// The open channel for a call to `service` (to no chosen `instance`), if any; asks
/// for one in the background when there is none yet.
pub(crate) fn channel_for(
    bus: &Bus,
    service: &ServiceName,
    instance: Option<InstanceId>,
) -> Option<Arc<Channel>> {
    let direct = &bus.shared.direct;
    if instance.is_some() || service.is_reserved() || !direct.enabled.load(Ordering::Relaxed) {
        return None;
    }
    let mut routes = lock(&direct.routes);
    match routes.get(service) {
        Some(Route::Open(channel)) if channel.usable() => return Some(channel.clone()),
        Some(Route::Open(channel)) => {
            // Closed from the instance's side, or broken.
            release(&bus.shared, channel.grant);
            routes.insert(service.clone(), Route::Routed(Instant::now() + RETRY_AFTER));
            return None;
        }
        Some(Route::Asking) => return None,
        Some(Route::Routed(until)) if Instant::now() < *until => return None,
        _ => {}
    }
    routes.insert(service.clone(), Route::Asking);
    tokio::spawn(ask(Bus::from_shared(bus.shared.clone()), service.clone()));
    None
}

/// Asks the daemon for a grant and opens the channel.
async fn ask(bus: Bus, service: ServiceName) {
    let request = DirectRequest { service: service.to_string(), instance: 0 };
    let target = format!("{}.{DAEMON_DIRECT}", sys::DAEMON_SERVICE);
    let granted = match encode(&request) {
        Ok(payload) => bus.call_with(target.as_str(), payload, CallOptions::timeout(GRANT_TIMEOUT)).await,
        Err(err) => Err(err),
    };
    let opened = match granted.and_then(|reply| crate::bus::decode::<DirectGrant>(&reply)) {
        Ok(grant) => Channel::open(&grant, &bus.shared.hop_sinks).await.map_err(|err| err.to_string()),
        Err(err) => Err(err.to_string()),
    };
    let route = match opened {
        Ok(channel) => {
            tracing::debug!(%service, instance = channel.instance, "direct channel open");
            Route::Open(channel)
        }
        Err(why) => {
            tracing::debug!(%service, "calls go through the daemon: {why}");
            Route::Routed(Instant::now() + RETRY_AFTER)
        }
    };
    let mut routes = lock(&bus.shared.direct.routes);
    // A reconnect, or direct calls turned off, while we asked leaves no
    // `Asking` to fill. (A revoke meanwhile makes the instance refuse the
    // ticket, or close the channel it just accepted.)
    if matches!(routes.get(&service), Some(Route::Asking)) {
        routes.insert(service, route);
    } else if let Route::Open(channel) = route {
        channel.close("direct calls were closed while the channel opened");
        release(&bus.shared, channel.grant);
    }
}

/// The daemon revoked `grant`: whichever end of it we are stops using it.
pub(crate) fn revoked(shared: &Shared, grant: u64, code: ErrorCode, message: &str) {
    {
        let mut routes = lock(&shared.direct.routes);
        let open = routes.iter().find_map(|(service, route)| match route {
            Route::Open(channel) if channel.grant == grant => Some((service.clone(), channel.clone())),
            _ => None,
        });
        if let Some((service, channel)) = open {
            channel.close(message);
            routes.insert(service, Route::Routed(Instant::now() + RETRY_AFTER));
        }
    }
    if let Some(listener) = lock(&shared.direct.listener).as_ref() {
        listener.revoke(Some(grant), code, message);
    }
}

/// The daemon forwards a caller's grant to one of our instances: remember
/// its ticket and answer with where to connect.
pub(crate) fn offer(shared: &Arc<Shared>, link: &Link, service: &Arc<ServiceState>, request: Request) {
    let frame = match accept_grant(shared, link, service, &request) {
        Ok(grant) => Frame::Reply { id: request.id, payload: sys::encode(&grant).into() },
        Err((code, message)) => Frame::Error { id: request.id, code, message },
    };
    let _ = link.outbox.push(&frame);
}

fn accept_grant(
    shared: &Arc<Shared>,
    link: &Link,
    service: &Arc<ServiceState>,
    request: &Request,
) -> Result<DirectGrant, (ErrorCode, String)> {
    let grant = sys::decode::<DirectGrant>(&request.payload)
        .map_err(|err| (ErrorCode::BadRequest, format!("direct grant: {err}")))?;
    let mut listener = lock(&shared.direct.listener);
    let listener = match listener.as_ref() {
        Some(listener) => listener.clone(),
        None => {
            let started = Listener::start(shared.closed.clone()).map_err(|err| {
                (ErrorCode::Overloaded, format!("cannot listen for direct channels: {err}"))
            })?;
            // Calls served over direct channels are counted here and
            // reported to the daemon, which never sees them.
            tokio::spawn(crate::answer::report_served(Arc::downgrade(shared)));
            listener.insert(started).clone()
        }
    };
    Ok(listener.offer(grant, request.caller.clone(), service.clone(), link.max_frame))
}
