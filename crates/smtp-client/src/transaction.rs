//! One mail transaction: MAIL FROM, RCPT TO per recipient, DATA, the
//! content and the final dot; pipelined when the server offers PIPELINING
//! and the configuration allows it.

use crate::body;
use crate::client::Client;
use crate::error::{ClientError, ErrorKind, Step};
use crate::response::Response;
use crate::wire::Deadline;

/// What the message needs from the server beyond plain ASCII SMTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// The content has octets above 127 (`BODY=8BITMIME`, RFC 6152).
    pub eight_bit_mime: bool,
    /// An envelope address is not ASCII (`SMTPUTF8`, RFC 6531).
    pub smtputf8: bool,
}

impl Needs {
    /// Derived from the envelope and content themselves.
    pub fn detect<R: AsRef<str>>(sender: &str, recipients: &[R], data: &[u8]) -> Self {
        Self {
            eight_bit_mime: !data.is_ascii(),
            smtputf8: !sender.is_ascii() || recipients.iter().any(|r| !r.as_ref().is_ascii()),
        }
    }
}

/// Where a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Refused by the client before anything was sent (size over the
    /// server's limit, an extension the message needs is missing, an
    /// address that cannot be written on a command line).
    Local,
    MailFrom,
    /// Every recipient was refused.
    RcptTo,
    Data,
    /// The content was sent; the reply after the final dot decided.
    DataDot,
}

/// The outcome of [`Client::send_message`]: the server's verdicts. Failures
/// of the connection itself are [`ClientError`]s instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionResult {
    pub stage: Stage,
    /// The reply that ended the transaction: the reply after the final dot
    /// when the content was sent; otherwise the refusal (of MAIL FROM, of
    /// the last recipient when all were refused, of DATA, or made up
    /// locally with no command).
    pub response: Response,
    /// The RCPT TO replies, in recipient order; empty when no RCPT TO was
    /// sent.
    pub rcpt_responses: Vec<Response>,
}

impl TransactionResult {
    /// True when the server took the message for at least one recipient.
    pub fn is_delivered(&self) -> bool {
        self.stage == Stage::DataDot && self.response.is_success()
    }

    /// The reply that decides recipient `index`'s fate: its own refusal if
    /// RCPT TO refused it, else the reply that ended the transaction.
    pub fn recipient_response(&self, index: usize) -> &Response {
        match (self.stage, self.rcpt_responses.get(index)) {
            (Stage::Local | Stage::MailFrom, _) => &self.response,
            (_, Some(rcpt)) if !rcpt.is_success() => rcpt,
            _ => &self.response,
        }
    }

    fn local(code: u16, enhanced: (u8, u16, u16), text: &str) -> Self {
        Self {
            stage: Stage::Local,
            response: Response::local(code, enhanced, text),
            rcpt_responses: Vec::new(),
        }
    }
}

/// An address goes between `<` and `>` on a command line, so it must not
/// contain anything that ends the line or the brackets.
fn writable(address: &str) -> bool {
    !address
        .bytes()
        .any(|b| matches!(b, b'\r' | b'\n' | b'\0' | b'<' | b'>'))
}

