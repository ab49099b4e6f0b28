use hermod_message::SpoolId;

/// Why a spool operation failed. `Clone` because one failed group commit
/// is reported to every request that was part of it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O error: {0}")]
    Io(String),
    /// The disk is (nearly) full: a write hit ENOSPC, or free space/inodes
    /// are below the configured minimum.
    #[error("spool is full: {0}")]
    Full(String),
    #[error("corrupt spool entry {id}: {reason}")]
    Corrupt { id: String, reason: String },
    #[error("message {0} is not in the spool")]
    NotFound(SpoolId),
    #[error("the spool has been shut down")]
    Closed,
    #[error("invalid spool configuration: {0}")]
    Config(String),
    /// The message cannot be stored as it is (e.g. dirty data that is not loaded).
    #[error("cannot spool message {id}: {reason}")]
    Message { id: SpoolId, reason: String },
}

impl SpoolError {
    /// Classify a RocksDB failure; ENOSPC becomes `Full` so that callers can
    /// answer with a temporary failure rather than a generic I/O error.
    pub(crate) fn from_rocks(context: &str, err: rocksdb::Error) -> Self {
        let text = err.into_string();
        if is_no_space(&text) {
            SpoolError::Full(format!("{context}: {text}"))
        } else {
            SpoolError::Io(format!("{context}: {text}"))
        }
    }

    pub(crate) fn from_io(context: &str, err: std::io::Error) -> Self {
        if err.raw_os_error() == Some(libc::ENOSPC) || err.raw_os_error() == Some(libc::EDQUOT) {
            SpoolError::Full(format!("{context}: {err}"))
        } else {
            SpoolError::Io(format!("{context}: {err}"))
        }
    }
}

fn is_no_space(text: &str) -> bool {
    // RocksDB reports ENOSPC as an IOError with sub-code NoSpace; the OS text
    // is what survives into the C API's error string.
    text.contains("No space left") || text.contains("NoSpace") || text.contains("no space")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_io_errors_are_classified_as_full() {
        let e = SpoolError::from_io("write", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(e, SpoolError::Full(_)), "{e:?}");
        let e = SpoolError::from_io("write", std::io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(e, SpoolError::Io(_)), "{e:?}");
    }

    #[test]
    fn rocks_no_space_text_is_recognised() {
        assert!(is_no_space(
            "IO error: No space left on device: While appending to file"
        ));
        assert!(!is_no_space("Corruption: bad block"));
    }
}
