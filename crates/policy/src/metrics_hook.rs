//! Counters the metrics endpoint reads. The policy crate does not depend on
//! the metrics crate; the binary installs an observer for event latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

static LOADS: AtomicU64 = AtomicU64::new(0);
type Observer = fn(&str, Duration);
static OBSERVER: OnceLock<Observer> = OnceLock::new();

pub(crate) fn context_loaded() {
    LOADS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn event_latency(event: &str, d: Duration) {
    if let Some(f) = OBSERVER.get() {
        f(event, d);
    }
}

/// How many Lua contexts have been loaded since start (`lua_load_count`).
pub fn lua_load_count() -> u64 {
    LOADS.load(Ordering::Relaxed)
}

/// Install the observer for `lua_event_latency{event}`; first caller wins.
pub fn set_event_latency_observer(f: Observer) {
    let _ = OBSERVER.set(f);
}
