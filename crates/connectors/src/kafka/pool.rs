//! Process-wide sharing of librdkafka producers. A librdkafka producer owns
//! threads, sockets and buffers, and policies commonly build a producer per
//! message, so producers built with identical properties share one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

use super::context::BrokerErrors;
use super::KafkaError;

/// A shared producer that no handle has used for this long is dropped
/// (librdkafka flushes and closes its connections).
pub const IDLE_DROP: Duration = Duration::from_secs(300);

type Key = Vec<(String, String)>;

/// One librdkafka producer and the broker errors its context reported.
pub struct SharedProducer {
    pub producer: FutureProducer<BrokerErrors>,
    pub broker_errors: BrokerErrors,
}

struct Entry {
    producer: Arc<SharedProducer>,
    last_used: Instant,
}

fn pool() -> &'static Mutex<HashMap<Key, Entry>> {
    static POOL: OnceLock<Mutex<HashMap<Key, Entry>>> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

static CREATED: AtomicU64 = AtomicU64::new(0);

/// How many librdkafka producers this process has created.
pub fn producers_created() -> u64 {
    CREATED.load(Ordering::Relaxed)
}

/// Properties as librdkafka gets them: the policy's, plus
/// `enable.idempotence=true` unless the policy decided about idempotence or
/// chose an `acks` level that is incompatible with it.
pub fn effective_properties(props: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut props = props;
    let acks_all = props
        .get("acks")
        .or_else(|| props.get("request.required.acks"))
        .map(|a| a == "all" || a == "-1")
        .unwrap_or(true);
    if acks_all && !props.contains_key("enable.idempotence") {
        props.insert("enable.idempotence".into(), "true".into());
    }
    props
}

/// The shared producer for these (effective) properties, creating it if
/// needed. Creation runs on the blocking pool: librdkafka starts threads
/// and parses its configuration synchronously.
pub async fn producer(props: &BTreeMap<String, String>) -> Result<Arc<SharedProducer>, KafkaError> {
    let key: Key = props.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if let Some(p) = touch(&key) {
        return Ok(p);
    }
    let mut config = ClientConfig::new();
    for (k, v) in props {
        config.set(k, v);
    }
    let broker_errors = BrokerErrors::default();
    let context = broker_errors.clone();
    let producer = tokio::task::spawn_blocking(move || config.create_with_context(context))
        .await
        .map_err(KafkaError::CreationTask)?
        .map_err(KafkaError::InvalidConfiguration)?;
    let producer = Arc::new(SharedProducer {
        producer,
        broker_errors,
    });
    let mut pool = pool().lock();
    evict_idle(&mut pool);
    // Another task may have created one meanwhile; keep the first so every
    // handle shares it, and let ours drop.
    let entry = pool.entry(key).or_insert_with(|| {
        CREATED.fetch_add(1, Ordering::Relaxed);
        Entry {
            producer,
            last_used: Instant::now(),
        }
    });
    entry.last_used = Instant::now();
    Ok(entry.producer.clone())
}

fn touch(key: &Key) -> Option<Arc<SharedProducer>> {
    let mut pool = pool().lock();
    let entry = pool.get_mut(key)?;
    entry.last_used = Instant::now();
    Some(entry.producer.clone())
}

/// Record use of a shared producer (keeps it from idle eviction).
pub fn mark_used(props: &BTreeMap<String, String>) {
    let key: Key = props.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    touch(&key);
}

fn evict_idle(pool: &mut HashMap<Key, Entry>) {
    pool.retain(|_, e| Arc::strong_count(&e.producer) > 1 || e.last_used.elapsed() < IDLE_DROP);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn idempotence_is_on_by_default_but_respects_the_policy() {
        let p = effective_properties(props(&[("bootstrap.servers", "x")]));
        assert_eq!(
            p.get("enable.idempotence").map(String::as_str),
            Some("true")
        );
        let p = effective_properties(props(&[("enable.idempotence", "false")]));
        assert_eq!(
            p.get("enable.idempotence").map(String::as_str),
            Some("false")
        );
        // acks=1 is incompatible with idempotence; do not turn a valid config into an invalid one.
        let p = effective_properties(props(&[("acks", "1")]));
        assert!(!p.contains_key("enable.idempotence"));
        let p = effective_properties(props(&[("acks", "all")]));
        assert_eq!(
            p.get("enable.idempotence").map(String::as_str),
            Some("true")
        );
    }

    #[tokio::test]
    async fn an_unknown_property_is_an_invalid_configuration() {
        let e = producer(&props(&[("no.such.property", "x")]))
            .await
            .err()
            .expect("librdkafka accepted an unknown property");
        assert!(matches!(e, KafkaError::InvalidConfiguration(_)), "{e}");
        assert!(
            e.to_string()
                .starts_with("invalid producer configuration: "),
            "{e}"
        );
    }

    #[test]
    fn a_missing_delivery_report_names_the_wait() {
        assert_eq!(
            KafkaError::NoDeliveryReport(Duration::from_secs(90)).to_string(),
            "no delivery report within 1m 30s"
        );
    }
}
