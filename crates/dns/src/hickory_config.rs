//! Translating a policy's [`DnsResolverConfig`] into hickory's configuration.

use std::net::SocketAddr;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ProtocolConfig, ResolveHosts,
    ResolverConfig, ResolverOpts, ServerOrderingStrategy as HickoryOrdering,
};

use crate::config::{
    DnsResolverConfig, IpStrategy, NameServer, Protocol, ResolverOptions, ServerOrderingStrategy,
    UseHostsFile,
};
use crate::error::DnsError;
use crate::hickory::HickoryResolver;
use crate::resolver::fully_qualify;

pub(crate) fn build(config: &DnsResolverConfig) -> Result<HickoryResolver, DnsError> {
    let (resolver_config, options) = translate(config)?;
    HickoryResolver::from_config(resolver_config, options)
}

pub(crate) fn translate(
    config: &DnsResolverConfig,
) -> Result<(ResolverConfig, ResolverOpts), DnsError> {
    if config.name_servers.is_empty() {
        return Err(DnsError::Config(
            "name_servers must list at least one server".to_string(),
        ));
    }
    let mut resolver_config = ResolverConfig::default();
    if let Some(domain) = &config.domain {
        resolver_config.set_domain(fully_qualify(domain).map_err(config_error("domain"))?);
    }
    for search in &config.search {
        resolver_config.add_search(fully_qualify(search).map_err(config_error("search"))?);
    }
    for server in &config.name_servers {
        resolver_config.add_name_server(name_server(server)?);
    }
    let mut options = ResolverOpts::default();
    apply_options(&mut options, &config.options)?;
    Ok((resolver_config, options))
}

fn config_error(field: &'static str) -> impl Fn(DnsError) -> DnsError {
    move |e| DnsError::Config(format!("{field}: {e}"))
}

fn name_server(server: &NameServer) -> Result<NameServerConfig, DnsError> {
    let (addr, protocol, trust_negative, bind) = match server {
        NameServer::Simple(addr) => (addr.as_str(), Protocol::default(), true, None),
        NameServer::Detailed(d) => (
            d.socket_addr.as_str(),
            d.protocol,
            d.trust_negative_responses,
            d.bind_addr.as_deref(),
        ),
    };
    let addr: SocketAddr = addr.parse().map_err(|e| {
        DnsError::Config(format!(
            "name server {addr:?} is not an 'IP:PORT' address: {e}"
        ))
    })?;
    let bind = bind
        .map(|b| {
            b.parse::<SocketAddr>().map_err(|e| {
                DnsError::Config(format!(
                    "bind_addr {b:?} of name server {addr} is not an 'IP:PORT' address: {e}"
                ))
            })
        })
        .transpose()?;
    let connection = |protocol: ProtocolConfig| {
        let mut c = ConnectionConfig::new(protocol);
        c.port = addr.port();
        c.bind_addr = bind;
        c
    };
    let connections = match protocol {
        Protocol::Udp => vec![connection(ProtocolConfig::Udp)],
        Protocol::Tcp => vec![connection(ProtocolConfig::Tcp)],
        Protocol::UdpThenTcp => vec![
            connection(ProtocolConfig::Udp),
            connection(ProtocolConfig::Tcp),
        ],
    };
    Ok(NameServerConfig::new(
        addr.ip(),
        trust_negative,
        connections,
    ))
}

fn apply_options(o: &mut ResolverOpts, k: &ResolverOptions) -> Result<(), DnsError> {
    if k.validate == Some(true) || k.trust_anchor_file.is_some() {
        return Err(DnsError::Config(
            "DNSSEC validation (validate, trust_anchor_file) is not available in Hermod"
                .to_string(),
        ));
    }
    set(&mut o.ndots, k.ndots);
    set(&mut o.timeout, k.timeout);
    set(&mut o.attempts, k.attempts);
    set(&mut o.edns0, k.edns0);
    set(&mut o.cache_size, k.cache_size);
    set(&mut o.num_concurrent_reqs, k.num_concurrent_reqs);
    set(&mut o.preserve_intermediates, k.preserve_intermediates);
    set(&mut o.try_tcp_on_error, k.try_tcp_on_error);
    set(&mut o.recursion_desired, k.recursion_desired);
    set(&mut o.case_randomization, k.case_randomization);
    set(&mut o.positive_min_ttl, k.positive_min_ttl.map(Some));
    set(&mut o.negative_min_ttl, k.negative_min_ttl.map(Some));
    set(&mut o.positive_max_ttl, k.positive_max_ttl.map(Some));
    set(&mut o.negative_max_ttl, k.negative_max_ttl.map(Some));
    if let Some(s) = k.ip_strategy {
        o.ip_strategy = match s {
            IpStrategy::Ipv4Only => LookupIpStrategy::Ipv4Only,
            IpStrategy::Ipv6Only => LookupIpStrategy::Ipv6Only,
            IpStrategy::Ipv4AndIpv6 => LookupIpStrategy::Ipv4AndIpv6,
            IpStrategy::Ipv6AndIpv4 => LookupIpStrategy::Ipv6AndIpv4,
            IpStrategy::Ipv6thenIpv4 => LookupIpStrategy::Ipv6thenIpv4,
            IpStrategy::Ipv4thenIpv6 => LookupIpStrategy::Ipv4thenIpv6,
        };
    }
    if let Some(h) = k.use_hosts_file {
        o.use_hosts_file = match h {
            UseHostsFile::Always => ResolveHosts::Always,
            UseHostsFile::Auto => ResolveHosts::Auto,
            UseHostsFile::Never => ResolveHosts::Never,
        };
    }
    if let Some(s) = k.server_ordering_strategy {
        o.server_ordering_strategy = match s {
            ServerOrderingStrategy::QueryStatistics => HickoryOrdering::QueryStatistics,
            ServerOrderingStrategy::RoundRobin => HickoryOrdering::RoundRobin,
            ServerOrderingStrategy::UserProvidedOrder => HickoryOrdering::UserProvidedOrder,
        };
    }
    Ok(())
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}
