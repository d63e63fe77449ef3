//! `switchboard call`, `notify` and `broadcast`.

use std::process::ExitCode;
use std::time::Duration;

use switchboard::{CallError, CallOptions, InstanceId, Target};

use switchboard_proto::fleet::FLEET_HEADER;

use crate::cmd::{connect, parse_header, Usage};
use crate::{json, output, parse_duration, Connection};

/// The arguments and headers of a request.
#[derive(clap::Args)]
pub struct Body {
    /// The arguments, as JSON (default: null).
    payload: Option<String>,
    /// A header the receiver sees, KEY=VALUE (repeatable).
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
}

impl Body {
    fn options(&self, timeout: Duration) -> anyhow::Result<(bytes::Bytes, CallOptions)> {
        let payload = json::payload_from_arg(self.payload.as_deref()).map_err(|e| Usage(format!("{e:#}")))?;
        let headers = switchboard::Headers::from_pairs(self.headers.iter().map(|(k, v)| (k, v)))
            .map_err(|e| Usage(e.to_string()))?;
        Ok((payload, CallOptions { timeout, instance: None, headers, retry: None }))
    }
}

/// Call SERVICE.METHOD and print the reply as JSON.
///
/// The JSON argument travels as MessagePack; the reply comes back as JSON.
/// Errors are typed: no_such_service, no_such_method, timeout,
/// instance_gone, payload_too_large, rejected, shutting_down... With --json
/// an error is printed on stdout as {"error": KIND, "message": TEXT}.
///
/// --trace shows every service the call passed through (the ones it called,
/// and theirs): the deadline left when the request reached it, how long it
/// took and how it answered, with the call's trace id — the one its logs
/// carry. Services served by the Rust or Python client report their hop.
///
/// Example: switchboard call billing.charge '{"account":"a","cents":5}' --timeout 2s
#[derive(clap::Args)]
pub struct CallArgs {
    /// The method to call, e.g. billing.charge or inventory.eu.reserve.
    target: Target,
    #[command(flatten)]
    body: Body,
    /// How long to wait for the reply.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Send to this instance (see `switchboard ls`) instead of any.
    #[arg(long, value_name = "ID")]
    instance: Option<InstanceId>,
    /// Send to this host of the fleet (a name `switchboard ls --fleet`
    /// lists), even when this host serves the method too.
    #[arg(long, value_name = "NAME", conflicts_with = "instance")]
    host: Option<String>,
    /// Print errors as JSON on stdout too; with --trace, print one object:
    /// {"reply"|"error"…, "trace_id": HEX, "hops": [{depth, service, method,
    /// instance, deadline_ms, took_us, outcome}]}.
    #[arg(long)]
    json: bool,
    /// Show what each service along the call saw (on stderr; with --json
    /// in the object on stdout).
    #[arg(long)]
    trace: bool,
    #[command(flatten)]
    connection: Connection,
}

