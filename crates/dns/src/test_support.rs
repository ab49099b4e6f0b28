//! Test doubles shared by the unit tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use hickory_resolver::proto::rr::{Name, RecordType};
use parking_lot::Mutex;

use crate::error::DnsError;
use crate::global::Dns;
use crate::resolver::{Answer, Resolver};
use crate::zone::TestResolver;

/// A resolver state of its own (not the process-wide one) serving `zones`.
pub(crate) fn dns(zones: &[&str]) -> Dns {
    Dns::new(Some(Arc::new(zones_resolver(zones))))
}

pub(crate) fn zones_resolver(zones: &[&str]) -> TestResolver {
    TestResolver::from_zones(zones).expect("test zones parse")
}

/// Serves one set of zones, then another after [`Switchable::switch`]: how
/// the TTL tests change "the DNS" under a cache. Counts the questions asked.
pub(crate) struct Switchable {
    current: Mutex<Arc<TestResolver>>,
    pub(crate) queries: AtomicUsize,
}

impl Switchable {
    pub(crate) fn new(zones: &[&str]) -> Arc<Self> {
        Arc::new(Switchable {
            current: Mutex::new(Arc::new(zones_resolver(zones))),
            queries: AtomicUsize::new(0),
        })
    }

    pub(crate) fn switch(&self, zones: &[&str]) {
        *self.current.lock() = Arc::new(zones_resolver(zones));
    }

    pub(crate) fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Resolver for Switchable {
    fn lookup<'a>(
        &'a self,
        name: &'a Name,
        rtype: RecordType,
    ) -> BoxFuture<'a, Result<Answer, DnsError>> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let current = self.current.lock().clone();
        Box::pin(async move { current.lookup(name, rtype).await })
    }
}

/// A server that never answers.
pub(crate) struct Silent;

impl Resolver for Silent {
    fn lookup<'a>(
        &'a self,
        _name: &'a Name,
        _rtype: RecordType,
    ) -> BoxFuture<'a, Result<Answer, DnsError>> {
        Box::pin(futures::future::pending())
    }
}
