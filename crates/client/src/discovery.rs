//! What is on the bus: services, subscriptions, the daemon, and a watch of
//! registry changes.

use std::time::Instant;

use bytes::Bytes;
use switchboard_proto::sys::{self, DaemonInfo, RegistryEvent, ServiceInfo, TopicsInfo, Whoami};
use switchboard_proto::Frame;
use tokio::sync::mpsc;

use crate::bus::DEFAULT_TIMEOUT;
use crate::connection::{lock, Link, Waiter};
use crate::{Bus, CallError};

impl Bus {
    async fn sys_call<T: serde::de::DeserializeOwned>(
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
}
