//! Drawing `hermod top`'s screen from [`Figures`]; all arithmetic is in
//! `model.rs`.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use super::model::Figures;

/// What one frame shows.
pub struct Screen<'a> {
    pub endpoint: &'a str,
    /// The latest figures that could be read, if any.
    pub figures: Option<&'a Figures>,
    /// Local time of those figures, `HH:MM:SS`.
    pub updated: Option<&'a str>,
    /// Why the latest poll failed; `None` when it answered.
    pub error: Option<&'a str>,
}

fn rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

fn count(v: f64) -> String {
    format!("{v:.0}")
}

fn millis(secs: Option<f64>) -> String {
    secs.map_or_else(|| "-".to_string(), |s| format!("{:.2} ms", s * 1000.0))
}

const BOLD: Style = Style::new().add_modifier(Modifier::BOLD);

pub fn draw(f: &mut Frame, s: &Screen) {
    let [title, status, top, middle, table] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Min(3),
    ])
    .areas(f.area());
    f.render_widget(title_line(s), title);
    f.render_widget(status_line(s), status);
    let Some(fig) = s.figures else {
        return;
    };
    let [messages, queues] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
    f.render_widget(messages_table(fig), messages);
    f.render_widget(queue_summary(fig), queues);
    f.render_widget(brokers_and_logs(fig), middle);
    draw_queue_table(f, fig, table);
}

fn title_line(s: &Screen) -> Paragraph<'static> {
    let mut spans = vec![
        Span::styled("hermod top", BOLD),
        Span::raw(format!("  {}", s.endpoint)),
    ];
    if let Some(t) = s.updated {
        spans.push(Span::raw(format!("  updated {t}")));
    }
    spans.push(Span::styled(
        "  (q quits)",
        Style::new().fg(Color::DarkGray),
    ));
    Paragraph::new(Line::from(spans))
}

fn status_line(s: &Screen) -> Paragraph<'static> {
    match s.error {
        Some(e) => Paragraph::new(Line::styled(
            format!("not answering: {e} (polling every second)"),
            Style::new().fg(Color::White).bg(Color::Red),
        )),
        None if s.figures.is_none() => Paragraph::new("waiting for the first answer..."),
        None => Paragraph::new(Line::styled("ok", Style::new().fg(Color::Green))),
    }
}

fn messages_table(fig: &Figures) -> Table<'static> {
    let n = &fig.now;
    let row = |name: &'static str, r: Option<f64>, total: f64| {
        Row::new(vec![name.to_string(), rate(r), count(total)])
    };
    Table::new(
        vec![
            row("received", fig.received_per_second, n.received),
            row("delivered", fig.delivered_per_second, n.delivered),
            row("transient", fig.transfail_per_second, n.transfail),
            row("bounced", fig.fail_per_second, n.fail),
        ],
        [
            Constraint::Length(10),
            Constraint::Length(11),
            Constraint::Min(8),
        ],
    )
    .header(Row::new(vec!["messages", "per second", "total"]).style(BOLD))
    .block(Block::bordered().title(" rates "))
}

fn queue_summary(fig: &Figures) -> Paragraph<'static> {
    let n = &fig.now;
    let paused = if n.paused.is_empty() {
        "none".to_string()
    } else {
        format!("{}: {}", n.paused.len(), n.paused.join(", "))
    };
    let paused_style = if n.paused.is_empty() {
        Style::new()
    } else {
        Style::new().fg(Color::Yellow)
    };
    Paragraph::new(vec![
        Line::from(format!("scheduled  {}", count(n.scheduled))),
        Line::from(format!("ready      {}", count(n.ready))),
        Line::from(format!("messages   {}", count(n.messages))),
        Line::from(format!(
            "connections in {}  out {}",
            count(n.connections_in),
            count(n.connections_out)
        )),
        Line::styled(format!("paused queues {paused}"), paused_style),
    ])
    .block(Block::bordered().title(" queues "))
}

fn brokers_and_logs(fig: &Figures) -> Paragraph<'static> {
    let brokers = if fig.brokers.is_empty() {
        "none yet".to_string()
    } else {
        fig.brokers
            .iter()
            .map(|b| format!("{} {} ({}/s)", b.name, millis(b.mean), rate(b.per_second)))
            .collect::<Vec<_>>()
            .join("   ")
    };
    Paragraph::new(vec![
        Line::from(format!("broker publish latency  {brokers}")),
        Line::from(format!(
            "log-hook backlog  {} back-pressure waits ({}/s), {} records queued",
            count(fig.now.hook_backlog),
            rate(fig.hook_backlog_per_second),
            count(fig.now.log_queue_depth)
        )),
        Line::from(format!(
            "spool fsync  {} mean, {} total",
            millis(fig.spool_fsync_mean),
            count(fig.now.spool_fsync.count)
        )),
    ])
    .block(Block::bordered().title(" brokers and logs "))
}

fn draw_queue_table(f: &mut Frame, fig: &Figures, area: Rect) {
    let rows: Vec<Row> = fig
        .queues
        .iter()
        .map(|q| {
            let state = if q.now.paused { "paused" } else { "" };
            Row::new(vec![
                q.service.clone(),
                count(q.now.ready),
                count(q.now.connections),
                count(q.now.delivered),
                rate(q.delivered_per_second),
                count(q.now.transfail),
                count(q.now.fail),
                state.to_string(),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Min(24),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(7),
        ],
    )
    .header(
        Row::new(vec![
            "ready queue",
            "ready",
            "conns",
            "delivered",
            "deliv/s",
            "transient",
            "bounced",
            "state",
        ])
        .style(BOLD),
    )
    .block(Block::bordered().title(" ready queues "));
    f.render_widget(table, area);
}
