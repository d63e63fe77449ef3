//! Who may do what: principals, the rules of the config's policy, and the
//! security settings that go with them (tokens, socket mode, limits per
//! principal).
//!
//! ```toml
//! [security]
//! socket_mode = "0666"               # who may connect at all; the policy decides the rest
//! tokens = { deploy = "long-random-value" }
//! max_connections_per_principal = 64
//! messages_per_second = 10000        # per principal, all its connections together
//! direct_calls = false               # route every call through the daemon (default: granted)
//!
//! [roles.reader]
//! allow = ["subscribe orders.>", "call $sys.registry.list"]
//!
//! [[policy]]
//! principal = "group:ops"            # user:NAME uid:N group:NAME gid:N service:NAME[#N] cert:CN token:NAME host:FLEET-HOST *
//! roles = ["reader"]
//! allow = ["call billing.*"]
//! deny = ["call billing.refund"]
//! ```
//!
//! Must stay cheap on the message path: a principal's rules are gathered
//! once per connection ([`Policy::rules_for`]), not per message.

pub mod principal;
pub mod rules;
pub mod users;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::config_file::{ConfigError, Section};

pub use principal::Principal;
pub use rules::{Op, Rule, Rules};

/// One grant: a subject and what it may and may not do.
#[derive(Debug, Clone)]
struct Grant {
    subject: String,
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    /// `max_blob`: the largest blob its principals may send.
    max_blob: Option<u64>,
}

/// The whole policy. Empty = only the daemon's own user may do anything.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    grants: Vec<Grant>,
    /// `[security] max_blob`: the blob limit of principals no grant limits.
    max_blob: Option<u64>,
}

/// Settings that decide who gets in and how much they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    /// Mode of the Unix socket: 0600 lets only the daemon's user connect.
    pub socket_mode: u32,
    /// Bearer tokens: name → value; a client presenting the value is `token:NAME`.
    pub tokens: BTreeMap<String, String>,
    pub max_connections_per_principal: usize,
    /// Messages per second per principal (0 = unlimited), with this burst.
    pub messages_per_second: u32,
    pub burst: u32,
    /// Plain TCP listeners are refused unless this is set (loopback only).
    pub allow_plain_tcp: bool,
    /// Certificates for `tls://` listeners.
    pub tls: Option<TlsFiles>,
    /// Whether callers may be granted direct channels to the instances they
    /// call (`proto::direct`); off, every call goes through the daemon.
    pub direct_calls: bool,
}

/// `[security.tls]`: the daemon's certificate and key, and the CA that signs
/// client certificates (required by default when given).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub client_ca: Option<std::path::PathBuf>,
    #[serde(default = "yes")]
    pub require_client_cert: bool,
}

fn yes() -> bool {
    true
}

impl Default for Security {
    fn default() -> Self {
        Self {
            socket_mode: 0o600,
            tokens: BTreeMap::new(),
            max_connections_per_principal: 256,
            messages_per_second: 0,
            burst: 0,
            allow_plain_tcp: false,
            tls: None,
            direct_calls: true,
        }
    }
}

impl Policy {
    /// The rules that apply to `principal`, gathered once per connection.
    pub fn rules_for(&self, principal: &Principal) -> Arc<Rules> {
        let mut rules = Rules { allow_all: principal.daemon_user, ..Rules::default() };
        let mut max_blob = None::<u64>;
        for grant in self.grants.iter().filter(|g| principal.matches(&g.subject)) {
            rules.allow.extend(grant.allow.iter().cloned());
            rules.deny.extend(grant.deny.iter().cloned());
            // The tightest grant wins, as a deny does.
            max_blob = match (max_blob, grant.max_blob) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        rules.max_blob = max_blob.or(self.max_blob).unwrap_or(rules::DEFAULT_MAX_BLOB);
        Arc::new(rules)
    }

    /// How many grants there are (for logs).
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }
}

/// `[roles.*]`, `[[policy]]` and `[security]` as written in the file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default)]
    pub roles: BTreeMap<String, RawRole>,
    #[serde(default)]
    pub policy: Vec<RawGrant>,
    #[serde(default)]
    pub security: RawSecurity,
}

/// The config file's keys the policy owns.
pub const SECTIONS: &[&str] = &["security", "roles", "policy"];

