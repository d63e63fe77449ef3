//! `switchboard check`: one deliberately broken config per class of problem,
//! each reported with its file, line and key, exit code 1; clean configs
//! (the examples', the one `install` writes) pass with 0; and `reload` runs
//! the same check and refuses a file that fails it.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::process::Command;

use support::{Daemon, BIN};

/// Runs `check` on `text`; returns (exit code, every line it printed).
fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN).args(["check", "--config"]).arg(&path).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).replace(&path.display().to_string(), "FILE");
    (out.status.code().unwrap_or(-1), said)
}

fn fails_with(text: &str, expected: &[&str]) {
    let (code, said) = check(text);
    assert_eq!(code, 1, "{said}");
    for line in expected {
        assert!(said.contains(line), "expected {line:?} in:\n{said}");
    }
}

#[test]
fn syntax_errors_name_their_line() {
    fails_with("[services.web]\ncommand = \"sh\"\nargs = [\"-c\"\n", &["config FILE, line 3: "]);
}

#[test]
fn unknown_sections_and_keys_are_each_reported() {
    fails_with(
        "[colours]\nred = 1\n\n[services.web]\ncommand = \"sh\"\ncolour = \"red\"\n\n[logs]\nkeep = 3\n",
        &[
            "config FILE, line 1: unknown section `colours`",
            "config FILE, line 6: unknown field `colour`",
            "unknown field `keep`",
        ],
    );
}

#[test]
fn bad_policy_rules_are_reported() {
    fails_with(
        "[[policy]]\nprincipal = \"user:root\"\nallow = [\"fly billing\"]\n",
        &["policy for user:root: unknown operation \"fly\" in \"fly billing\""],
    );
}

#[test]
fn commands_that_are_missing_or_not_executable_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    fails_with(
        &format!(
            "[services.a]\ncommand = \"/nonexistent/server\"\n\n[services.b]\ncommand = {plain:?}\n\n\
             [services.c]\ncommand = \"no-such-program-anywhere\"\n\n[services.d]\ncommand = \"sh\"\ndirectory = \"/nonexistent\"\n"
        ),
        &[
            "config FILE, line 1: service a: command /nonexistent/server: No such file",
            "line 4: service b: command",
            "is not executable",
            "line 7: service c: command \"no-such-program-anywhere\" is not found in PATH",
            "line 10: service d: directory /nonexistent does not exist",
        ],
    );
}

#[test]
fn users_and_groups_that_do_not_exist_are_reported() {
    fails_with(
        "[services.web]\ncommand = \"sh\"\nuser = \"no-such-user-here\"\ngroup = \"no-such-group-here\"\n",
        &[
            "line 1: service web: user \"no-such-user-here\" does not exist",
            "line 1: service web: group \"no-such-group-here\" does not exist",
        ],
    );
}

#[test]
fn dependency_cycles_and_unknown_requirements_are_reported() {
    fails_with(
        "[services.web]\ncommand = \"sh\"\nrequires = [\"db\", \"ghost\"]\n\n[services.db]\ncommand = \"sh\"\nrequires = [\"web\"]\n",
        &["line 1: service web: requires unknown service \"ghost\"", "dependency cycle: "],
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let (code, said) = check(
        "[services.a]\ncommand = \"/nonexistent/a\"\n\n[services.b]\ncommand = \"sh\"\nrestart = \"sometimes\"\n\n\
         [services.c]\ncommand = \"sh\"\nuser = \"no-such-user-here\"\n",
    );
    assert_eq!(code, 1);
    assert_eq!(said.lines().count(), 3, "{said}");
}

#[test]
fn clean_configs_pass_the_examples_and_the_installed_default() {
    let (code, said) = check("[services.web]\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 1\"]\n");
    assert_eq!((code, said.trim_end()), (0, "FILE: no problems"));
    let demo = Command::new(BIN).args(["check", "--demo", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&demo.stdout).unwrap();
    assert!(demo.status.success() && report["valid"] == true, "{report}");
    let root = tempfile::tempdir().unwrap();
    let install = Command::new(BIN).args(["install", "--root"]).arg(root.path()).output().unwrap();
    assert!(install.status.success());
    let config = root.path().join("etc/switchboard/switchboard.toml");
    let installed = Command::new(BIN).args(["check", "--config"]).arg(&config).output().unwrap();
    assert!(installed.status.success(), "{}", String::from_utf8_lossy(&installed.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_runs_the_same_check_and_refuses_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchboard.toml");
    std::fs::write(&config, "").unwrap();
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    std::fs::write(&config, "[services.web]\ncommand = \"/nonexistent/web\"\n").unwrap();
    let out = daemon.cli(&["reload"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("reload refused") && said.contains("/nonexistent/web"),
        "{said}"
    );
    let status = daemon.cli(&["status", "--json"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&status.stdout).trim(),
        "[]",
        "nothing of the refused file was applied"
    );
}
