//! Who a connection verifiably is, and the names a policy rule may use for it.
//!
//! A local peer is its OS user (from the kernel's peer credentials); an
//! instance the supervisor started is its service (it proved so with its
//! secret, from inside the instance's process group); a remote peer is its
//! TLS certificate's common name or a configured bearer token.

use switchboard_proto::PrincipalName;

use super::users;

/// A verified identity.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: PrincipalName,
    /// Every subject a rule may name that this principal matches.
    subjects: Vec<String>,
    /// The daemon's own OS user on a local socket: allowed everything
    /// unless the policy denies it.
    pub daemon_user: bool,
}

impl Principal {
    /// A local peer: `user:NAME` (or `uid:N` without a name), also matching
    /// `uid:N`, `group:G` for each of its groups and `gid:N`.
    pub fn local(uid: u32, gid: u32, daemon_uid: u32) -> Self {
        let user = users::user_name(uid);
        let mut subjects = vec![format!("uid:{uid}"), format!("gid:{gid}")];
        subjects.extend(users::group_names(user.as_deref(), gid).into_iter().map(|g| format!("group:{g}")));
        let name = match &user {
            Some(user) => format!("user:{user}"),
            None => format!("uid:{uid}"),
        };
        subjects.push(name.clone());
        Self { name: PrincipalName::new(&name), subjects, daemon_user: uid == daemon_uid }
    }

    /// A supervised instance: `service:NAME#N`, also matching `service:NAME`
    /// and everything its OS identity matches.
    pub fn service(service: &str, instance: u32, os: Principal) -> Self {
        let name = format!("service:{service}#{instance}");
        let mut subjects = os.subjects;
        subjects.extend([format!("service:{service}"), name.clone()]);
        Self { name: PrincipalName::new(&name), subjects, daemon_user: os.daemon_user }
    }

    /// A remote peer by its certificate's common name.
    pub fn certificate(common_name: &str) -> Self {
        Self::named(format!("cert:{common_name}"))
    }

    /// A remote peer by the name of the token it presented.
    pub fn token(name: &str) -> Self {
        Self::named(format!("token:{name}"))
    }

    /// A peer with no identity at all (plain TCP without a token).
    pub fn anonymous() -> Self {
        Self::named("anonymous".into())
    }

    /// The daemon's own connections (the supervisor).
    pub fn daemon() -> Self {
        Self { name: PrincipalName::new("daemon"), subjects: vec!["daemon".into()], daemon_user: true }
    }

    /// Whether this is the daemon itself (its hosted apps' own sessions),
    /// the one principal that may serve `$sys.*` and call `__` methods.
    pub fn is_daemon(&self) -> bool {
        self.name.as_str() == "daemon"
    }

    /// The fleet bridge's stand-in for instances on other hosts (a hosted
    /// app of the daemon's own): what it serves is chosen only when no
    /// instance on this host can take the call.
    pub fn fleet() -> Self {
        Self { name: PrincipalName::new("fleet"), subjects: vec!["fleet".into()], daemon_user: true }
    }

    pub fn is_fleet(&self) -> bool {
        self.name.as_str() == "fleet"
    }

    /// A principal of another host of the fleet, as that host vouched for
    /// it: `user:alice@web-1`, also matching `host:web-1`.
    pub fn remote(name: &str, host: &str) -> Self {
        let full = format!("{name}@{host}");
        Self {
            name: PrincipalName::new(&full),
            subjects: vec![full, format!("host:{host}")],
            daemon_user: false,
        }
    }

    fn named(name: String) -> Self {
        Self { name: PrincipalName::new(&name), subjects: vec![name], daemon_user: false }
    }

    /// Whether a rule's subject names this principal (`*` names everyone).
    pub fn matches(&self, subject: &str) -> bool {
        subject == "*" || self.subjects.iter().any(|s| s == subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_root_peer_is_user_root_in_group_root() {
        let root = Principal::local(0, 0, 0);
        assert_eq!(root.name.as_str(), "user:root");
        for subject in ["user:root", "uid:0", "group:root", "gid:0", "*"] {
            assert!(root.matches(subject), "{subject}");
        }
        assert!(!root.matches("user:nobody"));
        assert!(root.daemon_user);
        assert!(!Principal::local(0, 0, 1000).daemon_user);
    }

    #[test]
    fn a_service_matches_its_name_its_instance_and_its_os_user() {
        let service = Principal::service("billing", 2, Principal::local(0, 0, 0));
        assert_eq!(service.name.as_str(), "service:billing#2");
        assert!(service.matches("service:billing") && service.matches("service:billing#2"));
        assert!(service.matches("user:root"));
        assert!(!service.matches("service:billing#1"));
    }

    #[test]
    fn remote_principals_match_only_their_own_name() {
        let cert = Principal::certificate("edge-1");
        assert!(cert.matches("cert:edge-1") && cert.matches("*") && !cert.daemon_user);
        assert!(!cert.matches("user:root"));
        assert_eq!(Principal::token("deploy").name.as_str(), "token:deploy");
    }
}
