//! `switchboard status | start | stop | restart | pause | continue | control
//! | reload`: the supervisor, through its `$sys.services` service.

use std::process::ExitCode;
use std::time::Duration;

use serde::de::DeserializeOwned;
use switchboard::{Bus, CallOptions};
use switchboard_proto::supervision::{self as sup, ControlReply, ReloadReport, ServiceStatus};

use crate::cmd::{connect, Usage};
use crate::{json, output, parse_duration, Connection};

/// Show supervised services: state, instances, pids, health, status text.
///
/// States follow the Service Control Manager: Stopped, StartPending, Running,
/// PausePending, Paused, ContinuePending, StopPending, and Failed when the
/// restart policy gave up. The same status is published (retained) on the
/// topic sys.services.NAME after every change: `switchboard sub 'sys.services.>'`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// Only this service.
    service: Option<String>,
    /// Print JSON (a list of services with their instances).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// Start, stop, restart, pause or continue a supervised service.
///
/// Waits until the service reached the state asked for and prints it.
/// start also starts what the service requires; stop first stops what
/// requires it. pause/continue use the service's own control handler when it
/// attached over the bus, else SIGSTOP/SIGCONT to its process group.
#[derive(clap::Args)]
pub struct LifecycleArgs {
    service: String,
    /// How long to wait for the service to get there.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    timeout: Duration,
    /// Print the resulting status as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// Send a control to a service: `reload`, or a custom code 128–255 with an
/// optional JSON payload; prints each instance's reply.
///
/// A plain service gets SIGHUP for reload; custom codes need a service that
/// attached over the bus and declared them (switchboard::service::run).
///
/// Example: switchboard control cache 130 '{"flush":"all"}'
#[derive(clap::Args)]
pub struct ControlArgs {
    service: String,
    /// `reload` or a number from 128 to 255.
    code: String,
    /// The payload, as JSON.
    payload: Option<String>,
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    timeout: Duration,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// Re-read the daemon's --config file and apply what changed: added services
/// start, removed ones stop, changed ones restart, the rest keep running.
#[derive(clap::Args)]
pub struct ReloadArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

async fn ask<T: DeserializeOwned>(
    bus: &Bus,
    method: &str,
    payload: bytes::Bytes,
    timeout: Duration,
) -> anyhow::Result<T> {
    let target = format!("{}.{method}", sup::SERVICES_SERVICE);
    let reply = bus.call_with(target.as_str(), payload, CallOptions::timeout(timeout)).await?;
    Ok(switchboard_proto::sys::decode(&reply)?)
}

fn service_ref(service: &str) -> bytes::Bytes {
    bytes::Bytes::from(switchboard_proto::sys::encode(&sup::ServiceRef { service: service.to_owned() }))
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let bus = connect(&args.connection, "switchboard-status").await?;
    let statuses: Vec<ServiceStatus> = ask(
        &bus,
        sup::STATUS,
        service_ref(args.service.as_deref().unwrap_or_default()),
        Duration::from_secs(10),
    )
    .await?;
    if args.json {
        output::line(serde_json::to_string_pretty(&statuses)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if statuses.is_empty() {
        output::line("no supervised services (start the daemon with `switchboard up --config FILE`)")?;
    }
    for status in &statuses {
        print_status(status)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(status: &ServiceStatus) -> anyhow::Result<()> {
    let mut head = format!("{:<20} {:<16} {}", status.service, status.state, status.start_type);
    if !status.requires.is_empty() {
        head.push_str(&format!("  requires {}", status.requires.join(", ")));
    }
    output::line(head)?;
    if !status.last_error.is_empty() {
        output::line(format!("  error: {}", status.last_error))?;
    }
    if !status.note.is_empty() {
        output::line(format!("  note: {}", status.note))?;
    }
    for i in &status.instances {
        let mut line = format!("  #{:<3} {:<16}", i.instance, i.state);
        if let Some(pid) = i.pid {
            line.push_str(&format!(" pid {pid}"));
        }
        if i.uptime_ms > 0 {
            line.push_str(&format!(
                " up {}",
                humantime::format_duration(Duration::from_secs(i.uptime_ms / 1000))
            ));
        }
        if let Some(ms) = i.restart_in_ms {
            line.push_str(&format!(" restart in {ms} ms"));
        }
        if i.restarts > 0 {
            line.push_str(&format!(" restarts {}", i.restarts));
        }
        if i.bus_aware {
            line.push_str(" bus");
        }
        for (label, text) in [("health", &i.health), ("status", &i.status), ("last exit", &i.last_exit)] {
            if !text.is_empty() {
                line.push_str(&format!("  {label}: {text}"));
            }
        }
        output::line(line)?;
    }
    Ok(())
}

/// Runs `start`, `stop`, `restart`, `pause` or `continue`.
pub async fn lifecycle(method: &'static str, args: LifecycleArgs) -> anyhow::Result<ExitCode> {
    let bus = connect(&args.connection, "switchboard-control").await?;
    let status: ServiceStatus = ask(&bus, method, service_ref(&args.service), args.timeout).await?;
    if args.json {
        output::line(serde_json::to_string_pretty(&status)?)?;
    } else {
        print_status(&status)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn control(args: ControlArgs) -> anyhow::Result<ExitCode> {
    let code = match args.code.as_str() {
        "reload" => sup::CODE_RELOAD,
        number => match number.parse::<u8>() {
            Ok(code) if code >= sup::FIRST_CUSTOM_CODE => code,
            _ => {
                return Err(Usage(format!(
                    "control code {number:?}: use `reload` or a number from 128 to 255"
                ))
                .into())
            }
        },
    };
    let payload = match &args.payload {
        Some(_) => {
            json::payload_from_arg(args.payload.as_deref()).map_err(|e| Usage(format!("{e:#}")))?.to_vec()
        }
        None => Vec::new(),
    };
    let bus = connect(&args.connection, "switchboard-control").await?;
    let request = sup::ControlRequest { service: args.service.clone(), code, payload };
    let body = bytes::Bytes::from(switchboard_proto::sys::encode(&request));
    let replies: Vec<ControlReply> = ask(&bus, sup::CONTROL, body, args.timeout).await?;
    let shown: Vec<serde_json::Value> = replies
        .iter()
        .map(|r| serde_json::json!({"instance": r.instance, "reply": json::display_payload(&r.payload)}))
        .collect();
    if args.json {
        output::line(serde_json::to_string_pretty(&shown)?)?;
    } else if shown.is_empty() {
        output::line(format!("{}: sent", args.service))?;
    } else {
        for reply in shown {
            output::line(format!("#{} {}", reply["instance"], reply["reply"]))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn reload(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let bus = connect(&args.connection, "switchboard-reload").await?;
    let report: ReloadReport = ask(&bus, sup::RELOAD, bytes::Bytes::new(), Duration::from_secs(30)).await?;
    if args.json {
        output::line(serde_json::to_string_pretty(&report)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    for (label, names) in [
        ("added", &report.added),
        ("removed", &report.removed),
        ("changed", &report.changed),
        ("unchanged", &report.unchanged),
    ] {
        if !names.is_empty() {
            output::line(format!("{label}: {}", names.join(", ")))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
