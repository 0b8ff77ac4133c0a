//! Local key files: tzkms's own `<data_dir>/keys/*.key` files and the `secret_keys` wallet of an
//! octez-client base directory. Secrets stay in process memory (zeroed on drop); files that other users
//! could read are refused.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use tezos::encrypted;
use tezos::{BlsScheme, PublicKey, PublicKeyHash, SecretKey, Signature};
use zeroize::Zeroizing;

use super::sealed::{SealedSecret, Unsealed};
use super::{BackendError, BoxFuture, KeyBackend, KeyInfo};
use crate::secret::{check_private, create_private_dir, PrivateFileError};

/// The folder under the data directory that holds tzkms's key files.
pub const KEYS_DIR: &str = "keys";
const KEY_EXTENSION: &str = "key";

#[derive(Debug, thiserror::Error)]
pub enum FileKeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A key file or the keys directory that cannot be checked or is not private.
    #[error(transparent)]
    Private(#[from] PrivateFileError),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "{path} holds an encrypted key: set the password in the TZKMS_KEY_PASSWORD environment variable or in keys.password_file"
    )]
    PasswordNeeded { path: PathBuf },
    #[error("{path}: cannot decrypt the key: {message}")]
    Decrypt { path: PathBuf, message: String },
    #[error(
        "{path} holds a key sealed by {kid} that was not unsealed at start (was the file changed since?): restart \
         tzkms to unseal it"
    )]
    NotUnsealed { path: PathBuf, kid: String },
    #[error("a key named {0:?} already exists")]
    Exists(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FileKeyError + '_ {
    move |source| FileKeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A secret key as written in a file: `unencrypted:` or `encrypted:` (octez-client's wallet syntax), bare
/// base58, or `sealed:` (see [`super::sealed`]), whose inner text (`unencrypted:` or `encrypted:`) must be in
/// `unsealed`, unsealed before parsing (an async vault call, made once per start).
pub fn parse_secret(
    path: &Path,
    value: &str,
    password: Option<&Zeroizing<Vec<u8>>>,
    unsealed: &Unsealed,
) -> Result<SecretKey, FileKeyError> {
    let value = value.trim();
    if SealedSecret::is_sealed(value) {
        let inner = unsealed.get(value).ok_or_else(|| FileKeyError::NotUnsealed {
            path: path.to_owned(),
            kid: SealedSecret::parse(value).map_or_else(|e| e.to_string(), |s| s.kid()),
        })?;
        return parse_secret(path, inner, password, &Unsealed::default());
    }
    let b58 = value
        .strip_prefix("unencrypted:")
        .or_else(|| value.strip_prefix("encrypted:"))
        .unwrap_or(value);
    if encrypted::is_encrypted(b58) {
        let password = password.ok_or_else(|| FileKeyError::PasswordNeeded {
            path: path.to_owned(),
        })?;
        return encrypted::decrypt(b58, password).map_err(|e| FileKeyError::Decrypt {
            path: path.to_owned(),
            message: e.to_string(),
        });
    }
    b58.parse().map_err(|e: tezos::KeyError| FileKeyError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[derive(Debug)]
struct FileKey {
    name: String,
    secret: SecretKey,
}

/// Keys loaded from files into memory.
#[derive(Debug, Default)]
pub struct FileBackend {
    keys: HashMap<PublicKeyHash, FileKey>,
}

/// What loading found besides keys: entries skipped, each with the reason, for the startup log.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub skipped: Vec<String>,
}

impl FileBackend {
    /// Loads `<data_dir>/keys/*.key` and, if given, `<octez_base_dir>/secret_keys`. Sealed key files must
    /// have been unsealed into `unsealed` ([`crate::sealing::key_files`]).
    pub fn load(
        data_dir: &Path,
        octez_base_dir: Option<&Path>,
        password: Option<&Zeroizing<Vec<u8>>>,
        unsealed: &Unsealed,
    ) -> Result<(Self, LoadReport), FileKeyError> {
        let mut backend = Self::default();
        let mut report = LoadReport::default();
        {
            for path in key_file_paths(data_dir)? {
                check_private(&path)?;
                let text = Zeroizing::new(fs::read_to_string(&path).map_err(io_err(&path))?);
                let secret = parse_secret(&path, &text, password, unsealed)?;
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                backend.insert(name, secret);
            }
        }
        if let Some(base) = octez_base_dir {
            let path = base.join("secret_keys");
            check_private(&path)?;
            let text = Zeroizing::new(fs::read_to_string(&path).map_err(io_err(&path))?);
            #[derive(serde::Deserialize)]
            struct Alias {
                name: String,
                value: String,
            }
            let aliases: Vec<Alias> = serde_json::from_str(&text).map_err(|e| FileKeyError::Invalid {
                path: path.clone(),
                message: format!("not an octez-client secret_keys file: {e}"),
            })?;
            for alias in aliases {
                let value = Zeroizing::new(alias.value);
                if !(value.starts_with("unencrypted:") || value.starts_with("encrypted:")) {
                    // ledger://, remote:, http(s):// and other signers' keys are not ours to serve.
                    let scheme = value.split(':').next().unwrap_or("");
                    report.skipped.push(format!(
                        "octez wallet key {:?}: {scheme}: keys are not local",
                        alias.name
                    ));
                    continue;
                }
                let secret = parse_secret(&path, &value, password, &Unsealed::default())?;
                backend.insert(alias.name, secret);
            }
        }
        Ok((backend, report))
    }

    fn insert(&mut self, name: String, secret: SecretKey) {
        let pkh = secret.public_key().hash();
        self.keys.entry(pkh).or_insert(FileKey { name, secret });
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl KeyBackend for FileBackend {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn keys(&self) -> Vec<KeyInfo> {
        self.keys
            .values()
            .map(|k| KeyInfo {
                public_key: k.secret.public_key().clone(),
                name: k.name.clone(),
            })
            .collect()
    }

    /// By hash: the default lists and hashes every key, per request.
    fn key(&self, pkh: &PublicKeyHash) -> Option<KeyInfo> {
        self.keys.get(pkh).map(|k| KeyInfo {
            public_key: k.secret.public_key().clone(),
            name: k.name.clone(),
        })
    }

    fn sign<'a>(
        &'a self,
        pkh: &'a PublicKeyHash,
        message: &'a [u8],
        scheme: BlsScheme,
    ) -> BoxFuture<'a, Result<Signature, BackendError>> {
        Box::pin(async move {
            let key = self.keys.get(pkh).ok_or(BackendError::UnknownKey(*pkh))?;
            key.secret
                .sign(message, scheme)
                .map_err(|e| BackendError::Failed(e.to_string()))
        })
    }

    fn bls_prove_possession(
        &self,
        pkh: &PublicKeyHash,
        override_pk: Option<&PublicKey>,
    ) -> Option<Signature> {
        self.keys.get(pkh)?.secret.bls_prove_possession(override_pk)
    }
}

/// The key files `<data_dir>/keys/*.key`, sorted (none if the folder does not exist).
pub fn key_file_paths(data_dir: &Path) -> Result<Vec<PathBuf>, FileKeyError> {
    let dir = data_dir.join(KEYS_DIR);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == KEY_EXTENSION))
        .collect();
    entries.sort();
    Ok(entries)
}

/// Reads one key file (or any file holding a secret key in key-file syntax) as `load` reads each of
/// `keys/*.key`: private to its owner, `unencrypted:`/`encrypted:`/bare base58/`sealed:` (found in
/// `unsealed`), decrypted with `password`.
pub fn read_key_file(
    path: &Path,
    password: Option<&Zeroizing<Vec<u8>>>,
    unsealed: &Unsealed,
) -> Result<SecretKey, FileKeyError> {
    check_private(path)?;
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err(path))?);
    parse_secret(path, &text, password, unsealed)
}

