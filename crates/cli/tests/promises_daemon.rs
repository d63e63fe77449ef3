//! Promises about the daemon itself that no other test covered: queue rates
//! in `queue ls`, `--shutdown-grace`, the `serve` permission end to end, the
//! daemon's own user exempt from per-principal limits, and the default data
//! directory (docs/promises.md lists every promise and its test).
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use support::{Daemon, Guard};
use switchboard::{Bus, Bytes, CallError};

/// `queue ls --json` through the CLI: (put rate, ack rate) of `queue`.
async fn rates(daemon: &Daemon, queue: &str) -> (f64, f64) {
    let mut command = daemon.cli(&["queue", "ls", "--json"]);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let info = all.iter().find(|q| q["queue"] == queue).expect("the queue is listed");
    (info["put_rate"].as_f64().unwrap(), info["ack_rate"].as_f64().unwrap())
}

/// Polls the rates of queue `jobs` until `check` holds, at most 15 s.
async fn wait_rates(daemon: &Daemon, what: &str, check: impl Fn((f64, f64)) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = rates(daemon, "jobs").await;
        if check(now) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: rates (put, ack) still {now:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_ls_shows_the_put_and_ack_rates_of_the_last_seconds() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let queue = bus.queue("jobs").unwrap();
    // About 40 puts a second for 3 s.
    let started = Instant::now();
    for _ in 0..120 {
        queue.put("job").await.unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let expected = 120.0 / started.elapsed().as_secs_f64();
    let (put, ack) = rates(&daemon, "jobs").await;
    assert!(
        put > expected / 3.0 && put < expected * 2.0,
        "put rate {put:.1}/s, about {expected:.1}/s expected"
    );
    assert_eq!(ack, 0.0, "nothing was acked yet");
    let mut consumer = queue.consume(200).await.unwrap();
    for _ in 0..120 {
        consumer.next().await.unwrap().ack().await.unwrap();
    }
    wait_rates(&daemon, "an ack rate after 120 acks", |(_, ack)| ack > 0.0).await;
    // The rates are of the last few seconds: idle, they fall to zero.
    wait_rates(&daemon, "both rates zero once idle", |rates| rates == (0.0, 0.0)).await;
    let table = daemon.cli(&["queue", "ls"]).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("PUT/S") && table.contains("ACK/S"), "{table}");
}

/// Starts `switchboard sub big.>`, waits until the daemon lists it, and
/// stops it (SIGSTOP): a client that no longer reads.
fn stalled_subscriber(daemon: &Daemon) -> Guard {
    let sub = Guard(daemon.cli(&["sub", "big.>"]).stdout(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&daemon.cli(&["ls", "--json"]).output().unwrap().stdout).contains("big.>")
    {
        assert!(Instant::now() < deadline, "the subscriber never subscribed");
        std::thread::sleep(Duration::from_millis(20));
    }
    support::signal_pid(sub.0.id(), Signal::STOP);
    sub
}

/// Publishes 12 MiB on `big.data`: more than the congestion mark and the
/// socket buffer, so some stays queued for a subscriber that does not read.
async fn flood(daemon: &Daemon) {
    let bus = daemon.bus().await;
    let chunk = Bytes::from(vec![7u8; 256 * 1024]);
    for _ in 0..48 {
        bus.publish("big.data", chunk.clone()).await.unwrap();
    }
    // A round trip: the daemon has taken every publication.
    bus.call("$sys.daemon.whoami", Bytes::new()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_bounds_the_wait_for_a_client_that_does_not_read() {
    // A short grace: the daemon gives up on the stalled client and exits.
    let mut daemon = Daemon::start_with(&["--shutdown-grace", "300ms", "--slow-consumer", "120s"]);
    let _sub = stalled_subscriber(&daemon);
    flood(&daemon).await;
    let asked = Instant::now();
    daemon.signal(Signal::TERM);
    let status =
        daemon.wait_exit(Duration::from_secs(10)).expect("the daemon exits despite the stalled client");
    assert!(status.success(), "{status:?}");
    assert!(asked.elapsed() < Duration::from_secs(5), "took {:?} with a 300 ms grace", asked.elapsed());
    assert!(daemon.log().contains("did not close within 300ms"), "{}", daemon.log());

    // A long one: the daemon waits for the client until it goes away.
    let mut daemon = Daemon::start_with(&["--shutdown-grace", "60s", "--slow-consumer", "120s"]);
    let mut sub = stalled_subscriber(&daemon);
    flood(&daemon).await;
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(2)), None, "exited before the grace ran out");
    let _ = sub.0.kill();
    let _ = sub.0.wait();
    let status = daemon.wait_exit(Duration::from_secs(10)).expect("exits once the client is gone");
    assert!(status.success(), "{status:?}");
    assert!(!daemon.log().contains("did not close"), "{}", daemon.log());
}

const LEDGER_TOKEN: &str = "ledger-token-0123456789abcdef";
const OTHER_TOKEN: &str = "other-token-0123456789abcdefg";

/// A daemon whose config gives two tokens, the first allowed to serve
/// `ledger` only; `security` adds lines to the `[security]` table.
fn daemon_with_tokens(security: &str) -> (Daemon, tempfile::TempDir) {
    let text = format!(
        "[security]\ntokens = {{ ledger = \"{LEDGER_TOKEN}\", other = \"{OTHER_TOKEN}\" }}\n{security}\n\
         [[policy]]\nprincipal = \"token:ledger\"\nallow = [\"serve ledger\"]\n\
         [[policy]]\nprincipal = \"token:other\"\nallow = [\"call ledger.*\"]\n"
    );
    Daemon::start_with_config(&text, &[])
}

/// Registers `service` with one method answering `answer`; the error text if refused.
async fn serve(bus: &Bus, service: &str, answer: &'static str) -> Result<(), String> {
    let builder = bus.serve(service).map_err(|e| e.to_string())?;
    let running = builder
        .method("total", move |_| async move { Ok(Bytes::from_static(answer.as_bytes())) })
        .start()
        .await
        .map_err(|e| e.to_string())?;
    std::mem::forget(running); // served until the bus closes
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_principal_with_the_serve_permission_registers_and_is_reached() {
    let (daemon, _work) = daemon_with_tokens("");
    let ledger = Bus::connect_with_token(&daemon.addr, LEDGER_TOKEN).await.unwrap();
    let other = Bus::connect_with_token(&daemon.addr, OTHER_TOKEN).await.unwrap();
    // Without `serve`, a principal cannot take the name, even first.
    let refused = serve(&other, "ledger", "impostor").await.unwrap_err();
    assert!(refused.contains("token:other may not serve ledger"), "{refused}");
    // With it, only the names it covers.
    serve(&ledger, "ledger", "real").await.unwrap();
    let refused = serve(&ledger, "billing", "real").await.unwrap_err();
    assert!(refused.contains("token:ledger may not serve billing"), "{refused}");
    // Calls reach the one allowed to serve, from a caller allowed to call it.
    assert_eq!(other.call("ledger.total", "").await.unwrap(), "real".as_bytes());
    let own = daemon.bus().await;
    assert_eq!(own.call("ledger.total", "").await.unwrap(), "real".as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_own_user_is_exempt_from_the_per_principal_limits() {
    let (daemon, _work) =
        daemon_with_tokens("max_connections_per_principal = 2\nmessages_per_second = 5\nburst = 5");
    let own = daemon.bus().await;
    serve(&own, "ledger", "own").await.unwrap();
    // A token principal: its third connection is refused, and a burst of
    // calls meets its rate.
    let first = Bus::connect_with_token(&daemon.addr, OTHER_TOKEN).await.unwrap();
    let _second = Bus::connect_with_token(&daemon.addr, OTHER_TOKEN).await.unwrap();
    let third = Bus::connect_with_token(&daemon.addr, OTHER_TOKEN).await;
    let refused = third.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("token:other already has 2 connections"), "{refused:?}");
    let mut over_rate = 0;
    for _ in 0..30 {
        match first.call("ledger.total", "").await {
            Ok(_) => {}
            Err(CallError::Overloaded(why)) if why.contains("rate") => over_rate += 1,
            Err(err) => panic!("{err}"),
        }
    }
    assert!(over_rate > 0, "30 calls at once from a principal limited to 5/s, none refused");
    // The daemon's own user: as many connections and calls as it likes,
    // every call through the daemon (no direct channel to skip the count).
    let mut mine = Vec::new();
    for _ in 0..5 {
        let bus = daemon.bus().await;
        bus.set_direct_calls(false);
        mine.push(bus);
    }
    for bus in &mine {
        for _ in 0..30 {
            assert_eq!(bus.call("ledger.total", "").await.unwrap(), "own".as_bytes());
        }
    }
}

/// Whether a file whose name contains `name` is under `dir` (a queue log segment, say).
fn holds(dir: &std::path::Path, name: &str) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|entry| {
        entry.file_name().to_string_lossy().contains(name)
            || (entry.path().is_dir() && holds(&entry.path(), name))
    })
}

/// Waits for a daemon to answer at `socket`, running `client` to ask.
fn wait_serving(socket: &std::path::Path, mut client: impl FnMut() -> std::process::Command) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(socket.exists() && client().arg("whoami").output().unwrap().status.success()) {
        assert!(Instant::now() < deadline, "no daemon at {}", socket.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs root: a mount namespace (run by scripts/test.sh as root)"]
fn the_default_data_directory_of_roots_daemon_is_var_lib_switchboard_as_root() {
    support::needs_root();
    let dir = tempfile::tempdir().unwrap();
    let var_lib = dir.path().join("var-lib");
    std::fs::create_dir(&var_lib).unwrap();
    let socket = dir.path().join("bus.sock");
    // In a mount namespace of its own, /var/lib is this test's directory:
    // the daemon writes where it would on a real system, the real /var/lib
    // is left alone.
    let mut up = std::process::Command::new("unshare");
    up.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount --bind "$1" /var/lib && shift && exec "$@""#,
    ])
    .arg("sh")
    .arg(&var_lib)
    .args([support::BIN, "up", "--listen"])
    .arg(format!("unix:{}", socket.display()))
    .stdout(Stdio::null());
    let _daemon = Guard(up.spawn().unwrap());
    let addr = format!("unix:{}", socket.display());
    let client = || {
        let mut command = std::process::Command::new(support::BIN);
        command.env("SWITCHBOARD_ADDR", &addr);
        command
    };
    wait_serving(&socket, client);
    assert!(client().args(["queue", "put", "jobs", "\"kept\""]).status().unwrap().success());
    let info = client().args(["call", "$sys.daemon.info"]).output().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["data_dir"], "/var/lib/switchboard", "{info}");
    assert!(
        holds(&var_lib.join("switchboard/queues"), "segment-"),
        "the queue is not under /var/lib/switchboard"
    );
}

#[test]
#[ignore = "needs root: a second OS user (run by scripts/test.sh as root)"]
fn another_users_daemon_keeps_its_data_under_xdg_state_home_else_home_as_root() {
    support::needs_root();
    let (uid, gid) = support::other_user();
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (case, xdg_state) in [("xdg", true), ("home", false)] {
        let [run, home, state] = ["run", "home", "state"].map(|d| dir.path().join(case).join(d));
        for d in [&run, &home, &state] {
            std::fs::create_dir_all(d).unwrap();
            std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap();
        }
        let expected =
            if xdg_state { state.join("switchboard") } else { home.join(".local/state/switchboard") };
        let as_other_user = || {
            let mut command = std::process::Command::new("setpriv");
            command
                .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string(), "--clear-groups"])
                .arg(support::BIN)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("XDG_RUNTIME_DIR", &run)
                .env("HOME", &home);
            if xdg_state {
                command.env("XDG_STATE_HOME", &state);
            }
            command
        };
        let _daemon = Guard(as_other_user().arg("up").stdout(Stdio::null()).spawn().unwrap());
        wait_serving(&run.join("switchboard/bus.sock"), as_other_user);
        let put = as_other_user().args(["queue", "put", "jobs", "\"kept\""]).output().unwrap();
        assert!(put.status.success(), "{put:?}");
        assert!(
            holds(&expected.join("queues"), "segment-"),
            "{case}: the queue is not under {}",
            expected.display()
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&expected).unwrap().uid(), uid, "{case}: made by the daemon's user");
    }
}
