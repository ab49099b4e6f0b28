//! The file system's state: what a program sees now (the current tree) and
//! what a power loss would leave (the durable state), with POSIX's rules for
//! moving the one into the other:
//!
//! - a file's bytes and size become durable at `fsync`/`fdatasync` of that
//!   file, and only then;
//! - a name (create, mkdir, rename, unlink, rmdir) becomes durable at `fsync`
//!   of the directory that holds it, and only then. A rename between two
//!   directories needs both.
//!
//! Both live in the store directory: `current/<ino>` holds each file's
//! bytes as programs see them, `durable/<ino>` the bytes as of the file's
//! last fsync (updated by copying only the ranges written since), and
//! `tree` every directory's listing as of its last fsync. [`Model::boot`]
//! throws the current state away and rebuilds it from the durable one: that
//! is the power cycle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fuser::Errno;

use crate::tree;

/// The root directory's inode number (FUSE's).
pub const ROOT: u64 = 1;

/// Longest name a directory takes, as on ext4.
const NAME_MAX: usize = 255;

/// Chunk size of the copy that makes written ranges durable.
const COPY_CHUNK: u64 = 1 << 20;

pub type Res<T> = Result<T, Errno>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// One name of a directory listing as the durable state holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub ino: u64,
    pub kind: Kind,
    pub perm: u16,
}

/// Every directory's durable listing, by the directory's inode number.
pub type Listings = BTreeMap<u64, BTreeMap<OsString, Entry>>;

/// An inode of the current tree.
pub struct Node {
    pub kind: Kind,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// Directories: the current listing.
    pub entries: BTreeMap<OsString, u64>,
    /// The directory that names this node now; `None` once unlinked (the
    /// node lives on while a program has it open).
    pub parent: Option<u64>,
    /// Files: `current/<ino>`, opened on first use.
    file: Option<File>,
    /// Files: the byte range written or truncated since the last fsync
    /// (one range covering all of them: RocksDB appends, so it is exact).
    dirty: Option<(u64, u64)>,
    /// Files: open handles, so an unlinked file lives until its last close.
    opens: u32,
}

impl Node {
    fn new(kind: Kind, perm: u16, parent: u64) -> Node {
        let now = SystemTime::now();
        Node {
            kind,
            perm,
            uid: 0,
            gid: 0,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            entries: BTreeMap::new(),
            parent: Some(parent),
            file: None,
            dirty: None,
            opens: 0,
        }
    }

    fn touch(&mut self) {
        let now = SystemTime::now();
        self.mtime = now;
        self.ctime = now;
    }

    fn mark_dirty(&mut self, lo: u64, hi: u64) {
        if lo >= hi {
            return;
        }
        self.dirty = Some(match self.dirty {
            Some((a, b)) => (a.min(lo), b.max(hi)),
            None => (lo, hi),
        });
    }
}

pub struct Model {
    store: PathBuf,
    pub nodes: HashMap<u64, Node>,
    durable: Listings,
    next_ino: u64,
    /// Set by a power cut: from then on nothing changes any more.
    pub dead: bool,
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

impl Model {
    /// Power on: rebuild the current tree from the durable state in
    /// `store` (an empty root the first time), discarding whatever the last
    /// run left unsynced.
    pub fn boot(store: &Path) -> io::Result<Model> {
        std::fs::create_dir_all(store.join("current"))?;
        std::fs::create_dir_all(store.join("durable"))?;
        for e in std::fs::read_dir(store.join("current"))? {
            std::fs::remove_file(e?.path())?;
        }
        let saved = tree::load(&store.join("tree"))?;
        let mut m = Model {
            store: store.to_path_buf(),
            nodes: HashMap::new(),
            durable: Listings::new(),
            next_ino: ROOT + 1,
            dead: false,
        };
        m.nodes.insert(ROOT, Node::new(Kind::Dir, 0o755, ROOT));
        let mut seen = HashSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(dir) = stack.pop() {
            let mut kept = BTreeMap::new();
            for (name, e) in saved.get(&dir).cloned().unwrap_or_default() {
                // A rename between two directories of which only the target
                // was fsynced leaves two durable names for one inode; the
                // first one walked keeps it (RocksDB renames within one
                // directory only).
                if !seen.insert(e.ino) {
                    continue;
                }
                let mut node = Node::new(e.kind, e.perm, dir);
                match e.kind {
                    Kind::File => {
                        let (durable, current) = (m.durable_path(e.ino), m.current_path(e.ino));
                        if durable.exists() {
                            std::fs::copy(&durable, &current)?;
                        } else {
                            File::create(&current)?;
                        }
                        node.size = std::fs::metadata(&current)?.len();
                    }
                    Kind::Dir => stack.push(e.ino),
                }
                m.nodes.insert(e.ino, node);
                if let Some(d) = m.nodes.get_mut(&dir) {
                    d.entries.insert(name.clone(), e.ino);
                }
                kept.insert(name, e);
            }
            m.durable.insert(dir, kept);
        }
        for e in std::fs::read_dir(store.join("durable"))? {
            let path = e?.path();
            let ino = path
                .file_name()
                .and_then(|n| n.to_str()?.parse::<u64>().ok());
            if !ino.is_some_and(|i| seen.contains(&i)) {
                std::fs::remove_file(&path)?;
            }
        }
        m.next_ino = seen.iter().max().copied().unwrap_or(ROOT) + 1;
        tree::save(&store.join("tree"), &m.durable)?;
        Ok(m)
    }

