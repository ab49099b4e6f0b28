//! The SMTP protocol: queues without `custom_lua` or `maildir_path` deliver to their site's
//! hosts (MX records or `mx_list`, found by crates/queue/src/route.rs) with the client of
//! `hermod-smtp-client`, under the ready queue's egress path config: hosts in preference
//! order with `prohibited_hosts` and `skip_hosts` left out, the next host when one fails to
//! connect, TLS per `enable_tls`, the connection reused for up to
//! `max_deliveries_per_connection` messages, and `max_message_rate`/`max_connection_rate`.
//!
//! Replies map to outcomes as KumoMTA's do: 2xx Delivery, 3xx/4xx/503 TransientFailure,
//! other 5xx Bounce. A connection that breaks retries its message later and, per
//! `reconnect_strategy`, reconnects for the next one or ends the session.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use hermod_logging::{EnhancedCode, PeerAddress, Response};
use hermod_message::Protocol;
use hermod_policy::mlua::Value;
use hermod_policy::{EgressPathConfig, Engine, ReconnectStrategy, Tls};
use hermod_smtp_client::{self as client, ClientConfig, Needs, TlsMode, TlsTrust};

use super::{Attempt, Batching, Dispatcher, Health, Outcome, Outcomes};
use crate::outcome::TlsDetails;
use crate::ready::{Entry, ReadyQueue};
use crate::route::{Candidate, SmtpTarget};

pub(super) struct Smtp {
    engine: Arc<Engine>,
    /// Whether the policy has a `smtp_client_rewrite_delivery_status`
    /// handler; learnt at the first refusal, so later ones borrow no Lua
    /// context when it has none.
    rewrite_handler: Option<bool>,
    path: Option<Arc<EgressPathConfig>>,
    target: Option<Arc<SmtpTarget>>,
    /// Hosts not yet tried by this session, in order (the next host on failure).
    candidates: Vec<Candidate>,
    next: usize,
    client: Option<client::Client>,
    /// The peer of the last connection, kept after it broke so its records name it.
    peer: Option<PeerAddress>,
    tls: Option<TlsDetails>,
    connection_throttle: Option<Arc<crate::throttle::Throttle>>,
    message_throttle: Option<Arc<crate::throttle::Throttle>>,
}

impl Smtp {
    pub(super) fn new(engine: Arc<Engine>, rq: &ReadyQueue) -> Self {
        Smtp {
            engine,
            rewrite_handler: None,
            path: rq.egress_path(),
            target: rq.smtp_target(),
            candidates: Vec::new(),
            next: 0,
            client: None,
            peer: None,
            tls: None,
            connection_throttle: rq.connection_throttle(),
            message_throttle: rq.message_throttle(),
        }
    }

    /// Connect to the next candidate that answers, starting at `self.next`.
    /// Every failure is listed in the error, host by host. `reconnecting`:
    /// an earlier connection of this session broke, and `TerminateSession`
    /// then allows one attempt only.
    async fn open(&mut self, reconnecting: bool) -> Result<(), String> {
        let (Some(path), Some(target)) = (self.path.clone(), self.target.clone()) else {
            return Err("the ready queue has no egress path or route".into());
        };
        let config = client_config(&path, &target).await?;
        let mut failures = Vec::new();
        while self.next < self.candidates.len() {
            let c = self.candidates[self.next].clone();
            self.next += 1;
            if let Some(t) = &self.connection_throttle {
                t.wait().await;
            }
            let port = target
                .source
                .remote_port
                .or(c.port)
                .unwrap_or(path.smtp_port);
            self.peer = Some(PeerAddress {
                name: c.name.clone(),
                addr: c.addr.to_string(),
                is_secure: false,
            });
            match client::connect(SocketAddr::new(c.addr, port), &c.name, &config).await {
                Ok(cl) => {
                    self.tls = cl.tls_info().map(|t| TlsDetails {
                        cipher: t.cipher.clone(),
                        protocol_version: t.protocol_version.clone(),
                        peer_subject_name: t.subject_name.clone(),
                    });
                    if let Some(p) = &mut self.peer {
                        p.is_secure = cl.is_tls();
                    }
                    self.client = Some(cl);
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(host = %c.name, error = %e, "SMTP connection failed");
                    failures.push(e.to_string());
                    if reconnecting
                        && path.reconnect_strategy == ReconnectStrategy::TerminateSession
                    {
                        break;
                    }
                }
            }
        }
        Err(if failures.is_empty() {
            "no host left to try".into()
        } else {
            failures.join("; ")
        })
    }
}

