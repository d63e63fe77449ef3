//! `--json` on the commands that print: every line they print parses, and
//! says what happened.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use support::Daemon;

fn json(daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let out = daemon.cli(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| panic!("{args:?} printed no JSON ({err})"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_publish_and_notify_commands_print_json() {
    let daemon = Daemon::start();
    assert_eq!(
        json(&daemon, &["queue", "declare", "jobs", "--json"]),
        serde_json::json!({"queue": "jobs", "declared": true, "fleet": false})
    );
    let put = json(&daemon, &["queue", "--json", "put", "jobs", r#"{"x":1}"#]);
    assert_eq!(put["queue"], "jobs");
    assert!(put["id"].as_u64().is_some(), "{put}");
    let listed = json(&daemon, &["queue", "ls", "--json"]);
    assert_eq!(listed[0]["queue"], "jobs");
    assert_eq!(listed[0]["depth"], 1);
    assert_eq!(
        json(&daemon, &["queue", "purge", "jobs", "--json"]),
        serde_json::json!({"queue": "jobs", "removed": 1})
    );
    assert_eq!(
        json(&daemon, &["queue", "delete", "jobs", "--json"]),
        serde_json::json!({"queue": "jobs", "deleted": true})
    );
    let published = json(&daemon, &["pub", "db.primary", r#""b""#, "--retain", "--json"]);
    assert_eq!(published, serde_json::json!({"published": "db.primary", "retain": true, "cleared": false}));
    let notified = json(&daemon, &["notify", "audit.note", r#""x""#, "--json"]);
    assert_eq!(notified, serde_json::json!({"notified": "audit.note", "all": false}));
}
