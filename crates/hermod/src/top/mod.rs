//! `hermod top`: polls the server's `/metrics` every second and shows rates,
//! queue depths, connections, paused queues, broker latency and the log-hook
//! backlog in a terminal UI (ratatui), like KumoMTA's `kcli top`.
//!
//! - `prom.rs` reads the Prometheus text; `model.rs` turns scrapes into
//!   totals and rates (both plain code with unit tests);
//! - `view.rs` draws a frame;
//! - this file owns the terminal, the key reader and the poller.
//!
//! A poll that fails is shown on the screen (with the last figures that
//! were read) and polling goes on; `q`, Esc or Ctrl-C quit and restore the
//! terminal, as do SIGTERM and SIGHUP.

mod model;
mod prom;
mod view;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use crate::admin_cli::Api;
use model::{Figures, Totals};

#[derive(Args)]
pub struct TopArgs {
    /// The HTTP listener of the server.
    #[arg(long, env = "HERMOD_ENDPOINT", default_value = "http://127.0.0.1:8000")]
    pub endpoint: String,
    /// User for HTTP Basic authentication where the server does not trust
    /// this host; the password is read from HERMOD_ADMIN_PASSWORD.
    #[arg(long, env = "HERMOD_ADMIN_USER")]
    pub user: Option<String>,
    /// Time between polls of /metrics.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
}

/// What the poller reports: when it asked, and the totals or why not.
type Poll = (Instant, Result<Totals, String>);

/// What the key reader reports.
enum Input {
    Quit,
    Redraw,
}

pub async fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    if args.interval.is_zero() {
        bail!("--interval must be longer than zero");
    }
    // A request may take longer than one interval; never pile them up.
    let timeout = args.interval.max(Duration::from_secs(2));
    let api = Api::connect(&args.endpoint, args.user.as_deref(), timeout)?;
    if !std::io::stdout().is_terminal() {
        bail!(
            "hermod top draws on a terminal; stdout is not one (use curl {}/metrics for text)",
            args.endpoint
        );
    }
    // Raw mode and the alternate screen; a panic restores them too.
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            ratatui::restore();
            return Err(e).context("setting up the terminal");
        }
    };
    let (poll_tx, poll_rx) = mpsc::channel(4);
    let poller = tokio::spawn(poll(api, args.interval, poll_tx));
    let (key_tx, key_rx) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let keys = read_keys(key_tx, stop.clone());
    let result = ui(&mut terminal, &args.endpoint, poll_rx, key_rx).await;
    drop(terminal);
    ratatui::restore();
    stop.store(true, Ordering::Relaxed);
    poller.abort();
    let _ = keys.join();
    result.map(|()| ExitCode::SUCCESS)
}

/// The latest answer and the one before, for rates.
#[derive(Default)]
struct State {
    prev: Option<(Instant, Totals)>,
    figures: Option<Figures>,
    updated: Option<String>,
    error: Option<String>,
}

impl State {
    fn update(&mut self, (at, polled): Poll) {
        match polled {
            Ok(now) => {
                let figures = match &self.prev {
                    Some((then, prev)) => {
                        Figures::between(Some(prev), now.clone(), (at - *then).as_secs_f64())
                    }
                    None => Figures::between(None, now.clone(), 0.0),
                };
                self.prev = Some((at, now));
                self.figures = Some(figures);
                self.updated = Some(clock_utc());
                self.error = None;
            }
            Err(e) => {
                // Rates after an outage are taken against the last answer,
                // over the whole gap.
                self.error = Some(e);
            }
        }
    }
}

/// Wall-clock time as `HH:MM:SS UTC` (the binary carries no time-zone data).
fn clock_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

async fn ui(
    terminal: &mut ratatui::DefaultTerminal,
    endpoint: &str,
    mut polls: mpsc::Receiver<Poll>,
    mut keys: mpsc::UnboundedReceiver<Input>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut state = State::default();
    loop {
        terminal
            .draw(|f| {
                view::draw(
                    f,
                    &view::Screen {
                        endpoint,
                        figures: state.figures.as_ref(),
                        updated: state.updated.as_deref(),
                        error: state.error.as_deref(),
                    },
                )
            })
            .context("drawing the screen")?;
        tokio::select! {
            p = polls.recv() => match p {
                Some(p) => state.update(p),
                None => return Ok(()),
            },
            k = keys.recv() => match k {
                Some(Input::Redraw) => {}
                Some(Input::Quit) | None => return Ok(()),
            },
            _ = term.recv() => return Ok(()),
            _ = hup.recv() => return Ok(()),
        }
    }
}

async fn poll(api: Api, every: Duration, tx: mpsc::Sender<Poll>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let got = match api.get_text("/metrics").await {
            Ok(text) => prom::parse(&text)
                .map(|samples| Totals::from_samples(&samples))
                .map_err(|e| format!("/metrics is not Prometheus text: {e}")),
            Err(e) => Err(format!("{e:#}")),
        };
        if tx.send((Instant::now(), got)).await.is_err() {
            return;
        }
    }
}

/// Read keys on a thread of its own (crossterm's reads block), until `stop`.
fn read_keys(
    tx: mpsc::UnboundedSender<Input>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match event::poll(Duration::from_millis(100)) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(_) => {
                    let _ = tx.send(Input::Quit);
                    return;
                }
            }
            let input = match event::read() {
                Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => match k.code {
                    KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => Some(Input::Quit),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        Some(Input::Quit)
                    }
                    _ => None,
                },
                Ok(Event::Resize(..)) => Some(Input::Redraw),
                Ok(_) => None,
                Err(_) => Some(Input::Quit),
            };
            if let Some(i) = input {
                if tx.send(i).is_err() {
                    return;
                }
            }
        }
    })
}