    fn current_path(&self, ino: u64) -> PathBuf {
        self.store.join("current").join(ino.to_string())
    }

    fn durable_path(&self, ino: u64) -> PathBuf {
        self.store.join("durable").join(ino.to_string())
    }

    pub fn store(&self) -> &Path {
        &self.store
    }

    pub fn node(&self, ino: u64) -> Res<&Node> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Res<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: u64) -> Res<&Node> {
        let n = self.node(ino)?;
        if n.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        Ok(n)
    }

    /// The node's `current/<ino>` file, opened once and kept.
    fn file(&mut self, ino: u64) -> Res<&File> {
        let path = self.current_path(ino);
        let node = self.node_mut(ino)?;
        if node.kind != Kind::File {
            return Err(Errno::EISDIR);
        }
        if node.file.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(errno)?;
            node.file = Some(f);
        }
        node.file.as_ref().ok_or(Errno::EIO)
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Res<u64> {
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    fn new_node(&mut self, parent: u64, name: &OsStr, kind: Kind, perm: u16) -> Res<u64> {
        if name.len() > NAME_MAX {
            return Err(Errno::from_i32(libc::ENAMETOOLONG));
        }
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        if kind == Kind::File {
            File::create(self.current_path(ino)).map_err(errno)?;
        }
        self.nodes.insert(ino, Node::new(kind, perm, parent));
        let dir = self.node_mut(parent)?;
        dir.entries.insert(name.to_os_string(), ino);
        dir.touch();
        Ok(ino)
    }

    pub fn mkdir(&mut self, parent: u64, name: &OsStr, perm: u16) -> Res<u64> {
        self.new_node(parent, name, Kind::Dir, perm)
    }

    pub fn create(&mut self, parent: u64, name: &OsStr, perm: u16) -> Res<u64> {
        self.new_node(parent, name, Kind::File, perm)
    }

    /// Set the owner of a node just created.
    pub fn set_owner(&mut self, ino: u64, uid: Option<u32>, gid: Option<u32>) -> Res<()> {
        let n = self.node_mut(ino)?;
        n.uid = uid.unwrap_or(n.uid);
        n.gid = gid.unwrap_or(n.gid);
        n.ctime = SystemTime::now();
        Ok(())
    }

    pub fn chmod(&mut self, ino: u64, perm: u16) -> Res<()> {
        let n = self.node_mut(ino)?;
        n.perm = perm;
        n.ctime = SystemTime::now();
        Ok(())
    }

    pub fn set_times(
        &mut self,
        ino: u64,
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
    ) -> Res<()> {
        let n = self.node_mut(ino)?;
        n.atime = atime.unwrap_or(n.atime);
        n.mtime = mtime.unwrap_or(n.mtime);
        n.ctime = SystemTime::now();
        Ok(())
    }

    pub fn open(&mut self, ino: u64) -> Res<()> {
        let n = self.node_mut(ino)?;
        if n.kind == Kind::File {
            n.opens += 1;
        }
        Ok(())
    }

    pub fn release(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.opens = n.opens.saturating_sub(1);
        }
        self.forget_if_gone(ino);
    }

