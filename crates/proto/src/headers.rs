//! Message headers: key/value pairs that travel with a call, notification or
//! publication, kept in their wire form (shared, not parsed into a map) so
//! routing them costs nothing.
//!
//! Wire form: `count:u16`, then `count` × (`key:name` `value:text`). Keys are
//! 1–64 bytes of letters, digits, `_`, `-` and `.`; values are UTF-8 up to
//! 4 KiB; at most 64 pairs.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

pub const MAX_HEADERS: usize = 64;
pub const MAX_HEADER_KEY: usize = 64;
pub const MAX_HEADER_VALUE: usize = 4096;

/// Why a header set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("more than {MAX_HEADERS} headers")]
    TooMany,
    #[error("invalid header key {0:?}: 1–64 letters, digits, `_`, `-` or `.`")]
    BadKey(String),
    #[error("value of header {0:?} is longer than {MAX_HEADER_VALUE} bytes")]
    ValueTooLong(String),
    #[error("header block is malformed: {0}")]
    Malformed(&'static str),
}

/// A validated header block. Empty by default.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Bytes);

fn key_ok(key: &[u8]) -> bool {
    !key.is_empty()
        && key.len() <= MAX_HEADER_KEY
        && key.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a header block from pairs.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, HeaderError> {
        let mut count = 0u16;
        let mut buf = BytesMut::new();
        buf.put_u16_le(0);
        for (key, value) in pairs {
            let (key, value) = (key.as_ref(), value.as_ref());
            if usize::from(count) == MAX_HEADERS {
                return Err(HeaderError::TooMany);
            }
            if !key_ok(key.as_bytes()) {
                return Err(HeaderError::BadKey(key.to_owned()));
            }
            if value.len() > MAX_HEADER_VALUE {
                return Err(HeaderError::ValueTooLong(key.to_owned()));
            }
            buf.put_u8(key.len() as u8);
            buf.put_slice(key.as_bytes());
            buf.put_u16_le(value.len() as u16);
            buf.put_slice(value.as_bytes());
            count += 1;
        }
        if count == 0 {
            return Ok(Self::new());
        }
        buf[..2].copy_from_slice(&count.to_le_bytes());
        Ok(Self(buf.freeze()))
    }

    /// Validates a block in wire form; returns it and the bytes it used.
    pub(crate) fn parse_prefix(bytes: &Bytes) -> Result<(Self, usize), HeaderError> {
        let malformed = HeaderError::Malformed;
        let count = match bytes.get(..2) {
            Some(c) => usize::from(u16::from_le_bytes([c[0], c[1]])),
            None => return Err(malformed("truncated count")),
        };
        if count > MAX_HEADERS {
            return Err(HeaderError::TooMany);
        }
        let mut at = 2;
        for _ in 0..count {
            let key_len = usize::from(*bytes.get(at).ok_or(malformed("truncated key"))?);
            let key = bytes.get(at + 1..at + 1 + key_len).ok_or(malformed("truncated key"))?;
            if !key_ok(key) {
                return Err(HeaderError::BadKey(String::from_utf8_lossy(key).into_owned()));
            }
            at += 1 + key_len;
            let len = bytes.get(at..at + 2).ok_or(malformed("truncated value"))?;
            let value_len = usize::from(u16::from_le_bytes([len[0], len[1]]));
            if value_len > MAX_HEADER_VALUE {
                return Err(HeaderError::ValueTooLong(String::from_utf8_lossy(key).into_owned()));
            }
            let value = bytes.get(at + 2..at + 2 + value_len).ok_or(malformed("truncated value"))?;
            if std::str::from_utf8(value).is_err() {
                return Err(malformed("value is not UTF-8"));
            }
            at += 2 + value_len;
        }
        let block = if count == 0 { Self::new() } else { Self(bytes.slice(..at)) };
        Ok((block, at))
    }

    /// Validates a block in wire form (as [`Headers::to_wire`] produced it).
    pub fn from_wire(bytes: Bytes) -> Result<Self, HeaderError> {
        let (headers, used) = Self::parse_prefix(&bytes)?;
        if used != bytes.len() {
            return Err(HeaderError::Malformed("trailing bytes"));
        }
        Ok(headers)
    }

    /// The wire form, for storing.
    pub fn to_wire(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.wire_len());
        self.encode(&mut out);
        out.freeze()
    }

    /// Appends the wire form.
    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        if self.0.is_empty() {
            dst.put_u16_le(0);
        } else {
            dst.put_slice(&self.0);
        }
    }

    /// Bytes the wire form takes.
    pub fn wire_len(&self) -> usize {
        self.0.len().max(2)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many pairs (read from the block's count, without a scan).
    #[inline]
    pub fn len(&self) -> usize {
        self.0.get(..2).map_or(0, |count| usize::from(u16::from_le_bytes([count[0], count[1]])))
    }

    /// The pairs, in order.
    pub fn iter(&self) -> HeaderIter<'_> {
        HeaderIter { bytes: &self.0, at: 2 }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The first value of `key`, as bytes (no UTF-8 check: the block was
    /// validated when built or decoded). For lookups on every message.
    pub fn get_raw(&self, key: &str) -> Option<&[u8]> {
        let (bytes, mut at) = (&self.0[..], 2);
        while let Some(&key_len) = bytes.get(at) {
            let key_len = usize::from(key_len);
            let found = bytes.get(at + 1..at + 1 + key_len)?;
            at += 1 + key_len;
            let len = bytes.get(at..at + 2)?;
            let value_len = usize::from(u16::from_le_bytes([len[0], len[1]]));
            let value = bytes.get(at + 2..at + 2 + value_len)?;
            if found == key.as_bytes() {
                return Some(value);
            }
            at += 2 + value_len;
        }
        None
    }

    /// These headers with one more pair at the end.
    pub fn with(&self, key: &str, value: &str) -> Result<Self, HeaderError> {
        self.with_in(key, value, &mut BytesMut::new())
    }

    /// [`Headers::with`], written into `arena` (split off it afterwards): a
    /// caller that adds a header to every message keeps one arena and
    /// saves an allocation per message.
    pub fn with_in(&self, key: &str, value: &str, arena: &mut BytesMut) -> Result<Self, HeaderError> {
        let count =
            if self.0.is_empty() { 0 } else { usize::from(u16::from_le_bytes([self.0[0], self.0[1]])) };
        if count == MAX_HEADERS {
            return Err(HeaderError::TooMany);
        }
        if !key_ok(key.as_bytes()) {
            return Err(HeaderError::BadKey(key.to_owned()));
        }
        if value.len() > MAX_HEADER_VALUE {
            return Err(HeaderError::ValueTooLong(key.to_owned()));
        }
        arena.reserve(self.wire_len() + 3 + key.len() + value.len());
        arena.put_u16_le((count + 1) as u16);
        arena.put_slice(self.0.get(2..).unwrap_or_default());
        arena.put_u8(key.len() as u8);
        arena.put_slice(key.as_bytes());
        arena.put_u16_le(value.len() as u16);
        arena.put_slice(value.as_bytes());
        Ok(Self(arena.split().freeze()))
    }
}

/// Iterator over header pairs.
pub struct HeaderIter<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        // The block was validated when built or decoded.
        let key_len = usize::from(*self.bytes.get(self.at)?);
        let key = self.bytes.get(self.at + 1..self.at + 1 + key_len)?;
        self.at += 1 + key_len;
        let len = self.bytes.get(self.at..self.at + 2)?;
        let value_len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let value = self.bytes.get(self.at + 2..self.at + 2 + value_len)?;
        self.at += 2 + value_len;
        Some((std::str::from_utf8(key).ok()?, std::str::from_utf8(value).ok()?))
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lookup() {
        let headers = Headers::from_pairs([("trace-id", "abc"), ("lang", "fr")]).unwrap();
        let mut wire = BytesMut::new();
        headers.encode(&mut wire);
        wire.put_slice(b"payload");
        let (parsed, used) = Headers::parse_prefix(&wire.freeze()).unwrap();
        assert_eq!(parsed, headers);
        assert_eq!(used, headers.wire_len());
        assert_eq!(parsed.get("lang"), Some("fr"));
        assert_eq!(parsed.get_raw("lang"), Some(&b"fr"[..]));
        assert_eq!(parsed.get_raw("trace-id"), Some(&b"abc"[..]));
        assert_eq!(parsed.get_raw("missing"), None);
        assert_eq!(Headers::new().get_raw("lang"), None);
        assert_eq!(parsed.iter().count(), 2);
    }

    #[test]
    fn empty_is_two_bytes() {
        let mut wire = BytesMut::new();
        Headers::new().encode(&mut wire);
        assert_eq!(&wire[..], &[0, 0]);
        assert_eq!(Headers::parse_prefix(&wire.freeze()).unwrap().1, 2);
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(Headers::from_pairs([("bad key", "x")]), Err(HeaderError::BadKey("bad key".into())));
        let long = "x".repeat(MAX_HEADER_VALUE + 1);
        assert!(matches!(Headers::from_pairs([("k", long.as_str())]), Err(HeaderError::ValueTooLong(_))));
        let truncated = Bytes::from_static(&[1, 0, 3, b'a']);
        assert!(Headers::parse_prefix(&truncated).is_err());
    }

    #[test]
    fn a_pair_added_is_the_same_block_as_built_whole() {
        let two = Headers::from_pairs([("lang", "fr"), ("traceparent", "x")]).unwrap();
        let added = Headers::from_pairs([("lang", "fr")]).unwrap().with("traceparent", "x").unwrap();
        assert_eq!(added, two);
        assert_eq!(Headers::from_wire(added.to_wire()).unwrap(), two);
        assert_eq!(Headers::new().with("k", "v").unwrap(), Headers::from_pairs([("k", "v")]).unwrap());
        assert_eq!(Headers::new().with("bad key", "v"), Err(HeaderError::BadKey("bad key".into())));
        let full = Headers::from_pairs((0..MAX_HEADERS).map(|i| (format!("k{i}"), "v"))).unwrap();
        assert_eq!(full.with("one", "more"), Err(HeaderError::TooMany));
    }
}
