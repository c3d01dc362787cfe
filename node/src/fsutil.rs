//! Small file-system helpers with crash-safe semantics.
//!
//! [`write_atomic`] never leaves a half-written file under the target name:
//! it writes a temporary file in the same directory, syncs it, renames it
//! over the target and syncs the directory. A crash leaves either the old
//! content or the new, plus at most a stray `.tmp` file.
//!
//! [`read_at`] reads a range from a file that may have been renamed into
//! its final place since the caller chose the name.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
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

/// Reads `len` bytes at `offset` from `path`, or from `renamed` when `path`
/// no longer exists.
pub fn read_at(path: &Path, renamed: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let (f, path) = match File::open(path) {
        Err(e) if e.kind() == ErrorKind::NotFound && path != renamed => {
            (File::open(renamed).map_err(Error::io("opening", renamed))?, renamed)
        }
        opened => (opened.map_err(Error::io("opening", path))?, path),
    };
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).map_err(Error::io("reading", path))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn read_at_follows_a_file_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let (partial, image) = (dir.path().join("x.partial"), dir.path().join("x"));
        fs::write(&partial, b"0123456789").unwrap();
        assert_eq!(read_at(&partial, &image, 2, 3).unwrap(), b"234");
        fs::rename(&partial, &image).unwrap();
        assert_eq!(read_at(&partial, &image, 6, 4).unwrap(), b"6789");
        fs::remove_file(&image).unwrap();
        assert!(matches!(read_at(&partial, &image, 0, 1), Err(Error::Io { .. })));
    }

    #[test]
    fn read_at_past_the_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        fs::write(&path, b"abc").unwrap();
        assert!(read_at(&path, &path, 2, 2).is_err());
    }
}
