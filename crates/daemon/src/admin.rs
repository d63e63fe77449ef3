//! The daemon's own services, `$sys.*`, answered inline by the router so the
//! CLI and any client discover the bus through ordinary calls.
//!
//! Must stay cheap and side-effect free: it runs under the router lock.

use bytes::Bytes;
use switchboard_proto::sys::{
    self, DaemonInfo, InstanceInfo, ServiceInfo, SubscriptionInfo, TopicsInfo, Whoami,
};
use switchboard_proto::{ErrorCode, MethodName, ServiceName, SessionId};

use crate::router::Router;

/// Answers a call to a reserved (`$`) service.
pub fn call(
    router: &Router,
    from: SessionId,
    service: &ServiceName,
    method: &MethodName,
    _payload: &Bytes,
) -> Result<Bytes, (ErrorCode, String)> {
    let reply = match (service.as_str(), method.as_str()) {
        (sys::DAEMON_SERVICE, sys::DAEMON_WHOAMI) => {
            let caller = router.sessions().get(&from).map(|s| s.caller.clone()).unwrap_or_default();
            sys::encode(&Whoami {
                principal: caller.principal.to_string(),
                session: caller.session,
                uid: caller.uid,
                pid: caller.pid,
            })
        }
        (sys::REGISTRY_SERVICE, sys::REGISTRY_LIST) => sys::encode(&list(router)),
        (sys::DAEMON_SERVICE, sys::DAEMON_INFO) => sys::encode(&info(router)),
        (sys::TOPICS_SERVICE, sys::TOPICS_LIST) => sys::encode(&topics(router)),
        (sys::REGISTRY_SERVICE | sys::DAEMON_SERVICE | sys::TOPICS_SERVICE, _) => {
            return Err((ErrorCode::NoSuchMethod, format!("service {service} has no method {method}")))
        }
        _ => return Err((ErrorCode::NoSuchService, format!("no service named {service} is registered"))),
    };
    Ok(Bytes::from(reply))
}

fn list(router: &Router) -> Vec<ServiceInfo> {
    router
        .registry()
        .services()
        .into_iter()
        // The daemon's own services (the supervisor's `$sys.services`) are
        // part of the daemon, like `$sys.registry` itself.
        .filter(|(name, _)| !name.is_reserved())
        .map(|(name, instances)| ServiceInfo {
            service: name.to_string(),
            instances: instances
                .into_iter()
                .map(|(id, instance)| {
                    let session = router.sessions().get(&instance.session);
                    InstanceInfo {
                        instance: id,
                        methods: instance.methods.iter().map(|m| m.name.to_string()).collect(),
                        signatures: instance.methods.iter().map(|m| m.signature.clone()).collect(),
                        client: session.map(|s| s.client_name.clone()).unwrap_or_default(),
                        pid: session.map(|s| s.caller.pid).filter(|pid| *pid != 0),
                        outstanding: instance.outstanding,
                        delivered: instance.delivered,
                        direct_channels: router.direct_channels_to(id),
                    }
                })
                .collect(),
        })
        .collect()
}

fn topics(router: &Router) -> TopicsInfo {
    let mut subscriptions: Vec<SubscriptionInfo> = router
        .topics()
        .all()
        .map(|(_, sub)| {
            let session = router.sessions().get(&sub.session);
            SubscriptionInfo {
                pattern: sub.pattern.to_string(),
                client: session.map(|s| s.client_name.clone()).unwrap_or_default(),
                pid: session.map(|s| s.caller.pid).filter(|pid| *pid != 0),
                delivered: sub.delivered,
                missed: sub.missed,
                backlog: u32::try_from(sub.backlog.len()).unwrap_or(u32::MAX),
            }
        })
        .collect();
    subscriptions.sort_by(|a, b| (&a.pattern, &a.client).cmp(&(&b.pattern, &b.client)));
    TopicsInfo {
        subscriptions,
        retained_topics: u32::try_from(router.topics().retained_count()).unwrap_or(u32::MAX),
    }
}

fn info(router: &Router) -> DaemonInfo {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    DaemonInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        uptime_ms: u64::try_from(router.uptime().as_millis()).unwrap_or(u64::MAX),
        sessions: count(router.sessions().len()),
        services: count(router.registry().services().iter().filter(|(name, _)| !name.is_reserved()).count()),
        instances: count(
            router
                .registry()
                .services()
                .iter()
                .filter(|(name, _)| !name.is_reserved())
                .map(|(_, i)| i.len())
                .sum(),
        ),
        calls_in_flight: count(router.calls_in_flight()),
        max_frame: router.limits().max_frame,
        data_dir: router.data_dir().display().to_string(),
    }
}
