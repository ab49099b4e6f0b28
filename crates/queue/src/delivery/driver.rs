//! The session loop every protocol shares (ARCHITECTURE.md, step 7): take a batch, connect
//! once, deliver in calls of the protocol's size, record each message's outcome, and end the
//! session when the queue is idle, the connection has delivered
//! `max_deliveries_per_connection`, the connection failed, or the destination was paused.

use std::sync::Arc;

use crate::held::{self, Loaded};
use crate::outcome::{self, AttemptInfo, Recorder};
use crate::ready::{Entry, ReadyQueue, ReadyQueueState};

use super::{Batching, Dispatcher, Handles, Health, Outcome, Outcomes};

/// Whatever way a session ends, a probe it holds is released.
struct SessionEnd {
    rq: Arc<ReadyQueue>,
    probe: bool,
}

impl Drop for SessionEnd {
    fn drop(&mut self) {
        if self.probe {
            self.rq.release_probe();
        }
    }
}

pub(super) async fn run<D: Dispatcher>(h: &Handles, rq: &Arc<ReadyQueue>, mut d: D) {
    let service = crate::resolve::metrics_service(&rq.name);
    let mut info = AttemptInfo::for_queue(rq, None, d.protocol(), service);
    let latency =
        hermod_metrics::deliver_message_latency_rollup(crate::resolve::metrics_protocol(&rq.name));
    let mut end = SessionEnd {
        rq: rq.clone(),
        probe: false,
    };
    let first = take(h, rq, d.batching(), &info, &mut end.probe).await;
    if first.is_empty() {
        d.close().await;
        return;
    }
    if let Err(failed) = d.connect(rq, &first).await {
        note_health(h, rq, &failed.health, &info).await;
        if let Health::Failed(why) = &failed.health {
            tracing::warn!(queue = %rq.name, error = %why, "delivery connection failed");
        }
        let untried = record(&h.recorder, rq, first, &info, failed.outcomes).await;
        rq.push_front(untried);
        d.close().await;
        return;
    }
    info.peer = d.peer();
    info.tls = d.tls();
    let max_deliveries = rq.limits().max_deliveries_per_connection;
    let mut delivered = 0usize;
    let mut batch = first;
    loop {
        let per_call = d.per_call().max(1);
        let mut rest = batch.into_iter();
        loop {
            let chunk: Vec<Entry> = rest.by_ref().take(per_call).collect();
            if chunk.is_empty() {
                break;
            }
            let started = std::time::Instant::now();
            let attempt = d.deliver(&chunk).await;
            latency.observe_duration(started.elapsed());
            // The peer the attempt was made with: a protocol may reconnect.
            info.peer = d.peer();
            info.tls = d.tls();
            delivered += chunk.len();
            note_health(h, rq, &attempt.health, &info).await;
            let end = attempt.end_session;
            let mut untried = record(&h.recorder, rq, chunk, &info, attempt.outcomes).await;
            // A paused destination is probed by one session; the others stop
            // here, and so does everyone when the queue shuts down.
            if end
                || delivered >= max_deliveries
                || rq.state() != ReadyQueueState::Active
                || rq.is_closed()
            {
                untried.extend(rest);
                rq.push_front(untried);
                d.close().await;
                return;
            }
            rq.push_front(untried);
        }
        batch = take(h, rq, d.batching(), &info, &mut end.probe).await;
        if batch.is_empty() {
            break;
        }
    }
    d.close().await;
}

/// The next batch with every message in memory, bytes and all (a batch's
/// parked messages are read back in one spool call). Messages whose data
/// cannot be read fail transiently and stay in the spool; messages outside
/// their scheduling window go back to wait (crates/queue/src/schedule.rs),
/// and if that leaves nothing the next batch is taken.
async fn take(
    h: &Handles,
    rq: &ReadyQueue,
    batching: Batching,
    info: &AttemptInfo,
    probe: &mut bool,
) -> Vec<Entry> {
    let size = batching.size.max(1);
    let min = batching.min.clamp(1, size);
    loop {
        let batch = rq
            .next_batch_probing(size, min, batching.max_latency, probe)
            .await;
        if batch.is_empty() {
            return Vec::new();
        }
        let mut ok = Vec::with_capacity(batch.len());
        let mut held_back = false;
        for l in held::load(&h.spool, batch, true).await {
            match l {
                Loaded::Ready(e) => {
                    // A backlog can outlast the message's scheduling window.
                    if crate::schedule::admit(&h.recorder, &e.message, &e.queue).await {
                        ok.push(e);
                    } else {
                        held_back = true;
                    }
                }
                Loaded::Lost(id, queue, err) => held::lost(&h.recorder, id, queue, err),
                Loaded::NoData(e, err) => {
                    tracing::error!(id = %e.message.id(), error = %err, "cannot read message data from the spool");
                    let resp = hermod_logging::Response::new(
                        400,
                        None,
                        &format!("spool data unavailable: {err}"),
                    );
                    outcome::transient(&h.recorder, e.message, e.queue, info, resp, None).await;
                }
            }
        }
        if !ok.is_empty() || !held_back {
            return ok;
        }
    }
}

