//! The fleet on real NATS: three hosts (as root, each in its own network
//! namespace), each with its own NATS server in one cluster and its own
//! daemon. Calls cross hosts with their headers, deadline and principal;
//! the hosts serving a service share the load; `--host` picks one; what is
//! not exported is unreachable; the receiving host's policy applies to the
//! principal the caller's host vouched for; a host that dies drops out.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::fleet::Fleet;
use support::Guard;
use switchboard::Bus;

/// This test's own principal on a host's bus (`user:root` as CI runs).
fn me() -> String {
    let out = std::process::Command::new("id").arg("-un").output().unwrap();
    format!("user:{}", String::from_utf8_lossy(&out.stdout).trim())
}

/// `switchboard call` on `host`: (succeeded, stdout as JSON or text, stderr).
fn call(fleet: &Fleet, host: &str, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = fleet.cli(fleet.host(host), &[&["call"], args].concat()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::String(stdout));
    (out.status.success(), value, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn config(host: &str) -> String {
    let grant = "[[policy]]\nprincipal = \"host:a\"\nallow = [\"call billing.*\"]\n";
    match host {
        "a" => "import = [\"*\"]\n".to_owned(),
        "b" => format!("export = [\"billing\"]\nimport = [\"billing\"]\n{grant}"),
        _ => format!("export = [\"billing\"]\n{grant}"),
    }
}

/// Waits until `host` hears that `other` offers `service`.
fn wait_for_offer(fleet: &Fleet, host: &str, other: &str, service: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = fleet.cli(fleet.host(host), &["ls", "--fleet", "--json"]).output().unwrap();
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let offers = status["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|h| h["host"] == other && !h["services"][service].is_null());
        if offers {
            return;
        }
        assert!(Instant::now() < deadline, "{host} never heard {other} offer {service}: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cross_hosts_as_their_principal_and_hosts_share_the_load() {
    let fleet = Fleet::start(&["a", "b", "c"], config);
    let _on_c = Guard(fleet.spawn_example(fleet.host("c"), "fleet_peer", &[]));
    let _secret = Guard(fleet.spawn_example(fleet.host("c"), "fleet_peer", &[("SERVICE", "secret")]));
    wait_for_offer(&fleet, "a", "c", "billing");

    // A call from a reaches the only instance, on c, with what it carried.
    let (ok, seen, err) = call(&fleet, "a", &["billing.who", "-H", "request-id=42", "--timeout", "3s"]);
    assert!(ok, "{err}");
    assert_eq!(seen["host"], "c", "{seen}");
    assert_eq!(seen["principal"], format!("{}@a", me()), "the principal as a vouched for it: {seen}");
    assert_eq!(seen["headers"]["request-id"], "42", "{seen}");
    let left = seen["deadline_ms"].as_u64().unwrap();
    assert!((1_000..=3_000).contains(&left), "the deadline travelled: {left} ms left of 3 s");

    // What c does not export is not there for anyone else.
    let (ok, _, err) = call(&fleet, "a", &["secret.who"]);
    assert!(!ok && err.contains("no such service"), "{err}");

    // With instances on b and c, a's calls are shared between them.
    let _on_b = Guard(fleet.spawn_example(fleet.host("b"), "fleet_peer", &[]));
    wait_for_offer(&fleet, "a", "b", "billing");
    let served = calls_from(&fleet, "a", "billing.who", 3_000);
    for host in ["b", "c"] {
        let share = f64::from(served.get(host).copied().unwrap_or(0)) / 3_000.0;
        assert!((0.40..=0.60).contains(&share), "{host} took {share:.2} of the calls: {served:?}");
    }

    // `--host` picks one host, even one that serves it on the caller's own.
    for host in ["b", "c"] {
        let (ok, seen, err) = call(&fleet, "a", &["billing.who", "--host", host]);
        assert!(ok && seen["host"] == host, "{seen} {err}");
    }
    let (ok, seen, err) = call(&fleet, "b", &["billing.who"]);
    assert!(ok && seen["host"] == "b", "a local instance is preferred: {seen} {err}");
    let (ok, _, err) = call(&fleet, "a", &["billing.who", "--host", "nowhere"]);
    assert!(
        !ok && err.contains("no such service: host nowhere of the fleet does not serve billing now"),
        "{err}"
    );
    let (ok, _, err) = call(&fleet, "a", &["billing.who", "--host", "b.*"]);
    assert!(!ok && err.contains("must be 1-64 letters"), "a host name is one subject token: {err}");

    // c's policy grants host:a, not b: b's principal is refused there, by name.
    let (ok, _, err) = call(&fleet, "b", &["billing.who", "--host", "c"]);
    assert!(!ok, "b got through to c");
    assert!(
        err.contains("permission denied") && err.contains(&format!("{}@b may not call billing.who", me())),
        "{err}"
    );

    // c dies: a stops hearing it within a few seconds, and b takes every call.
    let c = fleet.host("c");
    support::signal_pid(c.daemon.pid(), rustix::process::Signal::KILL);
    let deadline = Instant::now() + Duration::from_secs(8);
    while fleet.heard_by(fleet.host("a")).contains(&"c".to_owned()) {
        assert!(Instant::now() < deadline, "a still lists c 8 s after it died");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let served = calls_from(&fleet, "a", "billing.who", 50);
    assert_eq!(served.get("b"), Some(&50), "{served:?}");
    let (ok, _, err) = call(&fleet, "a", &["secret.who"]);
    assert!(!ok && err.contains("no such service"), "{err}");
}

/// `count` calls to `target` by a client on `host` (in its namespace):
/// how many each host answered.
fn calls_from(fleet: &Fleet, host: &str, target: &'static str, count: u32) -> HashMap<String, u32> {
    let addr = fleet.host(host).daemon.addr.clone();
    fleet.on_host(host, move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let bus = Bus::connect(&addr).await.unwrap();
            let mut served: HashMap<String, u32> = HashMap::new();
            for _ in 0..count {
                let reply = bus.call(target, switchboard::Bytes::new()).await.unwrap();
                let seen: serde_json::Value = switchboard::decode(&reply).unwrap();
                *served.entry(seen["host"].as_str().unwrap().to_owned()).or_default() += 1;
            }
            served
        })
    })
}

/// The next message of `subscription` within `limit`, if any.
async fn next_message(
    subscription: &mut switchboard::Subscription,
    limit: Duration,
) -> Option<switchboard::Message> {
    match tokio::time::timeout(limit, subscription.next()).await {
        Ok(Some(switchboard::Item::Message(message))) => Some(message),
        Ok(other) => panic!("not a message: {other:?}"),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_topics_reach_every_other_host_once_and_retained_values_reach_late_subscribers() {
    let config = |host: &str| {
        let grant = "[[policy]]\nprincipal = \"host:a\"\nallow = [\"publish db.>\"]\n";
        let lists = "export = [\"topic:db.>\"]\nimport = [\"topic:db.>\"]\n";
        if host == "a" {
            lists.to_owned()
        } else {
            format!("{lists}{grant}")
        }
    };
    let fleet = Fleet::start(&["a", "b", "c"], config);
    let mut subscribers = Vec::new();
    for host in &fleet.hosts {
        let bus = Bus::connect(&host.daemon.addr).await.unwrap();
        let subscription = bus.subscribe("db.>").await.unwrap();
        bus.whoami().await.unwrap();
        subscribers.push((host.name.clone(), bus, subscription));
    }
    let published = fleet
        .cli(fleet.host("a"), &["pub", "db.config", "{\"mode\":\"fast\"}", "--retain", "-H", "change=7"])
        .output()
        .unwrap();
    assert!(published.status.success(), "{published:?}");

    for (host, _, subscription) in &mut subscribers {
        let message = next_message(subscription, Duration::from_secs(10)).await;
        let message = message.unwrap_or_else(|| panic!("{host} got nothing"));
        assert_eq!(message.topic.as_str(), "db.config");
        assert_eq!(message.headers.get("change"), Some("7"), "{host}");
        if host != "a" {
            assert_eq!(message.headers.get("sb-origin"), Some("a"), "{host} knows where it came from");
            assert_eq!(message.publisher.principal.as_str(), format!("{}@a", me()), "{host}");
        }
        // Once: not echoed back to a, not bounced between b and c.
        let again = next_message(subscription, Duration::from_millis(1_500)).await;
        assert!(again.is_none(), "{host} got it twice: {again:?}");
    }

    // A late subscriber on c gets the value a retained.
    let late = Bus::connect(&fleet.host("c").daemon.addr).await.unwrap();
    let mut subscription = late.subscribe("db.config").await.unwrap();
    let retained = next_message(&mut subscription, Duration::from_secs(5)).await.expect("the retained value");
    assert!(retained.retained, "{retained:?}");
    assert_eq!(switchboard::decode::<serde_json::Value>(&retained.payload).unwrap()["mode"], "fast");
    drop((late, subscription, subscribers));

    // c's daemon dies and starts again, knowing nothing: the value comes
    // from the stream JetStream keeps, not from a publication.
    let mut fleet = fleet;
    let c = fleet.hosts.iter_mut().find(|host| host.name == "c").unwrap();
    support::signal_pid(c.daemon.pid(), rustix::process::Signal::KILL);
    std::thread::sleep(Duration::from_millis(300));
    c.daemon.restart();
    let restarted = Bus::connect(&fleet.host("c").daemon.addr).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let kept = loop {
        let mut subscription = restarted.subscribe("db.config").await.unwrap();
        if let Some(message) = next_message(&mut subscription, Duration::from_millis(500)).await {
            break message;
        }
        let logs = |name: &str| fleet.host(name).daemon.log();
        assert!(
            Instant::now() < deadline,
            "c never learned the retained value:\n{}\n{}",
            logs("a"),
            logs("c")
        );
    };
    assert_eq!(kept.headers.get("sb-origin"), Some("a"));
    assert_eq!(switchboard::decode::<serde_json::Value>(&kept.payload).unwrap()["mode"], "fast");
    // …and c retains it again for its own late subscribers.
    let mut subscription = restarted.subscribe("db.config").await.unwrap();
    let again = next_message(&mut subscription, Duration::from_secs(5)).await.expect("retained on c");
    assert!(again.retained, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_broadcast_answers_per_instance_with_its_host_and_reports_a_host_that_dies() {
    let config = |host: &str| {
        let grant =
            "[[policy]]\nprincipal = \"host:a\"\nallow = [\"call billing.*\", \"notify billing.*\"]\n";
        if host == "a" {
            "export = [\"billing\"]\nimport = [\"billing\"]\n".to_owned()
        } else {
            format!("export = [\"billing\"]\n{grant}")
        }
    };
    let fleet = Fleet::start(&["a", "b", "c"], config);
    let mut peers = Vec::new();
    for (host, nap) in [("a", "0"), ("b", "0"), ("c", "60000")] {
        let env = [("INSTANCES", "2"), ("NAP_MS", nap)];
        peers.push(Guard(fleet.spawn_example(fleet.host(host), "fleet_peer", &env)));
    }
    wait_for_offer(&fleet, "a", "b", "billing");
    wait_for_offer(&fleet, "a", "c", "billing");

    let out = fleet
        .cli(fleet.host("a"), &["broadcast", "billing.who", "--fleet", "--json", "--timeout", "5s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let mut hosts: Vec<String> = lines
        .iter()
        .map(|line| {
            let said = &line["reply"]["host"];
            let host = line["host"].as_str().unwrap_or("a");
            assert_eq!(said, host, "the entry names the host that answered: {line}");
            host.to_owned()
        })
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["a", "a", "b", "b", "c", "c"], "one entry per instance: {lines:?}");

    notifications_reach_every_instance_once(&fleet).await;

    // c's instances nap for a minute; c's daemon dies mid-broadcast. The
    // others answer and c's two instances are reported, long before the
    // deadline.
    let started = Instant::now();
    let broadcast = fleet
        .cli(fleet.host("a"), &["broadcast", "billing.nap", "--fleet", "--json", "--timeout", "30s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    support::signal_pid(fleet.host("c").daemon.pid(), rustix::process::Signal::KILL);
    let out = broadcast.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "the broadcast waited {took:?} for a dead host");
    assert!(!out.status.success(), "a missing host is a failure: {out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let answered: Vec<&serde_json::Value> = lines.iter().filter(|line| !line["reply"].is_null()).collect();
    assert_eq!(answered.len(), 4, "a's and b's instances answer: {lines:?}");
    let missing: Vec<&serde_json::Value> =
        lines.iter().filter(|line| !line["missing_instances"].is_null()).collect();
    assert_eq!(missing.len(), 1, "{lines:?}");
    assert_eq!((missing[0]["host"].as_str(), missing[0]["missing_instances"].as_u64()), (Some("c"), Some(2)));
}

/// A notification to every instance: this host's only, or with `--fleet`
/// every host's; each instance gets each once (a's get both).
async fn notifications_reach_every_instance_once(fleet: &Fleet) {
    let counts = |fleet: &Fleet| {
        let out = fleet
            .cli(fleet.host("a"), &["broadcast", "billing.counted", "--fleet", "--json"])
            .output()
            .unwrap();
        let mut counts: Vec<(String, u64)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .map(|line| (line["host"].as_str().unwrap_or("a").to_owned(), line["reply"].as_u64().unwrap()))
            .collect();
        counts.sort();
        counts
    };
    let notify = |args: &[&str]| {
        let out = fleet
            .cli(fleet.host("a"), &[&["notify", "billing.count", "--all"], args].concat())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    notify(&[]);
    notify(&["--fleet"]);
    let want = |host: &str, n: u64| (host.to_owned(), n);
    let expected = vec![want("a", 2), want("a", 2), want("b", 1), want("b", 1), want("c", 1), want("c", 1)];
    let deadline = Instant::now() + Duration::from_secs(5);
    while counts(fleet) != expected {
        assert!(Instant::now() < deadline, "every instance once, a's twice: {:?}", counts(fleet));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A request a rogue NATS client with host b's own credentials makes on
/// `subject`, saying it comes from `principal`: the answer's error header,
/// or why there was no answer.
fn rogue_request(fleet: &Fleet, subject: &'static str, principal: &'static str) -> Result<String, String> {
    let url = fleet.host("b").nats_url.clone();
    fleet.on_host("b", move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let client =
                async_nats::ConnectOptions::with_user_and_password("b".into(), support::fleet::password("b"))
                    .custom_inbox_prefix("_INBOX_b")
                    .connect(url)
                    .await
                    .map_err(|err| err.to_string())?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Sb-Method", "who");
            headers.insert("Sb-Principal", principal);
            headers.insert("Sb-Timeout-Ms", "2000");
            let request = async_nats::Request::new()
                .headers(headers)
                .payload(switchboard::Bytes::new())
                .timeout(Some(Duration::from_secs(2)));
            let reply = client.send_request(subject, request).await.map_err(|err| err.to_string())?;
            let header =
                |name: &str| reply.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
            Ok(format!(
                "{}: {}",
                header("Sb-Error").unwrap_or_default(),
                header("Sb-Message").unwrap_or_default()
            ))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cannot_speak_for_another_host() {
    let config = |host: &str| {
        let grant = "[[policy]]\nprincipal = \"host:a\"\nallow = [\"call billing.*\"]\n";
        if host == "c" {
            format!("export = [\"billing\"]\n{grant}")
        } else {
            "import = [\"billing\"]\n".to_owned()
        }
    };
    let fleet = Fleet::start(&["a", "b", "c"], config);
    let _on_c = Guard(fleet.spawn_example(fleet.host("c"), "fleet_peer", &[]));
    wait_for_offer(&fleet, "a", "c", "billing");
    let (ok, seen, err) = call(&fleet, "a", &["billing.who"]);
    assert!(ok && seen["principal"] == format!("{}@a", me()), "a itself gets through: {seen} {err}");

    // With b's credentials, a call on a's subject is refused by NATS itself:
    // it never reaches c, so nothing answers.
    let forged = rogue_request(&fleet, "sb.call.a.billing", "user:root");
    let refused = forged.expect_err("a forged call was answered");
    assert!(!refused.contains("connect"), "the rogue could not even connect: {refused}");

    // On b's own subject the host is b whatever the message claims, and c's
    // policy (host:a only) refuses it by that name.
    let claimed = rogue_request(&fleet, "sb.call.b.billing", "user:root@a");
    let answer = claimed.unwrap();
    assert!(answer.starts_with("permission_denied: "), "{answer}");
    assert!(answer.contains("user:root@a@b may not call billing.who"), "{answer}");
}

#[test]
fn check_names_what_is_wrong_in_a_fleet_section() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("daemon.toml");
    let check = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = std::process::Command::new(support::BIN)
            .args(["check", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), said)
    };
    let base = "[fleet]\nnats = \"nats://10.0.0.1:4222\"\n";
    let (ok, said) = check(&format!("{base}name = \"web-1\"\nexport = [\"billing\", \"topic:db.>\"]\n"));
    assert!(ok, "a valid section, no NATS needed to check it: {said}");
    for (bad, expected) in [
        ("name = \"web.1\"\n", "one NATS subject token"),
        ("name = \"a\"\nuser = \"a\"\npassword = \"p\"\ntoken = \"t\"\n", "give one of"),
        ("name = \"a\"\nexport = [\"topic:db..x\"]\n", "fleet.export"),
        ("name = \"a\"\nnats = []\n", "names no NATS server"),
    ] {
        let text = if bad.contains("nats = []") { format!("[fleet]\n{bad}") } else { format!("{base}{bad}") };
        let (ok, said) = check(&text);
        assert!(!ok && said.contains(expected), "{bad:?} → {said}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_a_service_served_here_too_keeps_local_callers_on_their_direct_channel() {
    let config = |_: &str| {
        let grant = "[[policy]]\nprincipal = \"host:a\"\nallow = [\"call billing.*\"]\n";
        format!("export = [\"billing\"]\nimport = [\"billing\"]\n{grant}")
    };
    let fleet = Fleet::start(&["a", "b"], config);
    let _on_a = Guard(fleet.spawn_example(fleet.host("a"), "fleet_peer", &[]));
    let _on_b = Guard(fleet.spawn_example(fleet.host("b"), "fleet_peer", &[]));
    wait_for_offer(&fleet, "a", "b", "billing");
    // The caller runs on a (its namespace: direct channels are abstract
    // sockets), where billing has one instance and a stand-in for b's.
    let addr = fleet.host("a").daemon.addr.clone();
    let (direct, here, there) = fleet.on_host("a", move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let bus = Bus::connect(&addr).await.unwrap();
            let who = |reply: switchboard::Bytes| {
                switchboard::decode::<serde_json::Value>(&reply).unwrap()["host"].clone()
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut here = Vec::new();
            while bus.direct_instance("billing").is_none() && Instant::now() < deadline {
                here.push(who(bus.call("billing.who", switchboard::Bytes::new()).await.unwrap()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let direct = bus.direct_instance("billing").is_some();
            here.push(who(bus.call("billing.who", switchboard::Bytes::new()).await.unwrap()));
            let options = switchboard::CallOptions {
                headers: switchboard::Headers::from_pairs([("sb-host", "b")]).unwrap(),
                ..switchboard::CallOptions::default()
            };
            let there = who(bus.call_with("billing.who", switchboard::Bytes::new(), options).await.unwrap());
            (direct, here, there)
        })
    });
    assert!(direct, "the stand-in took the local caller's direct channel away");
    assert!(here.iter().all(|host| host == "a"), "local calls stay here: {here:?}");
    assert_eq!(there, "b", "a call naming b goes to b, not down the direct channel");
}
