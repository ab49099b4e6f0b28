//! The `maildir_path` protocol: each message becomes a file written to
//! `tmp/`, fsynced, then renamed into `new/` (the Maildir delivery rule);
//! `new/` is fsynced once per batch before any of it counts as delivered. A batch that
//! writes nothing because of I/O errors counts against the destination's health.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use hermod_logging::Response;
use hermod_message::Protocol;
use hermod_policy::queue_config::MaildirConfig;

use super::{Attempt, Batching, Dispatcher, Health, Outcome, Outcomes};
use crate::ready::{Entry, ReadyQueue};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Why a message was not written to its maildir. `Clone`, with its I/O
/// errors shared, because one directory's failure fails every message of
/// the batch bound for it.
#[derive(Debug, Clone, thiserror::Error)]
enum MaildirError {
    #[error("maildir_path template: {0}")]
    Template(#[source] Arc<minijinja::Error>),
    #[error("maildir path {0:?} contains '..'")]
    DotDot(String),
    #[error("{0}")]
    Io(#[source] Arc<std::io::Error>),
    #[error("fsync of {}: {source}", .path.display())]
    Fsync {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The blocking task writing the batch panicked or was cancelled.
    #[error("maildir writer failed: {0}")]
    Writer(#[source] Arc<tokio::task::JoinError>),
}

impl From<std::io::Error> for MaildirError {
    fn from(e: std::io::Error) -> Self {
        MaildirError::Io(Arc::new(e))
    }
}

/// The name the compiled `maildir_path` template has in its environment.
const PATH_TEMPLATE: &str = "maildir_path";

fn render_path(env: &minijinja::Environment<'static>, e: &Entry) -> Result<PathBuf, MaildirError> {
    let rcpt = e.message.first_recipient();
    let user = rcpt
        .as_ref()
        .map(|r| r.user().to_string())
        .unwrap_or_default();
    let domain = rcpt
        .as_ref()
        .map(|r| r.domain().to_string())
        .unwrap_or_default();
    let meta = e.message.meta();
    let mut ctx = serde_json::Map::new();
    for (k, v) in &meta {
        ctx.insert(k.clone(), v.clone());
    }
    ctx.insert("meta".into(), serde_json::Value::Object(meta));
    for (k, v) in [
        ("user", &user),
        ("local_part", &user),
        ("domain", &domain),
        ("domain_part", &domain),
        ("queue", &e.queue.name),
    ] {
        ctx.insert(k.into(), serde_json::Value::String(v.clone()));
    }
    ctx.insert(
        "email".into(),
        serde_json::Value::String(rcpt.map(|r| r.to_string()).unwrap_or_default()),
    );
    let path = env
        .get_template(PATH_TEMPLATE)
        .and_then(|t| t.render(serde_json::Value::Object(ctx)))
        .map_err(|err| MaildirError::Template(Arc::new(err)))?;
    if path.split('/').any(|part| part == "..") {
        return Err(MaildirError::DotDot(path));
    }
    Ok(PathBuf::from(path))
}

/// Create `dir`'s `tmp/`, `new/` and `cur/` if they are missing.
fn ensure_maildir(dir: &Path, cfg: &MaildirConfig) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true).mode(cfg.dir_mode.unwrap_or(0o775));
    for sub in ["tmp", "new", "cur"] {
        builder.create(dir.join(sub))?;
    }
    Ok(())
}

fn unique_name() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        hostname_safe()
    )
}

/// Write one file into `tmp/` (fsynced) and rename it into `new/`. The
/// rename is durable only after `new/` itself is fsynced by the caller.
fn write_one(dir: &Path, data: &[u8], cfg: &MaildirConfig) -> std::io::Result<PathBuf> {
    let name = unique_name();
    let tmp = dir.join("tmp").join(&name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(cfg.file_mode.unwrap_or(0o664))
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    let dest = dir.join("new").join(&name);
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}

/// Deliver a batch: every file is written and renamed, then each distinct
/// `new/` directory is fsynced once, so the batch shares that fsync (and
/// the directory lock is taken far less often than with one at a time).
fn deliver_batch(
    jobs: Vec<(PathBuf, Bytes)>,
    cfg: &MaildirConfig,
) -> Vec<Result<PathBuf, MaildirError>> {
    let mut ready: HashMap<PathBuf, Result<(), MaildirError>> = HashMap::new();
    let mut out: Vec<Result<PathBuf, MaildirError>> = jobs
        .iter()
        .map(|(dir, data)| {
            let made = ready
                .entry(dir.clone())
                .or_insert_with(|| ensure_maildir(dir, cfg).map_err(MaildirError::from));
            made.clone()?;
            Ok(write_one(dir, data, cfg)?)
        })
        .collect();
    for (dir, made) in ready {
        if made.is_err() {
            continue;
        }
        let new = dir.join("new");
        if let Err(e) = std::fs::File::open(&new).and_then(|d| d.sync_all()) {
            let err = MaildirError::Fsync {
                path: new,
                source: Arc::new(e),
            };
            for ((d, _), r) in jobs.iter().zip(out.iter_mut()) {
                if *d == dir && r.is_ok() {
                    *r = Err(err.clone());
                }
            }
        }
    }
    out
}

fn hostname_safe() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().replace(['/', ':'], "_"))
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    })
}

