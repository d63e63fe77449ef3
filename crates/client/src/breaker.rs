//! Circuit breakers: while a service keeps failing, calls to it fail at
//! once with `CircuitOpen` instead of adding to its trouble and waiting for
//! their own timeouts.
//!
//! One breaker per target service, in the caller's process, when the bus has
//! a [`BreakerPolicy`] (`Bus::set_breakers`; off by default). Closed, it
//! counts outcomes over a sliding window; once enough calls were made and
//! the share of failures reaches the policy's rate, it opens for the
//! cool-down; then one probe call goes through (half-open): its success
//! closes the breaker, its failure opens it again. Failures are what says a
//! service is unwell — a timeout, `overloaded`, an instance gone mid-call,
//! `service_failed` — never the service's own answer (`rejected`) or the
//! caller's lost connection. The state machine is pure: no clock, no I/O.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::CallError;

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// Outcomes older than this are forgotten.
    pub window: Duration,
    /// Calls in the window before the rate is judged.
    pub min_calls: u32,
    /// Share of failures (0–1) that opens the breaker.
    pub failure_rate: f64,
    /// How long it stays open before a probe.
    pub cool_down: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            min_calls: 20,
            failure_rate: 0.5,
            cool_down: Duration::from_secs(5),
        }
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Calls fail at once until the instant.
    Open {
        until: Instant,
    },
    /// One probe call is out; others fail at once until it is back.
    HalfOpen,
}

impl BreakerState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

/// Whether a call may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// The half-open breaker's one probe: its outcome decides.
    Probe,
    /// Fail at once; the breaker is open for this long yet (zero: a probe is out).
    Refuse(Duration),
}

/// One service's breaker.
#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: BreakerState,
    /// (when, failed) of recent calls while closed.
    outcomes: VecDeque<(Instant, bool)>,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self { policy, state: BreakerState::Closed, outcomes: VecDeque::new() }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may be made now.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            BreakerState::Closed => Admission::Go,
            BreakerState::Open { until } if now < until => Admission::Refuse(until - now),
            BreakerState::Open { .. } => {
                self.state = BreakerState::HalfOpen;
                Admission::Probe
            }
            BreakerState::HalfOpen => Admission::Refuse(Duration::ZERO),
        }
    }

    /// A call admitted as `admission` ended with `failed`; whether the
    /// breaker opened or closed because of it.
    pub fn record(&mut self, now: Instant, admission: Admission, failed: bool) -> bool {
        let was_closed = self.state == BreakerState::Closed;
        self.note(now, admission, failed);
        was_closed != (self.state == BreakerState::Closed)
    }

    fn note(&mut self, now: Instant, admission: Admission, failed: bool) {
        match (self.state, admission) {
            (BreakerState::HalfOpen, Admission::Probe) if failed => self.open(now),
            (BreakerState::HalfOpen, Admission::Probe) => {
                self.state = BreakerState::Closed;
                self.outcomes.clear();
            }
            (BreakerState::Closed, Admission::Go) => {
                self.outcomes.push_back((now, failed));
                while self
                    .outcomes
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) > self.policy.window)
                {
                    self.outcomes.pop_front();
                }
                let calls = self.outcomes.len();
                let failures = self.outcomes.iter().filter(|(_, failed)| *failed).count();
                if calls >= self.policy.min_calls as usize
                    && failures as f64 >= self.policy.failure_rate * calls as f64
                {
                    self.open(now);
                }
            }
            // A call admitted before the breaker changed state says nothing now.
            _ => {}
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open { until: now + self.policy.cool_down };
        self.outcomes.clear();
    }
}

