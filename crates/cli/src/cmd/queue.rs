//! `switchboard queue`: durable queues from the shell.

use std::process::ExitCode;
use std::time::Duration;

use switchboard::{Overflow, PutOptions, QueueOptions};

use crate::cmd::{connect, parse_header, Usage};
use crate::{json, output, parse_duration, Connection};

/// Durable queues: messages survive crashes until a consumer acks them.
///
/// Examples:
///   switchboard queue declare jobs --max-attempts 3 --visibility-timeout 10s
///   switchboard queue put jobs '{"task":"resize","id":7}' --priority 5 --id job-7
///   switchboard queue get jobs --count 10 --wait 5s
///   switchboard queue declare orders --fleet   (replicated on the fleet's JetStream)
///   switchboard queue ls
///   switchboard queue delete scratch       (an empty queue)
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Print results as JSON (put: {"queue","id"}, purge: {"queue","removed"}, …).
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Create a queue, or change its options.
    Declare(DeclareArgs),
    /// Store a message; prints its id once it is on disk.
    Put(PutArgs),
    /// Receive messages, one JSON line each; acked unless --no-ack.
    Get(GetArgs),
    /// Show waiting messages without taking them.
    Peek(PeekArgs),
    /// Remove every message; prints how many.
    Purge { queue: String },
    /// Delete an empty queue that nobody consumes from (frees its place
    /// under the daemon's --max-queues).
    Delete { queue: String },
    /// Every queue: depth, in flight, consumers, dead-lettered, rates, and
    /// where it is kept (this host, or the fleet's JetStream with its copies).
    Ls,
}

#[derive(clap::Args)]
struct DeclareArgs {
    queue: String,
    /// Keep it on the fleet's JetStream, replicated, shared by every host
    /// (the daemon must have joined a fleet; other hosts see it within 2 s).
    #[arg(long)]
    fleet: bool,
    /// Most messages kept.
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,
    /// Most payload bytes kept.
    #[arg(long, value_name = "BYTES")]
    max_bytes: Option<u64>,
    /// When full: reject the put (default) or drop the oldest message.
    #[arg(long, value_parser = ["reject", "drop-oldest"])]
    overflow: Option<String>,
    /// Deliveries before a message goes to QUEUE.dlq (0 = unlimited).
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// How long a delivery may stay unacked before it returns to the queue.
    #[arg(long, value_parser = parse_duration)]
    visibility_timeout: Option<Duration>,
    /// How long a message id suppresses duplicate puts.
    #[arg(long, value_parser = parse_duration)]
    dedup_window: Option<Duration>,
    /// Time to live of messages put without --ttl.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
}

#[derive(clap::Args)]
struct PutArgs {
    queue: String,
    /// The message, as JSON (default: null).
    payload: Option<String>,
    /// 0–9; higher is delivered first.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=9))]
    priority: u8,
    /// Dead-letter the message if it is not delivered within this time.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// A message id: a retried put with the same id is stored once.
    #[arg(long)]
    id: Option<String>,
    /// A header the consumer sees, KEY=VALUE (repeatable).
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
}

#[derive(clap::Args)]
struct GetArgs {
    queue: String,
    /// How many messages to receive.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// How long to wait for them.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    wait: Duration,
    /// Ack each message after printing it (the default).
    #[arg(long, overrides_with = "no_ack")]
    ack: bool,
    /// Do not ack: the messages return to the queue when this command exits.
    #[arg(long)]
    no_ack: bool,
}

