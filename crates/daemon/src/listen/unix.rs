//! A Unix socket endpoint with its lock file.
//!
//! `bus.sock.lock` beside the socket is held (`flock`) for the daemon's
//! lifetime and holds its pid. A second daemon finds it locked and refuses,
//! naming the pid; a socket file whose lock is free was left by a crash and
//! is replaced. Both files are removed when the endpoint is dropped.
//!
//! A socket handed over by systemd (socket activation) is adopted as it is:
//! no lock file, and its file is left in place — systemd owns it. A socket
//! handed over by the daemon process this one replaced comes with its held
//! lock, and is owned as if bound here.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use switchboard_transport::{default_socket_path, Endpoint};
use tokio::net::UnixListener;

use crate::DaemonError;

/// A bound Unix socket; removes its files when dropped (unless adopted).
pub struct UnixEndpoint {
    listener: UnixListener,
    path: PathBuf,
    /// The lock file, for a socket this daemon bound itself.
    owned: Option<(PathBuf, File)>,
}

impl UnixEndpoint {
    pub fn bind(path: &Path, mode: u32) -> Result<Self, DaemonError> {
        let endpoint = Endpoint::Unix(path.to_owned());
        let failed = |source| DaemonError::Listen { endpoint: endpoint.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            prepare_dir(dir, path == default_socket_path(), mode)?;
        }
        let lock_path = lock_path(path);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(failed)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                return Err(DaemonError::AlreadyRunning {
                    socket: path.to_owned(),
                    pid: pid.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(err)) => return Err(failed(err)),
        }
        lock.set_len(0).map_err(failed)?;
        lock.rewind().map_err(failed)?;
        write!(lock, "{}", std::process::id()).map_err(failed)?;
        if fs::symlink_metadata(path).is_ok() {
            tracing::info!(socket = %path.display(), "replacing a stale socket left by a previous daemon");
            fs::remove_file(path).map_err(failed)?;
        }
        let listener = UnixListener::bind(path).map_err(failed)?;
        // 0600 by default: only the daemon's user may connect; a policy that
        // grants others widens it (`[security] socket_mode`).
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(failed)?;
        Ok(Self { listener, path: path.to_owned(), owned: Some((lock_path, lock)) })
    }

    /// A listening socket this process was given: by systemd's `LISTEN_FDS`
    /// (no lock: the file stays when the daemon stops), or by its
    /// predecessor with the lock it held (owned as if bound here).
    pub fn adopt(
        listener: &std::os::unix::net::UnixListener,
        lock: Option<&File>,
    ) -> Result<Self, DaemonError> {
        let unnamed = || DaemonError::Inherited { why: "an inherited Unix socket has no path".into() };
        let failed =
            |err: std::io::Error| DaemonError::Inherited { why: format!("an inherited Unix socket: {err}") };
        let path =
            listener.local_addr().map_err(failed)?.as_pathname().map(Path::to_owned).ok_or_else(unnamed)?;
        let listener = listener.try_clone().map_err(failed)?;
        listener.set_nonblocking(true).map_err(failed)?;
        let listener = UnixListener::from_std(listener).map_err(failed)?;
        let owned = match lock {
            Some(lock) => Some((lock_path(&path), lock.try_clone().map_err(failed)?)),
            None => None,
        };
        Ok(Self { listener, path, owned })
    }

    /// The socket and its held lock, for a successor; the files stay.
    pub fn hand_over(mut self) -> std::io::Result<(std::os::unix::net::UnixListener, Option<File>)> {
        use std::os::fd::AsFd;
        let listener = self.listener.as_fd().try_clone_to_owned()?.into();
        // Taken out, so dropping `self` leaves both files in place.
        Ok((listener, self.owned.take().map(|(_, lock)| lock)))
    }

    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixEndpoint {
    fn drop(&mut self) {
        if let Some((lock_path, _)) = &self.owned {
            let _ = fs::remove_file(&self.path);
            let _ = fs::remove_file(lock_path);
        }
    }
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut name = OsString::from(socket.as_os_str());
    name.push(".lock");
    PathBuf::from(name)
}

/// Creates the socket's directory: 0700, or 0711 when the socket's mode
/// lets others connect (they may then pass through, not list it). The
/// default directory must be ours and exactly that mode: under /tmp anyone
/// could have made it first.
fn prepare_dir(dir: &Path, is_default: bool, socket_mode: u32) -> Result<(), DaemonError> {
    let bad = |why: String| DaemonError::SocketDir { dir: dir.to_owned(), why };
    let wanted = if socket_mode & 0o077 != 0 { 0o711 } else { 0o700 };
    if is_default {
        return crate::private_dir::ensure(dir, wanted).map_err(bad);
    }
    DirBuilder::new()
        .recursive(true)
        .mode(wanted)
        .create(dir)
        .map_err(|err| bad(format!("cannot create it: {err}")))
}
