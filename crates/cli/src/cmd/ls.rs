//! `switchboard ls`: what is registered and subscribed, and changes as they happen.

use std::process::ExitCode;

use switchboard::{ServiceInfo, TopicsInfo};

use crate::cmd::connect;
use crate::{output, Connection};

/// List services (instances, methods) and subscriptions (with counters).
///
/// With SERVICE, only that service, with its method signatures. MISSED
/// counts messages a subscriber lost because it did not keep up. With
/// --watch, print instances coming up and going down as they happen.
/// With --sys, list the daemon's own API instead: every `$sys` method,
/// what it takes and what it gives (the schemas are in docs/protocol.md).
/// With --breakers, the circuit breakers that processes on the bus report
/// open or half-open (clients with breakers on report them as they change).
/// With --fleet, this host's link to the fleet and the other hosts it hears
/// from, with what each offers (`[fleet]` in the config, docs/fleet.md).
/// With --regions, the named shared regions and who holds each mapped.
#[derive(clap::Args)]
pub struct Args {
    /// Only this service.
    service: Option<String>,
    /// Print JSON: {"services": [...], "subscriptions": [...], "retained_topics": N};
    /// with --watch, then one event per line.
    #[arg(long)]
    json: bool,
    /// Keep running and print registry changes.
    #[arg(long)]
    watch: bool,
    /// List the daemon's own `$sys` methods (what they take and give) and exit.
    #[arg(long, conflicts_with_all = ["watch", "service"])]
    sys: bool,
    /// List the open and half-open circuit breakers each connection reported, and exit.
    #[arg(long, conflicts_with_all = ["watch", "service", "sys"])]
    breakers: bool,
    /// List the hosts of the fleet this daemon joined (their services and
    /// instances, and when each was last heard), and exit.
    #[arg(long, conflicts_with_all = ["watch", "service", "sys", "breakers"])]
    fleet: bool,
    /// List the named shared regions (size, sequence, holders), and exit.
    #[arg(long, conflicts_with_all = ["watch", "service", "sys", "breakers", "fleet"])]
    regions: bool,
    #[command(flatten)]
    connection: Connection,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.sys {
        print_sys_api(args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.breakers {
        return breakers(&args).await;
    }
    if args.fleet {
        return fleet(&args).await;
    }
    if args.regions {
        let bus = connect(&args.connection, "switchboard-ls").await?;
        crate::cmd::region::list(&bus, args.json).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let bus = connect(&args.connection, "switchboard-ls").await?;
    let mut events = if args.watch { Some(bus.watch(1024).await?) } else { None };
    let mut services = bus.services().await?;
    let topics = bus.topics().await?;
    if let Some(only) = &args.service {
        services.retain(|s| &s.service == only);
        if services.is_empty() && !args.watch {
            anyhow::bail!("no service named {only} is registered");
        }
    }
    if args.json {
        let document = serde_json::json!({
            "services": services,
            "subscriptions": if args.service.is_some() { Vec::new() } else { topics.subscriptions.clone() },
            "retained_topics": topics.retained_topics,
        });
        output::line(serde_json::to_string_pretty(&document)?)?;
    } else if args.service.is_some() {
        print_signatures(&services)?;
    } else {
        print_services(&services)?;
        print_subscriptions(&topics)?;
    }
    let Some(events) = events.as_mut() else {
        return Ok(ExitCode::SUCCESS);
    };
    while let Some(event) = events.recv().await {
        if args.service.as_ref().is_some_and(|only| &event.service != only) {
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

fn print_services(services: &[ServiceInfo]) -> anyhow::Result<()> {
    if services.is_empty() {
        return output::line("no services registered");
    }
    let width = services.iter().map(|s| s.service.len()).max().unwrap_or(7).max(7);
    output::line(format_args!(
        "{:<width$}  {:>8}  {:>7}  {:>11}  {:>9}  {:>6}  {:<20}  METHODS",
        "SERVICE", "INSTANCE", "PID", "OUTSTANDING", "DELIVERED", "DIRECT", "CLIENT"
    ))?;
    for service in services {
        for i in &service.instances {
            let pid = i.pid.map_or("-".to_owned(), |p| p.to_string());
            output::line(format_args!(
                "{:<width$}  {:>8}  {:>7}  {:>11}  {:>9}  {:>6}  {:<20}  {}",
                service.service,
                i.instance,
                pid,
                i.outstanding,
                i.delivered,
                i.direct_channels,
                i.client,
                i.methods.join(", ")
            ))?;
        }
    }
    Ok(())
}

/// One service in detail: each method with its signature, then instances.
fn print_signatures(services: &[ServiceInfo]) -> anyhow::Result<()> {
    for service in services {
        output::line(format_args!("{}", service.service))?;
        if let Some(first) = service.instances.first() {
            for (index, method) in first.methods.iter().enumerate() {
                let signature = first.signatures.get(index).filter(|s| !s.is_empty());
                output::line(format_args!("  {}", signature.map_or(method.as_str(), String::as_str)))?;
            }
        }
        for i in &service.instances {
            let pid = i.pid.map_or("-".to_owned(), |p| p.to_string());
            output::line(format_args!(
                "  instance {} pid {pid} [{}]: {} delivered, {} outstanding, {} direct channels",
                i.instance, i.client, i.delivered, i.outstanding, i.direct_channels
            ))?;
        }
    }
    Ok(())
}

fn print_subscriptions(topics: &TopicsInfo) -> anyhow::Result<()> {
    if topics.retained_topics > 0 {
        output::line(format_args!("({} topics keep a retained value)", topics.retained_topics))?;
    }
    if topics.subscriptions.is_empty() {
        return Ok(());
    }
    let width = topics.subscriptions.iter().map(|s| s.pattern.len()).max().unwrap_or(12).max(12);
    output::line("")?;
    output::line(format_args!(
        "{:<width$}  {:>7}  {:>10}  {:>8}  {:>7}  CLIENT",
        "SUBSCRIPTION", "PID", "DELIVERED", "MISSED", "BACKLOG"
    ))?;
    for sub in &topics.subscriptions {
        let pid = sub.pid.map_or("-".to_owned(), |p| p.to_string());
        output::line(format_args!(
            "{:<width$}  {pid:>7}  {:>10}  {:>8}  {:>7}  {}",
            sub.pattern, sub.delivered, sub.missed, sub.backlog, sub.client
        ))?;
    }
    Ok(())
}

/// Show who the daemon says you are: your principal (user:NAME for a local
/// user, service:NAME#N for a supervised instance, token:NAME, cert:CN), the
/// uid and pid it saw, and your session. The policy grants by principal.
#[derive(clap::Args)]
pub struct WhoamiArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

pub async fn whoami(args: WhoamiArgs) -> anyhow::Result<ExitCode> {
    let bus = connect(&args.connection, "switchboard-whoami").await?;
    let me = bus.whoami().await?;
    if args.json {
        output::line(serde_json::to_string(&me)?)?;
    } else {
        output::line(format!("{} (uid {}, pid {}, session {})", me.principal, me.uid, me.pid, me.session))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The `$sys` API as the protocol crate declares it.
fn print_sys_api(json: bool) -> anyhow::Result<()> {
    let methods = switchboard_proto::api::SYS_METHODS;
    if json {
        let list: Vec<serde_json::Value> = methods
            .iter()
            .map(|m| {
                serde_json::json!({
                    "target": format!("{}.{}", m.service, m.method),
                    "takes": m.takes,
                    "gives": m.gives,
                    "about": m.about,
                })
            })
            .collect();
        return output::line(serde_json::to_string_pretty(&list)?);
    }
    let width = methods.iter().map(|m| m.service.len() + m.method.len() + 1).max().unwrap_or(6);
    output::line(format_args!("{:<width$}  {:<15}  {:<16}  ABOUT", "METHOD", "TAKES", "GIVES"))?;
    for m in methods {
        let target = format!("{}.{}", m.service, m.method);
        output::line(format_args!("{target:<width$}  {:<15}  {:<16}  {}", m.takes, m.gives, m.about))?;
    }
    Ok(())
}

/// `ls --breakers`.
async fn breakers(args: &Args) -> anyhow::Result<ExitCode> {
    use switchboard_proto::sys::{self, ProcessBreakers};
    let bus = connect(&args.connection, "switchboard-ls").await?;
    let target = format!("{}.{}", sys::DAEMON_SERVICE, sys::DAEMON_BREAKERS);
    let reply = bus.call(target.as_str(), bytes::Bytes::new()).await?;
    let processes: Vec<ProcessBreakers> = sys::decode(&reply)?;
    if args.json {
        output::line(serde_json::to_string_pretty(&processes)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if processes.is_empty() {
        output::line("no open circuit breakers reported")?;
        return Ok(ExitCode::SUCCESS);
    }
    output::line(format_args!("{:<20} {:<10} {:>8}  {:<24} STATE", "SERVICE", "SESSION", "PID", "CLIENT"))?;
    for process in &processes {
        let pid = process.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        for breaker in &process.breakers {
            output::line(format_args!(
                "{:<20} {:<10} {:>8}  {:<24} {}",
                breaker.service, process.session, pid, process.client, breaker.state
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ls --fleet`.
async fn fleet(args: &Args) -> anyhow::Result<ExitCode> {
    use switchboard_fleet::{FLEET_SERVICE, FLEET_STATUS};
    let bus = connect(&args.connection, "switchboard-ls").await?;
    let target = format!("{FLEET_SERVICE}.{FLEET_STATUS}");
    let reply = match bus.call(target.as_str(), bytes::Bytes::new()).await {
        Err(switchboard::CallError::NoSuchService(_)) => {
            anyhow::bail!("this daemon is not in a fleet: its config has no [fleet] (docs/fleet.md)")
        }
        reply => reply?,
    };
    let status: serde_json::Value = switchboard_proto::sys::decode(&reply)?;
    if args.json {
        output::line(serde_json::to_string_pretty(&status)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let text = |value: &serde_json::Value| value.as_str().unwrap_or("?").to_owned();
    let servers: Vec<String> = status["servers"].as_array().into_iter().flatten().map(text).collect();
    output::line(format_args!(
        "this host: {} · NATS {} · link {}",
        text(&status["host"]),
        servers.join(", "),
        text(&status["link"])
    ))?;
    let hosts = status["hosts"].as_array().cloned().unwrap_or_default();
    if hosts.is_empty() {
        output::line("no other host heard from")?;
        return Ok(ExitCode::SUCCESS);
    }
    output::line(format_args!("{:<20} {:>8} {:>10}  SERVICES (instances)", "HOST", "HEARD", "UP"))?;
    for host in &hosts {
        let seconds =
            |key: &str| host[key].as_u64().map_or("?".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        let services: Vec<String> = host["services"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, offer)| format!("{name}({})", offer["instances"].as_u64().unwrap_or(0)))
            .collect();
        output::line(format_args!(
            "{:<20} {:>8} {:>10}  {}",
            text(&host["host"]),
            seconds("heard_ms_ago"),
            seconds("up_ms"),
            services.join(" ")
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
