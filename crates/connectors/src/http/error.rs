//! Why an HTTP client could not be built or a request argument was refused.

use hermod_policy::duration::DurationError;

#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error(transparent)]
    Build(reqwest::Error),
    #[error(transparent)]
    Duration(#[from] DurationError),
    #[error("expected a duration, got {0}")]
    NotADuration(&'static str),
}
