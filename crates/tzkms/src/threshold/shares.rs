//! Share files: `<data_dir>/shares/<group tz4>.share`, one share of one threshold key per file, TOML,
//! mode 0600. The secret is written in the syntax of key files (`unencrypted:BLsk…`, `encrypted:BLesk…`)
//! and read by the same function, so a key file's protections apply to shares unchanged.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tezos::threshold::{self, SecretShare, ShareId};
use tezos::{Curve, PublicKey, PublicKeyHash};
use zeroize::Zeroizing;

use crate::backend::file::parse_secret;
use crate::backend::sealed::Unsealed;
use crate::secret::{check_private, create_private_dir};

/// The folder under the data directory that holds share files.
pub const SHARES_DIR: &str = "shares";
const SHARE_EXTENSION: &str = "share";

/// One share, loaded and checked.
#[derive(Debug)]
pub struct ShareFile {
    pub path: PathBuf,
    /// The group (threshold) key the share belongs to.
    pub group: PublicKey,
    /// M.
    pub threshold: u8,
    /// N.
    pub shares: u8,
    pub share: SecretShare,
    /// The share's own public key.
    pub public_key: PublicKey,
}

/// A share file as written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShareFile {
    group_public_key: String,
    threshold: u8,
    shares: u8,
    id: u8,
    share_public_key: String,
    secret_key: String,
}

impl Drop for RawShareFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret_key);
    }
}

/// Where the share of `group` is written.
pub fn path_for(data_dir: &Path, group: &PublicKeyHash) -> PathBuf {
    data_dir
        .join(SHARES_DIR)
        .join(format!("{group}.{SHARE_EXTENSION}"))
}

/// Reads and checks one share file.
pub fn read(
    path: &Path,
    password: Option<&Zeroizing<Vec<u8>>>,
    unsealed: &Unsealed,
) -> anyhow::Result<ShareFile> {
    check_private(path)?;
    let text =
        Zeroizing::new(fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
    let raw: RawShareFile = toml::from_str(&text).map_err(|e| {
        // The TOML error quotes the offending line, which may be the secret: keep only its message.
        anyhow::anyhow!("{}: not a share file: {}", path.display(), e.message().trim_end())
    })?;
    let where_ = path.display();
    let group: PublicKey = raw
        .group_public_key
        .parse()
        .map_err(|e| anyhow::anyhow!("{where_}: group_public_key: {e}"))?;
    if group.curve() != Curve::Bls {
        bail!(
            "{where_}: group_public_key is a {} key; threshold keys are tz4 (BLpk…)",
            group.curve()
        );
    }
    threshold::check_parameters(raw.threshold, raw.shares).map_err(|e| anyhow::anyhow!("{where_}: {e}"))?;
    let id = ShareId::new(raw.id).map_err(|e| anyhow::anyhow!("{where_}: {e}"))?;
    if raw.id > raw.shares {
        bail!(
            "{where_}: share id {} but the key was split into {} shares (ids 1 to {})",
            raw.id,
            raw.shares,
            raw.shares
        );
    }
    let public_key: PublicKey = raw
        .share_public_key
        .parse()
        .map_err(|e| anyhow::anyhow!("{where_}: share_public_key: {e}"))?;
    let secret = parse_secret(path, &raw.secret_key, password, unsealed)?;
    let share = SecretShare::from_secret_key(id, secret).map_err(|e| anyhow::anyhow!("{where_}: {e}"))?;
    if share.public_key() != public_key {
        bail!(
            "{where_}: secret_key is not the secret of share_public_key {public_key}: the file was edited or \
             mixes two shares; import the share again with `tzkms threshold import`"
        );
    }
    Ok(ShareFile {
        path: path.to_owned(),
        group,
        threshold: raw.threshold,
        shares: raw.shares,
        share,
        public_key,
    })
}

/// Every share file of the data directory. Two shares of one group on one machine are refused: a
/// machine that holds two shares counts twice toward the threshold, which defeats the point.
pub fn load_all(
    data_dir: &Path,
    password: Option<&Zeroizing<Vec<u8>>>,
    unsealed: &Unsealed,
) -> anyhow::Result<Vec<ShareFile>> {
    let paths = share_file_paths(data_dir)?;
    let mut loaded: Vec<ShareFile> = Vec::new();
    for path in paths {
        let share = read(&path, password, unsealed)?;
        if let Some(other) = loaded.iter().find(|s| s.group == share.group) {
            bail!(
                "{} and {} both hold a share of {}: one machine holds at most one share of a key (else it \
                 counts twice toward the threshold); move one to another machine",
                other.path.display(),
                path.display(),
                share.group.hash()
            );
        }
        loaded.push(share);
    }
    Ok(loaded)
}

/// The share files `<data_dir>/shares/*.share`, sorted (none if the folder does not exist).
pub fn share_file_paths(data_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = data_dir.join(SHARES_DIR);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == SHARE_EXTENSION))
        .collect();
    paths.sort();
    Ok(paths)
}

