//! Topic names and subscription patterns.
//!
//! A topic is dotted tokens (`orders.created`, `sys.resources`), each token
//! made of letters, digits, `_` and `-` (the first may start with `$`). A
//! pattern is a topic whose tokens may also be `*` (exactly one token) or,
//! as the last token, `>` (one or more trailing tokens). Both share the frame
//! buffer like the other names.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};

use bytes::Bytes;

/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC: usize = 255;

/// Why a topic or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("empty topic")]
    Empty,
    #[error("topic {0:?} is longer than {MAX_TOPIC} bytes")]
    TooLong(String),
    #[error("invalid topic {name:?}: {why}")]
    Invalid { name: String, why: &'static str },
}

fn check(bytes: &[u8], pattern: bool) -> Result<(), TopicError> {
    let bad = |why| TopicError::Invalid { name: String::from_utf8_lossy(bytes).into_owned(), why };
    if bytes.is_empty() {
        return Err(TopicError::Empty);
    }
    if bytes.len() > MAX_TOPIC {
        return Err(TopicError::TooLong(String::from_utf8_lossy(bytes).into_owned()));
    }
    let count = bytes.split(|b| *b == b'.').count();
    for (index, token) in bytes.split(|b| *b == b'.').enumerate() {
        match token {
            [] => return Err(bad("empty token (two dots, or a dot at either end)")),
            b"*" if pattern => continue,
            b">" if pattern && index + 1 == count => continue,
            b">" if pattern => return Err(bad("`>` may only be the last token")),
            b"*" | b">" => return Err(bad("wildcards are only allowed in subscription patterns")),
            _ => {}
        }
        let body = match token {
            [b'$', rest @ ..] if index == 0 && !rest.is_empty() => rest,
            other => other,
        };
        if !body.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-') {
            return Err(bad("tokens hold only letters, digits, `_` and `-`"));
        }
    }
    Ok(())
}

macro_rules! topic_type {
    ($ty:ident, $pattern:expr) => {
        impl $ty {
            /// Validates `bytes` (shared, not copied).
            pub fn from_bytes(bytes: Bytes) -> Result<Self, TopicError> {
                check(&bytes, $pattern)?;
                Ok(Self(bytes))
            }

            /// Validates a string.
            pub fn parse(text: &str) -> Result<Self, TopicError> {
                Self::from_bytes(Bytes::copy_from_slice(text.as_bytes()))
            }

            pub fn as_str(&self) -> &str {
                // Validation admitted ASCII only.
                std::str::from_utf8(&self.0).unwrap_or_default()
            }

            pub fn as_bytes(&self) -> &Bytes {
                &self.0
            }

            /// The dot-separated tokens.
            pub fn tokens(&self) -> impl Iterator<Item = &[u8]> {
                self.0.split(|b| *b == b'.')
            }
        }

        impl std::str::FromStr for $ty {
            type Err = TopicError;
            fn from_str(text: &str) -> Result<Self, TopicError> {
                Self::parse(text)
            }
        }

        impl PartialEq for $ty {
            fn eq(&self, other: &Self) -> bool {
                self.0 == other.0
            }
        }
        impl Eq for $ty {}

        impl Hash for $ty {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.as_str().hash(state)
            }
        }

        impl Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                self.as_str()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.as_str())
            }
        }
    };
}

/// A topic messages are published on.
#[derive(Clone)]
pub struct Topic(Bytes);

/// A subscription pattern: a topic with optional `*` and trailing `>`.
#[derive(Clone)]
pub struct TopicPattern(Bytes);

topic_type!(Topic, false);
topic_type!(TopicPattern, true);

impl TopicPattern {
    /// Whether `topic` matches this pattern.
    pub fn matches(&self, topic: &Topic) -> bool {
        let mut topic_tokens = topic.tokens();
        for token in self.tokens() {
            match token {
                b">" => return topic_tokens.next().is_some(),
                b"*" => {
                    if topic_tokens.next().is_none() {
                        return false;
                    }
                }
                literal => {
                    if topic_tokens.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        topic_tokens.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching_table() {
        let table = [
            ("orders.created", "orders.created", true),
            ("orders.created", "orders.deleted", false),
            ("orders.*", "orders.created", true),
            ("orders.*", "orders", false),
            ("orders.*", "orders.eu.created", false),
            ("*.created", "orders.created", true),
            ("*.created", "orders.eu.created", false),
            ("orders.>", "orders.created", true),
            ("orders.>", "orders.eu.created", true),
            ("orders.>", "orders", false),
            (">", "anything.at.all", true),
            (">", "one", true),
            ("*", "one", true),
            ("*", "one.two", false),
            ("*.*.x", "a.b.x", true),
            ("*.*.x", "a.x", false),
            ("a.*.>", "a.b.c", true),
            ("a.*.>", "a.b", false),
            ("sys.services.*", "sys.services.billing", true),
            ("$sys.>", "$sys.registry", true),
        ];
        for (pattern, topic, expected) in table {
            let p = TopicPattern::parse(pattern).unwrap();
            let t = Topic::parse(topic).unwrap();
            assert_eq!(p.matches(&t), expected, "{pattern} vs {topic}");
        }
    }

    #[test]
    fn validation() {
        for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "é"] {
            assert!(Topic::parse(bad).is_err(), "topic {bad:?}");
        }
        for bad in ["", "a.>.b", "a..*", "a.b*", "x>"] {
            assert!(TopicPattern::parse(bad).is_err(), "pattern {bad:?}");
        }
        for ok in ["a.*", "a.>", "*", ">", "Orders.EU-1.x_y", "$sys.x"] {
            assert!(TopicPattern::parse(ok).is_ok(), "pattern {ok:?}");
        }
        assert!(Topic::parse(&"a".repeat(MAX_TOPIC + 1)).is_err());
    }
}