/// The same trust store for every connection: building it is costly.
fn trust() -> Arc<TlsTrust> {
    static TRUST: OnceLock<Arc<TlsTrust>> = OnceLock::new();
    TRUST.get_or_init(TlsTrust::system).clone()
}

fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    })
}

async fn client_config(
    path: &EgressPathConfig,
    target: &SmtpTarget,
) -> Result<ClientConfig, String> {
    let ehlo = path
        .ehlo_domain
        .clone()
        .or_else(|| target.source.ehlo_domain.clone())
        .unwrap_or_else(|| hostname().to_string());
    let mut config = ClientConfig::new(ehlo);
    config.timeouts = client::Timeouts {
        connect: path.connect_timeout,
        banner: path.banner_timeout,
        ehlo: path.ehlo_timeout,
        mail_from: path.mail_from_timeout,
        rcpt_to: path.rcpt_to_timeout,
        data: path.data_timeout,
        data_dot: path.data_dot_timeout,
        rset: path.rset_timeout,
        starttls: path.starttls_timeout,
        auth: path.auth_timeout,
        quit: path.rset_timeout,
    };
    config.tls = match path.enable_tls {
        Tls::Opportunistic => TlsMode::Opportunistic,
        Tls::OpportunisticInsecure => TlsMode::OpportunisticInsecure,
        Tls::Required => TlsMode::Required,
        Tls::RequiredInsecure => TlsMode::RequiredInsecure,
        Tls::Disabled => TlsMode::Disabled,
    };
    config.tls_trust = trust();
    config.enable_pipelining = path.enable_pipelining;
    config.enable_rset = path.enable_rset;
    config.source_address = target.source.source_address;
    if let (Some(user), Some(password)) = (
        &path.smtp_auth_plain_username,
        &path.smtp_auth_plain_password,
    ) {
        // The error names neither the password nor where it is kept.
        let password = password
            .resolve()
            .await
            .map_err(|e| format!("smtp_auth_plain_password: {e}"))?;
        let mut auth = client::AuthPlain::new(user.clone(), password);
        auth.allow_without_tls = path.allow_smtp_auth_plain_without_tls;
        auth.allow_unverified_tls = path.allow_smtp_auth_plain_without_valid_certificate;
        config.auth = Some(auth);
    }
    Ok(config)
}

/// A failed connection costs the first message of the batch an attempt; the
/// others go back untried (as in KumoMTA, which holds one message when it
/// connects), so an outage does not burn a whole batch's schedules.
fn first_only(n: usize, response: Response, health: Health) -> Attempt {
    let mut outcomes = vec![Outcome::Untried; n];
    if let Some(first) = outcomes.first_mut() {
        *first = Outcome::Transient {
            response,
            at_peer: false,
        };
    }
    Attempt {
        outcomes: Outcomes::Each(outcomes),
        health,
        end_session: true,
    }
}

fn enhanced(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
    Some(EnhancedCode {
        class,
        subject,
        detail,
    })
}

/// A server reply as log records carry it.
fn response(r: &client::Response) -> Response {
    let mut out = Response::new(
        r.code,
        r.enhanced_code.map(|e| EnhancedCode {
            class: e.class,
            subject: e.subject,
            detail: e.detail,
        }),
        &r.content,
    );
    out.command = r.command.clone();
    out
}

/// `smtp_client_rewrite_delivery_status(response, domain, tenant, campaign, routing_domain)`
/// may give a refusal another code (a full mailbox treated as permanent, say). Errors in the
/// handler leave the response as it was.
async fn rewrite_status(
    engine: &Arc<Engine>,
    resp: Response,
    e: &Entry,
    has_handler: &mut Option<bool>,
) -> Response {
    const EVENT: &str = "smtp_client_rewrite_delivery_status";
    let Ok(ctx) = engine.context().await else {
        return resp;
    };
    let found = ctx.has_handler(EVENT);
    *has_handler = Some(found);
    if !found {
        return resp;
    }
    let mut line = resp.code.to_string();
    if let Some(c) = &resp.enhanced_code {
        line.push_str(&format!(" {}.{}.{}", c.class, c.subject, c.detail));
    }
    line.push(' ');
    line.push_str(&resp.content.replace("\r\n", "\\r\\n"));
    let q = &e.queue.components;
    let args = (
        line,
        q.domain.clone(),
        q.tenant.clone(),
        q.campaign.clone(),
        q.routing_domain.clone(),
    );
    match ctx.call::<Value>(EVENT, args).await {
        Ok(Some(Value::Integer(code))) if code != i64::from(resp.code) => {
            match u16::try_from(code) {
                Ok(code) if (200..600).contains(&code) => {
                    let content = format!(
                        "{} (status rewritten from {} by {EVENT})",
                        resp.content, resp.code
                    );
                    let mut out = Response::new(code, resp.enhanced_code, &content);
                    out.command = resp.command;
                    out
                }
                _ => {
                    tracing::warn!(code, "{EVENT} returned a code outside 200..=599; ignored");
                    resp
                }
            }
        }
        Ok(_) => resp,
        Err(err) => {
            tracing::warn!(error = %err, "{EVENT} failed; the response stands");
            resp
        }
    }
}

