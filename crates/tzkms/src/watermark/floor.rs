//! Floors: what vouches for a key that has no marks in the store yet. A key generated or created by this
//! data directory gets an open floor (it cannot have signed anywhere else); an operator who moves a key
//! here without its marks sets a floor at the current head level (`tzkms watermark floor`). One small file
//! per key in `<data_dir>/floors/`, written durably, so a command can add one while a server runs: the
//! server reads it the next time the key has no mark to decide with.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tezos::{Level, PublicKeyHash};

use super::WatermarkError;

pub const FLOORS_DIR: &str = "floors";
const FORMAT: &str = "tzkms-floor";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FloorFile {
    format: String,
    pkh: String,
    /// `null`: the key was made here and signed nothing before; a level: nothing at or below it is signed.
    level: Option<u32>,
    reason: String,
}

fn path_of(data_dir: &Path, pkh: &PublicKeyHash) -> PathBuf {
    data_dir.join(FLOORS_DIR).join(format!("{pkh}.json"))
}

fn err(path: &Path, what: impl std::fmt::Display) -> WatermarkError {
    WatermarkError::Store(format!("{}: {what}", path.display()))
}

/// The floor of `pkh`: `None` if none was set, `Some(None)` for a key made here, `Some(Some(level))`.
pub fn read(data_dir: &Path, pkh: &PublicKeyHash) -> Result<Option<Option<Level>>, WatermarkError> {
    let path = path_of(data_dir, pkh);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(&path, e)),
    };
    let file: FloorFile = serde_json::from_str(&text).map_err(|e| {
        err(
            &path,
            format!("unreadable ({e}); remove it and set the floor again with `tzkms watermark floor`"),
        )
    })?;
    if file.format != FORMAT || file.pkh != pkh.to_string() {
        return Err(err(
            &path,
            format!(
                "is not a floor for {pkh}; remove it and set the floor again with `tzkms watermark floor`"
            ),
        ));
    }
    Ok(Some(file.level.map(Level)))
}

/// What [`raise`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    /// The floor is now the one asked for.
    Set,
    /// The floor already there is at or above it and stays.
    Kept(Option<Level>),
}

/// Sets the floor of `pkh` to `level` unless one at or above it exists (an open floor, `None`, is the
/// lowest). Durable when it returns: written to a temporary file, fsync'd, renamed, directory fsync'd.
pub fn raise(
    data_dir: &Path,
    pkh: &PublicKeyHash,
    level: Option<Level>,
    reason: &str,
) -> Result<Raised, WatermarkError> {
    if let Some(existing) = read(data_dir, pkh)? {
        if existing >= level {
            return Ok(Raised::Kept(existing));
        }
    }
    let dir = data_dir.join(FLOORS_DIR);
    let path = path_of(data_dir, pkh);
    crate::secret::create_private_dir(&dir).map_err(|e| err(&dir, e))?;
    let write = || -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(&FloorFile {
            format: FORMAT.into(),
            pkh: pkh.to_string(),
            level: level.map(|l| l.0),
            reason: reason.into(),
        })
        .map_err(std::io::Error::other)?;
        let tmp = dir.join(format!(".{pkh}.json.tmp"));
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?
        };
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()
    };
    write().map_err(|e| err(&path, format!("cannot write: {e}")))?;
    Ok(Raised::Set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkh() -> PublicKeyHash {
        "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx".parse().unwrap()
    }

    #[test]
    fn floors_only_rise_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), &pkh()).unwrap(), None);
        assert_eq!(raise(dir.path(), &pkh(), None, "generated").unwrap(), Raised::Set);
        assert_eq!(read(dir.path(), &pkh()).unwrap(), Some(None));
        assert_eq!(
            raise(dir.path(), &pkh(), Some(Level(100)), "t").unwrap(),
            Raised::Set
        );
        assert_eq!(
            raise(dir.path(), &pkh(), Some(Level(50)), "t").unwrap(),
            Raised::Kept(Some(Level(100)))
        );
        assert_eq!(
            raise(dir.path(), &pkh(), None, "t").unwrap(),
            Raised::Kept(Some(Level(100)))
        );
        assert_eq!(read(dir.path(), &pkh()).unwrap(), Some(Some(Level(100))));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path_of(dir.path(), &pkh()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_floor_is_an_error_not_an_open_floor() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(FLOORS_DIR)).unwrap();
        std::fs::write(path_of(dir.path(), &pkh()), "{").unwrap();
        let e = read(dir.path(), &pkh()).unwrap_err().to_string();
        assert!(
            e.contains("unreadable") && e.contains("tzkms watermark floor"),
            "{e}"
        );
        let other = r#"{"format":"tzkms-floor","pkh":"tz1other","level":null,"reason":"x"}"#;
        std::fs::write(path_of(dir.path(), &pkh()), other).unwrap();
        assert!(read(dir.path(), &pkh()).is_err());
    }
}
