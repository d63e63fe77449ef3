//! What is on the bus: services, subscriptions, the daemon, a watch of
//! registry changes, and monitors of the traffic passing the daemon.

use std::time::Instant;

use bytes::Bytes;
use switchboard_proto::sys::{
    self, DaemonInfo, MonitorEvent, MonitorRequest, RegistryEvent, ServiceInfo, TopicsInfo, Whoami,
};
use switchboard_proto::{Call, Frame, MethodName, ServiceName};
use tokio::sync::mpsc;

use crate::bus::DEFAULT_TIMEOUT;
use crate::connection::{lock, Link, Shared, Waiter};
use crate::{Bus, CallError};

impl Bus {
    pub(crate) async fn sys_call<T: serde::de::DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
    ) -> Result<T, CallError> {
        let reply = self.call(&format!("{service}.{method}"), Bytes::new()).await?;
        sys::decode(&reply).map_err(|err| CallError::Decode(err.to_string()))
    }

    /// Every registered service with its instances and methods.
    pub async fn services(&self) -> Result<Vec<ServiceInfo>, CallError> {
        self.sys_call(sys::REGISTRY_SERVICE, sys::REGISTRY_LIST).await
    }

    /// Every subscription with its delivered and missed counts.
    pub async fn topics(&self) -> Result<TopicsInfo, CallError> {
        self.sys_call(sys::TOPICS_SERVICE, sys::TOPICS_LIST).await
    }

    /// Waits until the daemon has everything sent on this connection so far
    /// (a round trip behind it). Publications and notifications return once
    /// queued; a program about to exit calls this so none is left unsent.
    pub async fn flush(&self) -> Result<(), CallError> {
        self.whoami().await.map(drop)
    }

    /// Who the daemon says this connection is (always allowed).
    pub async fn whoami(&self) -> Result<Whoami, CallError> {
        self.sys_call(sys::DAEMON_SERVICE, sys::DAEMON_WHOAMI).await
    }

    /// Facts about the daemon (version, pid, counts).
    pub async fn daemon_info(&self) -> Result<DaemonInfo, CallError> {
        self.sys_call(sys::DAEMON_SERVICE, sys::DAEMON_INFO).await
    }

    /// A stream of registry changes (instances up and down) from now on.
    /// Events beyond `capacity` unread are dropped (and logged).
    pub async fn watch(&self, capacity: usize) -> Result<mpsc::Receiver<RegistryEvent>, CallError> {
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        // The watch is known by the id of the request that opened it.
        let frame = |req, _: &Link| {
            lock(&self.shared.watches).insert(req, tx.clone());
            Frame::Watch { req }
        };
        let result =
            self.round_trip(deadline, DEFAULT_TIMEOUT, false, |_| Ok(()), frame, Waiter::Reply).await;
        match result {
            Ok(_) => Ok(rx),
            Err(err) => {
                lock(&self.shared.watches).retain(|_, sender| !sender.same_channel(&tx));
                Err(err)
            }
        }
    }

    /// Every call, notification, broadcast and publication passing through
    /// the daemon that `pattern` matches (`>`: everything), as it happens —
    /// what `switchboard monitor` prints. Needs the `admin` permission.
    /// While it runs the daemon withdraws direct channels to the services it
    /// watches, so none of their calls bypass it. Ends when the bus closes
    /// (a reconnect does not start it again).
    pub async fn monitor(
        &self,
        pattern: &str,
        capacity: usize,
    ) -> Result<mpsc::Receiver<MonitorEvent>, CallError> {
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let payload = Bytes::from(sys::encode(&MonitorRequest { pattern: pattern.to_owned() }));
        let service = ServiceName::parse(sys::DAEMON_SERVICE)?;
        let method = MethodName::parse(sys::DAEMON_MONITOR)?;
        // Its events come under the id of the call that started it.
        let frame = |id, _: &Link| {
            lock(&self.shared.monitors).insert(id, tx.clone());
            Frame::Call(Call {
                id,
                timeout_ms: crate::bus::remaining_ms(deadline),
                instance: 0,
                service: service.clone(),
                method: method.clone(),
                headers: switchboard_proto::Headers::new(),
                payload: payload.clone(),
            })
        };
        let result =
            self.round_trip(deadline, DEFAULT_TIMEOUT, false, |_| Ok(()), frame, Waiter::Reply).await;
        match result {
            Ok(_) => Ok(rx),
            Err(err) => {
                lock(&self.shared.monitors).retain(|_, sender| !sender.same_channel(&tx));
                Err(err)
            }
        }
    }
}

/// An `Event` frame: a registry change for a watch, or what a monitor saw.
pub(crate) fn event(shared: &Shared, req: u32, payload: &[u8]) {
    if let Some(sender) = lock(&shared.watches).get(&req).cloned() {
        if let Ok(event) = sys::decode::<RegistryEvent>(payload) {
            if sender.try_send(event).is_err() {
                tracing::warn!("registry watcher is not keeping up; an event was dropped");
            }
        }
        return;
    }
    let Some(sender) = lock(&shared.monitors).get(&req).cloned() else { return };
    if let Ok(event) = sys::decode::<MonitorEvent>(payload) {
        if sender.try_send(event).is_err() {
            tracing::warn!("a monitor is not keeping up; an event was dropped");
        }
    }
}
