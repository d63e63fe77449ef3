//! Starting and signalling an instance's processes.
//!
//! Every instance runs in its own session (and so its own process group),
//! so a signal reaches the whole tree it forked and the daemon can tell its
//! processes from a sibling's by session id; the user, group, nice level
//! and rlimits are set in the child between fork and exec, and
//! no-new-privileges always. A child inherits only its standard streams:
//! every other descriptor is closed on exec, whoever opened it.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};

use rustix::process::{Pid, PidfdFlags, Resource, Rlimit, Signal, WaitOptions};
use tokio::io::unix::AsyncFd;

use super::config::ServiceSpec;
use switchboard_daemon::host::users::{lookup_group, lookup_user};

/// Why an instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    #[error(
        "refusing to run as root: set `user = \"...\"`, or `run_as_root = true` if it really needs root"
    )]
    WouldRunAsRoot,
    #[error("cannot start {command:?}: {source}")]
    Exec { command: String, source: std::io::Error },
}

/// The identity a service runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// Resolves `user` / `group` of a spec, refusing root unless allowed.
pub fn run_as(spec: &ServiceSpec) -> Result<Option<RunAs>, SpawnError> {
    let user = match &spec.user {
        Some(name) => Some(lookup_user(name).ok_or_else(|| SpawnError::UnknownUser(name.clone()))?),
        None => None,
    };
    let gid = match &spec.group {
        Some(name) => Some(lookup_group(name).ok_or_else(|| SpawnError::UnknownGroup(name.clone()))?),
        None => user.map(|(_, gid)| gid),
    };
    let uid = user.map(|(uid, _)| uid).unwrap_or_else(|| rustix::process::geteuid().as_raw());
    if uid == 0 && !spec.run_as_root {
        return Err(SpawnError::WouldRunAsRoot);
    }
    Ok(match (user, gid) {
        (None, None) => None,
        _ => Some(RunAs { uid, gid: gid.unwrap_or_else(|| rustix::process::getegid().as_raw()) }),
    })
}

/// A started instance: its pid and the read ends of its output pipes.
///
/// Nothing here waits for it by itself: [`wait`] does, through a pidfd, and
/// works the same for a process this daemon process spawned and for one it
/// took over from the process it replaced (`switchboard reexec`).
pub struct Spawned {
    pub pid: u32,
    /// The read ends of its stdout and stderr (none for a process taken
    /// over without them).
    pub output: Option<[OwnedFd; 2]>,
}

/// Starts one instance with piped stdout/stderr in a new process group.
pub fn spawn(spec: &ServiceSpec, env: &BTreeMap<String, String>) -> Result<Spawned, SpawnError> {
    let identity = run_as(spec)?;
    let mut command = Command::new(&spec.command);
    command
        .args(&spec.args)
        .envs(&spec.environment)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    inherit_only_stdio(&mut command);
    if let Some(dir) = &spec.directory {
        command.current_dir(dir);
    }
    if let Some(RunAs { uid, gid }) = identity {
        // std drops supplementary groups (setgroups(0)) when it changes the
        // uid as root, before setgid/setuid.
        command.uid(uid).gid(gid);
    }
    let limits: Vec<(Resource, u64)> =
        spec.rlimits.iter().filter_map(|(name, value)| Some((resource(name)?, *value))).collect();
    let nice = spec.nice;
    limit_child(&mut command, limits, nice);
    let failed = |source| SpawnError::Exec { command: spec.command.clone(), source };
    let mut child = command.spawn().map_err(failed)?;
    let pipe = |fd: Option<OwnedFd>| fd.ok_or_else(|| failed(std::io::Error::other("no output pipe")));
    let stdout = pipe(child.stdout.take().map(OwnedFd::from))?;
    let stderr = pipe(child.stderr.take().map(OwnedFd::from))?;
    // Dropping a std `Child` neither waits for nor kills it.
    Ok(Spawned { pid: child.id(), output: Some([stdout, stderr]) })
}