/// 2xx delivered; 3xx, 4xx and 503 (a sequence error, often from pipelining) retried; other
/// codes bounced.
fn classify(resp: Response) -> Outcome {
    match resp.code {
        200..=299 => Outcome::Delivered(resp),
        300..=499 | 503 => Outcome::Transient {
            response: resp,
            at_peer: true,
        },
        _ => Outcome::Bounced(resp),
    }
}

impl Dispatcher for Smtp {
    fn protocol(&self) -> Protocol {
        Protocol::Esmtp
    }

    fn batching(&self) -> Batching {
        Batching {
            size: 32,
            min: 1,
            max_latency: std::time::Duration::ZERO,
        }
    }

    /// One message per transaction.
    fn per_call(&self) -> usize {
        1
    }

    fn peer(&self) -> Option<PeerAddress> {
        self.peer.clone()
    }

    fn tls(&self) -> Option<TlsDetails> {
        self.tls.clone()
    }

    async fn connect(&mut self, _rq: &ReadyQueue, first: &[Entry]) -> Result<(), Attempt> {
        let (Some(path), Some(target)) = (self.path.clone(), self.target.clone()) else {
            return Err(Attempt::all_transient(
                451,
                "the SMTP ready queue has no egress path config or route".into(),
                Health::Unknown,
            ));
        };
        let all = match target.hosts.candidates(&target.domain).await {
            Ok(c) => c,
            Err(e) => {
                let why = e.to_string();
                let response = Response::new(451, enhanced(4, 4, 4), &why);
                return Err(first_only(first.len(), response, Health::Failed(why)));
            }
        };
        let mut prohibited = Vec::new();
        let mut skipped = Vec::new();
        for c in all {
            if path.prohibited_hosts.contains(c.addr) {
                prohibited.push(format!("{} [{}]", c.name, c.addr));
            } else if path.skip_hosts.contains(c.addr) {
                skipped.push(format!("{} [{}]", c.name, c.addr));
            } else {
                self.candidates.push(c);
            }
        }
        if self.candidates.is_empty() {
            // Delivering to a prohibited host would loop mail back into this
            // machine or its network: permanent, as in KumoMTA.
            let (code, class, text) = if !prohibited.is_empty() {
                (
                    550,
                    enhanced(5, 4, 4),
                    format!(
                        "every host of {} is in prohibited_hosts: {}",
                        target.domain,
                        prohibited.join(", ")
                    ),
                )
            } else {
                (
                    451,
                    enhanced(4, 4, 4),
                    format!(
                        "every host of {} is in skip_hosts: {}",
                        target.domain,
                        skipped.join(", ")
                    ),
                )
            };
            let response = Response::new(code, class, &text);
            let outcome = if code >= 500 {
                Outcome::Bounced(response)
            } else {
                Outcome::Transient {
                    response,
                    at_peer: false,
                }
            };
            return Err(Attempt {
                outcomes: Outcomes::All(outcome),
                health: Health::Unknown,
                end_session: true,
            });
        }
        match self.open(false).await {
            Ok(()) => Ok(()),
            Err(why) => {
                let text = format!("failed to connect to any candidate hosts: {why}");
                let response = Response::new(451, enhanced(4, 4, 1), &text);
                Err(first_only(first.len(), response, Health::Failed(text)))
            }
        }
    }