impl Client {
    /// Sends one message to `recipients`. `Ok` carries the server's
    /// verdicts (including refusals); `Err` means the connection failed
    /// and must not be used again (check [`Client::is_usable`]).
    pub async fn send_message<R: AsRef<str>>(
        &mut self,
        sender: &str,
        recipients: &[R],
        data: &[u8],
        needs: Needs,
    ) -> Result<TransactionResult, ClientError> {
        if !self.wire.is_open() {
            return Err(self.wire.error(Step::MailFrom, ErrorKind::Unusable));
        }
        if let Some(refusal) = self.refuse_locally(sender, recipients, needs) {
            return Ok(refusal);
        }
        let encoded = body::encode(data);
        if let Some(Some(limit)) = self.capabilities.size() {
            if encoded.size > limit {
                return Ok(TransactionResult::local(
                    552,
                    (5, 3, 4),
                    &format!(
                        "message of {} octets exceeds the server's limit of {limit} octets",
                        encoded.size
                    ),
                ));
            }
        }
        let mail = self.mail_from_line(sender, needs, encoded.size);
        let rcpts: Vec<String> = recipients
            .iter()
            .map(|r| format!("RCPT TO:<{}>", r.as_ref()))
            .collect();

        // Until this transaction succeeds the next one must start clean.
        let rset = std::mem::replace(&mut self.rset_before_next, true);
        let pipelined = self.config.enable_pipelining && self.capabilities.pipelining();
        let outcome = if pipelined {
            self.envelope_pipelined(rset, &mail, &rcpts).await?
        } else {
            self.envelope_in_turn(rset, &mail, &rcpts).await?
        };
        let rcpt_responses = match outcome {
            Envelope::Refused(result) => return Ok(result),
            Envelope::Ready(rcpt_responses) => rcpt_responses,
        };

        tracing::trace!(peer = %self.wire.peer, octets = encoded.wire.len(), "sending content");
        let deadline = Deadline::after(self.config.timeouts.data);
        self.wire.write(Step::Data, deadline, &encoded.wire).await?;
        let deadline = Deadline::after(self.config.timeouts.data_dot);
        let response = self
            .wire
            .read_reply(Step::DataDot, deadline, Some(".".into()))
            .await?;
        if response.is_success() {
            self.rset_before_next = self.config.enable_rset;
        }
        Ok(TransactionResult {
            stage: Stage::DataDot,
            response,
            rcpt_responses,
        })
    }

    fn refuse_locally<R: AsRef<str>>(
        &self,
        sender: &str,
        recipients: &[R],
        needs: Needs,
    ) -> Option<TransactionResult> {
        if recipients.is_empty() {
            return Some(TransactionResult::local(554, (5, 5, 1), "no recipients"));
        }
        if !writable(sender) {
            return Some(TransactionResult::local(
                553,
                (5, 1, 7),
                "the sender address cannot be sent over SMTP",
            ));
        }
        if recipients.iter().any(|r| !writable(r.as_ref())) {
            return Some(TransactionResult::local(
                553,
                (5, 1, 3),
                "a recipient address cannot be sent over SMTP",
            ));
        }
        // Without the extension the server may mangle or refuse the
        // message; KumoMTA fails it permanently rather than sending it,
        // unless told to try anyway.
        if self.config.ignore_8bit_checks {
            return None;
        }
        if needs.smtputf8 && !self.capabilities.smtputf8() {
            return Some(TransactionResult::local(
                554,
                (5, 6, 7),
                "the envelope is not ASCII and the server does not offer SMTPUTF8",
            ));
        }
        if needs.eight_bit_mime && !self.capabilities.eight_bit_mime() {
            return Some(TransactionResult::local(
                554,
                (5, 6, 3),
                "the content is 8-bit and the server does not offer 8BITMIME",
            ));
        }
        None
    }

    fn mail_from_line(&self, sender: &str, needs: Needs, size: u64) -> String {
        let mut line = format!("MAIL FROM:<{sender}>");
        let caps = &self.capabilities;
        if caps.size().is_some() {
            line.push_str(&format!(" SIZE={size}"));
        }
        if needs.eight_bit_mime && caps.eight_bit_mime() {
            line.push_str(" BODY=8BITMIME");
        }
        if needs.smtputf8 && caps.smtputf8() {
            line.push_str(" SMTPUTF8");
        }
        line
    }

