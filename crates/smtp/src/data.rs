//! After DATA: build one message per recipient, run
//! `smtp_server_message_received`, hand the batch to the acceptor and reply.

use mlua::Value as LuaValue;

use hermod_message::report::{parse_arf, parse_dsn};
use hermod_message::{AcceptError, Accepted, InboundReport, Message, Received, SpoolId};
use hermod_policy::CallError;

use crate::connection::Connection;
use crate::session::{Flow, Session};
use crate::tls::Stream;
use crate::trace::{received_header, supplemental_header, ReceivedParts};

/// Why post-DATA processing did not reach the acceptor.
enum Abort {
    Event(CallError),
    Internal(String),
}

impl Session {
    pub(crate) async fn process_data(
        &mut self,
        conn: &mut Connection<Stream>,
        data: Vec<u8>,
    ) -> Flow {
        let budget = self.shared.cfg.data_processing_timeout;
        let result = tokio::time::timeout(budget, self.deliver(data)).await;
        self.end_transaction();
        match result {
            Err(_) => {
                conn.reply(451, "4.4.5 data processing timed out");
                Flow::Continue
            }
            Ok(Ok(reply)) => reply.send(conn),
            Ok(Err(Abort::Event(e))) => self.event_failure(conn, e),
            Ok(Err(Abort::Internal(e))) => {
                tracing::error!(session = %self.id, error = %e, "esmtp post-DATA processing failed");
                conn.reply(
                    421,
                    &format!("4.3.0 {} technical difficulties", self.host_name()),
                );
                Flow::Close
            }
        }
    }

    fn host_name(&self) -> &str {
        &self.shared.cfg.hostname
    }

    async fn deliver(&mut self, data: Vec<u8>) -> Result<Reply, Abort> {
        let cfg = &self.shared.cfg;
        let sender = self
            .sender
            .clone()
            .unwrap_or_else(hermod_message::EnvelopeAddress::null_sender);
        let meta = self.meta.snapshot();
        let peer_ip = self.peer.ip().to_string();
        let listener_ip = self.shared.local_addr.ip().to_string();
        let parts = ReceivedParts {
            ehlo: self.ehlo.as_deref(),
            peer_ip: &peer_ip,
            hostname: &cfg.hostname,
            listener_ip: &listener_ip,
            tls: self.tls.as_ref().map(|(v, c)| (v.as_str(), c.as_str())),
            authenticated: self.auth.is_some(),
        };
        let now = chrono::Local::now();
        let mut messages = Vec::with_capacity(self.recipients.len());
        for rcpt in &self.recipients {
            let id = SpoolId::new();
            let body = if cfg.trace_headers.received_header {
                let header = received_header(&parts, &id.to_string(), rcpt.email(), now);
                let mut body = Vec::with_capacity(header.len() + data.len());
                body.extend_from_slice(header.as_bytes());
                body.extend_from_slice(&data);
                body
            } else {
                data.clone()
            };
            messages.push(Message::new(
                id,
                sender.clone(),
                vec![rcpt.clone()],
                meta.clone(),
                body,
            ));
        }

        if self.shared.handlers.message_received {
            // One context for the whole transaction rather than one per message.
            let ctx = self
                .shared
                .engine
                .context()
                .await
                .map_err(|e| Abort::Event(CallError::Lua(e.to_string())))?;
            for msg in &messages {
                ctx.call::<LuaValue>(
                    "smtp_server_message_received",
                    (msg.clone(), self.meta.clone()),
                )
                .await
                .map_err(Abort::Event)?;
            }
        }

        if cfg.trace_headers.supplemental_header {
            let th = &cfg.trace_headers;
            for msg in &messages {
                let rcpts: Vec<String> = msg
                    .recipients()
                    .iter()
                    .map(|r| r.email().to_string())
                    .collect();
                let header = supplemental_header(
                    &th.header_name,
                    &rcpts,
                    &th.include_meta_names,
                    &msg.meta(),
                );
                let old = msg.data().map_err(|e| Abort::Internal(e.to_string()))?;
                let mut body = Vec::with_capacity(header.len() + old.len());
                body.extend_from_slice(header.as_bytes());
                body.extend_from_slice(&old);
                msg.set_data(body);
            }
        }

        // Relaying is decided again per message, as in KumoMTA: the policy may
        // have changed the envelope since RCPT TO. Each message has one
        // recipient, which decides for it.
        let mut reports = ReportCache::default();
        let mut batch = Vec::with_capacity(messages.len());
        for message in messages {
            let sender = message.sender();
            let Some(recipient) = message.recipients().into_iter().next() else {
                continue;
            };
            let d = self
                .check_relaying(&sender, &recipient)
                .await
                .map_err(Abort::Event)?;
            let mut relay = d.relay;
            let mut report = None;
            if d.log_arf.should_log() {
                if let Some(arf) = reports.arf(&data) {
                    relay = d.log_arf.should_relay();
                    report = Some(InboundReport::Feedback(arf));
                }
            }
            if report.is_none() && d.log_oob.should_log() {
                if let Some(dsn) = reports.dsn(&data) {
                    relay = d.log_oob.should_relay();
                    report = Some(InboundReport::Oob(dsn));
                }
            }
            // Mail that is neither relayed nor a report is not handed over:
            // it was accepted at RCPT only because it might have been one.
            if relay || report.is_some() {
                batch.push(Received {
                    message,
                    relay,
                    report,
                });
            }
        }
        if batch.is_empty() {
            return Ok(Reply::new(550, "5.7.1 relaying not permitted", false));
        }

        let info = self.reception_info();
        let results = self.shared.acceptor.accept_received(batch, info).await;
        Ok(self.reply_for(results))
    }

