//! Why NATS parameters were refused or a connect or publish failed. The
//! texts are what policies see after `kumo.nats...:` and the target.

use hermod_policy::KeySourceError;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("`servers` must list at least one server")]
    NoServers,
    #[error("invalid server address '{server}': {error}")]
    InvalidServer {
        server: String,
        #[source]
        error: std::io::Error,
    },
    #[error("`client_cert` and `client_key` must be given together")]
    UnpairedClientCertificate,
    #[error("`client_capacity` must be greater than 0")]
    ZeroClientCapacity,
    #[error("auth: `username` and `password` must be given together")]
    UnpairedUsernamePassword,
    #[error("auth: use only one of `token`, `nkey`, `credentials`/`credentials_file`")]
    ConflictingAuth,
    #[error("auth: use either `credentials` or `credentials_file`, not both")]
    CredentialsTwice,
    #[error("cannot load credentials file '{path}': {error}")]
    CredentialsFile {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("invalid NATS credentials: {0}")]
    InvalidCredentials(#[source] std::io::Error),
    /// A secret's key source could not be read (names the file only).
    #[error(transparent)]
    Secret(#[from] KeySourceError),
    #[error(transparent)]
    Connect(#[from] async_nats::ConnectError),
    #[error("invalid header name '{0}'")]
    InvalidHeaderName(String),
    #[error("header '{0}' has a line break in its value")]
    HeaderLineBreak(String),
}
