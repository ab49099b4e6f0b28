//! The retry schedule (KumoMTA's queue config semantics): exponential backoff from
//! `retry_interval`, capped by `max_retry_interval`, with jitter, and the
//! `max_age` expiry check made at the same moment.

use std::time::{Duration, SystemTime};

use hermod_message::Scheduling;

/// Backoff step `k`: `min(retry_interval × 2^k, max_retry_interval)` in whole seconds.
pub fn step(retry_interval: Duration, max_retry_interval: Option<Duration>, k: u32) -> Duration {
    let base = retry_interval.as_secs();
    let factor = 1u64.checked_shl(k).unwrap_or(u64::MAX);
    let secs = base.saturating_mul(factor);
    let secs = match max_retry_interval {
        Some(cap) => secs.min(cap.as_secs()),
        None => secs,
    };
    Duration::from_secs(secs)
}

/// Jitter in whole seconds for uniform `u` in [0, 1): `u·m − m/2` with
/// `m = min(retry_interval_secs / 20, 60)`, truncated toward zero.
pub fn jitter(retry_interval: Duration, u: f64) -> i64 {
    let m = (retry_interval.as_secs_f64() / 20.0).min(60.0);
    (u * m - m / 2.0).trunc() as i64
}

/// Why a message expires instead of waiting for another attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// The next attempt would come later than the queue's `max_age` allows.
    MaxAge { next: SystemTime, max_age: Duration },
    /// The next attempt would come at or after the message's own `expires`
    /// (`msg:set_scheduling`), which replaces `max_age` for it.
    Scheduled {
        next: SystemTime,
        expires: SystemTime,
    },
}

/// What happens to a message after a transient failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again at `due`; `attempts` is the new attempt count.
    Retry {
        due: SystemTime,
        attempts: u32,
    },
    Expire(Expiry),
}

/// The queue config's retry settings.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub retry_interval: Duration,
    pub max_retry_interval: Option<Duration>,
    pub max_age: Duration,
}

/// Whether the message may wait until `next` or expires: its own `expires`
/// when scheduling sets one (KumoMTA: then `max_age` does not apply), else
/// the queue's `max_age` counted from `created`.
pub fn expiry(
    next: SystemTime,
    created: SystemTime,
    max_age: Duration,
    scheduling: Option<&Scheduling>,
) -> Option<Expiry> {
    match scheduling.and_then(Scheduling::expires_at) {
        Some(expires) => (next >= expires).then_some(Expiry::Scheduled { next, expires }),
        None => (next.duration_since(created).unwrap_or_default() > max_age)
            .then_some(Expiry::MaxAge { next, max_age }),
    }
}

/// Decide after a failure, given the attempt count before it: back off,
/// move the time into the message's scheduling window, then check expiry.
pub fn after_failure(
    b: Backoff,
    attempts_before: u32,
    created: SystemTime,
    now: SystemTime,
    scheduling: Option<&Scheduling>,
    u: f64,
) -> RetryDecision {
    let s = step(b.retry_interval, b.max_retry_interval, attempts_before).as_secs() as i64;
    let delay = Duration::from_secs((s + jitter(b.retry_interval, u)).max(0) as u64);
    let wanted = now.checked_add(delay).unwrap_or(now);
    let next = scheduling.map_or(wanted, |sc| sc.adjust(wanted));
    match expiry(next, created, b.max_age, scheduling) {
        Some(e) => RetryDecision::Expire(e),
        None => RetryDecision::Retry {
            due: next,
            attempts: attempts_before.saturating_add(1),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M20: Duration = Duration::from_secs(1200);

    #[test]
    fn steps_double_without_a_cap() {
        assert_eq!(step(M20, None, 0), M20);
        assert_eq!(step(M20, None, 1), Duration::from_secs(2400));
        assert_eq!(step(M20, None, 3), Duration::from_secs(9600));
    }

    #[test]
    fn steps_are_capped_by_max_retry_interval() {
        let one = Duration::from_secs(60);
        let cap = Some(Duration::from_secs(1200));
        let mins: Vec<u64> = (0..7).map(|k| step(one, cap, k).as_secs() / 60).collect();
        assert_eq!(mins, vec![1, 2, 4, 8, 16, 20, 20]);
    }

    #[test]
    fn huge_exponents_saturate_instead_of_overflowing() {
        assert_eq!(step(M20, None, 200), Duration::from_secs(u64::MAX));
        assert_eq!(step(M20, Some(M20), 200), M20);
    }

    #[test]
    fn jitter_is_within_half_of_m_either_side() {
        // m = min(1200/20, 60) = 60 → jitter in [-30, 30)
        assert_eq!(jitter(M20, 0.0), -30);
        assert_eq!(jitter(M20, 0.5), 0);
        assert_eq!(jitter(M20, 0.999), 29);
        // 60 s interval: m = 3 → [-1.5, 1.5) truncated
        assert_eq!(jitter(Duration::from_secs(60), 0.0), -1);
    }

    fn backoff(max_age: u64) -> Backoff {
        Backoff {
            retry_interval: M20,
            max_retry_interval: None,
            max_age: Duration::from_secs(max_age),
        }
    }

    fn at(text: &str) -> SystemTime {
        chrono::DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    fn sched(v: serde_json::Value) -> Scheduling {
        Scheduling::from_json(&v).unwrap().unwrap()
    }

    #[test]
    fn a_failure_counts_one_attempt_and_backs_off() {
        let now = SystemTime::now();
        let d = after_failure(backoff(7 * 86400), 2, now, now, None, 0.5);
        assert_eq!(
            d,
            RetryDecision::Retry {
                due: now + Duration::from_secs(4800),
                attempts: 3
            }
        );
    }

    #[test]
    fn a_retry_past_max_age_expires() {
        let now = SystemTime::now();
        let created = now - Duration::from_secs(3000);
        let d = after_failure(backoff(3600), 0, created, now, None, 0.5);
        assert_eq!(
            d,
            RetryDecision::Expire(Expiry::MaxAge {
                next: now + M20,
                max_age: Duration::from_secs(3600)
            })
        );
    }

    #[test]
    fn a_retry_outside_the_window_waits_for_its_next_opening() {
        // Monday 2024-06-03 16:50 UTC; 20 minutes later the window has closed.
        let now = at("2024-06-03T16:50:00Z");
        let s = sched(serde_json::json!({
            "dow": "Mon,Tue", "tz": "Etc/UTC", "start": "09:00:00", "end": "17:00:00"}));
        let d = after_failure(backoff(7 * 86400), 0, now, now, Some(&s), 0.5);
        assert_eq!(
            d,
            RetryDecision::Retry {
                due: at("2024-06-04T09:00:00Z"),
                attempts: 1
            }
        );
    }

    #[test]
    fn a_messages_own_expires_replaces_max_age() {
        let now = at("2024-06-03T12:00:00Z");
        let created = now - Duration::from_secs(86400);
        let s = sched(serde_json::json!({"expires": "2024-06-03T12:10:00Z"}));
        assert_eq!(
            after_failure(backoff(3600), 0, created, now, Some(&s), 0.5),
            RetryDecision::Expire(Expiry::Scheduled {
                next: at("2024-06-03T12:20:00Z"),
                expires: at("2024-06-03T12:10:00Z")
            })
        );
        // Older than max_age, but its own expiry is far off.
        let s = sched(serde_json::json!({"expires": "2024-06-10T00:00:00Z"}));
        assert!(matches!(
            after_failure(backoff(3600), 0, created, now, Some(&s), 0.5),
            RetryDecision::Retry { .. }
        ));
    }
}
