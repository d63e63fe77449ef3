//! `switchboard top`: a live view of the bus in the terminal.

mod draw;
mod view;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::{parse_duration, Connection};
use view::SortBy;

/// A live view of services, topics and queues, refreshed every second.
///
/// Per service method: calls and errors per second and the p50/p99
/// latency of the last interval (routed and direct calls together), and the
/// calls in all; per subscription pattern: deliveries and misses per
/// second; per queue: depth, in flight, put and ack rates, dead-lettered;
/// and the state of each supervised service. `s` changes the column the
/// methods are sorted by, `q` (or Ctrl-C) quits.
///
/// It reads what `switchboard metrics` reads, over the bus socket (no
/// gateway needed), so it needs the `metrics` permission.
#[derive(clap::Args)]
pub struct Args {
    /// How often to refresh.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    #[command(flatten)]
    connection: Connection,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let bus = runtime.block_on(crate::cmd::connect(&args.connection, "switchboard-top"))?;
    let title = format!("switchboard top — {}", bus.endpoint());
    // Ask once before taking the terminal: a refusal is said plainly.
    let mut before = runtime.block_on(switchboard_metrics::snapshot(&bus))?;
    let mut before_at = Instant::now();
    let mut terminal = ratatui::init();
    let mut sort = SortBy::Rate;
    let mut shown = view::View::default();
    let outcome = loop {
        if let Err(err) = terminal.draw(|frame| draw::draw(frame, &shown, &title, sort)) {
            break Err(err.into());
        }
        let next = before_at + args.interval;
        match keys_until(next) {
            Ok(Some(Key::Quit)) => break Ok(ExitCode::SUCCESS),
            Ok(Some(Key::Sort)) => {
                sort = sort.next();
                continue;
            }
            Ok(None) => {}
            Err(err) => break Err(err),
        }
        let now = match runtime.block_on(switchboard_metrics::snapshot(&bus)) {
            Ok(now) => now,
            Err(err) => break Err(err.into()),
        };
        shown = view::view(&before, &now, before_at.elapsed(), sort);
        (before, before_at) = (now, Instant::now());
    };
    ratatui::restore();
    outcome
}

enum Key {
    Quit,
    Sort,
}

/// Waits for a key until `deadline`.
fn keys_until(deadline: Instant) -> anyhow::Result<Option<Key>> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !event::poll(left)? {
            return Ok(None);
        }
        if let Event::Key(key) = event::read()? {
            if key.kind != KeyEventKind::Press {
                continue;
            }
            match key.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(Some(Key::Quit)),
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    return Ok(Some(Key::Quit))
                }
                KeyCode::Char('s') => return Ok(Some(Key::Sort)),
                _ => {}
            }
        }
    }
}
