//! Name resolution for outbound SMTP, with KumoMTA's semantics: MX resolution
//! into a [`MailExchanger`] (hosts by preference, the site name that groups
//! domains sharing MX hosts, null MX), address and TXT lookups, TTL caches,
//! a process-wide replaceable resolver (the system's hickory resolver by
//! default, zone text in tests) and the Lua module `kumo.dns`.
//!
//! Delivery calls [`resolve_mx`], checks [`MailExchanger::is_null_mx`], then
//! [`MailExchanger::resolve_addresses`] (or [`resolve_addrs`] per host). The
//! outcomes map onto delivery records as KumoMTA's do: a null MX (or
//! [`DnsError::NullMx`]) is a Bounce `556 5.1.10`; [`DnsError::NoAddresses`]
//! is a TransientFailure `451 4.4.4`; any other [`DnsError`] from
//! [`resolve_mx`] is a TransientFailure whose text names the domain and the
//! cause. Failed MX resolutions (timeouts included) are cached for the
//! negative-cache TTL, as KumoMTA caches them.
//!
//! Tests and policies that must not touch the network install zone text with
//! [`configure_test_resolver`] (process-wide) or give a [`TestResolver`] a
//! name with [`define_resolver`] and pass that name to the `*_via` functions.

mod addrs;
mod cache;
mod config;
mod error;
mod global;
mod hickory;
mod hickory_config;
mod lua;
mod mx;
mod resolver;
mod site_name;
#[cfg(test)]
mod test_support;
mod zone;

pub use addrs::{lookup_txt, lookup_txt_via, resolve_addrs, resolve_addrs_via, ResolvedAddress};
pub use error::DnsError;
pub use global::{
    configure_resolver, configure_test_resolver, define_resolver, set_mx_negative_cache_ttl,
    set_mx_timeout, DEFAULT_MX_NEGATIVE_CACHE_TTL, DEFAULT_MX_TIMEOUT,
};
pub use hickory::HickoryResolver;
pub use lua::register;
pub use mx::{resolve_mx, resolve_mx_via, MailExchanger};
pub use resolver::{fully_qualify, Answer, Resolver};
pub use site_name::site_name;
pub use zone::TestResolver;

/// hickory's record types, for implementing [`Resolver`].
pub use hickory_resolver::proto::rr::{Name, RData, RecordType};
