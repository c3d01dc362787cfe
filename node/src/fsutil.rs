//! Small file-system helpers with crash-safe semantics.
//!
//! [`write_atomic`] never leaves a half-written file under the target name:
//! it writes a temporary file in the same directory, syncs it, renames it
//! over the target and syncs the directory. A crash leaves either the old
//! content or the new, plus at most a stray `.tmp` file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Replaces `path` with `bytes` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("writing", path)(e)
    })
}

/// Creates `path` with `bytes`, refusing to replace an existing file.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.exists() {
        return Err(Error::Invalid(format!("{} already exists; refusing to overwrite it", path.display())));
    }
    write_atomic(path, bytes)
}

/// Reads a whole file, with the path in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(Error::io("reading", path))
}
