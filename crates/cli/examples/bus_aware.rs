//! A bus-aware supervised service, as `switchboard::service::run` makes it:
//! it serves `cache.get` and `cache.note` (logs a structured event), accepts pause/continue, reload and the custom
//! control 130 ("flush", replying with what it flushed), and logs a
//! structured event on reload.
//!
//! Run it under the supervisor with a config like:
//!
//! ```toml
//! [services.cache]
//! command = "target/debug/examples/bus_aware"
//! ready = "bus"
//! ```
//!
//! `ACCEPT_PAUSE=0` in its environment makes it refuse to declare pause;
//! `START_DELAY_MS` delays its start (to see calls wait for it);
//! `HANG_ON_PAUSE=1` makes it never finish pausing (to see it treated as hung);
//! `STALL_MS` adds a `stall` method that blocks the whole process that long
//! (to see the daemon cut off a connection that stops reading, and the
//! instance reconnect and attach again).
//! `NOTIFY_READY_AFTER_MS` makes it a plain `ready = "notify"` service
//! instead: it waits that long, says READY=1 with `service::notify_ready()`
//! and then only sleeps (no bus).
#![forbid(unsafe_code)]

use std::time::Duration;

use switchboard::service::{self, ControlKind, Controls};
use switchboard::{Bus, Bytes, Reject};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    if let Some(ms) = std::env::var("NOTIFY_READY_AFTER_MS").ok().and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        service::notify_ready()?;
        println!("notified ready");
        std::future::pending::<()>().await;
    }
    if let Some(ms) = std::env::var("START_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let name = std::env::var("SWITCHBOARD_SERVICE").unwrap_or_else(|_| "cache".into());
    let bus = Bus::connect_default().await?;
    let noter = bus.clone();
    let mut service = bus
        .serve(&name)?
        .method("get", |_request| async { Ok(Bytes::from_static(b"\xa5value")) })
        .method("note", move |_request| {
            // Logged while serving: the event records this call's trace id.
            let logger = noter.clone();
            async move {
                service::log(&logger, "info", "noted", &[]).await.map_err(reject)?;
                Ok(Bytes::new())
            }
        });
    if let Some(ms) = std::env::var("STALL_MS").ok().and_then(|v| v.parse().ok()) {
        service = service.method("stall", move |_request| async move {
            // Blocks the runtime's only thread: nothing reads the connection.
            std::thread::sleep(Duration::from_millis(ms));
            Ok(Bytes::new())
        });
    }
    let mut controls = Controls::new().accept_reload().accept_custom(130);
    if std::env::var("ACCEPT_PAUSE").as_deref() != Ok("0") {
        controls = controls.accept_pause();
    }
    let logger = bus.clone();
    let controls = controls.handler(move |control| {
        let logger = logger.clone();
        async move {
            match control.kind {
                ControlKind::Pause if std::env::var("HANG_ON_PAUSE").is_ok() => {
                    std::future::pending::<()>().await;
                    Ok(Bytes::new())
                }
                ControlKind::Pause => {
                    control.progress(1, Duration::from_secs(2), "draining").await.map_err(reject)?;
                    Ok(Bytes::new())
                }
                ControlKind::Reload => {
                    service::log(&logger, "info", "reloaded", &[("entries", "42")]).await.map_err(reject)?;
                    Ok(Bytes::new())
                }
                ControlKind::Custom(130) => {
                    let what: serde_json::Value = switchboard::decode(&control.payload).map_err(reject)?;
                    switchboard::encode(&serde_json::json!({ "flushed": what })).map_err(reject)
                }
                _ => Ok(Bytes::new()),
            }
        }
    });
    println!("serving {name}");
    service::run(service, controls).await?;
    println!("stopped");
    Ok(())
}

fn reject(err: switchboard::CallError) -> Reject {
    Reject::new(err.to_string())
}
