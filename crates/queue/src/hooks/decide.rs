//! Step 3 of the fast path (see `mod.rs`): which queue, if any, each record of a round goes
//! to. The first round runs the `should_enqueue_log_record` chain ([`through_lua`]); when that
//! chain is only the helper's routers, later rounds apply it as a [`LogHookPlan`] ([`by_plan`]).

use std::sync::Arc;

use hermod_message::MessageError;
use hermod_policy::mlua::Value;
use hermod_policy::{CallError, LogHookPlan};

use super::Job;
use crate::manager::QueueManager;
use crate::resolve::{QueueConfigError, ScheduledQueue, NULL_QUEUE};

/// Why a hook message is not queued.
#[derive(Debug, thiserror::Error)]
enum RouteError {
    #[error("should_enqueue_log_record: {0}")]
    Handler(#[source] CallError),
    #[error("should_enqueue_log_record must return a boolean, got a {0}")]
    NotBoolean(&'static str),
    #[error(transparent)]
    QueueName(#[from] MessageError),
    #[error(transparent)]
    Queue(#[from] QueueConfigError),
}

/// Run `should_enqueue_log_record` for each job; keep the wanted ones with
/// their scheduled queue. Refused jobs release their permit here. When the
/// handlers are only the helper's routers, `plan` learns them, and later
/// rounds go through [`by_plan`] without borrowing a Lua context.
pub(super) async fn through_lua(
    qm: &QueueManager,
    jobs: Vec<Job>,
    plan: &mut Option<LogHookPlan>,
) -> Vec<(Job, Arc<ScheduledQueue>)> {
    let ctx = match qm.engine().context().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, records = jobs.len(), "log hook records not queued: no Lua context");
            return Vec::new();
        }
    };
    // Every record of the round calls the same event: look it up once.
    let event = match ctx.prepare("should_enqueue_log_record") {
        Ok(Some(e)) => e,
        // No handler declines every record.
        Ok(None) => return Vec::new(),
        Err(e) => {
            tracing::error!(error = %e, records = jobs.len(), "log hook records not queued: should_enqueue_log_record");
            return Vec::new();
        }
    };
    *plan = event.log_hook_plan();
    let mut wanted = Vec::with_capacity(jobs.len());
    for job in jobs {
        let answer = event
            .call_log_hook(&job.msg, &job.hook)
            .await
            .map_err(RouteError::Handler);
        keep_if_wanted(qm, answer, job, &mut wanted).await;
    }
    wanted
}

/// Apply `plan` to each job; keep the wanted ones with their scheduled queue.
pub(super) async fn by_plan(
    qm: &QueueManager,
    plan: &LogHookPlan,
    jobs: Vec<Job>,
) -> Vec<(Job, Arc<ScheduledQueue>)> {
    let mut wanted = Vec::with_capacity(jobs.len());
    // Each hook's records all go to the queue its router names: resolve
    // each queue once per round, not once per record. Hooks are few.
    let mut resolved: Vec<(&str, Arc<ScheduledQueue>)> = Vec::new();
    for job in jobs {
        // A routed record's queue name is its router's queue (meta `queue`
        // is taken verbatim), so it need not be computed from meta again.
        let Some(queue) = plan.route(&job.msg, &job.hook) else {
            continue;
        };
        if queue == NULL_QUEUE {
            continue;
        }
        let sq = match resolved.iter().find(|(name, _)| *name == queue) {
            Some((_, sq)) => sq.clone(),
            None => match qm.resolve(queue).await {
                Ok(sq) => {
                    resolved.push((queue, sq.clone()));
                    sq
                }
                Err(e) => {
                    tracing::error!(hook = %job.hook, error = %e, "log hook message not queued");
                    continue;
                }
            },
        };
        wanted.push((job, sq));
    }
    wanted
}

async fn keep_if_wanted(
    qm: &QueueManager,
    answer: Result<Option<Value>, RouteError>,
    job: Job,
    wanted: &mut Vec<(Job, Arc<ScheduledQueue>)>,
) {
    match route(qm, answer, &job).await {
        Ok(Some(sq)) => wanted.push((job, sq)),
        Ok(None) => {}
        Err(e) => tracing::error!(hook = %job.hook, error = %e, "log hook message not queued"),
    }
}

/// The queue a handler's answer sends `job` to. `Ok(None)`: the handler
/// declined or the message goes to the `null` queue.
async fn route(
    qm: &QueueManager,
    answer: Result<Option<Value>, RouteError>,
    job: &Job,
) -> Result<Option<Arc<ScheduledQueue>>, RouteError> {
    let wanted = match answer? {
        None | Some(Value::Nil) => false,
        Some(Value::Boolean(b)) => b,
        Some(other) => return Err(RouteError::NotBoolean(other.type_name())),
    };
    if !wanted {
        return Ok(None);
    }
    let name = job.msg.queue_name()?;
    if name == NULL_QUEUE {
        return Ok(None);
    }
    Ok(Some(qm.resolve(&name).await?))
}
