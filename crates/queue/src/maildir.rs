//! The `maildir_path` protocol: each message becomes a file written to
//! `tmp/`, fsynced, then renamed into `new/` (the Maildir delivery rule).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hermod_policy::queue_config::MaildirConfig;

use crate::manager::QueueManager;
use crate::outcome::{self, AttemptInfo};
use crate::ready::{Entry, ReadyQueue};

static SEQ: AtomicU64 = AtomicU64::new(0);

fn render_path(template: &str, e: &Entry) -> Result<PathBuf, String> {
    let rcpt = e.message.first_recipient();
    let user = rcpt
        .as_ref()
        .map(|r| r.user().to_string())
        .unwrap_or_default();
    let domain = rcpt
        .as_ref()
        .map(|r| r.domain().to_string())
        .unwrap_or_default();
    let mut ctx = serde_json::Map::new();
    for (k, v) in e.message.meta() {
        ctx.insert(k, v);
    }
    ctx.insert("meta".into(), serde_json::Value::Object(e.message.meta()));
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
    let env = minijinja::Environment::new();
    let path = env
        .render_str(template, serde_json::Value::Object(ctx))
        .map_err(|err| format!("maildir_path template: {err}"))?;
    if path.split('/').any(|part| part == "..") {
        return Err(format!("maildir path {path:?} contains '..'"));
    }
    Ok(PathBuf::from(path))
}

fn deliver_one(dir: &Path, data: &[u8], cfg: &MaildirConfig) -> std::io::Result<PathBuf> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true).mode(cfg.dir_mode.unwrap_or(0o775));
    for sub in ["tmp", "new", "cur"] {
        builder.create(dir.join(sub))?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let host = hostname_safe();
    let name = format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        host
    );
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
    std::fs::File::open(dir.join("new"))?.sync_all()?;
    Ok(dest)
}

fn hostname_safe() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().replace(['/', ':'], "_"))
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

pub async fn session(qm: &QueueManager, rq: &Arc<ReadyQueue>, cfg: MaildirConfig) {
    let info = AttemptInfo::for_queue(rq, None, "Maildir", format!("maildir:{}", rq.name));
    loop {
        let batch = rq.next_batch(32, 1, std::time::Duration::ZERO).await;
        let batch = crate::session::load_data(qm, batch, &info).await;
        if batch.is_empty() {
            return;
        }
        for e in batch {
            let data = e.message.data().unwrap_or_default();
            let dir = render_path(&cfg.maildir_path, &e);
            let cfg2 = cfg.clone();
            let result = match dir {
                Ok(dir) => tokio::task::spawn_blocking(move || deliver_one(&dir, &data, &cfg2))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string())),
                Err(e) => Err(e),
            };
            match result {
                Ok(path) => {
                    let text = format!("250 delivered to {}", path.display());
                    outcome::delivered(qm, e.message, &e.queue, &info, text).await
                }
                Err(err) => {
                    let text = format!("maildir delivery failed: {err}");
                    outcome::transient(qm, e.message, e.queue, &info, 400, text, None).await
                }
            }
        }
    }
}
