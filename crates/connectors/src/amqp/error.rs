//! Why an AMQP connect, property conversion or publish failed. The texts
//! are what policies see after `kumo.amqp...:` and the target.

use std::time::Duration;

use lapin::types::ShortStringError;

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("connect timed out after {}s", .0.as_secs())]
    ConnectTimeout(Duration),
    #[error("connect failed: {0}")]
    Connect(#[source] lapin::Error),
    #[error("cannot open channel: {0}")]
    OpenChannel(#[source] lapin::Error),
    #[error("cannot enable publisher confirms: {0}")]
    ConfirmSelect(#[source] lapin::Error),
    #[error(transparent)]
    Publish(lapin::Error),
    #[error("no confirmation from the broker within {}s", .0.as_secs_f64())]
    ConfirmTimeout(Duration),
    #[error("confirmation failed: {0}")]
    Confirmation(#[source] lapin::Error),
    /// An exchange or routing key over AMQP's 255-byte limit.
    #[error("{field}: {error}")]
    TooLong {
        field: &'static str,
        #[source]
        error: ShortStringError,
    },
    /// A property (or a header name) over AMQP's 255-byte limit.
    #[error("property `{property}`: {error}")]
    PropertyTooLong {
        property: &'static str,
        #[source]
        error: ShortStringError,
    },
    #[error("delivery_mode must be 1 (transient) or 2 (persistent), got {0}")]
    DeliveryMode(u8),
    #[error("`client_cert` and `client_private_key` must be given together")]
    UnpairedClientCertificate,
    #[error("`root_ca_cert`, `client_cert` and `client_private_key` need `enable_tls = true`")]
    TlsFilesWithoutTls,
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
