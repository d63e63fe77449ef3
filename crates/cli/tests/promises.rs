//! Promises docs/supervisor.md makes that no other test covered, each
//! checked end to end against the real daemon supervising real processes
//! (docs/promises.md lists every promise and the test that holds it).

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
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.file("blink").lines().count() < 3 {
        assert!(Instant::now() < deadline, "restart = always did not restart a clean exit");
        std::thread::sleep(Duration::from_millis(20));
    }
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
