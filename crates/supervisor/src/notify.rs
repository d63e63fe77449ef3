//! systemd's notify protocol: the datagram socket each instance finds in
//! `NOTIFY_SOCKET`, and the `KEY=VALUE` lines it sends there.
//!
//! One socket per instance, so a message is attributed to its instance by
//! where it arrives — whichever process of the instance sent it (a shell
//! script's `systemd-notify` child included).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixDatagram;

/// What one notify datagram said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notice {
    pub ready: bool,
    pub reloading: bool,
    pub stopping: bool,
    pub watchdog: bool,
    /// `WATCHDOG=trigger`: the service asks to be treated as hung.
    pub watchdog_trigger: bool,
    pub status: Option<String>,
    pub extend_timeout: Option<Duration>,
}

impl Notice {
    /// Parses a datagram; unknown keys are ignored, as systemd does.
    pub fn parse(datagram: &[u8]) -> Notice {
        let mut notice = Notice::default();
        for line in String::from_utf8_lossy(datagram).lines() {
            let Some((key, value)) = line.split_once('=') else { continue };
            match (key, value) {
                ("READY", "1") => notice.ready = true,
                ("RELOADING", "1") => notice.reloading = true,
                ("STOPPING", "1") => notice.stopping = true,
                ("WATCHDOG", "1") => notice.watchdog = true,
                ("WATCHDOG", "trigger") => notice.watchdog_trigger = true,
                ("STATUS", status) => notice.status = Some(status.to_owned()),
                ("EXTEND_TIMEOUT_USEC", usec) => {
                    notice.extend_timeout = usec.parse().ok().map(Duration::from_micros)
                }
                _ => {}
            }
        }
        notice
    }
}

/// A bound notify socket; removed from the file system when dropped.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path)?;
        Ok(Self { socket, path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next notice; `None` if the socket failed.
    pub async fn next(&self, buf: &mut [u8]) -> Option<Notice> {
        let n = self.socket.recv(buf).await.ok()?;
        Some(Notice::parse(&buf[..n]))
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_key_is_read_and_others_ignored() {
        let notice = Notice::parse(
            b"READY=1\nSTATUS=warming up: 3/4\nWATCHDOG=1\nEXTEND_TIMEOUT_USEC=2500000\nMAINPID=7\nnoise",
        );
        assert!(notice.ready && notice.watchdog && !notice.stopping && !notice.reloading);
        assert_eq!(notice.status.as_deref(), Some("warming up: 3/4"));
        assert_eq!(notice.extend_timeout, Some(Duration::from_millis(2500)));
        let notice = Notice::parse(b"RELOADING=1\nSTOPPING=1\nWATCHDOG=trigger");
        assert!(notice.reloading && notice.stopping && notice.watchdog_trigger && !notice.ready);
    }

    #[tokio::test]
    async fn a_datagram_sent_to_the_socket_path_arrives_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let socket = NotifySocket::bind(&dir.path().join("n.sock")).unwrap();
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        sender.send_to(b"READY=1\nSTATUS=ok", socket.path()).unwrap();
        let notice = socket.next(&mut [0; 4096]).await.unwrap();
        assert!(notice.ready);
        assert_eq!(notice.status.as_deref(), Some("ok"));
        let path = socket.path().to_owned();
        drop(socket);
        assert!(!path.exists());
    }
}