    async fn deliver(&mut self, batch: &[Entry]) -> Attempt {
        let Some(e) = batch.first() else {
            return Attempt {
                outcomes: Outcomes::Each(Vec::new()),
                health: Health::Unknown,
                end_session: false,
            };
        };
        if self.client.is_none() {
            // The last connection broke; `reconnect_strategy` allowed going on.
            let same_host = self
                .path
                .as_ref()
                .is_some_and(|p| p.reconnect_strategy == ReconnectStrategy::ReconnectSameHost);
            if same_host {
                self.next = self.next.saturating_sub(1);
            }
            if self.next >= self.candidates.len() {
                // No host left for this session: the message was never
                // tried, so it goes back for the next session unharmed.
                return Attempt {
                    outcomes: Outcomes::All(Outcome::Untried),
                    health: Health::Unknown,
                    end_session: true,
                };
            }
            if let Err(why) = self.open(true).await {
                let text = format!("failed to reconnect: {why}");
                return Attempt {
                    outcomes: Outcomes::All(Outcome::Transient {
                        response: Response::new(451, enhanced(4, 4, 1), &text),
                        at_peer: false,
                    }),
                    health: Health::Failed(text),
                    end_session: true,
                };
            }
        }
        if let Some(t) = &self.message_throttle {
            let max = self
                .path
                .as_ref()
                .map_or(std::time::Duration::from_secs(5), |p| p.idle_timeout)
                .max(std::time::Duration::from_secs(1));
            let admitted = t.admit_now() || {
                hermod_metrics::delayed_due_to_message_rate_throttle(&e.queue.name).inc();
                t.wait_at_most(max).await
            };
            if !admitted {
                // The rate allows no message for a while: end the session;
                // the message waits in the queue for the next one.
                return Attempt {
                    outcomes: Outcomes::All(Outcome::Untried),
                    health: Health::Unknown,
                    end_session: true,
                };
            }
        }
        let Some(cl) = self.client.as_mut() else {
            return Attempt::all_transient(451, "no SMTP connection".into(), Health::Unknown);
        };
        let msg = &e.message;
        let sender = msg.sender();
        let recipients: Vec<String> = msg.recipients().into_iter().map(String::from).collect();
        let Ok(data) = msg.data() else {
            // The driver loads every message's bytes; sending none would
            // deliver an empty message.
            return Attempt::all_transient(
                400,
                "internal error: the message's data is not loaded".into(),
                Health::Unknown,
            );
        };
        let needs = Needs::detect(sender.email(), &recipients, &data);
        match cl
            .send_message(sender.email(), &recipients, &data, needs)
            .await
        {
            Ok(tx) => {
                // Each message has one recipient; with several, the first
                // refusal decides (a retry re-sends to those that took it:
                // a duplicate rather than a loss).
                let refused = (0..recipients.len())
                    .map(|i| tx.recipient_response(i))
                    .find(|r| !r.is_success());
                let decisive = response(refused.unwrap_or(&tx.response));
                let decisive = if decisive.code >= 300 && self.rewrite_handler != Some(false) {
                    rewrite_status(&self.engine, decisive, e, &mut self.rewrite_handler).await
                } else {
                    decisive
                };
                Attempt {
                    outcomes: Outcomes::All(classify(decisive)),
                    health: Health::Reached,
                    end_session: false,
                }
            }
            Err(err) => {
                let strategy = self
                    .path
                    .as_ref()
                    .map(|p| p.reconnect_strategy)
                    .unwrap_or(ReconnectStrategy::ConnectNextHost);
                self.client = None;
                let resp = match err.response() {
                    Some(r) if r.is_transient() => response(r),
                    _ => Response::new(451, enhanced(4, 4, 2), &err.to_string()),
                };
                Attempt {
                    outcomes: Outcomes::All(Outcome::Transient {
                        response: resp,
                        at_peer: true,
                    }),
                    health: Health::Unknown,
                    end_session: strategy == ReconnectStrategy::TerminateSession,
                }
            }
        }
    }

    async fn close(&mut self) {
        if let Some(cl) = self.client.take() {
            // QUIT is a courtesy: its timeout is short and its errors do not matter.
            let _ = cl.quit().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(c: u16) -> Outcome {
        classify(Response::new(c, None, "x"))
    }

    #[test]
    fn replies_map_to_delivery_retry_or_bounce_as_in_kumomta() {
        assert!(matches!(code(250), Outcome::Delivered(_)));
        assert!(matches!(code(354), Outcome::Transient { .. }));
        assert!(matches!(
            code(451),
            Outcome::Transient { at_peer: true, .. }
        ));
        assert!(matches!(code(503), Outcome::Transient { .. }));
        assert!(matches!(code(550), Outcome::Bounced(_)));
        assert!(matches!(code(554), Outcome::Bounced(_)));
    }
}
