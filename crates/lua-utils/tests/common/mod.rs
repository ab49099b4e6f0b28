//! A policy file run by the real engine with this crate's functions, for
//! the tests of each module.
//!
//! Handlers whose errors must name their line write `return (kumo.f())`:
//! a plain `return kumo.f()` is a tail call, which removes the handler's
//! frame from the stack, so no function could tell where it was called.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hermod_policy::mlua::FromLua;
use hermod_policy::{CallError, Engine, EngineOptions};

pub struct Policy {
    pub engine: Arc<Engine>,
    /// The policy file, as errors name it.
    pub path: String,
    dir: tempfile::TempDir,
}

fn options(dir: &Path, src: &str) -> (EngineOptions, PathBuf) {
    let path = dir.join("policy.lua");
    std::fs::write(&path, src).expect("writing the policy");
    let mut opts = EngineOptions::new(&path);
    opts.registrars = vec![hermod_lua_utils::register];
    (opts, path)
}

/// Load `src` (which may refer to `@DIR@`, replaced by a scratch directory
/// the policy may read and write) and run its start-up events.
pub async fn load(src: &str) -> Policy {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = src.replace("@DIR@", dir.path().to_str().expect("utf-8 tempdir"));
    let (opts, path) = options(dir.path(), &src);
    let engine = match Engine::start(opts).await {
        Ok((engine, _)) => engine,
        Err(e) => panic!("policy failed to start: {e}"),
    };
    Policy {
        engine,
        path: path.display().to_string(),
        dir,
    }
}

/// Load a policy whose start-up must fail; the error's text and the
/// policy's path.
pub async fn load_err(src: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = src.replace("@DIR@", dir.path().to_str().expect("utf-8 tempdir"));
    let (opts, path) = options(dir.path(), &src);
    match Engine::start(opts).await {
        Ok(_) => panic!("policy started but should have failed"),
        Err(e) => (e.to_string(), path.display().to_string()),
    }
}

impl Policy {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Call `event` (no arguments); it must succeed and return a value.
    pub async fn call<T: FromLua>(&self, event: &str) -> T {
        match self.engine.call::<T>(event, ()).await {
            Ok(Some(v)) => v,
            Ok(None) => panic!("event {event} has no handler"),
            Err(e) => panic!("event {event} failed: {e}"),
        }
    }

    /// Call `event`; it must fail. The error text.
    pub async fn call_err(&self, event: &str) -> String {
        match self
            .engine
            .call::<hermod_policy::mlua::Value>(event, ())
            .await
        {
            Ok(_) => panic!("event {event} succeeded but should have failed"),
            Err(CallError::Lua(msg)) => msg,
            Err(e) => panic!("event {event} failed with {e}, not a Lua error"),
        }
    }
}
