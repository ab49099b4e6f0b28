//! One-label metric families with cached handles. Label values are few
//! (services, queues, events), so a read-locked map lookup is cheap and
//! callers on hot paths can keep the returned handle.

use std::collections::BTreeMap;

use parking_lot::RwLock;

pub(crate) struct Labelled<M> {
    pub name: &'static str,
    pub help: &'static str,
    pub label: &'static str,
    make: fn() -> M,
    /// Ordered so that scrapes list label values in a stable order.
    map: RwLock<BTreeMap<String, M>>,
}

impl<M: Clone> Labelled<M> {
    pub fn new(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        make: fn() -> M,
    ) -> Self {
        Self {
            name,
            help,
            label,
            make,
            map: RwLock::new(BTreeMap::new()),
        }
    }

    pub fn get(&self, value: &str) -> M {
        if let Some(m) = self.map.read().get(value) {
            return m.clone();
        }
        self.map
            .write()
            .entry(value.to_string())
            .or_insert_with(self.make)
            .clone()
    }

    /// Drop a label value (e.g. a reaped queue) so it stops being reported.
    /// Handles still held elsewhere keep working but are no longer exported.
    pub fn remove(&self, value: &str) -> bool {
        self.map.write().remove(value).is_some()
    }

    pub fn snapshot(&self) -> Vec<(String, M)> {
        self.map
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
