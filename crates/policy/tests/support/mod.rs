//! A policy file and its data files in a scratch directory, started by the
//! real engine: shared by the helper tests (extras.rs, listener_domains.rs).

use hermod_policy::{Engine, EngineOptions, PolicyError};

pub struct Policy {
    pub dir: tempfile::TempDir,
}

impl Policy {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Write `text` to `name` in the scratch directory; its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }

    pub async fn start(&self, src: &str) -> Result<std::sync::Arc<Engine>, PolicyError> {
        let path = self.file("policy.lua", src);
        Engine::start(EngineOptions::new(&path))
            .await
            .map(|(e, _)| e)
    }
}

/// The message a failed start reports (an event's own text, without the wrapper).
pub fn error_text(e: PolicyError) -> String {
    match e {
        PolicyError::Event { message, .. } => message,
        other => other.to_string(),
    }
}
