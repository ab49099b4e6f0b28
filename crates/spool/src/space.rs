//! Free space and inode checks (`min_free_space` / `min_free_inodes`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::config::SpoolDefinition;
use crate::error::SpoolError;

pub(crate) struct FsUsage {
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub free_inodes: u64,
    pub total_inodes: u64,
}

// The statvfs field types differ between platforms (u32/u64), so the casts
// are needed in general even where they are no-ops.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn usage(path: &Path) -> Result<FsUsage, SpoolError> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        SpoolError::Config(format!("spool path {} contains a NUL byte", path.display()))
    })?;
    // SAFETY: `c` is a valid NUL-terminated string and `st` is a plain C
    // struct that statvfs fully initialises on success.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(SpoolError::from_io(
            &format!("statvfs {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    let frsize = st.f_frsize as u64;
    Ok(FsUsage {
        // f_bavail/f_favail: what an unprivileged writer can use; the
        // root-reserved blocks are not headroom for the spool.
        free_bytes: (st.f_bavail as u64).saturating_mul(frsize),
        total_bytes: (st.f_blocks as u64).saturating_mul(frsize),
        free_inodes: st.f_favail as u64,
        total_inodes: st.f_files as u64,
    })
}

pub(crate) fn check(def: &SpoolDefinition) -> Result<(), SpoolError> {
    let u = usage(&def.path)?;
    if !def.min_free_space.is_satisfied(u.free_bytes, u.total_bytes) {
        return Err(SpoolError::Full(format!(
            "{} spool at {}: {} bytes free of {}, below min_free_space {}",
            def.name.as_str(),
            def.path.display(),
            u.free_bytes,
            u.total_bytes,
            def.min_free_space
        )));
    }
    if !def
        .min_free_inodes
        .is_satisfied(u.free_inodes, u.total_inodes)
    {
        return Err(SpoolError::Full(format!(
            "{} spool at {}: {} inodes free of {}, below min_free_inodes {}",
            def.name.as_str(),
            def.path.display(),
            u.free_inodes,
            u.total_inodes,
            def.min_free_inodes
        )));
    }
    Ok(())
}
