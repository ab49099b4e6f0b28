//! The egress events: `get_egress_path_config(routing_domain, egress_source, site_name)`
//! configures a ready queue (its limits, and for SMTP how to connect); `get_egress_pool` and
//! `get_egress_source` name the sources a queue's mail leaves from. No handler, or every
//! handler declining, means KumoMTA's defaults.

use std::sync::Arc;

use hermod_policy::mlua::{IntoLuaMulti, UserData, Value};
use hermod_policy::{CallError, EgressPathConfig, EgressPool, EgressSource, Engine, PolicyError};

use crate::delivery;
use crate::held;
use crate::manager::QueueManager;
use crate::outcome;
use crate::ready::ReadyQueue;

/// Why an egress event gave no config.
#[derive(Debug, thiserror::Error)]
pub enum EgressConfigError {
    #[error("{0}")]
    Context(#[source] PolicyError),
    #[error("{event} must return the value of kumo.{constructor}{{...}}, got a {got}")]
    WrongType {
        event: &'static str,
        constructor: &'static str,
        got: &'static str,
    },
    #[error("egress pool '{0}' is not defined: no get_egress_pool handler returned it")]
    UnknownPool(String),
    #[error("{event} failed: {source}")]
    Failed {
        event: &'static str,
        #[source]
        source: CallError,
    },
}

/// Call `event` and take the userdata its `constructor` made; `None` when no
/// handler answered.
async fn fetch<T: UserData + Clone + 'static>(
    engine: &Arc<Engine>,
    event: &'static str,
    constructor: &'static str,
    args: impl IntoLuaMulti + Clone,
) -> Result<Option<T>, EgressConfigError> {
    let ctx = engine.context().await.map_err(EgressConfigError::Context)?;
    let wrong = |got| EgressConfigError::WrongType {
        event,
        constructor,
        got,
    };
    match ctx.call::<Value>(event, args).await {
        Ok(None) | Ok(Some(Value::Nil)) => Ok(None),
        Ok(Some(Value::UserData(ud))) => match ud.borrow::<T>() {
            Ok(c) => Ok(Some(c.clone())),
            Err(_) => Err(wrong("different userdata")),
        },
        Ok(Some(other)) => Err(wrong(other.type_name())),
        Err(source) => Err(EgressConfigError::Failed { event, source }),
    }
}

pub(crate) async fn fetch_path(
    engine: &Arc<Engine>,
    routing_domain: &str,
    source: &str,
    site_name: &str,
) -> Result<EgressPathConfig, EgressConfigError> {
    let args = (
        routing_domain.to_string(),
        source.to_string(),
        site_name.to_string(),
    );
    Ok(
        fetch(engine, "get_egress_path_config", "make_egress_path", args)
            .await?
            .unwrap_or_default(),
    )
}

pub(crate) async fn fetch_pool(
    engine: &Arc<Engine>,
    name: &str,
) -> Result<EgressPool, EgressConfigError> {
    let found = fetch::<EgressPool>(
        engine,
        "get_egress_pool",
        "make_egress_pool",
        name.to_string(),
    )
    .await?;
    match found {
        Some(pool) => Ok(pool),
        None if name == "unspecified" => Ok(EgressPool::default()),
        // Without a handler only the default pool exists, as in KumoMTA.
        None => Err(EgressConfigError::UnknownPool(name.to_string())),
    }
}

pub(crate) async fn fetch_source(
    engine: &Arc<Engine>,
    name: &str,
) -> Result<EgressSource, EgressConfigError> {
    let found = fetch::<EgressSource>(
        engine,
        "get_egress_source",
        "make_egress_source",
        name.to_string(),
    )
    .await?;
    Ok(found.unwrap_or_else(|| EgressSource {
        name: name.to_string(),
        ..EgressSource::default()
    }))
}

impl QueueManager {
    /// Ask `get_egress_path_config` for `rq`'s config when it has none or it
    /// is due for a refresh; sessions start once the first answer is in.
    pub(crate) fn configure(&self, rq: &Arc<ReadyQueue>) {
        if !rq.begin_configuring() {
            return;
        }
        let qm = self.clone();
        let rq = rq.clone();
        self.0.tasks.spawn(async move {
            let p = &rq.path;
            match fetch_path(&qm.0.engine, &p.routing_domain, &p.source, &p.site).await {
                Ok(cfg) => rq.configure(cfg, qm.0.opts.idle_timeout),
                Err(e) if rq.is_configured() => {
                    tracing::error!(queue = %rq.name, error = %e,
                        "get_egress_path_config refresh failed; keeping the previous config");
                    // Ask again after another refresh interval, not at once.
                    if let Some(cfg) = rq.egress_path() {
                        rq.configure((*cfg).clone(), qm.0.opts.idle_timeout);
                    }
                }
                Err(e) => {
                    rq.end_configuring();
                    qm.fail_unconfigured(&rq, &e.to_string()).await;
                    return;
                }
            }
            rq.end_configuring();
            qm.maybe_start_sessions(&rq);
        });
    }

    /// Without its egress path config a queue cannot deliver: its messages
    /// are retried on their schedule, as when any other attempt fails.
    async fn fail_unconfigured(&self, rq: &Arc<ReadyQueue>, why: &str) {
        tracing::error!(queue = %rq.name, error = %why, "ready queue has no egress path config");
        let info = outcome::AttemptInfo::for_queue(
            rq,
            None,
            delivery::protocol_of(&rq.protocol()),
            format!("config:{}", rq.name),
        );
        let rec = &self.0.recorder;
        for chunk in held::chunks(rq.drain_all()) {
            for e in held::load_for_records(rec, chunk).await {
                let resp = hermod_logging::Response::new(
                    451,
                    None,
                    &format!("cannot configure the ready queue {}: {why}", rq.name),
                );
                outcome::transient(rec, e.message, e.queue, &info, resp, None).await;
            }
        }
    }
}
