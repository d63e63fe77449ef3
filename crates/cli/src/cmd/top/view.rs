//! What `switchboard top` shows, from two snapshots an interval apart: per
//! service method, calls and errors per second and the latency percentiles
//! of that interval (from the histogram's bucket deltas), routed and direct
//! together; per subscription pattern, deliveries and misses per second; per
//! queue, depth, in flight and rates; supervised services' states. Pure: no
//! terminal, no bus.

use std::collections::HashMap;
use std::time::Duration;

use switchboard_metrics::Snapshot;
use switchboard_proto::stats::{Latency, MethodCounts, LATENCY_BOUNDS_US};

/// The column the methods are sorted by (`s` cycles through them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Rate,
    Errors,
    Latency,
    Name,
}

impl SortBy {
    pub fn next(self) -> Self {
        match self {
            Self::Rate => Self::Errors,
            Self::Errors => Self::Latency,
            Self::Latency => Self::Name,
            Self::Name => Self::Rate,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Rate => "calls/s",
            Self::Errors => "errors/s",
            Self::Latency => "p99",
            Self::Name => "name",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MethodRow {
    pub name: String,
    pub rate: f64,
    pub errors: f64,
    /// Of the calls answered in the interval, in milliseconds (bucket upper bounds).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatternRow {
    pub pattern: String,
    pub delivered: f64,
    pub missed: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueRow {
    pub queue: String,
    pub depth: u64,
    pub in_flight: u64,
    pub put_rate: f64,
    pub ack_rate: f64,
    pub dead_lettered: u64,
}

/// One screen's worth.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    pub methods: Vec<MethodRow>,
    pub patterns: Vec<PatternRow>,
    pub queues: Vec<QueueRow>,
    /// (service, state) of supervised services.
    pub services: Vec<(String, String)>,
}

fn combined(routed: &MethodCounts, direct: &MethodCounts) -> MethodCounts {
    let mut all = routed.clone();
    all.add(direct);
    all
}

fn errors(counts: &MethodCounts) -> u64 {
    counts.errors.iter().map(|(_, n)| *n).sum()
}

/// The upper bound (ms) of the bucket where `quantile` of the calls in
/// `now − before` fall; `None` without calls, infinity past the last bound.
pub fn percentile(before: &Latency, now: &Latency, quantile: f64) -> Option<f64> {
    let delta: Vec<u64> = now
        .buckets
        .iter()
        .enumerate()
        .map(|(at, n)| n.saturating_sub(before.buckets.get(at).copied().unwrap_or(0)))
        .collect();
    let total: u64 = delta.iter().sum();
    if total == 0 {
        return None;
    }
    let wanted = (quantile * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (at, n) in delta.iter().enumerate() {
        seen += n;
        if seen >= wanted {
            return Some(LATENCY_BOUNDS_US.get(at).map_or(f64::INFINITY, |us| *us as f64 / 1000.0));
        }
    }
    None
}

/// The view of `now`, with rates over `elapsed` since `before`.
pub fn view(before: &Snapshot, now: &Snapshot, elapsed: Duration, sort: SortBy) -> View {
    let seconds = elapsed.as_secs_f64().max(0.001);
    let per_second = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
    let earlier: HashMap<(&str, &str), MethodCounts> = before
        .stats
        .methods
        .iter()
        .map(|m| ((m.service.as_str(), m.method.as_str()), combined(&m.routed, &m.direct)))
        .collect();
    let mut methods: Vec<MethodRow> = now
        .stats
        .methods
        .iter()
        // The daemon's own services (top's own scrapes among them).
        .filter(|m| !m.service.starts_with('$'))
        .map(|m| {
            let counts = combined(&m.routed, &m.direct);
            let old = earlier.get(&(m.service.as_str(), m.method.as_str())).cloned().unwrap_or_default();
            MethodRow {
                name: format!("{}.{}", m.service, m.method),
                rate: per_second(counts.calls, old.calls),
                errors: per_second(errors(&counts), errors(&old)),
                p50_ms: percentile(&old.latency, &counts.latency, 0.5),
                p99_ms: percentile(&old.latency, &counts.latency, 0.99),
                total: counts.calls,
            }
        })
        .collect();
    let by = |a: f64, b: f64| b.total_cmp(&a);
    methods.sort_by(|a, b| match sort {
        SortBy::Rate => by(a.rate, b.rate).then_with(|| a.name.cmp(&b.name)),
        SortBy::Errors => by(a.errors, b.errors).then_with(|| a.name.cmp(&b.name)),
        SortBy::Latency => {
            by(a.p99_ms.unwrap_or(0.0), b.p99_ms.unwrap_or(0.0)).then_with(|| a.name.cmp(&b.name))
        }
        SortBy::Name => a.name.cmp(&b.name),
    });
    let earlier_patterns: HashMap<&str, (u64, u64)> =
        before.stats.patterns.iter().map(|(p, d, m)| (p.as_str(), (*d, *m))).collect();
    let patterns = now
        .stats
        .patterns
        .iter()
        .map(|(pattern, delivered, missed)| {
            let (d, m) = earlier_patterns.get(pattern.as_str()).copied().unwrap_or_default();
            PatternRow {
                pattern: pattern.clone(),
                delivered: per_second(*delivered, d),
                missed: per_second(*missed, m),
            }
        })
        .collect();
    let queues = now
        .queues
        .iter()
        .map(|q| QueueRow {
            queue: q.queue.clone(),
            depth: q.depth,
            in_flight: q.in_flight,
            put_rate: q.put_rate,
            ack_rate: q.ack_rate,
            dead_lettered: q.dead_lettered_total,
        })
        .collect();
    let services = now.services.iter().map(|s| (s.service.clone(), s.state.clone())).collect();
    View { methods, patterns, queues, services }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::stats::{DaemonStats, MethodStats};

    fn snapshot(calls: &[(&str, u64, u64)]) -> Snapshot {
        let methods = calls
            .iter()
            .map(|(name, fast, slow)| {
                let mut routed = MethodCounts::default();
                for _ in 0..*fast {
                    routed.record(None, 80);
                }
                for _ in 0..*slow {
                    routed.record(Some("timeout"), 2_000_000);
                }
                MethodStats {
                    service: (*name).into(),
                    method: "m".into(),
                    routed,
                    direct: MethodCounts::default(),
                }
            })
            .collect();
        Snapshot { stats: DaemonStats { methods, ..Default::default() }, ..Default::default() }
    }

    #[test]
    fn rates_and_percentiles_are_of_the_interval_and_rows_sort_by_the_chosen_column() {
        let before = snapshot(&[("a", 10, 0), ("b", 0, 0)]);
        let now = snapshot(&[("a", 30, 0), ("b", 1, 1)]);
        let view = view(&before, &now, Duration::from_secs(2), SortBy::Rate);
        let names: Vec<&str> = view.methods.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a.m", "b.m"]);
        assert_eq!((view.methods[0].rate, view.methods[0].total), (10.0, 30));
        assert_eq!(view.methods[0].p99_ms, Some(0.1), "80 µs falls in the ≤ 100 µs bucket");
        assert_eq!((view.methods[1].rate, view.methods[1].errors), (1.0, 0.5));
        assert_eq!(view.methods[1].p50_ms, Some(0.1));
        assert_eq!(view.methods[1].p99_ms, Some(2500.0));
        let by_errors = super::view(&before, &now, Duration::from_secs(2), SortBy::Errors);
        assert_eq!(by_errors.methods[0].name, "b.m");
        let idle = super::view(&now, &now, Duration::from_secs(1), SortBy::Rate);
        assert_eq!((idle.methods[0].rate, idle.methods[0].p50_ms), (0.0, None));
    }
}
