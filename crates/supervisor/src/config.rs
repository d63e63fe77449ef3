//! The supervisor's TOML config: which services exist and how to run them.
//!
//! Parsing only: the supervisor's part of the config file (`[services.*]`
//! and `[logs]`, see [`SECTIONS`]) becomes validated [`ServiceSpec`]s or a
//! [`ConfigError`] naming the service and field. Nothing here starts a process.
//!
//! ```toml
//! [services.worker]
//! command = "/usr/bin/worker"
//! args = ["--fast"]
//! instances = 2
//! requires = ["db"]
//! ready = "notify"          # started | notify | bus
//! restart = "on-failure"    # never | on-failure | always
//! backoff = { initial = "100ms", max = "30s", multiplier = 2.0, jitter = 0.1 }
//! budget = { restarts = 5, window = "60s", reset_after = "30s" }
//! health = { command = "curl -fs localhost:8080/health", interval = "5s", threshold = 3 }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchboard_daemon::host::{ConfigError, ConfigFile, Section};
use switchboard_proto::{ServiceName, Target};

use super::journal::{ForwardTo, LogForwarding};
use super::restart::{RestartMode, RestartPolicy};

/// The config file's keys the supervisor owns.
pub const SECTIONS: &[&str] = &["services", "logs"];

/// A service's settings refused: which service, and why.
#[derive(Debug)]
pub(crate) struct Invalid {
    service: String,
    message: String,
}

/// When a service starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartType {
    /// With the daemon (and after a reload that adds it).
    #[default]
    Auto,
    /// Only when asked (or needed by a service that starts).
    Manual,
    /// Never, not even when asked.
    Disabled,
}

/// What makes a started instance Running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// Running as soon as it was spawned.
    #[default]
    Started,
    /// Running when it sends `READY=1` to `NOTIFY_SOCKET` (systemd's Type=notify).
    Notify,
    /// Running when it attaches over the bus (`switchboard::service::run`).
    Bus,
}

/// How health is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// `sh -c COMMAND` exits 0.
    Command(String),
    /// A call to `SERVICE.METHOD` replies without error.
    Call(Target),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that make an instance unhealthy.
    pub threshold: u32,
}

/// cgroup v2 limits, applied where the machine lets the daemon create cgroups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// `memory.max` in bytes.
    pub memory_max: Option<u64>,
    /// `cpu.max` as a percentage of one CPU.
    pub cpu_percent: Option<u32>,
}

/// One service, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: ServiceName,
    pub command: String,
    pub args: Vec<String>,
    pub directory: Option<PathBuf>,
    pub environment: BTreeMap<String, String>,
    pub instances: u32,
    pub start: StartType,
    pub requires: Vec<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub run_as_root: bool,
    pub nice: Option<i32>,
    /// (resource name, soft = hard limit).
    pub rlimits: BTreeMap<String, u64>,
    pub cgroup: CgroupLimits,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    pub ready: Readiness,
    pub watchdog: Option<Duration>,
    pub restart: RestartPolicy,
    pub health: Option<HealthCheck>,
    /// Every line also goes to the journal (`log = "journal"`).
    pub log_to_journal: bool,
}

/// Where captured logs go and how much of them is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub max_file_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep_files: u32,
    /// The journal and syslog, and what goes there (`journal.rs`).
    pub forwarding: LogForwarding,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { max_file_bytes: 4 * 1024 * 1024, keep_files: 4, forwarding: LogForwarding::default() }
    }
}

/// A whole config file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SupervisorConfig {
    pub services: Vec<ServiceSpec>,
    pub logs: LogSettings,
}

impl SupervisorConfig {
    /// The supervisor's section of a config file.
    pub fn configure(section: &Section<'_>) -> Result<Self, ConfigError> {
        let raw: RawFile = section.parse()?;
        Self::validate(raw).map_err(|err| err.into_error(section))
    }

    /// A config file's text that holds only the supervisor's sections.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let file = ConfigFile::from_text("(text)", text.to_owned());
        let sections = file.split(&[SECTIONS])?;
        sections.first().map_or_else(|| Ok(Self::default()), Self::configure)
    }

    fn validate(raw: RawFile) -> Result<Self, Invalid> {
        let mut services = Vec::new();
        for (name, service) in raw.services {
            services.push(service.validate(&name)?);
        }
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        if let Some(err) = super::check::dependency_problems(&services, &names).into_iter().next() {
            return Err(err);
        }
        let logs = raw.logs.unwrap_or_default();
        let defaults = LogSettings::default();
        Ok(Self {
            services,
            logs: LogSettings {
                max_file_bytes: logs.max_file_bytes.unwrap_or(defaults.max_file_bytes).max(4096),
                keep_files: logs.keep_files.unwrap_or(defaults.keep_files),
                forwarding: forwarding(&logs, defaults.forwarding)
                    .map_err(|message| invalid("logs", message))?,
            },
        })
    }
}

