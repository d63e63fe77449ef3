//! Call statistics: what the daemon counts per service method (calls,
//! errors by kind, a latency histogram), what an instance reports of the
//! calls it served over direct channels (which the daemon never sees), and
//! the snapshot `$sys.daemon.stats` gives the metrics app.
//!
//! Pure: the shared bucket bounds, the histogram and the wire types; the
//! daemon and the clients do the counting.

use serde::{Deserialize, Serialize};

/// `$sys.daemon.stats`: no arguments; replies [`DaemonStats`]. Needs the
/// `metrics` permission.
pub const DAEMON_STATS: &str = "stats";
/// `$sys.daemon.report_calls`: [`CallReport`], the calls an instance served
/// over direct channels since its last report; replies nothing. Counted only
/// for services the reporting connection serves itself.
pub const DAEMON_REPORT_CALLS: &str = "report_calls";
/// `$sys.metrics`, served by the metrics app.
pub const METRICS_SERVICE: &str = "$sys.metrics";
/// `$sys.metrics.scrape`: no arguments; replies the Prometheus text
/// exposition (UTF-8). Needs the `metrics` permission.
pub const METRICS_SCRAPE: &str = "scrape";

/// How often an instance reports the calls it served over direct channels.
pub const DIRECT_REPORT_INTERVAL_MS: u64 = 2_000;

/// Upper bounds of the latency buckets, in microseconds (a last, unbounded
/// bucket follows): 50 µs to 10 s.
pub const LATENCY_BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram over [`LATENCY_BOUNDS_US`]: counts per bucket (not
/// cumulative), and the sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// One count per bound, then one for everything slower.
    pub buckets: Vec<u64>,
    pub sum_us: u64,
}

impl Latency {
    pub fn observe(&mut self, us: u64) {
        if self.buckets.len() != LATENCY_BOUNDS_US.len() + 1 {
            self.buckets.resize(LATENCY_BOUNDS_US.len() + 1, 0);
        }
        let at = LATENCY_BOUNDS_US.partition_point(|bound| *bound < us);
        self.buckets[at] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Adds another histogram of the same bounds (a report); a malformed
    /// one (another bucket count) adds nothing.
    pub fn add(&mut self, other: &Latency) {
        if other.buckets.len() != LATENCY_BOUNDS_US.len() + 1 {
            return;
        }
        if self.buckets.len() != other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine = mine.saturating_add(*theirs);
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// One method's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodCounts {
    pub calls: u64,
    /// Error kind (`timeout`, `rejected`…) → count, sorted by kind.
    pub errors: Vec<(String, u64)>,
    pub latency: Latency,
}

impl MethodCounts {
    /// One call that ended with `error` (a kind) or succeeded, after `us`.
    pub fn record(&mut self, error: Option<&str>, us: u64) {
        self.calls += 1;
        if let Some(kind) = error {
            self.count_error(kind, 1);
        }
        self.latency.observe(us);
    }

    /// Adds a report's counts.
    pub fn add(&mut self, other: &MethodCounts) {
        self.calls = self.calls.saturating_add(other.calls);
        for (kind, count) in other.errors.iter().take(MAX_ERROR_KINDS) {
            self.count_error(kind, *count);
        }
        self.latency.add(&other.latency);
    }

    fn count_error(&mut self, kind: &str, count: u64) {
        match self.errors.binary_search_by(|(known, _)| known.as_str().cmp(kind)) {
            Ok(at) => self.errors[at].1 = self.errors[at].1.saturating_add(count),
            Err(at) if self.errors.len() < MAX_ERROR_KINDS => {
                self.errors.insert(at, (kind.to_owned(), count))
            }
            Err(_) => {}
        }
    }
}

/// Error kinds kept per method (the protocol has about twenty).
pub const MAX_ERROR_KINDS: usize = 32;

/// The counts of one service method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodStats {
    pub service: String,
    pub method: String,
    /// Calls the daemon routed.
    pub routed: MethodCounts,
    /// Calls served over direct channels, as the instances reported them.
    pub direct: MethodCounts,
}

/// What an instance served over direct channels since its last report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallReport {
    pub service: String,
    pub methods: Vec<(String, MethodCounts)>,
}

/// Reply of `$sys.daemon.stats`: the router's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStats {
    pub methods: Vec<MethodStats>,
    /// Calls refused before any instance was chosen, by error kind
    /// (`no_such_service`, `permission_denied`, `overloaded`…).
    pub refused: Vec<(String, u64)>,
    /// Publications accepted.
    pub published: u64,
    /// Per subscription pattern: (pattern, delivered, missed), summed over
    /// its subscribers, including those gone.
    pub patterns: Vec<(String, u64, u64)>,
    /// Open connections by principal kind (`user`, `service`, `token`…).
    pub connections: Vec<(String, u64)>,
    /// Direct channels open now.
    pub direct_channels: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_their_bucket_and_reports_add_up() {
        let mut latency = Latency::default();
        for us in [10, 50, 51, 999_999, 20_000_000] {
            latency.observe(us);
        }
        assert_eq!(latency.buckets[0], 2, "≤ 50 µs");
        assert_eq!(latency.buckets[1], 1, "51 µs");
        assert_eq!(latency.buckets[13], 1, "just under 1 s");
        assert_eq!(latency.buckets[17], 1, "over 10 s");
        assert_eq!((latency.count(), latency.sum_us), (5, 21_000_110));

        let mut counts = MethodCounts::default();
        counts.record(Some("timeout"), 100);
        counts.record(None, 100);
        let mut total = MethodCounts::default();
        total.add(&counts);
        total.add(&counts);
        assert_eq!(total.calls, 4);
        assert_eq!(total.errors, vec![("timeout".to_owned(), 2)]);
        assert_eq!(total.latency.count(), 4);
        // A report with another bucket layout adds its calls, not its histogram.
        let odd =
            MethodCounts { calls: 1, latency: Latency { buckets: vec![1], sum_us: 5 }, ..Default::default() };
        total.add(&odd);
        assert_eq!((total.calls, total.latency.count()), (5, 4));
    }

    #[test]
    fn error_kinds_are_bounded() {
        let mut counts = MethodCounts::default();
        for n in 0..100 {
            counts.record(Some(&format!("kind{n:03}")), 1);
        }
        assert_eq!(counts.errors.len(), MAX_ERROR_KINDS);
        assert_eq!(counts.calls, 100);
    }
}
