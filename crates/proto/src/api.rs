//! The daemon's own API, `$sys.*`, declared once: every method with what
//! it takes, what it gives and what it is for ([`SYS_METHODS`], which
//! `switchboard ls --sys` prints), and the typed request of each method the
//! router answers itself ([`SysCall`], decoded in one place). The
//! supervisor's `$sys.services.*` is served by a hosted app; it is listed
//! here too, and its schemas live in [`crate::supervision`].

use crate::direct::{DirectRequest, DAEMON_DIRECT};
use crate::regions::{self as reg, RegionOpen, RegionRef};
use crate::stats;
use crate::supervision as sup;
use crate::sys::{self, QueueDeclare, QueuePeek, QueueRef};
use crate::ErrorCode;

/// One method of the daemon's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysMethod {
    pub service: &'static str,
    pub method: &'static str,
    /// The argument's schema (a type in `sys`, `supervision` or `direct`), or `-`.
    pub takes: &'static str,
    /// The reply's schema.
    pub gives: &'static str,
    pub about: &'static str,
}

const fn m(
    service: &'static str,
    method: &'static str,
    takes: &'static str,
    gives: &'static str,
    about: &'static str,
) -> SysMethod {
    SysMethod { service, method, takes, gives, about }
}

/// Every `$sys` method, the daemon's and its apps'.
pub const SYS_METHODS: &[SysMethod] = &[
    m(sys::DAEMON_SERVICE, sys::DAEMON_INFO, "-", "DaemonInfo", "version, pid, uptime, counts, limits"),
    m(
        sys::DAEMON_SERVICE,
        sys::DAEMON_WHOAMI,
        "-",
        "Whoami",
        "who the daemon says this connection is (always allowed)",
    ),
    m(
        sys::DAEMON_SERVICE,
        sys::DAEMON_REPORT_BREAKERS,
        "BreakerReport",
        "-",
        "a client reports its open and half-open circuit breakers (always allowed)",
    ),
    m(
        sys::DAEMON_SERVICE,
        sys::DAEMON_BREAKERS,
        "-",
        "[ProcessBreakers]",
        "open and half-open breakers, per connection",
    ),
    m(
        sys::DAEMON_SERVICE,
        sys::DAEMON_MONITOR,
        "MonitorRequest",
        "MonitorEvent…",
        "watch calls, notifications and publications as they pass (admin)",
    ),
    m(
        sys::DAEMON_SERVICE,
        stats::DAEMON_STATS,
        "-",
        "DaemonStats",
        "calls, errors and latencies per method, publications, connections (metrics)",
    ),
    m(
        sys::DAEMON_SERVICE,
        stats::DAEMON_REPORT_CALLS,
        "CallReport",
        "-",
        "an instance reports the calls it served over direct channels (its own services only)",
    ),
    m(
        stats::METRICS_SERVICE,
        stats::METRICS_SCRAPE,
        "-",
        "text",
        "the Prometheus text exposition of everything the daemon counts (metrics)",
    ),
    m(
        sys::DAEMON_SERVICE,
        DAEMON_DIRECT,
        "DirectRequest",
        "DirectGrant",
        "a direct channel to a service's lone instance",
    ),
    m(
        sys::REGISTRY_SERVICE,
        sys::REGISTRY_LIST,
        "-",
        "[ServiceInfo]",
        "services, instances and their methods",
    ),
    m(sys::TOPICS_SERVICE, sys::TOPICS_LIST, "-", "TopicsInfo", "subscriptions and retained topics"),
    m(sys::QUEUES_SERVICE, sys::QUEUES_LIST, "-", "[QueueInfo]", "queues with depth, rates, consumers"),
    m(
        sys::QUEUES_SERVICE,
        sys::QUEUES_DECLARE,
        "QueueDeclare",
        "-",
        "create a queue or change its options (queue.declare)",
    ),
    m(
        sys::QUEUES_SERVICE,
        sys::QUEUES_PEEK,
        "QueuePeek",
        "[PeekedMessage]",
        "look at waiting messages without taking them",
    ),
    m(sys::QUEUES_SERVICE, sys::QUEUES_PURGE, "QueueRef", "u64", "drop every waiting message (admin)"),
    m(sys::QUEUES_SERVICE, sys::QUEUES_DELETE, "QueueRef", "-", "delete an empty queue (queue.declare)"),
    m(
        reg::REGIONS_SERVICE,
        reg::REGIONS_OPEN,
        "RegionOpen",
        "descriptor",
        "map a named shared region, creating it (region.read / region.write; needs descriptors)",
    ),
    m(
        reg::REGIONS_SERVICE,
        reg::REGIONS_CHANGED,
        "RegionRef",
        "u64",
        "a writer announces a change: the sequence goes out on $sys.regions.NAME (region.write)",
    ),
    m(
        reg::REGIONS_SERVICE,
        reg::REGIONS_LIST,
        "-",
        "[RegionInfo]",
        "regions, their sequence and who maps them",
    ),
    m(
        sup::SERVICES_SERVICE,
        sup::STATUS,
        "ServiceRef",
        "[ServiceStatus]",
        "supervised services and their instances",
    ),
    m(
        sup::SERVICES_SERVICE,
        sup::START,
        "ServiceRef",
        "ServiceStatus",
        "start a service, once Running (control)",
    ),
    m(
        sup::SERVICES_SERVICE,
        sup::STOP,
        "ServiceRef",
        "ServiceStatus",
        "stop a service, once Stopped (control)",
    ),
    m(sup::SERVICES_SERVICE, sup::RESTART, "ServiceRef", "ServiceStatus", "stop then start (control)"),
    m(sup::SERVICES_SERVICE, sup::PAUSE, "ServiceRef", "ServiceStatus", "pause a service (control)"),
    m(
        sup::SERVICES_SERVICE,
        sup::CONTINUE,
        "ServiceRef",
        "ServiceStatus",
        "continue a paused service (control)",
    ),
    m(
        sup::SERVICES_SERVICE,
        sup::CONTROL,
        "ControlRequest",
        "[ControlReply]",
        "send a control code to every instance (control)",
    ),
    m(
        sup::SERVICES_SERVICE,
        sup::RELOAD,
        "-",
        "ReloadReport",
        "re-read the config file and apply it (admin)",
    ),
    m(
        sup::SERVICES_SERVICE,
        sup::REEXEC,
        "-",
        "str",
        "replace the daemon with its binary on disk, services kept running (admin)",
    ),
    m(sup::SERVICES_SERVICE, sup::LOGS, "LogQuery", "[LogLine]", "a service's captured log lines"),
    m(
        sup::SERVICES_SERVICE,
        sup::ATTACH,
        "Attach",
        "-",
        "a supervised instance attaches (its own connection)",
    ),
    m(sup::SERVICES_SERVICE, sup::PROGRESS, "Progress", "-", "an attached instance reports start progress"),
    m(sup::SERVICES_SERVICE, sup::LOG, "LogEvent", "-", "an attached instance logs a structured event"),
];

