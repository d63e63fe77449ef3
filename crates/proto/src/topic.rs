//! Topic names and subscription patterns.
//!
//! A topic is dotted tokens (`orders.created`, `sys.resources`), each token
//! made of letters, digits, `_` and `-` (the first may start with `$`). A
//! pattern is a topic whose tokens may also be `*` (exactly one token) or,
//! as the last token, `>` (one or more trailing tokens). Both share the frame
//! buffer like the other names.

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

fn check_topic(bytes: &[u8]) -> Result<(), TopicError> {
    check(bytes, false)
}

fn check_pattern(bytes: &[u8]) -> Result<(), TopicError> {
    check(bytes, true)
}

/// A topic messages are published on.
#[derive(Clone)]
pub struct Topic(Bytes);

/// A subscription pattern: a topic with optional `*` and trailing `>`.
#[derive(Clone)]
pub struct TopicPattern(Bytes);

crate::validated::validated_name!(Topic, TopicError, check_topic);
crate::validated::validated_name!(TopicPattern, TopicError, check_pattern);

impl Topic {
    /// The dot-separated tokens.
    pub fn tokens(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|b| *b == b'.')
    }
}

impl TopicPattern {
    /// The dot-separated tokens.
    pub fn tokens(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|b| *b == b'.')
    }

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
