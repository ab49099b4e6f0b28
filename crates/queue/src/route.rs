//! Where an SMTP queue's mail goes (ARCHITECTURE.md, step 6): the site (the domain's MX hosts,
//! or the queue's `mx_list`), the egress pool's sources, and one ready queue
//! `<source>-><site_name>@smtp` per source. Domains whose MX hosts are the same share a site,
//! and so a ready queue and its connections.
//!
//! Resolving takes DNS and Lua calls, so a scheduled queue whose route is missing or expired
//! parks its due messages and resolves once; they move on when the answer is in. A null MX
//! bounces them; a failed lookup retries them on their schedule.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hermod_dns::{DnsError, MailExchanger};
use hermod_logging::{EnhancedCode, Response};
use hermod_message::Protocol;
use hermod_policy::{
    EgressPool, EgressSource, MxListEntry, ProtocolConfig, QueueConfig, SourceSelector,
};
use parking_lot::Mutex;

use crate::egress::{self, EgressConfigError};
use crate::held::{self, Queued};
use crate::manager::QueueManager;
use crate::outcome::{self, AttemptInfo};
use crate::ready::{EgressPathKey, ReadyQueue};
use crate::resolve::ScheduledQueue;

/// The hosts an SMTP ready queue connects to.
#[derive(Debug, Clone)]
pub enum SmtpHosts {
    /// The domain's MX hosts (or the domain itself when it has no MX).
    Mx(Arc<MailExchanger>),
    /// The queue's `mx_list`, tried in the order written.
    List(Vec<MxListEntry>),
}

/// One host address to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The host name the address stands for (log records' `peer_address.name`).
    pub name: String,
    pub addr: IpAddr,
    /// A port the `mx_list` entry names; else the source's or the path's.
    pub port: Option<u16>,
}

impl SmtpHosts {
    /// Every address to try, most preferred first. An entry whose name does
    /// not resolve is skipped; none at all is [`DnsError::NoAddresses`].
    pub async fn candidates(&self, domain: &str) -> Result<Vec<Candidate>, DnsError> {
        match self {
            SmtpHosts::Mx(mx) => Ok(mx
                .resolve_addresses()
                .await?
                .into_iter()
                .map(|a| Candidate {
                    name: a.name.trim_end_matches('.').to_string(),
                    addr: a.addr,
                    port: None,
                })
                .collect()),
            SmtpHosts::List(entries) => {
                let mut out = Vec::new();
                let mut failures = Vec::new();
                for entry in entries {
                    match entry {
                        // The address is the name TLS verifies and records show: the
                        // written form may carry a port or brackets.
                        MxListEntry::Literal { addr, port, .. } => out.push(Candidate {
                            name: addr.to_string(),
                            addr: *addr,
                            port: *port,
                        }),
                        MxListEntry::Resolved {
                            name, addr, port, ..
                        } => out.push(Candidate {
                            name: name.clone(),
                            addr: *addr,
                            port: *port,
                        }),
                        MxListEntry::Host { name, port } => {
                            match hermod_dns::resolve_addrs(name).await {
                                Ok(addrs) => out.extend(addrs.iter().map(|a| Candidate {
                                    name: name.clone(),
                                    addr: *a,
                                    port: *port,
                                })),
                                Err(e) => failures.push(format!("{name}: {e}")),
                            }
                        }
                    }
                }
                if out.is_empty() {
                    return Err(DnsError::NoAddresses {
                        domain: domain.to_string(),
                        detail: failures.join("; "),
                    });
                }
                Ok(out)
            }
        }
    }
}

/// What an SMTP ready queue needs to connect: its hosts and its source.
#[derive(Debug)]
pub struct SmtpTarget {
    /// The domain the hosts were found for (for error texts).
    pub domain: String,
    pub hosts: SmtpHosts,
    pub source: EgressSource,
}

