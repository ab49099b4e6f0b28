//! The operator's hand-off to the queues: suspensions, administrative
//! bounces, ready-queue states and message inspection. The HTTP admin API
//! depends on this trait, not on the queue crate, just as listeners depend
//! on [`crate::Acceptor`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use crate::{QueueNameComponents, SpoolId};

/// Which scheduled queues a suspension or bounce applies to. Empty fields
/// match anything; `queue_names`, when given, replaces the other fields
/// with an exact list of scheduled queue names (as in KumoMTA).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Criteria {
    pub domain: Option<String>,
    pub campaign: Option<String>,
    pub tenant: Option<String>,
    pub routing_domain: Option<String>,
    pub queue_names: Vec<String>,
}

impl Criteria {
    /// Whether the scheduled queue `name` (with its parsed `parts`) matches.
    /// Domains compare without regard to case, as DNS names do.
    pub fn matches(&self, name: &str, parts: &QueueNameComponents) -> bool {
        if !self.queue_names.is_empty() {
            return self.queue_names.iter().any(|q| q == name);
        }
        let same = |want: &Option<String>, have: Option<&str>| match want {
            None => true,
            Some(w) => have == Some(w.as_str()),
        };
        let domain_ok = match &self.domain {
            None => true,
            Some(d) => d.eq_ignore_ascii_case(&parts.domain),
        };
        let routing_ok = match &self.routing_domain {
            None => true,
            Some(d) => parts
                .routing_domain
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case(d)),
        };
        domain_ok
            && routing_ok
            && same(&self.campaign, parts.campaign.as_deref())
            && same(&self.tenant, parts.tenant.as_deref())
    }

    /// True when nothing narrows the match: every queue is affected.
    pub fn is_everything(&self) -> bool {
        *self == Criteria::default()
    }
}

/// A scheduled-queue suspension as listed.
#[derive(Debug, Clone)]
pub struct Suspension {
    pub id: String,
    pub criteria: Criteria,
    pub reason: String,
    pub expires: SystemTime,
}

/// A ready-queue suspension as listed.
#[derive(Debug, Clone)]
pub struct ReadySuspension {
    pub id: String,
    pub name: String,
    pub reason: String,
    pub expires: SystemTime,
}

/// An administrative bounce as listed, with what it has bounced so far.
#[derive(Debug, Clone)]
pub struct BounceRule {
    pub id: String,
    pub criteria: Criteria,
    pub reason: String,
    pub suppress_logging: bool,
    pub expires: SystemTime,
    /// Messages bounced per scheduled queue name.
    pub bounced: BTreeMap<String, u64>,
}

/// One condition a ready queue is in (`suspended`, `paused`), with why and since when.
#[derive(Debug, Clone)]
pub struct QueueCondition {
    pub name: String,
    pub context: String,
    pub since: SystemTime,
}

/// A ready queue as an operator sees it.
#[derive(Debug, Clone)]
pub struct ReadyQueueStatus {
    pub name: String,
    pub queued: usize,
    pub sessions: usize,
    pub conditions: Vec<QueueCondition>,
}

/// A spooled message as an operator sees it.
#[derive(Debug, Clone)]
pub struct MessageInfo {
    pub id: SpoolId,
    pub sender: String,
    pub recipients: Vec<String>,
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// The message bytes, when asked for.
    pub data: Option<Vec<u8>>,
    pub due: Option<SystemTime>,
    pub num_attempts: u32,
    /// `msg:set_scheduling`'s window, first attempt and expiry.
    pub scheduling: Option<crate::Scheduling>,
}

/// What a rebind asks (KumoMTA's `/api/admin/rebind/v1`): the messages of
/// the matching scheduled queues get `data` as meta (or are handed to the
/// `rebind_message` event with it) and go to the queue their meta now gives.
#[derive(Debug, Clone)]
pub struct RebindOrder {
    pub criteria: Criteria,
    pub data: BTreeMap<String, String>,
    pub reason: String,
    pub suppress_logging: bool,
    pub trigger_rebind_event: bool,
    /// Make every matched message due now, not only those that changed queue.
    pub always_flush: bool,
}

/// A rebind still moving messages in the background.
#[derive(Debug, Clone)]
pub struct RebindProgress {
    pub id: String,
    pub reason: String,
    /// How many waiting messages it took.
    pub matched: usize,
    /// How many of them have been moved (or put back) so far.
    pub done: usize,
}

/// A scheduled queue as `inspect-sched-q` shows it.
#[derive(Debug, Clone)]
pub struct ScheduledQueueInfo {
    pub name: String,
    /// How many of its messages wait (for a retry, a suspension, a route or
    /// a session).
    pub waiting: usize,
    /// A sample of them, at most the limit asked for.
    pub messages: Vec<MessageInfo>,
    /// The `get_queue_config` result in force, as JSON.
    pub config: serde_json::Value,
    /// When a message last looked the queue up.
    pub last_used: SystemTime,
}

