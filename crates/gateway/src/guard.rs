//! Who may talk to the gateway at all: the `Host` a request names must be
//! the gateway's own (a loopback name or its address, with its port), so a
//! page on another site cannot reach the loopback port through a DNS name it
//! controls (DNS rebinding); and a state-changing request that carries an
//! `Origin` must come from that same origin, scheme included (no
//! cross-site requests). Pure.

use std::net::{IpAddr, SocketAddr};

/// Why a request is refused before anything else happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Host(String),
    Origin(String),
}

impl Refused {
    pub fn message(&self) -> String {
        match self {
            Self::Host(host) => {
                format!("Host {host:?} is not this gateway's (use its own address or localhost)")
            }
            Self::Origin(origin) => format!("cross-origin request from {origin:?} refused"),
        }
    }
}

/// Splits a `Host` header into its name and port: `[::1]:8080`,
/// `localhost:8080`, `localhost`.
fn split_host(host: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = host.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        return match after {
            "" => Some((name, None)),
            after => Some((name, Some(after.strip_prefix(':')?))),
        };
    }
    Some(match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    })
}

/// What the gateway is, for these checks: where it listens, whether over
/// HTTPS, and the names it answers to besides loopback and its address.
#[derive(Debug, Clone)]
pub struct Site {
    pub listen: SocketAddr,
    pub https: bool,
    pub hosts: Vec<String>,
}

impl Site {
    /// Whether `host` (the `Host` header) names this gateway. An address
    /// given as such is no rebinding risk, so a gateway on every address
    /// (`0.0.0.0`) answers to any of them.
    fn host_ok(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else { return false };
        if port.is_some_and(|port| port != self.listen.port().to_string()) {
            return false;
        }
        ["localhost", "127.0.0.1", "::1"].contains(&name)
            || name == self.listen.ip().to_string()
            || (self.listen.ip().is_unspecified() && name.parse::<IpAddr>().is_ok())
            || self.hosts.iter().any(|known| known.eq_ignore_ascii_case(name))
    }

    /// Checks a request's `Host` and, when it changes state, its `Origin`
    /// (same scheme, same host and port).
    pub fn check(
        &self,
        host: Option<&str>,
        origin: Option<&str>,
        changes_state: bool,
    ) -> Result<(), Refused> {
        let host = host.unwrap_or_default();
        if !self.host_ok(host) {
            return Err(Refused::Host(host.to_owned()));
        }
        if let (true, Some(origin)) = (changes_state, origin) {
            let scheme = if self.https { "https://" } else { "http://" };
            let same = origin.strip_prefix(scheme).is_some_and(|rest| self.host_ok(rest) && rest == host);
            if !same {
                return Err(Refused::Origin(origin.to_owned()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(listen: &str, https: bool, hosts: &[&str]) -> Site {
        let hosts = hosts.iter().map(|h| h.to_string()).collect();
        Site { listen: listen.parse().unwrap(), https, hosts }
    }

    #[test]
    fn only_the_gateways_own_host_and_origin_pass() {
        let site = site("127.0.0.1:8080", false, &[]);
        for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "localhost"] {
            assert_eq!(site.check(Some(host), None, true), Ok(()), "{host}");
        }
        for host in ["evil.example:8080", "127.0.0.1:9999", "", "evil.example", "10.0.0.5:8080"] {
            assert!(matches!(site.check(Some(host), None, false), Err(Refused::Host(_))), "{host}");
        }
        assert!(site.check(None, None, false).is_err(), "no Host at all");
        assert_eq!(site.check(Some("127.0.0.1:8080"), Some("http://127.0.0.1:8080"), true), Ok(()));
        for origin in ["http://evil.example", "https://127.0.0.1:8080", "http://localhost:8080", "null"] {
            let refused = site.check(Some("127.0.0.1:8080"), Some(origin), true);
            assert!(matches!(refused, Err(Refused::Origin(_))), "{origin}");
        }
        assert_eq!(site.check(Some("127.0.0.1:8080"), Some("http://evil.example"), false), Ok(()), "a read");
    }

    #[test]
    fn over_https_the_origin_is_https_and_configured_names_pass() {
        let site = site("0.0.0.0:8443", true, &["bus.example.com"]);
        for host in
            ["bus.example.com:8443", "BUS.example.com", "10.0.0.5:8443", "[fd00::1]:8443", "localhost"]
        {
            assert_eq!(site.check(Some(host), None, false), Ok(()), "{host}");
        }
        for host in ["evil.example:8443", "bus.example.com:8080", "bus.example.com.evil.example"] {
            assert!(matches!(site.check(Some(host), None, false), Err(Refused::Host(_))), "{host}");
        }
        let host = Some("bus.example.com:8443");
        assert_eq!(site.check(host, Some("https://bus.example.com:8443"), true), Ok(()));
        for origin in ["http://bus.example.com:8443", "https://evil.example", "https://10.0.0.5:8443"] {
            assert!(matches!(site.check(host, Some(origin), true), Err(Refused::Origin(_))), "{origin}");
        }
    }
}
