//! `switchboard call` and `switchboard notify`.

use std::process::ExitCode;
use std::time::Duration;

use switchboard::{CallError, CallOptions, InstanceId, Target};

use crate::cmd::{connect, Usage};
use crate::{json, output, parse_duration, Connection};

/// Call SERVICE.METHOD and print the reply as JSON.
///
/// The JSON argument travels as MessagePack; the reply comes back as JSON.
/// Errors are typed: no_such_service, no_such_method, timeout,
/// instance_gone, payload_too_large, rejected, shutting_down... With --json
/// an error is printed on stdout as {"error": KIND, "message": TEXT}.
///
/// Example: switchboard call billing.charge '{"account":"a","cents":5}' --timeout 2s
#[derive(clap::Args)]
pub struct CallArgs {
    /// The method to call, e.g. billing.charge or inventory.eu.reserve.
    target: Target,
    /// The arguments, as JSON (default: null).
    payload: Option<String>,
    /// How long to wait for the reply.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Send to this instance (see `switchboard ls`) instead of any.
    #[arg(long, value_name = "ID")]
    instance: Option<InstanceId>,
    /// Print errors as JSON on stdout too.
    #[arg(long)]
    json: bool,
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
    /// The message, as JSON (default: null).
    payload: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

pub async fn call(args: CallArgs) -> anyhow::Result<ExitCode> {
    let payload =
        json::payload_from_arg(args.payload.as_deref()).map_err(|e| Usage(format!("{e:#}")))?;
    let bus = connect(&args.connection, "switchboard-call").await?;
    let options = CallOptions {
        timeout: args.timeout,
        instance: args.instance,
    };
    match bus.call_with(&args.target, payload, options).await {
        Ok(reply) => {
            output::line(json::from_msgpack(&reply)?)?;
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
    let payload =
        json::payload_from_arg(args.payload.as_deref()).map_err(|e| Usage(format!("{e:#}")))?;
    let bus = connect(&args.connection, "switchboard-notify").await?;
    bus.notify(&args.target, payload).await?;
    // Wait until the daemon has read it: a round trip on the same connection.
    bus.daemon_info().await?;
    Ok(ExitCode::SUCCESS)
}

/// `{"error": KIND, "message": TEXT}` for scripts.
pub fn error_json(err: &CallError) -> serde_json::Value {
    serde_json::json!({ "error": err.kind(), "message": err.to_string() })
}