/// A scheduled queue's resolved SMTP route.
pub(crate) struct SmtpRoute {
    pub site: String,
    pub hosts: SmtpHosts,
    /// The queue config the route was found for: a changed `mx_list` or
    /// `egress_pool` needs a new route.
    config: Arc<QueueConfig>,
    /// The pool's sources, in turn by weight.
    selector: Mutex<SourceSelector>,
    /// Source configs by pool entry name, fetched once per route.
    sources: Vec<(String, EgressSource)>,
    expires: Option<Instant>,
    /// The ready queue of each source, once made.
    pub ready: Mutex<Vec<(String, Arc<crate::ready::ReadyQueue>)>>,
}

/// A route is kept at least this long, whatever the MX answer's TTL: a zero
/// TTL must not mean a DNS and Lua round trip per message.
const MIN_ROUTE_TTL: Duration = Duration::from_secs(60);

impl SmtpRoute {
    pub(crate) fn is_fresh(&self, cfg: &Arc<QueueConfig>) -> bool {
        Arc::ptr_eq(&self.config, cfg) && self.expires.is_none_or(|e| e > Instant::now())
    }

    /// The source the next message leaves from (weighted round robin).
    pub(crate) fn next_source(&self) -> Option<&EgressSource> {
        let mut sel = self.selector.lock();
        let name = sel.next_source()?;
        self.sources
            .iter()
            .find(|(entry, _)| entry == name)
            .map(|(_, s)| s)
    }
}

/// The parked messages and the route of one scheduled queue.
#[derive(Default)]
pub(crate) struct RouteState {
    pub route: Option<Arc<SmtpRoute>>,
    pub parked: Vec<Queued>,
    pub resolving: bool,
    /// A refresh failed with a temporary error: the expired route is used
    /// until then rather than deferring the whole domain.
    pub stale_until: Option<Instant>,
}

/// Why no route could be found; each becomes the parked messages' outcome.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RouteError {
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[error(transparent)]
    Egress(#[from] EgressConfigError),
    #[error("egress pool '{0}' has no source with a weight above 0")]
    EmptyPool(String),
}

impl RouteError {
    /// The record for every message that was waiting for this route: a null
    /// MX is permanent, anything else is retried on the schedule.
    pub(crate) fn response(&self) -> (Response, bool) {
        let enhanced = |class, subject, detail| {
            Some(EnhancedCode {
                class,
                subject,
                detail,
            })
        };
        match self {
            RouteError::Dns(DnsError::NullMx { .. }) => (
                Response::new(556, enhanced(5, 1, 10), &self.to_string()),
                true,
            ),
            _ => (
                Response::new(451, enhanced(4, 4, 4), &self.to_string()),
                false,
            ),
        }
    }
}

/// Resolve the route of a scheduled queue whose protocol is SMTP.
pub(crate) async fn resolve(
    engine: &Arc<hermod_policy::Engine>,
    domain: &str,
    config: Arc<QueueConfig>,
) -> Result<SmtpRoute, RouteError> {
    let (site, hosts, expires) = match &config.protocol {
        ProtocolConfig::SmtpWith(p) if !p.mx_list.is_empty() => {
            let labels: Vec<String> = p.mx_list.iter().map(MxListEntry::label).collect();
            (
                hermod_dns::site_name(&labels),
                SmtpHosts::List(p.mx_list.clone()),
                None,
            )
        }
        _ => {
            let mx = hermod_dns::resolve_mx(domain).await?;
            if mx.is_null_mx() {
                return Err(DnsError::NullMx {
                    domain: domain.to_string(),
                }
                .into());
            }
            let floor = Instant::now() + MIN_ROUTE_TTL;
            let expires = mx.expires().map(|e| e.into_std().max(floor));
            (mx.site_name.clone(), SmtpHosts::Mx(mx), expires)
        }
    };
    let pool: EgressPool = egress::fetch_pool(engine, &config.egress_pool).await?;
    let mut sources = Vec::with_capacity(pool.entries.len());
    for entry in pool.entries.iter().filter(|e| e.weight > 0) {
        let source = egress::fetch_source(engine, &entry.name).await?;
        sources.push((entry.name.clone(), source));
    }
    if sources.is_empty() {
        return Err(RouteError::EmptyPool(pool.name.clone()));
    }
    Ok(SmtpRoute {
        site,
        hosts,
        config,
        selector: Mutex::new(SourceSelector::new(&pool)),
        sources,
        expires,
        ready: Mutex::new(Vec::new()),
    })
}

