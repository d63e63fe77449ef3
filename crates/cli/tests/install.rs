//! `switchboard install` / `uninstall` into a temporary root (never the
//! machine's own /etc), checked by systemd's own `systemd-analyze verify`.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use support::BIN;

fn switchboard(args: &[&str], home: &Path) -> Output {
    let out = Command::new(BIN).args(args).env("HOME", home).output().unwrap();
    assert!(out.status.success(), "switchboard {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `systemd-analyze verify` must pass and say nothing (it exits 0 on mere warnings).
fn verify(units: &Path, user: bool, runtime: &Path) {
    let analyze = support::which("systemd-analyze")
        .expect("systemd-analyze is missing: scripts/install-test-deps.sh installs it (package systemd)");
    let mut command = Command::new(analyze);
    if user {
        command.arg("--user").env("XDG_RUNTIME_DIR", runtime);
    }
    let out = command
        .arg("verify")
        .arg(units.join("switchboard.service"))
        .arg(units.join("switchboard.socket"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

#[test]
fn a_system_install_writes_units_that_systemd_accepts_and_uninstall_removes_them() {
    let root = tempfile::tempdir().unwrap();
    let r = |path: &str| root.path().join(path);
    let out = switchboard(&["install", "--root", root.path().to_str().unwrap()], root.path());
    let said = String::from_utf8_lossy(&out.stdout);
    let service = std::fs::read_to_string(r("etc/systemd/system/switchboard.service")).unwrap();
    for line in ["Type=notify", "NotifyAccess=main", "Delegate=yes", "KillMode=mixed", "WatchdogSec=30s"] {
        assert!(service.contains(line), "{line} missing:\n{service}");
    }
    assert!(
        service.contains(&format!("ExecStart={BIN} up --config /etc/switchboard/switchboard.toml")),
        "{service}"
    );
    assert!(service.contains(&format!("ExecReload={BIN} reload --addr unix:/run/switchboard/bus.sock")));
    let socket = std::fs::read_to_string(r("etc/systemd/system/switchboard.socket")).unwrap();
    assert!(socket.contains("ListenStream=/run/switchboard/bus.sock") && socket.contains("SocketMode=0600"));
    verify(&r("etc/systemd/system"), false, root.path());
    for dir in ["var/lib/switchboard", "var/log/switchboard"] {
        assert_eq!(std::fs::metadata(r(dir)).unwrap().permissions().mode() & 0o777, 0o700, "{dir}");
    }
    for file in [
        "usr/local/share/man/man1/switchboard.1",
        "usr/local/share/man/man1/switchboard-up.1",
        "usr/share/bash-completion/completions/switchboard",
        "usr/share/zsh/vendor-completions/_switchboard",
        "usr/share/fish/vendor_completions.d/switchboard.fish",
    ] {
        assert!(r(file).is_file(), "{file} not installed");
    }
    if Path::new("/run/systemd/system").exists() {
        assert!(said.contains("systemctl enable --now switchboard.socket switchboard.service"), "{said}");
    } else {
        assert!(said.contains("does not run systemd") && said.contains(" up --config "), "{said}");
    }

    // The default config is one the daemon starts with.
    let config = r("etc/switchboard/switchboard.toml");
    let mut daemon = support::Daemon::start_with(&["--config", config.to_str().unwrap()]);
    daemon.signal(rustix::process::Signal::TERM);
    assert!(daemon.wait_exit(std::time::Duration::from_secs(10)).is_some_and(|s| s.success()));

    // A second install keeps an edited config.
    std::fs::write(&config, "# mine\n").unwrap();
    let again = switchboard(&["install", "--root", root.path().to_str().unwrap()], root.path());
    assert!(String::from_utf8_lossy(&again.stdout).contains("kept "));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");

    switchboard(&["uninstall", "--root", root.path().to_str().unwrap()], root.path());
    assert!(
        !r("etc/systemd/system/switchboard.service").exists()
            && !r("etc/systemd/system/switchboard.socket").exists()
    );
    assert!(!r("usr/local/share/man/man1/switchboard-up.1").exists());
    assert!(!r("usr/share/bash-completion/completions/switchboard").exists());
    assert!(config.exists() && r("var/lib/switchboard").exists(), "config and data are kept without --purge");
    switchboard(&["uninstall", "--purge", "--root", root.path().to_str().unwrap()], root.path());
    assert!(!config.exists() && !r("var/lib/switchboard").exists());
}

#[test]
fn a_user_install_uses_the_users_paths_and_print_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home/alice");
    switchboard(&["install", "--user", "--root", root.path().to_str().unwrap()], &home);
    // --root keeps the user's paths below the root.
    let units = root.path().join(home.strip_prefix("/").unwrap()).join(".config/systemd/user");
    let socket = std::fs::read_to_string(units.join("switchboard.socket")).unwrap();
    assert!(socket.contains("ListenStream=%t/switchboard/bus.sock"), "{socket}");
    let service = std::fs::read_to_string(units.join("switchboard.service")).unwrap();
    assert!(service.contains("WantedBy=default.target"), "{service}");
    let runtime = root.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    verify(&units, true, &runtime);

    let elsewhere = tempfile::tempdir().unwrap();
    let out = switchboard(&["install", "--print"], elsewhere.path());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("# /etc/systemd/system/switchboard.service") && printed.contains("[Socket]"));
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0, "--print wrote files");
}
