//! `switchboard metrics` against the real daemon: the counters move by
//! exactly the calls (routed, and direct ones once their instance has
//! reported them), refusals, publications and puts a test made; reading
//! them is the `metrics` permission.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::{Daemon, Guard};
use switchboard::{Bus, Bytes, CallError};
use switchboard_proto::stats::DIRECT_REPORT_INTERVAL_MS;

/// Every sample of an exposition: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
            (name.to_owned(), value.parse().unwrap_or_else(|_| panic!("not a value: {line:?}")))
        })
        .collect()
}

async fn scrape(daemon: &Daemon) -> HashMap<String, f64> {
    let mut command = daemon.cli(&["metrics"]);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    samples(&text)
}

fn value(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_the_calls_publications_and_puts_made() {
    let daemon = Daemon::start();
    let _echo = Guard(daemon.responder(&["shop.echo", "--echo", "-q"]));
    let routed = daemon.bus().await;
    routed.set_direct_calls(false);
    let direct = daemon.bus().await;
    let before = scrape(&daemon).await;

    for _ in 0..25 {
        routed.call("shop.echo", "x").await.unwrap();
    }
    let err = routed.call("shop.nosuch", "x").await.unwrap_err();
    assert!(matches!(err, CallError::NoSuchMethod(_)), "{err}");
    routed.call("nobody.home", "x").await.unwrap_err();
    // Direct: after the first call (routed, while the grant is made) they
    // skip the daemon; the instance reports them.
    for _ in 0..40 {
        direct.call("shop.echo", "y").await.unwrap();
    }
    assert!(direct.direct_instance("shop").is_some(), "the calls did not go direct");
    for n in 0..7 {
        routed.publish("shop.events", format!("e{n}")).await.unwrap();
    }
    let queue = routed.queue("shop.orders").unwrap();
    for _ in 0..4 {
        queue.put("o").await.unwrap();
    }
    // Two reporting intervals: the instance's report has reached the daemon.
    tokio::time::sleep(Duration::from_millis(2 * DIRECT_REPORT_INTERVAL_MS + 500)).await;
    let after = scrape(&daemon).await;

    let moved = |name: &str| value(&after, name) - value(&before, name);
    let calls =
        |path: &str| format!(r#"switchboard_calls_total{{service="shop",method="echo",path="{path}"}}"#);
    assert_eq!(
        moved(&calls("routed")) + moved(&calls("direct")),
        65.0,
        "25 routed + 40 by the second bus, whichever path each took"
    );
    assert!(moved(&calls("direct")) > 30.0, "the direct calls were reported: {}", moved(&calls("direct")));
    let count = r#"switchboard_call_duration_seconds_count{service="shop",method="echo",path="routed"}"#;
    assert_eq!(moved(count), moved(&calls("routed")), "one latency per routed call");
    assert_eq!(moved(r#"switchboard_calls_refused_total{kind="no_such_service"}"#), 1.0);
    let nosuch = r#"switchboard_call_errors_total{service="shop",method="nosuch",path="routed",kind="no_such_method"}"#;
    assert_eq!(value(&after, nosuch), 0.0, "an unknown method is not a counted method");
    assert_eq!(moved("switchboard_publications_total"), 7.0);
    assert_eq!(value(&after, r#"switchboard_queue_puts_total{queue="shop.orders"}"#), 4.0);
    assert_eq!(value(&after, r#"switchboard_queue_depth{queue="shop.orders"}"#), 4.0);
    assert!(value(&after, "switchboard_direct_channels") >= 1.0);
    assert!(value(&after, r#"switchboard_connections{principal="user"}"#) >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_metrics_is_a_permission_and_nobody_can_report_for_another_service() {
    let token = "metrics-reader-token-0123456789";
    let (daemon, _work) = Daemon::start_with_config(
        &format!(
            "[security]\ntokens = {{ reader = \"{token}\", other = \"other-token-0123456789abcdef\" }}\n\
             [[policy]]\nprincipal = \"token:reader\"\nallow = [\"metrics\"]\n\
             [[policy]]\nprincipal = \"token:other\"\nallow = [\"call shop.*\"]\n"
        ),
        &[],
    );
    let reader = Bus::connect_with_token(&daemon.addr, token).await.unwrap();
    let text = reader.call("$sys.metrics.scrape", Bytes::new()).await.unwrap();
    assert!(String::from_utf8_lossy(&text).contains("switchboard_uptime_seconds"));
    let other = Bus::connect_with_token(&daemon.addr, "other-token-0123456789abcdef").await.unwrap();
    let err = other.call("$sys.metrics.scrape", Bytes::new()).await.unwrap_err();
    assert!(matches!(&err, CallError::PermissionDenied(why) if why.contains("metrics")), "{err}");
    let err = other.call("$sys.daemon.stats", Bytes::new()).await.unwrap_err();
    assert!(matches!(err, CallError::PermissionDenied(_)), "{err}");

    // A report for a service the reporter does not serve counts nothing.
    let _echo = Guard(daemon.responder(&["shop.echo", "--echo", "-q"]));
    let forged = switchboard_proto::stats::CallReport {
        service: "shop".into(),
        methods: vec![(
            "echo".into(),
            switchboard_proto::stats::MethodCounts { calls: 1_000_000, ..Default::default() },
        )],
    };
    let payload = Bytes::from(switchboard_proto::sys::encode(&forged));
    other.call("$sys.daemon.report_calls", payload).await.unwrap();
    let text =
        String::from_utf8(reader.call("$sys.metrics.scrape", Bytes::new()).await.unwrap().to_vec()).unwrap();
    assert!(!text.contains("1000000"), "a forged report was counted:\n{text}");
}
