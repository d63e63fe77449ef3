//! Payload schemas of the supervisor's service, `$sys.services`, and of the
//! control calls it makes to bus-aware services. MessagePack maps with the
//! field names below, like every `$sys.*` schema.

use serde::{Deserialize, Serialize};

/// `$sys.services` — the supervisor.
pub const SERVICES_SERVICE: &str = "$sys.services";
/// `status`: [`ServiceRef`] (empty name = all); replies `Vec<ServiceStatus>`.
pub const STATUS: &str = "status";
/// `start`, `stop`, `restart`, `pause`, `continue`: [`ServiceRef`]; reply
/// the [`ServiceStatus`] once the service reached the resulting state.
pub const START: &str = "start";
pub const STOP: &str = "stop";
pub const RESTART: &str = "restart";
pub const PAUSE: &str = "pause";
pub const CONTINUE: &str = "continue";
/// `control`: [`ControlRequest`] with a custom code 128–255; replies the
/// service's reply payload (one per instance, as `Vec<ControlReply>`).
pub const CONTROL: &str = "control";
/// `reload`: no arguments; re-reads the config file, replies [`ReloadReport`].
pub const RELOAD: &str = "reload";
/// Re-execute the daemon from its binary on disk, keeping its sockets and
/// services (`switchboard reexec`); answers the successor's binary.
pub const REEXEC: &str = "reexec";
/// `logs`: [`LogQuery`]; replies `Vec<LogLine>`, oldest first.
pub const LOGS: &str = "logs";
/// `attach`: [`Attach`], sent by a bus-aware instance with the secret the
/// supervisor gave it; replies nothing. The instance is then Running.
pub const ATTACH: &str = "attach";
/// `progress`: [`Progress`] from an attached instance while a control is pending.
pub const PROGRESS: &str = "progress";
/// `log` (a notification): [`LogEvent`] from an attached instance.
pub const LOG: &str = "log";

/// Topic prefix of state changes: `sys.services.<name>` carries a retained
/// [`ServiceStatus`] after every transition.
pub const STATE_TOPIC_PREFIX: &str = "sys.services.";
/// Topic prefix of captured log lines: `sys.logs.<name>` carries [`LogLine`]s.
pub const LOG_TOPIC_PREFIX: &str = "sys.logs.";

/// The method a bus-aware instance serves controls on. Only the daemon may
/// call methods whose name starts with `__`.
pub const CONTROL_METHOD: &str = "__control";

/// Environment variables the supervisor sets for each instance.
pub const ENV_SERVICE: &str = "SWITCHBOARD_SERVICE";
pub const ENV_INSTANCE: &str = "SWITCHBOARD_INSTANCE";
pub const ENV_SECRET: &str = "SWITCHBOARD_INSTANCE_SECRET";
pub const ENV_ADDR: &str = "SWITCHBOARD_ADDR";

/// Control codes on the wire; 128–255 are the service's own.
pub const CODE_STOP: u8 = 1;
pub const CODE_PAUSE: u8 = 2;
pub const CODE_CONTINUE: u8 = 3;
pub const CODE_RELOAD: u8 = 4;
pub const FIRST_CUSTOM_CODE: u8 = 128;

/// A service by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRef {
    pub service: String,
}

/// `$sys.services.control` arguments, and the payload of a `__control` call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRequest {
    pub service: String,
    pub code: u8,
    #[serde(with = "crate::sys::serde_bytes_compat")]
    pub payload: Vec<u8>,
}

/// One instance's answer to a custom control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    pub instance: u32,
    #[serde(with = "crate::sys::serde_bytes_compat")]
    pub payload: Vec<u8>,
}

/// A bus-aware instance announcing itself to the supervisor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attach {
    /// The secret from `SWITCHBOARD_INSTANCE_SECRET`.
    pub secret: String,
    /// The bus instance (of this connection) that serves `__control`.
    pub control_instance: u64,
    /// Control codes it accepts besides stop (pause implies continue).
    pub accepts: Vec<u8>,
}

/// Progress of a pending control, from the instance handling it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Must grow for the supervisor to see progress.
    pub checkpoint: u32,
    /// How much longer the instance expects to need.
    pub wait_hint_ms: u64,
    pub status: String,
}

/// A structured event an attached instance logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvent {
    /// A syslog severity name (see [`SEVERITIES`]; `warn`, `error`, `fatal` are accepted).
    pub level: String,
    pub message: String,
    pub fields: Vec<(String, String)>,
    /// The event's own identifier (`cache.warmed`), if it has one: what a
    /// program matches on instead of the message text.
    #[serde(default)]
    pub id: String,
}

/// Syslog severities, most severe first; a line's `level` is one of them.
pub const SEVERITIES: [&str; 8] = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];

/// The severity number (0 = emerg … 7 = debug) of a level name, accepting
/// the usual spellings (`error`, `warn`, `critical`, `fatal`, `panic`).
pub fn severity(name: &str) -> Option<u8> {
    let name = name.trim().to_ascii_lowercase();
    let canonical = match name.as_str() {
        "panic" => "emerg",
        "fatal" | "critical" => "crit",
        "error" => "err",
        "warn" => "warning",
        "trace" => "debug",
        other => other,
    };
    SEVERITIES.iter().position(|s| *s == canonical).and_then(|at| u8::try_from(at).ok())
}

/// `$sys.services.logs` arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    pub service: String,
    /// Only lines at or after this time (Unix milliseconds); 0 = all.
    pub since_ms: u64,
    /// Only lines containing this text; empty = all.
    pub grep: String,
    /// At most this many (the newest); 0 = the default of 1,000.
    pub limit: u32,
    /// Only lines at least this severe (`warning` also shows err, crit…); empty = all.
    #[serde(default)]
    pub level: String,
}

/// One captured line (or structured event) of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Per-service sequence number; follows resume after the last one seen.
    pub seq: u64,
    /// Unix milliseconds.
    pub ts_ms: u64,
    pub service: String,
    pub instance: u32,
    /// `stdout`, `stderr`, `event` or `supervisor`.
    pub stream: String,
    pub line: String,
    /// Its severity, one of [`SEVERITIES`] (older lines without one read as `info`).
    #[serde(default = "default_level")]
    pub level: String,
    /// A structured event's identifier, if it gave one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
}

fn default_level() -> String {
    "info".to_owned()
}

/// What `reload` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
}

/// A supervised service as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub service: String,
    /// The service's state: that of its instances when they agree, else the
    /// least settled one (a pending state, then Failed, Stopped, Paused, Running).
    pub state: String,
    pub start_type: String,
    pub instances: Vec<InstanceStatus>,
    /// Services this one starts after.
    pub requires: Vec<String>,
    /// Set while a start, stop or control is refused or failed.
    pub last_error: String,
    /// How it came to be where it is, when that is worth knowing: it was
    /// started again because the previous daemon was killed without
    /// stopping it (its processes died with that daemon).
    #[serde(default)]
    pub note: String,
}

/// One instance of a supervised service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub instance: u32,
    pub state: String,
    pub pid: Option<u32>,
    /// `STATUS=` from sd_notify, or the instance's progress status.
    pub status: String,
    /// `healthy`, `unhealthy (N failures)`, or empty with no health check.
    pub health: String,
    /// Restarts counted in the current budget window.
    pub restarts: u32,
    /// When the next restart happens, if one is scheduled (ms from now).
    pub restart_in_ms: Option<u64>,
    /// Whether it attached over the bus (controls go to it as calls).
    pub bus_aware: bool,
    /// How the last process ended, e.g. `exit 3` or `signal 9`.
    pub last_exit: String,
    pub uptime_ms: u64,
}
