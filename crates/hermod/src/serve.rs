//! `hermod serve`: start-up in dependency order, then graceful shutdown.
//!
//! Order: policy (`pre_init`, `init`) → spool → logs → queues → spool
//! enumeration → listeners. Shutdown runs it backwards so that every
//! accepted message is spooled and every log record is on disk.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use hermod_http::HttpListenerConfig;
use hermod_logging::{LocalLogConfig, LogHookConfig, Logger};
use hermod_policy::{Engine, EngineOptions, LegacyMode};
use hermod_queue::{HookBridge, QueueManager, QueueOptions};
use hermod_smtp::EsmtpListenerConfig;
use hermod_spool::{Spool, SpoolDefinition, SpoolOptions};
use tokio_util::sync::CancellationToken;

use crate::cli::{LegacyArg, ServeArgs};

pub const DEFAULT_POLICY: &str = include_str!("default_policy.lua");

pub fn registrars() -> Vec<hermod_policy::Registrar> {
    vec![
        hermod_spool::register,
        hermod_logging::register,
        hermod_smtp::register,
        hermod_http::register,
        hermod_connectors::register_all,
        hermod_dns::register,
        hermod_dkim::register,
        hermod_lua_utils::register,
    ]
}

/// `--dns-zone-file`: every lookup answered from these zone files' text.
pub fn use_dns_zone_files(files: &[PathBuf]) -> anyhow::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let mut zones = Vec::with_capacity(files.len());
    for f in files {
        zones.push(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the DNS zone file {}", f.display()))?,
        );
    }
    hermod_dns::configure_test_resolver(&zones)
        .with_context(|| format!("loading the DNS zone files {files:?}"))?;
    tracing::info!(files = ?files, "DNS answers come from zone files (--dns-zone-file)");
    Ok(())
}

