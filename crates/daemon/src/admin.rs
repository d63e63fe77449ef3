//! The daemon's own services, `$sys.*`, answered inline by the router so the
//! CLI and any client discover the bus through ordinary calls.
//!
//! Must stay cheap and side-effect free: it runs under the router lock.

use bytes::Bytes;
use switchboard_proto::sys::{self, DaemonInfo, InstanceInfo, ServiceInfo};
use switchboard_proto::{ErrorCode, MethodName, ServiceName};

use crate::router::Router;

/// Answers a call to a reserved (`$`) service.
pub fn call(
    router: &Router,
    service: &ServiceName,
    method: &MethodName,
    _payload: &Bytes,
) -> Result<Bytes, (ErrorCode, String)> {
    let reply = match (service.as_str(), method.as_str()) {
        (sys::REGISTRY_SERVICE, sys::REGISTRY_LIST) => sys::encode(&list(router)),
        (sys::DAEMON_SERVICE, sys::DAEMON_INFO) => sys::encode(&info(router)),
        (sys::REGISTRY_SERVICE | sys::DAEMON_SERVICE, _) => {
            return Err((
                ErrorCode::NoSuchMethod,
                format!("service {service} has no method {method}"),
            ))
        }
        _ => {
            return Err((
                ErrorCode::NoSuchService,
                format!("no service named {service} is registered"),
            ))
        }
    };
    Ok(Bytes::from(reply))
}

fn list(router: &Router) -> Vec<ServiceInfo> {
    router
        .registry()
        .services()
        .into_iter()
        .map(|(name, instances)| ServiceInfo {
            service: name.to_string(),
            instances: instances
                .into_iter()
                .map(|(id, instance)| {
                    let session = router.sessions().get(&instance.session);
                    InstanceInfo {
                        instance: id,
                        methods: instance.methods.iter().map(ToString::to_string).collect(),
                        client: session.map(|s| s.client_name.clone()).unwrap_or_default(),
                        pid: session.map(|s| s.caller.pid).filter(|pid| *pid != 0),
                        outstanding: instance.outstanding,
                        delivered: instance.delivered,
                    }
                })
                .collect(),
        })
        .collect()
}

fn info(router: &Router) -> DaemonInfo {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    DaemonInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        uptime_ms: u64::try_from(router.uptime().as_millis()).unwrap_or(u64::MAX),
        sessions: count(router.sessions().len()),
        services: count(router.registry().service_count()),
        instances: count(router.registry().instance_count()),
        calls_in_flight: count(router.calls_in_flight()),
        max_frame: router.limits().max_frame,
    }
}
