//! cgroup v2 memory and CPU limits, where the machine lets the daemon create
//! child cgroups of its own. Where it does not (no cgroup2 mount, read-only
//! in a container, controllers not delegated), the limit is skipped with a
//! logged notice and the service runs without it.

use std::path::{Path, PathBuf};

use super::config::CgroupLimits;

const CPU_PERIOD_US: u64 = 100_000;

/// A cgroup created for one instance; removed when dropped (once empty).
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Creates `<daemon's cgroup>/switchboard-<name>` with the limits and moves
    /// `pid` into it. Returns `None` (after a logged notice) where it cannot.
    pub fn apply(name: &str, limits: &CgroupLimits, pid: u32) -> Option<Cgroup> {
        if limits.memory_max.is_none() && limits.cpu_percent.is_none() {
            return None;
        }
        match Self::try_apply(name, limits, pid) {
            Ok(cgroup) => Some(cgroup),
            Err(why) => {
                tracing::info!(instance = name, "cgroup limits skipped: {why}");
                None
            }
        }
    }

    fn try_apply(name: &str, limits: &CgroupLimits, pid: u32) -> Result<Cgroup, String> {
        let own =
            std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
        let relative = own
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
            .ok_or("this machine has no cgroup v2 hierarchy")?;
        let parent = Path::new("/sys/fs/cgroup").join(relative.trim_start_matches('/'));
        let path = parent.join(format!("switchboard-{name}"));
        let write = |file: &str, value: String| {
            std::fs::write(path.join(file), value).map_err(|e| format!("{}: {e}", path.join(file).display()))
        };
        std::fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let cgroup = Cgroup { path: path.clone() };
        if let Some(bytes) = limits.memory_max {
            write("memory.max", bytes.to_string())?;
        }
        if let Some(percent) = limits.cpu_percent {
            write("cpu.max", format!("{} {CPU_PERIOD_US}", CPU_PERIOD_US * u64::from(percent) / 100))?;
        }
        write("cgroup.procs", pid.to_string())?;
        Ok(cgroup)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}
