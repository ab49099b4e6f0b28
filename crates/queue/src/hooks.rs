//! Log-hook messages enter the queues here: `should_enqueue_log_record`
//! decides, then the message is spooled and queued like any other.

use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use hermod_logging::HookSink;
use hermod_message::Message;
use hermod_policy::mlua::Value;

use crate::manager::QueueManager;

/// The Logger needs its hook sink before the queue manager (which needs the
/// Logger) exists; the bridge is created first and connected afterwards.
#[derive(Default, Clone)]
pub struct HookBridge(Arc<OnceLock<QueueManager>>);

impl HookBridge {
    pub fn connect(&self, qm: QueueManager) {
        let _ = self.0.set(qm);
    }
}

impl HookSink for HookBridge {
    fn submit(&self, hook_name: String, msg: Message) -> BoxFuture<'static, ()> {
        let qm = self.0.get().cloned();
        Box::pin(async move {
            let Some(qm) = qm else {
                tracing::warn!(hook = %hook_name, "log hook record dropped: queues not started yet");
                return;
            };
            if let Err(e) = enqueue(&qm, &hook_name, msg).await {
                tracing::error!(hook = %hook_name, error = %e, "log hook message not queued");
            }
        })
    }
}

async fn enqueue(qm: &QueueManager, hook: &str, msg: Message) -> Result<(), String> {
    let r = qm
        .engine()
        .call::<Value>("should_enqueue_log_record", (msg.clone(), hook.to_string()))
        .await
        .map_err(|e| format!("should_enqueue_log_record: {e}"))?;
    let wanted = match r {
        None | Some(Value::Nil) => false,
        Some(Value::Boolean(b)) => b,
        Some(other) => {
            return Err(format!(
                "should_enqueue_log_record must return a boolean, got a {}",
                other.type_name()
            ))
        }
    };
    if !wanted {
        return Ok(());
    }
    let name = msg.queue_name().map_err(|e| e.to_string())?;
    if name == "null" {
        return Ok(());
    }
    let sq = qm.resolve(&name).await?;
    qm.spool()
        .store(&msg)
        .await
        .map_err(|e| format!("spool write failed: {e}"))?;
    qm.to_ready(msg, sq);
    Ok(())
}
