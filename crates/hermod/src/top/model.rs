//! What `hermod top` shows, computed from scrapes of `/metrics`: the totals
//! of one scrape ([`Totals::from_samples`]) and the rates between two
//! ([`Figures::between`]). No terminal here; `view.rs` draws the result.
//!
//! Families and labels are KumoMTA's (crates/metrics/src/lib.rs). KumoMTA
//! also exports per-protocol rollups (`service="smtp_client"`) beside the
//! per-queue series (`service="smtp_client:<queue>"`); only the per-queue
//! series (a `:` in the service) are summed, so a rollup is never counted
//! twice and this screen reads a KumoMTA server's metrics too.

use std::collections::BTreeMap;

use super::prom::Sample;

/// The inbound listener's service in `connection_count`.
const LISTENER: &str = "esmtp_listener";

/// A histogram's running count and sum.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HistTotals {
    pub count: f64,
    pub sum: f64,
}

/// One ready queue, keyed by its `service` label.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueTotals {
    pub ready: f64,
    pub connections: f64,
    pub delivered: f64,
    pub transfail: f64,
    pub fail: f64,
    pub paused: bool,
}

/// The figures of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub received: f64,
    pub delivered: f64,
    pub transfail: f64,
    pub fail: f64,
    pub scheduled: f64,
    pub ready: f64,
    pub messages: f64,
    pub connections_in: f64,
    pub connections_out: f64,
    /// Services of the ready queues that are paused.
    pub paused: Vec<String>,
    /// `broker_publish_latency` per broker.
    pub brokers: BTreeMap<String, HistTotals>,
    pub spool_fsync: HistTotals,
    /// `log_hook_backlog_count`, all hooks together.
    pub hook_backlog: f64,
    /// `log_queue_depth`: records waiting to be written or handed to a hook.
    pub log_queue_depth: f64,
    pub queues: BTreeMap<String, QueueTotals>,
}

fn per_queue(service: &str) -> bool {
    service.contains(':') && !service.starts_with(LISTENER)
}

impl Totals {
    pub fn from_samples(samples: &[Sample]) -> Totals {
        let mut t = Totals::default();
        for s in samples {
            let service = s.label("service").unwrap_or("");
            let queue = per_queue(service);
            let v = s.value;
            match s.name.as_str() {
                "total_messages_received" => t.received += v,
                "total_messages_delivered" if queue => {
                    t.delivered += v;
                    t.row(service).delivered += v;
                }
                "total_messages_transfail" if queue => {
                    t.transfail += v;
                    t.row(service).transfail += v;
                }
                "total_messages_fail" if queue => {
                    t.fail += v;
                    t.row(service).fail += v;
                }
                "ready_count" if queue => {
                    t.ready += v;
                    t.row(service).ready += v;
                }
                "connection_count" if service == LISTENER => t.connections_in += v,
                "connection_count" if queue => {
                    t.connections_out += v;
                    t.row(service).connections += v;
                }
                "ready_queue_paused" if v > 0.0 => {
                    t.paused.push(service.to_string());
                    if queue {
                        t.row(service).paused = true;
                    }
                }
                "scheduled_count" => t.scheduled += v,
                "message_count" => t.messages += v,
                "log_hook_backlog_count" => t.hook_backlog += v,
                "log_queue_depth" => t.log_queue_depth += v,
                "broker_publish_latency_count" => t.broker(s).count += v,
                "broker_publish_latency_sum" => t.broker(s).sum += v,
                "spool_fsync_latency_count" => t.spool_fsync.count += v,
                "spool_fsync_latency_sum" => t.spool_fsync.sum += v,
                _ => {}
            }
        }
        t
    }

    fn row(&mut self, service: &str) -> &mut QueueTotals {
        self.queues.entry(service.to_string()).or_default()
    }

    fn broker(&mut self, s: &Sample) -> &mut HistTotals {
        let name = s.label("broker").unwrap_or("?").to_string();
        self.brokers.entry(name).or_default()
    }
}

/// Events per second of a counter that went from `prev` to `cur` in
/// `secs`. A counter that went down was reset (the server restarted): what
/// it counts now all happened since the previous scrape.
pub fn per_second(prev: f64, cur: f64, secs: f64) -> Option<f64> {
    if secs.is_nan() || secs <= 0.0 || !prev.is_finite() || !cur.is_finite() {
        return None;
    }
    let delta = if cur < prev { cur } else { cur - prev };
    Some(delta / secs)
}

