//! Directories only the daemon's user may touch, made safely in places
//! others can write to (`/tmp`): whatever is there must be a real
//! directory (checked with `lstat`, never through a symlink), owned by us,
//! and writable by nobody else — or the daemon refuses it.
//!
//! Owns the check only; it never deletes or re-owns what it finds.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and its parents) with `mode` if missing, then checks the
/// directory itself: not a symlink, owned by the current user, not writable
/// by group or others. Sets `mode` if it differs. Says why it refused.
pub fn ensure(dir: &Path, mode: u32) -> Result<(), String> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|err| format!("cannot create it: {err}"))?;
    let meta = fs::symlink_metadata(dir).map_err(|err| err.to_string())?;
    if meta.file_type().is_symlink() {
        return Err("it is a symbolic link (someone else may have put it there)".into());
    }
    if !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!("it is owned by uid {}, not by you (uid {me})", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("its mode is {:o}: others may write to it", meta.mode() & 0o777));
    }
    if meta.mode() & 0o777 != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(|err| err.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_or_a_shared_directory_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real");
        ensure(&real, 0o700).unwrap();
        assert_eq!(fs::metadata(&real).unwrap().mode() & 0o777, 0o700);
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(ensure(&link, 0o700).unwrap_err().contains("symbolic link"));
        let shared = base.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(ensure(&shared, 0o700).unwrap_err().contains("others may write"));
    }
}
