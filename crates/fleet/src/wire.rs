//! What a call looks like on NATS: the method, the caller's principal, the
//! time left and the caller's headers travel as NATS headers beside the
//! payload; an answer is the reply's payload, or an error kind and message
//! in its headers. Pure.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use switchboard_proto::{ErrorCode, Headers};

pub const METHOD: &str = "Sb-Method";
pub const PRINCIPAL: &str = "Sb-Principal";
pub const TIMEOUT_MS: &str = "Sb-Timeout-Ms";
/// A caller's header `KEY` travels as `Sb-H-KEY`.
pub const HEADER_PREFIX: &str = "Sb-H-";
pub const ERROR: &str = "Sb-Error";
pub const MESSAGE: &str = "Sb-Message";
pub const HOST: &str = "Sb-Host";
pub const RETAIN: &str = "Sb-Retain";

/// The caller's headers as NATS headers (`Sb-H-KEY`).
pub fn user_headers_map(headers: &Headers) -> HeaderMap {
    with_headers(HeaderMap::new(), headers)
}

fn with_headers(mut map: HeaderMap, headers: &Headers) -> HeaderMap {
    for (key, value) in headers.iter() {
        map.insert(format!("{HEADER_PREFIX}{key}").as_str(), value);
    }
    map
}

/// The caller's headers among a message's.
pub fn user_headers(map: Option<&HeaderMap>) -> Vec<(String, String)> {
    let Some(map) = map else { return Vec::new() };
    map.iter()
        .filter_map(|(name, values)| {
            let key = name.to_string().strip_prefix(HEADER_PREFIX)?.to_owned();
            Some((key, values.first()?.as_str().to_owned()))
        })
        .collect()
}

/// A call as it leaves for the fleet.
pub fn request(method: &str, principal: &str, timeout: Duration, headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(METHOD, method);
    map.insert(PRINCIPAL, principal);
    map.insert(TIMEOUT_MS, timeout.as_millis().to_string().as_str());
    with_headers(map, headers)
}

/// A call as it arrives from the fleet.
#[derive(Debug, PartialEq, Eq)]
pub struct Incoming {
    pub method: String,
    pub principal: String,
    pub timeout: Duration,
    pub headers: Vec<(String, String)>,
}

/// Reads an arriving call's headers; `Err` says what is missing.
pub fn incoming(map: Option<&HeaderMap>) -> Result<Incoming, String> {
    let map = map.ok_or("a fleet call without headers")?;
    let get = |name: &str| map.get(name).map(|value| value.as_str().to_owned());
    let method = get(METHOD).ok_or("a fleet call without Sb-Method")?;
    let principal = get(PRINCIPAL).ok_or("a fleet call without Sb-Principal")?;
    let timeout = get(TIMEOUT_MS)
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(Duration::from_millis)
        .ok_or("a fleet call without a valid Sb-Timeout-Ms")?;
    Ok(Incoming { method, principal, timeout, headers: user_headers(Some(map)) })
}

/// A publication as it leaves for the fleet.
pub fn publication(principal: &str, retain: bool, headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(PRINCIPAL, principal);
    if retain {
        map.insert(RETAIN, "1");
    }
    with_headers(map, headers)
}

/// A publication as it arrives from the fleet.
#[derive(Debug, PartialEq, Eq)]
pub struct Published {
    pub principal: String,
    pub retain: bool,
    pub headers: Vec<(String, String)>,
}

pub fn arrived_publication(map: Option<&HeaderMap>) -> Result<Published, String> {
    let map = map.ok_or("a fleet publication without headers")?;
    let principal = map.get(PRINCIPAL).ok_or("a fleet publication without Sb-Principal")?.as_str().to_owned();
    let retain = map.get(RETAIN).is_some();
    Ok(Published { principal, retain, headers: user_headers(Some(map)) })
}

/// A failure as its reply's headers.
pub fn failure(host: &str, code: ErrorCode, message: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(HOST, host);
    map.insert(ERROR, code.name());
    map.insert(MESSAGE, message);
    map
}

pub fn success(host: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(HOST, host);
    map
}

/// A reply's outcome: its payload, or the failure its headers carry.
pub fn outcome(map: Option<&HeaderMap>, payload: Bytes) -> Result<Bytes, (ErrorCode, String)> {
    let Some(error) = map.and_then(|map| map.get(ERROR)) else { return Ok(payload) };
    let message = map.and_then(|map| map.get(MESSAGE)).map(|m| m.as_str().to_owned()).unwrap_or_default();
    let code = ErrorCode::from_name(error.as_str()).unwrap_or(ErrorCode::Rejected);
    Err((code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_and_its_failure_survive_the_trip() {
        let headers = Headers::from_pairs([("request-id", "42")]).unwrap();
        let map = request("charge", "user:alice", Duration::from_millis(250), &headers);
        let arrived = incoming(Some(&map)).unwrap();
        assert_eq!(arrived.method, "charge");
        assert_eq!(arrived.principal, "user:alice");
        assert_eq!(arrived.timeout, Duration::from_millis(250));
        assert_eq!(arrived.headers, [("request-id".to_owned(), "42".to_owned())]);
        assert!(incoming(None).is_err());
        assert!(incoming(Some(&HeaderMap::new())).unwrap_err().contains("Sb-Method"));

        let denied = failure("c", ErrorCode::PermissionDenied, "user:alice@a may not call x.y");
        let got = outcome(Some(&denied), Bytes::new()).unwrap_err();
        assert_eq!(got, (ErrorCode::PermissionDenied, "user:alice@a may not call x.y".to_owned()));
        assert_eq!(outcome(Some(&success("c")), Bytes::from_static(b"ok")).unwrap(), "ok");

        let published = publication("user:bob", true, &headers);
        let arrived = arrived_publication(Some(&published)).unwrap();
        assert_eq!((arrived.principal.as_str(), arrived.retain), ("user:bob", true));
        assert_eq!(arrived.headers, [("request-id".to_owned(), "42".to_owned())]);
        assert!(!arrived_publication(Some(&publication("user:bob", false, &Headers::new()))).unwrap().retain);
    }
}
