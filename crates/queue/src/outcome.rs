//! What happens after a delivery attempt: a log record for every outcome,
//! spool removal only after the final record is logged, and retries or
//! expiry per the queue's schedule.

use std::sync::Arc;
use std::time::SystemTime;

use hermod_logging::{EnhancedCode, LogEvent, Logger, PeerAddress, RecordType, Response};
use hermod_message::{Message, Protocol};
use hermod_spool::Spool;

use crate::held::Queued;
use crate::ready::{Entry, ReadyQueue};
use crate::resolve::ScheduledQueue;
use crate::retry::{after_failure, Backoff, Expiry, RetryDecision};
use crate::timer::Timer;

/// What outcome code needs and nothing more: the logger for the record, the
/// spool to remove or reschedule the message, and the timer a retry waits in.
#[derive(Clone)]
pub(crate) struct Recorder {
    pub logger: Logger,
    pub spool: Spool,
    pub timer: Arc<Timer>,
}

impl Recorder {
    /// Queue a message for later; it leaves memory while it waits.
    pub(crate) fn to_timer(&self, message: Message, queue: Arc<ScheduledQueue>, due: SystemTime) {
        let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
        self.timer.insert(
            std::time::Instant::now() + wait,
            Queued::loaded(message, queue),
        );
    }
}

/// Where and how an attempt was made, shared by a session's records.
#[derive(Clone)]
pub struct AttemptInfo {
    pub site: String,
    pub peer: Option<PeerAddress>,
    pub delivery_protocol: Protocol,
    pub session_id: String,
    /// `lua:<ready queue>` style label for per-service metrics.
    pub service: String,
    pub egress_pool: String,
    pub egress_source: String,
    /// The TLS of the session's connection, when it has one.
    pub tls: Option<TlsDetails>,
}

/// What log records say of a connection's TLS.
#[derive(Clone, Debug)]
pub struct TlsDetails {
    pub cipher: String,
    pub protocol_version: String,
    pub peer_subject_name: Vec<String>,
}

impl AttemptInfo {
    pub fn for_queue(
        rq: &ReadyQueue,
        peer: Option<PeerAddress>,
        delivery_protocol: Protocol,
        service: String,
    ) -> Self {
        Self {
            site: rq.name.clone(),
            peer,
            delivery_protocol,
            session_id: uuid::Uuid::new_v4().to_string(),
            service,
            egress_pool: rq.pool.clone(),
            egress_source: rq.path.source.clone(),
            tls: None,
        }
    }
}

pub(crate) fn event(
    kind: RecordType,
    msg: &Message,
    queue: &str,
    info: Option<&AttemptInfo>,
    response: Response,
    peer: Option<PeerAddress>,
) -> LogEvent {
    // TLS fields describe the connection the destination answered on.
    let tls = info.and_then(|i| i.tls.as_ref()).filter(|_| peer.is_some());
    LogEvent {
        kind,
        message: msg.clone(),
        queue: queue.to_string(),
        site: info.map(|i| i.site.clone()).unwrap_or_default(),
        response,
        peer_address: peer,
        egress_pool: info.map(|i| i.egress_pool.clone()),
        egress_source: info.map(|i| i.egress_source.clone()),
        delivery_protocol: info.map(|i| i.delivery_protocol),
        session_id: info.map(|i| i.session_id.clone()),
        tls_cipher: tls.map(|t| t.cipher.clone()),
        tls_protocol_version: tls.map(|t| t.protocol_version.clone()),
        tls_peer_subject_name: tls.map(|t| t.peer_subject_name.clone()),
        num_attempts: msg.num_attempts(),
        feedback_report: None,
        when: None,
    }
}

fn remove(rec: &Recorder, msg: &Message) {
    remove_all(rec, std::slice::from_ref(msg));
}

/// Remove messages whose final record is logged, in one spool request.
fn remove_all(rec: &Recorder, msgs: &[Message]) {
    // Not awaited: the final records are already logged, and a removal that
    // does not reach disk can only cause a re-delivery after a crash (which
    // brokers deduplicate by message id), never a loss.
    if let Err(e) = rec.spool.remove_detached(msgs) {
        tracing::error!(messages = msgs.len(), error = %e, "spool removal failed after final disposition");
    }
}

/// Messages delivered in one attempt (one `send_batch` call, one maildir
/// batch): each gets its Delivery record, then all leave the spool in one request.
pub(crate) async fn delivered_all(
    rec: &Recorder,
    delivered: impl IntoIterator<Item = (Message, Arc<ScheduledQueue>, Response)>,
    info: &AttemptInfo,
) {
    let mut msgs = Vec::new();
    for (msg, sq, resp) in delivered {
        rec.logger
            .log(event(
                RecordType::Delivery,
                &msg,
                &sq.name,
                Some(info),
                resp,
                info.peer.clone(),
            ))
            .await;
        hermod_metrics::delivered(&info.service).inc();
        msgs.push(msg);
    }
    remove_all(rec, &msgs);
}