    pub fn read(&mut self, ino: u64, offset: u64, size: u32) -> Res<Vec<u8>> {
        let len = self.node(ino)?.size.saturating_sub(offset).min(size as u64);
        let mut buf = vec![0; len as usize];
        self.file(ino)?
            .read_exact_at(&mut buf, offset)
            .map_err(errno)?;
        Ok(buf)
    }

    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Res<u32> {
        self.file(ino)?.write_all_at(data, offset).map_err(errno)?;
        let end = offset + data.len() as u64;
        let n = self.node_mut(ino)?;
        n.size = n.size.max(end);
        n.mark_dirty(offset, end);
        n.touch();
        u32::try_from(data.len()).map_err(|_| Errno::EINVAL)
    }

    pub fn truncate(&mut self, ino: u64, size: u64) -> Res<()> {
        self.file(ino)?.set_len(size).map_err(errno)?;
        let n = self.node_mut(ino)?;
        let old = n.size;
        n.mark_dirty(old.min(size), old.max(size));
        n.size = size;
        n.touch();
        Ok(())
    }

    /// fallocate(2) on the current bytes. With `FALLOC_FL_KEEP_SIZE` (how
    /// RocksDB preallocates its logs) nothing a reader sees changes; any
    /// other mode may change bytes or the size, so the range is dirty.
    pub fn fallocate(&mut self, ino: u64, offset: u64, length: u64, mode: i32) -> Res<()> {
        use std::os::fd::AsRawFd;
        let fd = self.file(ino)?.as_raw_fd();
        let (off, len) = (
            i64::try_from(offset).map_err(|_| Errno::EINVAL)?,
            i64::try_from(length).map_err(|_| Errno::EINVAL)?,
        );
        // SAFETY: `fd` is the open file of this node; fallocate reads no memory.
        if unsafe { libc::fallocate(fd, mode, off, len) } != 0 {
            return Err(errno(io::Error::last_os_error()));
        }
        let size = self.file(ino)?.metadata().map_err(errno)?.len();
        let n = self.node_mut(ino)?;
        if mode & libc::FALLOC_FL_KEEP_SIZE == 0 || mode & libc::FALLOC_FL_PUNCH_HOLE != 0 {
            n.mark_dirty(offset, offset.saturating_add(length));
            n.mark_dirty(n.size.min(size), n.size.max(size));
            n.size = size;
            n.touch();
        }
        Ok(())
    }

    /// fsync/fdatasync: a file's bytes and size, or a directory's listing,
    /// become what a power loss keeps.
    pub fn fsync(&mut self, ino: u64) -> Res<()> {
        match self.node(ino)?.kind {
            Kind::File => self.sync_file(ino),
            Kind::Dir => self.sync_dir(ino),
        }
    }

