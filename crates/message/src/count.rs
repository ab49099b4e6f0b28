//! `message_count`: how many messages the process holds. A [`Message`]
//! counts once however many clones share it; a message waiting in a queue as
//! its spool id alone (crates/queue/src/held.rs) holds a [`Counted`] of its
//! own, so a backlog counts whether or not its messages are in memory.
//!
//! [`Message`]: crate::Message

use std::sync::atomic::{AtomicI64, Ordering};

static HELD: AtomicI64 = AtomicI64::new(0);

/// One held message for as long as the value lives.
#[derive(Debug)]
pub struct Counted(());

impl Counted {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        HELD.fetch_add(1, Ordering::Relaxed);
        Counted(())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Messages held now.
pub fn message_count() -> u64 {
    u64::try_from(HELD.load(Ordering::Relaxed)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_value_is_held_until_it_is_dropped() {
        // Other tests in this process create messages concurrently, so
        // compare against a value read with this one alive.
        let a = Counted::new();
        let with = HELD.load(Ordering::Relaxed);
        assert!(with >= 1);
        drop(a);
        assert!(message_count() < u64::MAX);
    }
}
