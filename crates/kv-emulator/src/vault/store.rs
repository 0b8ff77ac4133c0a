//! Key state: names, versions, attributes, soft-deleted keys; kept in memory and optionally in `state.json`.

use super::ec::Curve;
use super::material::KeyMaterial;
use crate::error::{StartError, VaultError};
use axum::http::StatusCode;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Days a deleted key stays recoverable (Azure's default retention).
pub(crate) const RECOVERABLE_DAYS: i64 = 90;

/// Attributes shared by every key version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attributes {
    pub enabled: bool,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
}

/// One version of a key.
#[derive(Debug, Clone)]
pub(crate) struct KeyVersion {
    pub version: String,
    pub key: KeyMaterial,
    pub hsm: bool,
    pub key_ops: Vec<String>,
    pub attributes: Attributes,
    pub tags: BTreeMap<String, String>,
}

/// A key name with its versions, oldest first (the last one is "latest").
#[derive(Debug, Clone)]
pub(crate) struct KeyEntry {
    /// The name as first created (Key Vault names are case-insensitive but keep their spelling).
    pub name: String,
    pub versions: Vec<KeyVersion>,
}

impl KeyEntry {
    pub(crate) fn latest(&self) -> Option<&KeyVersion> {
        self.versions.last()
    }

    /// `None` or an empty version means the latest one.
    pub(crate) fn version(&self, version: Option<&str>) -> Option<&KeyVersion> {
        match version {
            None | Some("") => self.latest(),
            Some(v) => self.versions.iter().find(|kv| kv.version.eq_ignore_ascii_case(v)),
        }
    }

    pub(crate) fn version_mut(&mut self, version: Option<&str>) -> Option<&mut KeyVersion> {
        match version {
            None | Some("") => self.versions.last_mut(),
            Some(v) => self
                .versions
                .iter_mut()
                .find(|kv| kv.version.eq_ignore_ascii_case(v)),
        }
    }
}

/// A soft-deleted key, recoverable until purged.
#[derive(Debug, Clone)]
pub(crate) struct DeletedEntry {
    pub entry: KeyEntry,
    pub deleted_date: i64,
    pub scheduled_purge_date: i64,
}

/// Everything the data plane knows.
#[derive(Debug)]
pub(crate) struct StoreState {
    /// Live keys by lowercase name.
    pub keys: BTreeMap<String, KeyEntry>,
    /// Soft-deleted keys by lowercase name.
    pub deleted: BTreeMap<String, DeletedEntry>,
    /// HMAC key for access tokens; persisted so tokens survive a restart of the binary.
    pub token_secret: [u8; 32],
}

/// The state behind a lock, written through to disk after every successful change when persistent.
#[derive(Debug)]
pub(crate) struct Store {
    state: Mutex<StoreState>,
    file: Option<PathBuf>,
}

impl Store {
    /// In memory, or loaded from / created in `dir/state.json`.
    pub(crate) fn open(dir: Option<&Path>) -> Result<Store, StartError> {
        let Some(dir) = dir else {
            return Ok(Store {
                state: Mutex::new(StoreState::empty()),
                file: None,
            });
        };
        std::fs::create_dir_all(dir).map_err(|source| StartError::Persist {
            path: dir.to_owned(),
            source,
        })?;
        let file = dir.join("state.json");
        let state = match std::fs::read(&file) {
            Ok(bytes) => {
                let parsed: StateFile =
                    serde_json::from_slice(&bytes).map_err(|e| StartError::CorruptState {
                        path: file.clone(),
                        message: e.to_string(),
                    })?;
                parsed.into_state().map_err(|message| StartError::CorruptState {
                    path: file.clone(),
                    message,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoreState::empty(),
            Err(source) => return Err(StartError::Persist { path: file, source }),
        };
        let store = Store {
            state: Mutex::new(state),
            file: Some(file.clone()),
        };
        store
            .write_through(&store.lock())
            .map_err(|source| StartError::Persist { path: file, source })?;
        Ok(store)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, StoreState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Read-only access.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&StoreState) -> R) -> R {
        f(&self.lock())
    }

    /// Apply a change; on success persist the whole state before answering (durable like Azure's 200).
    pub(crate) fn mutate<R>(
        &self,
        f: impl FnOnce(&mut StoreState) -> Result<R, VaultError>,
    ) -> Result<R, VaultError> {
        let mut guard = self.lock();
        let out = f(&mut guard)?;
        self.write_through(&guard).map_err(|e| {
            VaultError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                format!("emulator could not persist its state: {e}"),
            )
        })?;
        Ok(out)
    }

    fn write_through(&self, state: &StoreState) -> std::io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let bytes =
            serde_json::to_vec_pretty(&StateFile::from_state(state)).map_err(std::io::Error::other)?;
        let tmp = file.with_extension("json.tmp");
        {
            // The state holds private keys: owner-only, like tzkms's own key files.
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options.open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, file)
    }
}

impl StoreState {
    fn empty() -> StoreState {
        let mut token_secret = [0u8; 32];
        OsRng.fill_bytes(&mut token_secret);
        StoreState {
            keys: BTreeMap::new(),
            deleted: BTreeMap::new(),
            token_secret,
        }
    }

    pub(crate) fn key(&self, name: &str) -> Option<&KeyEntry> {
        self.keys.get(&name.to_ascii_lowercase())
    }
}

