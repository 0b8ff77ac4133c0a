//! Secret values in memory: zeroized on drop, and printed as `[REDACTED]` by `Debug`, so a `{:?}` of any
//! struct that holds one (a client, a credential, an error) cannot leak it into a log.

use std::fmt;
use std::fs;
use std::ops::Deref;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::{Zeroize, Zeroizing};

/// A secret: a client secret, an identity header, a storage-account key.
#[derive(Clone)]
pub struct Secret<T: Zeroize>(Zeroizing<T>);

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The value, for the one place that sends or uses it.
    pub(crate) fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> From<Zeroizing<T>> for Secret<T> {
    fn from(value: Zeroizing<T>) -> Self {
        Self(value)
    }
}

impl<T: Zeroize> Deref for Secret<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// How a secret read from a file is trimmed: a password keeps everything but its line end (spaces may be
/// part of it); a client secret or an account key is one token, so surrounding whitespace goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trim {
    LineEnd,
    Whitespace,
}

/// The one place secrets are read: from `file` (refused unless private: mode 0600 or stricter), else from
/// the environment variable `env` (unset or empty: `None`). Errors name the file and the cause.
pub fn read(file: Option<&std::path::Path>, env: &str, trim: Trim) -> Result<Option<Secret<String>>, String> {
    let Some(path) = file else {
        return Ok(std::env::var(env).ok().filter(|v| !v.is_empty()).map(Secret::new));
    };
    check_private(path).map_err(|e| e.to_string())?;
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?,
    );
    let value = match trim {
        Trim::LineEnd => text.trim_end_matches(['\n', '\r']),
        Trim::Whitespace => text.trim(),
    };
    Ok(Some(Secret::new(value.to_owned())))
}

/// Why a file or directory that must be private is not.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} is accessible to other users (mode {mode:04o}); a key file must be private: run `chmod 600 {path}`"
    )]
    UnsafePermissions { path: PathBuf, mode: u32 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PrivateFileError + '_ {
    move |source| PrivateFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Refuses files that anyone but their owner can read or write (key files, TLS keys, secret files).
pub(crate) fn check_private(path: &Path) -> Result<(), PrivateFileError> {
    let mode = fs::metadata(path).map_err(io_err(path))?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::UnsafePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Creates `dir` (and parents) with mode 0700 if missing.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), PrivateFileError> {
    if dir.exists() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// Writes a new private file: created 0600 (never over an existing file: an `AlreadyExists` I/O error, see
/// [`already_exists`]), `parts` written in order, then the file and its directory synced to disk.
pub(crate) fn write_new_private(path: &Path, parts: &[&[u8]]) -> Result<(), PrivateFileError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    for part in parts {
        file.write_all(part).map_err(io_err(path))?;
    }
    file.sync_all().map_err(io_err(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Whether [`write_new_private`] refused because the file exists.
pub(crate) fn already_exists(e: &PrivateFileError) -> bool {
    matches!(e, PrivateFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() {
        let s = Secret::new(String::from("hunter2"));
        assert_eq!(format!("{s:?}"), "[REDACTED]");
        assert_eq!(format!("{:#?}", Some(&s)), "Some(\n    [REDACTED],\n)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn read_trims_as_asked_refuses_loose_files_and_falls_back_to_the_environment() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, " pass word \n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let got = |t| read(Some(&path), "TZKMS_TEST_UNSET_SECRET", t).unwrap().unwrap();
        assert_eq!(got(Trim::LineEnd).expose(), " pass word ");
        assert_eq!(got(Trim::Whitespace).expose(), "pass word");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read(Some(&path), "X", Trim::LineEnd).unwrap_err();
        assert!(err.contains("0644") || err.contains("644"), "{err}");
        assert!(read(None, "TZKMS_TEST_UNSET_SECRET", Trim::LineEnd)
            .unwrap()
            .is_none());
    }
}
