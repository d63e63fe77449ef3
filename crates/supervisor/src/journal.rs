//! Sending log lines on to the machine's logger: the systemd journal (its
//! native datagram protocol, as `sd_journal_send` speaks it) or syslog
//! (RFC 3164 datagrams to `/dev/log`, as `logger` sends them).
//!
//! A service with `log = "journal"` sends every line there as well as to its
//! files; `[logs] forward = "warning"` sends every line at least that severe,
//! of every service, to `forward_to` (journal or syslog). The socket paths
//! are configurable (`journal_socket`, `syslog_socket`), so a machine
//! without journald — or a test — can point them at its own listener.
//!
//! Encoding is pure and unit-tested; sending never blocks and never fails a
//! service: a logger that is not there costs one warning.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use switchboard_proto::supervision::LogLine;

/// Where lines go besides the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogForwarding {
    pub journal_socket: PathBuf,
    pub syslog_socket: PathBuf,
    /// Lines at least this severe (0 emerg … 7 debug) go to `forward_to`.
    pub forward: Option<u8>,
    pub forward_to: ForwardTo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardTo {
    Journal,
    Syslog,
}

impl Default for LogForwarding {
    fn default() -> Self {
        Self {
            journal_socket: "/run/systemd/journal/socket".into(),
            syslog_socket: "/dev/log".into(),
            forward: None,
            forward_to: ForwardTo::Journal,
        }
    }
}

/// The open sockets (unbound datagram sockets, sending to the paths).
pub struct Forwarder {
    settings: LogForwarding,
    socket: Option<UnixDatagram>,
    warned: AtomicBool,
}

impl Forwarder {
    pub fn new(settings: LogForwarding) -> Self {
        Self { settings, socket: UnixDatagram::unbound().ok(), warned: AtomicBool::new(false) }
    }

    /// Sends `line` where it should go: to the journal if its service logs
    /// there, and to the forward target if it is severe enough.
    pub fn send(&self, line: &LogLine, service_to_journal: bool, pid: Option<u32>) {
        let severity = switchboard_proto::supervision::severity(&line.level).unwrap_or(6);
        let forwarded = self.settings.forward.is_some_and(|at_least| severity <= at_least);
        let journal = service_to_journal || (forwarded && self.settings.forward_to == ForwardTo::Journal);
        if journal {
            self.deliver(&self.settings.journal_socket, &journal_entry(line, severity, pid));
        }
        if forwarded && self.settings.forward_to == ForwardTo::Syslog {
            self.deliver(&self.settings.syslog_socket, &syslog_entry(line, severity, pid));
        }
    }

    fn deliver(&self, path: &std::path::Path, datagram: &[u8]) {
        let Some(socket) = &self.socket else { return };
        if let Err(err) = socket.send_to(datagram, path) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!("cannot send service logs to {}: {err} (said once)", path.display());
            }
        }
    }
}

/// The journal's native protocol: `FIELD=value\n` per field; a value with a
/// newline as `FIELD\n`, its length (u64 little-endian), the bytes, `\n`.
pub fn journal_entry(line: &LogLine, severity: u8, pid: Option<u32>) -> Vec<u8> {
    let mut fields: Vec<(&str, String)> = vec![
        ("MESSAGE", line.line.clone()),
        ("PRIORITY", severity.to_string()),
        ("SYSLOG_IDENTIFIER", line.service.clone()),
        ("SWITCHBOARD_SERVICE", line.service.clone()),
        ("SWITCHBOARD_INSTANCE", line.instance.to_string()),
        ("SWITCHBOARD_STREAM", line.stream.clone()),
        ("SWITCHBOARD_SEQ", line.seq.to_string()),
    ];
    if let Some(pid) = pid {
        fields.push(("SYSLOG_PID", pid.to_string()));
    }
    if !line.id.is_empty() {
        fields.push(("SWITCHBOARD_EVENT_ID", line.id.clone()));
    }
    let mut out = Vec::new();
    for (key, value) in fields {
        if value.contains('\n') {
            out.extend_from_slice(key.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        } else {
            out.extend_from_slice(format!("{key}={value}").as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// An RFC 3164 datagram, facility `daemon`: `<PRI>TAG[PID]: MESSAGE` (the
/// receiving syslog daemon stamps the time and host).
pub fn syslog_entry(line: &LogLine, severity: u8, pid: Option<u32>) -> Vec<u8> {
    const DAEMON: u8 = 3;
    let priority = DAEMON * 8 + severity;
    let pid = pid.map(|pid| format!("[{pid}]")).unwrap_or_default();
    format!("<{priority}>{}{pid}: {}", line.service, line.line.replace('\n', " ")).into_bytes()
}

/// A line's severity from a `<N>` prefix (what systemd's SyslogLevelPrefix
/// and sd-daemon.h's `SD_WARNING` strings write), and the text without it.
pub fn level_prefix(text: &str) -> Option<(u8, &str)> {
    let rest = text.strip_prefix('<')?;
    let digit = rest.as_bytes().first().copied().filter(u8::is_ascii_digit)?;
    let text = rest[1..].strip_prefix('>')?;
    (digit <= b'7').then_some((digit - b'0', text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            seq: 7,
            ts_ms: 1,
            service: "web".into(),
            instance: 2,
            stream: "stderr".into(),
            line: text.into(),
            level: "warning".into(),
            id: String::new(),
        }
    }

    #[test]
    fn journal_fields_are_key_value_lines_and_newlines_are_length_prefixed() {
        let plain = String::from_utf8(journal_entry(&line("disk slow"), 4, Some(42))).unwrap();
        assert!(plain.starts_with("MESSAGE=disk slow\nPRIORITY=4\nSYSLOG_IDENTIFIER=web\n"), "{plain}");
        assert!(plain.contains("SYSLOG_PID=42\n") && plain.ends_with('\n'));
        let multi = journal_entry(&line("a\nb"), 4, None);
        assert!(multi.starts_with(b"MESSAGE\n\x03\0\0\0\0\0\0\0a\nb\nPRIORITY=4\n"), "{multi:?}");
    }

    #[test]
    fn syslog_datagrams_carry_facility_daemon_and_the_severity() {
        assert_eq!(syslog_entry(&line("disk slow"), 4, Some(42)), b"<28>web[42]: disk slow");
    }

    #[test]
    fn level_prefixes_are_read_and_stripped() {
        assert_eq!(level_prefix("<3>failed to bind"), Some((3, "failed to bind")));
        assert_eq!(level_prefix("<8>no"), None);
        assert_eq!(level_prefix("plain"), None);
    }
}