/// Waits for the instance process `pid` (a child of this process) to end
/// and reaps it. Fails at once if there is no such child (it ended and was
/// reaped before this process took it over).
#[allow(unsafe_code)]
pub async fn wait(pid: u32) -> std::io::Result<ExitStatus> {
    let raw = i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or(std::io::ErrorKind::InvalidInput)?;
    // A pidfd turns readable when the process ends; it needs Linux 5.3.
    let pidfd = rustix::process::pidfd_open(raw, PidfdFlags::empty())?;
    // SAFETY: the `OwnedFd` moves into the `AsyncFd`, which owns it (and so
    // keeps that same descriptor open) until it is dropped.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|err| err.into_parts().1)?;
    loop {
        let mut ready = pidfd.readable().await?;
        // Our own child, not reaped by anyone else, so its pid is not reused
        // before this returns it.
        match rustix::process::waitpid(Some(raw), WaitOptions::NOHANG)? {
            Some((_, status)) => return Ok(ExitStatus::from_raw(status.as_raw())),
            None => ready.clear_ready(),
        }
    }
}

/// Applies no-new-privileges, the parent-death signal, rlimits and the nice
/// level in the child (after std changed its user and group, so limits can
/// only be lowered for a service that runs as another user).
///
/// The parent-death signal is tied to the *thread* that forks: spawning is
/// done on the thread that would `execve` for a hand-off (the runtime's only
/// thread with `up --threads 1`), so a reexec keeps every instance alive.
#[allow(unsafe_code)]
fn limit_child(command: &mut Command, limits: Vec<(Resource, u64)>, nice: Option<i32>) {
    // SAFETY: the closure runs in the forked child before exec; it only makes
    // raw system calls through rustix (prctl, setrlimit, setpriority), which
    // neither allocate nor take locks, so it is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            rustix::process::setsid()?;
            rustix::thread::set_no_new_privs(true)?;
            // If the daemon dies (kill -9), its instances die with it rather
            // than run on unsupervised.
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            for (resource, value) in &limits {
                rustix::process::setrlimit(
                    *resource,
                    Rlimit { current: Some(*value), maximum: Some(*value) },
                )?;
            }
            if let Some(nice) = nice {
                rustix::process::setpriority_process(None, nice)?;
            }
            Ok(())
        });
    }
}

/// Makes every descriptor above the standard streams close on exec in
/// the child, so nothing the daemon holds (client connections, the queue
/// log, the supervisor's own connection) leaks into a service or a health
/// check, even a descriptor some library opened without `O_CLOEXEC`.
#[allow(unsafe_code)]
pub fn inherit_only_stdio(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and makes one
    // raw system call (close_range), which neither allocates nor locks.
    unsafe {
        command.pre_exec(|| {
            // SAFETY: close_range takes plain integers; with
            // CLOSE_RANGE_CLOEXEC it only sets flags on descriptors.
            let done = libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
            let errno = std::io::Error::last_os_error();
            // Kernels before 5.11 do not know the flag: every descriptor the
            // daemon opens is close-on-exec anyway.
            if done != 0 && !matches!(errno.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) {
                return Err(errno);
            }
            Ok(())
        });
    }
}

fn resource(name: &str) -> Option<Resource> {
    Some(match name {
        "nofile" => Resource::Nofile,
        "nproc" => Resource::Nproc,
        "core" => Resource::Core,
        "as" => Resource::As,
        "data" => Resource::Data,
        "stack" => Resource::Stack,
        "fsize" => Resource::Fsize,
        "memlock" => Resource::Memlock,
        "cpu" => Resource::Cpu,
        _ => return None,
    })
}

/// Sends `signal` to the whole process group led by `pid`. A group that is
/// already gone is not an error.
pub fn signal_group(pid: u32, signal: Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else { return };
    if let Err(err) = rustix::process::kill_process_group(pid, signal) {
        if err != rustix::io::Errno::SRCH {
            tracing::warn!(pid = pid.as_raw_pid(), "cannot signal process group: {err}");
        }
    }
}

/// A short description of how a process ended: `exit 3`, `signal 9`.
pub fn describe_exit(status: &ExitStatus) -> (String, bool) {
    match (status.code(), status.signal()) {
        (Some(0), _) => ("exit 0".into(), false),
        (Some(code), _) => (format!("exit {code}"), true),
        (None, Some(signal)) => (format!("signal {signal}"), true),
        (None, None) => ("ended".into(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_numeric_ids_resolve_from_the_system_files() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("0"), Some((0, 0)));
        assert_eq!(lookup_group("root"), Some(0));
        assert_eq!(lookup_user("no-such-user-here"), None);
    }
}
