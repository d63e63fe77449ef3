//! Every problem of the supervisor's part of a config, for `switchboard
//! check` and before a reload: each `[services.NAME]` validated on its own
//! (so one mistake does not hide the next), dependencies, and what would
//! only fail once applied — a command that is not there or not executable,
//! a working directory, user or group that does not exist.
//!
//! Reads the file system and the user database; starts nothing.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use switchboard_daemon::host::users::{lookup_group, lookup_user};
use switchboard_daemon::host::{ConfigError, Section};

use crate::config::{self, ServiceSpec};

/// Every problem, in file order; empty when the section is good.
pub fn problems(section: &Section<'_>) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    let mut services = Vec::new();
    let entries = section.entries("services");
    for (_, entry) in &entries {
        match config::service_of(entry) {
            Ok(specs) => {
                for spec in &specs {
                    let what = format!("service {}", spec.name);
                    problems
                        .extend(host_problems(spec).into_iter().map(|message| entry.invalid(&what, message)));
                }
                services.extend(specs);
            }
            Err(err) => problems.push(err),
        }
    }
    problems.extend(config::logs_problem(section));
    let names: Vec<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
    for problem in dependency_problems(&services, &names) {
        // Named at the service's own table.
        let at = entries.iter().find(|(name, _)| problem.is_about(name)).map_or(section, |(_, entry)| entry);
        problems.push(problem.into_error(at));
    }
    problems
}

/// What the machine would refuse when the service starts.
fn host_problems(spec: &ServiceSpec) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(dir) = &spec.directory {
        if !dir.is_dir() {
            problems.push(format!("directory {} does not exist", dir.display()));
        }
    }
    if let Err(why) = find_command(spec) {
        problems.push(why);
    }
    if let Some(user) = spec.user.as_deref().filter(|user| lookup_user(user).is_none()) {
        problems.push(format!("user {user:?} does not exist"));
    }
    if let Some(group) = spec.group.as_deref().filter(|group| lookup_group(group).is_none()) {
        problems.push(format!("group {group:?} does not exist"));
    }
    problems
}

/// The program `command` names, as the service's process would find it: a
/// path (relative ones from its directory), else looked up in its `PATH`.
fn find_command(spec: &ServiceSpec) -> Result<PathBuf, String> {
    let command = Path::new(&spec.command);
    if spec.command.contains('/') {
        let path = match (&spec.directory, command.is_relative()) {
            (Some(dir), true) => dir.join(command),
            _ => command.to_owned(),
        };
        return executable(&path).map(|()| path);
    }
    let search =
        spec.environment.get("PATH").cloned().or_else(|| std::env::var("PATH").ok()).unwrap_or_default();
    std::env::split_paths(&search)
        .map(|dir| dir.join(command))
        .find(|candidate| executable(candidate).is_ok())
        .ok_or_else(|| format!("command {:?} is not found in PATH ({search})", spec.command))
}

fn executable(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(meta) if meta.is_file() => Err(format!("command {} is not executable", path.display())),
        Ok(_) => Err(format!("command {} is not a file", path.display())),
        Err(err) => Err(format!("command {}: {err}", path.display())),
    }
}

/// Requirements naming no service (`known` lists every service the file
/// declares), then a dependency cycle.
pub(crate) fn dependency_problems(services: &[ServiceSpec], known: &[&str]) -> Vec<config::Invalid> {
    let mut problems = Vec::new();
    for spec in services {
        for dep in spec.requires.iter().filter(|dep| !known.contains(&dep.as_str())) {
            problems.push(config::invalid(spec.name.as_str(), format!("requires unknown service {dep:?}")));
        }
    }
    if let Some(cycle) = find_cycle(services) {
        problems.push(config::invalid(&cycle[0], format!("dependency cycle: {}", cycle.join(" → "))));
    }
    problems
}

/// A dependency cycle, as the names along it, if there is one.
fn find_cycle(services: &[ServiceSpec]) -> Option<Vec<String>> {
    let requires: HashMap<&str, &[String]> =
        services.iter().map(|s| (s.name.as_str(), s.requires.as_slice())).collect();
    fn visit<'a>(
        name: &'a str,
        requires: &HashMap<&'a str, &'a [String]>,
        path: &mut Vec<&'a str>,
        done: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| *p == name) {
            let mut cycle: Vec<String> = path[at..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(name.to_owned());
            return Some(cycle);
        }
        if done.contains(&name) {
            return None;
        }
        path.push(name);
        for dep in requires.get(name).copied().unwrap_or_default() {
            if let Some(cycle) = visit(dep, requires, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.push(name);
        None
    }
    let mut done = Vec::new();
    services.iter().find_map(|s| visit(s.name.as_str(), &requires, &mut Vec::new(), &mut done))
}
