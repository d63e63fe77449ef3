//! Applying a reloaded config (the host re-read the file and validated it):
//! added services start, removed ones stop and are forgotten, changed ones
//! restart with their new settings, the rest are not touched.

use std::collections::BTreeSet;

use super::config::{StartType, SupervisorConfig};
use super::instance::{Instance, Intent};
use super::runtime::Runtime;
use bytes::Bytes;
use switchboard_proto::supervision as sup;

impl Runtime {
    /// Starts added services, stops removed ones, restarts changed ones,
    /// leaves the rest alone; returns the report.
    pub(super) fn reload(&mut self, config: SupervisorConfig) -> Bytes {
        self.logs = config.logs.clone();
        let mut report = sup::ReloadReport::default();
        let mut seen = BTreeSet::new();
        for spec in config.services {
            let name = spec.name.to_string();
            seen.insert(name.clone());
            let Some(service) = self.services.get_mut(&name) else {
                self.add_service(spec);
                report.added.push(name);
                continue;
            };
            if service.spec == spec && !service.removed {
                report.unchanged.push(name);
                continue;
            }
            let wanted = service.instances.iter().any(|i| i.desired) || spec.start == StartType::Auto;
            service.removed = false;
            service.replacement = Some((spec, wanted));
            let count = service.instances.len();
            for instance in &mut service.instances {
                instance.desired = false;
            }
            for index in 0..count {
                let live = self.instance_mut(&name, index).is_some_and(|i| i.state().has_process());
                if live {
                    self.begin_stop(&name, index, Intent::Stop);
                }
            }
            report.changed.push(name);
        }
        for (name, service) in &mut self.services {
            if !seen.contains(name) && !service.removed {
                service.removed = true;
                for instance in &mut service.instances {
                    instance.desired = false;
                }
                report.removed.push(name.clone());
            }
        }
        tracing::info!(added = ?report.added, removed = ?report.removed, changed = ?report.changed, "config reloaded");
        Bytes::from(switchboard_proto::sys::encode(&report))
    }

    /// Applies changed specs once the old instances stopped; forgets
    /// removed services once stopped.
    pub(super) fn finish_replacements(&mut self) {
        let mut forget = Vec::new();
        for (name, service) in &mut self.services {
            if service.instances.iter().any(|i| i.state().has_process()) {
                continue;
            }
            if let Some((spec, wanted)) = service.replacement.take() {
                service.instances =
                    (1..=spec.instances).map(|i| Instance { desired: wanted, ..Instance::new(i) }).collect();
                service.spec = spec;
            } else if service.removed {
                forget.push(name.clone());
            }
        }
        for name in forget {
            if let Some(service) = self.services.remove(&name) {
                self.router.set_hold(&service.spec.name, None);
                self.publish_state(&name, Bytes::new());
            }
        }
    }
}
