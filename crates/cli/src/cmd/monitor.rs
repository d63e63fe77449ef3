//! `switchboard monitor`: the traffic passing through the daemon, as it happens.

use std::process::ExitCode;

use switchboard::MonitorEvent;

use crate::cmd::connect;
use crate::{output, Connection};

/// Print calls, notifications, broadcasts and publications as they pass through the daemon.
///
/// One line per message: when, what kind, the target (SERVICE.METHOD or the
/// topic), who sent it, the instance it went to, its size and its trace id
/// (the one its handlers' logs carry). PATTERN picks what to show, as a
/// topic pattern over SERVICE.METHOD and topics: `billing.>`, `*.charge`,
/// `orders.>`; the default `>` shows everything.
///
/// While it runs, the daemon withdraws the direct channels to the services
/// it watches and grants none: their calls go through the daemon, so every
/// one of them shows up here (each costs the daemon's hop meanwhile).
/// Needs the `admin` permission. Messages to the daemon's own `$` services
/// are not shown.
///
/// Example: switchboard monitor 'billing.>' --count 10
#[derive(clap::Args)]
pub struct Args {
    /// What to show (default: everything).
    #[arg(default_value = ">")]
    pattern: String,
    /// Stop after this many messages.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// One JSON object per line: {kind, target, principal, session, pid, instance, bytes, trace_id, at_ms}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bus = connect(&args.connection, "switchboard-monitor").await?;
    let mut events = bus.monitor(&args.pattern, 65_536).await?;
    eprintln!("monitoring {} (Ctrl-C to stop)", args.pattern);
    let mut shown = 0;
    while args.count.is_none_or(|count| shown < count) {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        };
        if args.json {
            output::line(serde_json::to_string(&event)?)?;
        } else {
            output::line(line(&event))?;
        }
        shown += 1;
    }
    Ok(ExitCode::SUCCESS)
}

fn line(event: &MonitorEvent) -> String {
    let at = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.at_ms),
    );
    let pid = event.pid.map(|pid| format!(" pid {pid}")).unwrap_or_default();
    let to = if event.instance == 0 { String::new() } else { format!(" → #{}", event.instance) };
    let trace = if event.trace_id.is_empty() { String::new() } else { format!(" trace {}", event.trace_id) };
    format!(
        "{at} {:<9} {} from {}{pid}{to} {} B{trace}",
        event.kind, event.target, event.principal, event.bytes
    )
}
