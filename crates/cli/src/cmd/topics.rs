//! `switchboard pub` and `switchboard sub`.

use std::process::ExitCode;

use switchboard::{Item, PublishOptions, Topic, TopicPattern};

use crate::cmd::{connect, parse_header, Usage};
use crate::{json, output, Connection};

/// Publish a message on TOPIC.
///
/// Every subscriber whose pattern matches receives it; the publisher never
/// waits for them. --retain keeps it as the topic's last value, delivered
/// first to anyone who subscribes later; --clear removes that value.
///
/// Example: switchboard pub db.primary '"host-b"' --retain
#[derive(clap::Args)]
pub struct PubArgs {
    /// The topic, dotted tokens such as orders.created.
    topic: Topic,
    /// The message, as JSON (default: null).
    payload: Option<String>,
    /// Keep as the topic's last value for future subscribers.
    #[arg(long)]
    retain: bool,
    /// Remove the topic's retained value (publishes nothing).
    #[arg(long, conflicts_with_all = ["retain", "payload"])]
    clear: bool,
    /// A header subscribers see, KEY=VALUE (repeatable).
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Print {"published": TOPIC, "retain": …} once the daemon has it.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// Print messages matching PATTERN, one per line, until Ctrl-C or --count.
///
/// Patterns: `*` matches exactly one token, `>` one or more trailing tokens
/// (orders.* matches orders.created; orders.> also orders.eu.created).
/// Retained values come first. If this subscriber falls behind, a line
/// `lagged N` says how many messages it missed.
///
/// Example: switchboard sub 'sys.services.>' --json
#[derive(clap::Args)]
pub struct SubArgs {
    /// What to receive, e.g. orders.* or sys.>.
    pattern: TopicPattern,
    /// Exit after this many messages.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// One JSON object per line: topic, payload, headers, publisher, retained.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

pub async fn publish(args: PubArgs) -> anyhow::Result<ExitCode> {
    let payload = if args.clear {
        bytes::Bytes::new()
    } else {
        json::payload_from_arg(args.payload.as_deref()).map_err(|e| Usage(format!("{e:#}")))?
    };
    let headers = switchboard::Headers::from_pairs(args.headers.iter().map(|(k, v)| (k, v)))
        .map_err(|e| Usage(e.to_string()))?;
    let bus = connect(&args.connection, "switchboard-pub").await?;
    let options = PublishOptions { retain: args.retain || args.clear, headers };
    let topic = args.topic.to_string();
    bus.publish_with(args.topic, payload, options).await?;
    // A round trip on the same connection: the daemon has handled it.
    bus.flush().await?;
    if args.json {
        let retain = args.retain || args.clear;
        output::line(serde_json::json!({ "published": topic, "retain": retain, "cleared": args.clear }))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn subscribe(args: SubArgs) -> anyhow::Result<ExitCode> {
    let bus = connect(&args.connection, "switchboard-sub").await?;
    let mut subscription =
        bus.subscribe_with(args.pattern, switchboard::DEFAULT_SUBSCRIPTION_CAPACITY).await?;
    let mut received = 0;
    while args.count.is_none_or(|n| received < n) {
        let Some(item) = subscription.next().await else {
            match subscription.ended() {
                Some(why) => anyhow::bail!("the daemon ended the subscription: {why}"),
                None => anyhow::bail!("the connection to the daemon closed"),
            }
        };
        match item {
            Item::Lagged(missed) if args.json => output::line(serde_json::json!({ "lagged": missed }))?,
            Item::Lagged(missed) => output::line(format_args!("lagged {missed}"))?,
            Item::Message(message) => {
                received += 1;
                let payload = json::display_payload(&message.payload);
                if args.json {
                    let headers: serde_json::Map<String, serde_json::Value> =
                        message.headers.iter().map(|(k, v)| (k.to_owned(), v.into())).collect();
                    output::line(serde_json::json!({
                        "topic": message.topic.as_str(),
                        "payload": payload,
                        "headers": headers,
                        "publisher": { "pid": message.publisher.pid, "uid": message.publisher.uid },
                        "retained": message.retained,
                    }))?;
                } else {
                    output::line(format_args!("{} {payload}", message.topic))?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
