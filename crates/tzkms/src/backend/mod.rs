//! Key backends: where secret keys live and how a signature is obtained from them. A backend lists the
//! keys it serves and signs a payload with one of them; everything else (policy, watermark, local
//! verification) happens in `signer`, the same for every backend.

pub mod file;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tezos::{BlsScheme, PublicKey, PublicKeyHash, Signature};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a backend could not sign.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("key {0} is not held by this backend")]
    UnknownKey(PublicKeyHash),
    #[error("{0}")]
    Failed(String),
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
    /// Signs `message` (the whole payload, magic byte included) with the key of `pkh`. The backend
    /// applies the curve's own hashing (BLAKE2b-256 for ECDSA/ed25519, none for BLS).
    fn sign<'a>(
        &'a self,
        pkh: &'a PublicKeyHash,
        message: &'a [u8],
        scheme: BlsScheme,
    ) -> BoxFuture<'a, Result<Signature, BackendError>>;
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

/// Every key tzkms serves, by public key hash.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    keys: HashMap<PublicKeyHash, ServedKey>,
}

impl Keyring {
    /// Adds all keys of `backend`. A key already served by an earlier backend keeps its first backend;
    /// the duplicate is returned so the caller can say so.
    pub fn add_backend(&mut self, backend: Arc<dyn KeyBackend>) -> Vec<KeyInfo> {
        let mut duplicates = Vec::new();
        for info in backend.keys() {
            let pkh = info.public_key.hash();
            if self.keys.contains_key(&pkh) {
                duplicates.push(info);
                continue;
            }
            self.keys.insert(
                pkh,
                ServedKey {
                    info,
                    backend: backend.clone(),
                },
            );
        }
        duplicates
    }

    pub fn get(&self, pkh: &PublicKeyHash) -> Option<&ServedKey> {
        self.keys.get(pkh)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys sorted by address, for stable listings.
    pub fn sorted(&self) -> Vec<(&PublicKeyHash, &ServedKey)> {
        let mut all: Vec<_> = self.keys.iter().collect();
        all.sort_by_key(|(pkh, _)| pkh.to_string());
        all
    }
}