    fn reply_for(&self, results: Vec<Result<Accepted, AcceptError>>) -> Reply {
        let ids: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|a| a.id().to_string()))
            .collect();
        let errors: Vec<&AcceptError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        if errors.is_empty() {
            return Reply::new(250, &format!("OK ids={}", ids.join(" ")), false);
        }
        for e in &errors {
            tracing::warn!(session = %self.id, error = %e, "esmtp message not accepted");
        }
        if !ids.is_empty() {
            return Reply::new(250, &format!("PARTIAL ids={}", ids.join(" ")), false);
        }
        let first = errors[0];
        match first {
            AcceptError::Unavailable(reason) => Reply::new(
                421,
                &format!(
                    "4.3.2 {} not accepting messages: {reason}",
                    self.host_name()
                ),
                true,
            ),
            AcceptError::Spool(reason) | AcceptError::Message(reason) => {
                Reply::new(451, &format!("4.3.0 {reason}"), false)
            }
        }
    }
}

/// The DATA content parsed as a report at most once per transaction, however
/// many recipients ask.
#[derive(Default)]
struct ReportCache {
    arf: Option<Option<serde_json::Value>>,
    dsn: Option<Option<hermod_message::report::Dsn>>,
}

impl ReportCache {
    fn arf(&mut self, data: &[u8]) -> Option<serde_json::Value> {
        self.arf.get_or_insert_with(|| parse_arf(data)).clone()
    }

    fn dsn(&mut self, data: &[u8]) -> Option<hermod_message::report::Dsn> {
        self.dsn.get_or_insert_with(|| parse_dsn(data)).clone()
    }
}

struct Reply {
    code: u16,
    text: String,
    close: bool,
}

impl Reply {
    fn new(code: u16, text: &str, close: bool) -> Self {
        Self {
            code,
            text: text.to_string(),
            close,
        }
    }

    fn send(self, conn: &mut Connection<Stream>) -> Flow {
        conn.reply(self.code, &self.text);
        if self.close {
            Flow::Close
        } else {
            Flow::Continue
        }
    }
}