pub(crate) fn invalid(service: &str, message: String) -> Invalid {
    Invalid { service: service.to_owned(), message }
}

impl Invalid {
    pub(crate) fn is_about(&self, service: &str) -> bool {
        self.service == service
    }

    pub(crate) fn into_error(self, section: &Section<'_>) -> ConfigError {
        section.invalid(&format!("service {}", self.service), self.message)
    }
}

/// One `[services.NAME]` table, validated alone (`switchboard check`).
pub(crate) fn service_of(entry: &Section<'_>) -> Result<Vec<ServiceSpec>, ConfigError> {
    let raw: RawFile = entry.parse()?;
    raw.services
        .into_iter()
        .map(|(name, service)| service.validate(&name).map_err(|err| err.into_error(entry)))
        .collect()
}

/// The `[logs]` table alone.
pub(crate) fn logs_problem(section: &Section<'_>) -> Option<ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LogsOnly {
        #[serde(default)]
        #[allow(dead_code)] // read only to be skipped
        services: serde::de::IgnoredAny,
        #[allow(dead_code)] // read only to be checked
        logs: Option<RawLogs>,
    }
    section.parse::<LogsOnly>().err()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    services: BTreeMap<String, RawService>,
    logs: Option<RawLogs>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLogs {
    max_file_bytes: Option<u64>,
    keep_files: Option<u32>,
    journal_socket: Option<PathBuf>,
    syslog_socket: Option<PathBuf>,
    /// Lines at least this severe, of every service, go to `forward_to`.
    forward: Option<String>,
    forward_to: Option<String>,
}

