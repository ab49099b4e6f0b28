//! The retry schedule (KumoMTA's queue config semantics): exponential backoff from
//! `retry_interval`, capped by `max_retry_interval`, with jitter, and the
//! `max_age` expiry check made at the same moment.

use std::time::Duration;

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

/// What happens to a message after a transient failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after `delay`; `attempts` is the new attempt count.
    Retry { delay: Duration, attempts: u32 },
    /// The next attempt would exceed `max_age`.
    Expire { next_delay: Duration },
}

/// Decide after a failure, given the attempt count before it and the message age.
pub fn after_failure(
    retry_interval: Duration,
    max_retry_interval: Option<Duration>,
    max_age: Duration,
    attempts_before: u32,
    age: Duration,
    u: f64,
) -> RetryDecision {
    let s = step(retry_interval, max_retry_interval, attempts_before).as_secs() as i64;
    let delay = Duration::from_secs((s + jitter(retry_interval, u)).max(0) as u64);
    if age + delay > max_age {
        RetryDecision::Expire { next_delay: delay }
    } else {
        RetryDecision::Retry {
            delay,
            attempts: attempts_before.saturating_add(1),
        }
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

    #[test]
    fn a_failure_counts_one_attempt_and_backs_off() {
        let d = after_failure(
            M20,
            None,
            Duration::from_secs(7 * 86400),
            2,
            Duration::ZERO,
            0.5,
        );
        assert_eq!(
            d,
            RetryDecision::Retry {
                delay: Duration::from_secs(4800),
                attempts: 3
            }
        );
    }

    #[test]
    fn a_retry_past_max_age_expires() {
        let d = after_failure(
            M20,
            None,
            Duration::from_secs(3600),
            0,
            Duration::from_secs(3000),
            0.5,
        );
        assert_eq!(d, RetryDecision::Expire { next_delay: M20 });
    }
}