/// The policy and security settings of a config file's policy section.
pub fn configure(section: &Section<'_>) -> Result<(Policy, Security), ConfigError> {
    let raw: RawPolicy = section.parse()?;
    raw.validate().map_err(|message| section.invalid("policy", message))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRole {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrant {
    principal: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    max_blob: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    socket_mode: Option<String>,
    #[serde(default)]
    tokens: BTreeMap<String, String>,
    max_connections_per_principal: Option<usize>,
    messages_per_second: Option<u32>,
    burst: Option<u32>,
    #[serde(default)]
    allow_plain_tcp: bool,
    tls: Option<TlsFiles>,
    direct_calls: Option<bool>,
    max_blob: Option<String>,
}

/// Subjects a grant may name: a kind and a value, or `*`.
const SUBJECT_KINDS: &[&str] = &["user", "uid", "group", "gid", "service", "cert", "token", "host"];

impl RawPolicy {
    /// Validates into a policy and security settings; errors name the grant
    /// or role and the rule.
    pub fn validate(self) -> Result<(Policy, Security), String> {
        let parse_all = |list: &[String], whose: &str| -> Result<Vec<Rule>, String> {
            list.iter().map(|r| Rule::parse(r).map_err(|err| format!("{whose}: {err}"))).collect()
        };
        let mut roles = BTreeMap::new();
        for (name, role) in &self.roles {
            let whose = format!("role {name}");
            roles.insert(name.clone(), (parse_all(&role.allow, &whose)?, parse_all(&role.deny, &whose)?));
        }
        let mut grants = Vec::new();
        for raw in &self.policy {
            let whose = format!("policy for {}", raw.principal);
            let kind_ok = raw.principal == "*"
                || raw.principal == "anonymous"
                || raw
                    .principal
                    .split_once(':')
                    .is_some_and(|(kind, value)| SUBJECT_KINDS.contains(&kind) && !value.is_empty());
            if !kind_ok {
                return Err(format!(
                    "{whose}: a principal is *, anonymous, or KIND:VALUE with KIND one of {}",
                    SUBJECT_KINDS.join(", ")
                ));
            }
            let mut allow = parse_all(&raw.allow, &whose)?;
            let mut deny = parse_all(&raw.deny, &whose)?;
            for role in &raw.roles {
                let (a, d) = roles.get(role).ok_or_else(|| format!("{whose}: unknown role {role:?}"))?;
                allow.extend(a.iter().cloned());
                deny.extend(d.iter().cloned());
            }
            let max_blob = raw.max_blob.as_deref().map(|text| parse_size(text, &whose)).transpose()?;
            grants.push(Grant { subject: raw.principal.clone(), allow, deny, max_blob });
        }
        let defaults = Security::default();
        let security = Security {
            socket_mode: match &self.security.socket_mode {
                None => defaults.socket_mode,
                Some(text) => u32::from_str_radix(text.trim_start_matches("0o"), 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| {
                        format!("security.socket_mode = {text:?}: expected octal like \"0660\"")
                    })?,
            },
            tokens: self.security.tokens,
            max_connections_per_principal: self
                .security
                .max_connections_per_principal
                .unwrap_or(defaults.max_connections_per_principal)
                .max(1),
            messages_per_second: self.security.messages_per_second.unwrap_or(0),
            burst: self.security.burst.or(self.security.messages_per_second).unwrap_or(0),
            allow_plain_tcp: self.security.allow_plain_tcp,
            tls: self.security.tls,
            direct_calls: self.security.direct_calls.unwrap_or(defaults.direct_calls),
        };
        if security.tokens.values().any(|v| v.len() < 16) {
            return Err("security.tokens: every token needs at least 16 characters".into());
        }
        let max_blob = self.security.max_blob.as_deref().map(|t| parse_size(t, "security")).transpose()?;
        Ok((Policy { grants, max_blob }, security))
    }
}

/// A size such as `1GiB`, `64MiB`, `512KiB` or a number of bytes.
fn parse_size(text: &str, whose: &str) -> Result<u64, String> {
    switchboard_proto::units::parse_size(text)
        .ok_or_else(|| format!("{whose}: max_blob = {text:?}: expected a size like \"64MiB\" or \"1GiB\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Policy, Security), String> {
        toml::from_str::<RawPolicy>(text).map_err(|e| e.to_string())?.validate()
    }

    #[test]
    fn grants_and_roles_gather_into_one_principal_rules() {
        let (policy, security) = parse(
            r#"
            [security]
            socket_mode = "0666"
            tokens = { deploy = "0123456789abcdef" }
            [roles.reader]
            allow = ["subscribe orders.>"]
            [[policy]]
            principal = "user:root"
            roles = ["reader"]
            deny = ["call billing.refund"]
            [[policy]]
            principal = "user:nobody"
            allow = ["admin"]
            "#,
        )
        .unwrap();
        assert_eq!(security.socket_mode, 0o666);
        assert_eq!(security.tokens.get("deploy").map(String::as_str), Some("0123456789abcdef"));
        let root = policy.rules_for(&Principal::local(0, 0, 4242));
        assert!(root.permits(Op::Subscribe, "orders.created"));
        assert!(!root.permits(Op::Admin, ""), "the nobody grant is not root's");
        assert!(!root.permits(Op::Call, "billing.refund"));
        let daemon_user = policy.rules_for(&Principal::local(0, 0, 0));
        assert!(daemon_user.permits(Op::Admin, ""));
        assert!(!daemon_user.permits(Op::Call, "billing.refund"), "deny wins for the daemon's user too");
        assert_eq!(root.max_blob, 1 << 30, "the default blob limit");
        let stranger = Policy::default().rules_for(&Principal::certificate("x"));
        assert!(!stranger.permits(Op::Call, "a.b"), "nothing until the policy says so");
    }

    #[test]
    fn config_mistakes_name_where_they_are() {
        for (text, expected) in [
            ("[[policy]]\nprincipal = \"root\"\n", "KIND:VALUE"),
            ("[[policy]]\nprincipal = \"user:a\"\nroles = [\"x\"]\n", "unknown role \"x\""),
            (
                "[[policy]]\nprincipal = \"user:a\"\nallow = [\"eat x\"]\n",
                "policy for user:a: unknown operation",
            ),
            ("[security]\nsocket_mode = \"rw\"\n", "socket_mode"),
            ("[security]\ntokens = { a = \"short\" }\n", "at least 16"),
            ("[security]\nmax_blob = \"lots\"\n", "security: max_blob = \"lots\": expected a size"),
            ("[[policy]]\nprincipal = \"user:a\"\nmax_blob = \"3 parsecs\"\n", "policy for user:a: max_blob"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn the_tightest_blob_limit_of_a_principal_applies() {
        let (policy, _) = parse(
            r#"
            [security]
            max_blob = "256MiB"
            [[policy]]
            principal = "user:root"
            max_blob = "64MiB"
            [[policy]]
            principal = "uid:0"
            max_blob = "16MiB"
            "#,
        )
        .unwrap();
        assert_eq!(policy.rules_for(&Principal::local(0, 0, 4242)).max_blob, 16 << 20);
        assert_eq!(policy.rules_for(&Principal::certificate("x")).max_blob, 256 << 20);
    }
}
