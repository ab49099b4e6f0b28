//! Log records, local zstd log segments, log hooks and `logs tail`.
//!
//! Producers build a [`LogEvent`] and call [`Logger::log`]; the logger turns
//! it into one [`LogRecord`] per configured local logger / log hook.

pub mod bounce;
pub mod config;
pub mod hook;
mod line;
mod logger;
pub mod record;
mod rejection;
mod segment;
mod select;
pub mod tail;
mod tap;
mod template;

use std::path::PathBuf;

pub use bounce::{BounceClassifier, ClassifierError};
pub use config::{register, ConfigError, LocalLogConfig, LogHookConfig, PerRecordConfig};
pub use hook::{build_hook_message, hook_line, HookPermit, HookSink};
pub use logger::{LogEvent, Logger};
pub use record::{EnhancedCode, LogRecord, PeerAddress, RecordType, Response};
pub use tail::{tail, tail_until, TailOptions};
pub use tap::{RecordTap, TAP_CAPACITY};
pub use template::TemplateError;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid log configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("a log hook named {0:?} is configured more than once")]
    DuplicateHook(String),
    #[error("the log hook sink is already set")]
    HookSinkAlreadySet,
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}
