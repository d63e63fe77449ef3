//! Restart policy: whether an ended instance starts again, after how long,
//! and when the budget is spent so it is marked Failed.
//!
//! Pure: time comes in as arguments and jitter as a sample, so every case
//! is unit-tested without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When an ended instance is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartMode {
    Never,
    /// After a non-zero exit, a signal, a failed health check, a missed
    /// watchdog or a start timeout — not after a clean exit.
    #[default]
    OnFailure,
    Always,
}

/// The whole restart configuration of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    pub mode: RestartMode,
    /// Delay before the first restart.
    pub initial: Duration,
    /// The delay never grows beyond this.
    pub max: Duration,
    /// Each consecutive restart multiplies the delay by this.
    pub multiplier: f64,
    /// Spread, as a fraction of the delay (0.1 = ±10%).
    pub jitter: f64,
    /// At most this many restarts within `window`, then Failed.
    pub budget: u32,
    pub window: Duration,
    /// Running this long counts as stable: the delay and budget start over.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            mode: RestartMode::OnFailure,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.1,
            budget: 5,
            window: Duration::from_secs(60),
            reset_after: Duration::from_secs(30),
        }
    }
}

/// What to do with an instance whose process ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Start it again after this delay.
    Restart(Duration),
    /// Leave it stopped (the policy does not restart this kind of exit).
    StayStopped,
    /// The budget is spent: mark it Failed.
    GiveUp,
}

/// Restart history of one instance.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    /// When recent restarts were decided, oldest first, within the window.
    recent: VecDeque<Instant>,
    /// Restarts since the instance last ran stably; drives the delay.
    consecutive: u32,
}

impl RestartTracker {
    /// Decides after an exit. `ran_for` is how long the process lived,
    /// `jitter_sample` a number in [-1, 1].
    pub fn on_exit(
        &mut self,
        policy: &RestartPolicy,
        now: Instant,
        failed: bool,
        ran_for: Duration,
        jitter_sample: f64,
    ) -> Decision {
        if ran_for >= policy.reset_after {
            self.reset();
        }
        let wanted = match policy.mode {
            RestartMode::Never => false,
            RestartMode::OnFailure => failed,
            RestartMode::Always => true,
        };
        if !wanted {
            return Decision::StayStopped;
        }
        while self.recent.front().is_some_and(|t| now.duration_since(*t) > policy.window) {
            self.recent.pop_front();
        }
        if self.recent.len() >= policy.budget as usize {
            return Decision::GiveUp;
        }
        self.recent.push_back(now);
        let grown = policy.initial.as_secs_f64() * policy.multiplier.max(1.0).powi(self.consecutive as i32);
        let capped = grown.min(policy.max.as_secs_f64());
        let spread = 1.0 + policy.jitter.clamp(0.0, 1.0) * jitter_sample.clamp(-1.0, 1.0);
        self.consecutive = self.consecutive.saturating_add(1);
        Decision::Restart(Duration::from_secs_f64((capped * spread).max(0.0)))
    }

    /// Restarts counted in the current window.
    pub fn restarts(&self) -> u32 {
        u32::try_from(self.recent.len()).unwrap_or(u32::MAX)
    }

    /// The history as ages in milliseconds (for a successor daemon), and the
    /// run of consecutive restarts.
    pub fn ages(&self, now: Instant) -> (Vec<u64>, u32) {
        let age =
            |at: &Instant| u64::try_from(now.saturating_duration_since(*at).as_millis()).unwrap_or(u64::MAX);
        (self.recent.iter().map(age).collect(), self.consecutive)
    }

    /// The history [`RestartTracker::ages`] described, as of `now`.
    pub fn from_ages(ages: &[u64], consecutive: u32, now: Instant) -> Self {
        let recent = ages.iter().filter_map(|ms| now.checked_sub(Duration::from_millis(*ms))).collect();
        Self { recent, consecutive }
    }

    /// Forgets the history (an operator's explicit start of a Failed instance).
    pub fn reset(&mut self) {
        self.recent.clear();
        self.consecutive = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy { jitter: 0.0, budget: 4, ..RestartPolicy::default() }
    }