/// Whether `result` counts against the service.
pub fn is_failure(result: &Result<bytes::Bytes, CallError>) -> bool {
    matches!(
        result,
        Err(CallError::Timeout(_)
            | CallError::Overloaded(_)
            | CallError::InstanceGone(_)
            | CallError::ServiceFailed(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            window: Duration::from_secs(10),
            min_calls: 4,
            failure_rate: 0.5,
            cool_down: Duration::from_secs(5),
        }
    }

    #[test]
    fn it_opens_on_the_failure_rate_probes_after_the_cool_down_and_closes_on_success() {
        let (mut breaker, t0) = (Breaker::new(policy()), Instant::now());
        for failed in [false, true, false] {
            assert_eq!(breaker.admit(t0), Admission::Go);
            breaker.record(t0, Admission::Go, failed);
        }
        assert_eq!(breaker.state(), BreakerState::Closed, "3 calls are fewer than min_calls");
        breaker.record(t0, Admission::Go, true);
        assert_eq!(breaker.state().name(), "open", "2 of 4 failed: the rate is reached");
        let later = t0 + Duration::from_secs(2);
        assert_eq!(breaker.admit(later), Admission::Refuse(Duration::from_secs(3)));
        let after = t0 + Duration::from_secs(5);
        assert_eq!(breaker.admit(after), Admission::Probe);
        assert_eq!(breaker.admit(after), Admission::Refuse(Duration::ZERO), "one probe at a time");
        breaker.record(after, Admission::Probe, false);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.admit(after), Admission::Go);
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_old_outcomes_are_forgotten() {
        let (mut breaker, t0) = (Breaker::new(policy()), Instant::now());
        for _ in 0..4 {
            breaker.record(t0, Admission::Go, true);
        }
        let probe_at = t0 + Duration::from_secs(5);
        assert_eq!(breaker.admit(probe_at), Admission::Probe);
        breaker.record(probe_at, Admission::Probe, true);
        assert_eq!(breaker.state(), BreakerState::Open { until: probe_at + Duration::from_secs(5) });

        let (mut breaker, t0) = (Breaker::new(policy()), Instant::now());
        for _ in 0..3 {
            breaker.record(t0, Admission::Go, true);
        }
        // Eleven seconds later those three are outside the window.
        let late = t0 + Duration::from_secs(11);
        breaker.record(late, Admission::Go, true);
        assert_eq!(breaker.state(), BreakerState::Closed);
        // Calls admitted while it was closed do not close or reopen it.
        breaker.record(late, Admission::Probe, false);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_service_of_its_own_setting_keeps_it_whatever_the_default_says() {
        use switchboard_proto::ServiceName;
        let name = |n: &str| ServiceName::parse(n).unwrap();
        let breakers = Breakers::default();
        breakers.set_policy_for(name("flaky"), Some(policy()));
        assert!(breakers.admit(&name("flaky")).unwrap().is_some(), "its own policy, with the default off");
        assert!(breakers.admit(&name("other")).unwrap().is_none(), "the default: off");
        breakers.set_policy(Some(policy()));
        breakers.set_policy_for(name("slow"), None);
        assert!(breakers.admit(&name("other")).unwrap().is_some(), "the default: on");
        assert!(breakers.admit(&name("slow")).unwrap().is_none(), "no breaker for it, whatever the default");
        // Its breaker opens on its own policy, and a new default leaves it be.
        for _ in 0..4 {
            let admission = breakers.admit(&name("flaky")).unwrap().unwrap();
            breakers.record(&name("flaky"), admission, &Err(CallError::Timeout(Duration::from_secs(1))));
        }
        breakers.set_policy(None);
        assert!(matches!(breakers.admit(&name("flaky")), Err(CallError::CircuitOpen(_))));
        assert!(breakers.admit(&name("other")).unwrap().is_none());
    }

    #[test]
    fn a_probe_whose_caller_gave_up_opens_the_breaker_again_instead_of_wedging_it() {
        use switchboard_proto::ServiceName;
        let flaky = ServiceName::parse("flaky").unwrap();
        let breakers = Breakers::default();
        breakers.set_policy(Some(BreakerPolicy { cool_down: Duration::ZERO, ..policy() }));
        for _ in 0..4 {
            let admission = breakers.admit(&flaky).unwrap().unwrap();
            breakers.record(&flaky, admission, &Err(CallError::Timeout(Duration::from_secs(1))));
        }
        let probe = breakers.admit(&flaky).unwrap().unwrap();
        assert_eq!(probe, Admission::Probe);
        drop(breakers.in_flight(flaky.clone(), probe)); // the caller's future was dropped
        assert_eq!(breakers.not_closed()[0].1.name(), "open", "not half-open with no probe out");
        let next = breakers.admit(&flaky).unwrap().unwrap();
        assert_eq!(next, Admission::Probe, "after the cool-down, a new probe");
        assert!(breakers.in_flight(flaky.clone(), next).finish(&Ok(bytes::Bytes::new())), "closed by it");
        assert_eq!(breakers.admit(&flaky).unwrap(), Some(Admission::Go));
    }

    #[test]
    fn only_signs_of_an_unwell_service_count() {
        assert!(is_failure(&Err(CallError::Timeout(Duration::from_secs(1)))));
        assert!(is_failure(&Err(CallError::Overloaded("busy".into()))));
        assert!(!is_failure(&Err(CallError::Rejected("no".into()))));
        assert!(!is_failure(&Err(CallError::ConnectionLost)));
        assert!(!is_failure(&Ok(bytes::Bytes::new())));
    }
}

/// A call let through a breaker, not ended yet. Dropped unfinished (its
/// caller gave up on it), a probe counts as failed: the breaker opens for
/// another cool-down instead of staying half-open with no probe out, which
/// would refuse every call from then on.
pub(crate) struct InFlight<'a> {
    breakers: &'a Breakers,
    service: switchboard_proto::ServiceName,
    admission: Admission,
    finished: bool,
}

impl InFlight<'_> {
    /// Records the outcome; whether the breaker opened or closed.
    pub fn finish(mut self, result: &Result<bytes::Bytes, CallError>) -> bool {
        self.finished = true;
        self.breakers.record(&self.service, self.admission, result)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.finished && self.admission == Admission::Probe {
            self.breakers.record_failed(&self.service, self.admission, true);
        }
    }
}