/// `[logs]`'s journal and syslog keys.
fn forwarding(logs: &RawLogs, defaults: LogForwarding) -> Result<LogForwarding, String> {
    let forward = match &logs.forward {
        None => None,
        Some(level) => Some(switchboard_proto::supervision::severity(level).ok_or_else(|| {
            format!(
                "forward = {level:?}: expected a severity ({})",
                switchboard_proto::supervision::SEVERITIES.join(", ")
            )
        })?),
    };
    let forward_to = match logs.forward_to.as_deref() {
        None | Some("journal") => ForwardTo::Journal,
        Some("syslog") => ForwardTo::Syslog,
        Some(other) => return Err(format!("forward_to = {other:?}: expected journal or syslog")),
    };
    Ok(LogForwarding {
        journal_socket: logs.journal_socket.clone().unwrap_or(defaults.journal_socket),
        syslog_socket: logs.syslog_socket.clone().unwrap_or(defaults.syslog_socket),
        forward,
        forward_to,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    directory: Option<PathBuf>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    instances: Option<u32>,
    #[serde(default)]
    start: StartType,
    #[serde(default)]
    requires: Vec<String>,
    user: Option<String>,
    group: Option<String>,
    #[serde(default)]
    run_as_root: bool,
    nice: Option<i32>,
    #[serde(default)]
    limits: BTreeMap<String, u64>,
    memory_max: Option<String>,
    cpu_max: Option<String>,
    start_timeout: Option<String>,
    stop_timeout: Option<String>,
    #[serde(default)]
    ready: Readiness,
    watchdog: Option<String>,
    restart: Option<String>,
    backoff: Option<RawBackoff>,
    budget: Option<RawBudget>,
    health: Option<RawHealth>,
    /// `files` (the default) or `journal`: also every line to the journal.
    log: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    initial: Option<String>,
    max: Option<String>,
    multiplier: Option<f64>,
    jitter: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    restarts: Option<u32>,
    window: Option<String>,
    reset_after: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    command: Option<String>,
    call: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    threshold: Option<u32>,
}

/// Resource names `limits` accepts.
pub const RLIMITS: &[&str] = &["nofile", "nproc", "core", "as", "data", "stack", "fsize", "memlock", "cpu"];

impl RawService {
    fn validate(self, name: &str) -> Result<ServiceSpec, Invalid> {
        let bad = |message: String| invalid(name, message);
        let service = ServiceName::parse(name).map_err(|err| bad(format!("invalid name: {err}")))?;
        if service.is_reserved() {
            return Err(bad("names starting with `$` are reserved for the daemon".into()));
        }
        if self.command.trim().is_empty() {
            return Err(bad("command is empty".into()));
        }
        let duration =
            |field: &str, text: Option<String>, default: Duration| duration(name, field, text, default);
        for resource in self.limits.keys() {
            if !RLIMITS.contains(&resource.as_str()) {
                return Err(bad(format!("unknown limit {resource:?}; known: {}", RLIMITS.join(", "))));
            }
        }
        let restart = restart_policy(name, self.restart.as_deref(), self.backoff, self.budget)?;
        let health = self.health.map(|raw| health_check(name, raw)).transpose()?;
        let cgroup = CgroupLimits {
            memory_max: self.memory_max.map(|m| parse_bytes(&m).map_err(&bad)).transpose()?,
            cpu_percent: self.cpu_max.map(|c| parse_percent(&c).map_err(&bad)).transpose()?,
        };
        let instances = self.instances.unwrap_or(1);
        if !(1..=1000).contains(&instances) {
            return Err(bad(format!("instances = {instances}: expected 1 to 1000")));
        }
        Ok(ServiceSpec {
            name: service,
            command: self.command,
            args: self.args,
            directory: self.directory,
            environment: self.environment,
            instances,
            start: self.start,
            requires: self.requires,
            user: self.user,
            group: self.group,
            run_as_root: self.run_as_root,
            nice: self.nice,
            rlimits: self.limits,
            cgroup,
            start_timeout: duration("start_timeout", self.start_timeout, Duration::from_secs(30))?,
            stop_timeout: duration("stop_timeout", self.stop_timeout, Duration::from_secs(10))?,
            ready: self.ready,
            watchdog: self.watchdog.map(|w| duration("watchdog", Some(w), Duration::ZERO)).transpose()?,
            restart,
            health,
            log_to_journal: match self.log.as_deref() {
                None | Some("files") => false,
                Some("journal") => true,
                Some(other) => return Err(bad(format!("log = {other:?}: expected files or journal"))),
            },
        })
    }
}

/// A duration setting of `service`, in humantime's notation.
fn duration(
    service: &str,
    field: &str,
    text: Option<String>,
    default: Duration,
) -> Result<Duration, Invalid> {
    match text {
        None => Ok(default),
        Some(text) => humantime::parse_duration(&text)
            .map_err(|err| invalid(service, format!("{field} = {text:?}: {err} (try 500ms, 5s, 2m)"))),
    }
}

/// `restart`, `backoff` and `budget` of `service`.
fn restart_policy(
    service: &str,
    restart: Option<&str>,
    backoff: Option<RawBackoff>,
    budget: Option<RawBudget>,
) -> Result<RestartPolicy, Invalid> {
    let bad = |message: String| invalid(service, message);
    let mode = match restart {
        None | Some("on-failure") => RestartMode::OnFailure,
        Some("never") => RestartMode::Never,
        Some("always") => RestartMode::Always,
        Some(other) => return Err(bad(format!("restart = {other:?}: expected never, on-failure or always"))),
    };
    let defaults = RestartPolicy::default();
    let (backoff, budget) = (backoff.unwrap_or_default(), budget.unwrap_or_default());
    let multiplier = backoff.multiplier.unwrap_or(defaults.multiplier);
    let jitter = backoff.jitter.unwrap_or(defaults.jitter);
    if !(1.0..=100.0).contains(&multiplier) {
        return Err(bad(format!("backoff.multiplier = {multiplier}: expected 1.0 to 100.0")));
    }
    if !(0.0..=1.0).contains(&jitter) {
        return Err(bad(format!("backoff.jitter = {jitter}: expected 0.0 to 1.0")));
    }
    Ok(RestartPolicy {
        mode,
        initial: duration(service, "backoff.initial", backoff.initial, defaults.initial)?,
        max: duration(service, "backoff.max", backoff.max, defaults.max)?,
        multiplier,
        jitter,
        budget: budget.restarts.unwrap_or(defaults.budget),
        window: duration(service, "budget.window", budget.window, defaults.window)?,
        reset_after: duration(service, "budget.reset_after", budget.reset_after, defaults.reset_after)?,
    })
}

/// `health` of `service`.
fn health_check(service: &str, raw: RawHealth) -> Result<HealthCheck, Invalid> {
    let bad = |message: String| invalid(service, message);
    let probe = match (raw.command, raw.call) {
        (Some(command), None) => Probe::Command(command),
        (None, Some(call)) => {
            Probe::Call(Target::parse(&call).map_err(|err| bad(format!("health.call = {call:?}: {err}")))?)
        }
        _ => return Err(bad("health needs exactly one of `command` or `call`".into())),
    };
    Ok(HealthCheck {
        probe,
        interval: duration(service, "health.interval", raw.interval, Duration::from_secs(10))?,
        timeout: duration(service, "health.timeout", raw.timeout, Duration::from_secs(5))?,
        threshold: raw.threshold.unwrap_or(3).max(1),
    })
}

/// `512M`, `1G`, `65536` → bytes.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits.parse().map_err(|_| format!("memory_max = {text:?}: expected e.g. 512M"))?;
    let scale = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("memory_max = {text:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    Ok(n.saturating_mul(scale))
}

/// `50%` → 50.
fn parse_percent(text: &str) -> Result<u32, String> {
    text.trim()
        .strip_suffix('%')
        .and_then(|n| n.trim().parse().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("cpu_max = {text:?}: expected a percentage of one CPU, e.g. 50%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_service_parses_with_every_field() {
        let config = SupervisorConfig::parse(
            r#"
            [logs]
            max_file_bytes = 65536
            [services.db]
            command = "db"
            [services.web]
            command = "/bin/web"
            args = ["-v"]
            instances = 2
            start = "manual"
            requires = ["db"]
            nice = 5
            limits = { nofile = 1024 }
            memory_max = "64M"
            cpu_max = "50%"
            ready = "notify"
            watchdog = "2s"
            restart = "always"
            backoff = { initial = "10ms", max = "1s", multiplier = 3.0, jitter = 0.0 }
            budget = { restarts = 2, window = "10s", reset_after = "5s" }
            health = { call = "web.ping", interval = "1s", threshold = 2 }
            "#,
        )
        .unwrap();
        assert_eq!(config.logs.max_file_bytes, 65536);
        let web = config.services.iter().find(|s| s.name.as_str() == "web").unwrap();
        assert_eq!((web.instances, web.start, web.ready), (2, StartType::Manual, Readiness::Notify));
        assert_eq!(web.cgroup, CgroupLimits { memory_max: Some(64 << 20), cpu_percent: Some(50) });
        assert_eq!(web.restart.mode, RestartMode::Always);
        assert_eq!(web.restart.initial, Duration::from_millis(10));
        assert_eq!(web.restart.budget, 2);
        assert_eq!(web.watchdog, Some(Duration::from_secs(2)));
        let health = web.health.as_ref().unwrap();
        assert_eq!((health.threshold, health.interval), (2, Duration::from_secs(1)));
    }

    #[test]
    fn mistakes_name_the_service_and_the_field() {
        let cases = [
            ("[services.a]\ncommand = \"x\"\nrestart = \"sometimes\"", "restart = \"sometimes\""),
            ("[services.a]\ncommand = \"x\"\nstop_timeout = \"soon\"", "stop_timeout"),
            ("[services.a]\ncommand = \"x\"\nrequires = [\"b\"]", "unknown service \"b\""),
            ("[services.a]\ncommand = \"x\"\nlimits = { files = 3 }", "unknown limit \"files\""),
            ("[services.a]\ncommand = \"x\"\nhealth = { interval = \"1s\" }", "exactly one"),
            ("[services.A]\ncommand = \"x\"", "invalid name"),
            ("[services.a]\ncommand = \"x\"\ncolour = 1", "unknown field `colour`"),
            ("[services.a]\ncommand = \"x\"\nmemory_max = \"3T\"", "unknown unit"),
        ];
        for (text, expected) in cases {
            let err = SupervisorConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn a_dependency_cycle_is_refused_with_its_path() {
        let text =
            "[services.a]\ncommand=\"x\"\nrequires=[\"b\"]\n[services.b]\ncommand=\"x\"\nrequires=[\"a\"]";
        let err = SupervisorConfig::parse(text).unwrap_err().to_string();
        assert!(err.contains("a → b → a"), "{err}");
    }

    #[test]
    fn an_empty_file_is_a_valid_config() {
        assert_eq!(SupervisorConfig::parse("").unwrap(), SupervisorConfig::default());
    }
}
