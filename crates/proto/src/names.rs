//! Validated names: a [`ServiceName`] or [`MethodName`] can only hold a valid
//! value, so code past the edge never re-checks them.
//!
//! Names are ASCII and share the frame's buffer (`Bytes`), so decoding a call
//! copies no name and allocates nothing.

use std::fmt;

use bytes::Bytes;

/// Longest service name, in bytes.
pub const MAX_SERVICE_NAME: usize = 128;
/// Longest method name, in bytes.
pub const MAX_METHOD_NAME: usize = 64;

/// Why a name was refused. The message names the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name {name:?} is longer than {max} bytes")]
    TooLong { name: String, max: usize },
    #[error("invalid service name {name:?}: {why}")]
    InvalidService { name: String, why: &'static str },
    #[error("invalid method name {name:?}: {why}")]
    InvalidMethod { name: String, why: &'static str },
    #[error("invalid target {0:?}: expected SERVICE.METHOD, e.g. billing.charge")]
    InvalidTarget(String),
}

/// A service name: lowercase dotted tokens such as `billing` or
/// `inventory.eu`. Each token starts with a letter and holds `a-z`, `0-9`,
/// `_` or `-`. The first token may start with `$`: such names are reserved
/// for the daemon's own services (`$sys.registry`).
#[derive(Clone)]
pub struct ServiceName(Bytes);

/// A queue name: lowercase dotted tokens like a service name (`jobs`,
/// `mail.outbound`), without the daemon's `$` prefix. `<name>.dlq` is the
/// dead-letter queue of `<name>`.
#[derive(Clone)]
pub struct QueueName(Bytes);

/// A method name such as `charge` or `get_state`: starts with a letter or
/// `_`, then letters, digits or `_`.
#[derive(Clone)]
pub struct MethodName(Bytes);

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn check_service(bytes: &[u8]) -> Result<(), NameError> {
    let bad = |why| NameError::InvalidService { name: lossy(bytes), why };
    if bytes.is_empty() {
        return Err(NameError::Empty);
    }
    if bytes.len() > MAX_SERVICE_NAME {
        return Err(NameError::TooLong { name: lossy(bytes), max: MAX_SERVICE_NAME });
    }
    for (index, token) in bytes.split(|b| *b == b'.').enumerate() {
        let token = match token {
            [b'$', rest @ ..] if index == 0 => rest,
            [b'$', ..] => return Err(bad("`$` may only start the first token")),
            other => other,
        };
        match token.first() {
            None => return Err(bad("empty token (two dots, or a dot at either end)")),
            Some(b'a'..=b'z') => {}
            Some(_) => return Err(bad("each token must start with a lowercase letter")),
        }
        if !token.iter().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-')) {
            return Err(bad("only lowercase letters, digits, `_`, `-` and `.` are allowed"));
        }
    }
    Ok(())
}

fn check_queue(bytes: &[u8]) -> Result<(), NameError> {
    if bytes.first() == Some(&b'$') {
        return Err(NameError::InvalidService {
            name: lossy(bytes),
            why: "queue names cannot start with `$`",
        });
    }
    check_service(bytes)
}

fn check_method(bytes: &[u8]) -> Result<(), NameError> {
    let bad = |why| NameError::InvalidMethod { name: lossy(bytes), why };
    match bytes.first() {
        None => return Err(NameError::Empty),
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' => {}
        Some(_) => return Err(bad("must start with a letter or `_`")),
    }
    if bytes.len() > MAX_METHOD_NAME {
        return Err(NameError::TooLong { name: lossy(bytes), max: MAX_METHOD_NAME });
    }
    if !bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_') {
        return Err(bad("only letters, digits and `_` are allowed"));
    }
    Ok(())
}

crate::validated::validated_name!(ServiceName, NameError, check_service);
crate::validated::validated_name!(MethodName, NameError, check_method);
crate::validated::validated_name!(QueueName, NameError, check_queue);

impl QueueName {
    /// The dead-letter queue of this queue.
    pub fn dead_letter(&self) -> QueueName {
        QueueName(Bytes::from(format!("{}.dlq", self.as_str())))
    }

    /// Whether this is a dead-letter queue (`….dlq`).
    pub fn is_dead_letter(&self) -> bool {
        self.as_str().ends_with(".dlq")
    }
}

impl ServiceName {
    /// Whether the name is reserved for the daemon (starts with `$`).
    pub fn is_reserved(&self) -> bool {
        self.0.first() == Some(&b'$')
    }
}

impl MethodName {
    /// Whether only the daemon may call it (starts with `__`, as
    /// `__control` does): refused to everyone else on every path, direct
    /// channels included, and never matched by a wildcard in a policy.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(b"__")
    }
}

/// A call target, `SERVICE.METHOD`: the method is the last dotted token, the
/// service everything before it (`inventory.eu.reserve` is method `reserve`
/// of service `inventory.eu`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub service: ServiceName,
    pub method: MethodName,
}

impl Target {
    /// Parses `SERVICE.METHOD`.
    pub fn parse(target: &str) -> Result<Self, NameError> {
        let (service, method) =
            target.rsplit_once('.').ok_or_else(|| NameError::InvalidTarget(target.to_owned()))?;
        Ok(Self { service: ServiceName::parse(service)?, method: MethodName::parse(method)? })
    }
}

impl std::str::FromStr for Target {
    type Err = NameError;
    fn from_str(target: &str) -> Result<Self, NameError> {
        Self::parse(target)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.service, self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        for ok in ["billing", "inventory.eu", "a1.b_2.c-3", "$sys.registry"] {
            assert!(ServiceName::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in ["", "Billing", "1abc", "a..b", ".a", "a.", "a b", "a.$b", "é", "a/b"] {
            assert!(ServiceName::parse(bad).is_err(), "{bad:?} should be invalid");
        }
        assert!(ServiceName::parse(&"a".repeat(MAX_SERVICE_NAME + 1)).is_err());
    }

    #[test]
    fn method_names() {
        for ok in ["echo", "getState", "_x", "charge2"] {
            assert!(MethodName::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in ["", "2x", "a.b", "a-b", "ü"] {
            assert!(MethodName::parse(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn target_splits_at_last_dot() {
        let target = Target::parse("inventory.eu.reserve").unwrap();
        assert_eq!(target.service.as_str(), "inventory.eu");
        assert_eq!(target.method.as_str(), "reserve");
        assert!(Target::parse("nodot").is_err());
        assert_eq!(target.to_string(), "inventory.eu.reserve");
    }

    #[test]
    fn errors_name_the_input() {
        let err = ServiceName::parse("Bad.Name").unwrap_err().to_string();
        assert!(err.contains("Bad.Name"), "{err}");
    }
}