/// Every breaker of a bus (shared by its clones), when breakers are on.
#[derive(Default)]
pub(crate) struct Breakers {
    /// Whether any policy is set: the call path reads only this when off.
    enabled: std::sync::atomic::AtomicBool,
    inner: std::sync::Mutex<BreakersInner>,
}

#[derive(Default)]
struct BreakersInner {
    /// For every service without a setting of its own.
    policy: Option<BreakerPolicy>,
    /// Services with their own setting (`None`: no breaker, whatever the default).
    own: std::collections::HashMap<switchboard_proto::ServiceName, Option<BreakerPolicy>>,
    by_service: std::collections::HashMap<switchboard_proto::ServiceName, Breaker>,
}

impl BreakersInner {
    fn policy_for(&self, service: &switchboard_proto::ServiceName) -> Option<BreakerPolicy> {
        self.own.get(service).unwrap_or(&self.policy).clone()
    }

    fn any_on(&self) -> bool {
        self.policy.is_some() || self.own.values().any(Option::is_some)
    }
}

impl Breakers {
    /// The policy of every service without its own; starts them closed.
    pub fn set_policy(&self, policy: Option<BreakerPolicy>) {
        let mut inner = crate::connection::lock(&self.inner);
        inner.policy = policy;
        let own = std::mem::take(&mut inner.own);
        inner.by_service.retain(|service, _| own.contains_key(service));
        inner.own = own;
        self.enabled.store(inner.any_on(), std::sync::atomic::Ordering::Relaxed);
    }

    /// `service`'s own setting; starts its breaker closed.
    pub fn set_policy_for(&self, service: switchboard_proto::ServiceName, policy: Option<BreakerPolicy>) {
        let mut inner = crate::connection::lock(&self.inner);
        inner.by_service.remove(&service);
        inner.own.insert(service, policy);
        self.enabled.store(inner.any_on(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a call to `service` may go (`None`: breakers are off, or it
    /// is one of the daemon's own services).
    pub fn admit(&self, service: &switchboard_proto::ServiceName) -> Result<Option<Admission>, CallError> {
        if !self.enabled.load(std::sync::atomic::Ordering::Relaxed) || service.is_reserved() {
            return Ok(None);
        }
        let mut inner = crate::connection::lock(&self.inner);
        let breaker = match inner.by_service.get_mut(service) {
            Some(breaker) => breaker,
            None => {
                let Some(policy) = inner.policy_for(service) else { return Ok(None) };
                inner.by_service.entry(service.clone()).or_insert(Breaker::new(policy))
            }
        };
        match breaker.admit(Instant::now()) {
            Admission::Refuse(left) => Err(CallError::CircuitOpen(format!(
                "{service} keeps failing; calls to it fail at once for {} ms more",
                left.as_millis()
            ))),
            admission => Ok(Some(admission)),
        }
    }

    /// Records a call's outcome; whether a breaker opened or closed.
    pub fn record(
        &self,
        service: &switchboard_proto::ServiceName,
        admission: Admission,
        result: &Result<bytes::Bytes, CallError>,
    ) -> bool {
        self.record_failed(service, admission, is_failure(result))
    }

    fn record_failed(
        &self,
        service: &switchboard_proto::ServiceName,
        admission: Admission,
        failed: bool,
    ) -> bool {
        let mut inner = crate::connection::lock(&self.inner);
        inner
            .by_service
            .get_mut(service)
            .is_some_and(|breaker| breaker.record(Instant::now(), admission, failed))
    }

    /// A call let through as `admission`, to be finished with its outcome.
    pub fn in_flight(&self, service: switchboard_proto::ServiceName, admission: Admission) -> InFlight<'_> {
        InFlight { breakers: self, service, admission, finished: false }
    }

    /// What the daemon is told (`$sys.daemon.report_breakers`).
    pub fn report(&self) -> switchboard_proto::sys::BreakerReport {
        let breakers = self
            .not_closed()
            .into_iter()
            .map(|(service, state)| switchboard_proto::sys::BreakerInfo {
                service,
                state: state.name().to_owned(),
            })
            .collect();
        switchboard_proto::sys::BreakerReport { breakers }
    }

    /// Each service's breaker that is not closed.
    pub fn not_closed(&self) -> Vec<(String, BreakerState)> {
        let inner = crate::connection::lock(&self.inner);
        let mut found: Vec<(String, BreakerState)> = inner
            .by_service
            .iter()
            .filter(|(_, b)| b.state() != BreakerState::Closed)
            .map(|(name, b)| (name.to_string(), b.state()))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }
}
