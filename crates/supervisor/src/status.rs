//! What the runtime tells the world after every event: each service's
//! status (published, retained, when it changed), the router's call hold
//! for it, and the answers to requests waiting for a state.

use std::time::Instant;

use bytes::Bytes;
use switchboard_proto::supervision::ServiceStatus;
use switchboard_proto::ErrorCode;

use super::instance::Instance;
use super::runtime::{Goal, Runtime};
use super::state::State;
use super::Published;
use switchboard_daemon::host::Hold;

fn encode<T: serde::Serialize>(value: &T) -> Bytes {
    Bytes::from(switchboard_proto::sys::encode(value))
}

impl Runtime {
    pub(super) fn service_status(&self, name: &str) -> Option<ServiceStatus> {
        let service = self.services.get(name)?;
        let now = Instant::now();
        let states: Vec<State> = service.instances.iter().map(Instance::state).collect();
        Some(ServiceStatus {
            service: name.to_owned(),
            state: aggregate(&states).name().to_owned(),
            start_type: format!("{:?}", service.spec.start).to_lowercase(),
            instances: service.instances.iter().map(|i| i.status(now)).collect(),
            requires: service.spec.requires.clone(),
            last_error: service.last_error.clone(),
            note: service.note.clone(),
        })
    }

    /// Publishes the service's status if it changed, and updates its hold.
    pub(super) fn publish(&mut self, name: &str) {
        let Some(status) = self.service_status(name) else { return };
        let Some(service) = self.services.get(name) else { return };
        let hold = hold_for(&service.instances);
        let comparable = |s: &ServiceStatus| {
            let mut s = s.clone();
            for i in &mut s.instances {
                (i.uptime_ms, i.restart_in_ms) = (0, i.restart_in_ms.map(|_| 1));
            }
            s
        };
        let changed = service.published.as_ref().map(comparable) != Some(comparable(&status));
        let hold_changed = service.hold != hold;
        let spec_name = service.spec.name.clone();
        if hold_changed {
            self.router.set_hold(&spec_name, hold);
        }
        if let Some(service) = self.services.get_mut(name) {
            service.hold = hold;
            if changed {
                service.published = Some(status.clone());
            }
        }
        if changed {
            self.publish_state(name, encode(&status));
        }
    }

    pub(super) fn publish_state(&self, name: &str, status: Bytes) {
        let _ = self.published.send(Published::State { service: name.to_owned(), status });
    }

    pub(super) fn answer_waiters(&mut self) {
        for waiter in std::mem::take(&mut self.waiters) {
            let Some(service) = self.services.get(&waiter.service) else {
                let _ = waiter
                    .reply
                    .send(Err((ErrorCode::NoSuchService, format!("{} was removed", waiter.service))));
                continue;
            };
            let instances = &service.instances;
            let outcome = match &waiter.goal {
                Goal::Running(gens) => {
                    let reached =
                        instances.iter().zip(gens).all(|(i, g)| i.state() == State::Running && i.gen >= *g);
                    if reached && !instances.is_empty() {
                        Some(Ok(()))
                    } else if instances.iter().any(|i| i.state() == State::Failed) {
                        Some(Err((
                            ErrorCode::ServiceFailed,
                            format!("service {} failed: {}", waiter.service, service.last_error),
                        )))
                    } else if instances.iter().all(|i| !i.desired && !i.state().has_process()) {
                        let last = instances.first().map(|i| i.last_exit.clone()).unwrap_or_default();
                        Some(Err((
                            ErrorCode::InvalidTransition,
                            format!("service {} stopped before it was Running ({last})", waiter.service),
                        )))
                    } else {
                        None
                    }
                }
                Goal::Stopped => instances.iter().all(|i| !i.state().has_process()).then_some(Ok(())),
                Goal::Paused => instances.iter().all(|i| i.state() == State::Paused).then_some(Ok(())),
            };
            match outcome {
                None => self.waiters.push(waiter),
                Some(result) => {
                    let answer = result.map(|()| encode(&self.service_status(&waiter.service)));
                    let _ = waiter.reply.send(answer);
                }
            }
        }
    }

    pub(super) fn fail_waiters(&mut self, name: &str, code: ErrorCode, message: &str) {
        for waiter in std::mem::take(&mut self.waiters) {
            if waiter.service == name {
                let _ = waiter.reply.send(Err((code, message.to_owned())));
            } else {
                self.waiters.push(waiter);
            }
        }
    }
}

/// One state for a service: the instances' when they agree, else the least
/// settled one.
fn aggregate(states: &[State]) -> State {
    const ORDER: [State; 8] = [
        State::StopPending,
        State::StartPending,
        State::PausePending,
        State::ContinuePending,
        State::Failed,
        State::Stopped,
        State::Paused,
        State::Running,
    ];
    ORDER.into_iter().find(|s| states.contains(s)).unwrap_or(State::Stopped)
}

/// What calls to the service meet while none of its instances is Running.
fn hold_for(instances: &[Instance]) -> Option<Hold> {
    let any = |f: &dyn Fn(&Instance) -> bool| instances.iter().any(f);
    if instances.is_empty() || any(&|i| i.state() == State::Running && i.reattach_by.is_none()) {
        None
    } else if any(&|i| {
        matches!(i.state(), State::StartPending | State::ContinuePending)
            || (i.desired && i.state() == State::Stopped)
            || i.reattach_by.is_some()
    }) {
        Some(Hold::Starting)
    } else if any(&|i| matches!(i.state(), State::Paused | State::PausePending)) {
        Some(Hold::Paused)
    } else if instances.iter().all(|i| i.state() == State::Failed) {
        Some(Hold::Failed)
    } else {
        None
    }
}
