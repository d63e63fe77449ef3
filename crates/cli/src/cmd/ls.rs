//! `switchboard ls`: what is registered, and changes as they happen.

use std::process::ExitCode;

use switchboard::ServiceInfo;

use crate::cmd::connect;
use crate::{output, Connection};

/// List services, their instances and methods.
///
/// With SERVICE, only that service. With --watch, print instances coming up
/// and going down as they happen (after the current list).
#[derive(clap::Args)]
pub struct Args {
    /// Only this service.
    service: Option<String>,
    /// Print JSON (one document; with --watch, one event per line).
    #[arg(long)]
    json: bool,
    /// Keep running and print registry changes.
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    connection: Connection,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bus = connect(&args.connection, "switchboard-ls").await?;
    let mut events = if args.watch {
        Some(bus.watch(1024).await?)
    } else {
        None
    };
    let mut services = bus.services().await?;
    if let Some(only) = &args.service {
        services.retain(|s| &s.service == only);
        if services.is_empty() && !args.watch {
            anyhow::bail!("no service named {only} is registered");
        }
    }
    if args.json {
        output::line(serde_json::to_string_pretty(&services)?)?;
    } else {
        print_table(&services)?;
    }
    let Some(events) = events.as_mut() else {
        return Ok(ExitCode::SUCCESS);
    };
    while let Some(event) = events.recv().await {
        if args
            .service
            .as_ref()
            .is_some_and(|only| &event.service != only)
        {
            continue;
        }
        if args.json {
            output::line(serde_json::to_string(&event)?)?;
        } else {
            output::line(format_args!(
                "{:<4} {} instance {} ({}) [{}]",
                event.event,
                event.service,
                event.instance,
                event.methods.join(", "),
                event.client
            ))?;
        }
    }
    anyhow::bail!("the connection to the daemon closed")
}

fn print_table(services: &[ServiceInfo]) -> anyhow::Result<()> {
    if services.is_empty() {
        return output::line("no services registered");
    }
    let width = services
        .iter()
        .map(|s| s.service.len())
        .max()
        .unwrap_or(7)
        .max(7);
    output::line(format_args!(
        "{:<width$}  {:>8}  {:>7}  {:>11}  {:>9}  {:<20}  METHODS",
        "SERVICE", "INSTANCE", "PID", "OUTSTANDING", "DELIVERED", "CLIENT"
    ))?;
    for service in services {
        for i in &service.instances {
            let pid = i.pid.map_or("-".to_owned(), |p| p.to_string());
            output::line(format_args!(
                "{:<width$}  {:>8}  {:>7}  {:>11}  {:>9}  {:<20}  {}",
                service.service,
                i.instance,
                pid,
                i.outstanding,
                i.delivered,
                i.client,
                i.methods.join(", ")
            ))?;
        }
    }
    Ok(())
}
