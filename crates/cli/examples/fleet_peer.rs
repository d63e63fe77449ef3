//! A service for the fleet tests and benchmark: it serves `SERVICE.who`
//! (default `billing.who`), which answers what the instance saw of the call
//! — this host's label, the caller's principal, the headers, the deadline
//! left — `SERVICE.echo`, and `SERVICE.nap`, which answers the host's label
//! after `NAP_MS` milliseconds, `SERVICE.count` (counts what reaches this
//! instance, calls and notifications alike) and `SERVICE.counted` (the
//! count so far). `INSTANCES=N` registers N instances on one
//! connection; `HOST_LABEL` names the host in the answers.
//!
//! ```sh
//! SWITCHBOARD_ADDR=unix:/run/switchboard/bus.sock HOST_LABEL=c target/debug/examples/fleet_peer
//! ```
#![forbid(unsafe_code)]

use std::time::Instant;

use switchboard::{encode, Bus, Reject};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let name = std::env::var("SERVICE").unwrap_or_else(|_| "billing".into());
    let label = std::env::var("HOST_LABEL").unwrap_or_else(|_| "?".into());
    let count: usize = std::env::var("INSTANCES").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
    let nap: u64 = std::env::var("NAP_MS").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
    let bus = Bus::connect_default().await?;
    let mut services = Vec::new();
    for _ in 0..count {
        let label = label.clone();
        let who = label.clone();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = seen.clone();
        let service = bus
            .serve(&name)?
            .method("who", move |request| {
                let label = who.clone();
                async move {
                    let headers: serde_json::Map<String, serde_json::Value> =
                        request.headers.iter().map(|(k, v)| (k.to_owned(), v.into())).collect();
                    let left =
                        request.deadline.map(|d| d.saturating_duration_since(Instant::now()).as_millis());
                    let seen = serde_json::json!({
                        "host": label,
                        "instance": request.instance,
                        "principal": request.caller.principal.as_str(),
                        "headers": headers,
                        "deadline_ms": left.map(|ms| ms as u64),
                    });
                    encode(&seen).map_err(|err| Reject::new(err.to_string()))
                }
            })
            .method("echo", |request| async move { Ok(request.payload) })
            .method("count", move |_| {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async { Ok(switchboard::Bytes::new()) }
            })
            .method("counted", move |_| {
                let count = counted.load(std::sync::atomic::Ordering::Relaxed);
                async move { encode(&count).map_err(|err| Reject::new(err.to_string())) }
            })
            .method("nap", {
                let label = label.clone();
                move |_| {
                    let label = label.clone();
                    async move {
                        tokio::time::sleep(std::time::Duration::from_millis(nap)).await;
                        encode(&label).map_err(|err| Reject::new(err.to_string()))
                    }
                }
            })
            .start()
            .await?;
        services.push(service);
    }
    println!("serving {name} with {count} instance(s) as {label}");
    std::future::pending::<()>().await;
    Ok(())
}
