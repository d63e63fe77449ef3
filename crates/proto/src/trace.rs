//! Trace context, as W3C Trace Context defines it: the `traceparent` header
//! (`00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>`) that every
//! call, notification, publication and queue message carries, so a chain of
//! calls across services can be followed by one trace id.
//!
//! Pure: parsing, formatting and deriving a child; the ids are given by the
//! caller (the clients draw them from their own random source).

use std::fmt;

/// The header key, as W3C names it.
pub const TRACEPARENT: &str = "traceparent";

/// One `traceparent` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The whole trace's id; never all zeros.
    pub trace_id: [u8; 16],
    /// The id of the span that sent this (the caller's call); never all zeros.
    pub parent_id: [u8; 8],
    /// `01`: sampled.
    pub flags: u8,
}

impl TraceParent {
    /// A new trace (a call made outside any traced request), sampled.
    /// All-zero ids are invalid in W3C's format, so a zero is made one.
    pub fn root(trace_id: u128, span_id: u64) -> Self {
        Self { trace_id: trace_id.max(1).to_be_bytes(), parent_id: span_id.max(1).to_be_bytes(), flags: 1 }
    }

    /// The context of a call made while serving `self`: the same trace, a
    /// new span.
    pub fn child(&self, span_id: u64) -> Self {
        Self { parent_id: span_id.max(1).to_be_bytes(), ..*self }
    }

    /// Parses a `traceparent` value; `None` if it is not a valid version-00
    /// value (W3C says to start a new trace then).
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 55 || &bytes[..3] != b"00-" || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        let mut flags = [0u8; 1];
        hex_into(&bytes[3..35], &mut trace_id)?;
        hex_into(&bytes[36..52], &mut parent_id)?;
        hex_into(&bytes[53..55], &mut flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, parent_id, flags: flags[0] })
    }

    /// The trace id as 32 lowercase hex digits (what logs show).
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

impl TraceParent {
    /// The header value, without allocating (it is made for every call).
    pub fn encode(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_to(&self.trace_id, &mut out[3..35]);
        hex_to(&self.parent_id, &mut out[36..52]);
        hex_to(&[self.flags], &mut out[53..55]);
        out
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.encode()).map_err(|_| fmt::Error)?)
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_to(bytes, &mut out);
    out.into_iter().map(char::from).collect()
}

fn hex_to(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// Lowercase hex only, as W3C requires.
fn hex_into(text: &[u8], out: &mut [u8]) -> Option<()> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const W3C_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_parses_and_formats_back() {
        let parsed = TraceParent::parse(W3C_EXAMPLE).unwrap();
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.flags, 1);
        assert_eq!(parsed.to_string(), W3C_EXAMPLE);
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let parent = TraceParent::parse(W3C_EXAMPLE).unwrap();
        let child = parent.child(0x1234);
        assert_eq!((child.trace_id, child.flags), (parent.trace_id, parent.flags));
        assert_eq!(child.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000001234-01");
        let root = TraceParent::root(0, 0);
        assert!(TraceParent::parse(&root.to_string()).is_some(), "zero ids are never produced");
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