/// Mean seconds per observation between two readings of a histogram;
/// `None` when nothing was observed in between.
pub fn mean_between(prev: HistTotals, cur: HistTotals) -> Option<f64> {
    let (count, sum) = if cur.count < prev.count {
        (cur.count, cur.sum)
    } else {
        (cur.count - prev.count, cur.sum - prev.sum)
    };
    (count > 0.0).then(|| sum / count)
}

/// A broker's publishes in the last interval.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerFigures {
    pub name: String,
    pub per_second: Option<f64>,
    /// Mean latency over the interval, in seconds.
    pub mean: Option<f64>,
    pub total: f64,
}

/// A ready queue's row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueFigures {
    pub service: String,
    pub now: QueueTotals,
    pub delivered_per_second: Option<f64>,
    pub transfail_per_second: Option<f64>,
}

/// Everything the screen shows: the latest totals and, once there are two
/// scrapes, the rates between them (`None` until then).
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub now: Totals,
    pub received_per_second: Option<f64>,
    pub delivered_per_second: Option<f64>,
    pub transfail_per_second: Option<f64>,
    pub fail_per_second: Option<f64>,
    pub hook_backlog_per_second: Option<f64>,
    pub spool_fsync_mean: Option<f64>,
    pub brokers: Vec<BrokerFigures>,
    pub queues: Vec<QueueFigures>,
}

