//! `switchboard metrics`: the daemon's counters as Prometheus text.

use std::process::ExitCode;

use bytes::Bytes;
use switchboard_proto::stats::{METRICS_SCRAPE, METRICS_SERVICE};

use crate::cmd::connect;
use crate::{output, Connection};

/// Print everything the daemon counts, in the Prometheus text format.
///
/// Per service method: calls, errors by kind and a latency histogram, for
/// calls the daemon routed and, separately (path="direct"), calls served
/// over direct channels as their instances report them every 2 s. Also:
/// calls refused before reaching an instance, publications, deliveries and
/// misses per subscription pattern, queues, connections by principal kind,
/// direct channels, supervised services' state, restarts and uptime.
///
/// Reading them needs the `metrics` permission (the daemon's own user has
/// it). The same text is what a Prometheus scrape of the gateway's
/// /metrics will get.
///
/// Example: switchboard metrics | grep switchboard_calls_total
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    connection: Connection,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bus = connect(&args.connection, "switchboard-metrics").await?;
    let text = bus.call(format!("{METRICS_SERVICE}.{METRICS_SCRAPE}").as_str(), Bytes::new()).await?;
    output::raw(&text)?;
    Ok(ExitCode::SUCCESS)
}
