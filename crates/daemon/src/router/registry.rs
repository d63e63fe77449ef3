//! Which services exist, their instances and methods, and which instance a
//! call goes to.
//!
//! Load balancing is least-outstanding: the instance with the fewest
//! unanswered calls wins, ties broken round-robin from a per-service cursor.
//! With equal instances this is plain round-robin; with a slow instance it
//! sends new work elsewhere instead of queueing behind it.

use std::collections::HashMap;

use switchboard_proto::{ErrorCode, InstanceId, MethodName, MethodSpec, ServiceName, SessionId};

/// One instance of a service: a registration made by one connection.
#[derive(Debug)]
pub struct Instance {
    pub service: ServiceName,
    pub session: SessionId,
    pub methods: Vec<MethodSpec>,
    /// Calls routed to it and not yet answered.
    pub outstanding: u32,
    /// Calls and notifications delivered so far.
    pub delivered: u64,
    /// A stand-in for instances on other hosts (the fleet bridge's): chosen
    /// only when no instance here fits, and never given a direct channel.
    pub remote: bool,
}

impl Instance {
    fn serves(&self, method: &MethodName) -> bool {
        self.methods.iter().any(|m| &m.name == method)
    }
}

#[derive(Debug, Default)]
struct Service {
    instances: Vec<InstanceId>,
    cursor: usize,
}

/// Services and instances. Owns no sockets; the router acts on its answers.
#[derive(Debug, Default)]
pub struct Registry {
    services: HashMap<ServiceName, Service>,
    instances: HashMap<InstanceId, Instance>,
    next_instance: InstanceId,
}

impl Registry {
    /// Adds an instance and returns its id (never 0).
    pub fn add(&mut self, service: ServiceName, session: SessionId, methods: Vec<MethodSpec>) -> InstanceId {
        self.add_instance(service, session, methods, false)
    }

    /// Adds an instance, a stand-in for other hosts' when `remote`.
    pub fn add_instance(
        &mut self,
        service: ServiceName,
        session: SessionId,
        methods: Vec<MethodSpec>,
        remote: bool,
    ) -> InstanceId {
        self.next_instance += 1;
        let id = self.next_instance;
        self.services.entry(service.clone()).or_default().instances.push(id);
        let instance = Instance { service, session, methods, outstanding: 0, delivered: 0, remote };
        self.instances.insert(id, instance);
        id
    }

    /// Removes an instance; the service disappears with its last instance.
    pub fn remove(&mut self, id: InstanceId) -> Option<Instance> {
        let instance = self.instances.remove(&id)?;
        if let Some(service) = self.services.get_mut(&instance.service) {
            service.instances.retain(|i| *i != id);
            if service.instances.is_empty() {
                self.services.remove(&instance.service);
            }
        }
        Some(instance)
    }

    /// Whether any instance of `service` is registered.
    pub fn has(&self, service: &ServiceName) -> bool {
        self.services.contains_key(service)
    }

    pub fn get(&self, id: InstanceId) -> Option<&Instance> {
        self.instances.get(&id)
    }

    pub fn get_mut(&mut self, id: InstanceId) -> Option<&mut Instance> {
        self.instances.get_mut(&id)
    }

    /// Instances registered by one connection.
    pub fn of_session(&self, session: SessionId) -> Vec<InstanceId> {
        let mut ids: Vec<InstanceId> =
            self.instances.iter().filter(|(_, i)| i.session == session).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }

    /// Chooses the instance for a call or notification, or says why none.
    /// `wanted` = 0 lets the registry choose.
    pub fn choose(
        &mut self,
        service: &ServiceName,
        method: &MethodName,
        wanted: InstanceId,
    ) -> Result<InstanceId, (ErrorCode, String)> {
        self.pick(service, wanted, |i| i.serves(method), || no_method(service, method))
    }

    /// Chooses an instance on this host only (a call that names this host).
    pub fn choose_here(
        &mut self,
        service: &ServiceName,
        method: &MethodName,
    ) -> Result<InstanceId, (ErrorCode, String)> {
        self.pick(service, 0, |i| !i.remote && i.serves(method), || no_method(service, method))
    }

    /// Chooses the stand-in for other hosts (a call that names its host).
    pub fn choose_remote(
        &mut self,
        service: &ServiceName,
        method: &MethodName,
    ) -> Result<InstanceId, (ErrorCode, String)> {
        let unfit = || {
            let message =
                format!("the call names a host, and no host of the fleet offers {service}.{method} here");
            (ErrorCode::NoSuchService, message)
        };
        self.pick(service, 0, |i| i.remote && i.serves(method), unfit)
    }