pub fn install_crypto() {
    // Several crates use rustls; they must agree on one provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A stable node id for log records, kept in the data directory.
fn node_id(data_dir: &Path) -> anyhow::Result<uuid::Uuid> {
    let path = data_dir.join("nodeid");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if let Ok(id) = s.trim().parse() {
            return Ok(id);
        }
    }
    let id = uuid::Uuid::new_v4();
    write_durably(&path, id.to_string().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// Write `path` so that a power loss leaves either no file or the whole
/// one: a temporary file, fsynced, renamed over `path`, then the directory
/// fsynced so the new name survives. Without this a crash soon after the
/// first start could lose the id, and log records would change node id.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn engine_options(args: &ServeArgs) -> EngineOptions {
    let (path, source) = match &args.policy {
        Some(p) => (p.clone(), None),
        None => (
            PathBuf::from("<builtin default policy>"),
            Some(DEFAULT_POLICY.to_string()),
        ),
    };
    let mut opts = EngineOptions::new(path);
    opts.policy_source = source;
    opts.registrars = registrars();
    opts.call_time_limit = args.handler_time_limit;
    opts.legacy_constructors = match args.legacy_constructors {
        LegacyArg::Auto => LegacyMode::Auto,
        LegacyArg::Off => LegacyMode::Off,
    };
    opts
}

fn install_metrics(engine: &Arc<Engine>, logger: &Logger, spool: &Spool) {
    let s = spool.clone();
    hermod_metrics::set_source(hermod_metrics::Source::SpoolWalSyncs, move || {
        s.stats().wal_syncs
    });
    let s = spool.clone();
    hermod_metrics::set_source(hermod_metrics::Source::SpoolMessagesWritten, move || {
        s.stats().messages_written
    });
    hermod_policy::metrics_hook::set_event_latency_observer(|event, d| {
        hermod_metrics::lua_event_latency(event).observe_duration(d)
    });
    hermod_metrics::set_source(
        hermod_metrics::Source::LuaLoadCount,
        hermod_policy::metrics_hook::lua_load_count,
    );
    let e = Arc::downgrade(engine);
    hermod_metrics::set_source(hermod_metrics::Source::LuaSpareCount, move || {
        e.upgrade().map(|e| e.spare_contexts() as u64).unwrap_or(0)
    });
    hermod_metrics::set_source(
        hermod_metrics::Source::MessageCount,
        hermod_message::message_count,
    );
    let l = logger.clone();
    hermod_metrics::set_source(hermod_metrics::Source::LogQueueDepth, move || {
        l.queue_depth() as u64
    });
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    install_crypto();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let data_dir = args
        .data_dir
        .canonicalize()
        .unwrap_or(args.data_dir.clone());
    // The built-in policy reads it; set before any worker thread reads the environment.
    std::env::set_var("HERMOD_DATA_DIR", &data_dir);
    use_dns_zone_files(&args.dns_zone_file)?;

    let (engine, collected) = Engine::start(engine_options(&args))
        .await
        .context("loading the policy")?;

    let spool_opts = SpoolOptions {
        fsync: !args.unsafe_no_fsync,
    };
    if args.unsafe_no_fsync {
        tracing::warn!(
            "--unsafe-no-fsync: the spool is NOT fsynced; acknowledged mail can be lost on a crash"
        );
    }
    let defs = collected.take::<SpoolDefinition>();
    let spool = if defs.is_empty() {
        Spool::open_dir(&data_dir.join("spool"), spool_opts)
    } else {
        Spool::open(&defs, spool_opts)
    }
    .context("opening the spool")?;

    let mut locals = collected.take::<LocalLogConfig>();
    if locals.is_empty() {
        locals.push(LocalLogConfig::new(data_dir.join("logs")));
    }
    let hooks = collected.take::<LogHookConfig>();
    let bridge = HookBridge::default();
    let logger = Logger::new(
        node_id(&data_dir)?,
        locals,
        hooks,
        Some(Arc::new(bridge.clone())),
    )
    .context("starting the local loggers")?;
    logger.set_policy_engine(engine.clone());
    install_metrics(&engine, &logger, &spool);

    let qopts = QueueOptions {
        idle_timeout: args.session_idle_timeout,
        reap: args.queue_reap_interval,
    };
    let qm = QueueManager::new(engine.clone(), spool.clone(), logger.clone(), qopts);
    bridge.connect(qm.clone());

    let enumeration = spool.enumerate().context("enumerating the spool")?;
    let count = enumeration.len();
    // One context for the whole enumeration, as KumoMTA's spool-in workers do.
    let ctx = engine
        .context()
        .await
        .context("borrowing a Lua context for spool enumeration")?;
    let enumerated_event = ctx.has_handler("spool_message_enumerated");
    for msg in enumeration {
        if enumerated_event {
            if let Err(e) = ctx
                .call::<hermod_policy::mlua::Value>("spool_message_enumerated", msg.clone())
                .await
            {
                tracing::error!(id = %msg.id(), error = %e, "spool_message_enumerated failed; queuing the message anyway");
            }
        }
        qm.insert_enumerated(msg).await;
    }
    drop(ctx);
    tracing::info!(messages = count, "spool enumerated; messages re-queued");
    qm.set_accepting(true);
    spawn_queue_gauges(qm.clone());

    let signals = ShutdownSignals::install()?;
    let shutdown = CancellationToken::new();
    let acceptor: Arc<dyn hermod_message::Acceptor> = Arc::new(qm.clone());
    // The HTTP admin API reaches the queues through this handle alone.
    let admin: Arc<dyn hermod_message::Admin> = Arc::new(qm.clone());

    let mut smtp = collected.take::<EsmtpListenerConfig>();
    if smtp.is_empty() {
        smtp.push(EsmtpListenerConfig {
            listen: args
                .smtp_listen
                .clone()
                .unwrap_or_else(|| "127.0.0.1:2525".into()),
            ..Default::default()
        });
    }
    let mut smtp_handles = Vec::new();
    for cfg in smtp {
        let listen = cfg.listen.clone();
        let h =
            hermod_smtp::start_listener(cfg, engine.clone(), acceptor.clone(), shutdown.clone())
                .await
                .with_context(|| format!("starting the ESMTP listener on {listen}"))?;
        tracing::info!(addr = %h.local_addr(), "ESMTP listener started");
        smtp_handles.push(h);
    }

    let mut http = collected.take::<HttpListenerConfig>();
    if http.is_empty() {
        http.push(HttpListenerConfig {
            listen: args
                .http_listen
                .clone()
                .unwrap_or_else(|| "127.0.0.1:8000".into()),
            ..Default::default()
        });
    }
    let mut http_handles = Vec::new();
    for cfg in http {
        let listen = cfg.listen.clone();
        let h = hermod_http::start_listener_with_dashboard(
            cfg,
            engine.clone(),
            acceptor.clone(),
            Some(admin.clone()),
            Some(logger.record_tap()),
            shutdown.clone(),
        )
        .await
        .with_context(|| format!("starting the HTTP listener on {listen}"))?;
        tracing::info!(addr = %h.local_addr(), "HTTP listener started");
        http_handles.push(h);
    }

    signals.wait().await;
    tracing::info!("shutting down: refusing new mail, finishing sessions, flushing logs");
    qm.set_accepting(false);
    shutdown.cancel();
    for h in smtp_handles {
        h.join().await;
    }
    for h in http_handles {
        h.wait().await;
    }
    qm.shutdown().await;
    logger.shutdown().await;
    spool.shutdown().await;
    tracing::info!("shutdown complete");
    Ok(ExitCode::SUCCESS)
}

/// Queue depths for `/metrics` (`scheduled_count`, `ready_count`). A queue
/// that has gone (emptied, or reaped) stops being exported.
fn spawn_queue_gauges(qm: QueueManager) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut scheduled_before = std::collections::HashSet::new();
        let mut ready_before = std::collections::HashSet::new();
        loop {
            tick.tick().await;
            let mut scheduled_now = std::collections::HashSet::new();
            for (queue, n) in qm.scheduled_counts() {
                hermod_metrics::scheduled_count(&queue).set(n as i64);
                scheduled_now.insert(queue);
            }
            for gone in scheduled_before.difference(&scheduled_now) {
                hermod_metrics::remove_scheduled_queue(gone);
            }
            scheduled_before = scheduled_now;
            let mut ready_now = std::collections::HashSet::new();
            for (name, queued, sessions, state) in qm.ready_queue_states() {
                let paused = matches!(state, hermod_queue::ReadyQueueState::Paused { .. });
                // The same label as the queue's delivery counters.
                let service = hermod_queue::metrics_service(&name);
                hermod_metrics::ready_count(&service).set(queued as i64);
                hermod_metrics::connection_count(&service).set(sessions as i64);
                hermod_metrics::ready_queue_paused(&service).set(i64::from(paused));
                ready_now.insert(service);
            }
            for gone in ready_before.difference(&ready_now) {
                hermod_metrics::remove_ready_queue(gone);
            }
            ready_before = ready_now;
        }
    });
}

/// SIGTERM and SIGINT, installed before any listener starts: a signal that
/// arrives once the server answers connections must shut it down cleanly,
/// never kill it with the default action.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