/// Feed an attempt into the ready queue's health: a failure counts toward a
/// pause; reaching the destination ends one. After
/// `consecutive_connection_failures_before_delay` failures in a row every
/// queued message is retried on its own schedule (`451 4.4.1`), as in KumoMTA.
async fn note_health(h: &Handles, rq: &Arc<ReadyQueue>, health: &Health, info: &AttemptInfo) {
    match health {
        Health::Reached => {
            if rq.record_success() {
                h.starter.resume(rq);
            }
        }
        Health::Failed(why) => {
            let failures = rq.record_failure(why);
            let limit = rq
                .egress_path()
                .map(|p| p.consecutive_connection_failures_before_delay)
                .unwrap_or(100)
                .max(1);
            if failures as usize >= limit {
                let delayed = rq.delay_all();
                tracing::warn!(queue = %rq.name, failures, messages = delayed.len(), error = %why,
                    "consecutive_connection_failures_before_delay reached: queued messages delayed");
                let text = format!(
                    "delayed after {failures} consecutive connection failures; last: {why}"
                );
                let code = Some(hermod_logging::EnhancedCode {
                    class: 4,
                    subject: 4,
                    detail: 1,
                });
                for chunk in held::chunks(delayed) {
                    for e in held::load_for_records(&h.recorder, chunk).await {
                        let resp = hermod_logging::Response::new(451, code, &text);
                        outcome::transient(&h.recorder, e.message, e.queue, info, resp, None).await;
                    }
                }
            }
        }
        Health::Unknown => {}
    }
}

/// Turn each message's outcome into its record (ARCHITECTURE.md step 8). The
/// messages delivered by one attempt leave the spool in one request. Returns
/// the untried messages, for the caller to put back in order.
async fn record(
    rec: &Recorder,
    rq: &ReadyQueue,
    batch: Vec<Entry>,
    info: &AttemptInfo,
    outcomes: Outcomes,
) -> Vec<Entry> {
    let n = batch.len();
    let each: Box<dyn Iterator<Item = Outcome> + Send> = match outcomes {
        Outcomes::All(o) => Box::new(std::iter::repeat_n(o, n)),
        Outcomes::Each(v) => {
            if v.len() != n {
                tracing::error!(queue = %rq.name, messages = n, outcomes = v.len(),
                    "a protocol returned the wrong number of outcomes; the rest are retried later");
            }
            // Retried on the schedule, not at once: put back untried, they
            // would come straight back to the same fault.
            let missing = Outcome::Transient {
                response: hermod_logging::Response::new(
                    400,
                    None,
                    "internal error: the delivery protocol gave no outcome for this message",
                ),
                at_peer: false,
            };
            Box::new(v.into_iter().chain(std::iter::repeat(missing)))
        }
    };
    let mut delivered = Vec::new();
    let mut untried = Vec::new();
    for (e, o) in batch.into_iter().zip(each) {
        match o {
            Outcome::Delivered(resp) => delivered.push((e.message, e.queue, resp)),
            Outcome::Transient { response, at_peer } => {
                let peer = if at_peer { info.peer.clone() } else { None };
                outcome::transient(rec, e.message, e.queue, info, response, peer).await
            }
            Outcome::Bounced(resp) => outcome::bounced(rec, e.message, &e.queue, info, resp).await,
            Outcome::Untried => untried.push(e),
        }
    }
    if !delivered.is_empty() {
        outcome::delivered_all(rec, delivered, info).await;
    }
    untried
}
