//! The router's counters, for `$sys.daemon.stats` (which the metrics app
//! turns into the Prometheus exposition): per service method, the calls it
//! routed and those instances served over direct channels (as they report
//! them), with errors by kind and latencies; calls refused before an
//! instance was chosen; publications; the delivery counts of subscriptions
//! that ended. Counting only — no formatting, no I/O.
//!
//! Bounded: a client cannot grow it by calling names that do not exist
//! (refusals are counted by kind only, and a method is counted once an
//! instance serves it), and past [`MAX_METHODS`] methods or
//! [`MAX_PATTERNS`] ended patterns the rest are counted under `(other)`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use switchboard_proto::stats::{CallReport, MethodCounts, MethodStats};
use switchboard_proto::{ErrorCode, MethodName, ServiceName};

/// Service methods counted one by one.
pub const MAX_METHODS: usize = 10_000;
/// Ended subscriptions' patterns counted one by one.
pub const MAX_PATTERNS: usize = 1_000;
/// What the rest are counted under.
pub const OTHER: &str = "(other)";

#[derive(Debug, Default)]
struct Counted {
    routed: MethodCounts,
    direct: MethodCounts,
}

/// Where a method's counts are: resolved once when a call is routed, so
/// answering it costs no lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(u32);

#[derive(Debug)]
pub struct Stats {
    /// Service → method → its slot in `counted`.
    slots: HashMap<ServiceName, HashMap<MethodName, Slot>>,
    /// By slot: the names and counts; slot 0 is `(other)`.
    counted: Vec<(String, String, Counted)>,
    refused: BTreeMap<&'static str, u64>,
    published: u64,
    /// Pattern → (delivered, missed) of subscriptions that ended.
    ended: HashMap<String, (u64, u64)>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            slots: HashMap::new(),
            counted: vec![(OTHER.to_owned(), OTHER.to_owned(), Counted::default())],
            refused: BTreeMap::new(),
            published: 0,
            ended: HashMap::new(),
        }
    }
}

impl Stats {
    /// The slot of a method an instance serves (`(other)` past [`MAX_METHODS`]).
    pub fn slot(&mut self, service: &ServiceName, method: &MethodName) -> Slot {
        if let Some(slot) = self.slots.get(service).and_then(|methods| methods.get(method)) {
            return *slot;
        }
        if self.counted.len() > MAX_METHODS {
            return Slot(0);
        }
        let slot = Slot(u32::try_from(self.counted.len()).unwrap_or(0));
        self.counted.push((service.to_string(), method.to_string(), Counted::default()));
        self.slots.entry(service.clone()).or_default().insert(method.clone(), slot);
        slot
    }

    /// A routed call answered (by the instance or, on its behalf, the daemon).
    pub fn answered(&mut self, slot: Slot, error: Option<ErrorCode>, since: Instant) {
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        if let Some((_, _, counted)) = self.counted.get_mut(slot.0 as usize) {
            counted.routed.record(error.map(ErrorCode::name), us);
        }
    }

    /// A call refused before it reached any instance.
    pub fn refused(&mut self, code: ErrorCode) {
        *self.refused.entry(code.name()).or_default() += 1;
    }

    pub fn published(&mut self) {
        self.published += 1;
    }

    /// An instance's report of the calls it served over direct channels;
    /// `serves` says whether the reporting connection serves that method.
    pub fn reported(&mut self, report: &CallReport, serves: impl Fn(&MethodName) -> bool) {
        let Ok(service) = ServiceName::parse(&report.service) else { return };
        for (method, counts) in &report.methods {
            let Ok(method) = MethodName::parse(method) else { continue };
            if serves(&method) {
                let slot = self.slot(&service, &method);
                if let Some((_, _, counted)) = self.counted.get_mut(slot.0 as usize) {
                    counted.direct.add(counts);
                }
            }
        }
    }

    /// A subscription ended: its counts stay in its pattern's totals.
    pub fn subscription_ended(&mut self, pattern: &str, delivered: u64, missed: u64) {
        let key = if self.ended.len() < MAX_PATTERNS || self.ended.contains_key(pattern) {
            pattern.to_owned()
        } else {
            OTHER.to_owned()
        };
        let totals = self.ended.entry(key).or_default();
        totals.0 = totals.0.saturating_add(delivered);
        totals.1 = totals.1.saturating_add(missed);
    }

    /// Every method's counts (that counted a call), sorted by service and method.
    pub fn methods(&self) -> Vec<MethodStats> {
        let mut all: Vec<MethodStats> = self
            .counted
            .iter()
            .filter(|(_, _, counted)| counted.routed.calls + counted.direct.calls > 0)
            .map(|(service, method, counted)| MethodStats {
                service: service.clone(),
                method: method.clone(),
                routed: counted.routed.clone(),
                direct: counted.direct.clone(),
            })
            .collect();
        all.sort_by(|a, b| (&a.service, &a.method).cmp(&(&b.service, &b.method)));
        all
    }

    pub fn refusals(&self) -> Vec<(String, u64)> {
        self.refused.iter().map(|(kind, n)| ((*kind).to_owned(), *n)).collect()
    }

    pub fn publications(&self) -> u64 {
        self.published
    }

    /// Pattern → (delivered, missed) of the subscriptions that ended.
    pub fn ended(&self) -> &HashMap<String, (u64, u64)> {
        &self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(service: &str, method: &str) -> (ServiceName, MethodName) {
        (ServiceName::parse(service).unwrap(), MethodName::parse(method).unwrap())
    }

    #[test]
    fn answers_and_reports_are_counted_per_method_and_reports_only_for_what_the_reporter_serves() {
        let mut stats = Stats::default();
        let (billing, charge) = names("billing", "charge");
        let slot = stats.slot(&billing, &charge);
        assert_eq!(stats.slot(&billing, &charge), slot, "one slot per method");
        stats.answered(slot, None, Instant::now());
        stats.answered(slot, Some(ErrorCode::Timeout), Instant::now());
        let report = CallReport {
            service: "billing".into(),
            methods: vec![
                ("charge".into(), MethodCounts { calls: 5, ..Default::default() }),
                ("refund".into(), MethodCounts { calls: 7, ..Default::default() }),
            ],
        };
        stats.reported(&report, |method| method.as_str() == "charge");
        let all = stats.methods();
        assert_eq!(all.len(), 1, "refund is not served by the reporter: {all:?}");
        assert_eq!((all[0].routed.calls, all[0].direct.calls), (2, 5));
        assert_eq!(all[0].routed.errors, vec![("timeout".to_owned(), 1)]);
    }

    #[test]
    fn past_the_bounds_the_rest_is_counted_under_other() {
        let mut stats = Stats::default();
        for n in 0..MAX_METHODS + 5 {
            let (service, method) = names(&format!("s{n}"), "m");
            let slot = stats.slot(&service, &method);
            stats.answered(slot, None, Instant::now());
        }
        let all = stats.methods();
        assert_eq!(all.len(), MAX_METHODS + 1);
        assert!(all.iter().any(|m| m.service == OTHER && m.routed.calls == 5));
        for n in 0..MAX_PATTERNS + 3 {
            stats.subscription_ended(&format!("p{n}.>"), 1, 0);
        }
        assert_eq!(stats.ended().len(), MAX_PATTERNS + 1);
        assert_eq!(stats.ended()[OTHER], (3, 0));
    }
}