    #[test]
    fn delays_grow_by_the_multiplier_then_the_budget_gives_up() {
        let (mut t, p, start) = (RestartTracker::default(), policy(), Instant::now());
        let short = Duration::from_millis(10);
        let delays: Vec<_> =
            (0..4).map(|i| t.on_exit(&p, start + Duration::from_millis(i * 10), true, short, 0.0)).collect();
        let ms = |d: u64| Decision::Restart(Duration::from_millis(d));
        assert_eq!(delays, vec![ms(100), ms(200), ms(400), ms(800)]);
        assert_eq!(t.on_exit(&p, start + Duration::from_millis(50), true, short, 0.0), Decision::GiveUp);
        assert_eq!(t.restarts(), 4);
    }

    #[test]
    fn the_delay_is_capped_and_jitter_stays_within_its_fraction() {
        let p = RestartPolicy { max: Duration::from_millis(300), jitter: 0.5, budget: 100, ..policy() };
        let (mut t, now, short) = (RestartTracker::default(), Instant::now(), Duration::ZERO);
        for _ in 0..5 {
            t.on_exit(&p, now, true, short, 0.0);
        }
        let Decision::Restart(high) = t.on_exit(&p, now, true, short, 1.0) else { panic!() };
        let Decision::Restart(low) = t.on_exit(&p, now, true, short, -1.0) else { panic!() };
        assert_eq!(high, Duration::from_millis(450));
        assert_eq!(low, Duration::from_millis(150));
    }

    #[test]
    fn restarts_outside_the_window_no_longer_count() {
        let (mut t, p, start) = (RestartTracker::default(), policy(), Instant::now());
        for _ in 0..4 {
            t.on_exit(&p, start, true, Duration::ZERO, 0.0);
        }
        let later = start + p.window + Duration::from_secs(1);
        assert!(matches!(t.on_exit(&p, later, true, Duration::ZERO, 0.0), Decision::Restart(_)));
    }

    #[test]
    fn a_stable_run_resets_the_delay_and_budget() {
        let (mut t, p, now) = (RestartTracker::default(), policy(), Instant::now());
        for _ in 0..3 {
            t.on_exit(&p, now, true, Duration::ZERO, 0.0);
        }
        let decision = t.on_exit(&p, now, true, p.reset_after, 0.0);
        assert_eq!(decision, Decision::Restart(p.initial));
        assert_eq!(t.restarts(), 1);
    }

    #[test]
    fn the_mode_decides_which_exits_restart() {
        let now = Instant::now();
        let run = |mode, failed| {
            let p = RestartPolicy { mode, ..policy() };
            RestartTracker::default().on_exit(&p, now, failed, Duration::ZERO, 0.0)
        };
        assert_eq!(run(RestartMode::Never, true), Decision::StayStopped);
        assert_eq!(run(RestartMode::OnFailure, false), Decision::StayStopped);
        assert!(matches!(run(RestartMode::OnFailure, true), Decision::Restart(_)));
        assert!(matches!(run(RestartMode::Always, false), Decision::Restart(_)));
    }

    #[test]
    fn a_history_described_as_ages_is_the_same_history_for_a_successor() {
        let (p, start) = (policy(), Instant::now());
        let mut t = RestartTracker::default();
        for i in 0..3 {
            t.on_exit(&p, start + Duration::from_secs(i), true, Duration::ZERO, 0.0);
        }
        let later = start + Duration::from_secs(5);
        let (ages, consecutive) = t.ages(later);
        assert_eq!((ages.clone(), consecutive), (vec![5000, 4000, 3000], 3));
        let mut carried = RestartTracker::from_ages(&ages, consecutive, later);
        assert_eq!(carried.restarts(), 3);
        // The budget (4) and the backoff carry on where they were.
        let next = carried.on_exit(&p, later, true, Duration::ZERO, 0.0);
        assert_eq!(next, t.clone().on_exit(&p, later, true, Duration::ZERO, 0.0));
        assert_eq!(carried.on_exit(&p, later, true, Duration::ZERO, 0.0), Decision::GiveUp);
    }
}
