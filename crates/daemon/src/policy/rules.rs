//! Rules: an operation and a pattern (`call billing.*`, `subscribe
//! orders.>`, `admin`), and the set that applies to one principal.
//!
//! Deny wins: an operation is allowed when no deny rule touches it and an
//! allow rule (or the daemon user's blanket allow) covers it.

use std::fmt;

use switchboard_proto::{Topic, TopicPattern};

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Call (or broadcast to) `SERVICE.METHOD`.
    Call,
    Notify,
    Publish,
    Subscribe,
    QueuePut,
    QueueGet,
    /// Declare a queue, change its options, or delete it.
    QueueDeclare,
    /// Register (serve) a service name.
    Serve,
    /// Start, stop, pause, continue, restart or send controls to a service.
    Control,
    /// Reload the config, purge queues.
    Admin,
    /// Read the daemon's counters (`switchboard metrics`, `/metrics`).
    Metrics,
    /// Map a named shared region read-only, and hear of its changes.
    RegionRead,
    /// Create a named shared region, map it writable and take its lock.
    RegionWrite,
}

impl Op {
    const ALL: [Op; 13] = [
        Op::Call,
        Op::Notify,
        Op::Publish,
        Op::Subscribe,
        Op::QueuePut,
        Op::QueueGet,
        Op::QueueDeclare,
        Op::Serve,
        Op::Control,
        Op::Admin,
        Op::Metrics,
        Op::RegionRead,
        Op::RegionWrite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Call => "call",
            Op::Notify => "notify",
            Op::Publish => "publish",
            Op::Subscribe => "subscribe",
            Op::QueuePut => "queue.put",
            Op::QueueGet => "queue.get",
            Op::QueueDeclare => "queue.declare",
            Op::Serve => "serve",
            Op::Control => "control",
            Op::Admin => "admin",
            Op::Metrics => "metrics",
            Op::RegionRead => "region.read",
            Op::RegionWrite => "region.write",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone)]
enum Pattern {
    /// Dot-separated tokens: `*` within a token matches any run of
    /// characters but a dot, a last token `>` matches one or more tokens.
    /// No wildcard matches a reserved token (`__control`): those only by name.
    Glob(String),
    /// Topic semantics: `*` one token, `>` the rest.
    Topic(TopicPattern),
    Anything,
}

/// One `OP PATTERN` rule.
#[derive(Debug, Clone)]
pub struct Rule {
    op: Op,
    pattern: Pattern,
}

impl Rule {
    /// Parses `call billing.*`, `publish orders.>`, `admin`.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let mut words = text.split_whitespace();
        let word = words.next().ok_or_else(|| "empty rule".to_owned())?;
        let op = Op::ALL.into_iter().find(|op| op.name() == word).ok_or_else(|| {
            let known: Vec<&str> = Op::ALL.iter().map(|op| op.name()).collect();
            format!("unknown operation {word:?} in {text:?}; known: {}", known.join(", "))
        })?;
        let target = words.next();
        if words.next().is_some() {
            return Err(format!("{text:?}: expected OPERATION PATTERN"));
        }
        let pattern = match (op, target) {
            (Op::Admin | Op::Metrics, None) => Pattern::Anything,
            (Op::Admin | Op::Metrics, Some(_)) => return Err(format!("{text:?}: {op} takes no pattern")),
            (_, None) => return Err(format!("{text:?}: {op} needs a pattern (use * for any)")),
            (Op::Publish | Op::Subscribe, Some(p)) => {
                Pattern::Topic(TopicPattern::parse(p).map_err(|err| format!("{text:?}: {err}"))?)
            }
            (_, Some(p)) => {
                let tokens: Vec<&str> = p.split('.').collect();
                if tokens[..tokens.len() - 1].contains(&">") {
                    return Err(format!("{text:?}: > matches the rest, so it must be the last token"));
                }
                Pattern::Glob(p.to_owned())
            }
        };
        Ok(Rule { op, pattern })
    }

    /// Whether this rule grants `op` on `target` (for subscribe: every topic
    /// the requested pattern can match).
    fn covers(&self, op: Op, target: &str) -> bool {
        self.op == op
            && match &self.pattern {
                Pattern::Anything => true,
                Pattern::Glob(glob) => glob_match(glob.as_bytes(), target.as_bytes()),
                Pattern::Topic(rule) if op == Op::Subscribe => {
                    TopicPattern::parse(target).is_ok_and(|wanted| pattern_covers(rule, &wanted))
                }
                Pattern::Topic(rule) => Topic::parse(target).is_ok_and(|topic| rule.matches(&topic)),
            }
    }

    /// Whether a deny rule reaches `op` on `target` (for subscribe: any
    /// topic both could match — a subscription that could receive a denied
    /// topic is refused).
    fn touches(&self, op: Op, target: &str) -> bool {
        match &self.pattern {
            Pattern::Topic(rule) if op == Op::Subscribe && self.op == op => {
                TopicPattern::parse(target).is_ok_and(|wanted| patterns_overlap(rule, &wanted))
            }
            _ => self.covers(op, target),
        }
    }
}

