//! Hop records: what each handler along a traced call saw — the deadline it
//! was given, how long it took, how it answered. A caller asks for them with
//! the [`HOPS_REQUEST`] header; every handler that serves such a request
//! (and passes the header on to the calls it makes) sends a
//! [`crate::Frame::Hops`] with one [`HOP`] header per hop just before its
//! answer: its own record first, then those of its callees one level deeper.
//!
//! Pure: the record and its header form; the clients do the collecting.

use serde::{Deserialize, Serialize};

use crate::headers::{HeaderError, Headers, MAX_HEADERS};

/// Request header: "report your hop, and ask the calls you make to".
pub const HOPS_REQUEST: &str = "sb-hops";
/// Header key of one hop record in a `Hops` frame.
pub const HOP: &str = "sb-hop";

/// What one handler along a call saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// 0: the service the caller called; 1: a service that one called; …
    pub depth: u32,
    pub service: String,
    pub method: String,
    pub instance: u64,
    /// Time left before the caller's deadline when the request arrived, in
    /// milliseconds (0 for a notification, which has none).
    pub deadline_ms: u32,
    /// How long the handler took to answer, in microseconds.
    pub took_us: u64,
    /// `ok`, or the kind of the error it answered (`timeout`, `rejected`…).
    pub outcome: String,
}

impl Hop {
    /// The header value: `DEPTH SERVICE.METHOD INSTANCE DEADLINE_MS TOOK_US OUTCOME`.
    pub fn encode(&self) -> String {
        let Self { depth, service, method, instance, deadline_ms, took_us, outcome } = self;
        format!("{depth} {service}.{method} {instance} {deadline_ms} {took_us} {outcome}")
    }

    /// Parses a header value; `None` if it is not one [`Hop::encode`] writes.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let depth = parts.next()?.parse().ok()?;
        let (service, method) = parts.next()?.rsplit_once('.')?;
        let hop = Self {
            depth,
            service: service.to_owned(),
            method: method.to_owned(),
            instance: parts.next()?.parse().ok()?,
            deadline_ms: parts.next()?.parse().ok()?,
            took_us: parts.next()?.parse().ok()?,
            outcome: parts.next()?.to_owned(),
        };
        parts.next().is_none().then_some(hop)
    }

    /// The same record seen one level further from the caller.
    pub fn deeper(mut self) -> Self {
        self.depth += 1;
        self
    }
}

/// The `Hops` headers for a handler's own record followed by its callees'
/// (already one level deeper), keeping the first [`MAX_HEADERS`].
pub fn to_headers(hops: impl IntoIterator<Item = Hop>) -> Result<Headers, HeaderError> {
    let values: Vec<String> = hops.into_iter().take(MAX_HEADERS).map(|hop| hop.encode()).collect();
    Headers::from_pairs(values.iter().map(|value| (HOP, value)))
}

/// The hop records of a `Hops` frame's headers (other headers, and values
/// that are not records, are skipped).
pub fn from_headers(headers: &Headers) -> Vec<Hop> {
    headers.iter().filter(|(key, _)| *key == HOP).filter_map(|(_, value)| Hop::parse(value)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(depth: u32, service: &str) -> Hop {
        Hop {
            depth,
            service: service.into(),
            method: "run".into(),
            instance: 7,
            deadline_ms: 298,
            took_us: 1500,
            outcome: "timeout".into(),
        }
    }

    #[test]
    fn a_record_round_trips_through_its_header_form_and_services_may_have_dots() {
        let record = hop(2, "billing.admin");
        assert_eq!(record.encode(), "2 billing.admin.run 7 298 1500 timeout");
        assert_eq!(Hop::parse(&record.encode()), Some(record));
        for bad in ["", "1 nodot 7 1 1 ok", "x a.b 1 1 1 ok", "1 a.b 1 1 1 ok extra", "1 a.b 1 1 1"] {
            assert_eq!(Hop::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn headers_keep_the_order_and_at_most_the_header_limit() {
        let headers = to_headers([hop(0, "a"), hop(1, "b").deeper()]).unwrap();
        let back = from_headers(&headers);
        assert_eq!(
            back.iter().map(|h| (h.depth, h.service.as_str())).collect::<Vec<_>>(),
            [(0, "a"), (2, "b")]
        );
        let many = to_headers((0..100).map(|n| hop(n, "a"))).unwrap();
        assert_eq!(from_headers(&many).len(), MAX_HEADERS);
    }
}
