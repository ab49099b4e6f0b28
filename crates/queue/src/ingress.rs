//! The `Acceptor` listeners hand new messages to: queue resolution,
//! group-committed spool write, Reception record, then the ready queue.

use std::sync::Arc;

use hermod_logging::{LogEvent, PeerAddress, RecordType, Response};
use hermod_message::accept::{AcceptFuture, DoneFuture};
use hermod_message::{
    AcceptError, Accepted, Acceptor, Message, Protocol, ReceptionInfo, RejectionInfo,
};

use crate::manager::QueueManager;
use crate::resolve::{ScheduledQueue, NULL_QUEUE};

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
    }
}

enum Plan {
    Null,
    Queue(Arc<ScheduledQueue>),
    Failed(String),
}

impl QueueManager {
    async fn accept_all(
        &self,
        messages: Vec<Message>,
        info: ReceptionInfo,
    ) -> Vec<Result<Accepted, AcceptError>> {
        if !self.is_accepting_now() {
            let e = AcceptError::Unavailable(
                "spool is not started or the server is shutting down".into(),
            );
            return messages.iter().map(|_| Err(e.clone())).collect();
        }
        if let Err(e) = self.spool().check_free_space() {
            let e = AcceptError::Spool(e.to_string());
            return messages.iter().map(|_| Err(e.clone())).collect();
        }
        let mut plans = Vec::with_capacity(messages.len());
        for m in &messages {
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
        for (m, plan) in messages.into_iter().zip(plans) {
            match plan {
                Plan::Null => {
                    if let Some(c) = &esmtp {
                        c.inc();
                    }
                    if info.protocol == Protocol::Esmtp {
                        self.logger().log(reception(&m, NULL_QUEUE, &info)).await;
                    }
                    out.push(Ok(Accepted::Discarded(m.id())));
                }
                Plan::Failed(e) => out.push(Err(AcceptError::Message(e))),
                Plan::Queue(sq) => match stored.next() {
                    Some(Ok(())) => {
                        if let Some(c) = &esmtp {
                            c.inc();
                        }
                        self.logger().log(reception(&m, &sq.name, &info)).await;
                        let id = m.id();
                        self.to_ready(crate::held::Queued::loaded(m, sq));
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
}

impl Acceptor for QueueManager {
    fn accept(&self, messages: Vec<Message>, info: ReceptionInfo) -> AcceptFuture<'_> {
        // Run to completion even if the listener stops waiting (a timeout or
        // a dropped connection): a message that reached the spool must also
        // reach its queue, not sit there until the next restart.
        let qm = self.clone();
        let n = messages.len();
        let task = tokio::spawn(async move { qm.accept_all(messages, info).await });
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