    /// Without pipelining: each command waits for its reply, and the
    /// transaction stops at the first refusal that ends it.
    async fn envelope_in_turn(
        &mut self,
        rset: bool,
        mail: &str,
        rcpts: &[String],
    ) -> Result<Envelope, ClientError> {
        if rset {
            self.rset().await?;
            self.rset_before_next = true;
        }
        let reply = self.command(Step::MailFrom, mail, mail).await?;
        if !reply.is_success() {
            return Ok(Envelope::refused(Stage::MailFrom, reply, Vec::new()));
        }
        let mut replies = Vec::with_capacity(rcpts.len());
        for rcpt in rcpts {
            replies.push(self.command(Step::RcptTo, rcpt, rcpt).await?);
        }
        if let Some(last) = all_refused(&replies) {
            return Ok(Envelope::refused(Stage::RcptTo, last, replies));
        }
        let reply = self.command(Step::Data, "DATA", "DATA").await?;
        if reply.code != 354 {
            return Ok(Envelope::refused(Stage::Data, reply, replies));
        }
        Ok(Envelope::Ready(replies))
    }

    /// With pipelining (RFC 2920): RSET, MAIL FROM, every RCPT TO and DATA
    /// go out in one write, then the replies are read in order, each
    /// within its own step's time.
    async fn envelope_pipelined(
        &mut self,
        rset: bool,
        mail: &str,
        rcpts: &[String],
    ) -> Result<Envelope, ClientError> {
        let mut batch = String::new();
        if rset {
            batch.push_str("RSET\r\n");
        }
        for line in std::iter::once(mail).chain(rcpts.iter().map(String::as_str)) {
            batch.push_str(line);
            batch.push_str("\r\n");
        }
        batch.push_str("DATA\r\n");
        tracing::trace!(peer = %self.wire.peer, commands = rcpts.len() + 2, "send pipelined");
        let deadline = Deadline::after(self.config.timeouts.mail_from);
        self.wire
            .write(Step::MailFrom, deadline, batch.as_bytes())
            .await?;

        if rset {
            let reply = self.reply(Step::Rset, "RSET").await?;
            if !reply.is_success() {
                return Err(self.wire.fail(Step::Rset, ErrorKind::Rejected(reply)));
            }
        }
        let mail_reply = self.reply(Step::MailFrom, mail).await?;
        let mut replies = Vec::with_capacity(rcpts.len());
        for rcpt in rcpts {
            replies.push(self.reply(Step::RcptTo, rcpt).await?);
        }
        let data_reply = self.reply(Step::Data, "DATA").await?;

        let refused = if !mail_reply.is_success() {
            Some(Envelope::refused(
                Stage::MailFrom,
                mail_reply,
                replies.clone(),
            ))
        } else {
            all_refused(&replies)
                .map(|last| Envelope::refused(Stage::RcptTo, last, replies.clone()))
        };
        match refused {
            Some(refusal) => {
                if data_reply.code == 354 {
                    // RFC 2920 §3.1: the server accepted DATA although the
                    // envelope failed; an empty message ends it cleanly.
                    let deadline = Deadline::after(self.config.timeouts.data_dot);
                    self.wire.write(Step::DataDot, deadline, b".\r\n").await?;
                    self.wire
                        .read_reply(Step::DataDot, deadline, Some(".".into()))
                        .await?;
                }
                Ok(refusal)
            }
            None if data_reply.code != 354 => {
                Ok(Envelope::refused(Stage::Data, data_reply, replies))
            }
            None => Ok(Envelope::Ready(replies)),
        }
    }

    /// The next pipelined reply, answering `command`.
    async fn reply(&mut self, step: Step, command: &str) -> Result<Response, ClientError> {
        let deadline = Deadline::after(self.step_timeout(step));
        self.wire
            .read_reply(step, deadline, Some(command.to_string()))
            .await
    }
}

enum Envelope {
    /// Go on with the content; the RCPT TO replies so far.
    Ready(Vec<Response>),
    Refused(TransactionResult),
}

impl Envelope {
    fn refused(stage: Stage, response: Response, rcpt_responses: Vec<Response>) -> Self {
        Envelope::Refused(TransactionResult {
            stage,
            response,
            rcpt_responses,
        })
    }
}

/// The last refusal when no recipient was accepted.
fn all_refused(replies: &[Response]) -> Option<Response> {
    if replies.iter().any(Response::is_success) {
        return None;
    }
    replies.last().cloned()
}
