//! Key backends: where secret keys live and how a signature is obtained from them. A backend lists the
//! keys it serves and signs a payload with one of them; everything else (policy, watermark, local
//! verification) happens in `signer`, the same for every backend.

pub mod azure;
pub mod file;
pub mod sealed;

use std::collections::HashMap;
use std::sync::Arc;

use tezos::{BlsScheme, PublicKey, PublicKeyHash, Signature};

pub use crate::futures::BoxFuture;

/// Why a backend could not sign.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("key {0} is not held by this backend")]
    UnknownKey(PublicKeyHash),
    #[error("{0}")]
    Failed(String),
    /// The holders of a threshold key's shares refused by their own high watermarks, so many that the
    /// threshold cannot be reached: a double-signing refusal, as the signer's own watermark would give.
    #[error("{0}")]
    WatermarkRefused(String),
}

/// The share of a threshold key a cosigner holds (see `crate::threshold`).
#[derive(Debug, Clone)]
pub struct ShareInfo {
    pub id: u8,
    /// M.
    pub threshold: u8,
    /// N.
    pub shares: u8,
    /// The share's own public key.
    pub public_key: PublicKey,
}

/// One key a backend serves.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub public_key: PublicKey,
    /// A name for logs and `keys list` (an alias or file name).
    pub name: String,
}

pub trait KeyBackend: Send + Sync + std::fmt::Debug {
    /// Short name for logs ("file", "azure").
    fn kind(&self) -> &'static str;
    /// The keys this backend can sign with.
    fn keys(&self) -> Vec<KeyInfo>;
    /// One key, if this backend holds it.
    fn key(&self, pkh: &PublicKeyHash) -> Option<KeyInfo> {
        self.keys().into_iter().find(|k| k.public_key.hash() == *pkh)
    }
    /// Asked when a request names a key no backend holds: a backend that can discover keys (a vault)
    /// re-reads them, rate-limited, and says whether it did.
    fn refresh_for_unknown(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { false })
    }
    /// Signs `message` (the whole payload, magic byte included) with the key of `pkh`. The backend
    /// applies the curve's own hashing (BLAKE2b-256 for ECDSA/ed25519, none for BLS).
    fn sign<'a>(
        &'a self,
        pkh: &'a PublicKeyHash,
        message: &'a [u8],
        scheme: BlsScheme,
    ) -> BoxFuture<'a, Result<Signature, BackendError>>;
    /// Whether `signature` is what this backend signs for `key` over `message`: the key's own
    /// signature, except for a share of a threshold key (a partial signature, checked against the share).
    fn verify(&self, key: &KeyInfo, message: &[u8], signature: &Signature, scheme: BlsScheme) -> bool {
        key.public_key.verify(message, signature, scheme)
    }
    /// The share this backend holds of the threshold key `pkh`, if it holds only a share: such a key
    /// signs on the cosigner route only.
    fn share(&self, _pkh: &PublicKeyHash) -> Option<ShareInfo> {
        None
    }
    /// A BLS proof of possession, for backends that hold BLS keys.
    fn bls_prove_possession(
        &self,
        _pkh: &PublicKeyHash,
        _override_pk: Option<&PublicKey>,
    ) -> Option<Signature> {
        None
    }
}

/// A key the signer serves: its public key and the backend that holds it.
#[derive(Debug, Clone)]
pub struct ServedKey {
    pub info: KeyInfo,
    pub backend: Arc<dyn KeyBackend>,
}

/// Every key tzkms serves: the backends in order; a key held by two backends is served by the first.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    backends: Vec<Arc<dyn KeyBackend>>,
}

impl Keyring {
    /// Adds a backend. Keys it shares with an earlier backend are returned, so the caller can say so.
    pub(crate) fn add_backend(&mut self, backend: Arc<dyn KeyBackend>) -> Vec<KeyInfo> {
        let duplicates = backend
            .keys()
            .into_iter()
            .filter(|info| self.get(&info.public_key.hash()).is_some())
            .collect();
        self.backends.push(backend);
        duplicates
    }

    pub fn get(&self, pkh: &PublicKeyHash) -> Option<ServedKey> {
        self.backends.iter().find_map(|b| {
            b.key(pkh).map(|info| ServedKey {
                info,
                backend: b.clone(),
            })
        })
    }

    /// Looks `pkh` up, letting backends that discover keys re-read them once if it is unknown.
    pub async fn find(&self, pkh: &PublicKeyHash) -> Option<ServedKey> {
        if let Some(key) = self.get(pkh) {
            return Some(key);
        }
        let mut refreshed = false;
        for b in &self.backends {
            refreshed |= b.refresh_for_unknown().await;
        }
        if refreshed {
            self.get(pkh)
        } else {
            None
        }
    }

    pub fn backends(&self) -> &[Arc<dyn KeyBackend>] {
        &self.backends
    }

    pub fn len(&self) -> usize {
        self.sorted().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each backend with the number of keys it serves (a key held twice counts for the first holder).
    pub fn keys_per_backend(&self) -> Vec<(Arc<dyn KeyBackend>, usize)> {
        let served = self.sorted();
        self.backends
            .iter()
            .map(|b| {
                let n = served.iter().filter(|(_, k)| Arc::ptr_eq(&k.backend, b)).count();
                (b.clone(), n)
            })
            .collect()
    }

    /// Keys sorted by address, for stable listings.
    pub fn sorted(&self) -> Vec<(PublicKeyHash, ServedKey)> {
        let mut all: HashMap<PublicKeyHash, ServedKey> = HashMap::new();
        for b in &self.backends {
            for info in b.keys() {
                all.entry(info.public_key.hash()).or_insert(ServedKey {
                    info,
                    backend: b.clone(),
                });
            }
        }
        let mut all: Vec<_> = all.into_iter().collect();
        all.sort_by_key(|(pkh, _)| pkh.to_string());
        all
    }
}
