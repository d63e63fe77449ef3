//! `[fleet]` in the daemon's config: this host's name, the NATS servers and
//! the credentials to reach them (whatever NATS itself takes, passed
//! through), and which services cross the host boundary — nothing by
//! default.
//!
//! ```toml
//! [fleet]
//! name = "web-1"                         # default: the machine's host name
//! nats = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
//! user = "web-1"                         # or token = "…", or credentials = "web-1.creds", or nkey = "SU…"
//! password = "…"
//! export = ["billing", "topic:db.>"]     # served (published) here, offered to the fleet ("*": every service)
//! import = ["inventory", "topic:db.>"]   # served (published) elsewhere, reachable here ("*": any service)
//! queues = ["jobs"]                      # kept on JetStream, shared by every host (the same list on each)
//! queue_replicas = 3                     # copies of each (default 3; at most the number of servers)
//! queue_ack_wait = "30s"                 # a delivery not acked by then goes to another consumer
//! queue_max_attempts = 5                 # then it goes to the fleet queue NAME.dlq (default 0: no limit)
//! [fleet.tls]                            # optional: TLS to NATS
//! ca = "ca.pem"
//! cert = "web-1.pem"                     # with key: a client certificate
//! key = "web-1.key"
//! ```

use std::path::PathBuf;

use serde::Deserialize;
use switchboard_daemon::host::{ConfigError, Section};
use switchboard_proto::{QueueName, TopicPattern};

use crate::subjects;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Option<String>,
    nats: Servers,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    credentials: Option<PathBuf>,
    nkey: Option<String>,
    tls: Option<Tls>,
    #[serde(default)]
    export: Vec<String>,
    #[serde(default)]
    import: Vec<String>,
    #[serde(default)]
    queues: Vec<String>,
    queue_replicas: Option<usize>,
    queue_ack_wait: Option<String>,
    #[serde(default)]
    queue_max_attempts: u32,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Servers {
    One(String),
    Many(Vec<String>),
}

/// TLS to the NATS servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// How this host proves itself to NATS.
#[derive(Debug, Clone)]
pub enum Credentials {
    None,
    UserPassword(String, String),
    Token(String),
    File(PathBuf),
    Nkey(String),
}

/// Which services a list admits: names, or `*` for all.
#[derive(Debug, Clone, Default)]
pub struct Names(Vec<String>);

impl Names {
    pub fn admits(&self, service: &str) -> bool {
        !service.starts_with('$') && self.0.iter().any(|name| name == "*" || name == service)
    }
}

/// A validated `[fleet]`.
#[derive(Debug, Clone)]
pub struct Joining {
    pub host: String,
    pub servers: Vec<String>,
    pub credentials: Credentials,
    pub tls: Option<Tls>,
    pub export: Names,
    pub import: Names,
    /// Topic patterns whose publications here go to the fleet.
    pub export_topics: Vec<TopicPattern>,
    /// Topic patterns whose publications elsewhere are published here.
    pub import_topics: Vec<TopicPattern>,
    /// Queues kept on JetStream, shared by every host (the same list on each).
    pub queues: Vec<String>,
    /// Copies JetStream keeps of each (at most the number of servers).
    pub queue_replicas: usize,
    /// How long a delivery may go unacknowledged before JetStream gives it
    /// to another consumer (the local queues' visibility timeout).
    pub queue_ack_wait: std::time::Duration,
    /// Deliveries after which a message goes to `NAME.dlq` (0: no limit).
    pub queue_max_attempts: u32,
}

/// Splits an `export` or `import` list into service names and topic
/// patterns (`topic:PATTERN`).
fn split(
    section: &Section<'_>,
    key: &str,
    list: Vec<String>,
) -> Result<(Names, Vec<TopicPattern>), ConfigError> {
    let mut names = Vec::new();
    let mut topics = Vec::new();
    for entry in list {
        match entry.strip_prefix("topic:") {
            Some(pattern) => topics.push(
                TopicPattern::parse(pattern)
                    .map_err(|err| section.invalid(&format!("fleet.{key}"), format!("{entry:?}: {err}")))?,
            ),
            None => names.push(entry),
        }
    }
    Ok((Names(names), topics))
}

/// `None` when the file has no `[fleet]`: this host stays on its own.
pub fn parse(section: &Section<'_>) -> Result<Option<Joining>, ConfigError> {
    #[derive(Deserialize)]
    struct File {
        fleet: Option<Raw>,
    }
    let Some(raw) = section.parse::<File>()?.fleet else { return Ok(None) };
    let host = match raw.name {
        Some(name) => name,
        None => rustix::system::uname().nodename().to_string_lossy().into_owned(),
    };
    let host =
        subjects::host_name(&host).map_err(|err| section.invalid("fleet.name", err.to_string()))?.to_owned();
    let servers = match raw.nats {
        Servers::One(url) => vec![url],
        Servers::Many(urls) => urls,
    };
    if servers.is_empty() {
        return Err(section.invalid("fleet.nats", "names no NATS server".to_owned()));
    }
    let credentials = match (raw.user, raw.password, raw.token, raw.credentials, raw.nkey) {
        (None, None, None, None, None) => Credentials::None,
        (Some(user), Some(password), None, None, None) => Credentials::UserPassword(user, password),
        (None, None, Some(token), None, None) => Credentials::Token(token),
        (None, None, None, Some(file), None) => Credentials::File(file),
        (None, None, None, None, Some(seed)) => Credentials::Nkey(seed),
        _ => {
            let why = "give one of: user and password, token, credentials (a .creds file), nkey";
            return Err(section.invalid("fleet", why.to_owned()));
        }
    };
    if let Some(tls) = &raw.tls {
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(
                section.invalid("fleet.tls", "a client certificate needs both cert and key".to_owned())
            );
        }
    }
    let (export, export_topics) = split(section, "export", raw.export)?;
    let (import, import_topics) = split(section, "import", raw.import)?;
    for queue in &raw.queues {
        QueueName::parse(queue)
            .map_err(|err| section.invalid("fleet.queues", format!("{queue:?}: {err}")))?;
    }
    let queue_replicas = raw.queue_replicas.unwrap_or(3);
    if !(1..=5).contains(&queue_replicas) {
        let why = format!("{queue_replicas}: JetStream keeps 1 to 5 copies");
        return Err(section.invalid("fleet.queue_replicas", why));
    }
    let queue_ack_wait = match raw.queue_ack_wait {
        None => std::time::Duration::from_secs(30),
        Some(text) => humantime::parse_duration(&text)
            .map_err(|err| section.invalid("fleet.queue_ack_wait", format!("{text:?}: {err}")))?,
    };
    Ok(Some(Joining {
        host,
        servers,
        credentials,
        tls: raw.tls,
        export,
        import,
        export_topics,
        import_topics,
        queues: raw.queues,
        queue_replicas,
        queue_ack_wait,
        queue_max_attempts: raw.queue_max_attempts,
    }))
}