// ---- on-disk format -------------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    token_secret: String,
    keys: Vec<KeyFile>,
    deleted: Vec<DeletedFile>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyFile {
    pub name: String,
    pub versions: Vec<VersionFile>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeletedFile {
    key: KeyFile,
    deleted_date: i64,
    scheduled_purge_date: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionFile {
    version: String,
    /// `RSA` or `oct`; absent for EC keys (the only type of format 1's first files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kty: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crv: Option<Curve>,
    hsm: bool,
    /// Private part, hex: EC scalar, RSA PKCS#1 DER, AES key. This is an emulator: keys are test keys.
    d: String,
    key_ops: Vec<String>,
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
    created: i64,
    updated: i64,
    tags: BTreeMap<String, String>,
}

impl KeyFile {
    pub(crate) fn from_entry(entry: &KeyEntry) -> KeyFile {
        KeyFile {
            name: entry.name.clone(),
            versions: entry
                .versions
                .iter()
                .map(|v| VersionFile {
                    version: v.version.clone(),
                    kty: (v.key.kty() != "EC").then(|| v.key.kty().to_owned()),
                    crv: v.key.ec().map(|k| k.curve()),
                    hsm: v.hsm,
                    d: hex::encode(v.key.private_bytes()),
                    key_ops: v.key_ops.clone(),
                    enabled: v.attributes.enabled,
                    nbf: v.attributes.nbf,
                    exp: v.attributes.exp,
                    created: v.attributes.created,
                    updated: v.attributes.updated,
                    tags: v.tags.clone(),
                })
                .collect(),
        }
    }

    pub(crate) fn into_entry(self) -> Result<KeyEntry, String> {
        let mut versions = Vec::with_capacity(self.versions.len());
        for v in self.versions {
            let d = hex::decode(&v.d).map_err(|e| format!("key {}: bad private part: {e}", self.name))?;
            let kty = v.kty.as_deref().unwrap_or("EC");
            let key = KeyMaterial::from_private_bytes(kty, v.crv, &d)
                .map_err(|e| format!("key {}: {e}", self.name))?;
            versions.push(KeyVersion {
                version: v.version,
                key,
                hsm: v.hsm,
                key_ops: v.key_ops,
                attributes: Attributes {
                    enabled: v.enabled,
                    nbf: v.nbf,
                    exp: v.exp,
                    created: v.created,
                    updated: v.updated,
                },
                tags: v.tags,
            });
        }
        if versions.is_empty() {
            return Err(format!("key {} has no versions", self.name));
        }
        Ok(KeyEntry {
            name: self.name,
            versions,
        })
    }
}

impl StateFile {
    fn from_state(state: &StoreState) -> StateFile {
        StateFile {
            format: 1,
            token_secret: hex::encode(state.token_secret),
            keys: state.keys.values().map(KeyFile::from_entry).collect(),
            deleted: state
                .deleted
                .values()
                .map(|d| DeletedFile {
                    key: KeyFile::from_entry(&d.entry),
                    deleted_date: d.deleted_date,
                    scheduled_purge_date: d.scheduled_purge_date,
                })
                .collect(),
        }
    }

    fn into_state(self) -> Result<StoreState, String> {
        if self.format != 1 {
            return Err(format!("unknown format {}", self.format));
        }
        let secret = hex::decode(&self.token_secret).map_err(|e| format!("token_secret: {e}"))?;
        let token_secret: [u8; 32] = secret
            .try_into()
            .map_err(|_| "token_secret must be 32 bytes".to_owned())?;
        let mut keys = BTreeMap::new();
        for k in self.keys {
            let entry = k.into_entry()?;
            keys.insert(entry.name.to_ascii_lowercase(), entry);
        }
        let mut deleted = BTreeMap::new();
        for d in self.deleted {
            let entry = d.key.into_entry()?;
            deleted.insert(
                entry.name.to_ascii_lowercase(),
                DeletedEntry {
                    entry,
                    deleted_date: d.deleted_date,
                    scheduled_purge_date: d.scheduled_purge_date,
                },
            );
        }
        Ok(StoreState {
            keys,
            deleted,
            token_secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_entry() -> KeyEntry {
        KeyEntry {
            name: "Baker1".to_owned(),
            versions: vec![KeyVersion {
                version: "0123456789abcdef0123456789abcdef".to_owned(),
                key: KeyMaterial::Ec(super::super::ec::PrivateKey::generate(Curve::P256K)),
                hsm: true,
                key_ops: vec!["sign".to_owned(), "verify".to_owned()],
                attributes: Attributes {
                    enabled: true,
                    nbf: None,
                    exp: Some(2_000_000_000),
                    created: 1,
                    updated: 2,
                },
                tags: BTreeMap::from([("role".to_owned(), "baking".to_owned())]),
            }],
        }
    }

    #[test]
    fn state_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = sample_entry();
        let public = entry.versions[0].key.ec().expect("EC").public_xy();
        let secret = {
            let store = Store::open(Some(dir.path())).expect("open");
            store
                .mutate(|s| {
                    s.keys.insert("baker1".to_owned(), entry);
                    Ok(())
                })
                .expect("mutate");
            store.read(|s| s.token_secret)
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.path().join("state.json")).expect("state file");
            assert_eq!(meta.permissions().mode() & 0o077, 0, "state readable by others");
        }
        let store = Store::open(Some(dir.path())).expect("reopen");
        store.read(|s| {
            let k = s.key("BAKER1").expect("present");
            assert_eq!(k.name, "Baker1");
            assert_eq!(k.versions[0].key.ec().expect("EC").public_xy(), public);
            assert_eq!(k.versions[0].attributes.exp, Some(2_000_000_000));
            assert_eq!(s.token_secret, secret);
        });
    }

    #[test]
    fn corrupt_state_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("state.json"), b"{not json").expect("write");
        assert!(matches!(
            Store::open(Some(dir.path())),
            Err(StartError::CorruptState { .. })
        ));
    }
}
