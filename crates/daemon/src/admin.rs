//! The daemon's read-only `$sys.*` answers (who am I, the registry, topics,
//! facts about the daemon), which `crate::router`'s `sys_calls` dispatches, so the
//! CLI and any client discover the bus through ordinary calls.
//!
//! Must stay cheap and side-effect free: it runs under the router lock.

use std::collections::BTreeMap;

use switchboard_proto::stats::DaemonStats;
use switchboard_proto::sys::{
    DaemonInfo, InstanceInfo, ProcessBreakers, ServiceInfo, SubscriptionInfo, TopicsInfo, Whoami,
};
use switchboard_proto::SessionId;

use crate::router::Router;

/// `$sys.daemon.whoami`.
pub fn whoami(router: &Router, from: SessionId) -> Whoami {
    let caller = router.sessions().get(&from).map(|s| s.caller.clone()).unwrap_or_default();
    Whoami {
        principal: caller.principal.to_string(),
        session: caller.session,
        uid: caller.uid,
        pid: caller.pid,
    }
}

/// `$sys.daemon.breakers`: what each connection reported, by session.
pub fn breakers(router: &Router) -> Vec<ProcessBreakers> {
    let mut found: Vec<ProcessBreakers> = router
        .sessions()
        .iter()
        .filter(|(_, session)| !session.breakers.is_empty())
        .map(|(id, session)| ProcessBreakers {
            session: *id,
            client: session.client_name.clone(),
            principal: session.caller.principal.to_string(),
            pid: Some(session.caller.pid).filter(|pid| *pid != 0),
            breakers: session.breakers.clone(),
        })
        .collect();
    found.sort_by_key(|p| p.session);
    found
}

/// `$sys.registry.list`.
pub fn list(router: &Router) -> Vec<ServiceInfo> {
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

/// `$sys.daemon.stats`: the router's counters, and what it can count now
/// (subscriptions' deliveries, connections, direct channels).
pub fn stats(router: &Router) -> DaemonStats {
    let counted = router.stats();
    let mut patterns: BTreeMap<String, (u64, u64)> =
        counted.ended().iter().map(|(pattern, totals)| (pattern.clone(), *totals)).collect();
    for (_, sub) in router.topics().all() {
        let totals = patterns.entry(sub.pattern.to_string()).or_default();
        totals.0 = totals.0.saturating_add(sub.delivered);
        totals.1 = totals.1.saturating_add(sub.missed);
    }
    let mut connections: BTreeMap<String, u64> = BTreeMap::new();
    for session in router.sessions().values() {
        let principal = session.caller.principal.to_string();
        let kind = principal.split_once(':').map_or(principal.as_str(), |(kind, _)| kind);
        *connections.entry(kind.to_owned()).or_default() += 1;
    }
    DaemonStats {
        methods: counted.methods(),
        refused: counted.refusals(),
        published: counted.publications(),
        patterns: patterns
            .into_iter()
            .map(|(pattern, (delivered, missed))| (pattern, delivered, missed))
            .collect(),
        connections: connections.into_iter().collect(),
        direct_channels: router.direct_channels() as u64,
    }
}

/// `$sys.topics.list`.
pub fn topics(router: &Router) -> TopicsInfo {
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

/// `$sys.daemon.info`.
pub fn info(router: &Router) -> DaemonInfo {
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
        generation: router.generation(),
    }
}
