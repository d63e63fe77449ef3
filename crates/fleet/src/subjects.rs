//! The NATS subjects the fleet speaks on, in one place. Every subject a
//! host publishes carries its own name in a fixed position, so NATS
//! permissions can confine each host to its own (`sb.*.HOST.>`), and a
//! receiver takes the sender's name from the subject, never from the
//! message. Pure.
//!
//! Every subject is `sb.KIND.FROM.…`, so one permission, publish
//! `sb.*.HOST` and `sb.*.HOST.>`, confines a host to its own:
//!
//! - `sb.hb.FROM` — a host's heartbeat: what it serves.
//! - `sb.call.FROM.SERVICE` — a call for any host serving SERVICE (one
//!   queue group per service, so the hosts share the load).
//! - `sb.to.FROM.TARGET.SERVICE` — a call for host TARGET only.
//! - `sb.bc.FROM.SERVICE` — a broadcast to every instance on every host.
//! - `sb.pub.FROM.TOPIC` — a publication on an exported topic.

/// Why a host name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fleet host name {0:?} must be 1-64 letters, digits, '-' or '_' (one NATS subject token)")]
pub struct BadHostName(pub String);

/// Checks a host name: one subject token, nothing NATS reads as a wildcard.
pub fn host_name(name: &str) -> Result<&str, BadHostName> {
    let fits = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fits {
        Ok(name)
    } else {
        Err(BadHostName(name.to_owned()))
    }
}

pub fn heartbeat(host: &str) -> String {
    format!("sb.hb.{host}")
}

pub const HEARTBEATS: &str = "sb.hb.*";

/// The host that published `subject` (its third token), if it names one.
pub fn sender(subject: &str) -> Option<&str> {
    let mut tokens = subject.splitn(4, '.');
    let (Some("sb"), Some(_kind), Some(host)) = (tokens.next(), tokens.next(), tokens.next()) else {
        return None;
    };
    host_name(host).ok()
}

/// A call from `from` for any host serving `service`.
pub fn call(from: &str, service: &str) -> String {
    format!("sb.call.{from}.{service}")
}

/// A call from `from` for host `target` only.
pub fn call_to(from: &str, target: &str, service: &str) -> String {
    format!("sb.to.{from}.{target}.{service}")
}

/// A broadcast from `from` to every instance of `service` on every host.
pub fn broadcast(from: &str, service: &str) -> String {
    format!("sb.bc.{from}.{service}")
}

pub fn is_broadcast(subject: &str) -> bool {
    subject.starts_with("sb.bc.")
}

/// What a host serving `service` subscribes to: calls for any host (in
/// the service's queue group), calls for it alone, and broadcasts.
pub fn calls_for(me: &str, service: &str) -> [(String, Option<String>); 3] {
    [
        (format!("sb.call.*.{service}"), Some(format!("sb.serve.{service}"))),
        (format!("sb.to.*.{me}.{service}"), None),
        (format!("sb.bc.*.{service}"), None),
    ]
}

/// A publication from `from` on `topic`.
pub fn publication(from: &str, topic: &str) -> String {
    format!("sb.pub.{from}.{topic}")
}

/// What a host importing `pattern` subscribes to (every host's).
pub fn publications(pattern: &str) -> String {
    format!("sb.pub.*.{pattern}")
}

/// The topic of a publication subject (live or retained).
pub fn published_topic(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("sb.pub.").or_else(|| subject.strip_prefix("sb.ret."))?;
    rest.split_once('.').map(|(_, topic)| topic)
}

/// The JetStream stream that keeps every host's retained values, the last
/// one per subject, for hosts that join later.
pub const RETAINED_STREAM: &str = "SB_RETAINED";
/// What that stream captures.
pub const RETAINED_SUBJECTS: &str = "sb.ret.>";

/// Where host `from` keeps `topic`'s retained value.
pub fn retained(from: &str, topic: &str) -> String {
    format!("sb.ret.{from}.{topic}")
}

/// Every host's retained values on `pattern`.
pub fn retained_values(pattern: &str) -> String {
    format!("sb.ret.*.{pattern}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_is_read_from_the_subject_and_names_are_single_tokens() {
        assert_eq!(sender(&call("web-1", "billing.v2")), Some("web-1"));
        assert_eq!(sender(&call_to("web-1", "db_2", "billing")), Some("web-1"));
        assert_eq!(sender(&heartbeat("db_2")), Some("db_2"));
        assert_eq!(sender("sb.call"), None);
        assert_eq!(sender("sb.hb.*"), None);
        assert_eq!(sender("other.hb.a"), None);
        for bad in ["", "a.b", "*", ">", "a b", &"x".repeat(65)] {
            assert!(host_name(bad).is_err(), "{bad:?}");
        }
        let published = publication("web-1", "db.config");
        assert_eq!((sender(&published), published_topic(&published)), (Some("web-1"), Some("db.config")));
        assert_eq!(publications("db.>"), "sb.pub.*.db.>");
        assert!(
            is_broadcast(&broadcast("web-1", "billing")) && sender(&broadcast("web-1", "x")) == Some("web-1")
        );
        let [(any, group), (mine, none), _] = calls_for("db_2", "billing");
        assert_eq!((any.as_str(), group.as_deref()), ("sb.call.*.billing", Some("sb.serve.billing")));
        assert_eq!((mine.as_str(), none), ("sb.to.*.db_2.billing", None));
    }
}
