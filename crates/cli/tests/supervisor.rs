//! The supervisor end to end: the real daemon supervising real processes
//! (shell scripts, the distribution's `systemd-notify`, and the bus-aware
//! `bus_aware` example built on `switchboard::service::run`).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::supervised::{supervise, write_config};
use switchboard_proto::supervision::{ReloadReport, ServiceStatus};

/// Whether a process runs (a zombie waiting for a reaper does not count).
fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists() && process_state(pid) != 'Z'
}

/// The one-letter state of a process in /proc (R, S, T for stopped…).
fn process_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')').next().and_then(|rest| rest.trim().chars().next()).unwrap_or('?')
}

#[test]
fn a_crash_loop_restarts_with_growing_delays_then_fails() {
    let s = supervise(
        r#"
        [services.crash]
        command = "sh"
        args = ["-c", "echo crashing; exit 3"]
        backoff = { initial = "100ms", multiplier = 2.0, jitter = 0.0 }
        budget = { restarts = 3, window = "1m" }
        $ROOT
        "#,
    );
    let status = s.wait_state("crash", "Failed", Duration::from_secs(10));
    assert_eq!(status.instances[0].last_exit, "exit 3");
    assert_eq!(status.instances[0].restarts, 3);
    let logs = s.logs("crash");
    let delays: Vec<&str> = logs.iter().filter_map(|l| l.line.strip_prefix("restarting in ")).collect();
    assert_eq!(delays, ["100 ms", "200 ms", "400 ms"]);
    // The delays really passed between one start and the next.
    let starts: Vec<u64> =
        logs.iter().filter(|l| l.line.starts_with("started pid")).map(|l| l.ts_ms).collect();
    assert_eq!(starts.len(), 4, "{logs:#?}");
    for (gap, delay) in starts.windows(2).map(|w| w[1] - w[0]).zip([100, 200, 400]) {
        assert!(gap >= delay, "restart after {gap} ms, configured {delay} ms");
    }
    assert!(logs.iter().any(|l| l.line == "restart budget spent: giving up"));
    assert_eq!(logs.iter().filter(|l| l.stream == "stdout" && l.line == "crashing").count(), 4);
    // A call to a failed service says so.
    let out = s.run(&["call", "crash.anything", "--json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("service_failed"), "{out:?}");
    // Starting it again gives it a fresh budget, which it spends again.
    s.ok(&["start", "crash"]);
    s.wait_state("crash", "Failed", Duration::from_secs(10));
    let giving_up = s.logs("crash").iter().filter(|l| l.line == "restart budget spent: giving up").count();
    assert_eq!(giving_up, 2);
}

#[test]
fn a_dependency_chain_starts_in_order_and_stops_in_reverse() {
    let service = |name: &str, requires: &str| {
        format!(
            r#"
            [services.{name}]
            command = "sh"
            args = ["-c", "trap 'echo stop-{name} >> $WORK/order; exit 0' TERM; echo start-{name} >> $WORK/order; systemd-notify --ready --status='{name} serving'; while :; do sleep 0.05; done"]
            ready = "notify"
            requires = [{requires}]
            $ROOT
            "#
        )
    };
    let config = [service("db", ""), service("api", "\"db\""), service("web", "\"api\"")].concat();
    let s = supervise(&config);
    let web = s.wait_state("web", "Running", Duration::from_secs(10));
    assert_eq!(web.requires, ["api"]);
    let db = s.status("db");
    assert_eq!(db.instances[0].status, "db serving", "STATUS= from systemd-notify");
    assert_eq!(s.file("order").lines().collect::<Vec<_>>(), ["start-db", "start-api", "start-web"]);
    // Stopping db stops what needs it first.
    s.ok(&["stop", "db"]);
    for name in ["db", "api", "web"] {
        assert_eq!(s.status(name).state, "Stopped");
    }
    let order: Vec<String> = s.file("order").lines().map(str::to_owned).collect();
    assert_eq!(order[3..], ["stop-web", "stop-api", "stop-db"]);
    // Starting web starts what it needs, in order.
    s.ok(&["start", "web"]);
    let order: Vec<String> = s.file("order").lines().map(str::to_owned).collect();
    assert_eq!(order[6..], ["start-db", "start-api", "start-web"]);
}

#[test]
fn stop_escalates_to_sigkill_after_the_stop_timeout_and_leaves_no_children() {
    let s = supervise(
        r#"
        [services.stubborn]
        command = "sh"
        args = ["-c", "trap '' TERM; sleep 1000 & echo $! > $WORK/child; while :; do sleep 0.05; done"]
        stop_timeout = "400ms"
        $ROOT
        "#,
    );
    s.wait_state("stubborn", "Running", Duration::from_secs(5));
    let pid = s.pid("stubborn");
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.file("child").trim().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let child: u32 = s.file("child").trim().parse().expect("child pid");
    assert!(process_exists(child));
    let started = Instant::now();
    let stopped = s.ok(&["stop", "stubborn", "--json"]);
    let took = started.elapsed();
    let status: ServiceStatus = serde_json::from_str(&stopped).expect("status JSON");
    assert_eq!(status.state, "Stopped");
    assert_eq!(status.instances[0].last_exit, "signal 9");
    assert!(took >= Duration::from_millis(400), "stopped after {took:?}, before the stop timeout");
    assert!(s.logs("stubborn").iter().any(|l| l.line == "stop timeout passed: SIGKILL"));
    assert!(!process_exists(pid), "the main process is gone");
    assert!(!process_exists(child), "its child is gone too");
}

#[test]
fn a_plain_service_pauses_and_continues_by_signal() {
    let s = supervise(
        r#"
        [services.ticker]
        command = "sh"
        args = ["-c", "while :; do sleep 0.05; done"]
        $ROOT
        "#,
    );
    s.wait_state("ticker", "Running", Duration::from_secs(5));
    let pid = s.pid("ticker");
    let paused: ServiceStatus = serde_json::from_str(&s.ok(&["pause", "ticker", "--json"])).expect("JSON");
    assert_eq!(paused.state, "Paused");
    assert_eq!(process_state(pid), 'T', "SIGSTOPped");
    let out = s.run(&["pause", "ticker"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot pause while Paused"), "{out:?}");
    s.ok(&["continue", "ticker"]);
    assert_eq!(s.status("ticker").state, "Running");
    assert_ne!(process_state(pid), 'T');
    let out = s.run(&["pause", "nosuch"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no supervised service named \"nosuch\""),
        "{out:?}"
    );
}

#[test]
fn a_bus_aware_service_handles_pause_custom_controls_and_reload_itself() {
    let s = supervise(
        r#"
        [services.cache]
        command = "$EXAMPLE"
        ready = "bus"
        $ROOT
        [services.rigid]
        command = "$EXAMPLE"
        ready = "bus"
        environment = { ACCEPT_PAUSE = "0" }
        $ROOT
        "#,
    );
    let cache = s.wait_state("cache", "Running", Duration::from_secs(10));
    assert!(cache.instances[0].bus_aware);
    assert_eq!(s.ok(&["call", "cache.get"]).trim(), "\"value\"");
    // Pause through its own handler: calls are refused while paused.
    s.ok(&["pause", "cache"]);
    assert_eq!(s.status("cache").instances[0].status, "draining", "progress reported while pausing");
    let out = s.run(&["call", "cache.get", "--json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("service_paused"), "{out:?}");
    s.ok(&["continue", "cache"]);
    assert_eq!(s.ok(&["call", "cache.get"]).trim(), "\"value\"");
    // A custom control with a payload gets the service's reply.
    let reply = s.ok(&["control", "cache", "130", r#"{"keys":"all"}"#, "--json"]);
    let reply: serde_json::Value = serde_json::from_str(&reply).expect("JSON");
    assert_eq!(reply[0]["reply"], serde_json::json!({"flushed": {"keys": "all"}}));
    // Undeclared controls are refused with a clear error.
    let out = s.run(&["control", "cache", "131"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not accept control 131"), "{out:?}");
    let out = s.run(&["control", "cache", "7"]);
    assert_eq!(out.status.code(), Some(2), "a code below 128 is a usage error");
    s.wait_state("rigid", "Running", Duration::from_secs(10));
    let out = s.run(&["pause", "rigid"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not accept pause"), "{out:?}");
    // Reload: the service logs a structured event through the library; logged
    // while serving the control, it records that call's trace id.
    s.ok(&["control", "cache", "reload"]);
    let traced = |line: &str| {
        line.strip_prefix("reloaded entries=42 trace_id=")
            .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let logs = s.logs("cache");
    assert!(logs.iter().any(|l| l.stream == "event" && traced(&l.line) && l.level == "info"), "{logs:?}");
    // Stop goes through its control handler and the process exits by itself.
    let pid = s.pid("cache");
    s.ok(&["stop", "cache"]);
    assert_eq!(s.status("cache").instances[0].last_exit, "exit 0");
    assert!(!process_exists(pid));
    assert!(s.logs("cache").iter().any(|l| l.stream == "stdout" && l.line == "stopped"));
}

#[test]
fn calls_to_a_starting_service_wait_for_it() {
    let s = supervise(
        r#"
        [services.slow]
        command = "$EXAMPLE"
        ready = "bus"
        environment = { START_DELAY_MS = "600" }
        $ROOT
        "#,
    );
    let started = Instant::now();
    let out = s.run(&["call", "slow.get", "--timeout", "10s"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"value\"");
    assert!(started.elapsed() >= Duration::from_millis(300), "the call waited for the start");
}

#[test]
fn a_missed_watchdog_and_a_failing_health_check_restart_the_service() {
    let s = supervise(
        r#"
        [services.hangs]
        command = "sh"
        args = ["-c", "test \"$WATCHDOG_USEC\" = 300000 || exit 7; systemd-notify --ready; systemd-notify WATCHDOG=1; sleep 1000"]
        ready = "notify"
        watchdog = "300ms"
        backoff = { initial = "10ms" }
        $ROOT
        [services.sick]
        command = "sh"
        args = ["-c", "sleep 1000"]
        health = { command = "test -f $WORK/healthy", interval = "100ms", threshold = 2 }
        backoff = { initial = "10ms" }
        $ROOT
        "#,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hangs = s.status("hangs");
        let sick = s.status("sick");
        let watchdog = hangs.instances[0].last_exit.contains("watchdog");
        let unhealthy = sick.instances[0].last_exit.contains("unhealthy");
        if watchdog && unhealthy {
            assert!(hangs.instances[0].restarts >= 1 && sick.instances[0].restarts >= 1);
            break;
        }
        assert!(Instant::now() < deadline, "not restarted: {hangs:#?} {sick:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Once the check passes the service stays up and is shown healthy.
    std::fs::write(s.work.path().join("healthy"), "").expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.status("sick").instances[0].health != "healthy" {
        assert!(Instant::now() < deadline, "never healthy: {:#?}", s.status("sick"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_reload_touches_only_what_changed() {
    let service = |name: &str, arg: &str| {
        format!("[services.{name}]\ncommand = \"sh\"\nargs = [\"-c\", \"sleep {arg}\"]\n$ROOT\n")
    };
    let s =
        supervise(&[service("keep", "1000"), service("change", "1000"), service("drop", "1000")].concat());
    for name in ["keep", "change", "drop"] {
        s.wait_state(name, "Running", Duration::from_secs(5));
    }
    let (keep, change, dropped) = (s.pid("keep"), s.pid("change"), s.pid("drop"));
    let config = [service("keep", "1000"), service("change", "1001"), service("add", "1000")].concat();
    write_config(&s.config, s.work.path(), &config);
    let report: ReloadReport = serde_json::from_str(&s.ok(&["reload", "--json"])).expect("JSON");
    assert_eq!(report.added, ["add"]);
    assert_eq!(report.removed, ["drop"]);
    assert_eq!(report.changed, ["change"]);
    assert_eq!(report.unchanged, ["keep"]);
    s.wait_state("add", "Running", Duration::from_secs(5));
    s.wait_state("change", "Running", Duration::from_secs(5));
    assert_eq!(s.pid("keep"), keep, "untouched");
    assert_ne!(s.pid("change"), change, "restarted with the new args");
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_exists(dropped) {
        assert!(Instant::now() < deadline, "the removed service still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = s.run(&["status", "drop"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no supervised service named"), "{out:?}");
    // SIGHUP does the same.
    let config = [config, service("late", "1000")].concat();
    write_config(&s.config, s.work.path(), &config);
    s.daemon.signal(rustix::process::Signal::HUP);
    s.wait_state("late", "Running", Duration::from_secs(5));
    assert_eq!(s.pid("keep"), keep);
    // A broken config is refused and changes nothing.
    std::fs::write(&s.config, "[services.keep]\ncommand = 5\n").expect("write");
    let out = s.run(&["reload"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("reload refused"), "{out:?}");
    assert_eq!(s.pid("keep"), keep);
}

#[test]
fn a_broken_config_stops_the_daemon_from_starting_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[services.a]\ncommand = \"x\"\nrestart = \"sometimes\"\n").expect("write");
    let out = std::process::Command::new(support::BIN)
        .args(["up", "--listen"])
        .arg(format!("unix:{}", dir.path().join("bus.sock").display()))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run up");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("service a: restart = \"sometimes\""), "{stderr}");
}

#[test]
fn limits_nice_level_and_no_new_privileges_apply_to_the_service() {
    let s = supervise(
        r#"
        [services.limited]
        command = "sh"
        args = ["-c", "echo nofile=$(ulimit -n); grep NoNewPrivs /proc/self/status; cut -d' ' -f19 /proc/self/stat | sed 's/^/nice=/'; sleep 1000"]
        nice = 7
        limits = { nofile = 123 }
        $ROOT
        "#,
    );
    s.wait_state("limited", "Running", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    let wanted = ["nofile=123", "NoNewPrivs:\t1", "nice=7"];
    loop {
        let lines: Vec<String> =
            s.logs("limited").into_iter().filter(|l| l.stream == "stdout").map(|l| l.line).collect();
        if wanted.iter().all(|w| lines.iter().any(|l| l == w)) {
            break;
        }
        assert!(Instant::now() < deadline, "{lines:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_service_runs_as_its_configured_user_and_root_needs_saying_so() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: changing users needs root (CI runs this as root)");
        return;
    }
    let s = supervise(
        r#"
        [services.unprivileged]
        command = "sh"
        args = ["-c", "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); sleep 1000"]
        user = "nobody"
        [services.careless]
        command = "sleep"
        args = ["1000"]
        "#,
    );
    s.wait_state("unprivileged", "Running", Duration::from_secs(5));
    let nobody = std::fs::read_to_string("/etc/passwd")
        .expect("passwd")
        .lines()
        .find_map(|l| {
            l.strip_prefix("nobody:x:").map(|rest| rest.split(':').take(2).collect::<Vec<_>>().join(":"))
        })
        .expect("a nobody user");
    let (uid, gid) = nobody.split_once(':').expect("uid:gid");
    let expected = format!("uid={uid} gid={gid} groups={gid}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.logs("unprivileged").iter().any(|l| l.line == expected) {
        assert!(Instant::now() < deadline, "{:?}", s.logs("unprivileged"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let careless = s.wait_state("careless", "Failed", Duration::from_secs(5));
    assert!(careless.last_error.contains("refusing to run as root"), "{careless:#?}");
}

#[test]
fn a_control_that_makes_no_progress_within_its_wait_hint_is_treated_as_hung() {
    let s = supervise(
        r#"
        [services.stuck]
        command = "$EXAMPLE"
        ready = "bus"
        stop_timeout = "400ms"
        environment = { HANG_ON_PAUSE = "1" }
        backoff = { initial = "10ms" }
        $ROOT
        "#,
    );
    s.wait_state("stuck", "Running", Duration::from_secs(10));
    let pid = s.pid("stuck");
    let out = s.run(&["pause", "stuck", "--timeout", "10s"]);
    assert!(!out.status.success(), "a hung pause must not report Paused: {out:?}");
    let status = s.wait_state("stuck", "Running", Duration::from_secs(10));
    assert_ne!(status.instances[0].pid, Some(pid), "restarted");
    assert!(status.instances[0].last_exit.contains("hung in PausePending"), "{status:#?}");
}

#[test]
fn logs_follow_prints_new_lines_as_they_come() {
    let s = supervise(
        r#"
        [services.chatty]
        command = "sh"
        args = ["-c", "i=0; while :; do i=$((i+1)); echo tick $i; echo tock $i; sleep 0.05; done"]
        $ROOT
        "#,
    );
    s.wait_state("chatty", "Running", Duration::from_secs(5));
    let mut follow = support::Guard(
        s.daemon
            .cli(&["logs", "chatty", "-f", "--grep", "tick", "-n", "1"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn logs -f"),
    );
    let stdout = follow.0.stdout.take().expect("stdout");
    let lines: Vec<String> =
        std::io::BufRead::lines(std::io::BufReader::new(stdout)).take(20).map(|l| l.expect("line")).collect();
    assert!(lines.iter().all(|l| l.contains("chatty#1 stdout: tick ")), "{lines:?}");
    let numbers: Vec<u64> =
        lines.iter().map(|l| l.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("number")).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "in order, none missed or repeated: {numbers:?}");
}
