//! Who may talk to the gateway at all: the `Host` a request names must be
//! the gateway's own (a loopback name or its address, with its port), so a
//! page on another site cannot reach the loopback port through a DNS name it
//! controls (DNS rebinding); and a state-changing request that carries an
//! `Origin` must come from that same origin (no cross-site requests). Pure.

use std::net::SocketAddr;

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

/// Whether `host` (the `Host` header) names the gateway listening on `listen`.
fn host_ok(host: &str, listen: SocketAddr) -> bool {
    let Some((name, port)) = split_host(host) else { return false };
    if port.is_some_and(|port| port != listen.port().to_string()) {
        return false;
    }
    ["localhost", "127.0.0.1", "::1"].contains(&name) || name == listen.ip().to_string()
}

/// Checks a request's `Host` and, when it changes state, its `Origin`.
pub fn check(
    host: Option<&str>,
    origin: Option<&str>,
    changes_state: bool,
    listen: SocketAddr,
) -> Result<(), Refused> {
    let host = host.unwrap_or_default();
    if !host_ok(host, listen) {
        return Err(Refused::Host(host.to_owned()));
    }
    if let (true, Some(origin)) = (changes_state, origin) {
        let same = origin.strip_prefix("http://").is_some_and(|rest| host_ok(rest, listen) && rest == host);
        if !same {
            return Err(Refused::Origin(origin.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_gateways_own_host_and_origin_pass() {
        let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "localhost"] {
            assert_eq!(check(Some(host), None, true, listen), Ok(()), "{host}");
        }
        for host in ["evil.example:8080", "127.0.0.1:9999", "", "evil.example"] {
            assert!(matches!(check(Some(host), None, false, listen), Err(Refused::Host(_))), "{host}");
        }
        assert!(check(None, None, false, listen).is_err(), "no Host at all");
        assert_eq!(check(Some("127.0.0.1:8080"), Some("http://127.0.0.1:8080"), true, listen), Ok(()));
        for origin in ["http://evil.example", "https://127.0.0.1:8080", "http://localhost:8080", "null"] {
            let refused = check(Some("127.0.0.1:8080"), Some(origin), true, listen);
            assert!(matches!(refused, Err(Refused::Origin(_))), "{origin}");
        }
        assert_eq!(
            check(Some("127.0.0.1:8080"), Some("http://evil.example"), false, listen),
            Ok(()),
            "a read"
        );
    }
}
