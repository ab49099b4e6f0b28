//! Who may relay what: `relay_hosts`, then the policy's
//! `get_listener_domain(domain, listener, conn_meta)` answers for the
//! sender's domain (`relay_from`, `relay_from_authz`) and the recipient's
//! (`relay_to`, `log_oob`, `log_arf`), as in KumoMTA. Checked at RCPT TO and
//! again for each message after DATA, where the policy may have changed the
//! envelope.

use std::collections::HashMap;

use mlua::Value as LuaValue;

use hermod_message::EnvelopeAddress;
use hermod_policy::{CallError, ListenerDomain, ReportDisposition};

use crate::session::Session;

/// Answers remembered per connection. Bounded, so that a client trying many
/// random domains cannot grow a session's memory; KumoMTA keeps 16 too.
const CACHED_DOMAINS: usize = 16;

/// Per-session cache of `get_listener_domain` answers: a domain's answer
/// does not change within one connection (KumoMTA caches the same way).
#[derive(Default)]
pub(crate) struct DomainCache(HashMap<String, Option<ListenerDomain>>);

/// What may happen to mail from one sender to one recipient.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Disposition {
    /// Spool and queue it for onward delivery.
    pub relay: bool,
    pub log_arf: ReportDisposition,
    pub log_oob: ReportDisposition,
}

impl Disposition {
    /// RCPT TO is accepted when the mail may be relayed or may be a report
    /// to log; whether a report really arrived is only known after DATA.
    pub fn accept_rcpt_to(&self) -> bool {
        self.relay || self.log_arf.should_log() || self.log_oob.should_log()
    }
}

impl Session {
    /// The policy's listener domain for `domain`, from this connection's
    /// cache when it was asked before.
    async fn listener_domain(&mut self, domain: &str) -> Result<Option<ListenerDomain>, CallError> {
        if let Some(known) = self.domains.0.get(domain) {
            return Ok(known.clone());
        }
        let args = (
            domain.to_string(),
            self.local.to_string(),
            self.meta.clone(),
        );
        let answer = match self.event::<LuaValue>("get_listener_domain", args).await? {
            None | Some(LuaValue::Nil) => None,
            Some(LuaValue::UserData(ud)) => match ud.borrow::<ListenerDomain>() {
                Ok(d) => Some(d.clone()),
                Err(_) => return Err(wrong_answer("a different userdata")),
            },
            Some(other) => return Err(wrong_answer(other.type_name())),
        };
        if self.domains.0.len() >= CACHED_DOMAINS {
            self.domains.0.clear();
        }
        self.domains.0.insert(domain.to_string(), answer.clone());
        Ok(answer)
    }

    pub(crate) async fn check_relaying(
        &mut self,
        sender: &EnvelopeAddress,
        recipient: &EnvelopeAddress,
    ) -> Result<Disposition, CallError> {
        let relay_hosts = self.shared.cfg.relay_allowed(self.peer.ip());
        if !self.shared.handlers.listener_domain {
            return Ok(Disposition {
                relay: relay_hosts,
                ..Disposition::default()
            });
        }
        // A relay host needs no relay_from; only the recipient's logging
        // settings can still matter.
        let mut relay_from = false;
        if !relay_hosts {
            if let Some(dom) = self.listener_domain(sender.domain()).await? {
                let authz = self.auth.as_ref().map(|a| a.authz.as_str());
                relay_from = dom.allows_relay_from(self.peer.ip(), authz);
            }
        }
        let mut out = Disposition {
            relay: relay_hosts || relay_from,
            ..Disposition::default()
        };
        if let Some(dom) = self.listener_domain(recipient.domain()).await? {
            out.relay |= dom.relay_to;
            out.log_arf = dom.log_arf;
            out.log_oob = dom.log_oob;
        }
        tracing::debug!(session = %self.id, sender = %sender.domain(), recipient = %recipient.domain(),
            relay_hosts, relay_from, disposition = ?out, "check_relaying");
        Ok(out)
    }
}

fn wrong_answer(got: &str) -> CallError {
    CallError::Lua(format!(
        "get_listener_domain must return kumo.make_listener_domain{{...}} or nil, not {got}"
    ))
}