/// Send a one-way notification to SERVICE.METHOD (no reply).
///
/// Example: switchboard notify cache.invalidate '{"key":"user:42"}'
#[derive(clap::Args)]
pub struct NotifyArgs {
    /// The method to notify.
    target: Target,
    #[command(flatten)]
    body: Body,
    /// Notify every instance instead of one.
    #[arg(long)]
    all: bool,
    /// With --all: every instance on every host of the fleet this daemon
    /// joined, not this host's only.
    #[arg(long, requires = "all")]
    fleet: bool,
    /// Print {"notified": TARGET, "all": …} once the daemon has it.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// Call SERVICE.METHOD on every instance and print one line per instance.
///
/// Each line is the instance's reply or its error (timeout, instance_gone,
/// rejected...); a last line on stderr says whether every instance answered.
/// Exits 1 if any instance failed. --oneway sends a notification to every
/// instance instead and waits for nothing. With --fleet, the instances on
/// every host of the fleet are reached too, each line naming its host; a
/// host that falls silent mid-broadcast is reported with its instances.
///
/// Example: switchboard broadcast worker.recycle '{"reason":"deploy"}' --timeout 5s --fleet
#[derive(clap::Args)]
pub struct BroadcastArgs {
    /// The method to call on every instance.
    target: Target,
    #[command(flatten)]
    body: Body,
    /// How long to wait for the answers.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Notify every instance; no answers.
    #[arg(long)]
    oneway: bool,
    /// Every host of the fleet this daemon joined, not this host only.
    #[arg(long)]
    fleet: bool,
    /// One JSON object per line: {"instance":N,"reply":...} or
    /// {"instance":N,"error":KIND,"message":TEXT}, with "host" for an
    /// instance elsewhere; {"host","missing_instances","message"} for a host
    /// that did not answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

pub async fn call(args: CallArgs) -> anyhow::Result<ExitCode> {
    let (payload, mut options) = args.body.options(args.timeout)?;
    options.instance = args.instance;
    if let Some(host) = &args.host {
        let with_host = options.headers.with(switchboard_proto::fleet::HOST_HEADER, host);
        options.headers = with_host.map_err(|e| Usage(e.to_string()))?;
    }
    let bus = connect(&args.connection, "switchboard-call").await?;
    if args.trace {
        return traced(&bus, &args, payload, options).await;
    }
    match bus.call_with(&args.target, payload, options).await {
        Ok(reply) => {
            output::line(json::display_payload(&reply))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(err) if args.json => {
            output::line(error_json(&err))?;
            Ok(ExitCode::from(1))
        }
        Err(err) => Err(err.into()),
    }
}

pub async fn notify(args: NotifyArgs) -> anyhow::Result<ExitCode> {
    let (payload, mut options) = args.body.options(switchboard::DEFAULT_TIMEOUT)?;
    if args.fleet {
        options.headers = options.headers.with(FLEET_HEADER, "1").map_err(|e| Usage(e.to_string()))?;
    }
    let bus = connect(&args.connection, "switchboard-notify").await?;
    bus.notify_with(&args.target, payload, options, args.all).await?;
    // Wait until the daemon has read it: a round trip on the same connection.
    bus.flush().await?;
    if args.json {
        output::line(serde_json::json!({ "notified": args.target.to_string(), "all": args.all }))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn broadcast(args: BroadcastArgs) -> anyhow::Result<ExitCode> {
    let (payload, mut options) = args.body.options(args.timeout)?;
    let bus = connect(&args.connection, "switchboard-broadcast").await?;
    if args.oneway {
        if args.fleet {
            options.headers = options.headers.with(FLEET_HEADER, "1").map_err(|e| Usage(e.to_string()))?;
        }
        bus.notify_with(&args.target, payload, options, true).await?;
        bus.flush().await?;
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = if args.fleet {
        bus.broadcast_fleet(&args.target, payload, options).await?
    } else {
        let outcome = bus.broadcast(&args.target, payload, options).await?;
        let replies = outcome
            .replies
            .into_iter()
            .map(|r| switchboard::FleetReply { host: None, instance: r.instance, result: r.result })
            .collect();
        switchboard::FleetOutcome { replies, missing: Vec::new(), complete: outcome.complete }
    };
    let mut failed = 0;
    for reply in &outcome.replies {
        let name = match &reply.host {
            Some(host) => format!("{host}/instance {}", reply.instance),
            None => format!("instance {}", reply.instance),
        };
        let line = match (&reply.result, args.json) {
            (Ok(bytes), true) => {
                let mut value =
                    serde_json::json!({ "instance": reply.instance, "reply": json::display_payload(bytes) });
                if let Some(host) = &reply.host {
                    value["host"] = host.as_str().into();
                }
                value.to_string()
            }
            (Ok(bytes), false) => format!("{name}: {}", json::display_payload(bytes)),
            (Err(err), true) => {
                let mut value = error_json(err);
                value["instance"] = reply.instance.into();
                if let Some(host) = &reply.host {
                    value["host"] = host.as_str().into();
                }
                value.to_string()
            }
            (Err(err), false) => format!("{name}: error ({}): {err}", err.kind()),
        };
        failed += usize::from(reply.result.is_err());
        output::line(line)?;
    }
    for host in &outcome.missing {
        let line = if args.json {
            let value = serde_json::json!({ "host": host.host, "missing_instances": host.instances, "message": host.why });
            value.to_string()
        } else {
            format!("{}: no answer from its {} instance(s): {}", host.host, host.instances, host.why)
        };
        output::line(line)?;
    }
    let total = outcome.replies.len();
    let missing_instances: u32 = outcome.missing.iter().map(|host| host.instances).sum();
    if outcome.complete {
        eprintln!("all {total} instances answered ({failed} with an error)");
    } else {
        let late = outcome.replies.iter().filter(|r| matches!(r.result, Err(CallError::Timeout(_)))).count();
        let expected = total + missing_instances as usize;
        eprintln!("{} of {expected} instances answered before the deadline", total - late);
    }
    let any_missing = !outcome.missing.is_empty();
    Ok(if failed == 0 && !any_missing { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `call --trace`: the call under a trace of its own, then its hops.
async fn traced(
    bus: &switchboard::Bus,
    args: &CallArgs,
    payload: bytes::Bytes,
    mut options: CallOptions,
) -> anyhow::Result<ExitCode> {
    let trace = switchboard::trace::start();
    let traceparent = trace.encode();
    let traceparent = std::str::from_utf8(&traceparent)?;
    options.headers = options.headers.with(switchboard::trace::TRACEPARENT, traceparent)?;
    let traced = bus.call_traced(&args.target, payload, options).await;
    let code = if traced.result.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) };
    if args.json {
        let mut object = match &traced.result {
            Ok(reply) => serde_json::json!({ "reply": json::display_payload(reply) }),
            Err(err) => error_json(err),
        };
        object["trace_id"] = trace.trace_id_hex().into();
        object["hops"] = serde_json::to_value(&traced.hops)?;
        output::line(object)?;
        return Ok(code);
    }
    match &traced.result {
        Ok(reply) => output::line(json::display_payload(reply))?,
        Err(err) => eprintln!("error ({}): {err}", err.kind()),
    }
    eprintln!("trace {}", trace.trace_id_hex());
    if traced.hops.is_empty() {
        eprintln!(
            "no hop reported (the service's client does not report hops, or the call never reached one)"
        );
        return Ok(code);
    }
    eprintln!("{:<32}  {:>8}  {:>13}  {:>10}  OUTCOME", "HOP", "INSTANCE", "DEADLINE LEFT", "TOOK");
    for hop in &traced.hops {
        let name = format!("{:indent$}{}.{}", "", hop.service, hop.method, indent = 2 * hop.depth as usize);
        let took = format!("{:.1} ms", hop.took_us as f64 / 1000.0);
        let left = format!("{} ms", hop.deadline_ms);
        eprintln!("{name:<32}  {:>8}  {left:>13}  {took:>10}  {}", hop.instance, hop.outcome);
    }
    Ok(code)
}

/// `{"error": KIND, "message": TEXT}` for scripts.
pub fn error_json(err: &CallError) -> serde_json::Value {
    serde_json::json!({ "error": err.kind(), "message": err.to_string() })
}
