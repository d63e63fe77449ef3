//! A policy reload takes away what it no longer allows (issue 12, defect 11).
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::Duration;

use support::Daemon;
use switchboard::{Bus, CallError};

const EDGE: &str = "edge-token-0123456789abcdef";
const GONE: &str = "gone-token-0123456789abcdef";

fn config(edge_allow: &str, with_gone: bool) -> String {
    let gone = if with_gone { format!(", gone = \"{GONE}\"") } else { String::new() };
    format!(
        "[security]\ntokens = {{ edge = \"{EDGE}\"{gone} }}\n\
         [[policy]]\nprincipal = \"token:edge\"\nallow = [{edge_allow}]\n\
         [[policy]]\nprincipal = \"token:gone\"\nallow = [\"call $sys.>\"]\n"
    )
}

/// Before the fix subscriptions, queue consumers, registrations, watches
/// and sessions logged in with a removed token all survived a reload.
/// Now each ends with a typed `permission_denied` (an `Ended` frame), and
/// the token's sessions are closed. Failed before the fix (the
/// subscription kept receiving).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_ends_what_it_no_longer_allows() {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("daemon.toml");
    let everything = "\"subscribe orders.>\", \"queue.get jobs\", \"serve edgesvc\", \"call $sys.>\"";
    std::fs::write(&path, config(everything, true)).unwrap();
    let daemon = Daemon::start_with(&["--config", path.to_str().unwrap()]);
    let owner = daemon.bus().await;
    owner.queue("jobs").unwrap().declare(Default::default()).await.unwrap();

    let edge = Bus::connect_with_token(&daemon.addr, EDGE).await.unwrap();
    let mut orders = edge.subscribe("orders.>").await.unwrap();
    let mut jobs = edge.queue("jobs").unwrap().consume(1).await.unwrap();
    let _svc =
        edge.serve("edgesvc").unwrap().method("ping", |_| async { Ok(bytes::Bytes::new()) }).start().await;
    let _svc = _svc.unwrap();
    let mut watch = edge.watch(16).await.unwrap();
    let gone = Bus::connect_with_token(&daemon.addr, GONE).await.unwrap();
    gone.whoami().await.unwrap();
    owner.publish("orders.new", &b"before"[..]).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), orders.next()).await.unwrap();
    assert!(first.is_some());

    // The reload keeps one call for edge, takes everything else, and removes token gone.
    std::fs::write(&path, config("\"call $sys.queues.list\"", false)).unwrap();
    let out = daemon.cli(&["reload"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");

    let ended = tokio::time::timeout(Duration::from_secs(5), orders.next()).await.unwrap();
    assert!(ended.is_none(), "the subscription still delivers: {ended:?}");
    match orders.ended() {
        Some(CallError::PermissionDenied(message)) => {
            assert!(message.contains("subscribe orders.>"), "{message}")
        }
        other => panic!("subscription ended for {other:?}"),
    }
    owner.publish("orders.new", &b"after"[..]).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), jobs.next()).await.unwrap().is_none(),
        "consumer ended"
    );
    // The watch may first report edgesvc going down, then it ends.
    let drained =
        tokio::time::timeout(Duration::from_secs(5), async { while watch.recv().await.is_some() {} });
    assert!(drained.await.is_ok(), "the watch did not end");
    let services = owner.services().await.unwrap();
    assert!(!services.iter().any(|s| s.service == "edgesvc"), "the registration was removed");
    // Edge's session itself stays: it may still list queues.
    edge.queues().await.unwrap();
    // The removed token's session is closed, and cannot come back.
    let log_says = |text: &'static str| {
        let daemon = &daemon;
        move || daemon.log().contains(text)
    };
    assert!(
        support::eventually(Duration::from_secs(5), log_says("closing connection: token gone was removed"))
            .await
    );
    assert!(support::eventually(Duration::from_secs(5), log_says("connection refused: unknown token")).await);
    let answer = tokio::time::timeout(Duration::from_secs(1), gone.whoami()).await;
    assert!(!matches!(answer, Ok(Ok(_))), "the removed token is still served: {answer:?}");
    assert!(daemon.log().contains("token gone was removed"), "{}", daemon.log());
}
