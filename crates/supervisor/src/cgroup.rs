//! cgroup v2 memory and CPU limits for supervised services.
//!
//! They work where the daemon owns a delegated cgroup v2 subtree — under
//! systemd, `Delegate=yes` in its unit (`switchboard install` writes it).
//! The first limited instance prepares the subtree once: the daemon moves
//! itself into a leaf (`<own>/switchboard-daemon`, because a cgroup that
//! hands controllers to its children may hold no processes itself), then
//! enables `memory` and `cpu` for its children; each instance gets
//! `<own>/switchboard-<service>-<n>`. Where that cannot be done — no cgroup v2
//! hierarchy mounted (a v1 or hybrid layout, as on machines without systemd),
//! controllers not delegated, no permission — [`Cgroup::apply`] says why, and
//! the supervisor notes it in the service's log; the service runs without
//! the limits.
//!
//! The parsing of `/proc/self/mountinfo` and `/proc/self/cgroup` is pure and
//! unit-tested; the rest writes the cgroup file system.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::config::CgroupLimits;

const CPU_PERIOD_US: u64 = 100_000;
const CONTROLLERS: [&str; 2] = ["memory", "cpu"];

/// A cgroup created for one instance; removed when dropped (once empty).
pub struct Cgroup {
    path: PathBuf,
}

/// The daemon's delegated subtree, prepared once (or why it cannot be).
static SUBTREE: OnceLock<Result<PathBuf, String>> = OnceLock::new();

impl Cgroup {
    /// Creates the instance's cgroup with the limits and moves `pid` into
    /// it. `Ok(None)`: the service asks for no limits. `Err`: why they could
    /// not be applied.
    pub fn apply(name: &str, limits: &CgroupLimits, pid: u32) -> Result<Option<Cgroup>, String> {
        if limits.memory_max.is_none() && limits.cpu_percent.is_none() {
            return Ok(None);
        }
        let subtree = SUBTREE.get_or_init(prepare_subtree).clone()?;
        let path = subtree.join(format!("switchboard-{name}"));
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
        Ok(Some(cgroup))
    }
}

impl Cgroup {
    /// The cgroup a predecessor daemon made for an instance it handed on.
    pub fn adopt(path: PathBuf) -> Cgroup {
        Cgroup { path }
    }

    /// Its path, for a successor daemon; the directory stays.
    pub fn keep(mut self) -> PathBuf {
        std::mem::take(&mut self.path)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once kept for a successor.
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// Finds the daemon's own cgroup v2 directory, moves the daemon into a leaf
/// below it and enables the controllers for its children.
fn prepare_subtree() -> Result<PathBuf, String> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let mount = cgroup2_mount(&mountinfo).ok_or(
        "this machine mounts no cgroup v2 hierarchy (a cgroup v1 or hybrid layout): \
         run the daemon where /sys/fs/cgroup is cgroup2, e.g. under systemd with Delegate=yes",
    )?;
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let relative = unified_path(&own)
        .ok_or("the daemon is in no cgroup v2 group (/proc/self/cgroup has no 0:: line)")?;
    let base = mount.join(relative.trim_start_matches('/'));
    let read = |file: &str| std::fs::read_to_string(base.join(file)).unwrap_or_default();
    let available = read("cgroup.controllers");
    let missing: Vec<&str> =
        CONTROLLERS.iter().copied().filter(|c| !available.split_whitespace().any(|a| a == *c)).collect();
    if !missing.is_empty() {
        let on_v1 = v1_controllers(&mountinfo);
        if missing.iter().all(|c| on_v1.contains(c)) {
            return Err(format!(
                "this machine has a hybrid cgroup layout: {} are bound to cgroup v1 hierarchies, not to the \
                 cgroup v2 one at {} (limits need a unified cgroup v2 layout, as systemd sets up by default)",
                missing.join(" and "),
                mount.display()
            ));
        }
        return Err(format!(
            "the controllers {} are not delegated to the daemon's cgroup {} (run it with Delegate=yes)",
            missing.join(", "),
            base.display()
        ));
    }
    let leaf = base.join("switchboard-daemon");
    let denied = |what: &str, err: std::io::Error| {
        format!("cannot {what} in {}: {err} (is it delegated to this user?)", base.display())
    };
    if !read("cgroup.procs").trim().is_empty() {
        std::fs::create_dir_all(&leaf).map_err(|e| denied("create the daemon's leaf cgroup", e))?;
        std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| denied("move the daemon into its leaf cgroup", e))?;
    }
    let enable: Vec<String> = CONTROLLERS.iter().map(|c| format!("+{c}")).collect();
    std::fs::write(base.join("cgroup.subtree_control"), enable.join(" "))
        .map_err(|e| denied("enable memory and cpu for the services", e))?;
    tracing::info!(cgroup = %base.display(), "cgroup v2 subtree delegated: memory_max and cpu_max apply");
    Ok(base)
}

/// The mount point of the cgroup v2 file system, from `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // mount-id parent major:minor root mount-point options… - fstype source super-options
        let (before, after) = line.split_once(" - ")?;
        let fstype = after.split_whitespace().next()?;
        (fstype == "cgroup2").then(|| before.split_whitespace().nth(4).map(PathBuf::from)).flatten()
    })
}

/// Controllers mounted as cgroup v1 hierarchies (`memory`, `cpu`, …).
fn v1_controllers(mountinfo: &str) -> Vec<&str> {
    mountinfo
        .lines()
        .filter_map(|line| line.split_once(" - ").map(|(_, after)| after))
        .filter(|after| after.starts_with("cgroup "))
        .filter_map(|after| after.split_whitespace().nth(2))
        .flat_map(|options| options.split(','))
        .collect()
}

/// The unified (`0::`) path of `/proc/self/cgroup`.
fn unified_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|line| line.strip_prefix("0::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hybrid_layout_has_no_cgroup2_mount_and_a_unified_one_does() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n";
        assert_eq!(cgroup2_mount(hybrid), None);
        assert!(v1_controllers(hybrid).contains(&"memory"));
        let unified = "30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_mount(unified), Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn the_unified_path_is_the_0_line() {
        assert_eq!(
            unified_path("4:memory:/x\n0::/system.slice/switchboard.service\n"),
            Some("/system.slice/switchboard.service")
        );
        assert_eq!(unified_path("4:memory:/x\n"), None);
    }
}
