//! Security end to end: principals, the policy and its reload, instance
//! secrets, tokens, and every limit — against the real daemon binary, with a
//! second OS user where the test runs as root (as CI does).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use support::{Daemon, BIN};
use switchboard::CallError;

use support::{other_user, OTHER_USER};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

// Multi-threaded: the test serves `demo` itself while it waits for CLI processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_os_user_is_denied_until_a_rule_allows_it_and_again_after_the_rule_goes() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to create and become a second user (CI runs as root)");
        return;
    }
    let (uid, gid) = other_user();
    let work = tempfile::tempdir().expect("dir");
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = work.path().join("daemon.toml");
    let open_socket = "[security]\nsocket_mode = \"0666\"\n";
    write(&config, open_socket);
    let daemon = Daemon::start_with(&["--config", config.to_str().expect("utf-8")]);
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bus = daemon.bus().await;
    let _echo =
        bus.serve("demo").unwrap().method("echo", |r| async move { Ok(r.payload) }).start().await.unwrap();
    // A service sees who calls it, as the daemon verified it (the impersonation case).
    let who = |r: switchboard::Request| async move {
        switchboard::encode(&r.caller.principal.to_string())
            .map_err(|e| switchboard::Reject::new(e.to_string()))
    };
    let _who = bus.serve("who").unwrap().method("ami", who).start().await.unwrap();
    let as_other = |args: &[&str]| -> Output {
        daemon.cli(args).uid(uid).gid(gid).current_dir("/").output().expect("run the CLI as the other user")
    };

    let me = as_other(&["whoami"]);
    assert!(
        String::from_utf8_lossy(&me.stdout).starts_with(&format!("user:{OTHER_USER} (uid {uid}")),
        "{me:?}"
    );
    let denied = as_other(&["call", "demo.echo", "\"hi\""]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        stderr(&denied).contains(&format!("permission denied: user:{OTHER_USER} may not call demo.echo")),
        "{denied:?}"
    );
    // The refusal does not say whether a service exists.
    let unknown = as_other(&["call", "nosuch.thing"]);
    assert!(
        stderr(&unknown).contains(&format!("user:{OTHER_USER} may not call nosuch.thing")),
        "{unknown:?}"
    );
    assert!(daemon.log().contains("permission denied"), "refusals are logged");

    write(
        &config,
        &format!("{open_socket}[[policy]]\nprincipal = \"user:{OTHER_USER}\"\nallow = [\"call demo.*\", \"call who.*\"]\n"),
    );
    daemon.cli(&["reload"]).output().expect("reload");
    let allowed = as_other(&["call", "demo.echo", "\"hi\""]);
    assert!(allowed.status.success(), "{allowed:?}");
    assert_eq!(String::from_utf8_lossy(&allowed.stdout).trim(), "\"hi\"");
    let who = as_other(&["call", "who.ami"]);
    assert_eq!(String::from_utf8_lossy(&who.stdout).trim(), format!("\"user:{OTHER_USER}\""), "{who:?}");
    for (args, expected) in [
        (&["stop", "billing"][..], "may not control billing"),
        (&["reload"][..], "may not administer the daemon"),
        (&["queue", "put", "mail", "\"x\""][..], "may not queue.put mail"),
        (&["sub", "orders.>"][..], "may not subscribe orders.>"),
    ] {
        let out = as_other(args);
        assert!(stderr(&out).contains(expected), "{args:?}: {out:?}");
    }
    let still_denied = as_other(&["pub", "orders.x", "1"]);
    assert!(stderr(&still_denied).contains("may not publish orders.x"), "{still_denied:?}");

    write(&config, open_socket);
    daemon.cli(&["reload"]).output().expect("reload");
    let denied_again = as_other(&["call", "demo.echo", "\"hi\""]);
    assert!(stderr(&denied_again).contains("permission denied"), "{denied_again:?}");
    // The daemon's own user was never restricted.
    assert_eq!(&bus.call("demo.echo", "ok").await.unwrap()[..], b"ok");
}

#[test]
fn with_the_default_socket_mode_other_users_cannot_even_connect() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to become a second user (CI runs as root)");
        return;
    }
    let (uid, gid) = other_user();
    let daemon = Daemon::start();
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mode = std::fs::metadata(&daemon.socket).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = daemon.cli(&["whoami"]).uid(uid).gid(gid).current_dir("/").output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("Permission denied"), "{out:?}");
}

