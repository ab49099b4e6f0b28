//! The producers' librdkafka context. It logs librdkafka's client errors
//! as rdkafka's default context does, and also keeps the last one, so a
//! record that timed out waiting for a broker it could not use fails with
//! the reason (a certificate that did not verify, SASL credentials the
//! broker refused, a refused connection) instead of only "Message timed out".
//! librdkafka reports an identical broker error only once per 30 s, so the
//! reason is kept until a record is delivered rather than for a time.

use std::sync::Arc;

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Clones share one slot: the producer owns one, the pool keeps another to
/// read it.
#[derive(Clone, Default)]
pub struct BrokerErrors(Arc<Mutex<Option<String>>>);

impl BrokerErrors {
    /// librdkafka's last client error since a record was last delivered.
    pub fn last(&self) -> Option<String> {
        self.0.lock().clone()
    }

    /// A record was delivered: what failed before no longer explains
    /// a later timeout.
    pub fn delivered(&self) {
        let mut last = self.0.lock();
        if last.is_some() {
            *last = None;
        }
    }
}

impl ClientContext for BrokerErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}");
        // "N/N brokers are down" follows the error that took the last
        // broker down and says less; keep that one.
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::AllBrokersDown) {
            *self.0.lock() = Some(reason.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_reason_until_a_delivery_and_ignores_all_brokers_down() {
        let errors = BrokerErrors::default();
        let reader = errors.clone();
        errors.error(
            KafkaError::Global(RDKafkaErrorCode::SSL),
            "ssl://b:9093/bootstrap: SSL handshake failed: certificate verify failed",
        );
        errors.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(
            reader.last().as_deref(),
            Some("ssl://b:9093/bootstrap: SSL handshake failed: certificate verify failed")
        );
        reader.delivered();
        assert_eq!(errors.last(), None);
    }
}
