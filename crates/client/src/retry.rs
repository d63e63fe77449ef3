//! Retries that do not make an outage worse.
//!
//! A call made with a [`RetryPolicy`] is tried again after a failure that
//! allows it: by default only failures where the call provably never reached
//! a handler (refused at admission as `overloaded`, `service_paused`, no
//! instance registered yet); an [`RetryPolicy::idempotent`] call also after
//! a timeout, a lost connection or an instance that went away mid-call.
//! Never after `rejected` or any other answer of the service itself.
//!
//! Waits grow exponentially with full jitter (a random wait between zero and
//! the capped exponential), all within the call's one deadline. A budget per
//! target service keeps retries to about a tenth of the calls made with a
//! policy (plus a small burst), so a failing service is not hammered by its
//! callers' retries. The decisions here are pure; `Bus::call_attempts` does
//! the sending.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use switchboard_proto::ServiceName;

use crate::CallError;

/// How a call is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The cap of the first wait; each further wait's cap doubles.
    pub initial: Duration,
    /// The largest cap.
    pub max_delay: Duration,
    /// The call may run more than once: retry after a timeout, a lost
    /// connection or an instance gone mid-call too.
    pub idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial: Duration::from_millis(25),
            max_delay: Duration::from_secs(1),
            idempotent: false,
        }
    }
}

impl RetryPolicy {
    /// Also retry where the call may already have run once.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// At most `attempts` attempts in all.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Whether `error` (of attempt number `attempt`, from 1) allows another.
    pub fn allows(&self, error: &CallError, attempt: u32) -> bool {
        attempt < self.max_attempts && (never_ran(error) || (self.idempotent && may_have_run(error)))
    }

    /// The wait before attempt `attempt + 1`: uniform in zero to
    /// min(max_delay, initial × 2^(attempt − 1)); `sample` is in [0, 1).
    pub fn backoff(&self, attempt: u32, sample: f64) -> Duration {
        let doubled = self.initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        doubled.min(self.max_delay).mul_f64(sample.clamp(0.0, 1.0))
    }
}

/// Failures where the call provably never reached a handler.
fn never_ran(error: &CallError) -> bool {
    matches!(
        error,
        CallError::Overloaded(_)
            | CallError::ServicePaused(_)
            | CallError::NoSuchService(_)
            | CallError::NoSuchInstance(_)
    )
}

/// Failures after which the call may or may not have run.
fn may_have_run(error: &CallError) -> bool {
    matches!(
        error,
        CallError::Timeout(_)
            | CallError::ConnectionLost
            | CallError::InstanceGone(_)
            | CallError::ShuttingDown
    )
}

/// Retry budgets, one per target service, in tenths of a retry: each call
/// made with a policy deposits one tenth, each retry spends ten; a budget
/// holds at most [`BURST`] retries (and starts full, so a first outage can
/// be ridden out).
#[derive(Default)]
pub(crate) struct Budgets {
    tenths: Mutex<HashMap<ServiceName, u32>>,
}

/// Retries a budget can hold.
pub(crate) const BURST: u32 = 10;

impl Budgets {
    /// A call to `service` is made (with a policy): a tenth of a retry more.
    pub fn deposit(&self, service: &ServiceName) {
        let mut tenths = crate::connection::lock(&self.tenths);
        let budget = tenths.entry(service.clone()).or_insert(BURST * 10);
        *budget = (*budget + 1).min(BURST * 10);
    }

    /// Takes one retry from `service`'s budget, if there is one.
    pub fn withdraw(&self, service: &ServiceName) -> bool {
        let mut tenths = crate::connection::lock(&self.tenths);
        let budget = tenths.entry(service.clone()).or_insert(BURST * 10);
        match budget.checked_sub(10) {
            Some(left) => {
                *budget = left;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_that_never_ran_are_retried_unless_idempotent() {
        let policy = RetryPolicy::default();
        let paused = CallError::ServicePaused("cache".into());
        let timeout = CallError::Timeout(Duration::from_secs(1));
        let rejected = CallError::Rejected("no".into());
        assert!(policy.allows(&paused, 1));
        assert!(policy.allows(&CallError::NoSuchService("cache".into()), 1));
        assert!(!policy.allows(&timeout, 1));
        assert!(!policy.allows(&CallError::InstanceGone("x".into()), 1));
        assert!(!policy.allows(&rejected, 1));
        let idempotent = RetryPolicy::default().idempotent();
        assert!(idempotent.allows(&timeout, 1) && idempotent.allows(&CallError::InstanceGone("x".into()), 1));
        assert!(!idempotent.allows(&rejected, 1), "never after the service's own answer");
        assert!(!idempotent.allows(&CallError::BadArguments("x".into()), 1));
        assert!(!idempotent.allows(&paused, 4), "four attempts in all");
    }

    #[test]
    fn waits_grow_to_the_cap_with_full_jitter() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        };
        assert_eq!(policy.backoff(1, 0.999_999).as_millis(), 9);
        assert_eq!(policy.backoff(2, 0.5), Duration::from_millis(10));
        assert_eq!(policy.backoff(3, 0.5), Duration::from_millis(20));
        assert_eq!(policy.backoff(9, 0.5), Duration::from_millis(25), "capped at max_delay");
        assert_eq!(policy.backoff(9, 0.0), Duration::ZERO);
        assert_eq!(policy.backoff(40, 1.0), Duration::from_millis(50), "no overflow");
    }

    #[test]
    fn a_budget_allows_a_burst_then_a_tenth_of_the_calls() {
        let budgets = Budgets::default();
        let service = ServiceName::parse("billing").unwrap();
        let burst = (0..100).take_while(|_| budgets.withdraw(&service)).count();
        assert_eq!(burst, 10);
        for _ in 0..100 {
            budgets.deposit(&service);
        }
        let more = (0..100).take_while(|_| budgets.withdraw(&service)).count();
        assert_eq!(more, 10, "100 calls earn 10 retries");
        assert!(!budgets.withdraw(&service));
        assert!(budgets.withdraw(&ServiceName::parse("other").unwrap()), "budgets are per service");
    }
}
