//! Fleet queues declared and managed from the CLI (`queue declare --fleet`,
//! `queue ls / peek / purge / delete` on a queue kept on JetStream), on the
//! real NATS cluster of `support::fleet`. Its own test binary: cargo runs
//! binaries one after another, so these fleets do not share the machine with
//! `fleet_queues.rs`'s, whose kill test is timing-sensitive.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::{Duration, Instant};

use support::fleet::Fleet;

/// Runs the CLI on `host` with `args`: (success, stdout, stderr).
fn cli(fleet: &Fleet, host: &str, args: &[&str]) -> (bool, String, String) {
    let out = fleet.cli(fleet.host(host), args).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `queue ls --json` on `host`: the entry of `queue`, if listed.
fn listed(fleet: &Fleet, host: &str, queue: &str) -> Option<serde_json::Value> {
    let (ok, out, err) = cli(fleet, host, &["queue", "ls", "--json"]);
    assert!(ok, "{err}");
    let queues: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    queues.into_iter().find(|q| q["queue"] == queue)
}

/// Waits up to 10 s for `host` to list `queue` (`present`) or not.
fn until_listed(fleet: &Fleet, host: &str, queue: &str, present: bool) -> Option<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entry = listed(fleet, host, queue);
        if entry.is_some() == present {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "{host} still {} {queue}",
            if present { "lacks" } else { "lists" }
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_declared_on_the_fleet_from_one_host_is_listed_peeked_purged_and_deleted_from_the_others() {
    let fleet = Fleet::start(&["a", "b"], |_| "queue_replicas = 2\n".to_owned());
    // What JetStream cannot take is refused by name, before anything is made.
    let (ok, _, said) = cli(&fleet, "a", &["queue", "declare", "orders", "--fleet", "--ttl", "1s"]);
    assert!(!ok && said.contains("dedup window"), "{said}");
    // A queue on this host's log cannot become a fleet queue under its feet.
    assert!(cli(&fleet, "a", &["queue", "declare", "scratch"]).0);
    let (ok, _, said) = cli(&fleet, "a", &["queue", "declare", "scratch", "--fleet"]);
    assert!(!ok && said.contains("scratch is a queue on this host's log"), "{said}");

    let (ok, out, said) =
        cli(&fleet, "a", &["queue", "declare", "orders", "--fleet", "--visibility-timeout", "5s", "--json"]);
    assert!(ok, "{said}");
    assert!(out.contains("\"fleet\":true"), "{out}");
    // b learns of it from JetStream, and its puts go there.
    until_listed(&fleet, "b", "orders", true);
    for payload in ["\"m1\"", "\"m2\"", "\"m3\""] {
        let (ok, _, said) = cli(&fleet, "b", &["queue", "put", "orders", payload]);
        assert!(ok, "{said}");
    }
    let entry = listed(&fleet, "a", "orders").unwrap();
    assert_eq!(entry["depth"], 3, "{entry}");
    assert_eq!(entry["fleet"]["replicas"], 2, "{entry}");
    assert_eq!(entry["options"]["visibility_timeout_ms"], 5_000, "{entry}");
    assert!(
        listed(&fleet, "a", "scratch").unwrap().get("fleet").is_none(),
        "a local queue has no fleet entry"
    );
    let (ok, table, _) = cli(&fleet, "a", &["queue", "ls"]);
    assert!(ok && table.lines().any(|l| l.starts_with("orders") && l.contains("fleet R2")), "{table}");

    let (ok, peeked, said) = cli(&fleet, "a", &["queue", "peek", "orders", "--count", "10"]);
    assert!(ok, "{said}");
    let payloads: Vec<String> = peeked
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["payload"].to_string())
        .collect();
    assert_eq!(payloads, ["\"m1\"", "\"m2\"", "\"m3\""]);
    assert_eq!(listed(&fleet, "a", "orders").unwrap()["depth"], 3, "a peek takes nothing");

    let (ok, _, said) = cli(&fleet, "b", &["queue", "delete", "orders"]);
    assert!(!ok && said.contains("holds 3 messages"), "{said}");
    let (ok, removed, said) = cli(&fleet, "b", &["queue", "purge", "orders"]);
    assert!(ok && removed.trim() == "3", "{removed}{said}");
    assert_eq!(listed(&fleet, "a", "orders").unwrap()["depth"], 0);
    let (ok, _, said) = cli(&fleet, "a", &["queue", "delete", "orders"]);
    assert!(ok, "{said}");
    until_listed(&fleet, "b", "orders", false);
}

#[test]
fn a_daemon_that_joined_no_fleet_refuses_a_fleet_queue_by_saying_so() {
    let daemon = support::Daemon::start();
    let out = daemon.cli(&["queue", "declare", "orders", "--fleet"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("joined no fleet"), "{said}");
    let listed = daemon.cli(&["queue", "ls", "--json"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]", "nothing was made");
}