/// A ready queue as `inspect-ready-q` shows it.
#[derive(Debug, Clone)]
pub struct ReadyQueueInfo {
    pub name: String,
    pub egress_source: String,
    pub egress_pool: String,
    /// The protocol label of the queue name (`smtp`, `maildir`, `lua:<constructor>`).
    pub protocol: String,
    pub queued: usize,
    pub sessions: usize,
    pub conditions: Vec<QueueCondition>,
    pub suspension: Option<ReadySuspension>,
    /// The egress path config in force (`null` until the first session asks for it).
    pub path_config: serde_json::Value,
    pub connection_limit: Option<usize>,
    /// The scheduled queues whose messages it holds, when asked for.
    pub scheduled_queues: Option<Vec<String>>,
    /// A sample of its messages, when a limit was given.
    pub messages: Option<Vec<MessageInfo>>,
}

/// How much of a queue `inspect-sched-q` / `inspect-ready-q` returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Most messages to include; `None` means all.
    pub limit: Option<usize>,
    pub want_body: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AdminError {
    #[error("no message {0} in the spool")]
    NotFound(SpoolId),
    #[error("no {kind} queue named {name:?}")]
    NoSuchQueue { kind: &'static str, name: String },
    #[error("cannot read message {id} from the spool: {reason}")]
    Spool { id: SpoolId, reason: String },
}

pub type InspectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<MessageInfo, AdminError>> + Send + 'a>>;
pub type ScheduledFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ScheduledQueueInfo, AdminError>> + Send + 'a>>;
pub type ReadyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ReadyQueueInfo, AdminError>> + Send + 'a>>;

/// What the admin API may do to the queues. Changes take effect at once;
/// a bounce's sweep of queued messages runs in the background.
pub trait Admin: Send + Sync {
    /// Hold matching scheduled queues for `duration`; returns the id.
    fn suspend(&self, criteria: Criteria, reason: String, duration: Duration) -> String;
    fn suspensions(&self) -> Vec<Suspension>;
    /// False when no such suspension is active.
    fn cancel_suspension(&self, id: &str) -> bool;

    /// Hold the sessions of the ready queue `name` for `duration`; returns the id.
    fn suspend_ready(&self, name: String, reason: String, duration: Duration) -> String;
    fn ready_suspensions(&self) -> Vec<ReadySuspension>;
    fn cancel_ready_suspension(&self, id: &str) -> bool;

    /// Bounce matching queued messages now, and new ones for `duration`.
    /// Returns the id and how many queued messages the sweep took (the
    /// CLI's progress bar counts up to it).
    fn bounce(
        &self,
        criteria: Criteria,
        reason: String,
        duration: Duration,
        suppress_logging: bool,
    ) -> (String, usize);
    fn bounces(&self) -> Vec<BounceRule>;
    fn cancel_bounce(&self, id: &str) -> bool;

    fn ready_queue_states(&self) -> Vec<ReadyQueueStatus>;
    fn inspect(&self, id: SpoolId, want_body: bool) -> InspectFuture<'_>;

    /// The names of the scheduled queues that exist now.
    fn scheduled_queue_names(&self) -> Vec<String>;
    /// Take the waiting messages of matching scheduled queues and rebind
    /// them in the background; returns its id and how many were taken.
    fn rebind(&self, order: RebindOrder) -> (String, usize);
    /// The rebinds still running; one leaves the list when it is done.
    fn rebinds(&self) -> Vec<RebindProgress>;
    fn inspect_scheduled(&self, name: String, sample: Sample) -> ScheduledFuture<'_>;
    /// `include_scheduled`: also name the scheduled queues that feed it.
    fn inspect_ready(
        &self,
        name: String,
        include_scheduled: bool,
        sample: Option<Sample>,
    ) -> ReadyFuture<'_>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criteria_match_by_fields_or_by_exact_queue_names() {
        let name = "camp:ten@Example.com!relay.example";
        let parts = QueueNameComponents::parse(name);
        let by_domain = Criteria {
            domain: Some("example.COM".into()),
            ..Default::default()
        };
        assert!(by_domain.matches(name, &parts));
        let wrong_tenant = Criteria {
            tenant: Some("other".into()),
            ..by_domain.clone()
        };
        assert!(!wrong_tenant.matches(name, &parts));
        let by_routing = Criteria {
            routing_domain: Some("relay.example".into()),
            ..Default::default()
        };
        assert!(by_routing.matches(name, &parts));
        let exact = Criteria {
            domain: Some("nomatch.example".into()),
            queue_names: vec![name.into()],
            ..Default::default()
        };
        assert!(
            exact.matches(name, &parts),
            "queue_names take precedence over the other fields"
        );
        assert!(Criteria::default().is_everything());
    }
}