    /// Chooses an instance of `service` here, whatever it serves (a direct
    /// channel's: never a stand-in for other hosts).
    pub fn choose_any(
        &mut self,
        service: &ServiceName,
        wanted: InstanceId,
    ) -> Result<InstanceId, (ErrorCode, String)> {
        self.pick(service, wanted, |i| !i.remote, || no_service(service))
    }

    /// The least loaded instance of `service` that `fits`, round robin among
    /// equals; `unfit` says why when instances exist but none fits.
    fn pick(
        &mut self,
        service: &ServiceName,
        wanted: InstanceId,
        fits: impl Fn(&Instance) -> bool,
        unfit: impl Fn() -> (ErrorCode, String),
    ) -> Result<InstanceId, (ErrorCode, String)> {
        if wanted != 0 {
            return match self.instances.get(&wanted) {
                Some(i) if &i.service == service && fits(i) => Ok(wanted),
                Some(i) if &i.service == service => Err(unfit()),
                _ => Err((ErrorCode::NoSuchInstance, format!("service {service} has no instance {wanted}"))),
            };
        }
        let entry = self.services.get_mut(service).ok_or_else(|| no_service(service))?;
        let count = entry.instances.len();
        // Instances of this host first; other hosts' stand-in only when none fits.
        for remote in [false, true] {
            let mut best: Option<(usize, u32)> = None;
            for step in 0..count {
                let slot = (entry.cursor + step) % count;
                let Some(instance) = self.instances.get(&entry.instances[slot]) else {
                    continue;
                };
                if instance.remote != remote || !fits(instance) {
                    continue;
                }
                if best.is_none_or(|(_, load)| instance.outstanding < load) {
                    best = Some((slot, instance.outstanding));
                    if instance.outstanding == 0 {
                        break;
                    }
                }
            }
            if let Some((slot, _)) = best {
                entry.cursor = (slot + 1) % count;
                return Ok(entry.instances[slot]);
            }
        }
        Err(unfit())
    }

    /// Every instance of `service`, in registration order.
    pub fn instances_of(&self, service: &ServiceName) -> Vec<InstanceId> {
        self.services.get(service).map(|entry| entry.instances.clone()).unwrap_or_default()
    }

    /// The instances of `service` on this host (stand-ins for other hosts'
    /// left out), in registration order.
    pub fn local_instances_of(&self, service: &ServiceName) -> Vec<InstanceId> {
        let mut ids = self.instances_of(service);
        ids.retain(|id| self.instances.get(id).is_some_and(|i| !i.remote));
        ids
    }

    /// Every instance of `service` serving `method`, in registration order.
    pub fn serving(
        &self,
        service: &ServiceName,
        method: &MethodName,
    ) -> Result<Vec<InstanceId>, (ErrorCode, String)> {
        self.serving_where(service, method, true)
    }

    /// Every instance here serving `method`, and the stand-in for other
    /// hosts' too when `fleet` (a broadcast to the whole fleet).
    pub fn serving_where(
        &self,
        service: &ServiceName,
        method: &MethodName,
        fleet: bool,
    ) -> Result<Vec<InstanceId>, (ErrorCode, String)> {
        let entry = self.services.get(service).ok_or_else(|| no_service(service))?;
        let serving: Vec<InstanceId> = entry
            .instances
            .iter()
            .copied()
            .filter(|id| self.instances.get(id).is_some_and(|i| i.serves(method) && (fleet || !i.remote)))
            .collect();
        let elsewhere = || entry.instances.iter().any(|id| self.instances.get(id).is_some_and(|i| i.remote));
        if serving.is_empty() && !fleet && elsewhere() {
            let message =
                format!("no instance of {service} on this host; other hosts of the fleet serve it (--fleet)");
            return Err((ErrorCode::NoSuchService, message));
        }
        if serving.is_empty() {
            return Err(no_method(service, method));
        }
        Ok(serving)
    }

    /// All services sorted by name, each with its instances in id order.
    pub fn services(&self) -> Vec<(&ServiceName, Vec<(InstanceId, &Instance)>)> {
        let mut out: Vec<_> = self
            .services
            .iter()
            .map(|(name, service)| {
                let instances = service
                    .instances
                    .iter()
                    .filter_map(|id| self.instances.get(id).map(|i| (*id, i)))
                    .collect();
                (name, instances)
            })
            .collect();
        out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        out
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }
}

