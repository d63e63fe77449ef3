//! Gathering a fleet broadcast's answers: one answer per host expected (the
//! live hosts that announced the method), each with an entry per instance;
//! a host that falls silent mid-broadcast is reported at once rather than
//! waited for, and one still silent at the deadline is reported then. Pure.

use std::collections::BTreeMap;

use switchboard_proto::fleet::{FleetReplies, HostReply, MissingHost};

#[derive(Debug)]
pub struct Gather {
    /// Hosts still to answer, with the instances each announced.
    expected: BTreeMap<String, u32>,
    done: FleetReplies,
}

impl Gather {
    pub fn new(expected: BTreeMap<String, u32>) -> Self {
        Self { expected, done: FleetReplies::default() }
    }

    /// A host's answer (ignored from a host not expected, or twice).
    pub fn answered(&mut self, host: &str, replies: Vec<HostReply>) {
        if self.expected.remove(host).is_some() {
            self.done.replies.extend(replies);
        }
    }

    /// The hosts still expected that are no longer alive (`alive` says).
    pub fn drop_gone(&mut self, alive: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self.expected.keys().filter(|host| !alive(host)).cloned().collect();
        for host in gone {
            if let Some(instances) = self.expected.remove(&host) {
                let why = "the host fell silent during the broadcast".to_owned();
                self.done.missing.push(MissingHost { host, instances, why });
            }
        }
    }

    pub fn complete(&self) -> bool {
        self.expected.is_empty()
    }

    /// Everything gathered; hosts still expected are reported missing.
    pub fn finish(mut self) -> FleetReplies {
        for (host, instances) in std::mem::take(&mut self.expected) {
            let why = "no answer before the deadline".to_owned();
            self.done.missing.push(MissingHost { host, instances, why });
        }
        self.done.replies.sort_by(|a, b| (&a.host, a.instance).cmp(&(&b.host, b.instance)));
        self.done
    }
}

#[cfg(test)]
mod tests {
    use switchboard_proto::fleet::{Answer, Payload};

    use super::*;

    fn reply(host: &str, instance: u64) -> HostReply {
        HostReply { host: host.into(), instance, answer: Answer::Reply(Payload(vec![0xc0])) }
    }

    #[test]
    fn every_expected_host_answers_falls_silent_or_misses_the_deadline() {
        let expected = [("b".to_owned(), 2), ("c".to_owned(), 1), ("d".to_owned(), 4)].into();
        let mut gather = Gather::new(expected);
        gather.answered("c", vec![reply("c", 7)]);
        gather.answered("c", vec![reply("c", 8)]);
        gather.answered("x", vec![reply("x", 1)]);
        assert!(!gather.complete());
        gather.drop_gone(|host| host != "d");
        assert!(!gather.complete());
        let done = gather.finish();
        assert_eq!(done.replies, [reply("c", 7)]);
        let missing: Vec<(&str, u32)> = done.missing.iter().map(|m| (m.host.as_str(), m.instances)).collect();
        assert_eq!(missing, [("d", 4), ("b", 2)]);
        assert!(done.missing[0].why.contains("silent") && done.missing[1].why.contains("deadline"));
    }
}