pub(crate) async fn bounced(
    rec: &Recorder,
    msg: Message,
    sq: &ScheduledQueue,
    info: &AttemptInfo,
    resp: Response,
) {
    rec.logger
        .log(event(
            RecordType::Bounce,
            &msg,
            &sq.name,
            Some(info),
            resp,
            info.peer.clone(),
        ))
        .await;
    hermod_metrics::failed(&info.service).inc();
    remove(rec, &msg);
}

/// A failed attempt: log it, then retry on the schedule or expire. `peer` is
/// the attempt's peer when the destination answered, `None` when the failure
/// happened on this side (KumoMTA leaves `peer_address` null then).
pub(crate) async fn transient(
    rec: &Recorder,
    msg: Message,
    sq: Arc<ScheduledQueue>,
    info: &AttemptInfo,
    resp: Response,
    peer: Option<PeerAddress>,
) {
    rec.logger
        .log(event(
            RecordType::TransientFailure,
            &msg,
            &sq.name,
            Some(info),
            resp,
            peer,
        ))
        .await;
    hermod_metrics::transfail(&info.service).inc();
    let cfg = sq.config();
    let backoff = Backoff {
        retry_interval: cfg.retry_interval,
        max_retry_interval: cfg.max_retry_interval,
        max_age: cfg.max_age,
    };
    match after_failure(
        backoff,
        msg.num_attempts(),
        msg.created(),
        SystemTime::now(),
        msg.scheduling().as_ref(),
        rand::random::<f64>(),
    ) {
        RetryDecision::Expire(why) => expire(rec, msg, &sq, why).await,
        RetryDecision::Retry { due, attempts } => {
            msg.set_num_attempts(attempts);
            msg.set_due(Some(due));
            msg.mark_meta_dirty();
            if let Err(e) = rec.spool.store(&msg).await {
                // The old spool entry remains valid; after a restart the
                // message is simply due sooner.
                tracing::warn!(id = %msg.id(), error = %e, "could not persist the retry schedule");
            }
            rec.to_timer(msg, sq, due);
        }
    }
}

/// The message's time is up (the queue's `max_age`, or its own `expires`):
/// an Expiration record, then it leaves the spool.
pub(crate) async fn expire(rec: &Recorder, msg: Message, sq: &ScheduledQueue, why: Expiry) {
    let rfc3339 = |t: SystemTime| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339();
    let content = match why {
        Expiry::MaxAge { next, max_age } => format!(
            "Next delivery time would be {} which exceeds max_age={}",
            rfc3339(next),
            humantime::format_duration(max_age)
        ),
        Expiry::Scheduled { next, expires } => format!(
            "Next delivery time would be {} which exceeds the expiry time {} configured via \
             set_scheduling",
            rfc3339(next),
            rfc3339(expires)
        ),
    };
    let resp = Response::new(
        551,
        Some(EnhancedCode {
            class: 5,
            subject: 4,
            detail: 7,
        }),
        &content,
    );
    rec.logger
        .log(event(
            RecordType::Expiration,
            &msg,
            &sq.name,
            None,
            resp,
            None,
        ))
        .await;
    remove(rec, &msg);
}

/// Messages an operator bounced (`/api/admin/bounce/v1`): an AdminBounce
/// record each (unless the operator suppressed logging), then they leave
/// the spool in one request.
pub(crate) async fn admin_bounced(rec: &Recorder, entries: Vec<Entry>, reason: &str, log: bool) {
    let resp = Response::new(
        551,
        Some(EnhancedCode {
            class: 5,
            subject: 7,
            detail: 1,
        }),
        &format!("administratively bounced: {reason}"),
    );
    let mut msgs = Vec::with_capacity(entries.len());
    for e in entries {
        if log {
            rec.logger
                .log(event(
                    RecordType::AdminBounce,
                    &e.message,
                    &e.queue.name,
                    None,
                    resp.clone(),
                    None,
                ))
                .await;
        }
        msgs.push(e.message);
    }
    remove_all(rec, &msgs);
}

/// An operator moved `msg` from the scheduled queue `from` to `to`
/// (crates/queue/src/rebind.rs): KumoMTA's `AdminRebind` record, code 250.
pub(crate) async fn admin_rebound(
    rec: &Recorder,
    msg: &Message,
    from: &str,
    to: &str,
    reason: &str,
) {
    let resp = Response::new(250, None, &format!("Rebound from {from} to {to}: {reason}"));
    rec.logger
        .log(event(RecordType::AdminRebind, msg, to, None, resp, None))
        .await;
}

/// A message rebound to the `null` queue leaves the spool (its
/// `AdminRebind` record is its last).
pub(crate) fn discard(rec: &Recorder, msg: &Message) {
    remove(rec, msg);
}

/// A spooled message whose queue name cannot be computed (bad meta).
pub(crate) async fn expire_unroutable(rec: &Recorder, msg: Message, reason: &str) {
    let resp = Response::new(
        551,
        Some(EnhancedCode {
            class: 5,
            subject: 1,
            detail: 3,
        }),
        &format!("cannot compute the queue name: {reason}"),
    );
    rec.logger
        .log(event(RecordType::Expiration, &msg, "", None, resp, None))
        .await;
    remove(rec, &msg);
}