/// The secret text (`secret_key`) of the share file at `path`, as written: what `crate::sealing` unseals
/// when it is `sealed:…`. The file must be private, as for [`read`].
pub fn secret_text(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    check_private(path)?;
    let text =
        Zeroizing::new(fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
    let raw: RawShareFile = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a share file: {}", path.display(), e.message().trim_end()))?;
    Ok(Zeroizing::new(raw.secret_key.clone()))
}

/// Writes the share file of `share` (secret already in its final text form), created 0600 and synced.
/// Refuses a second share of the same group.
pub fn write(
    data_dir: &Path,
    group: &PublicKey,
    threshold_m: u8,
    shares: u8,
    share: &SecretShare,
    secret_text: &str,
) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join(SHARES_DIR);
    create_private_dir(&dir)?;
    let path = path_for(data_dir, &group.hash());
    let raw = RawShareFile {
        group_public_key: group.to_string(),
        threshold: threshold_m,
        shares,
        id: share.id.get(),
        share_public_key: share.public_key().to_string(),
        secret_key: secret_text.to_owned(),
    };
    let body = Zeroizing::new(toml::to_string(&raw).context("encoding the share file")?);
    let header = format!(
        "# tzkms threshold share {} of {} (any {} sign) of {}\n",
        share.id,
        shares,
        threshold_m,
        group.hash()
    );
    crate::secret::write_new_private(&path, &[header.as_bytes(), body.as_bytes()]).map_err(|e| {
        if crate::secret::already_exists(&e) {
            anyhow::anyhow!(
                "{} already holds a share of {}: one machine holds one share of a key; remove the file \
                 first if you mean to replace it",
                path.display(),
                group.hash()
            )
        } else {
            anyhow::anyhow!("writing the share file: {e}")
        }
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tezos::SecretKey;

    fn split() -> threshold::ShareSet {
        threshold::split(&SecretKey::generate(Curve::Bls), 3, 2).unwrap()
    }

    #[test]
    fn share_files_round_trip_and_refuse_a_second_share_of_a_group() {
        let dir = tempfile::tempdir().unwrap();
        let set = split();
        let share = &set.shares()[1];
        let path = write(
            dir.path(),
            set.public_key(),
            2,
            3,
            share,
            &format!("unencrypted:{}", share.to_b58().as_str()),
        )
        .unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let loaded = load_all(dir.path(), None, &Unsealed::default()).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(
            (loaded[0].threshold, loaded[0].shares, loaded[0].share.id.get()),
            (2, 3, 2)
        );
        assert_eq!(&loaded[0].group, set.public_key());
        let again = write(
            dir.path(),
            set.public_key(),
            2,
            3,
            &set.shares()[0],
            &set.shares()[0].to_b58(),
        );
        assert!(again.unwrap_err().to_string().contains("already holds a share"));
    }

    #[test]
    fn edited_or_unsafe_share_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let set = split();
        let share = &set.shares()[0];
        let path = write(dir.path(), set.public_key(), 2, 3, share, &share.to_b58()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let other = set.shares()[1].public_key().to_string();
        fs::write(&path, text.replace(&share.public_key().to_string(), &other)).unwrap();
        let err = load_all(dir.path(), None, &Unsealed::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not the secret of share_public_key"), "{err}");
        assert!(!err.contains(share.to_b58().as_str()), "{err}");
        fs::write(&path, text.replace("threshold = 2", "threshold = 1")).unwrap();
        let err = load_all(dir.path(), None, &Unsealed::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a majority"), "{err}");
        fs::write(&path, &text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_all(dir.path(), None, &Unsealed::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
