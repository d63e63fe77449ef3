//! The daemon's own log: plain text when it is not a terminal (no color
//! codes in a log file), one JSON object per line with `--log-format json`.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::Duration;

use support::Daemon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_file_gets_plain_text_and_json_on_request() {
    let mut text = Daemon::start();
    drop(text.bus().await);
    text.signal(rustix::process::Signal::TERM);
    text.wait_exit(Duration::from_secs(10));
    let log = text.log();
    assert!(log.contains(" INFO ") && log.contains("shutting down"), "{log}");
    assert!(!log.contains('\u{1b}'), "color codes in a log file: {log:?}");

    let mut json = Daemon::start_with(&["--log-format", "json"]);
    drop(json.bus().await);
    json.signal(rustix::process::Signal::TERM);
    json.wait_exit(Duration::from_secs(10));
    let log = json.log();
    let lines: Vec<serde_json::Value> = log.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert!(lines.len() >= 3, "{log}");
    assert!(lines
        .iter()
        .all(|l| l["timestamp"].is_string() && l["level"].is_string() && l["target"].is_string()));
    assert!(lines.iter().any(|l| l["fields"]["message"] == "shutting down"), "{log}");
}