/// A call to one of the services the daemon answers itself, decoded.
#[derive(Debug)]
pub enum SysCall {
    DaemonInfo,
    DaemonWhoami,
    DaemonDirect(DirectRequest),
    DaemonReportBreakers(sys::BreakerReport),
    DaemonBreakers,
    DaemonStats,
    DaemonReportCalls(stats::CallReport),
    DaemonMonitor(sys::MonitorRequest),
    RegistryList,
    TopicsList,
    QueuesList,
    QueuesDeclare(QueueDeclare),
    QueuesPeek(QueuePeek),
    QueuesPurge(QueueRef),
    QueuesDelete(QueueRef),
    RegionsOpen(RegionOpen),
    RegionsChanged(RegionRef),
    RegionsList,
}

/// Why a call to the daemon's own services cannot be made.
pub type SysError = (ErrorCode, String);

impl SysCall {
    /// Decodes a call to `service.method`. `None` when `service` is not one
    /// the daemon answers itself (an app's, like `$sys.services`, or
    /// anyone's); an error for an unknown method or arguments that do not
    /// fit its schema.
    pub fn decode(service: &str, method: &str, payload: &[u8]) -> Option<Result<Self, SysError>> {
        if ![
            sys::DAEMON_SERVICE,
            sys::REGISTRY_SERVICE,
            sys::TOPICS_SERVICE,
            sys::QUEUES_SERVICE,
            reg::REGIONS_SERVICE,
        ]
        .contains(&service)
        {
            return None;
        }
        let args = (service, method, payload);
        Some(match (service, method) {
            (sys::DAEMON_SERVICE, sys::DAEMON_INFO) => Ok(Self::DaemonInfo),
            (sys::DAEMON_SERVICE, sys::DAEMON_WHOAMI) => Ok(Self::DaemonWhoami),
            (sys::DAEMON_SERVICE, DAEMON_DIRECT) => Self::arguments(args, Self::DaemonDirect),
            (sys::DAEMON_SERVICE, sys::DAEMON_REPORT_BREAKERS) => {
                Self::arguments(args, Self::DaemonReportBreakers)
            }
            (sys::DAEMON_SERVICE, sys::DAEMON_BREAKERS) => Ok(Self::DaemonBreakers),
            (sys::DAEMON_SERVICE, stats::DAEMON_STATS) => Ok(Self::DaemonStats),
            (sys::DAEMON_SERVICE, sys::DAEMON_MONITOR) => Self::arguments(args, Self::DaemonMonitor),
            (sys::DAEMON_SERVICE, stats::DAEMON_REPORT_CALLS) => {
                Self::arguments(args, Self::DaemonReportCalls)
            }
            (sys::REGISTRY_SERVICE, sys::REGISTRY_LIST) => Ok(Self::RegistryList),
            (sys::TOPICS_SERVICE, sys::TOPICS_LIST) => Ok(Self::TopicsList),
            (sys::QUEUES_SERVICE, sys::QUEUES_LIST) => Ok(Self::QueuesList),
            (sys::QUEUES_SERVICE, sys::QUEUES_DECLARE) => Self::arguments(args, Self::QueuesDeclare),
            (sys::QUEUES_SERVICE, sys::QUEUES_PEEK) => Self::arguments(args, Self::QueuesPeek),
            (sys::QUEUES_SERVICE, sys::QUEUES_PURGE) => Self::arguments(args, Self::QueuesPurge),
            (sys::QUEUES_SERVICE, sys::QUEUES_DELETE) => Self::arguments(args, Self::QueuesDelete),
            (reg::REGIONS_SERVICE, reg::REGIONS_OPEN) => Self::arguments(args, Self::RegionsOpen),
            (reg::REGIONS_SERVICE, reg::REGIONS_CHANGED) => Self::arguments(args, Self::RegionsChanged),
            (reg::REGIONS_SERVICE, reg::REGIONS_LIST) => Ok(Self::RegionsList),
            _ => Err((ErrorCode::NoSuchMethod, format!("service {service} has no method {method}"))),
        })
    }

