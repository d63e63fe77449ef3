//! How the runtime reacts to what instances do: exits, notify messages,
//! deadlines, health results and answered controls — and how it stops them.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rustix::process::Signal;
use switchboard::CallOptions;
use switchboard_proto::supervision::{self as sup, ControlRequest};
use switchboard_proto::{ErrorCode, MethodName, ServiceName, Target};

use super::instance::Intent;
use super::notify::Notice;
use super::process::{describe_exit, signal_group};
use super::restart::Decision;
use super::runtime::Runtime;
use super::state::{Event as Transition, State};
use super::{Event, Key};

impl Runtime {
    pub(super) fn exited(&mut self, key: &Key, gen: u64, status: std::io::Result<std::process::ExitStatus>) {
        let Some(instance) = self.find(key, gen) else { return };
        if !instance.state().has_process() {
            return;
        }
        let (mut description, mut failed) = match &status {
            Ok(status) => describe_exit(status),
            Err(err) => (format!("lost track of the process: {err}"), true),
        };
        // Whatever the main process left behind goes with it.
        if let Some(pid) = instance.pid {
            signal_group(pid, Signal::KILL);
        }
        if let Some(reason) = instance.kill_reason.take() {
            description = format!("{description} ({reason})");
            failed = true;
        }
        let ran_for = instance.started.map_or(Duration::ZERO, |s| s.elapsed());
        instance.last_exit = description.clone();
        instance.clear_process();
        // Its secret dies with it: a leftover process cannot use it.
        let secret = std::mem::take(&mut instance.secret);
        let intent = instance.intent.take();
        let desired = instance.desired;
        self.router.forget_secret(&secret);
        let level = if failed && intent != Some(Intent::Stop) {
            super::runtime::WARNING
        } else {
            super::runtime::NOTICE
        };
        self.note_at(level, &key.0, key.1, &format!("exited: {description}"));
        self.transition(key, Transition::Exited);
        match intent {
            Some(Intent::Stop) => {}
            Some(Intent::Restart) => {
                if let Some(instance) = self.find_any(key) {
                    instance.desired = true;
                }
            }
            None if desired => self.after_failure(key, ran_for, failed),
            None => {}
        }
    }

    /// Applies the restart policy to an unplanned end.
    pub(super) fn after_failure(&mut self, key: &Key, ran_for: Duration, failed: bool) {
        let Some(service) = self.services.get(&key.0) else { return };
        let policy = service.spec.restart.clone();
        let jitter = self.jitter();
        let Some(instance) = self.find_any(key) else { return };
        match instance.tracker.on_exit(&policy, Instant::now(), failed, ran_for, jitter) {
            // No delay: the reconcile after this event starts it (a timer
            // would cost a tick of the timer wheel, about a millisecond).
            Decision::Restart(delay) if delay.is_zero() => {
                self.note(&key.0, key.1, "restarting now");
            }
            Decision::Restart(delay) => {
                let at = Instant::now() + delay;
                instance.restart_at = Some(at);
                let gen = instance.gen;
                self.note(&key.0, key.1, &format!("restarting in {} ms", delay.as_millis()));
                self.wake(key, gen, at);
            }
            Decision::StayStopped => instance.desired = false,
            Decision::GiveUp => self.give_up(key),
        }
    }

    pub(super) fn give_up(&mut self, key: &Key) {
        if let Some(instance) = self.find_any(key) {
            instance.desired = false;
            instance.restart_at = None;
        }
        self.note_at(super::runtime::ERR, &key.0, key.1, "restart budget spent: giving up");
        self.transition(key, Transition::GiveUp);
        if let Some(service) = self.services.get_mut(&key.0) {
            let last =
                service.instances.get(key.1 as usize - 1).map(|i| i.last_exit.clone()).unwrap_or_default();
            service.last_error = format!("instance {} failed: {last}", key.1);
        }
    }

