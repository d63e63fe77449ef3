//! The lifecycle of one supervised instance, as the Service Control Manager
//! defines it, plus Failed for when the restart policy gives up.
//!
//! Pure: no processes, no clocks. The supervisor feeds it [`Event`]s and acts
//! on the new state; an event the current state does not allow is refused
//! with [`InvalidTransition`], which the CLI shows as such.

use std::fmt;

/// Where an instance is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Stopped,
    StartPending,
    Running,
    PausePending,
    Paused,
    ContinuePending,
    StopPending,
    /// The restart policy gave up (or a start could not even be attempted).
    Failed,
}

/// What happened to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// Asked to start (by the operator, auto-start, a dependency, or a restart).
    Start,
    /// It said it is ready (or, for `ready = "started"`, it was spawned).
    Ready,
    /// Asked to pause.
    Pause,
    /// It finished pausing.
    Paused,
    /// Asked to continue.
    Continue,
    /// It finished continuing.
    Continued,
    /// A pause or continue it was asked for failed; it stays as it was.
    ControlFailed,
    /// Asked to stop (or said `STOPPING=1`).
    Stop,
    /// Its process ended.
    Exited,
    /// The restart policy will not start it again.
    GiveUp,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Stopped,
        State::StartPending,
        State::Running,
        State::PausePending,
        State::Paused,
        State::ContinuePending,
        State::StopPending,
        State::Failed,
    ];

    /// The state after `event`, or why `event` is not allowed now.
    pub fn next(self, event: Event) -> Result<State, InvalidTransition> {
        use Event as E;
        use State as S;
        let next = match (self, event) {
            (S::Stopped | S::Failed, E::Start) => S::StartPending,
            (S::Stopped, E::GiveUp) => S::Failed,
            (S::StartPending, E::Ready) => S::Running,
            (S::Running, E::Pause) => S::PausePending,
            (S::PausePending, E::Paused) => S::Paused,
            (S::PausePending, E::ControlFailed) => S::Running,
            (S::Paused, E::Continue) => S::ContinuePending,
            (S::ContinuePending, E::Continued) => S::Running,
            (S::ContinuePending, E::ControlFailed) => S::Paused,
            (S::StartPending | S::Running | S::PausePending | S::Paused | S::ContinuePending, E::Stop) => {
                S::StopPending
            }
            (s, E::Exited) if s.has_process() => S::Stopped,
            (state, event) => return Err(InvalidTransition { state, event }),
        };
        Ok(next)
    }

    /// Whether an instance in this state has a live process.
    pub fn has_process(self) -> bool {
        !matches!(self, State::Stopped | State::Failed)
    }

    /// Whether the instance is between two settled states.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            State::StartPending | State::PausePending | State::ContinuePending | State::StopPending
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Stopped => "Stopped",
            State::StartPending => "StartPending",
            State::Running => "Running",
            State::PausePending => "PausePending",
            State::Paused => "Paused",
            State::ContinuePending => "ContinuePending",
            State::StopPending => "StopPending",
            State::Failed => "Failed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An event the state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} while {state}", event.verb())]
pub struct InvalidTransition {
    pub state: State,
    pub event: Event,
}

impl Event {
    pub const ALL: [Event; 10] = [
        Event::Start,
        Event::Ready,
        Event::Pause,
        Event::Paused,
        Event::Continue,
        Event::Continued,
        Event::ControlFailed,
        Event::Stop,
        Event::Exited,
        Event::GiveUp,
    ];

    fn verb(self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Ready => "become ready",
            Event::Pause => "pause",
            Event::Paused => "finish pausing",
            Event::Continue => "continue",
            Event::Continued => "finish continuing",
            Event::ControlFailed => "fail a control",
            Event::Stop => "stop",
            Event::Exited => "exit",
            Event::GiveUp => "give up restarting",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Event as E;
    use super::State as S;
    use super::*;

    /// Every allowed transition, written out once; everything else must be refused.
    const ALLOWED: &[(State, Event, State)] = &[
        (S::Stopped, E::Start, S::StartPending),
        (S::Stopped, E::GiveUp, S::Failed),
        (S::Failed, E::Start, S::StartPending),
        (S::StartPending, E::Ready, S::Running),
        (S::StartPending, E::Stop, S::StopPending),
        (S::StartPending, E::Exited, S::Stopped),
        (S::Running, E::Pause, S::PausePending),
        (S::Running, E::Stop, S::StopPending),
        (S::Running, E::Exited, S::Stopped),
        (S::PausePending, E::Paused, S::Paused),
        (S::PausePending, E::ControlFailed, S::Running),
        (S::PausePending, E::Stop, S::StopPending),
        (S::PausePending, E::Exited, S::Stopped),
        (S::Paused, E::Continue, S::ContinuePending),
        (S::Paused, E::Stop, S::StopPending),
        (S::Paused, E::Exited, S::Stopped),
        (S::ContinuePending, E::Continued, S::Running),
        (S::ContinuePending, E::ControlFailed, S::Paused),
        (S::ContinuePending, E::Stop, S::StopPending),
        (S::ContinuePending, E::Exited, S::Stopped),
        (S::StopPending, E::Exited, S::Stopped),
    ];

    #[test]
    fn every_allowed_transition_leads_where_the_table_says() {
        for &(from, event, to) in ALLOWED {
            assert_eq!(from.next(event), Ok(to), "{from} + {event:?}");
        }
    }

    #[test]
    fn every_other_pair_is_refused_and_names_both() {
        let mut refused = 0;
        for from in State::ALL {
            for event in Event::ALL {
                if ALLOWED.iter().any(|&(f, e, _)| f == from && e == event) {
                    continue;
                }
                let err = from.next(event).expect_err("must be refused");
                assert_eq!(err, InvalidTransition { state: from, event });
                assert!(err.to_string().contains(from.name()), "{err}");
                refused += 1;
            }
        }
        assert_eq!(refused, State::ALL.len() * Event::ALL.len() - ALLOWED.len());
    }

    #[test]
    fn a_crash_loop_reaches_failed_only_through_stopped() {
        let mut state = S::Stopped;
        for event in [E::Start, E::Exited, E::Start, E::Ready, E::Exited, E::GiveUp] {
            state = state.next(event).unwrap();
        }
        assert_eq!(state, S::Failed);
        assert_eq!(S::Failed.next(E::Start), Ok(S::StartPending));
    }

    #[test]
    fn pausing_a_paused_instance_is_refused_with_a_readable_message() {
        let err = S::Paused.next(E::Pause).unwrap_err();
        assert_eq!(err.to_string(), "cannot pause while Paused");
    }
}
