//! Drawing one [`View`] on the terminal (ratatui): the methods, topics,
//! queues and supervised services, each a table.

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Row, Table};
use ratatui::Frame;

use super::view::{SortBy, View};

fn ms(value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(v) if v.is_infinite() => "> 10 s".into(),
        Some(v) if v < 1.0 => format!("{v:.2} ms"),
        Some(v) => format!("{v:.0} ms"),
    }
}

fn header(cells: &[&'static str]) -> Row<'static> {
    Row::new(cells.to_vec()).style(Style::default().add_modifier(Modifier::BOLD))
}

pub fn draw(frame: &mut Frame<'_>, view: &View, title: &str, sort: SortBy) {
    let [top, methods, topics, queues, services] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length((view.patterns.len() as u16).clamp(1, 8) + 3),
        Constraint::Length((view.queues.len() as u16).clamp(1, 8) + 3),
        Constraint::Length((view.services.len() as u16).clamp(1, 6) + 3),
    ])
    .areas(frame.area());
    frame.render_widget(Line::from(format!("{title} — sorted by {} — s: sort, q: quit", sort.name())), top);
    let rows = view.methods.iter().map(|m| {
        Row::new(vec![
            m.name.clone(),
            format!("{:.1}", m.rate),
            format!("{:.1}", m.errors),
            ms(m.p50_ms),
            ms(m.p99_ms),
            m.total.to_string(),
        ])
    });
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
    ];
    let table = Table::new(rows, widths)
        .header(header(&["METHOD", "CALLS/S", "ERRORS/S", "P50", "P99", "CALLS"]))
        .block(Block::bordered().title("services"));
    frame.render_widget(table, methods);
    let rows = view.patterns.iter().map(|p| {
        Row::new(vec![p.pattern.clone(), format!("{:.1}", p.delivered), format!("{:.1}", p.missed)])
    });
    let widths = [Constraint::Fill(1), Constraint::Length(12), Constraint::Length(10)];
    let table = Table::new(rows, widths)
        .header(header(&["PATTERN", "DELIVERED/S", "MISSED/S"]))
        .block(Block::bordered().title("topics"));
    frame.render_widget(table, topics);
    let rows = view.queues.iter().map(|q| {
        Row::new(vec![
            q.queue.clone(),
            q.depth.to_string(),
            q.in_flight.to_string(),
            format!("{:.1}", q.put_rate),
            format!("{:.1}", q.ack_rate),
            q.dead_lettered.to_string(),
        ])
    });
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(9),
    ];
    let table = Table::new(rows, widths)
        .header(header(&["QUEUE", "DEPTH", "IN FLIGHT", "PUT/S", "ACK/S", "DEAD-LTR"]))
        .block(Block::bordered().title("queues"));
    frame.render_widget(table, queues);
    let rows = view.services.iter().map(|(name, state)| Row::new(vec![name.clone(), state.clone()]));
    let table = Table::new(rows, [Constraint::Fill(1), Constraint::Length(14)])
        .header(header(&["SUPERVISED", "STATE"]))
        .block(Block::bordered().title("supervised services"));
    frame.render_widget(table, services);
}