/// The `site` and protocol of the records of messages that never reached a
/// ready queue.
pub(crate) fn unrouted_info(domain: &str, pool: &str) -> AttemptInfo {
    AttemptInfo {
        site: String::new(),
        peer: None,
        delivery_protocol: Protocol::Esmtp,
        session_id: uuid::Uuid::new_v4().to_string(),
        service: format!("smtp_client:{domain}"),
        egress_pool: pool.to_string(),
        egress_source: String::new(),
        tls: None,
    }
}

impl QueueManager {
    /// An SMTP message goes to the ready queue of its site and of the next
    /// source of its pool; without a usable route it waits for one.
    pub(crate) fn to_ready_smtp(&self, entry: Queued) {
        let sq = entry.queue.clone();
        let cfg = sq.config();
        let route = {
            let mut st = sq.smtp.lock();
            let stale_ok = st.stale_until.is_some_and(|t| t > Instant::now());
            match &st.route {
                Some(r)
                    if !st.resolving
                        && (r.is_fresh(&cfg) || (stale_ok && Arc::ptr_eq(&r.config, &cfg))) =>
                {
                    r.clone()
                }
                _ => {
                    // A domain whose route takes long (a slow DNS server)
                    // gathers its messages here: beyond a few, they wait as ids.
                    let entry = if st.parked.len() >= held::RECORD_CHUNK {
                        entry.park()
                    } else {
                        entry
                    };
                    st.parked.push(entry);
                    if !std::mem::replace(&mut st.resolving, true) {
                        drop(st);
                        self.resolve_route(sq);
                    }
                    return;
                }
            }
        };
        self.place_smtp(entry, &route);
    }

    /// Queue `entry` on `route`, whatever its age (it was just resolved, or
    /// is the best there is).
    fn place_smtp(&self, mut entry: Queued, route: &Arc<SmtpRoute>) {
        loop {
            let Some(source) = route.next_source() else {
                // `resolve` refuses a pool without sources, so this is a bug:
                // wait for a new route rather than spin.
                tracing::error!(queue = %entry.queue.name, "SMTP route has no source");
                let sq = entry.queue.clone();
                let mut st = sq.smtp.lock();
                st.route = None;
                st.parked.push(entry);
                return;
            };
            let rq = self.smtp_ready_queue(&entry.queue, route, source);
            match rq.push(entry) {
                Ok(()) => return self.maybe_start_sessions(&rq),
                // Reaped since the lookup: the next lookup makes its successor.
                Err(back) => entry = back,
            }
        }
    }

    fn smtp_ready_queue(
        &self,
        sq: &ScheduledQueue,
        route: &SmtpRoute,
        source: &EgressSource,
    ) -> Arc<ReadyQueue> {
        if let Some((_, rq)) = route
            .ready
            .lock()
            .iter()
            .find(|(s, rq)| *s == source.name && !rq.is_retired())
        {
            return rq.clone();
        }
        let name = format!("{}->{}@smtp", source.name, route.site);
        let target = Arc::new(SmtpTarget {
            domain: sq.components.site_domain().to_string(),
            hosts: route.hosts.clone(),
            source: source.clone(),
        });
        let rq = {
            let mut g = self.0.ready.lock();
            match g.get(&name) {
                Some(rq) => rq.clone(),
                None => {
                    let path = EgressPathKey {
                        routing_domain: sq.components.site_domain().to_string(),
                        source: source.name.clone(),
                        site: route.site.clone(),
                    };
                    let cfg = sq.config();
                    let rq = Arc::new(ReadyQueue::new(
                        name.clone(),
                        path,
                        cfg.egress_pool.clone(),
                        cfg.protocol.clone(),
                    ));
                    rq.set_admin_hold(self.0.admin.ready_hold(&name));
                    g.insert(name, rq.clone());
                    rq
                }
            }
        };
        // A newer route (the MX answer's TTL ran out) brings fresh addresses.
        rq.set_smtp_target(target);
        let mut cached = route.ready.lock();
        cached.retain(|(s, _)| *s != source.name);
        cached.push((source.name.clone(), rq.clone()));
        rq
    }

