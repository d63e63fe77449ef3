//! Endpoints (`unix:PATH`, `tcp://HOST:PORT`) and the default socket path.

use std::fmt;
use std::path::PathBuf;

/// Where a daemon listens or a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix domain socket at this path.
    Unix(PathBuf),
    /// A TCP address, `HOST:PORT`.
    Tcp(String),
    /// A TCP address carrying TLS, `HOST:PORT` (see [`crate::tls`]).
    Tls(String),
}

/// Why an endpoint string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid endpoint {0:?}: expected unix:PATH, tcp://HOST:PORT, tls://HOST:PORT or an absolute socket path")]
    Invalid(String),
    #[error("invalid endpoint {0:?}: a TCP endpoint needs HOST:PORT with a numeric port")]
    BadTcp(String),
}

impl Endpoint {
    /// Parses `unix:PATH`, `tcp://HOST:PORT`, or a bare path containing `/`.
    pub fn parse(text: &str) -> Result<Self, EndpointError> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(EndpointError::Invalid(text.to_owned()));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        for (scheme, tls) in [("tcp://", false), ("tls://", true)] {
            if let Some(addr) = text.strip_prefix(scheme) {
                let (host, port) =
                    addr.rsplit_once(':').ok_or_else(|| EndpointError::BadTcp(text.to_owned()))?;
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(EndpointError::BadTcp(text.to_owned()));
                }
                return Ok(if tls { Self::Tls(addr.to_owned()) } else { Self::Tcp(addr.to_owned()) });
            }
        }
        if text.contains('/') {
            return Ok(Self::Unix(PathBuf::from(text)));
        }
        Err(EndpointError::Invalid(text.to_owned()))
    }
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(text: &str) -> Result<Self, EndpointError> {
        Self::parse(text)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(addr) => write!(f, "tcp://{addr}"),
            Self::Tls(addr) => write!(f, "tls://{addr}"),
        }
    }
}

/// The default socket: `$XDG_RUNTIME_DIR/switchboard/bus.sock`, else
/// `/tmp/switchboard-<uid>/bus.sock`.
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("switchboard").join("bus.sock"),
        None => {
            let uid = rustix::process::getuid().as_raw();
            PathBuf::from(format!("/tmp/switchboard-{uid}")).join("bus.sock")
        }
    }
}

/// The endpoint clients use when told nothing: `$SWITCHBOARD_ADDR` if set,
/// else the default socket.
pub fn default_endpoint() -> Result<Endpoint, EndpointError> {
    match std::env::var("SWITCHBOARD_ADDR") {
        Ok(addr) if !addr.is_empty() => Endpoint::parse(&addr),
        _ => Ok(Endpoint::Unix(default_socket_path())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(Endpoint::parse("unix:/run/x.sock"), Ok(Endpoint::Unix("/run/x.sock".into())));
        assert_eq!(Endpoint::parse("/run/x.sock"), Ok(Endpoint::Unix("/run/x.sock".into())));
        assert_eq!(Endpoint::parse("tcp://127.0.0.1:4222"), Ok(Endpoint::Tcp("127.0.0.1:4222".into())));
        assert!(Endpoint::parse("tcp://127.0.0.1").is_err());
        assert!(Endpoint::parse("tcp://:80").is_err());
        assert!(Endpoint::parse("bus").is_err());
        assert!(Endpoint::parse("unix:").is_err());
    }

    #[test]
    fn display_round_trips() {
        for text in ["unix:/a/b.sock", "tcp://127.0.0.1:9"] {
            assert_eq!(Endpoint::parse(text).unwrap().to_string(), text);
        }
    }
}