/// Parses a secret key given as text (standard input, say) in key-file syntax; `origin` names it in errors.
pub fn parse_key_text(
    origin: &Path,
    text: &str,
    password: Option<&Zeroizing<Vec<u8>>>,
    unsealed: &Unsealed,
) -> Result<SecretKey, FileKeyError> {
    parse_secret(origin, text, password, unsealed)
}

/// Writes `secret` (already in its final text form: base58, possibly encrypted) as a new key file named
/// `<name>.key`, created 0600 and synced to disk. Refuses to overwrite.
pub fn write_key_file(data_dir: &Path, name: &str, secret_text: &str) -> Result<PathBuf, FileKeyError> {
    if name.is_empty() || name.contains(['/', '\\', '\0']) || name.starts_with('.') {
        return Err(FileKeyError::Invalid {
            path: PathBuf::from(name),
            message: "a key name must be a plain file name".into(),
        });
    }
    let dir = data_dir.join(KEYS_DIR);
    create_private_dir(&dir)?;
    let path = dir.join(format!("{name}.{KEY_EXTENSION}"));
    crate::secret::write_new_private(&path, &[secret_text.as_bytes(), b"\n"]).map_err(|e| {
        if crate::secret::already_exists(&e) {
            FileKeyError::Exists(name.to_owned())
        } else {
            FileKeyError::Private(e)
        }
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tezos::Curve;

    #[test]
    fn bls_proofs_of_possession_match_the_shared_vectors() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/signatures.json");
        let vectors: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
        let proofs = vectors["bls_proofs_of_possession"].as_array().unwrap();
        assert!(
            proofs.iter().any(|v| v["override_pk"].is_string()),
            "no override vector"
        );
        for v in proofs {
            let dir = tempfile::tempdir().unwrap();
            let sk: SecretKey = v["sk"].as_str().unwrap().parse().unwrap();
            write_key_file(dir.path(), "k", &sk.to_b58()).unwrap();
            let (backend, _) = FileBackend::load(dir.path(), None, None, &Unsealed::default()).unwrap();
            let pkh = v["pkh"].as_str().unwrap().parse().unwrap();
            let override_pk: Option<tezos::PublicKey> = v["override_pk"].as_str().map(|t| t.parse().unwrap());
            let proof = backend.bls_prove_possession(&pkh, override_pk.as_ref()).unwrap();
            assert_eq!(proof.to_string(), v["proof"].as_str().unwrap(), "{}", v["id"]);
        }
    }

    #[test]
    fn key_files_round_trip_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let sk = SecretKey::generate(Curve::P256);
        write_key_file(dir.path(), "baker", &sk.to_b58()).unwrap();
        let (backend, _) = FileBackend::load(dir.path(), None, None, &Unsealed::default()).unwrap();
        let keys = backend.keys();
        assert_eq!(keys.len(), 1);
        assert_eq!(&keys[0].public_key, sk.public_key());
        assert_eq!(keys[0].name, "baker");
        assert!(matches!(
            write_key_file(dir.path(), "baker", &sk.to_b58()),
            Err(FileKeyError::Exists(_))
        ));
    }

    #[test]
    fn world_readable_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sk = SecretKey::generate(Curve::Ed25519);
        let path = write_key_file(dir.path(), "k", &sk.to_b58()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = FileBackend::load(dir.path(), None, None, &Unsealed::default()).unwrap_err();
        assert!(
            matches!(
                err,
                FileKeyError::Private(PrivateFileError::UnsafePermissions { mode: 0o644, .. })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn encrypted_keys_need_the_right_password() {
        let dir = tempfile::tempdir().unwrap();
        let sk = SecretKey::generate(Curve::Secp256k1);
        write_key_file(dir.path(), "enc", &encrypted::encrypt(&sk, b"pw")).unwrap();
        assert!(matches!(
            FileBackend::load(dir.path(), None, None, &Unsealed::default()),
            Err(FileKeyError::PasswordNeeded { .. })
        ));
        let wrong = Zeroizing::new(b"nope".to_vec());
        assert!(matches!(
            FileBackend::load(dir.path(), None, Some(&wrong), &Unsealed::default()),
            Err(FileKeyError::Decrypt { .. })
        ));
        let right = Zeroizing::new(b"pw".to_vec());
        let (backend, _) = FileBackend::load(dir.path(), None, Some(&right), &Unsealed::default()).unwrap();
        assert_eq!(&backend.keys()[0].public_key, sk.public_key());
    }

    #[test]
    fn sealed_key_files_parse_from_their_unsealed_text_only() {
        let dir = tempfile::tempdir().unwrap();
        let sk = SecretKey::generate(Curve::Bls);
        let sealed = super::super::sealed::SealedSecret {
            vault: "https://v.vault.azure.net".into(),
            key: "seal".into(),
            version: "1".into(),
            alg: "RSA-OAEP-256".into(),
            value: "AQID".into(),
        }
        .to_text();
        write_key_file(dir.path(), "k", &sealed).unwrap();
        let err = FileBackend::load(dir.path(), None, None, &Unsealed::default()).unwrap_err();
        assert!(matches!(err, FileKeyError::NotUnsealed { .. }), "{err}");
        assert!(
            err.to_string().contains("https://v.vault.azure.net/keys/seal/1"),
            "{err}"
        );
        let mut unsealed = Unsealed::default();
        unsealed.insert_for_test(&sealed, &format!("unencrypted:{}", sk.to_b58().as_str()));
        let (backend, _) = FileBackend::load(dir.path(), None, None, &unsealed).unwrap();
        assert_eq!(&backend.keys()[0].public_key, sk.public_key());
        // Sealed on top of a password: the inner text is encrypted and needs it.
        let mut both = Unsealed::default();
        both.insert_for_test(&sealed, &format!("encrypted:{}", encrypted::encrypt(&sk, b"pw")));
        assert!(matches!(
            FileBackend::load(dir.path(), None, None, &both),
            Err(FileKeyError::PasswordNeeded { .. })
        ));
        let pw = Zeroizing::new(b"pw".to_vec());
        let (backend, _) = FileBackend::load(dir.path(), None, Some(&pw), &both).unwrap();
        assert_eq!(&backend.keys()[0].public_key, sk.public_key());
    }

    #[test]
    fn octez_wallet_keys_are_served_and_remote_ones_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let sk = SecretKey::generate(Curve::Ed25519);
        let wallet = serde_json::json!([
            {"name": "baker", "value": format!("unencrypted:{}", sk.to_b58().as_str())},
            {"name": "ledger", "value": "ledger://abc/ed25519/0h/0h"},
        ]);
        let path = dir.path().join("secret_keys");
        fs::write(&path, wallet.to_string()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let (backend, report) = FileBackend::load(
            &dir.path().join("none"),
            Some(dir.path()),
            None,
            &Unsealed::default(),
        )
        .unwrap();
        assert_eq!(backend.keys().len(), 1);
        assert_eq!(backend.keys()[0].name, "baker");
        assert_eq!(report.skipped.len(), 1);
    }
}
