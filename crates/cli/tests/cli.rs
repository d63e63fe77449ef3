//! The `switchboard` command as a person or a script uses it.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::process::Output;

use support::{Daemon, Guard};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

#[test]
fn the_readme_tour_echoes_json() {
    let daemon = Daemon::start();
    let _echo = Guard(daemon.responder(&["demo.echo", "--echo"]));
    let out = daemon.cli(&["call", "demo.echo", r#"{"hi":1}"#]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), r#"{"hi":1}"#);
}

#[test]
fn reply_and_exec_responders() {
    let daemon = Daemon::start();
    let _fixed = Guard(daemon.responder(&["config.get", "--reply", r#"{"level":3}"#, "-q"]));
    let out = daemon.cli(&["call", "config.get"]).output().unwrap();
    assert_eq!(stdout(&out), r#"{"level":3}"#);

    // --exec: request JSON on stdin, reply JSON on stdout.
    let _exec =
        Guard(daemon.responder(&["math.wrap", "--exec", r#"read x; printf '{"got":%s}' "$x""#, "-q"]));
    let out = daemon.cli(&["call", "math.wrap", "[1,2]"]).output().unwrap();
    assert_eq!(stdout(&out), r#"{"got":[1,2]}"#, "{}", stderr(&out));

    // A failing command rejects the call with its stderr.
    let _fail =
        Guard(daemon.responder(&["math.fail", "--exec", "echo 'division by zero' >&2; exit 3", "-q"]));
    let out = daemon.cli(&["call", "math.fail", "1", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(error["error"], "rejected");
    assert!(error["message"].as_str().unwrap().contains("division by zero"), "{error}");
    assert!(error["message"].as_str().unwrap().contains("status 3"), "{error}");

    // Output that is not JSON is a rejection too, saying so.
    let _bad = Guard(daemon.responder(&["math.bad", "--exec", "echo not json", "-q"]));
    let out = daemon.cli(&["call", "math.bad"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not JSON"), "{}", stderr(&out));
}

#[test]
fn errors_and_exit_codes() {
    let daemon = Daemon::start();
    let out = daemon.cli(&["call", "ghost.boo"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no such service"), "{}", stderr(&out));

    // Bad input is a usage error (2), named.
    let out = daemon.cli(&["call", "Ghost.boo"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Ghost"), "{}", stderr(&out));
    let out = daemon.cli(&["call", "demo.echo", "{not json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));

    // A timeout is reported as such.
    let _slow = Guard(daemon.responder(&["slow.op", "--exec", "sleep 3", "-q"]));
    let out = daemon.cli(&["call", "slow.op", "--timeout", "200ms", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains(r#""error":"timeout""#), "{}", stdout(&out));

    // No daemon at all.
    let out = std::process::Command::new(support::BIN)
        .args(["call", "a.b", "--addr", "unix:/nonexistent/bus.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is `switchboard up` running?"), "{}", stderr(&out));
}

#[test]
fn ls_shows_instances_as_text_and_json() {
    let daemon = Daemon::start();
    let responder = Guard(daemon.responder(&["inventory.eu.reserve", "--echo", "-q"]));
    let out = daemon.cli(&["ls"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("inventory.eu") && text.contains("reserve"), "{text}");
    assert!(text.contains(&responder.0.id().to_string()), "{text}");

    let out = daemon.cli(&["ls", "inventory.eu", "--json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["services"][0]["service"], "inventory.eu");
    assert_eq!(json["services"][0]["instances"][0]["methods"][0], "reserve");

    let out = daemon.cli(&["ls", "nothing.here"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn notify_reaches_a_responder() {
    let daemon = Daemon::start();
    let seen = daemon.dir.path().join("seen");
    let cmd = format!("cat >> {}", seen.display());
    let _sink = Guard(daemon.responder(&["log.write", "--exec", &cmd, "-q"]));
    let out = daemon.cli(&["notify", "log.write", r#""hello""#]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if std::fs::read_to_string(&seen).unwrap_or_default().contains("\"hello\"") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("notification never arrived");
}

#[test]
fn respond_count_exits_after_n_requests() {
    let daemon = Daemon::start();
    let mut responder = daemon.responder(&["once.only", "--echo", "--count", "2", "-q"]);
    for _ in 0..2 {
        let out = daemon.cli(&["call", "once.only", "1"]).output().unwrap();
        assert_eq!(stdout(&out), "1");
    }
    let status = support::wait_exit(&mut responder, std::time::Duration::from_secs(5)).expect("exits");
    assert!(status.success());
}

#[test]
fn help_teaches() {
    let out = std::process::Command::new(support::BIN).args(["respond", "--help"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("--exec") && text.contains("Example"), "{text}");
}

#[test]
fn ls_sys_lists_the_daemon_api_and_every_listed_query_answers() {
    let daemon = Daemon::start();
    let out = daemon.cli(&["ls", "--sys", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let api: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let targets: Vec<&str> = api.iter().filter_map(|m| m["target"].as_str()).collect();
    assert!(
        targets.contains(&"$sys.queues.declare") && targets.contains(&"$sys.services.status"),
        "{targets:?}"
    );
    // Every method listed as taking nothing answers on a real daemon.
    let queries = api.iter().filter(|m| m["takes"] == "-").filter_map(|m| m["target"].as_str());
    for target in queries {
        let out = daemon.cli(&["call", target]).output().unwrap();
        assert!(out.status.success(), "{target}: {}", stderr(&out));
    }
    // What is not declared is not there.
    let out = daemon.cli(&["call", "$sys.queues.explode"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no such method"), "{}", stderr(&out));
    let text = stdout(&daemon.cli(&["ls", "--sys"]).output().unwrap());
    assert!(text.starts_with("METHOD") && text.contains("$sys.daemon.whoami"), "{text}");
}