/// A daemon supervising `script` as service `caller`, with `policy` added.
fn supervised(script: &str, policy: &str) -> (Daemon, tempfile::TempDir) {
    let work = tempfile::tempdir().expect("dir");
    let root = if rustix::process::geteuid().is_root() { "run_as_root = true" } else { "" };
    let config = work.path().join("daemon.toml");
    write(
        &config,
        &format!(
            "[services.caller]\ncommand = \"sh\"\nargs = [\"-c\", {script:?}]\n{root}\n{policy}",
            script = script.replace("$BIN", BIN)
        ),
    );
    (Daemon::start_with(&["--config", config.to_str().expect("utf-8")]), work)
}

fn wait_for_log(daemon: &Daemon, service: &str, wanted: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = daemon.cli(&["logs", service]).output().expect("logs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if wanted.iter().all(|w| text.contains(w)) {
            return text;
        }
        assert!(Instant::now() < deadline, "{wanted:?} not in the log of {service}:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_service_is_its_service_name_and_the_policy_on_that_name_holds() {
    let (daemon, _work) = supervised(
        "$BIN whoami; $BIN call demo.echo '\"x\"'; echo call-exit=$?; $BIN call other.echo '\"y\"'; echo other-exit=$?; sleep 1000",
        "[[policy]]\nprincipal = \"service:caller\"\ndeny = [\"call demo.*\"]\n",
    );
    let bus = daemon.bus().await;
    let _demo =
        bus.serve("demo").unwrap().method("echo", |r| async move { Ok(r.payload) }).start().await.unwrap();
    let _other =
        bus.serve("other").unwrap().method("echo", |r| async move { Ok(r.payload) }).start().await.unwrap();
    daemon.cli(&["restart", "caller"]).output().expect("restart");
    let log = wait_for_log(&daemon, "caller", &["call-exit=", "other-exit="]);
    assert!(log.contains("service:caller#1 (uid"), "authenticated by its secret:\n{log}");
    assert!(log.contains("permission denied: service:caller#1 may not call demo.echo"), "{log}");
    assert!(log.contains("call-exit=1") && log.contains("other-exit=0"), "{log}");
    // The daemon's own user, not named by the deny, still calls demo.
    assert_eq!(&bus.call("demo.echo", "ok").await.unwrap()[..], b"ok");
}

#[tokio::test]
async fn a_wrong_or_stolen_instance_secret_is_refused() {
    let (daemon, _work) = supervised("sleep 1000", "");
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        let out = daemon.cli(&["status", "caller", "--json"]).output().expect("status");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let status: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if let Some(pid) = status[0]["instances"][0]["pid"].as_u64() {
            break pid;
        }
        assert!(Instant::now() < deadline, "no pid: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let wrong =
        daemon.cli(&["whoami"]).env("SWITCHBOARD_INSTANCE_SECRET", "0".repeat(32)).output().expect("run");
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stderr(&wrong).contains("unknown or stale instance secret"), "{wrong:?}");
    // Read the real secret out of the instance's environment, as a thief
    // with the same uid could, and present it from outside the instance.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let secret = environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"SWITCHBOARD_INSTANCE_SECRET="))
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .expect("the instance has a secret");
    let stolen = daemon.cli(&["whoami"]).env("SWITCHBOARD_INSTANCE_SECRET", &secret).output().expect("run");
    assert_eq!(stolen.status.code(), Some(1));
    assert!(stderr(&stolen).contains("not a process of that instance"), "{stolen:?}");
}

#[tokio::test]
async fn every_limit_gives_its_error_and_the_daemon_keeps_serving_others() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let work = tempfile::tempdir().expect("dir");
    let config = work.path().join("daemon.toml");
    let token = "0123456789abcdef0123";
    write(
        &config,
        &format!(
            "[security]\nallow_plain_tcp = true\ntokens = {{ edge = \"{token}\" }}\n\
             max_connections_per_principal = 2\nmessages_per_second = 5\n\
             [[policy]]\nprincipal = \"token:edge\"\nallow = [\"call demo.*\", \"subscribe >\"]\n"
        ),
    );
    let tcp = format!("tcp://127.0.0.1:{port}");
    let daemon = Daemon::start_with(&[
        "--listen",
        &tcp,
        "--config",
        config.to_str().expect("utf-8"),
        "--max-connections",
        "8",
        "--max-subscriptions",
        "2",
        "--handshake-timeout",
        "300ms",
        "--max-frame",
        "4096",
    ]);
    // The daemon's socket path listener is added by the harness; connect to it too.
    let local = daemon.bus().await;
    let _demo =
        local.serve("demo").unwrap().method("echo", |r| async move { Ok(r.payload) }).start().await.unwrap();

    // Per principal: a third connection of token:edge is refused.
    let first = switchboard::Bus::connect_with_token(&tcp, token).await.expect("first");
    let _second = switchboard::Bus::connect_with_token(&tcp, token).await.expect("second");
    let third = switchboard::Bus::connect_with_token(&tcp, token).await;
    assert!(third.is_err_and(|e| e.to_string().contains("token:edge already has 2 connections")));

    // Per-principal rate: 5 messages/s, burst 5.
    let mut refused = None;
    for i in 0..20 {
        if let Err(err) = first.call("demo.echo", "x").await {
            refused = Some((i, err));
            break;
        }
    }
    let (at, err) = refused.expect("the rate limit was never hit");
    assert!(at >= 4, "refused after {at} calls");
    assert!(matches!(&err, CallError::Overloaded(m) if m.contains("over its rate of 5 messages/s")), "{err}");

    // Subscriptions per connection.
    let _a = local.subscribe("a.>").await.expect("first subscription");
    let _b = local.subscribe("b.>").await.expect("second subscription");
    let third_sub = local.subscribe("c.>").await;
    assert!(third_sub.is_err_and(|e| e.to_string().contains("2")), "a third subscription is refused");

    // Frame size.
    let big = vec![0u8; 8192];
    assert!(matches!(local.call("demo.echo", big).await, Err(CallError::PayloadTooLarge(_))));

    // Handshake timeout: a silent connection is closed.
    let mut silent = std::os::unix::net::UnixStream::connect(&daemon.socket).expect("connect");
    silent.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut silent, &mut buf);
    assert!(started.elapsed() < Duration::from_secs(2), "closed after the handshake timeout");
    assert!(String::from_utf8_lossy(&buf).contains("no Hello within"), "told why");

    // Total connections: 8 (this test holds 3 already).
    let mut held = Vec::new();
    let refused = loop {
        match switchboard::Bus::connect(&daemon.addr).await {
            Ok(bus) => held.push(bus),
            Err(err) => break err,
        }
        assert!(held.len() <= 8, "the connection limit never applied");
    };
    assert!(refused.to_string().contains("8 connections (its limit)"), "{refused}");
    drop(held);

    // And through all of it the daemon serves everyone else.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = daemon.bus().await;
    assert_eq!(&fresh.call("demo.echo", "still here").await.unwrap()[..], b"still here");
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_and_maps_one_with_it_to_its_principal() {
    let work = tempfile::tempdir().expect("dir");
    support::certs::certificates(work.path());
    let p = |name: &str| work.path().join(name);
    let config = p("daemon.toml");
    write(
        &config,
        &format!(
            "[security.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n\
             [[policy]]\nprincipal = \"cert:edge-1\"\nallow = [\"call demo.*\"]\n",
            p("server.pem"),
            p("server.key"),
            p("ca.pem")
        ),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("tls://127.0.0.1:{port}");
    let daemon = Daemon::start_with(&["--listen", &addr, "--config", config.to_str().expect("utf-8")]);
    let local = daemon.bus().await;
    let _demo =
        local.serve("demo").unwrap().method("echo", |r| async move { Ok(r.payload) }).start().await.unwrap();

    let anonymous = switchboard::TlsClient::from_files(&p("ca.pem"), None).expect("client config");
    let refused = switchboard::Bus::connect_tls(&addr, &anonymous).await;
    assert!(refused.is_err(), "a client without a certificate must not get in");

    let edge = switchboard::TlsClient::from_files(&p("ca.pem"), Some((&p("client.pem"), &p("client.key"))))
        .expect("client config");
    let bus = switchboard::Bus::connect_tls(&addr, &edge).await.expect("mTLS connect");
    assert_eq!(bus.whoami().await.unwrap().principal, "cert:edge-1");
    assert_eq!(&bus.call("demo.echo", "over tls").await.unwrap()[..], b"over tls");
    let err = bus.call("other.thing", "x").await.unwrap_err();
    assert!(
        matches!(&err, CallError::PermissionDenied(m) if m.contains("cert:edge-1 may not call other.thing")),
        "{err}"
    );

    // The CLI reaches it too, with the certificate from the environment.
    let out = daemon
        .cli(&["whoami"])
        .env("SWITCHBOARD_ADDR", &addr)
        .env("SWITCHBOARD_TLS_CA", p("ca.pem"))
        .env("SWITCHBOARD_TLS_CERT", p("client.pem"))
        .env("SWITCHBOARD_TLS_KEY", p("client.key"))
        .output()
        .expect("cli");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("cert:edge-1"), "{out:?}");
}
