//! Per-message scheduling in the queue (`msg:set_scheduling`; the window
//! arithmetic lives in crates/message/src/scheduling.rs). A message is
//! attempted only once its due time has come and its scheduling allows it.
//! That is checked where a message enters the queue (reception, start-up)
//! and again where a session takes it from a ready queue, since a backlog can
//! outlast a window. A message that may not go yet waits in the timer until
//! its window opens, without using an attempt; one whose next chance falls at
//! or after its own `expires` expires (retries check the same in
//! crates/queue/src/retry.rs).

use std::sync::Arc;
use std::time::SystemTime;

use hermod_logging::{RecordType, Response};
use hermod_message::{Message, Scheduling};

use crate::outcome::{self, Recorder};
use crate::resolve::ScheduledQueue;
use crate::retry::Expiry;

/// What the message's due time and scheduling allow at `now`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    Now,
    Later(SystemTime),
    Expired(Expiry),
}

pub(crate) fn gate(msg: &Message, now: SystemTime) -> Gate {
    let due = msg.due().map_or(now, |d| d.max(now));
    let sched = msg.scheduling();
    let next = sched.as_ref().map_or(due, |s| s.adjust(due));
    if let Some(expires) = sched.as_ref().and_then(Scheduling::expires_at) {
        if next >= expires {
            return Gate::Expired(Expiry::Scheduled { next, expires });
        }
    }
    if next > now {
        Gate::Later(next)
    } else {
        Gate::Now
    }
}

/// Whether a message a session took may be attempted now. One that may not
/// goes back to the timer (or expires) and `false` is returned.
pub(crate) async fn admit(rec: &Recorder, msg: &Message, sq: &Arc<ScheduledQueue>) -> bool {
    if msg.scheduling().is_none() {
        return true;
    }
    match gate(msg, SystemTime::now()) {
        Gate::Now => true,
        Gate::Later(at) => {
            tracing::debug!(id = %msg.id(), queue = %sq.name, "outside its scheduling window; waiting");
            msg.set_due(Some(at));
            rec.to_timer(msg.clone(), sq.clone(), at);
            false
        }
        Gate::Expired(why) => {
            outcome::expire(rec, msg.clone(), sq, why).await;
            false
        }
    }
}

/// The Delayed record of a message received for later delivery (KumoMTA's
/// wording).
pub(crate) async fn log_delayed(
    rec: &Recorder,
    msg: &Message,
    sq: &ScheduledQueue,
    at: SystemTime,
) {
    let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
    let wait = std::time::Duration::from_secs(wait.as_secs());
    let content = format!(
        "Context: Received, ScheduledForLater. Next due in {} at {}",
        humantime::format_duration(wait),
        chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339()
    );
    let ev = outcome::event(
        RecordType::Delayed,
        msg,
        &sq.name,
        None,
        Response::new(400, None, &content),
        None,
    );
    rec.logger.log(ev).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermod_message::{EnvelopeAddress, SpoolId};
    use std::time::Duration;

    fn msg() -> Message {
        Message::new(
            SpoolId::new(),
            EnvelopeAddress::parse("a@example.com").unwrap(),
            vec![EnvelopeAddress::parse("b@example.com").unwrap()],
            Default::default(),
            &b"Subject: x\r\n\r\nbody"[..],
        )
    }

    fn sched(v: serde_json::Value) -> Option<Scheduling> {
        Scheduling::from_json(&v).unwrap()
    }

    fn rfc3339(t: SystemTime) -> String {
        chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()
    }

    #[test]
    fn a_message_without_scheduling_goes_when_due() {
        let m = msg();
        let now = SystemTime::now();
        assert_eq!(gate(&m, now), Gate::Now);
        m.set_due(Some(now + Duration::from_secs(60)));
        assert_eq!(gate(&m, now), Gate::Later(now + Duration::from_secs(60)));
    }

    #[test]
    fn a_closed_window_waits_for_its_opening_and_an_open_one_goes() {
        let now = SystemTime::now();
        let m = msg();
        let first = rfc3339(now + Duration::from_secs(3600));
        m.set_scheduling(sched(serde_json::json!({ "first_attempt": first })));
        assert_eq!(gate(&m, now), Gate::Later(m.due().unwrap()));
        let open = msg();
        open.set_scheduling(sched(serde_json::json!({
            "dow": "Mon,Tue,Wed,Thu,Fri,Sat,Sun", "tz": "Etc/UTC",
            "start": "00:00:00", "end": "23:59:59.999"})));
        // Unless the test runs in the day's last millisecond.
        assert_eq!(gate(&open, SystemTime::now()), Gate::Now);
    }

    #[test]
    fn a_window_that_opens_only_after_expires_expires() {
        let now = SystemTime::now();
        let m = msg();
        m.set_scheduling(sched(serde_json::json!({
            "first_attempt": rfc3339(now + Duration::from_secs(7200)),
            "expires": rfc3339(now + Duration::from_secs(3600)),
        })));
        assert!(matches!(
            gate(&m, now),
            Gate::Expired(Expiry::Scheduled { .. })
        ));
    }
}
