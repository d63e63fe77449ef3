//! `$sys.services` requests: status, start, stop, restart, pause, continue,
//! control, reload (see [`super::reload`]), logs, and what bus-aware
//! instances send (attach, progress, log). A request that must wait for a
//! state becomes a [`Waiter`], answered by [`super::status`].

use std::time::{Duration, Instant};

use bytes::Bytes;
use rustix::process::Signal;
use serde::de::DeserializeOwned;
use switchboard_proto::supervision::{self as sup, ControlReply, ServiceStatus};
use switchboard_proto::{Caller, ErrorCode};
use tokio::sync::oneshot;

use super::config::{Readiness, StartType};
use super::instance::{Attached, Instance, Intent};
use super::process::signal_group;
use super::reactions::control_call;
use super::runtime::{Goal, Runtime, Waiter};
use super::state::{Event as Transition, State};
use super::{Answer, Key, Published};
use switchboard_daemon::host::constant_time_eq;

type Refusal = (ErrorCode, String);

/// Deadline of a pause or continue control call to a bus-aware instance.
const PENDING_CALL_LIMIT: Duration = Duration::from_secs(3600);

/// What a request leads to.
enum Outcome {
    Now(Bytes),
    /// Answered once the service reaches the goal.
    Wait(String, Goal),
    /// Custom controls: answered when every instance replied.
    Controls(Vec<(u32, u64)>, sup::ControlRequest, Duration),
}

