//! Promises docs/supervisor.md makes that no other test covered, each
//! checked end to end against the real daemon supervising real processes
//! (docs/promises.md lists every promise and the test that holds it).
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::{Duration, Instant};

use support::supervised::{supervise, Supervised};
use switchboard_proto::supervision::ServiceStatus;

/// Waits until `check` holds for `service`'s status; panics with it if not.
fn wait_until(
    s: &Supervised,
    service: &str,
    what: &str,
    check: impl Fn(&ServiceStatus) -> bool,
) -> ServiceStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = s.status(service);
        if check(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{service}: {what}: {status:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `check` holds, at most 20 s; panics naming `what` if not.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_has(s: &Supervised, service: &str, text: &str) -> bool {
    s.logs(service).iter().any(|line| line.line.contains(text))
}

#[test]
fn each_instance_gets_its_number_and_the_service_shows_the_least_settled_state() {
    let s = supervise(
        r#"
        [services.pool]
        command = "sh"
        args = ["-c", "echo instance $SWITCHBOARD_INSTANCE; if [ $SWITCHBOARD_INSTANCE = 1 ]; then systemd-notify --ready; fi; exec sleep 600"]
        instances = 2
        ready = "notify"
        start_timeout = "60s"
        $ROOT
        "#,
    );
    let status = wait_until(&s, "pool", "one Running, one StartPending", |st| {
        st.instances.iter().map(|i| i.state.as_str()).collect::<Vec<_>>() == ["Running", "StartPending"]
    });
    assert_eq!(status.state, "StartPending", "the service shows the least settled of its instances");
    let logs = s.logs("pool");
    for n in [1, 2] {
        let said = format!("instance {n}");
        assert!(
            logs.iter().any(|l| l.instance == n && l.line == said),
            "instance {n}'s own number: {logs:#?}"
        );
    }
}

#[test]
fn a_disabled_service_never_starts_and_start_says_why() {
    let s = supervise("[services.off]\ncommand = \"sleep\"\nargs = [\"600\"]\nstart = \"disabled\"\n$ROOT\n");
    std::thread::sleep(Duration::from_millis(300));
    let status = s.status("off");
    assert_eq!((status.state.as_str(), status.instances[0].pid), ("Stopped", None));
    let out = s.run(&["start", "off"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("disabled in the config"), "{out:?}");
}

#[test]
fn not_ready_within_the_start_timeout_is_killed_as_a_failure() {
    let s = supervise(
        "[services.slow]\ncommand = \"sleep\"\nargs = [\"600\"]\nready = \"notify\"\nstart_timeout = \"300ms\"\n\
         restart = \"never\"\n$ROOT\n",
    );
    let status = wait_until(&s, "slow", "killed at its start timeout", |st| {
        st.state == "Stopped" && !st.instances[0].last_exit.is_empty()
    });
    assert!(log_has(&s, "slow", "not ready within the start timeout"), "{status:#?}");
    assert!(status.instances[0].last_exit.contains("signal 9"), "{status:#?}");
}

#[test]
fn always_restarts_after_a_clean_exit_and_on_failure_does_not() {
    let s = supervise(
        r#"
        [services.blink]
        command = "sh"
        args = ["-c", "echo ran >> $WORK/blink; sleep 0.05"]
        restart = "always"
        backoff = { initial = "20ms", max = "20ms" }
        budget = { restarts = 100, window = "60s" }
        $ROOT
        [services.once]
        command = "sh"
        args = ["-c", "echo ran >> $WORK/once; sleep 0.05"]
        restart = "on-failure"
        $ROOT
        "#,
    );
    wait_for("restart = always did not restart a clean exit", || s.file("blink").lines().count() >= 3);
    wait_until(&s, "once", "stopped after its clean exit", |st| st.instances[0].last_exit == "exit 0");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.file("once").lines().count(), 1, "on-failure leaves a clean exit stopped");
    assert_eq!(s.status("once").state, "Stopped");
}

/// A service that says `READY=1`, then after a moment `KEY` with systemd-notify.
fn notifies(name: &str, then: &str) -> String {
    format!(
        "[services.{name}]\ncommand = \"sh\"\nargs = [\"-c\", \"systemd-notify --ready; sleep 0.3; systemd-notify {then}; exec sleep 600\"]\n\
         ready = \"notify\"\nrestart = \"never\"\n$ROOT\n"
    )
}

#[test]
fn the_notify_keys_reloading_stopping_extend_timeout_and_watchdog_trigger_act() {
    let mut config = notifies("reloads", "RELOADING=1");
    config.push_str(&notifies("stops", "STOPPING=1"));
    config.push_str(&notifies("trips", "WATCHDOG=trigger"));
    // Asks for more time before it is ready: not killed at its 300 ms start timeout.
    config.push_str(
        "[services.extends]\ncommand = \"sh\"\nargs = [\"-c\", \"systemd-notify EXTEND_TIMEOUT_USEC=5000000; sleep 1; \
         systemd-notify --ready; exec sleep 600\"]\nready = \"notify\"\nstart_timeout = \"300ms\"\nrestart = \"never\"\n$ROOT\n",
    );
    let s = supervise(&config);
    wait_until(&s, "reloads", "status reloading", |st| st.instances[0].status == "reloading");
    wait_until(&s, "stops", "StopPending after STOPPING=1", |st| st.state == "StopPending");
    wait_until(&s, "trips", "killed by its own watchdog trigger", |st| {
        st.state == "Stopped" && !st.instances[0].last_exit.is_empty()
    });
    assert!(log_has(&s, "trips", "the service triggered its watchdog"));
    let extended = wait_until(&s, "extends", "Running after its extension", |st| st.state != "StartPending");
    assert_eq!(extended.state, "Running", "{extended:#?}");
}

#[test]
fn restart_replaces_the_process_and_logs_since_shows_only_what_is_newer() {
    let s = supervise(
        r#"
        [services.talker]
        command = "sh"
        args = ["-c", "echo early; sleep 1.5; echo late; exec sleep 600"]
        $ROOT
        "#,
    );
    let first = wait_until(&s, "talker", "Running", |st| st.state == "Running").instances[0].pid;
    wait_for("never said late", || log_has(&s, "talker", "late"));
    let recent = s.ok(&["logs", "talker", "--since", "1s"]);
    assert!(recent.contains("late") && !recent.contains("early"), "--since 1s: {recent}");
    s.ok(&["restart", "talker"]);
    let again =
        wait_until(&s, "talker", "Running again", |st| st.state == "Running" && st.instances[0].pid != first);
    assert!(again.instances[0].pid.is_some());
    assert_eq!(again.instances[0].restarts, 0, "an operator's restart is not a failure");
}

#[test]
fn reload_on_a_plain_service_is_sighup_and_a_custom_control_needs_an_attached_one() {
    let s = supervise(
        r#"
        [services.plain]
        command = "sh"
        args = ["-c", "trap 'echo hup >> $WORK/hup' HUP; while :; do sleep 0.05; done"]
        $ROOT
        "#,
    );
    wait_until(&s, "plain", "Running", |st| st.state == "Running");
    std::thread::sleep(Duration::from_millis(200)); // the trap is set
    s.ok(&["control", "plain", "reload"]);
    wait_for("reload did not reach the process as SIGHUP", || s.file("hup").contains("hup"));
    let out = s.run(&["control", "plain", "130"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not attached to the bus"), "{out:?}");
}

#[test]
fn a_health_check_by_bus_call_marks_the_instance_healthy_or_restarts_it() {
    let s = supervise(
        r#"
        [services.cache]
        command = "$EXAMPLE"
        ready = "bus"
        health = { call = "cache.get", interval = "100ms", timeout = "1s", threshold = 2 }
        $ROOT
        [services.mute]
        command = "sleep"
        args = ["600"]
        health = { call = "mute.ping", interval = "100ms", timeout = "200ms", threshold = 2 }
        $ROOT
        "#,
    );
    wait_until(&s, "cache", "healthy by its own reply", |st| st.instances[0].health == "healthy");
    // `mute` never registers `mute.ping`: two failed probes and it is restarted.
    let restarted =
        wait_until(&s, "mute", "restarted for failing its check", |st| st.instances[0].restarts >= 1);
    assert!(log_has(&s, "mute", "unhealthy") || log_has(&s, "mute", "health"), "{restarted:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retained_state_topic_gives_a_late_subscriber_the_current_state() {
    let s = supervise("[services.steady]\ncommand = \"sleep\"\nargs = [\"600\"]\n$ROOT\n");
    wait_until(&s, "steady", "Running", |st| st.state == "Running");
    let bus = s.daemon.bus().await;
    let mut sub = bus.subscribe("sys.services.steady").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap();
    let Some(switchboard::Item::Message(message)) = first else { panic!("{first:?}") };
    assert!(message.retained, "the first message is the retained state");
    let status: ServiceStatus = switchboard_proto::sys::decode(&message.payload).unwrap();
    assert_eq!((status.service.as_str(), status.state.as_str()), ("steady", "Running"));
}

/// Serves `who.me`, answering `label` (MessagePack), as its own instance.
async fn who(bus: &switchboard::Bus, label: &'static str) -> switchboard::Service {
    bus.serve("who")
        .unwrap()
        .method("me", move |_| async move {
            switchboard::encode(&label).map_err(|e| switchboard::Reject::new(e.to_string()))
        })
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_instance_picks_one_and_ls_watch_shows_instances_come_and_go() {
    use std::io::{BufRead, BufReader};
    let daemon = support::Daemon::start();
    let mut watch = support::Guard(
        daemon.cli(&["ls", "--watch", "--json", "who"]).stdout(std::process::Stdio::piped()).spawn().unwrap(),
    );
    let mut events = BufReader::new(watch.0.stdout.take().unwrap()).lines();
    // The listing comes first (none yet), then one JSON line per event.
    let _listing: Vec<String> =
        (&mut events).take_while(|line| line.as_ref().is_ok_and(|l| l != "}")).map(Result::unwrap).collect();
    let (one, two) = (daemon.bus().await, daemon.bus().await);
    let first = who(&one, "one").await;
    let second = who(&two, "two").await;
    for (label, service) in [("one", &first), ("two", &second)] {
        let id = service.instance().to_string();
        let out = daemon.cli(&["call", "who.me", "--instance", &id]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("\"{label}\""), "{out:?}");
    }
    let gone = second.instance();
    second.stop().await.unwrap();
    let mut seen = Vec::new();
    for line in events.by_ref().take(3) {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        seen.push((event["event"].as_str().unwrap().to_owned(), event["instance"].as_u64().unwrap()));
    }
    assert_eq!(
        seen,
        [("up".to_owned(), first.instance()), ("up".to_owned(), gone), ("down".to_owned(), gone)],
        "ls --watch, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_watch_is_registered_again_after_the_daemon_restarts() {
    let mut daemon = support::Daemon::start();
    let watcher = daemon.bus().await;
    let mut events = watcher.watch(64).await.unwrap();
    daemon.signal(rustix::process::Signal::TERM);
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
    daemon.restart();
    let server = daemon.bus().await;
    // The watcher reconnects on its own schedule: register until it sees one.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let service = who(&server, "late").await;
        let seen = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(event) = events.recv().await {
                if event.event == "up" && event.instance == service.instance() {
                    return true;
                }
            }
            false
        })
        .await;
        if seen == Ok(true) {
            break;
        }
        assert!(Instant::now() < deadline, "the watch never came back after the restart");
        service.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_more_threads_serves_and_stops_the_same() {
    let mut daemon = support::Daemon::start_with(&["--threads", "2"]);
    let server = daemon.bus().await;
    let _who = who(&server, "threads").await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let bus = daemon.bus().await;
        calls.spawn(async move {
            for _ in 0..100 {
                let reply = bus.call("who.me", bytes::Bytes::new()).await.unwrap();
                assert_eq!(switchboard::decode::<String>(&reply).unwrap(), "threads");
            }
        });
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap();
    }
    daemon.signal(rustix::process::Signal::TERM);
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some_and(|status| status.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_listen_the_daemon_and_clients_meet_at_the_default_socket() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    let mut up = std::process::Command::new(support::BIN);
    up.args(["up", "--data-dir"]).arg(dir.path().join("data")).env("XDG_RUNTIME_DIR", &runtime);
    let _daemon = support::Guard(
        up.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap(),
    );
    let socket = runtime.join("switchboard/bus.sock");
    wait_for(&format!("no daemon at {}", socket.display()), || {
        let mut whoami = std::process::Command::new(support::BIN);
        whoami.arg("whoami").env("XDG_RUNTIME_DIR", &runtime).env_remove("SWITCHBOARD_ADDR");
        socket.exists() && whoami.output().unwrap().status.success()
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(socket.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the default socket's directory is the daemon user's alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_names_are_refused_to_other_clients_through_the_daemon() {
    let s = supervise(&support::supervised::bus_aware_cache(0));
    wait_until(&s, "cache", "Running", |st| st.state == "Running");
    let bus = s.daemon.bus().await;
    bus.set_direct_calls(false);
    // `__` methods are the daemon's to call (the supervisor's controls).
    let err = bus.call("cache.__control", bytes::Bytes::new()).await.unwrap_err();
    assert!(matches!(&err, switchboard::CallError::NoSuchMethod(why) if why.contains("reserved")), "{err}");
    // `$` services are the daemon's own: a client may not register one.
    let refused = match bus.serve("$mine") {
        Ok(builder) => builder
            .method("go", |_| async { Ok(bytes::Bytes::new()) })
            .start()
            .await
            .err()
            .map(|e| e.to_string()),
        Err(err) => Some(err.to_string()),
    };
    assert!(refused.is_some(), "a client registered a `$` service");
}

#[test]
fn notify_ready_from_the_rust_library_makes_a_notify_service_running() {
    let s = supervise(
        "[services.late]\ncommand = \"$EXAMPLE\"\nready = \"notify\"\nstart_timeout = \"60s\"\n\
         environment = { NOTIFY_READY_AFTER_MS = \"3000\" }\n$ROOT\n",
    );
    let status = s.status("late");
    assert_eq!(status.state, "StartPending", "running before it said READY=1: {status:#?}");
    wait_until(&s, "late", "Running once notify_ready() said so", |st| st.state == "Running");
    wait_for("the service's line after notify_ready()", || log_has(&s, "late", "notified ready"));
}
