//! What the daemon counts, as the Prometheus text exposition (the
//! OpenMetrics flavour `prometheus-client` writes, which Prometheus reads).
//! Pure: a [`Snapshot`] in, text out; the values are the daemon's own
//! counters, so each metric here encodes what it is given instead of
//! counting anything itself.

use std::fmt::{self, Debug};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use switchboard_proto::stats::{DaemonStats, Latency, MethodCounts, LATENCY_BOUNDS_US};
use switchboard_proto::supervision::ServiceStatus;
use switchboard_proto::sys::{DaemonInfo, QueueInfo};

/// Everything one scrape reports.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub info: DaemonInfo,
    pub stats: DaemonStats,
    pub queues: Vec<QueueInfo>,
    /// Supervised services (none when the daemon supervises nothing).
    pub services: Vec<ServiceStatus>,
}

type Labels = Vec<(&'static str, String)>;

/// One metric family whose samples are given, not counted here.
#[derive(Debug)]
enum Given {
    Counters(Vec<(Labels, u64)>),
    Gauges(Vec<(Labels, i64)>),
    /// Durations in seconds, from histograms in microseconds.
    Histograms(Vec<(Labels, Latency)>),
}

impl EncodeMetric for Given {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        match self {
            Given::Counters(samples) => {
                for (labels, value) in samples {
                    if labels.is_empty() {
                        encoder.encode_counter::<NoLabelSet, _, u64>(value, None)?;
                    } else {
                        encoder.encode_family(labels)?.encode_counter::<NoLabelSet, _, u64>(value, None)?;
                    }
                }
            }
            Given::Gauges(samples) => {
                for (labels, value) in samples {
                    if labels.is_empty() {
                        encoder.encode_gauge(value)?;
                    } else {
                        encoder.encode_family(labels)?.encode_gauge(value)?;
                    }
                }
            }
            Given::Histograms(samples) => {
                for (labels, latency) in samples {
                    let buckets = buckets(latency);
                    let sum = latency.sum_us as f64 / 1e6;
                    encoder.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                        sum,
                        latency.count(),
                        &buckets,
                        None,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        match self {
            Given::Counters(_) => MetricType::Counter,
            Given::Gauges(_) => MetricType::Gauge,
            Given::Histograms(_) => MetricType::Histogram,
        }
    }
}

/// (upper bound in seconds, count in that bucket alone), the last unbounded.
fn buckets(latency: &Latency) -> Vec<(f64, u64)> {
    let bounds = LATENCY_BOUNDS_US.iter().map(|us| *us as f64 / 1e6).chain(std::iter::once(f64::INFINITY));
    let counts = latency.buckets.iter().copied().chain(std::iter::repeat(0));
    bounds.zip(counts).collect()
}

fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The exposition of `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut registry = Registry::with_prefix("switchboard");
    calls(&mut registry, &snapshot.stats);
    topics_and_connections(&mut registry, &snapshot.stats);
    queues(&mut registry, &snapshot.queues);
    supervised(&mut registry, &snapshot.services);
    let info = &snapshot.info;
    registry.register_with_unit(
        "uptime",
        "How long the daemon has run",
        Unit::Seconds,
        Given::Gauges(vec![(vec![("version", info.version.clone())], count(info.uptime_ms / 1000))]),
    );
    registry.register(
        "calls_in_flight",
        "Calls routed and not answered yet",
        Given::Gauges(vec![(vec![], i64::from(info.calls_in_flight))]),
    );
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

fn calls(registry: &mut Registry, stats: &DaemonStats) {
    let (mut calls, mut errors, mut durations) = (Vec::new(), Vec::new(), Vec::new());
    for method in &stats.methods {
        let paths: [(&str, &MethodCounts); 2] = [("routed", &method.routed), ("direct", &method.direct)];
        for (path, counts) in paths {
            if counts.calls == 0 {
                continue;
            }
            let labels: Labels = vec![
                ("service", method.service.clone()),
                ("method", method.method.clone()),
                ("path", path.into()),
            ];
            calls.push((labels.clone(), counts.calls));
            for (kind, n) in &counts.errors {
                let mut with_kind = labels.clone();
                with_kind.push(("kind", kind.clone()));
                errors.push((with_kind, *n));
            }
            durations.push((labels, counts.latency.clone()));
        }
    }
    registry.register(
        "calls",
        "Calls answered, per method; path: routed by the daemon, or direct (reported by the instance)",
        Given::Counters(calls),
    );
    registry.register("call_errors", "Calls answered with an error, by kind", Given::Counters(errors));
    registry.register_with_unit(
        "call_duration",
        "Time from the call reaching the daemon (routed) or the instance (direct) to its answer",
        Unit::Seconds,
        Given::Histograms(durations),
    );
    let refused = stats.refused.iter().map(|(kind, n)| (vec![("kind", kind.clone())], *n)).collect();
    registry.register(
        "calls_refused",
        "Calls refused before reaching an instance, by kind",
        Given::Counters(refused),
    );
}

fn topics_and_connections(registry: &mut Registry, stats: &DaemonStats) {
    registry.register(
        "publications",
        "Publications accepted",
        Given::Counters(vec![(vec![], stats.published)]),
    );
    let (mut delivered, mut missed) = (Vec::new(), Vec::new());
    for (pattern, sent, dropped) in &stats.patterns {
        delivered.push((vec![("pattern", pattern.clone())], *sent));
        missed.push((vec![("pattern", pattern.clone())], *dropped));
    }
    registry.register(
        "delivered",
        "Messages delivered, per subscription pattern",
        Given::Counters(delivered),
    );
    registry.register(
        "missed",
        "Messages subscribers missed (did not keep up), per subscription pattern",
        Given::Counters(missed),
    );
    let connections =
        stats.connections.iter().map(|(kind, n)| (vec![("principal", kind.clone())], count(*n)));
    registry.register(
        "connections",
        "Open connections, by principal kind",
        Given::Gauges(connections.collect()),
    );
    registry.register(
        "direct_channels",
        "Direct channels open",
        Given::Gauges(vec![(vec![], count(stats.direct_channels))]),
    );
}

fn queues(registry: &mut Registry, queues: &[QueueInfo]) {
    let each = |value: &dyn Fn(&QueueInfo) -> u64| -> Vec<(Labels, u64)> {
        queues.iter().map(|q| (vec![("queue", q.queue.clone())], value(q))).collect()
    };
    let gauges = |samples: Vec<(Labels, u64)>| {
        Given::Gauges(samples.into_iter().map(|(l, v)| (l, count(v))).collect())
    };
    registry.register("queue_depth", "Messages waiting", gauges(each(&|q| q.depth)));
    registry.register("queue_in_flight", "Messages delivered, not acked yet", gauges(each(&|q| q.in_flight)));
    registry.register("queue_consumers", "Consumers", gauges(each(&|q| u64::from(q.consumers))));
    registry.register_with_unit(
        "queue_size",
        "What the queue holds",
        Unit::Bytes,
        gauges(each(&|q| q.bytes)),
    );
    registry.register("queue_puts", "Messages put", Given::Counters(each(&|q| q.put_total)));
    registry.register("queue_acks", "Messages acked", Given::Counters(each(&|q| q.acked_total)));
    registry.register(
        "queue_dead_lettered",
        "Messages dead-lettered",
        Given::Counters(each(&|q| q.dead_lettered_total)),
    );
}

fn supervised(registry: &mut Registry, services: &[ServiceStatus]) {
    let (mut states, mut restarts, mut uptimes) = (Vec::new(), Vec::new(), Vec::new());
    for service in services {
        states.push((vec![("service", service.service.clone()), ("state", service.state.clone())], 1));
        for instance in &service.instances {
            let labels: Labels =
                vec![("service", service.service.clone()), ("instance", instance.instance.to_string())];
            restarts.push((labels.clone(), i64::from(instance.restarts)));
            uptimes.push((labels, count(instance.uptime_ms / 1000)));
        }
    }
    registry.register(
        "service_state",
        "A supervised service's state (the one with value 1)",
        Given::Gauges(states),
    );
    registry.register(
        "service_restarts",
        "Restarts of a supervised instance within its restart budget's window",
        Given::Gauges(restarts),
    );
    registry.register_with_unit(
        "service_uptime",
        "How long a supervised instance has run",
        Unit::Seconds,
        Given::Gauges(uptimes),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::stats::MethodStats;

    #[test]
    fn counts_become_samples_with_their_labels_and_cumulative_buckets() {
        let mut routed = MethodCounts::default();
        routed.record(None, 40);
        routed.record(Some("timeout"), 2_000_000);
        let stats = DaemonStats {
            methods: vec![MethodStats {
                service: "billing".into(),
                method: "charge".into(),
                routed,
                direct: MethodCounts::default(),
            }],
            refused: vec![("no_such_service".into(), 3)],
            published: 7,
            ..Default::default()
        };
        let text = render(&Snapshot { stats, ..Default::default() });
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        has(r#"switchboard_calls_total{service="billing",method="charge",path="routed"} 2"#);
        has(
            r#"switchboard_call_errors_total{service="billing",method="charge",path="routed",kind="timeout"} 1"#,
        );
        has(
            r#"switchboard_call_duration_seconds_bucket{le="0.00005",service="billing",method="charge",path="routed"} 1"#,
        );
        has(
            r#"switchboard_call_duration_seconds_bucket{le="2.5",service="billing",method="charge",path="routed"} 2"#,
        );
        has(r#"switchboard_call_duration_seconds_count{service="billing",method="charge",path="routed"} 2"#);
        has(r#"switchboard_calls_refused_total{kind="no_such_service"} 3"#);
        has("switchboard_publications_total 7");
        assert!(!text.contains(r#"path="direct""#), "no direct samples without direct calls");
        assert!(text.ends_with("# EOF\n"));
    }
}