    /// Find the route of an SMTP queue, then move its parked messages on; when
    /// there is none, they bounce (null MX) or are retried on their schedule.
    fn resolve_route(&self, sq: Arc<ScheduledQueue>) {
        let qm = self.clone();
        self.0.tasks.spawn(async move {
            let cfg = sq.config();
            let domain = sq.components.site_domain().to_string();
            let found = resolve(&qm.0.engine, &domain, cfg.clone()).await;
            let (parked, usable) = {
                let mut st = sq.smtp.lock();
                st.resolving = false;
                let usable = match &found {
                    Ok(_) => None,
                    // A temporary failure to refresh keeps the old route a while.
                    Err(e) if !e.response().1 => st
                        .route
                        .clone()
                        .filter(|r| Arc::ptr_eq(&r.config, &cfg))
                        .inspect(|_| {
                            st.stale_until = Some(Instant::now() + MIN_ROUTE_TTL);
                        }),
                    Err(_) => None,
                };
                let usable = match found {
                    Ok(r) => {
                        tracing::debug!(queue = %sq.name, site = %r.site, "SMTP route resolved");
                        let r = Arc::new(r);
                        st.route = Some(r.clone());
                        st.stale_until = None;
                        Ok(r)
                    }
                    Err(e) => match usable {
                        Some(stale) => {
                            tracing::warn!(queue = %sq.name, error = %e,
                                "SMTP route refresh failed; the previous route is used for now");
                            Ok(stale)
                        }
                        None => Err(e),
                    },
                };
                (std::mem::take(&mut st.parked), usable)
            };
            match usable {
                Ok(route) => {
                    // A bounce or suspension may have begun while they waited
                    // for the route: they pass the operators' gate again.
                    for e in parked.into_iter().filter_map(|e| qm.admin_gate(e)) {
                        qm.place_smtp(e, &route);
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %sq.name, error = %e, "no SMTP route");
                    let (resp, permanent) = e.response();
                    let info = unrouted_info(&domain, &cfg.egress_pool);
                    let rec = &qm.0.recorder;
                    for chunk in held::chunks(parked) {
                        for p in held::load_for_records(rec, chunk).await {
                            if permanent {
                                outcome::bounced(rec, p.message, &p.queue, &info, resp.clone())
                                    .await;
                            } else {
                                outcome::transient(
                                    rec,
                                    p.message,
                                    p.queue,
                                    &info,
                                    resp.clone(),
                                    None,
                                )
                                .await;
                            }
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mx_list_candidates_keep_their_written_order_and_ports() {
        let hosts = SmtpHosts::List(vec![
            MxListEntry::parse("[127.0.0.9]:2525").unwrap(),
            MxListEntry::parse("10.0.0.1").unwrap(),
        ]);
        let c = hosts.candidates("example.com").await.unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].addr, "127.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(c[0].port, Some(2525));
        assert_eq!(c[1].port, None);
    }

    #[test]
    fn a_null_mx_bounces_and_other_routing_failures_are_retried() {
        let null = RouteError::Dns(DnsError::NullMx {
            domain: "example.com".into(),
        });
        let (resp, permanent) = null.response();
        assert!(permanent);
        assert_eq!(resp.code, 556);
        let timeout = RouteError::Dns(DnsError::Timeout {
            name: "example.com".into(),
            rtype: "MX",
        });
        let (resp, permanent) = timeout.response();
        assert!(!permanent);
        assert_eq!(resp.code, 451);
        assert!(resp.content.contains("example.com"), "{}", resp.content);
    }
}