    /// A number in [-1, 1] for restart jitter (xorshift; it need not be strong).
    fn jitter(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 2001) as f64 / 1000.0 - 1.0
    }

    pub(super) fn notice(&mut self, key: &Key, gen: u64, notice: Notice) {
        let Some(service) = self.services.get(&key.0) else { return };
        let watchdog = service.spec.watchdog;
        let Some(instance) = self.find(key, gen) else { return };
        let now = Instant::now();
        if let Some(status) = notice.status {
            instance.status = status;
        } else if notice.reloading {
            instance.status = "reloading".into();
        }
        if let Some(extra) = notice.extend_timeout {
            for deadline in
                [&mut instance.start_deadline, &mut instance.stop_deadline, &mut instance.pending_deadline]
            {
                if deadline.is_some() {
                    *deadline = Some(now + extra);
                }
            }
            self.wake(key, gen, now + extra);
        }
        let Some(instance) = self.find(key, gen) else { return };
        if notice.watchdog {
            if let Some(period) = watchdog {
                instance.watchdog_deadline = Some(now + period);
                self.wake(key, gen, now + period);
            }
        }
        if notice.watchdog_trigger {
            self.kill(key, gen, "the service triggered its watchdog".into());
        }
        if notice.ready {
            self.transition(key, Transition::Ready);
        }
        if notice.stopping {
            self.transition(key, Transition::Stop);
        }
    }

    /// Acts on whichever of the instance's deadlines passed.
    pub(super) fn check(&mut self, key: &Key, gen: u64) {
        let now = Instant::now();
        let Some(service) = self.services.get(&key.0) else { return };
        let watchdog = service.spec.watchdog;
        let Some(instance) = self.find(key, gen) else { return };
        let state = instance.state();
        let passed = |deadline: Option<Instant>| deadline.is_some_and(|d| d <= now);
        if state == State::Stopped && passed(instance.restart_at) {
            instance.restart_at = None; // the next reconcile starts it
            return;
        }
        if passed(instance.reattach_by) {
            instance.reattach_by = None; // calls go through; settle lifts the hold
            self.note_at(
                super::runtime::WARNING,
                &key.0,
                key.1,
                "did not attach again after the daemon's reexec",
            );
            return;
        }
        if state == State::StopPending && passed(instance.stop_deadline) {
            instance.stop_deadline = None;
            if let Some(pid) = instance.pid {
                self.note_at(super::runtime::WARNING, &key.0, key.1, "stop timeout passed: SIGKILL");
                signal_group(pid, Signal::KILL);
            }
            return;
        }
        let reason = if state == State::StartPending && passed(instance.start_deadline) {
            Some("not ready within the start timeout".to_owned())
        } else if matches!(state, State::PausePending | State::ContinuePending)
            && passed(instance.pending_deadline)
        {
            Some(format!("hung in {state}: no progress within its wait hint"))
        } else if state.has_process() && state != State::Paused && passed(instance.watchdog_deadline) {
            Some(format!("watchdog: no WATCHDOG=1 within {:?}", watchdog.unwrap_or_default()))
        } else {
            None
        };
        if let Some(reason) = reason {
            self.kill(key, gen, reason);
        }
    }

    /// Kills an instance's process group because it misbehaved; its exit then
    /// counts as a failure under the restart policy.
    pub(super) fn kill(&mut self, key: &Key, gen: u64, reason: String) {
        let Some(instance) = self.find(key, gen) else { return };
        let Some(pid) = instance.pid else { return };
        instance.watchdog_deadline = None;
        instance.start_deadline = None;
        instance.pending_deadline = None;
        tracing::warn!(service = %key.0, instance = key.1, "killing: {reason}");
        instance.kill_reason = Some(reason.clone());
        self.note_at(super::runtime::WARNING, &key.0, key.1, &format!("killing: {reason}"));
        signal_group(pid, Signal::KILL);
        let message = format!("service {} instance {} was killed: {reason}", key.0, key.1);
        self.fail_waiters(&key.0, ErrorCode::ServiceFailed, &message);
    }

    pub(super) fn health(&mut self, key: &Key, gen: u64, result: Result<(), String>) {
        let Some(threshold) =
            self.services.get(&key.0).and_then(|s| s.spec.health.as_ref()).map(|h| h.threshold)
        else {
            return;
        };
        let Some(instance) = self.find(key, gen) else { return };
        if instance.state() != State::Running {
            return;
        }
        match result {
            Ok(()) => {
                instance.health_failures = 0;
                instance.health = "healthy".into();
            }
            Err(why) => {
                instance.health_failures += 1;
                let failures = instance.health_failures;
                instance.health = format!("unhealthy ({failures}/{threshold}): {why}");
                if failures >= threshold {
                    self.kill(key, gen, format!("unhealthy: {why}"));
                }
            }
        }
    }

    /// Starts stopping an instance: a stop control for a bus-aware one,
    /// SIGTERM to the group for a plain one; SIGKILL at the stop timeout.
    pub(super) fn begin_stop(&mut self, name: &str, index: usize, intent: Intent) {
        let Some(stop_timeout) = self.services.get(name).map(|s| s.spec.stop_timeout) else { return };
        let Some(instance) = self.instance_mut(name, index) else { return };
        let was = instance.state();
        let key: Key = (name.to_owned(), instance.index);
        if !self.transition(&key, Transition::Stop) {
            return;
        }
        let Some(instance) = self.instance_mut(name, index) else { return };
        instance.intent = Some(intent);
        let at = Instant::now() + stop_timeout;
        instance.stop_deadline = Some(at);
        let (gen, pid, attached) = (instance.gen, instance.pid, instance.attached.clone());
        self.wake(&key, gen, at);
        match attached {
            Some(attached) => self.send_control(
                &key,
                gen,
                attached.bus_instance,
                sup::CODE_STOP,
                Bytes::new(),
                stop_timeout,
            ),
            None => {
                if let Some(pid) = pid {
                    if was == State::Paused {
                        signal_group(pid, Signal::CONT);
                    }
                    signal_group(pid, Signal::TERM);
                }
            }
        }
    }

    /// Sends a `__control` call to a bus-aware instance; the answer comes
    /// back as `ControlDone`.
    pub(super) fn send_control(
        &self,
        key: &Key,
        gen: u64,
        bus_instance: u64,
        code: u8,
        payload: Bytes,
        timeout: Duration,
    ) {
        let (bus, events, key) = (self.bus.clone(), self.events.clone(), key.clone());
        tokio::spawn(async move {
            let result = control_call(&bus, &key.0, bus_instance, code, payload, timeout).await;
            let _ = events.send(Event::ControlDone { key, gen, code, result });
        });
    }

    pub(super) fn control_done(&mut self, key: &Key, gen: u64, code: u8, result: Result<Bytes, String>) {
        let Some(instance) = self.find(key, gen) else { return };
        let (state, pid) = (instance.state(), instance.pid);
        match (code, result) {
            (sup::CODE_STOP, Err(why)) if state == State::StopPending => {
                self.note_at(
                    super::runtime::WARNING,
                    &key.0,
                    key.1,
                    &format!("stop control failed ({why}): SIGTERM"),
                );
                if let Some(pid) = pid {
                    signal_group(pid, Signal::TERM);
                }
            }
            (sup::CODE_PAUSE, Ok(_)) => drop(self.transition(key, Transition::Paused)),
            (sup::CODE_CONTINUE, Ok(_)) => drop(self.transition(key, Transition::Continued)),
            (sup::CODE_PAUSE | sup::CODE_CONTINUE, Err(why))
                if self.transition(key, Transition::ControlFailed) =>
            {
                let message = format!("instance {} refused: {why}", key.1);
                self.fail_waiters(&key.0, ErrorCode::Rejected, &message);
            }
            _ => {}
        }
    }
}

/// One `__control` call.
pub(super) async fn control_call(
    bus: &switchboard::Bus,
    service: &str,
    bus_instance: u64,
    code: u8,
    payload: Bytes,
    timeout: Duration,
) -> Result<Bytes, String> {
    let target = match (ServiceName::parse(service), MethodName::parse(sup::CONTROL_METHOD)) {
        (Ok(service), Ok(method)) => Target { service, method },
        _ => return Err(format!("{service} is not a valid service name")),
    };
    let request = ControlRequest { service: service.to_owned(), code, payload: payload.to_vec() };
    let options = CallOptions { instance: Some(bus_instance), ..CallOptions::timeout(timeout) };
    bus.call_with(target, Bytes::from(switchboard_proto::sys::encode(&request)), options)
        .await
        .map_err(|err| err.to_string())
}
