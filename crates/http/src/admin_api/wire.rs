//! The admin API's request bodies and query parameters, with KumoMTA's
//! field names. Unknown fields are refused so that a typo never turns a
//! narrow bounce into a wide one.

use std::collections::BTreeMap;

use hermod_message::admin::{Criteria, RebindOrder};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SuspendRequest {
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub campaign: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub routing_domain: Option<String>,
    #[serde(default)]
    pub queue_names: Vec<String>,
    pub reason: String,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub expires: Option<String>,
}

impl SuspendRequest {
    pub fn criteria(&self) -> Criteria {
        Criteria {
            domain: self.domain.clone(),
            campaign: self.campaign.clone(),
            tenant: self.tenant.clone(),
            routing_domain: self.routing_domain.clone(),
            queue_names: self.queue_names.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BounceRequest {
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub campaign: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub routing_domain: Option<String>,
    #[serde(default)]
    pub queue_names: Vec<String>,
    pub reason: String,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub suppress_logging: bool,
}

impl BounceRequest {
    pub fn criteria(&self) -> Criteria {
        Criteria {
            domain: self.domain.clone(),
            campaign: self.campaign.clone(),
            tenant: self.tenant.clone(),
            routing_domain: self.routing_domain.clone(),
            queue_names: self.queue_names.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadySuspendRequest {
    pub name: String,
    pub reason: String,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub expires: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelRequest {
    pub id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InspectQuery {
    pub id: String,
    #[serde(default)]
    pub want_body: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RebindRequest {
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub campaign: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub routing_domain: Option<String>,
    /// Hermod's addition, as for bounces: exact scheduled queue names.
    #[serde(default)]
    pub queue_names: Vec<String>,
    pub reason: String,
    #[serde(default)]
    pub suppress_logging: bool,
    /// String keys and values, as KumoMTA takes them.
    pub data: BTreeMap<String, String>,
    #[serde(default)]
    pub trigger_rebind_event: bool,
    #[serde(default)]
    pub always_flush: bool,
}

impl RebindRequest {
    pub fn into_order(self, reason: String) -> RebindOrder {
        RebindOrder {
            criteria: Criteria {
                domain: self.domain,
                campaign: self.campaign,
                tenant: self.tenant,
                routing_domain: self.routing_domain,
                queue_names: self.queue_names,
            },
            data: self.data,
            reason,
            suppress_logging: self.suppress_logging,
            trigger_rebind_event: self.trigger_rebind_event,
            always_flush: self.always_flush,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InspectSchedQuery {
    pub queue_name: String,
    #[serde(default)]
    pub want_body: bool,
    /// Absent: every message.
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InspectReadyQuery {
    pub queue_name: String,
    #[serde(default)]
    pub include_scheduled_queues: bool,
    /// Hermod's addition: a sample of this many messages (none when absent).
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub want_body: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogFilterRequest {
    pub filter: String,
}

/// The `queues` parameter of ready-q-states: repeated (`queues=a&queues=b`)
/// or comma-separated; any other parameter is refused.
pub(super) fn queues_param(query: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)?;
        if k != "queues" && k != "queues[]" {
            return Err(format!("unknown parameter `{k}`; expected `queues`"));
        }
        let v = percent_decode(v)?;
        out.extend(
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
    }
    Ok(out)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_parameter_takes_repeats_commas_and_escapes() {
        let q = queues_param("queues=a%2Db&queues=c,d+e").unwrap();
        assert_eq!(q, ["a-b", "c", "d e"]);
        assert!(queues_param("").unwrap().is_empty());
        assert!(queues_param("queue=x").unwrap_err().contains("`queue`"));
        assert!(queues_param("queues=%zz").is_err());
    }
}