impl Figures {
    /// Figures of `now`, with rates against `prev` taken `secs` earlier.
    pub fn between(prev: Option<&Totals>, now: Totals, secs: f64) -> Figures {
        let rate = |f: fn(&Totals) -> f64| prev.and_then(|p| per_second(f(p), f(&now), secs));
        let brokers = now
            .brokers
            .iter()
            .map(|(name, h)| {
                let before = prev.and_then(|p| p.brokers.get(name)).copied();
                BrokerFigures {
                    name: name.clone(),
                    per_second: prev
                        .and_then(|_| per_second(before.unwrap_or_default().count, h.count, secs)),
                    mean: prev.and_then(|_| mean_between(before.unwrap_or_default(), *h)),
                    total: h.count,
                }
            })
            .collect();
        let mut queues: Vec<QueueFigures> = now
            .queues
            .iter()
            .map(|(service, q)| {
                let before = prev.map(|p| p.queues.get(service).cloned().unwrap_or_default());
                QueueFigures {
                    service: service.clone(),
                    now: q.clone(),
                    delivered_per_second: before
                        .as_ref()
                        .and_then(|b| per_second(b.delivered, q.delivered, secs)),
                    transfail_per_second: before
                        .as_ref()
                        .and_then(|b| per_second(b.transfail, q.transfail, secs)),
                }
            })
            .collect();
        // Busiest first: the deepest queues, then the fastest, then by name.
        queues.sort_by(|a, b| {
            b.now
                .ready
                .total_cmp(&a.now.ready)
                .then_with(|| {
                    let (x, y) = (
                        a.delivered_per_second.unwrap_or(0.0),
                        b.delivered_per_second.unwrap_or(0.0),
                    );
                    y.total_cmp(&x)
                })
                .then_with(|| a.service.cmp(&b.service))
        });
        Figures {
            received_per_second: rate(|t| t.received),
            delivered_per_second: rate(|t| t.delivered),
            transfail_per_second: rate(|t| t.transfail),
            fail_per_second: rate(|t| t.fail),
            hook_backlog_per_second: rate(|t| t.hook_backlog),
            spool_fsync_mean: prev.and_then(|p| mean_between(p.spool_fsync, now.spool_fsync)),
            brokers,
            queues,
            now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::prom::parse;
    use super::*;

    const SCRAPE: &str = r#"
total_messages_received{service="esmtp_listener"} 90
total_messages_received{service="http_listener"} 10
total_messages_delivered{service="smtp_client"} 999
total_messages_delivered{service="lua:unspecified->nats@lua:make.nats"} 60
total_messages_delivered{service="maildir:unspecified->a.example@maildir"} 40
total_messages_transfail{service="lua:unspecified->nats@lua:make.nats"} 3
total_messages_fail{service="maildir:unspecified->a.example@maildir"} 1
scheduled_count{queue="a.example"} 2
scheduled_count{queue="nats"} 1
ready_count{service="lua:unspecified->nats@lua:make.nats"} 5
connection_count{service="esmtp_listener"} 4
connection_count{service="lua:unspecified->nats@lua:make.nats"} 2
ready_queue_paused{service="lua:unspecified->nats@lua:make.nats"} 1
ready_queue_paused{service="maildir:unspecified->a.example@maildir"} 0
message_count 8
log_hook_backlog_count{logger="events"} 6
log_queue_depth 11
broker_publish_latency_sum{broker="nats"} 0.5
broker_publish_latency_count{broker="nats"} 100
spool_fsync_latency_sum 0.2
spool_fsync_latency_count 40
"#;

    fn totals(text: &str) -> Totals {
        Totals::from_samples(&parse(text).unwrap())
    }

    #[test]
    fn totals_sum_per_queue_series_and_leave_rollups_out() {
        let t = totals(SCRAPE);
        assert_eq!(t.received, 100.0);
        assert_eq!(t.delivered, 100.0, "the smtp_client rollup is not added");
        assert_eq!((t.transfail, t.fail), (3.0, 1.0));
        assert_eq!((t.scheduled, t.ready, t.messages), (3.0, 5.0, 8.0));
        assert_eq!((t.connections_in, t.connections_out), (4.0, 2.0));
        assert_eq!(t.paused, vec!["lua:unspecified->nats@lua:make.nats"]);
        assert_eq!((t.hook_backlog, t.log_queue_depth), (6.0, 11.0));
        assert_eq!(
            t.brokers["nats"],
            HistTotals {
                count: 100.0,
                sum: 0.5
            }
        );
        let nats = &t.queues["lua:unspecified->nats@lua:make.nats"];
        assert_eq!(
            (nats.ready, nats.connections, nats.delivered, nats.paused),
            (5.0, 2.0, 60.0, true)
        );
        assert!(!t.queues.contains_key("smtp_client"));
        assert!(!t.queues.contains_key("esmtp_listener"));
    }

    #[test]
    fn rates_are_the_change_per_second_and_survive_a_counter_reset() {
        assert_eq!(per_second(100.0, 150.0, 2.0), Some(25.0));
        assert_eq!(per_second(100.0, 100.0, 1.0), Some(0.0));
        // Restarted server: 30 counted since.
        assert_eq!(per_second(100.0, 30.0, 1.0), Some(30.0));
        assert_eq!(per_second(1.0, 2.0, 0.0), None);
        assert_eq!(per_second(1.0, f64::NAN, 1.0), None);
    }

    #[test]
    fn histogram_means_cover_only_the_interval() {
        let a = HistTotals {
            count: 10.0,
            sum: 1.0,
        };
        let b = HistTotals {
            count: 14.0,
            sum: 1.2,
        };
        let m = mean_between(a, b).unwrap();
        assert!((m - 0.05).abs() < 1e-9, "{m}");
        assert_eq!(mean_between(b, b), None);
    }

    #[test]
    fn the_first_scrape_has_totals_and_no_rates() {
        let f = Figures::between(None, totals(SCRAPE), 1.0);
        assert_eq!(f.now.delivered, 100.0);
        assert_eq!(f.delivered_per_second, None);
        assert_eq!(f.brokers[0].per_second, None);
        assert_eq!(f.queues[0].delivered_per_second, None);
    }

    #[test]
    fn a_second_scrape_gives_rates_overall_per_queue_and_per_broker() {
        let before = totals(SCRAPE);
        let after = totals(
            &SCRAPE
                .replace("make.nats\"} 60", "make.nats\"} 80")
                .replace("esmtp_listener\"} 90", "esmtp_listener\"} 110")
                .replace(
                    "latency_sum{broker=\"nats\"} 0.5",
                    "latency_sum{broker=\"nats\"} 0.7",
                )
                .replace(
                    "latency_count{broker=\"nats\"} 100",
                    "latency_count{broker=\"nats\"} 120",
                ),
        );
        let f = Figures::between(Some(&before), after, 2.0);
        assert_eq!(f.received_per_second, Some(10.0));
        assert_eq!(f.delivered_per_second, Some(10.0));
        assert_eq!(f.fail_per_second, Some(0.0));
        let nats = &f.brokers[0];
        assert_eq!((nats.name.as_str(), nats.per_second), ("nats", Some(10.0)));
        assert!((nats.mean.unwrap() - 0.01).abs() < 1e-9);
        // The deepest queue comes first.
        assert_eq!(f.queues[0].service, "lua:unspecified->nats@lua:make.nats");
        assert_eq!(f.queues[0].delivered_per_second, Some(10.0));
        assert_eq!(f.queues[1].delivered_per_second, Some(0.0));
    }

    #[test]
    fn a_queue_that_appears_between_scrapes_counts_from_zero() {
        let before = totals("");
        let after =
            totals("total_messages_delivered{service=\"maildir:unspecified->b@maildir\"} 5\n");
        let f = Figures::between(Some(&before), after, 1.0);
        assert_eq!(f.queues[0].delivered_per_second, Some(5.0));
        assert_eq!(f.delivered_per_second, Some(5.0));
    }
}
