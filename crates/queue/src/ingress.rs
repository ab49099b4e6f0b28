//! The `Acceptor` listeners hand new messages to: queue resolution,
//! group-committed spool write, Reception record, then the ready queue.

use std::sync::Arc;

use hermod_logging::{EnhancedCode, LogEvent, PeerAddress, RecordType, Response};
use hermod_message::accept::{AcceptFuture, DoneFuture};
use hermod_message::{
    AcceptError, Accepted, Acceptor, EnvelopeAddress, InboundReport, Message, Protocol, Received,
    ReceptionInfo, RejectionInfo,
};

use crate::manager::QueueManager;
use crate::resolve::{ScheduledQueue, NULL_QUEUE};
use crate::schedule::{self, Gate};

fn reception(msg: &Message, queue: &str, info: &ReceptionInfo) -> LogEvent {
    LogEvent {
        kind: RecordType::Reception,
        message: msg.clone(),
        queue: queue.to_string(),
        site: String::new(),
        response: Response::new(250, None, ""),
        peer_address: Some(PeerAddress {
            name: info.peer_name.clone(),
            addr: info.peer_addr.clone(),
            is_secure: info.tls_cipher.is_some(),
        }),
        egress_pool: None,
        egress_source: None,
        delivery_protocol: None,
        session_id: info.session_id.clone(),
        tls_cipher: info.tls_cipher.clone(),
        tls_protocol_version: info.tls_protocol_version.clone(),
        tls_peer_subject_name: None,
        num_attempts: 0,
        feedback_report: None,
        when: None,
    }
}

/// The `OOB` records of a delivery status notification, one per failed
/// recipient (KumoMTA's layout): the bounce was addressed to the original
/// message's sender, so the report's receiver is the record's sender, and
/// the reporting MTA is the peer. The record stands for no stored message:
/// it keeps the report's id and meta, with no content (size 0).
fn oob_events(
    msg: &Message,
    queue: &str,
    info: &ReceptionInfo,
    dsn: &hermod_message::report::Dsn,
) -> Vec<LogEvent> {
    let sender = msg
        .recipients()
        .into_iter()
        .next()
        .unwrap_or_else(EnvelopeAddress::null_sender);
    let mut events = Vec::new();
    for failed in &dsn.failed {
        let Ok(recipient) = EnvelopeAddress::parse(&failed.recipient) else {
            tracing::debug!(id = %msg.id(), recipient = %failed.recipient, "OOB recipient is not an address; skipped");
            continue;
        };
        let (class, subject, detail) = failed.status;
        let record_msg = Message::new(
            msg.id(),
            sender.clone(),
            vec![recipient],
            msg.meta(),
            Vec::new(),
        );
        let mut ev = reception(&record_msg, queue, info);
        ev.kind = RecordType::Oob;
        ev.response = Response::new(
            failed.code,
            Some(EnhancedCode {
                class,
                subject,
                detail,
            }),
            &failed.text,
        );
        ev.peer_address = Some(PeerAddress {
            name: dsn.reporting_mta.clone(),
            addr: info.peer_addr.clone(),
            is_secure: false,
        });
        ev.tls_cipher = None;
        ev.tls_protocol_version = None;
        ev.when = failed.last_attempt;
        events.push(ev);
    }
    events
}

enum Plan {
    Null,
    /// Not relayed: only its records are logged.
    Drop,
    Queue(Arc<ScheduledQueue>),
    Failed(String),
}

impl QueueManager {
    /// Log the Reception record of `m`, or what its report asks for instead
    /// (a Feedback record) or besides (OOB records after it).
    async fn log_received(
        &self,
        m: &Message,
        queue: &str,
        info: &ReceptionInfo,
        report: Option<&InboundReport>,
    ) {
        let mut ev = reception(m, queue, info);
        if let Some(InboundReport::Feedback(report)) = report {
            ev.kind = RecordType::Feedback;
            ev.feedback_report = Some(report.clone());
        }
        self.logger().log(ev).await;
        if let Some(InboundReport::Oob(dsn)) = report {
            for ev in oob_events(m, queue, info, dsn) {
                self.logger().log(ev).await;
            }
        }
    }