pub(super) struct Maildir {
    cfg: MaildirConfig,
    /// The compiled `maildir_path` when it is a template: compiled once per
    /// session, not per message. `Err` holds why it does not compile.
    template: Option<Result<minijinja::Environment<'static>, MaildirError>>,
}

impl Maildir {
    pub(super) fn new(cfg: MaildirConfig) -> Self {
        let templated = cfg.maildir_path.contains("{{") || cfg.maildir_path.contains("{%");
        let template = templated.then(|| {
            let mut env = minijinja::Environment::new();
            env.add_template_owned(PATH_TEMPLATE, cfg.maildir_path.clone())
                .map(|()| env)
                .map_err(|err| MaildirError::Template(Arc::new(err)))
        });
        Maildir { cfg, template }
    }
}

/// Messages written per batch: they share one fsync of each `new/` directory.
const BATCH: usize = 32;

impl Dispatcher for Maildir {
    fn protocol(&self) -> Protocol {
        Protocol::Maildir
    }

    fn batching(&self) -> Batching {
        Batching {
            size: BATCH,
            min: 1,
            max_latency: std::time::Duration::ZERO,
        }
    }

    async fn connect(&mut self, _rq: &ReadyQueue, _first: &[Entry]) -> Result<(), Attempt> {
        Ok(())
    }

    async fn deliver(&mut self, batch: &[Entry]) -> Attempt {
        let mut outcomes = vec![Outcome::Untried; batch.len()];
        let mut jobs = Vec::with_capacity(batch.len());
        let mut slots = Vec::with_capacity(batch.len());
        for (i, e) in batch.iter().enumerate() {
            let dir = match &self.template {
                Some(Ok(env)) => render_path(env, e),
                Some(Err(err)) => Err(err.clone()),
                None => Ok(PathBuf::from(&self.cfg.maildir_path)),
            };
            // The driver loads every message's bytes; writing none would
            // deliver an empty file.
            let Ok(data) = e.message.data() else {
                outcomes[i] = Outcome::Transient {
                    response: Response::new(400, None, "internal error: message data not loaded"),
                    at_peer: false,
                };
                continue;
            };
            match dir {
                Ok(dir) => {
                    jobs.push((dir, data));
                    slots.push(i);
                }
                Err(err) => outcomes[i] = failed(&err),
            }
        }
        let cfg = self.cfg.clone();
        let n = jobs.len();
        let results = tokio::task::spawn_blocking(move || deliver_batch(jobs, &cfg))
            .await
            .unwrap_or_else(|e| vec![Err(MaildirError::Writer(Arc::new(e))); n]);
        let mut written = false;
        let mut io_error = None;
        for (i, result) in slots.into_iter().zip(results) {
            outcomes[i] = match result {
                Ok(path) => {
                    written = true;
                    let text = format!("250 delivered to {}", path.display());
                    Outcome::Delivered(Response::new(200, None, &text))
                }
                Err(err) => {
                    io_error.get_or_insert_with(|| err.to_string());
                    failed(&err)
                }
            };
        }
        // A directory that takes no file at all looks like a full or broken
        // disk: it counts toward pausing the queue, as a broker outage does.
        let health = match (written, io_error) {
            (true, _) => Health::Reached,
            (false, Some(why)) => Health::Failed(why),
            (false, None) => Health::Unknown,
        };
        Attempt {
            outcomes: Outcomes::Each(outcomes),
            health,
            end_session: false,
        }
    }

    async fn close(&mut self) {}
}

fn failed(err: &MaildirError) -> Outcome {
    Outcome::Transient {
        response: Response::new(400, None, &format!("maildir delivery failed: {err}")),
        at_peer: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cfg(path: &Path) -> MaildirConfig {
        MaildirConfig {
            maildir_path: path.display().to_string(),
            dir_mode: Some(0o750),
            file_mode: Some(0o640),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn a_batch_lands_in_new_with_its_modes_and_nothing_left_in_tmp() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("a");
        let b = root.path().join("b");
        let jobs = vec![
            (a.clone(), Bytes::from_static(b"one")),
            (b.clone(), Bytes::from_static(b"two")),
            (a.clone(), Bytes::from_static(b"three")),
        ];
        let out = deliver_batch(jobs, &cfg(&a));
        let paths: Vec<PathBuf> = out.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(names(&a.join("new")).len(), 2);
        assert_eq!(names(&b.join("new")).len(), 1);
        assert!(names(&a.join("tmp")).is_empty() && names(&b.join("tmp")).is_empty());
        assert_eq!(std::fs::read(&paths[2]).unwrap(), b"three");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&paths[0]), 0o640);
        assert_eq!(mode(&a.join("new")), 0o750);
        assert_ne!(paths[0], paths[2], "file names are unique");
    }

    #[test]
    fn an_unusable_directory_fails_only_its_own_messages() {
        let root = tempfile::tempdir().unwrap();
        let good = root.path().join("good");
        // A regular file where the maildir should be: its subdirs cannot be created.
        let bad = root.path().join("bad");
        std::fs::write(&bad, b"not a directory").unwrap();
        let jobs = vec![
            (bad.clone(), Bytes::from_static(b"x")),
            (good.clone(), Bytes::from_static(b"y")),
            (bad, Bytes::from_static(b"z")),
        ];
        let out = deliver_batch(jobs, &cfg(&good));
        assert!(out[0].is_err() && out[2].is_err(), "{out:?}");
        assert!(out[1].is_ok(), "{out:?}");
        assert_eq!(names(&good.join("new")).len(), 1);
    }
}
