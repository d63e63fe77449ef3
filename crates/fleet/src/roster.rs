//! Who is in the fleet: the hosts heard from, what each serves, and when
//! each was last heard. A host silent for longer than the silence limit is
//! gone, and its services with it. Pure: it is told the time and returns
//! what changed; the bridge acts on that.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What a host says in its heartbeat: each service it offers the fleet,
/// with the methods its instances serve and how many instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    pub services: BTreeMap<String, Offer>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub methods: Vec<String>,
    pub instances: u32,
}

#[derive(Debug)]
struct Heard {
    last: Instant,
    first: Instant,
    announcement: Announcement,
}

/// One host as `switchboard ls --fleet` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub host: String,
    /// Milliseconds since its last heartbeat.
    pub heard_ms_ago: u64,
    /// Milliseconds since its first heartbeat of this stretch.
    pub up_ms: u64,
    pub services: BTreeMap<String, Offer>,
}

#[derive(Debug)]
pub struct Roster {
    me: String,
    silence: Duration,
    hosts: BTreeMap<String, Heard>,
}

impl Roster {
    pub fn new(me: &str, silence: Duration) -> Self {
        Self { me: me.to_owned(), silence, hosts: BTreeMap::new() }
    }

    /// A heartbeat from `host` (our own are ignored). True when it is new.
    pub fn heard(&mut self, host: &str, announcement: Announcement, now: Instant) -> bool {
        if host == self.me {
            return false;
        }
        match self.hosts.get_mut(host) {
            Some(heard) => {
                heard.last = now;
                heard.announcement = announcement;
                false
            }
            None => {
                self.hosts.insert(host.to_owned(), Heard { last: now, first: now, announcement });
                true
            }
        }
    }

    /// Drops the hosts silent for longer than the limit; their names.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let silence = self.silence;
        let gone: Vec<String> = self
            .hosts
            .iter()
            .filter(|(_, heard)| now.saturating_duration_since(heard.last) > silence)
            .map(|(host, _)| host.clone())
            .collect();
        for host in &gone {
            self.hosts.remove(host);
        }
        gone
    }

    /// Every service some other live host offers and `wanted` admits, with
    /// the union of their methods (sorted).
    pub fn offered(&self, wanted: impl Fn(&str) -> bool) -> BTreeMap<String, Vec<String>> {
        let mut offered: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for heard in self.hosts.values() {
            for (service, offer) in &heard.announcement.services {
                if wanted(service) {
                    offered.entry(service.clone()).or_default().extend(offer.methods.iter().cloned());
                }
            }
        }
        for methods in offered.values_mut() {
            methods.sort();
            methods.dedup();
        }
        offered
    }

    pub fn alive(&self, host: &str) -> bool {
        self.hosts.contains_key(host)
    }

    /// The live hosts offering `service.method`, with their instances.
    pub fn offering(&self, service: &str, method: &str) -> BTreeMap<String, u32> {
        self.hosts
            .iter()
            .filter_map(|(host, heard)| {
                let offer = heard.announcement.services.get(service)?;
                offer.methods.iter().any(|m| m == method).then(|| (host.clone(), offer.instances))
            })
            .collect()
    }

    pub fn status(&self, now: Instant) -> Vec<HostStatus> {
        self.hosts
            .iter()
            .map(|(host, heard)| HostStatus {
                host: host.clone(),
                heard_ms_ago: millis(now.saturating_duration_since(heard.last)),
                up_ms: millis(now.saturating_duration_since(heard.first)),
                services: heard.announcement.services.clone(),
            })
            .collect()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offering(services: &[(&str, &[&str])]) -> Announcement {
        let services = services
            .iter()
            .map(|(name, methods)| {
                let methods = methods.iter().map(|m| m.to_string()).collect();
                (name.to_string(), Offer { methods, instances: 1 })
            })
            .collect();
        Announcement { services }
    }

    #[test]
    fn hosts_come_offer_and_go_when_silent() {
        let start = Instant::now();
        let mut roster = Roster::new("a", Duration::from_secs(3));
        assert!(!roster.heard("a", offering(&[("self", &["x"])]), start), "our own heartbeat");
        assert!(roster.heard("b", offering(&[("billing", &["charge"])]), start));
        assert!(roster.heard(
            "c",
            offering(&[("billing", &["refund", "charge"]), ("secret", &["x"])]),
            start
        ));
        let offered = roster.offered(|s| s != "secret");
        assert_eq!(offered.len(), 1);
        assert_eq!(offered["billing"], ["charge", "refund"]);
        assert_eq!(roster.offering("billing", "refund").into_iter().collect::<Vec<_>>(), [("c".into(), 1)]);

        let later = start + Duration::from_secs(2);
        assert!(!roster.heard("b", offering(&[("billing", &["charge"])]), later));
        assert!(roster.expire(later).is_empty());
        assert_eq!(roster.expire(start + Duration::from_millis(3_500)), ["c"]);
        assert_eq!(roster.offered(|_| true)["billing"], ["charge"]);
        assert_eq!(roster.status(later)[0].host, "b");
        assert_eq!(roster.expire(later + Duration::from_secs(4)), ["b"]);
        assert!(roster.offered(|_| true).is_empty());
    }
}