    async fn accept_all(
        &self,
        batch: Vec<Received>,
        info: ReceptionInfo,
    ) -> Vec<Result<Accepted, AcceptError>> {
        let (messages, rest): (Vec<Message>, Vec<(bool, Option<InboundReport>)>) = batch
            .into_iter()
            .map(|r| (r.message, (r.relay, r.report)))
            .unzip();
        let (relay, reports): (Vec<bool>, Vec<Option<InboundReport>>) = rest.into_iter().unzip();
        if !self.is_accepting_now() {
            let e = AcceptError::Unavailable(
                "spool is not started or the server is shutting down".into(),
            );
            return messages.iter().map(|_| Err(e.clone())).collect();
        }
        // Reports logged and dropped take no spool space, so a full disk
        // does not refuse them.
        let storing = relay.iter().any(|r| *r);
        let full = match storing {
            true => self.spool().check_free_space().err(),
            false => None,
        };
        if let Some(e) = full {
            let e = AcceptError::Spool(e.to_string());
            return messages.iter().map(|_| Err(e.clone())).collect();
        }
        let mut plans = Vec::with_capacity(messages.len());
        for (m, relay) in messages.iter().zip(&relay) {
            if !relay {
                plans.push(Plan::Drop);
                continue;
            }
            let plan = match m.queue_name() {
                Ok(name) if name == NULL_QUEUE => Plan::Null,
                Ok(name) => match self.resolve(&name).await {
                    Ok(sq) => Plan::Queue(sq),
                    Err(e) => Plan::Failed(e.to_string()),
                },
                Err(e) => Plan::Failed(e.to_string()),
            };
            plans.push(plan);
        }
        let to_store: Vec<Message> = messages
            .iter()
            .zip(&plans)
            .filter(|(_, p)| matches!(p, Plan::Queue(_)))
            .map(|(m, _)| m.clone())
            .collect();
        let mut stored = self.spool().store_many(&to_store).await.into_iter();
        // The HTTP listener counts its own receptions.
        let esmtp = (info.protocol == Protocol::Esmtp)
            .then(|| hermod_metrics::received(hermod_metrics::SERVICE_ESMTP_LISTENER));
        let mut out = Vec::with_capacity(messages.len());
        for ((m, plan), report) in messages.into_iter().zip(plans).zip(reports) {
            match plan {
                Plan::Null => {
                    if let Some(c) = &esmtp {
                        c.inc();
                    }
                    if info.protocol == Protocol::Esmtp {
                        self.log_received(&m, NULL_QUEUE, &info, report.as_ref())
                            .await;
                    }
                    out.push(Ok(Accepted::Discarded(m.id())));
                }
                Plan::Drop => {
                    // Only reports are dropped after logging; the session
                    // does not hand over other messages it will not relay.
                    let queue = m.queue_name().unwrap_or_default();
                    self.log_received(&m, &queue, &info, report.as_ref()).await;
                    out.push(Ok(Accepted::Discarded(m.id())));
                }
                Plan::Failed(e) => out.push(Err(AcceptError::Message(e))),
                Plan::Queue(sq) => match stored.next() {
                    Some(Ok(())) => {
                        if let Some(c) = &esmtp {
                            c.inc();
                        }
                        self.log_received(&m, &sq.name, &info, report.as_ref())
                            .await;
                        let id = m.id();
                        self.queue_received(m, sq).await;
                        out.push(Ok(Accepted::Queued(id)));
                    }
                    Some(Err(e)) => {
                        tracing::error!(id = %m.id(), error = %e, "spool write failed");
                        out.push(Err(AcceptError::Spool(e.to_string())))
                    }
                    None => out.push(Err(AcceptError::Spool("spool returned no result".into()))),
                },
            }
        }
        out
    }

    /// A message just spooled goes to its ready queue, unless its
    /// scheduling (`msg:set_scheduling`) puts it off or has already run out.
    async fn queue_received(&self, m: Message, sq: Arc<ScheduledQueue>) {
        let rec = &self.0.recorder;
        match schedule::gate(&m, std::time::SystemTime::now()) {
            Gate::Now => self.to_ready(crate::held::Queued::loaded(m, sq)),
            Gate::Later(at) => {
                schedule::log_delayed(rec, &m, &sq, at).await;
                self.to_timer(m, sq, at);
            }
            Gate::Expired(why) => crate::outcome::expire(rec, m, &sq, why).await,
        }
    }
}

impl Acceptor for QueueManager {
    fn accept(&self, messages: Vec<Message>, info: ReceptionInfo) -> AcceptFuture<'_> {
        // Run to completion even if the listener stops waiting (a timeout or
        // a dropped connection): a message that reached the spool must also
        // reach its queue, not sit there until the next restart.
        let batch = messages
            .into_iter()
            .map(|message| Received {
                message,
                relay: true,
                report: None,
            })
            .collect();
        self.accept_received(batch, info)
    }

    fn accept_received(&self, batch: Vec<Received>, info: ReceptionInfo) -> AcceptFuture<'_> {
        let qm = self.clone();
        let n = batch.len();
        let task = tokio::spawn(async move { qm.accept_all(batch, info).await });
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "message acceptance task failed");
                let err = AcceptError::Spool(format!("internal error: {e}"));
                vec![Err(err); n]
            })
        })
    }

    fn is_accepting(&self) -> bool {
        self.is_accepting_now()
    }

    fn rejected(&self, rejection: RejectionInfo) -> DoneFuture<'_> {
        Box::pin(async move { self.logger().log_rejection(&rejection).await })
    }
}
