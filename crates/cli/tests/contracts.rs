//! Typed contracts: a trait becomes a client and a server that interoperate
//! with each other and with the CLI's JSON; mismatches are typed errors.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use support::Daemon;
use switchboard::{contract, CallError, Reject};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub account: String,
    pub cents: u64,
    pub note: Option<String>,
}

#[contract(service = "billing")]
pub trait Billing {
    /// Charges an account.
    async fn charge(&self, account: String, cents: u64, note: Option<String>) -> Result<Receipt, Reject>;
    /// How many charges so far.
    async fn count(&self) -> Result<u64, Reject>;
    /// Fire-and-forget audit line.
    #[oneway]
    async fn audit(&self, line: String);
}

#[derive(Default)]
struct Ledger {
    charges: AtomicU64,
    audits: Arc<AtomicU64>,
}

impl Billing for Ledger {
    async fn charge(&self, account: String, cents: u64, note: Option<String>) -> Result<Receipt, Reject> {
        if account == "frozen" {
            return Err(Reject::new("account frozen is frozen"));
        }
        self.charges.fetch_add(1, Ordering::SeqCst);
        Ok(Receipt { account, cents, note })
    }

    async fn count(&self) -> Result<u64, Reject> {
        Ok(self.charges.load(Ordering::SeqCst))
    }

    async fn audit(&self, _line: String) {
        self.audits.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn typed_client_and_typed_server_round_trip() {
    let daemon = Daemon::start();
    let server_bus = daemon.bus().await;
    let audits = Arc::new(AtomicU64::new(0));
    let ledger = Ledger { audits: audits.clone(), ..Default::default() };
    let _server = BillingServer::builder(&server_bus, ledger).start().await.unwrap();

    let bus = daemon.bus().await;
    let billing = BillingClient::new(&bus).with_timeout(Duration::from_secs(5));
    let receipt = billing.charge("acct-1".into(), 500, Some("coffee".into())).await.unwrap();
    assert_eq!(receipt, Receipt { account: "acct-1".into(), cents: 500, note: Some("coffee".into()) });
    assert_eq!(billing.charge("acct-2".into(), 1, None).await.unwrap().note, None);
    assert_eq!(billing.count().await.unwrap(), 2);
    assert_eq!(
        billing.charge("frozen".into(), 1, None).await,
        Err(CallError::Rejected("account frozen is frozen".into()))
    );
    billing.audit("charged twice".into()).await.unwrap();
    assert!(support::eventually(Duration::from_secs(5), || audits.load(Ordering::SeqCst) == 1).await);

    // Broadcast through the contract: one typed result per instance.
    let second = Ledger { audits: audits.clone(), ..Default::default() };
    let _second = BillingServer::builder(&server_bus, second).start().await.unwrap();
    let counts = billing.count_broadcast().await.unwrap();
    let mut values: Vec<u64> = counts.into_iter().map(|(_, r)| r.unwrap()).collect();
    values.sort_unstable();
    assert_eq!(values.len(), 2);
    assert_eq!(values.iter().sum::<u64>(), 2, "both instances answered: {values:?}");
    // `_all` for a one-way method: every instance gets it (one got the first).
    billing.audit_all("to everyone".into()).await.unwrap();
    assert!(support::eventually(Duration::from_secs(5), || audits.load(Ordering::SeqCst) == 3).await);
}

#[tokio::test]
async fn json_from_the_cli_reaches_a_typed_server_and_mismatches_are_named() {
    let daemon = Daemon::start();
    let server_bus = daemon.bus().await;
    let _server = BillingServer::builder(&server_bus, Ledger::default()).start().await.unwrap();
    let cli = |args: &[&str]| {
        let mut cmd = daemon.cli(args);
        // Off the runtime thread: this process serves the calls.
        async move { tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap() }
    };

    let out = cli(&["call", "billing.charge", r#"{"account":"a","cents":5}"#]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply, serde_json::json!({"account": "a", "cents": 5, "note": null}));

    // A field of the wrong type: a typed error naming the method and the field.
    let out = cli(&["call", "billing.charge", r#"{"account":"a","cents":"five"}"#, "--json"]).await;
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"], "bad_arguments");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("`cents`") && message.contains("charge"), "{message}");

    // A missing field, and arguments that are not a map.
    let out = cli(&["call", "billing.charge", r#"{"cents":5}"#, "--json"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("`account` of charge is missing"));
    let out = cli(&["call", "billing.charge", "[1,2]", "--json"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("expected a map"));

    // An unknown method.
    let out = cli(&["call", "billing.refund", "{}", "--json"]).await;
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"], "no_such_method");

    // The contract's methods and argument names are visible.
    let out = cli(&["ls", "billing"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("charge(account: String, cents: u64, note: Option<String>) -> Receipt"), "{text}");
    assert!(text.contains("audit(line: String) [one-way]"), "{text}");
}

#[tokio::test]
async fn a_typed_client_meeting_the_wrong_server_gets_a_decode_error() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    // Something that is not a Billing server registers as `billing`.
    let _impostor = bus
        .serve("billing")
        .unwrap()
        .method("count", |_| async { Ok(switchboard::encode("not a number").unwrap()) })
        .start()
        .await
        .unwrap();
    let err = BillingClient::new(&bus).count().await.unwrap_err();
    assert!(matches!(&err, CallError::Decode(m) if m.contains("reply of count")), "{err:?}");
}

#[contract(service = "invoices")]
pub trait Invoices {
    /// Sends the invoice of an order; stored until an instance takes it.
    #[queued]
    async fn send(&self, order: u64, email: String);
}

struct Mailer(Arc<std::sync::Mutex<Vec<(u64, String)>>>);

impl Invoices for Mailer {
    async fn send(&self, order: u64, email: String) {
        self.0.lock().unwrap().push((order, email));
    }
}

#[tokio::test]
async fn queued_methods_wait_for_the_service_and_arrive_once_it_runs() {
    let daemon = Daemon::start();
    let bus = daemon.bus().await;
    let invoices = InvoicesClient::new(&bus);
    // Nobody serves `invoices` yet: the calls are stored, not lost.
    let first = invoices.send(1, "a@example.org".into()).await.unwrap();
    let second = invoices.send(2, "b@example.org".into()).await.unwrap();
    assert!(second > first);
    let mut cli = daemon.cli(&["queue", "put", "invoices.send", r#"{"order":3,"email":"c@example.org"}"#]);
    let out = tokio::task::spawn_blocking(move || cli.output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let server_bus = daemon.bus().await;
    let _server = InvoicesServer::builder(&server_bus, Mailer(sent.clone())).start().await.unwrap();
    assert!(support::eventually(Duration::from_secs(5), || sent.lock().unwrap().len() == 3).await);
    let mut orders: Vec<u64> = sent.lock().unwrap().iter().map(|(o, _)| *o).collect();
    orders.sort_unstable();
    assert_eq!(orders, vec![1, 2, 3]);
    // Each was acked once handled: the queue is empty.
    let mut drained = false;
    for _ in 0..50 {
        let queues = bus.queues().await.unwrap();
        let q = queues.iter().find(|q| q.queue == "invoices.send").unwrap();
        if q.depth == 0 && q.in_flight == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(drained, "the queue still holds messages");
}
