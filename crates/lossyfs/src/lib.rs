//! lossyfs: a FUSE file system for tests that keeps what POSIX promises to
//! keep across a power loss, and nothing more.
//!
//! Programs see an ordinary file system. Underneath, every file's bytes and
//! every directory's listing exist twice: as programs see them now, and as
//! of their last `fsync` (see `model.rs` for the rules). [`Mounted::cut_power`]
//! is the power loss: from that instant every operation fails with EIO and
//! nothing more becomes durable. [`Mounted::restart`] then unmounts (which
//! also empties the kernel's caches of this mount) and mounts again on the
//! durable state alone, as a machine coming back up would find its disk.
//!
//! The test suite (`crates/hermod/tests/powerloss.rs`) mounts it inside the
//! test process, so that the cut is one flag under the file system's lock:
//! no operation is half done when it falls.

mod fuse;
mod model;
mod tree;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption};
use parking_lot::Mutex;

use fuse::{LossyFs, Shared};
use model::Model;

/// A mounted lossyfs. Dropping it cuts the power and detaches the mount.
pub struct Mounted {
    session: Option<BackgroundSession>,
    shared: Arc<Shared>,
    store: PathBuf,
    mountpoint: PathBuf,
}

/// Mount at `mountpoint` the file system whose state lives in `store` (a
/// directory on a real disk, created if missing; the durable state of an
/// earlier mount of the same store is what this one starts from).
pub fn mount(store: &Path, mountpoint: &Path) -> io::Result<Mounted> {
    let model = Model::boot(store)?;
    let shared = Arc::new(Shared {
        model: Mutex::new(model),
        refused: Mutex::new(BTreeMap::new()),
    });
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("lossyfs".into()),
        MountOption::DefaultPermissions,
    ];
    let fs = LossyFs {
        shared: shared.clone(),
    };
    let session = fuser::spawn_mount(fs, mountpoint, &config).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "mounting lossyfs at {} (needs /dev/fuse, and root or fusermount3): {e}",
                mountpoint.display()
            ),
        )
    })?;
    Ok(Mounted {
        session: Some(session),
        shared,
        store: store.to_path_buf(),
        mountpoint: mountpoint.to_path_buf(),
    })
}

impl Mounted {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The power loss: everything not fsynced is gone from this instant;
    /// every later operation on the mount fails with EIO.
    pub fn cut_power(&self) {
        self.shared.model.lock().dead = true;
    }

    /// Operations programs asked for that lossyfs does not offer, with
    /// counts (answered ENOSYS, as FUSE file systems without them do).
    pub fn refused(&self) -> BTreeMap<&'static str, u64> {
        self.shared.refused.lock().clone()
    }

    /// Unmount, then mount again on what was durable: the reboot after a
    /// [`cut_power`](Self::cut_power) (without one, a clean restart loses
    /// the unsynced state just the same, as a power loss during shutdown
    /// would). Whatever had files open on the mount must be gone first.
    pub fn restart(mut self) -> io::Result<Mounted> {
        self.unmount()?;
        mount(&self.store, &self.mountpoint)
    }

    fn unmount(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        self.cut_power();
        lazy_unmount(&self.mountpoint)?;
        // The session ends once the kernel has let go of the mount.
        session.join()
    }
}

impl Drop for Mounted {
    /// Cut the power and detach the mount without waiting: a program may
    /// still have files open on it (say, a test that failed before killing
    /// it), and the session thread ends by itself once that lets go.
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.cut_power();
            let _ = lazy_unmount(&self.mountpoint);
            drop(session);
        }
    }
}

/// Detach the mount even if something still has it open (it goes away when
/// that lets go); `fusermount3 -u -z` where umount2 is not allowed.
fn lazy_unmount(mountpoint: &Path) -> io::Result<()> {
    let c = CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(err);
    }
    let status = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mountpoint)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "fusermount3 -u -z {} failed: {status}",
            mountpoint.display()
        )))
    }
}

pub(crate) struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub frsize: u32,
}

// The statvfs field types differ between platforms (u32/u64).
#[allow(clippy::unnecessary_cast)]
pub(crate) fn statvfs(path: &Path) -> io::Result<FsStats> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is NUL-terminated; statvfs fills `st` fully on success.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FsStats {
        blocks: st.f_blocks as u64,
        bfree: st.f_bfree as u64,
        bavail: st.f_bavail as u64,
        files: st.f_files as u64,
        ffree: st.f_ffree as u64,
        bsize: st.f_bsize as u32,
        frsize: st.f_frsize as u32,
    })
}
