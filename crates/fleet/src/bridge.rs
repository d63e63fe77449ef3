//! The running bridge between this daemon and the fleet's NATS cluster.
//!
//! Out: every service another live host offers and `import` admits gets a
//! stand-in instance here (a session as [`Principal::fleet`]), which the
//! router chooses only when no instance on this host can take the call;
//! the stand-in sends the call to NATS, where the hosts serving it share
//! the load (one queue group per service).
//!
//! In: for every service `export` admits and this host serves, the bridge
//! takes calls from NATS and makes them on a session opened for the
//! caller's principal *as the sending host vouched for it* —
//! `user:alice@web-1`, with the host read from the subject — so this
//! host's policy applies to it, never the daemon's own rights.
//!
//! Every second it announces what it offers (`sb.hb.HOST`) and forgets
//! hosts it has not heard from for three.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use switchboard::{Bus, CallOptions, Endpoint, Headers, Reject, Request, Service};
use switchboard_daemon::host::{Principal, RouterHandle};
use switchboard_proto::fleet::{FLEET_HEADER, HOST_HEADER};
use switchboard_proto::ErrorCode;
use tokio::task::AbortHandle;

use crate::config::Joining;
use crate::roster::{Announcement, HostStatus, Offer, Roster};
use crate::{subjects, wire};

/// How often a host announces itself.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a host may be silent before it counts as gone.
pub const SILENCE: Duration = Duration::from_secs(3);
/// Remote principals with a session open at once; past it one is closed.
const MAX_CALLERS: usize = 1024;
/// Calls a stand-in forwards at once.
const STAND_IN_CONCURRENCY: usize = 4096;

pub struct Bridge {
    pub joining: Joining,
    pub nats: async_nats::Client,
    pub router: RouterHandle,
    endpoint: Endpoint,
    pub(crate) roster: Mutex<Roster>,
    stand_in: Bus,
    /// Services with a stand-in here: the methods it serves.
    stand_ins: tokio::sync::Mutex<BTreeMap<String, (Vec<String>, Service)>>,
    /// Exported services taking calls from NATS.
    exported: Mutex<BTreeMap<String, AbortHandle>>,
    callers: Mutex<HashMap<String, Bus>>,
}

impl Bridge {
    pub async fn new(
        joining: Joining,
        nats: async_nats::Client,
        router: RouterHandle,
        endpoint: Endpoint,
    ) -> Result<Arc<Self>, String> {
        router.set_fleet_host(Some(joining.host.clone()));
        let dial = router.dialer(Principal::fleet(), "switchboard-fleet");
        let stand_in = Bus::connect_hosted(endpoint.clone(), "switchboard-fleet".into(), dial)
            .await
            .map_err(|err| format!("cannot open the fleet's session: {err}"))?;
        stand_in.set_direct_calls(false);
        let roster = Mutex::new(Roster::new(&joining.host, SILENCE));
        Ok(Arc::new(Self {
            joining,
            nats,
            router,
            endpoint,
            roster,
            stand_in,
            stand_ins: tokio::sync::Mutex::new(BTreeMap::new()),
            exported: Mutex::new(BTreeMap::new()),
            callers: Mutex::new(HashMap::new()),
        }))
    }