    fn sync_file(&mut self, ino: u64) -> Res<()> {
        let Some((lo, hi)) = self.node(ino)?.dirty else {
            return Ok(());
        };
        let size = self.node(ino)?.size;
        let durable = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.durable_path(ino))
            .map_err(errno)?;
        let current = self.file(ino)?;
        let mut buf = Vec::new();
        let mut at = lo;
        let end = hi.min(size);
        while at < end {
            let n = (end - at).min(COPY_CHUNK);
            buf.resize(n as usize, 0);
            current.read_exact_at(&mut buf, at).map_err(errno)?;
            durable.write_all_at(&buf, at).map_err(errno)?;
            at += n;
        }
        durable.set_len(size).map_err(errno)?;
        self.node_mut(ino)?.dirty = None;
        Ok(())
    }

    fn sync_dir(&mut self, ino: u64) -> Res<()> {
        let mut listing = BTreeMap::new();
        for (name, child) in &self.node(ino)?.entries {
            let c = self.node(*child)?;
            let entry = Entry {
                ino: *child,
                kind: c.kind,
                perm: c.perm,
            };
            listing.insert(name.clone(), entry);
        }
        let old = self.durable.insert(ino, listing).unwrap_or_default();
        tree::save(&self.store.join("tree"), &self.durable).map_err(errno)?;
        for e in old.values() {
            self.drop_durable_if_unreachable(e.ino);
        }
        Ok(())
    }

    pub fn unlink(&mut self, parent: u64, name: &OsStr) -> Res<()> {
        let ino = self.lookup(parent, name)?;
        if self.node(ino)?.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        self.detach(parent, name, ino)
    }

    pub fn rmdir(&mut self, parent: u64, name: &OsStr) -> Res<()> {
        let ino = self.lookup(parent, name)?;
        let n = self.node(ino)?;
        if n.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if !n.entries.is_empty() {
            return Err(Errno::from_i32(libc::ENOTEMPTY));
        }
        self.detach(parent, name, ino)
    }

    /// Remove `name` (naming `ino`) from `parent`.
    fn detach(&mut self, parent: u64, name: &OsStr, ino: u64) -> Res<()> {
        let dir = self.node_mut(parent)?;
        dir.entries.remove(name);
        dir.touch();
        let n = self.node_mut(ino)?;
        n.parent = None;
        n.ctime = SystemTime::now();
        self.forget_if_gone(ino);
        Ok(())
    }

    /// rename(2), with `RENAME_NOREPLACE` as `no_replace`.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Res<()> {
        if new_name.len() > NAME_MAX {
            return Err(Errno::from_i32(libc::ENAMETOOLONG));
        }
        let ino = self.lookup(parent, name)?;
        self.dir(new_parent)?;
        let kind = self.node(ino)?.kind;
        if kind == Kind::Dir {
            // A directory cannot move below itself.
            let mut at = new_parent;
            loop {
                if at == ino {
                    return Err(Errno::EINVAL);
                }
                match self.node(at)?.parent {
                    Some(p) if at != ROOT => at = p,
                    _ => break,
                }
            }
        }
        if let Some(target) = self.node(new_parent)?.entries.get(new_name).copied() {
            if target == ino {
                return Ok(());
            }
            if no_replace {
                return Err(Errno::EEXIST);
            }
            let t = self.node(target)?;
            match (kind, t.kind) {
                (Kind::File, Kind::Dir) => return Err(Errno::EISDIR),
                (Kind::Dir, Kind::File) => return Err(Errno::ENOTDIR),
                (Kind::Dir, Kind::Dir) if !t.entries.is_empty() => {
                    return Err(Errno::from_i32(libc::ENOTEMPTY))
                }
                _ => {}
            }
            self.detach(new_parent, new_name, target)?;
        }
        let from = self.node_mut(parent)?;
        from.entries.remove(name);
        from.touch();
        let to = self.node_mut(new_parent)?;
        to.entries.insert(new_name.to_os_string(), ino);
        to.touch();
        let n = self.node_mut(ino)?;
        n.parent = Some(new_parent);
        n.ctime = SystemTime::now();
        Ok(())
    }

    /// The listing of a directory, `.` and `..` first.
    pub fn readdir(&self, ino: u64) -> Res<Vec<(u64, Kind, OsString)>> {
        let dir = self.dir(ino)?;
        let mut out = vec![
            (ino, Kind::Dir, OsString::from(".")),
            (dir.parent.unwrap_or(ROOT), Kind::Dir, OsString::from("..")),
        ];
        for (name, child) in &dir.entries {
            out.push((*child, self.node(*child)?.kind, name.clone()));
        }
        Ok(out)
    }

    /// Drop an unlinked node once nothing has it open. Its durable bytes
    /// stay while a durable listing still names it: a power loss brings
    /// the name back.
    fn forget_if_gone(&mut self, ino: u64) {
        let gone = self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.parent.is_none() && n.opens == 0 && ino != ROOT);
        if gone {
            if let Some(n) = self.nodes.remove(&ino) {
                if n.kind == Kind::File {
                    let _ = std::fs::remove_file(self.current_path(ino));
                }
            }
            self.drop_durable_if_unreachable(ino);
        }
    }

    fn drop_durable_if_unreachable(&mut self, ino: u64) {
        let live = self.nodes.get(&ino).is_some_and(|n| n.parent.is_some());
        let named = self
            .durable
            .values()
            .any(|l| l.values().any(|e| e.ino == ino));
        if !live && !named {
            let _ = std::fs::remove_file(self.durable_path(ino));
        }
    }
}