fn decode<T: DeserializeOwned + Default>(payload: &[u8]) -> Result<T, Refusal> {
    if payload.is_empty() {
        return Ok(T::default());
    }
    switchboard_proto::sys::decode(payload).map_err(|err| (ErrorCode::BadArguments, err.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> Bytes {
    Bytes::from(switchboard_proto::sys::encode(value))
}

fn invalid(message: String) -> Refusal {
    (ErrorCode::InvalidTransition, message)
}

fn control_name(code: u8) -> String {
    match code {
        sup::CODE_STOP => "stop".into(),
        sup::CODE_PAUSE => "pause".into(),
        sup::CODE_CONTINUE => "continue".into(),
        sup::CODE_RELOAD => "reload".into(),
        other => other.to_string(),
    }
}

impl Runtime {
    pub(super) fn request(
        &mut self,
        method: &str,
        payload: &[u8],
        caller: Caller,
        reply: oneshot::Sender<Answer>,
    ) {
        let outcome = match method {
            sup::STATUS => self.status_request(payload),
            sup::START => self.start_request(payload),
            sup::STOP => self.stop_request(payload),
            sup::RESTART => self.restart_request(payload),
            sup::PAUSE => self.pause_request(payload, true),
            sup::CONTINUE => self.pause_request(payload, false),
            sup::CONTROL => self.control_request(payload),
            sup::LOGS => self.logs_request(payload),
            sup::ATTACH => self.attach(payload, caller),
            sup::PROGRESS => self.progress(payload, caller),
            sup::LOG => self.log_event(payload, caller),
            other => Err((ErrorCode::NoSuchMethod, format!("$sys.services has no method {other}"))),
        };
        match outcome {
            Ok(Outcome::Now(bytes)) => drop(reply.send(Ok(bytes))),
            Ok(Outcome::Wait(service, goal)) => self.waiters.push(Waiter { service, goal, reply }),
            Ok(Outcome::Controls(targets, request, timeout)) => {
                let bus = self.bus.clone();
                tokio::spawn(async move {
                    let mut replies = Vec::new();
                    for (number, bus_instance) in targets {
                        let payload = Bytes::from(request.payload.clone());
                        match control_call(
                            &bus,
                            &request.service,
                            bus_instance,
                            request.code,
                            payload,
                            timeout,
                        )
                        .await
                        {
                            Ok(payload) => {
                                replies.push(ControlReply { instance: number, payload: payload.to_vec() })
                            }
                            Err(why) => {
                                let message = format!("instance {number}: {why}");
                                return drop(reply.send(Err((ErrorCode::Rejected, message))));
                            }
                        }
                    }
                    let _ = reply.send(Ok(encode(&replies)));
                });
            }
            Err(refusal) => drop(reply.send(Err(refusal))),
        }
    }

    /// The service a request names, which must exist.
    fn named(&self, payload: &[u8]) -> Result<String, Refusal> {
        let sup::ServiceRef { service } = decode(payload)?;
        match self.services.get(&service) {
            Some(s) if !s.removed => Ok(service),
            _ => Err((ErrorCode::NoSuchService, format!("no supervised service named {service:?}"))),
        }
    }

    fn status_request(&self, payload: &[u8]) -> Result<Outcome, Refusal> {
        let sup::ServiceRef { service } = decode(payload)?;
        let statuses: Vec<ServiceStatus> = if service.is_empty() {
            self.services.keys().filter_map(|name| self.service_status(name)).collect()
        } else {
            vec![self.service_status(&self.named(payload)?).unwrap_or_default()]
        };
        Ok(Outcome::Now(encode(&statuses)))
    }

    fn gens(&self, name: &str, bump: bool) -> Vec<u64> {
        let instances = self.services.get(name).map(|s| s.instances.as_slice()).unwrap_or_default();
        instances.iter().map(|i| i.gen + u64::from(bump && i.state().has_process())).collect()
    }

    fn start_request(&mut self, payload: &[u8]) -> Result<Outcome, Refusal> {
        let name = self.named(payload)?;
        self.want(&name)?;
        Ok(Outcome::Wait(name.clone(), Goal::Running(self.gens(&name, false))))
    }

    /// Marks a service and everything it requires as wanted running.
    fn want(&mut self, name: &str) -> Result<(), Refusal> {
        let Some(service) = self.services.get_mut(name) else { return Ok(()) };
        if service.spec.start == StartType::Disabled {
            return Err(invalid(format!("service {name} is disabled in the config")));
        }
        for instance in &mut service.instances {
            if instance.state() == State::Failed {
                instance.tracker.reset();
            }
            instance.desired = true;
        }
        service.last_error.clear();
        for dep in service.spec.requires.clone() {
            self.want(&dep)?;
        }
        Ok(())
    }

    fn stop_request(&mut self, payload: &[u8]) -> Result<Outcome, Refusal> {
        let name = self.named(payload)?;
        self.unwant(&name);
        Ok(Outcome::Wait(name, Goal::Stopped))
    }

    /// Marks a service and everything that requires it as wanted stopped.
    fn unwant(&mut self, name: &str) {
        if let Some(service) = self.services.get_mut(name) {
            for instance in &mut service.instances {
                instance.desired = false;
            }
        }
        let dependents: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.spec.requires.iter().any(|r| r == name))
            .map(|(n, _)| n.clone())
            .collect();
        for dependent in dependents {
            self.unwant(&dependent);
        }
    }

    fn restart_request(&mut self, payload: &[u8]) -> Result<Outcome, Refusal> {
        let name = self.named(payload)?;
        let gens = self.gens(&name, true);
        self.want(&name)?;
        let count = self.services.get(&name).map_or(0, |s| s.instances.len());
        for index in 0..count {
            let live = self.instance_mut(&name, index).is_some_and(|i| i.state().has_process());
            if live {
                self.begin_stop(&name, index, Intent::Restart);
            }
        }
        Ok(Outcome::Wait(name, Goal::Running(gens)))
    }

    fn pause_request(&mut self, payload: &[u8], pause: bool) -> Result<Outcome, Refusal> {
        let name = self.named(payload)?;
        let Some(service) = self.services.get(&name) else { return Err(invalid(name)) };
        let (event, code) = if pause {
            (Transition::Pause, sup::CODE_PAUSE)
        } else {
            (Transition::Continue, sup::CODE_CONTINUE)
        };
        for instance in &service.instances {
            if let Err(err) = instance.state().next(event) {
                return Err(invalid(format!("service {name} instance {}: {err}", instance.index)));
            }
            if let Some(attached) = &instance.attached {
                if !attached.accepts.contains(&sup::CODE_PAUSE) {
                    let verb = control_name(code);
                    return Err(invalid(format!("service {name} does not accept {verb} (it handles its own controls and did not declare pause)")));
                }
            }
        }
        let wait_hint = service.spec.stop_timeout;
        let gens = self.gens(&name, false);
        for index in 0..service.instances.len() {
            self.pause_one(&name, index, pause, wait_hint);
        }
        Ok(Outcome::Wait(name, if pause { Goal::Paused } else { Goal::Running(gens) }))
    }

    fn pause_one(&mut self, name: &str, index: usize, pause: bool, wait_hint: Duration) {
        let Some(instance) = self.instance_mut(name, index) else { return };
        let key: Key = (name.to_owned(), instance.index);
        let (gen, pid, attached) = (instance.gen, instance.pid, instance.attached.clone());
        let (start, done, code) = if pause {
            (Transition::Pause, Transition::Paused, sup::CODE_PAUSE)
        } else {
            (Transition::Continue, Transition::Continued, sup::CODE_CONTINUE)
        };
        if !self.transition(&key, start) {
            return;
        }
        match attached {
            Some(attached) => {
                let at = Instant::now() + wait_hint;
                if let Some(instance) = self.instance_mut(name, index) {
                    instance.pending_deadline = Some(at);
                    instance.checkpoint = 0;
                }
                self.wake(&key, gen, at);
                // The call may outlive the wait hint (progress extends it); the
                // hang check, not the call's deadline, decides.
                self.send_control(&key, gen, attached.bus_instance, code, Bytes::new(), PENDING_CALL_LIMIT);
            }
            None => {
                if let Some(pid) = pid {
                    signal_group(pid, if pause { Signal::STOP } else { Signal::CONT });
                }
                self.transition(&key, done);
            }
        }
    }

    fn control_request(&mut self, payload: &[u8]) -> Result<Outcome, Refusal> {
        let request: sup::ControlRequest = decode(payload)?;
        let name = self.named(&encode(&sup::ServiceRef { service: request.service.clone() }))?;
        let Some(service) = self.services.get(&name) else { return Err(invalid(name)) };
        if matches!(request.code, sup::CODE_STOP | sup::CODE_PAUSE | sup::CODE_CONTINUE) {
            let verb = control_name(request.code);
            return Err((ErrorCode::BadRequest, format!("use `switchboard {verb} {name}` for {verb}")));
        }
        if request.code != sup::CODE_RELOAD && request.code < sup::FIRST_CUSTOM_CODE {
            return Err((
                ErrorCode::BadRequest,
                format!("control code {} is reserved; custom codes are 128–255", request.code),
            ));
        }
        let live: Vec<&Instance> = service.instances.iter().filter(|i| i.state() == State::Running).collect();
        if live.is_empty() {
            return Err(invalid(format!("service {name} has no Running instance to control")));
        }
        let mut targets = Vec::new();
        for instance in live {
            match &instance.attached {
                Some(a) if a.accepts.contains(&request.code) => {
                    targets.push((instance.index, a.bus_instance))
                }
                None if request.code == sup::CODE_RELOAD => {
                    if let Some(pid) = instance.pid {
                        signal_group(pid, Signal::HUP);
                    }
                }
                _ => {
                    let what = control_name(request.code);
                    let why = if instance.attached.is_some() {
                        "it did not declare it"
                    } else {
                        "it is not attached to the bus"
                    };
                    return Err(invalid(format!("service {name} does not accept control {what} ({why})")));
                }
            }
        }
        Ok(Outcome::Controls(targets, request, service.spec.stop_timeout))
    }

    fn logs_request(&self, payload: &[u8]) -> Result<Outcome, Refusal> {
        let query: sup::LogQuery = decode(payload)?;
        let service = self.services.get(&query.service).ok_or_else(|| {
            (ErrorCode::NoSuchService, format!("no supervised service named {:?}", query.service))
        })?;
        let lines = service.log.lock().unwrap_or_else(|p| p.into_inner()).query(&query);
        Ok(Outcome::Now(encode(&lines)))
    }

    fn attach(&mut self, payload: &[u8], caller: Caller) -> Result<Outcome, Refusal> {
        let attach: sup::Attach = decode(payload)?;
        let found = self.services.iter().find_map(|(name, s)| {
            s.instances
                .iter()
                .find(|i| {
                    !attach.secret.is_empty()
                        && constant_time_eq(&i.secret, &attach.secret)
                        && i.state().has_process()
                })
                .map(|i| ((name.clone(), i.index), s.spec.ready, i.attached.clone()))
        });
        let Some((key, ready, attached)) = found else {
            return Err((
                ErrorCode::PermissionDenied,
                "no supervised instance has this secret (wrong or stale)".into(),
            ));
        };
        // The secret is exchanged once, and only by the instance itself: by
        // a connection that authenticated with it from inside the instance's
        // session (so knowing the secret is not enough).
        let instance_principal = format!("service:{}#{}", key.0, key.1);
        if caller.principal.as_str() != instance_principal {
            let message = format!(
                "{} may not attach as {instance_principal}: attach from the instance's own connection",
                caller.principal
            );
            return Err((ErrorCode::PermissionDenied, message));
        }
        // Once attached, only a registration that is gone (the instance's
        // connection was lost and made again) may be replaced.
        if attached.is_some_and(|a| self.router.instance_owner(a.bus_instance).is_some()) {
            let message = format!("{instance_principal} has attached already; its secret is spent");
            return Err((ErrorCode::PermissionDenied, message));
        }
        let owner = self.router.instance_owner(attach.control_instance);
        if owner != Some((caller.session, key.0.clone())) {
            let message = format!(
                "bus instance {} is not this connection's registration of {}",
                attach.control_instance, key.0
            );
            return Err((ErrorCode::BadRequest, message));
        }
        let accepts = attach.accepts.clone();
        if let Some(instance) = self.find_any(&key) {
            instance.attached =
                Some(Attached { session: caller.session, bus_instance: attach.control_instance, accepts });
            instance.reattach_by = None;
        }
        let names: Vec<String> = attach.accepts.iter().map(|c| control_name(*c)).collect();
        self.note(&key.0, key.1, &format!("attached over the bus (accepts stop {})", names.join(" ")));
        if ready == Readiness::Bus {
            self.transition(&key, Transition::Ready);
        }
        Ok(Outcome::Now(Bytes::new()))
    }

    /// The attached instance a connection is.
    fn attached_key(&self, caller: Caller) -> Result<Key, Refusal> {
        self.services
            .iter()
            .find_map(|(name, s)| {
                s.instances
                    .iter()
                    .find(|i| i.attached.as_ref().is_some_and(|a| a.session == caller.session))
                    .map(|i| (name.clone(), i.index))
            })
            .ok_or_else(|| {
                (ErrorCode::PermissionDenied, "this connection is not an attached supervised instance".into())
            })
    }

    fn progress(&mut self, payload: &[u8], caller: Caller) -> Result<Outcome, Refusal> {
        let progress: sup::Progress = decode(payload)?;
        let key = self.attached_key(caller)?;
        let Some(instance) = self.find_any(&key) else { return Err(invalid(key.0)) };
        if !progress.status.is_empty() {
            instance.status = progress.status;
        }
        if instance.state().is_pending() && progress.checkpoint > instance.checkpoint {
            instance.checkpoint = progress.checkpoint;
            let at = Instant::now() + Duration::from_millis(progress.wait_hint_ms);
            for deadline in
                [&mut instance.pending_deadline, &mut instance.start_deadline, &mut instance.stop_deadline]
            {
                if deadline.is_some() {
                    *deadline = Some(at);
                }
            }
            let gen = instance.gen;
            self.wake(&key, gen, at);
        }
        Ok(Outcome::Now(Bytes::new()))
    }

    fn log_event(&mut self, payload: &[u8], caller: Caller) -> Result<Outcome, Refusal> {
        let event: sup::LogEvent = decode(payload)?;
        let key = self.attached_key(caller)?;
        let level = sup::severity(&event.level).ok_or_else(|| {
            (
                ErrorCode::BadArguments,
                format!("level {:?}: expected a severity ({})", event.level, sup::SEVERITIES.join(", ")),
            )
        })?;
        let mut line = event.message.clone();
        for (k, v) in &event.fields {
            line.push_str(&format!(" {k}={v}"));
        }
        if let Some(service) = self.services.get(&key.0) {
            let mut log = service.log.lock().unwrap_or_else(|p| p.into_inner());
            let entry = log.append(key.1, "event", &line, level, &event.id);
            let _ = self.published.send(Published::Log(entry));
        }
        Ok(Outcome::Now(Bytes::new()))
    }
}