    /// Heartbeats out and in, until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let heard = match self.nats.subscribe(subjects::HEARTBEATS).await {
            Ok(heard) => heard,
            Err(err) => return tracing::error!("fleet: cannot subscribe to heartbeats: {err}"),
        };
        tokio::join!(self.clone().listen(heard), self.clone().beat());
    }

    async fn beat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tick.tick().await;
            self.announce().await;
            let gone = lock(&self.roster).expire(Instant::now());
            for host in gone {
                tracing::warn!(host, "fleet: host silent for {SILENCE:?}, taken out of balancing");
            }
            self.sync().await;
        }
    }

    async fn listen(self: Arc<Self>, mut heard: async_nats::Subscriber) {
        while let Some(message) = heard.next().await {
            let Some(host) = subjects::sender(&message.subject) else { continue };
            let Ok(announcement) = serde_json::from_slice::<Announcement>(&message.payload) else {
                tracing::warn!(host, "fleet: a heartbeat that is not an announcement");
                continue;
            };
            let host = host.to_owned();
            let new = lock(&self.roster).heard(&host, announcement, Instant::now());
            if new {
                tracing::info!(host, "fleet: host joined");
            }
            self.sync().await;
        }
    }

    /// What this host offers: its exported services with local instances.
    fn offer(&self) -> Announcement {
        let services = self
            .router
            .local_services()
            .into_iter()
            .filter(|service| self.joining.export.admits(service.name.as_str()))
            .map(|service| {
                let methods = service.methods.iter().map(|m| m.as_str().to_owned()).collect();
                (service.name.as_str().to_owned(), Offer { methods, instances: service.instances })
            })
            .collect();
        Announcement { services }
    }

    async fn announce(&self) {
        let Ok(payload) = serde_json::to_vec(&self.offer()) else { return };
        if let Err(err) = self.nats.publish(subjects::heartbeat(&self.joining.host), payload.into()).await {
            tracing::warn!("fleet: cannot announce: {err}");
        }
    }

    /// Brings the stand-ins and the exported subscriptions in line with
    /// the roster and the local registry.
    async fn sync(self: &Arc<Self>) {
        self.sync_exports().await;
        let offered = lock(&self.roster).offered(|service| self.joining.import.admits(service));
        let mut stand_ins = self.stand_ins.lock().await;
        let stale: Vec<String> = stand_ins
            .iter()
            .filter(|(service, (methods, _))| offered.get(*service) != Some(methods))
            .map(|(service, _)| service.clone())
            .collect();
        for service in stale {
            if let Some((_, old)) = stand_ins.remove(&service) {
                let _ = old.stop().await;
            }
        }
        for (service, methods) in offered {
            if stand_ins.contains_key(&service) {
                continue;
            }
            match self.start_stand_in(&service, &methods).await {
                Ok(started) => {
                    tracing::info!(service, "fleet: reachable on other hosts");
                    stand_ins.insert(service, (methods, started));
                }
                Err(err) => tracing::warn!(service, "fleet: cannot stand in for {service}: {err}"),
            }
        }
    }

    async fn start_stand_in(self: &Arc<Self>, service: &str, methods: &[String]) -> Result<Service, String> {
        let mut builder = self.stand_in.serve(service).map_err(|err| err.to_string())?;
        for method in methods {
            let (bridge, service) = (self.clone(), service.to_owned());
            builder = builder.method(method, move |request| {
                let (bridge, service) = (bridge.clone(), service.clone());
                async move { bridge.forward(&service, request).await }
            });
        }
        builder.max_concurrency(STAND_IN_CONCURRENCY).start().await.map_err(|err| err.to_string())
    }

    /// A call the router gave the stand-in, sent to the fleet.
    async fn forward(&self, service: &str, request: Request) -> Result<Bytes, Reject> {
        if request.headers.get(FLEET_HEADER).is_some() && !request.is_notification() {
            return self.broadcast_out(service, request).await;
        }
        let me = &self.joining.host;
        let target = match request.headers.get(HOST_HEADER).map(subjects::host_name).transpose() {
            Ok(target) => target,
            Err(err) => return Err(Reject::with_code(ErrorCode::BadRequest, err.to_string())),
        };
        let subject = match target {
            Some(target) => subjects::call_to(me, target, service),
            None => subjects::call(me, service),
        };
        let nobody = match target {
            Some(target) => format!("host {target} of the fleet does not serve {service} now"),
            None => format!("no host of the fleet serves {service} now"),
        };
        let principal = request.caller.principal.as_str();
        let Some(deadline) = request.deadline else {
            // A notification: to one host, or with `sb-fleet` to every
            // instance on every host.
            let subject = if request.headers.get(FLEET_HEADER).is_some() {
                subjects::broadcast(me, service)
            } else {
                subject
            };
            let headers = wire::request(request.method.as_str(), principal, Duration::ZERO, &request.headers);
            let sent = self.nats.publish_with_headers(subject, headers, request.payload).await;
            return sent.map(|()| Bytes::new()).map_err(|err| link_failed(&err));
        };
        let timeout = deadline.saturating_duration_since(tokio::time::Instant::now().into_std());
        let headers = wire::request(request.method.as_str(), principal, timeout, &request.headers);
        let asked =
            async_nats::Request::new().payload(request.payload).headers(headers).timeout(Some(timeout));
        match self.nats.send_request(subject, asked).await {
            Ok(reply) => wire::outcome(reply.headers.as_ref(), reply.payload)
                .map_err(|(code, message)| Reject::with_code(code, message)),
            Err(err) => Err(match err.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    Reject::with_code(ErrorCode::NoSuchService, nobody)
                }
                async_nats::RequestErrorKind::TimedOut => Reject::with_code(
                    ErrorCode::Timeout,
                    format!("no host of the fleet answered {service}.{} in time", request.method),
                ),
                _ => link_failed(&err),
            }),
        }
    }

    /// Subscribes to calls for every exported service served here, and
    /// drops the subscriptions of those no longer served.
    async fn sync_exports(self: &Arc<Self>) {
        let serving: Vec<String> = self
            .router
            .local_services()
            .into_iter()
            .map(|service| service.name.as_str().to_owned())
            .filter(|service| self.joining.export.admits(service))
            .collect();
        let missing: Vec<String> = {
            let mut exported = lock(&self.exported);
            exported.retain(|service, task| {
                let keep = serving.contains(service);
                if !keep {
                    task.abort();
                }
                keep
            });
            serving.into_iter().filter(|service| !exported.contains_key(service)).collect()
        };
        for service in missing {
            let mut subscribers = Vec::new();
            for (subject, group) in subjects::calls_for(&self.joining.host, &service) {
                let subscribed = match group {
                    Some(group) => self.nats.queue_subscribe(subject, group).await,
                    None => self.nats.subscribe(subject).await,
                };
                match subscribed {
                    Ok(calls) => subscribers.push(calls),
                    Err(err) => tracing::warn!(service, "fleet: cannot take calls for {service}: {err}"),
                }
            }
            let calls = futures_util::stream::select_all(subscribers);
            let task = tokio::spawn(self.clone().take_calls(service.clone(), calls));
            if let Some(older) = lock(&self.exported).insert(service, task.abort_handle()) {
                older.abort();
            }
        }
    }

    async fn take_calls(
        self: Arc<Self>,
        service: String,
        mut calls: futures_util::stream::SelectAll<async_nats::Subscriber>,
    ) {
        while let Some(message) = calls.next().await {
            let (bridge, service) = (self.clone(), service.clone());
            tokio::spawn(async move { bridge.serve_call(&service, message).await });
        }
    }

    /// A call from another host, made here as its caller.
    async fn serve_call(&self, service: &str, message: async_nats::Message) {
        let host = self.joining.host.clone();
        let made = if subjects::is_broadcast(&message.subject) {
            self.broadcast_in(service, &message).await
        } else {
            self.make_call(service, &message).await
        };
        let answer = match made {
            Ok(payload) => (wire::success(&host), payload),
            Err((code, text)) => (wire::failure(&host, code, &text), Bytes::new()),
        };
        if let Some(reply) = message.reply {
            if let Err(err) = self.nats.publish_with_headers(reply, answer.0, answer.1).await {
                tracing::warn!(service, "fleet: cannot answer a call: {err}");
            }
        }
    }

    /// An arriving call, its caller's session and the options to make it
    /// here with.
    pub(crate) async fn arrived(
        &self,
        service: &str,
        message: &async_nats::Message,
    ) -> Result<(String, Bus, CallOptions), (ErrorCode, String)> {
        let bad = |why: String| (ErrorCode::BadRequest, why);
        let from = subjects::sender(&message.subject).ok_or_else(|| bad("no host in the subject".into()))?;
        let call = wire::incoming(message.headers.as_ref()).map_err(bad)?;
        let principal = Principal::remote(&call.principal, from);
        let bus = self.caller(principal).await?;
        // The call reached the host (or hosts) it named: it goes no further.
        let headers = call.headers.into_iter().filter(|(key, _)| key != HOST_HEADER && key != FLEET_HEADER);
        let headers = Headers::from_pairs(headers).map_err(|err| bad(err.to_string()))?;
        let target = format!("{service}.{}", call.method);
        Ok((target, bus, CallOptions { timeout: call.timeout, headers, ..CallOptions::default() }))
    }

    async fn make_call(
        &self,
        service: &str,
        message: &async_nats::Message,
    ) -> Result<Bytes, (ErrorCode, String)> {
        let (target, bus, options) = self.arrived(service, message).await?;
        let payload = message.payload.clone();
        let outcome = if message.reply.is_some() {
            bus.call_with(target.as_str(), payload, options).await
        } else {
            bus.notify_with(target.as_str(), payload, options, false).await.map(|()| Bytes::new())
        };
        outcome.map_err(|err| (err.code().unwrap_or(ErrorCode::Rejected), err.message()))
    }

    /// A session for a remote principal, opened once and reused.
    pub(crate) async fn caller(&self, principal: Principal) -> Result<Bus, (ErrorCode, String)> {
        let name = principal.name.as_str().to_owned();
        if let Some(bus) = lock(&self.callers).get(&name) {
            return Ok(bus.clone());
        }
        let dial = self.router.dialer(principal, "switchboard-fleet");
        let bus = Bus::connect_hosted(self.endpoint.clone(), "switchboard-fleet".into(), dial)
            .await
            .map_err(|err| (ErrorCode::ShuttingDown, err.to_string()))?;
        bus.set_direct_calls(false);
        let mut callers = lock(&self.callers);
        if callers.len() >= MAX_CALLERS {
            if let Some(oldest) = callers.keys().next().cloned() {
                if let Some(old) = callers.remove(&oldest) {
                    old.close();
                }
            }
        }
        Ok(callers.entry(name).or_insert(bus).clone())
    }

    /// The hosts heard from, for `$sys.fleet.status`.
    pub fn hosts(&self) -> Vec<HostStatus> {
        lock(&self.roster).status(Instant::now())
    }

    pub fn stop(&self) {
        self.router.set_fleet_host(None);
        for (_, task) in std::mem::take(&mut *lock(&self.exported)) {
            task.abort();
        }
        for (_, bus) in std::mem::take(&mut *lock(&self.callers)) {
            bus.close();
        }
        self.stand_in.close();
    }
}

pub(crate) fn link_failed(err: &dyn std::fmt::Display) -> Reject {
    Reject::with_code(ErrorCode::InstanceGone, format!("the fleet link failed: {err}"))
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
