//! `switchboard logs`: what supervised services wrote, and `-f` to follow.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard::{CallOptions, Item};
use switchboard_proto::supervision::{self as sup, LogLine, LogQuery};

use crate::cmd::connect;
use crate::{output, parse_duration, Connection};

/// Show a supervised service's captured stdout/stderr, the supervisor's own
/// notes about it (starts, exits, restarts) and the structured events it
/// logged through the client library.
///
/// Lines are kept in rotating files under the daemon's data directory.
///
/// Example: switchboard logs billing --since 10m --grep timeout -f
#[derive(clap::Args)]
pub struct Args {
    service: String,
    /// Keep printing new lines as they come.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only lines from this long ago on, e.g. 30s, 10m, 2h.
    #[arg(long, value_parser = parse_duration)]
    since: Option<Duration>,
    /// Only lines containing this text.
    #[arg(long, value_name = "TEXT")]
    grep: Option<String>,
    /// At most this many of the newest lines (before following).
    #[arg(short = 'n', long, default_value_t = 200)]
    lines: u32,
    /// Only lines at least this severe: emerg, alert, crit, err, warning,
    /// notice, info, debug (`warn`, `error` work too). Output lines prefixed
    /// `<N>` (systemd's convention) and structured events carry their own
    /// severity; other output is info; the supervisor's own lines are notice,
    /// warning (a crash, a kill) or err (cannot start, gave up).
    #[arg(long, value_name = "LEVEL", value_parser = parse_level)]
    level: Option<String>,
    /// One JSON object per line: seq, ts_ms, service, instance, stream, line, level (and id).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bus = connect(&args.connection, "switchboard-logs").await?;
    // Subscribe before reading the history so no line falls between the two.
    let mut live = if args.follow {
        Some(bus.subscribe(&format!("{}{}", sup::LOG_TOPIC_PREFIX, args.service)).await?)
    } else {
        None
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let query = LogQuery {
        service: args.service.clone(),
        since_ms: args
            .since
            .map_or(0, |since| u64::try_from(now.saturating_sub(since).as_millis()).unwrap_or(0)),
        grep: args.grep.clone().unwrap_or_default(),
        limit: args.lines,
        level: args.level.clone().unwrap_or_default(),
    };
    let at_least = args.level.as_deref().and_then(sup::severity).unwrap_or(7);
    let payload = bytes::Bytes::from(switchboard_proto::sys::encode(&query));
    let target = format!("{}.{}", sup::SERVICES_SERVICE, sup::LOGS);
    let reply =
        bus.call_with(target.as_str(), payload, CallOptions::timeout(Duration::from_secs(30))).await?;
    let lines: Vec<LogLine> = switchboard_proto::sys::decode(&reply)?;
    let mut last = 0;
    for line in &lines {
        print(line, args.json)?;
        last = line.seq;
    }
    let Some(live) = live.as_mut() else { return Ok(ExitCode::SUCCESS) };
    while let Some(item) = live.next().await {
        match item {
            Item::Message(message) => {
                let Ok(line) = switchboard_proto::sys::decode::<LogLine>(&message.payload) else { continue };
                let wanted = args.grep.as_ref().is_none_or(|g| line.line.contains(g.as_str()))
                    && sup::severity(&line.level).unwrap_or(6) <= at_least;
                if line.seq > last && wanted {
                    print(&line, args.json)?;
                    last = line.seq;
                }
            }
            Item::Lagged(missed) => eprintln!("switchboard: {missed} log lines missed (printing too slowly)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print(line: &LogLine, json: bool) -> anyhow::Result<()> {
    if json {
        return output::line(serde_json::to_string(line)?);
    }
    let level = if line.level == "info" { String::new() } else { format!(" [{}]", line.level) };
    let id = if line.id.is_empty() { String::new() } else { format!(" ({})", line.id) };
    output::line(format!(
        "{} {}#{} {}{level}{id}: {}",
        timestamp(line.ts_ms),
        line.service,
        line.instance,
        line.stream,
        line.line
    ))
}

fn parse_level(text: &str) -> Result<String, String> {
    sup::severity(text)
        .map(|_| text.to_owned())
        .ok_or_else(|| format!("{text:?} is not a severity: {}", sup::SEVERITIES.join(", ")))
}

/// `2026-11-22T03:41:49.123Z` from Unix milliseconds (UTC).
fn timestamp(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(timestamp(1_795_318_909_000), "2026-11-22T03:41:49.000Z");
    }
}