    /// Decodes the arguments `variant` carries, naming the method if they do not fit.
    fn arguments<T: serde::de::DeserializeOwned>(
        (service, method, payload): (&str, &str, &[u8]),
        variant: fn(T) -> Self,
    ) -> Result<Self, SysError> {
        sys::decode(payload)
            .map(variant)
            .map_err(|err| (ErrorCode::BadArguments, format!("arguments of {service}.{method}: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_the_daemon_answers_is_declared_and_decodes() {
        let payload_for = |method: &SysMethod| match method.takes {
            "DirectRequest" => sys::encode(&DirectRequest { service: "a".into(), instance: 0 }),
            "QueueDeclare" => {
                sys::encode(&QueueDeclare { queue: "q".into(), options: Default::default(), fleet: false })
            }
            "QueuePeek" => sys::encode(&QueuePeek { queue: "q".into(), count: 1 }),
            "QueueRef" => sys::encode(&QueueRef { queue: "q".into() }),
            "BreakerReport" => sys::encode(&sys::BreakerReport::default()),
            "CallReport" => sys::encode(&stats::CallReport::default()),
            "MonitorRequest" => sys::encode(&sys::MonitorRequest { pattern: ">".into() }),
            "RegionOpen" => sys::encode(&RegionOpen { name: "r".into(), size: 0, write: false }),
            "RegionRef" => sys::encode(&RegionRef { name: "r".into() }),
            _ => Vec::new(),
        };
        let mut answered = 0;
        for method in SYS_METHODS {
            match SysCall::decode(method.service, method.method, &payload_for(method)) {
                Some(decoded) => {
                    assert!(decoded.is_ok(), "{method:?}: {decoded:?}");
                    answered += 1;
                }
                None => assert!(
                    [sup::SERVICES_SERVICE, stats::METRICS_SERVICE].contains(&method.service),
                    "{method:?}"
                ),
            }
        }
        assert_eq!(answered, 18, "one SysCall variant per method the daemon answers");
    }

    #[test]
    fn unknown_methods_and_bad_arguments_are_typed_errors() {
        let unknown = SysCall::decode(sys::QUEUES_SERVICE, "explode", &[]).unwrap().unwrap_err();
        assert_eq!(unknown.0, ErrorCode::NoSuchMethod);
        let bad = SysCall::decode(sys::QUEUES_SERVICE, sys::QUEUES_PEEK, b"\xc1").unwrap().unwrap_err();
        assert_eq!(bad.0, ErrorCode::BadArguments);
        assert!(bad.1.contains("$sys.queues.peek"), "{}", bad.1);
        assert!(SysCall::decode("billing", "charge", &[]).is_none());
        assert!(SysCall::decode(sup::SERVICES_SERVICE, sup::STATUS, &[]).is_none());
    }
}