fn no_service(service: &ServiceName) -> (ErrorCode, String) {
    (ErrorCode::NoSuchService, format!("no service named {service} is registered"))
}

fn no_method(service: &ServiceName, method: &MethodName) -> (ErrorCode, String) {
    (ErrorCode::NoSuchMethod, format!("service {service} has no method {method}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ServiceName {
        ServiceName::parse(s).unwrap()
    }
    fn method(s: &str) -> MethodName {
        MethodName::parse(s).unwrap()
    }
    fn spec(s: &str) -> MethodSpec {
        MethodSpec { name: method(s), signature: String::new() }
    }

    #[test]
    fn equal_instances_share_round_robin() {
        let mut reg = Registry::default();
        let ids: Vec<_> = (0..3).map(|s| reg.add(name("w"), s, vec![spec("go")])).collect();
        let mut counts = HashMap::new();
        for _ in 0..300 {
            *counts.entry(reg.choose(&name("w"), &method("go"), 0).unwrap()).or_insert(0) += 1;
        }
        for id in ids {
            assert_eq!(counts[&id], 100);
        }
    }

    #[test]
    fn busy_instance_is_avoided() {
        let mut reg = Registry::default();
        let a = reg.add(name("w"), 1, vec![spec("go")]);
        let b = reg.add(name("w"), 2, vec![spec("go")]);
        reg.get_mut(a).unwrap().outstanding = 5;
        for _ in 0..10 {
            assert_eq!(reg.choose(&name("w"), &method("go"), 0), Ok(b));
        }
    }

    #[test]
    fn errors_are_typed() {
        let mut reg = Registry::default();
        let a = reg.add(name("w"), 1, vec![spec("go")]);
        let err = |r: Result<InstanceId, (ErrorCode, String)>| r.unwrap_err().0;
        assert_eq!(err(reg.choose(&name("x"), &method("go"), 0)), ErrorCode::NoSuchService);
        assert_eq!(err(reg.choose(&name("w"), &method("stop"), 0)), ErrorCode::NoSuchMethod);
        assert_eq!(err(reg.choose(&name("w"), &method("go"), 99)), ErrorCode::NoSuchInstance);
        assert_eq!(err(reg.choose(&name("w"), &method("stop"), a)), ErrorCode::NoSuchMethod);
        assert_eq!(reg.choose(&name("w"), &method("go"), a), Ok(a));
    }

    #[test]
    fn last_instance_removes_the_service() {
        let mut reg = Registry::default();
        let a = reg.add(name("w"), 1, vec![spec("go")]);
        assert_eq!(reg.service_count(), 1);
        assert!(reg.remove(a).is_some());
        assert_eq!(reg.service_count(), 0);
        assert!(reg.remove(a).is_none());
    }

    #[test]
    fn only_instances_with_the_method_are_chosen() {
        let mut reg = Registry::default();
        reg.add(name("w"), 1, vec![spec("a")]);
        let b = reg.add(name("w"), 2, vec![spec("a"), spec("b")]);
        for _ in 0..5 {
            assert_eq!(reg.choose(&name("w"), &method("b"), 0), Ok(b));
        }
    }

    #[test]
    fn a_stand_in_for_other_hosts_takes_calls_only_when_no_instance_here_can() {
        let mut reg = Registry::default();
        let fleet = reg.add_instance(name("w"), 1, vec![spec("a"), spec("b")], true);
        assert_eq!(reg.choose(&name("w"), &method("a"), 0), Ok(fleet), "alone, it takes calls");
        let here = reg.add(name("w"), 2, vec![spec("a")]);
        reg.get_mut(here).unwrap().outstanding = 50;
        for _ in 0..5 {
            assert_eq!(reg.choose(&name("w"), &method("a"), 0), Ok(here), "busy, but here");
            assert_eq!(reg.choose(&name("w"), &method("b"), 0), Ok(fleet), "only the fleet has b");
        }
        assert_eq!(reg.choose(&name("w"), &method("a"), fleet), Ok(fleet), "asked for by id");
        assert_eq!(reg.choose_any(&name("w"), 0), Ok(here), "a direct channel goes here");
        reg.remove(here);
        assert_eq!(reg.choose_any(&name("w"), 0).unwrap_err().0, ErrorCode::NoSuchService);
    }
}