#[derive(clap::Args)]
struct PeekArgs {
    queue: String,
    #[arg(long, default_value_t = 10)]
    count: u32,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bus = connect(&args.connection, "switchboard-queue").await?;
    let handle = |name: &str| bus.queue(name).map_err(|e| Usage(e.to_string()));
    let json = args.json;
    // What a command that otherwise prints nothing (or a bare number) says with --json.
    let report = |value: serde_json::Value| if json { output::line(value) } else { Ok(()) };
    match args.command {
        Command::Declare(d) => {
            let queue = handle(&d.queue)?;
            match d.fleet {
                true => queue.declare_on_fleet(options_of(&d)).await?,
                false => queue.declare(options_of(&d)).await?,
            }
            report(serde_json::json!({ "queue": d.queue, "declared": true, "fleet": d.fleet }))?;
        }
        Command::Get(g) => get(handle(&g.queue)?, &g).await?,
        Command::Ls => list(&bus, json).await?,
        Command::Put(p) => {
            let payload =
                json::payload_from_arg(p.payload.as_deref()).map_err(|e| Usage(format!("{e:#}")))?;
            let headers = switchboard::Headers::from_pairs(p.headers.iter().map(|(k, v)| (k, v)))
                .map_err(|e| Usage(e.to_string()))?;
            let options = PutOptions { priority: p.priority, ttl: p.ttl, id: p.id, headers };
            let id = handle(&p.queue)?.put_with(payload, options).await?;
            match json {
                true => report(serde_json::json!({ "queue": p.queue, "id": id }))?,
                false => output::line(id)?,
            }
        }
        Command::Peek(p) => {
            for m in handle(&p.queue)?.peek(p.count).await? {
                output::line(serde_json::json!({
                    "id": m.id,
                    "priority": m.priority,
                    "attempts": m.attempts,
                    "headers": m.headers.into_iter().map(|(k, v)| (k, v.into())).collect::<serde_json::Map<_, _>>(),
                    "payload": json::display_payload(&m.payload),
                }))?;
            }
        }
        Command::Purge { queue } => {
            let removed = handle(&queue)?.purge().await?;
            match json {
                true => report(serde_json::json!({ "queue": queue, "removed": removed }))?,
                false => output::line(removed)?,
            }
        }
        Command::Delete { queue } => {
            handle(&queue)?.delete().await?;
            report(serde_json::json!({ "queue": queue, "deleted": true }))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The options `queue declare` was given; the rest keep their defaults.
fn options_of(d: &DeclareArgs) -> QueueOptions {
    let mut options = QueueOptions::default();
    if let Some(v) = d.max_messages {
        options.max_messages = v;
    }
    if let Some(v) = d.max_bytes {
        options.max_bytes = v;
    }
    if d.overflow.as_deref() == Some("drop-oldest") {
        options.overflow = Overflow::DropOldest;
    }
    if let Some(v) = d.max_attempts {
        options.max_attempts = v;
    }
    if let Some(v) = d.visibility_timeout {
        options.visibility_timeout_ms = v.as_millis() as u64;
    }
    if let Some(v) = d.dedup_window {
        options.dedup_window_ms = v.as_millis() as u64;
    }
    if let Some(v) = d.ttl {
        options.default_ttl_ms = v.as_millis() as u64;
    }
    options
}

/// `queue get`: up to `count` messages within `wait`, printed as JSON lines.
async fn get(queue: switchboard::Queue, g: &GetArgs) -> anyhow::Result<()> {
    let mut consumer = queue.consume(g.count.min(1024) as u32).await?;
    let deadline = tokio::time::Instant::now() + g.wait;
    let mut received = 0;
    while received < g.count {
        let Ok(Some(delivery)) = tokio::time::timeout_at(deadline, consumer.next()).await else {
            break;
        };
        received += 1;
        let headers: serde_json::Map<String, serde_json::Value> =
            delivery.headers.iter().map(|(k, v)| (k.to_owned(), v.into())).collect();
        output::line(serde_json::json!({
            "id": delivery.id,
            "attempt": delivery.attempt,
            "priority": delivery.priority,
            "headers": headers,
            "payload": json::display_payload(&delivery.payload),
        }))?;
        if !g.no_ack {
            delivery.ack().await?;
        }
    }
    if received < g.count && g.count != u64::MAX {
        if received == 0 {
            anyhow::bail!("no message in {} within {:?}", g.queue, g.wait);
        }
        eprintln!("received {received} of {} within {:?}", g.count, g.wait);
    }
    Ok(())
}

/// `queue ls`: a table, or JSON.
async fn list(bus: &switchboard::Bus, json: bool) -> anyhow::Result<()> {
    let queues = bus.queues().await?;
    if json {
        output::line(serde_json::to_string_pretty(&queues)?)?;
    } else if queues.is_empty() {
        output::line("no queues")?;
    } else {
        let width = queues.iter().map(|q| q.queue.len()).max().unwrap_or(5).max(5);
        output::line(format_args!(
            "{:<width$}  {:>8}  {:>9}  {:>9}  {:>10}  {:>8}  {:>8}  {:>9}  {}",
            "QUEUE", "DEPTH", "IN FLIGHT", "CONSUMERS", "DEAD-LTR", "PUT/S", "ACK/S", "BYTES", "KEPT"
        ))?;
        let mut unavailable = Vec::new();
        for q in queues {
            let kept = match &q.fleet {
                None => "here".to_owned(),
                Some(fleet) if !fleet.unavailable.is_empty() => {
                    unavailable.push(format!("{}: {}", q.queue, fleet.unavailable));
                    "fleet ?".to_owned()
                }
                Some(fleet) => format!("fleet R{}", fleet.replicas),
            };
            output::line(format_args!(
                "{:<width$}  {:>8}  {:>9}  {:>9}  {:>10}  {:>8.0}  {:>8.0}  {:>9}  {kept}",
                q.queue,
                q.depth,
                q.in_flight,
                q.consumers,
                q.dead_lettered_total,
                q.put_rate,
                q.ack_rate,
                q.bytes
            ))?;
        }
        for why in unavailable {
            eprintln!("{why}");
        }
    }
    Ok(())
}
