//! `kumo.fs.open(FILENAME [, MODE])`: a file whose reads and writes do not
//! block the runtime's threads, unlike Lua's `io.open`. MODE is `r`, `w`,
//! `a`, `r+`, `w+` or `a+` (a trailing `b` is accepted and changes
//! nothing); as KumoMTA documents, every mode but `r` creates a missing
//! file. The object has `read([size])`, `write(bytes)`,
//! `seek([whence [, offset]])` (`cur`, `set` or `end`; returns the new
//! position), `flush()` and `close()`.

use std::io::SeekFrom;
use std::sync::Arc;

use hermod_policy::errors::CallSite;
use mlua::{Lua, Table, UserData, UserDataMethods, Value};
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// Largest single `read(size)`: the buffer is allocated before reading.
const MAX_READ: usize = 64 << 20;

/// The file object; `None` once closed.
#[derive(Clone)]
pub struct AsyncFile {
    file: Arc<Mutex<Option<File>>>,
    path: Arc<str>,
}

fn options(mode: &str) -> Option<OpenOptions> {
    let mut o = OpenOptions::new();
    match mode.strip_suffix('b').unwrap_or(mode) {
        "r" => o.read(true),
        "w" => o.write(true).create(true).truncate(true),
        "a" => o.append(true).create(true),
        "r+" => o.read(true).write(true).create(true),
        "w+" => o.read(true).write(true).create(true).truncate(true),
        "a+" => o.read(true).append(true).create(true),
        _ => return None,
    };
    Some(o)
}

pub fn register(lua: &Lua, fs: &Table) -> mlua::Result<()> {
    fs.set(
        "open",
        lua.create_async_function(|lua, (path, mode): (Value, Value)| async move {
            const WHAT: &str = "kumo.fs.open";
            let site = CallSite::capture(&lua);
            let path = crate::str_arg(&lua, WHAT, "filename", &path)?;
            let mode = match mode {
                Value::Nil => "r".to_string(),
                v => crate::str_arg(&lua, WHAT, "mode", &v)?,
            };
            let opts = options(&mode)
                .ok_or_else(|| site.error(format!("{WHAT}: unknown mode {mode:?}")))?;
            let file = opts
                .open(&path)
                .await
                .map_err(|e| site.error(format!("{WHAT}: cannot open {path}: {e}")))?;
            Ok(AsyncFile {
                file: Arc::new(Mutex::new(Some(file))),
                path: path.into(),
            })
        })?,
    )
}

impl AsyncFile {
    fn closed(&self, site: &CallSite, what: &str) -> mlua::Error {
        site.error(format!("file:{what}: {} is closed", self.path))
    }

    fn failed(&self, site: &CallSite, what: &str, e: std::io::Error) -> mlua::Error {
        site.error(format!("file:{what}: {}: {e}", self.path))
    }
}

impl UserData for AsyncFile {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_async_method("read", |lua, this, size: Option<usize>| async move {
            let site = CallSite::capture(&lua);
            let mut guard = this.file.lock().await;
            let file = guard.as_mut().ok_or_else(|| this.closed(&site, "read"))?;
            let mut buf = Vec::new();
            match size {
                Some(n) => {
                    buf.resize(n.min(MAX_READ), 0);
                    let got = file
                        .read(&mut buf)
                        .await
                        .map_err(|e| this.failed(&site, "read", e))?;
                    buf.truncate(got);
                }
                None => {
                    file.read_to_end(&mut buf)
                        .await
                        .map_err(|e| this.failed(&site, "read", e))?;
                }
            }
            lua.create_string(buf)
        });
        methods.add_async_method("write", |lua, this, data: Value| async move {
            let site = CallSite::capture(&lua);
            let data = crate::bytes_arg(&lua, "file:write", "buffer", &data)?;
            let mut guard = this.file.lock().await;
            let file = guard.as_mut().ok_or_else(|| this.closed(&site, "write"))?;
            file.write_all(&data)
                .await
                .map_err(|e| this.failed(&site, "write", e))
        });
        methods.add_async_method(
            "seek",
            |lua, this, (whence, offset): (Option<String>, Option<i64>)| async move {
                let site = CallSite::capture(&lua);
                let offset = offset.unwrap_or(0);
                let to = match whence.as_deref().unwrap_or("cur") {
                    "cur" => SeekFrom::Current(offset),
                    "end" => SeekFrom::End(offset),
                    "set" => SeekFrom::Start(u64::try_from(offset).map_err(|_| {
                        site.error(format!(
                            "file:seek: a position from the start cannot be negative, got {offset}"
                        ))
                    })?),
                    other => {
                        return Err(site.error(format!(
                            "file:seek: whence must be 'cur', 'set' or 'end', got {other:?}"
                        )))
                    }
                };
                let mut guard = this.file.lock().await;
                let file = guard.as_mut().ok_or_else(|| this.closed(&site, "seek"))?;
                file.seek(to)
                    .await
                    .map_err(|e| this.failed(&site, "seek", e))
            },
        );
        methods.add_async_method("flush", |lua, this, ()| async move {
            let site = CallSite::capture(&lua);
            let mut guard = this.file.lock().await;
            let file = guard.as_mut().ok_or_else(|| this.closed(&site, "flush"))?;
            file.flush()
                .await
                .map_err(|e| this.failed(&site, "flush", e))
        });
        methods.add_async_method("close", |lua, this, ()| async move {
            let site = CallSite::capture(&lua);
            let mut guard = this.file.lock().await;
            // Closing twice is harmless, as with Lua's own files.
            if let Some(mut file) = guard.take() {
                file.flush()
                    .await
                    .map_err(|e| this.failed(&site, "close", e))?;
            }
            Ok(())
        });
    }
}
