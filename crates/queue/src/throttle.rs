//! `max_message_rate` and `max_connection_rate` of an egress path, in this process (GCRA, the
//! `governor` crate). A rate written with the `local:` prefix means the same here; rates shared
//! between nodes are not built yet.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hermod_policy::ThrottleSpec;

/// One rate limit, shared by every session of a ready queue.
pub struct Throttle {
    spec: ThrottleSpec,
    limiter: DefaultDirectRateLimiter,
}

impl Throttle {
    pub fn new(spec: ThrottleSpec) -> Arc<Self> {
        let burst = spec.max_burst.unwrap_or(spec.limit).max(1);
        let burst =
            NonZeroU32::new(u32::try_from(burst).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        // `interval` is never zero for a parsed spec; `with_period` refuses zero.
        let quota = Quota::with_period(spec.interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Arc::new(Throttle {
            spec,
            limiter: RateLimiter::direct(quota),
        })
    }

    pub fn spec(&self) -> &ThrottleSpec {
        &self.spec
    }

    /// Let one event through if it fits the rate now, without waiting.
    pub fn admit_now(&self) -> bool {
        self.limiter.check().is_ok()
    }

    /// Wait until one more event fits the rate.
    pub async fn wait(&self) {
        self.limiter.until_ready().await;
    }

    /// [`Throttle::wait`], but give up after `max`: a slow rate must not hold
    /// a connection open for minutes. False when it gave up.
    pub async fn wait_at_most(&self, max: std::time::Duration) -> bool {
        tokio::time::timeout(max, self.limiter.until_ready())
            .await
            .is_ok()
    }
}

/// Keep `current` when it already enforces `spec`, so a config refresh does not
/// reset a rate's state; else make a new one (or none).
pub fn refreshed(
    current: Option<Arc<Throttle>>,
    spec: Option<ThrottleSpec>,
) -> Option<Arc<Throttle>> {
    match (current, spec) {
        (Some(t), Some(s)) if *t.spec() == s => Some(t),
        (_, Some(s)) => Some(Throttle::new(s)),
        (_, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_rate_lets_its_burst_through_then_spaces_events_by_its_interval() {
        let spec = ThrottleSpec::parse("10/s,max_burst=2").unwrap();
        let t = Throttle::new(spec);
        let start = Instant::now();
        for _ in 0..6 {
            t.wait().await;
        }
        // Two at once, then four more 100 ms apart.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(350), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn a_refresh_with_the_same_rate_keeps_the_limiter() {
        let spec = ThrottleSpec::parse("5/min").unwrap();
        let t = Throttle::new(spec);
        let same = refreshed(Some(t.clone()), Some(spec)).unwrap();
        assert!(Arc::ptr_eq(&t, &same));
        let other = ThrottleSpec::parse("6/min").unwrap();
        assert!(!Arc::ptr_eq(
            &t,
            &refreshed(Some(t.clone()), Some(other)).unwrap()
        ));
        assert!(refreshed(Some(t), None).is_none());
    }
}
