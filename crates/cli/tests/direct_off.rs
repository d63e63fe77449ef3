//! `SWITCHBOARD_DIRECT=0` keeps a process's calls on the daemon's path. The
//! variable is read when a `Bus` is made, so this file holds one test only:
//! no other test of this process may read the environment meanwhile.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::Duration;

use support::{Daemon, Guard};
use switchboard::Bus;

async fn delivered(bus: &Bus, service: &str) -> u64 {
    let services = bus.services().await.unwrap();
    let found = services.iter().find(|s| s.service == service).expect("service registered");
    found.instances.iter().map(|i| i.delivered).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchboard_direct_0_keeps_every_call_on_the_daemons_path() {
    let daemon = Daemon::start();
    let _echo = Guard(daemon.responder(&["d.echo", "--echo", "-q"]));
    std::env::set_var("SWITCHBOARD_DIRECT", "0");
    let routed = daemon.bus().await;
    std::env::remove_var("SWITCHBOARD_DIRECT");
    let before = delivered(&routed, "d").await;
    for i in 0..100 {
        let payload = format!("call {i}");
        assert_eq!(routed.call("d.echo", payload.clone()).await.unwrap(), payload.as_bytes());
        assert_eq!(routed.direct_instance("d"), None, "call {i} took a direct channel");
    }
    assert_eq!(delivered(&routed, "d").await - before, 100, "the daemon routed every call");
    // The control: a process without the variable gets a channel to the
    // same instance, so it was the variable that kept the first one off it.
    let direct = daemon.bus().await;
    let mut went_direct = false;
    for _ in 0..500 {
        direct.call("d.echo", "x").await.unwrap();
        if direct.direct_instance("d").is_some() {
            went_direct = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(went_direct, "no direct channel without SWITCHBOARD_DIRECT=0 either");
}