/// The rules that apply to one principal, gathered from every grant that
/// names it.
#[derive(Debug, Clone)]
pub struct Rules {
    pub allow_all: bool,
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
    /// Largest blob payload it may send, in bytes.
    pub max_blob: u64,
}

/// A principal's blob limit when no grant and no `[security]` says otherwise.
pub const DEFAULT_MAX_BLOB: u64 = 1 << 30;

impl Default for Rules {
    fn default() -> Self {
        Self { allow_all: false, allow: Vec::new(), deny: Vec::new(), max_blob: DEFAULT_MAX_BLOB }
    }
}

impl Rules {
    /// Everything allowed, nothing denied: no check needed.
    pub fn unrestricted(&self) -> bool {
        self.allow_all && self.deny.is_empty()
    }

    pub fn permits(&self, op: Op, target: &str) -> bool {
        if self.unrestricted() {
            return true;
        }
        if self.deny.iter().any(|rule| rule.touches(op, target)) {
            return false;
        }
        self.allow_all || self.allow.iter().any(|rule| rule.covers(op, target))
    }
}

/// Whether `pattern` matches `text`, token by token (see [`Pattern::Glob`]).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let mut wanted = pattern.split(|b| *b == b'.');
    let mut tokens = text.split(|b| *b == b'.').peekable();
    let reserved = |token: &[u8]| token.starts_with(b"__");
    loop {
        match (wanted.next(), tokens.next()) {
            (Some(b">"), Some(first)) => {
                return !reserved(first) && tokens.all(|t| !reserved(t));
            }
            (Some(w), Some(t)) if token_match(w, t) && (!reserved(t) || reserved(w)) => continue,
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// `*` matches any run of bytes within one token.
fn token_match(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if g < glob.len() && glob[g] == b'*' {
            star = Some((g, t));
            g += 1;
        } else if g < glob.len() && glob[g] == text[t] {
            g += 1;
            t += 1;
        } else if let Some((sg, st)) = star {
            g = sg + 1;
            t = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|b| *b == b'*')
}

/// Whether every topic `wanted` matches is matched by `rule`.
fn pattern_covers(rule: &TopicPattern, wanted: &TopicPattern) -> bool {
    let (rule, wanted): (Vec<&[u8]>, Vec<&[u8]>) = (rule.tokens().collect(), wanted.tokens().collect());
    for (i, r) in rule.iter().enumerate() {
        match (*r, wanted.get(i).copied()) {
            (b">", Some(_)) => return true,
            (_, None) | (_, Some(b">")) => return false,
            (b"*", Some(w)) if w != b">" => continue,
            (r, Some(w)) if r == w => continue,
            _ => return false,
        }
    }
    rule.len() == wanted.len()
}

/// Whether some topic is matched by both patterns.
fn patterns_overlap(a: &TopicPattern, b: &TopicPattern) -> bool {
    let (a, b): (Vec<&[u8]>, Vec<&[u8]>) = (a.tokens().collect(), b.tokens().collect());
    for i in 0.. {
        match (a.get(i).copied(), b.get(i).copied()) {
            (Some(b">"), Some(_)) | (Some(_), Some(b">")) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(x), Some(y)) if x == b"*" || y == b"*" || x == y => continue,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> Rules {
        let parse = |list: &[&str]| list.iter().map(|r| Rule::parse(r).unwrap()).collect();
        Rules { allow: parse(allow), deny: parse(deny), ..Rules::default() }
    }

    #[test]
    fn globs_match_calls_queues_and_services() {
        let r = rules(&["call billing.*", "queue.get mail*", "queue.get jobs.>", "serve worker"], &[]);
        assert!(r.permits(Op::Call, "billing.charge"));
        assert!(!r.permits(Op::Call, "billingx.charge"));
        assert!(!r.permits(Op::Call, "shipping.send"));
        assert!(!r.permits(Op::Notify, "billing.charge"), "call does not grant notify");
        assert!(r.permits(Op::QueueGet, "mailbox") && !r.permits(Op::QueueGet, "mail.dlq"));
        assert!(r.permits(Op::QueueGet, "jobs.dlq") && !r.permits(Op::QueueGet, "jobs"));
        assert!(r.permits(Op::Serve, "worker") && !r.permits(Op::Serve, "worker2"));
        assert!(token_match(b"*", b"") && token_match(b"a*c*", b"abcxc") && !token_match(b"a*d", b"abc"));
    }

    /// Issue 12: `*` matched dots too, so `call billing.*` reached a service
    /// named `billing.admin`, and any wildcard reached `__control`.
    #[test]
    fn a_star_stays_within_one_token_and_wildcards_never_reach_reserved_methods() {
        let r = rules(&["call billing.*", "call cache.>", "call ops.__control"], &[]);
        assert!(!r.permits(Op::Call, "billing.admin.purge"), "service billing.admin, method purge");
        assert!(r.permits(Op::Call, "cache.get") && r.permits(Op::Call, "cache.eu.get"));
        assert!(!r.permits(Op::Call, "billing.__control"));
        assert!(!r.permits(Op::Call, "cache.__control") && !r.permits(Op::Call, "cache.eu.__control"));
        assert!(r.permits(Op::Call, "ops.__control"), "named, it is granted");
        let any = rules(&["call >"], &[]);
        assert!(any.permits(Op::Call, "a.b") && !any.permits(Op::Call, "a.__control"));
    }

    #[test]
    fn deny_wins_over_allow_and_over_allow_all() {
        let mut r = rules(&["call billing.*"], &["call billing.refund"]);
        assert!(r.permits(Op::Call, "billing.charge"));
        assert!(!r.permits(Op::Call, "billing.refund"));
        r.allow_all = true;
        assert!(r.permits(Op::Admin, ""));
        assert!(!r.permits(Op::Call, "billing.refund"));
        assert!(!r.unrestricted());
    }

    #[test]
    fn topics_follow_topic_wildcards() {
        let r = rules(&["publish orders.>", "subscribe orders.*"], &["subscribe orders.secret"]);
        assert!(r.permits(Op::Publish, "orders.eu.created"));
        assert!(!r.permits(Op::Publish, "billing.x"));
        assert!(r.permits(Op::Subscribe, "orders.created"));
        assert!(!r.permits(Op::Subscribe, "orders.>"), "wider than the grant");
        assert!(!r.permits(Op::Subscribe, "orders.*"), "could receive orders.secret");
        assert!(!r.permits(Op::Subscribe, "orders.secret"));
        let wide = rules(&["subscribe >"], &[]);
        assert!(wide.permits(Op::Subscribe, "a.*.c") && wide.permits(Op::Subscribe, ">"));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (text, expected) in [
            ("fly orders", "unknown operation \"fly\""),
            ("call", "needs a pattern"),
            ("admin everything", "admin takes no pattern"),
            ("publish orders..x", "publish orders..x"),
            ("call a b", "expected OPERATION PATTERN"),
        ] {
            let err = Rule::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
