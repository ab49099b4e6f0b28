//! `kumo.fs.metadata_for_path(PATH)` (follows symbolic links) and
//! `kumo.fs.symlink_metadata_for_path(PATH)` (describes the link itself).
//!
//! The result is a table with KumoMTA's field names: `path`, `is_file`,
//! `is_dir`, `is_symlink`, `len`, `readonly`, the Unix fields `dev`, `ino`,
//! `mode`, `nlink`, `uid`, `gid`, `rdev`, `size`, `blksize`, `blocks`, and
//! `mtime`, `atime`, `ctime` as `Time` objects (`ctime` is the creation
//! time, as KumoMTA documents it, and nil where the filesystem does not
//! record one). A plain table, so it also encodes as JSON.

use std::fs::Metadata;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use hermod_policy::errors::CallSite;
use mlua::{Lua, Table, Value};

use crate::time::Time;

pub fn register(lua: &Lua, fs: &Table) -> mlua::Result<()> {
    for (name, follow) in [
        ("metadata_for_path", true),
        ("symlink_metadata_for_path", false),
    ] {
        let what = format!("kumo.fs.{name}");
        fs.set(
            name,
            lua.create_async_function(move |lua, path: Value| {
                let what = what.clone();
                async move {
                    let site = CallSite::capture(&lua);
                    let path = crate::str_arg(&lua, &what, "path", &path)?;
                    let meta = if follow {
                        tokio::fs::metadata(&path).await
                    } else {
                        tokio::fs::symlink_metadata(&path).await
                    }
                    .map_err(|e| site.error(format!("{what}: cannot stat {path}: {e}")))?;
                    table(&lua, &path, &meta)
                }
            })?,
        )?;
    }
    Ok(())
}

fn time(t: std::io::Result<SystemTime>) -> Option<Time> {
    t.ok().map(|t| Time(DateTime::<Utc>::from(t)))
}

fn table(lua: &Lua, path: &str, m: &Metadata) -> mlua::Result<Table> {
    use std::os::unix::fs::MetadataExt;

    let t = lua.create_table()?;
    t.set("path", path)?;
    t.set("is_file", m.is_file())?;
    t.set("is_dir", m.is_dir())?;
    t.set("is_symlink", m.file_type().is_symlink())?;
    t.set("len", m.len())?;
    t.set("readonly", m.permissions().readonly())?;
    t.set("dev", m.dev())?;
    t.set("ino", m.ino())?;
    t.set("mode", m.mode())?;
    t.set("nlink", m.nlink())?;
    t.set("uid", m.uid())?;
    t.set("gid", m.gid())?;
    t.set("rdev", m.rdev())?;
    t.set("size", m.size())?;
    t.set("blksize", m.blksize())?;
    t.set("blocks", m.blocks())?;
    t.set("mtime", time(m.modified()))?;
    t.set("atime", time(m.accessed()))?;
    t.set("ctime", time(m.created()))?;
    Ok(t)
}
