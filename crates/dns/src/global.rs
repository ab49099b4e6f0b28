//! The process-wide resolver state, as KumoMTA keeps it: the resolver in use
//! (the system's until a policy configures another), the named resolvers of
//! `define_resolver`, the MX and address caches, and the MX settings.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use hickory_resolver::proto::rr::Name;
use parking_lot::{Mutex, RwLock};

use crate::cache::TtlCache;
use crate::error::DnsError;
use crate::hickory::HickoryResolver;
use crate::mx::MailExchanger;
use crate::resolver::{Resolver, Unavailable};

/// KumoMTA's default limit on one MX resolution.
pub const DEFAULT_MX_TIMEOUT: Duration = Duration::from_secs(5);
/// KumoMTA's default lifetime of a cached MX resolution failure.
pub const DEFAULT_MX_NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(300);

/// KumoMTA's MX cache size.
const MX_CACHE_CAPACITY: usize = 64 * 1024;
const ADDR_CACHE_CAPACITY: usize = 64 * 1024;

pub(crate) type MxResult = Result<Arc<MailExchanger>, DnsError>;
pub(crate) type AddrResult = Result<Arc<[IpAddr]>, DnsError>;

#[derive(Clone, Copy)]
struct MxSettings {
    timeout: Duration,
    negative_ttl: Duration,
}

/// One complete resolver state. The process has one ([`global`]); tests build
/// their own so that they can run in parallel.
pub(crate) struct Dns {
    /// `None` until first use: building the system resolver reads
    /// `/etc/resolv.conf`, which a policy that configures its own never needs.
    default: RwLock<Option<Arc<dyn Resolver>>>,
    named: RwLock<HashMap<String, Arc<dyn Resolver>>>,
    settings: Mutex<MxSettings>,
    pub(crate) mx_cache: TtlCache<Name, MxResult>,
    pub(crate) addr_cache: TtlCache<Name, AddrResult>,
}

impl Dns {
    pub(crate) fn new(default: Option<Arc<dyn Resolver>>) -> Self {
        Dns {
            default: RwLock::new(default),
            named: RwLock::new(HashMap::new()),
            settings: Mutex::new(MxSettings {
                timeout: DEFAULT_MX_TIMEOUT,
                negative_ttl: DEFAULT_MX_NEGATIVE_CACHE_TTL,
            }),
            mx_cache: TtlCache::new(MX_CACHE_CAPACITY),
            addr_cache: TtlCache::new(ADDR_CACHE_CAPACITY),
        }
    }

    /// The resolver in use, building the system one on first use.
    pub(crate) fn resolver(&self) -> Arc<dyn Resolver> {
        if let Some(r) = self.default.read().as_ref() {
            return r.clone();
        }
        let mut slot = self.default.write();
        slot.get_or_insert_with(system_resolver).clone()
    }

    /// Replace the resolver in use. Cached answers of the previous one are
    /// dropped: a policy that points Hermod at other servers (or at test
    /// zones) means their answers from then on.
    pub(crate) fn set_resolver(&self, resolver: Arc<dyn Resolver>) {
        *self.default.write() = Some(resolver);
        self.mx_cache.clear();
        self.addr_cache.clear();
    }

    pub(crate) fn define(&self, name: &str, resolver: Arc<dyn Resolver>) {
        self.named.write().insert(name.to_string(), resolver);
    }

    /// The resolver called `name`, or the default one for `None`.
    pub(crate) fn pick(&self, name: Option<&str>) -> Result<Arc<dyn Resolver>, DnsError> {
        match name {
            None => Ok(self.resolver()),
            Some(n) => self.named(n),
        }
    }

    pub(crate) fn named(&self, name: &str) -> Result<Arc<dyn Resolver>, DnsError> {
        self.named
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| DnsError::UnknownResolver(name.to_string()))
    }

    pub(crate) fn mx_timeout(&self) -> Duration {
        self.settings.lock().timeout
    }

    pub(crate) fn set_mx_timeout(&self, timeout: Duration) {
        self.settings.lock().timeout = timeout;
    }

    pub(crate) fn mx_negative_ttl(&self) -> Duration {
        self.settings.lock().negative_ttl
    }

    pub(crate) fn set_mx_negative_ttl(&self, ttl: Duration) {
        self.settings.lock().negative_ttl = ttl;
    }
}

fn system_resolver() -> Arc<dyn Resolver> {
    match HickoryResolver::from_system() {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::error!("DNS resolution is unavailable: {e}");
            Arc::new(Unavailable(e.to_string()))
        }
    }
}

static GLOBAL: LazyLock<Dns> = LazyLock::new(|| Dns::new(None));

pub(crate) fn global() -> &'static Dns {
    &GLOBAL
}

/// Use `resolver` for every lookup that names no resolver (replacing the
/// system resolver, or an earlier `configure_resolver`), and forget what the
/// previous one answered.
pub fn configure_resolver(resolver: Arc<dyn Resolver>) {
    global().set_resolver(resolver);
}

/// Register `resolver` under `name` for lookups that name it (the optional
/// resolver argument of `kumo.dns.lookup_*`). Redefining a name replaces it.
pub fn define_resolver(name: &str, resolver: Arc<dyn Resolver>) {
    global().define(name, resolver);
}

/// Limit one MX resolution to `timeout` (default 5 s).
pub fn set_mx_timeout(timeout: Duration) {
    global().set_mx_timeout(timeout);
}

/// How long a failed MX resolution is remembered (default 5 minutes).
pub fn set_mx_negative_cache_ttl(ttl: Duration) {
    global().set_mx_negative_ttl(ttl);
}

/// Serve every lookup from `zones` (zone-file text) from now on, as
/// `kumo.dns.configure_test_resolver` does.
pub fn configure_test_resolver<S: AsRef<str>>(zones: &[S]) -> Result<(), DnsError> {
    let resolver = crate::zone::TestResolver::from_zones(zones)?;
    configure_resolver(Arc::new(resolver));
    Ok(())
}
