//! The signing path, one step per line: find the key, classify the payload, apply the policy, sign with
//! the key's backend, verify the signature locally, answer. The HTTP server is a thin shell around this.

use std::collections::BTreeSet;
use std::sync::Arc;

use tezos::payload::magic_byte_name;
use tezos::{classify, BlsScheme, PayloadError, PublicKey, PublicKeyHash, Signature};

use crate::backend::{Keyring, ServedKey};

/// One signing request, as parsed from HTTP.
#[derive(Debug)]
pub struct SignRequest {
    pub pkh: PublicKeyHash,
    pub payload: Vec<u8>,
    pub scheme: BlsScheme,
}

/// Why a request was not signed. Each kind maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0}")]
    BadRequest(String),
    #[error("malformed payload: {0}")]
    Payload(#[from] PayloadError),
    #[error("key {0} is not served by this signer")]
    UnknownKey(PublicKeyHash),
    #[error("{0}")]
    Forbidden(String),
    #[error("signing with {pkh} failed: {message}")]
    Backend { pkh: PublicKeyHash, message: String },
    #[error("the signature returned for {0} does not verify against its public key; it was not released")]
    VerificationFailed(PublicKeyHash),
}

impl SignError {
    pub fn status(&self) -> u16 {
        match self {
            SignError::BadRequest(_) | SignError::Payload(_) => 400,
            SignError::Forbidden(_) => 403,
            SignError::UnknownKey(_) => 404,
            SignError::Backend { .. } | SignError::VerificationFailed(_) => 500,
        }
    }
}

/// Signs requests for the keys of a keyring under a policy.
#[derive(Debug)]
pub struct Signer {
    keyring: Keyring,
    allowed_magic_bytes: BTreeSet<u8>,
}

impl Signer {
    pub fn new(keyring: Keyring, allowed_magic_bytes: BTreeSet<u8>) -> Arc<Self> {
        Arc::new(Self {
            keyring,
            allowed_magic_bytes,
        })
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub fn public_key(&self, pkh: &PublicKeyHash) -> Result<&PublicKey, SignError> {
        Ok(&self.key(pkh)?.info.public_key)
    }

    fn key(&self, pkh: &PublicKeyHash) -> Result<&ServedKey, SignError> {
        self.keyring.get(pkh).ok_or(SignError::UnknownKey(*pkh))
    }

    pub async fn sign(&self, request: &SignRequest) -> Result<Signature, SignError> {
        let key = self.key(&request.pkh)?;
        self.check_magic_byte(&request.payload)?;
        let _payload = classify(&request.payload)?;
        let signature = key
            .backend
            .sign(&request.pkh, &request.payload, request.scheme)
            .await
            .map_err(|e| SignError::Backend {
                pkh: request.pkh,
                message: e.to_string(),
            })?;
        if !key
            .info
            .public_key
            .verify(&request.payload, &signature, request.scheme)
        {
            return Err(SignError::VerificationFailed(request.pkh));
        }
        Ok(signature)
    }

    /// Like Octez, the magic byte is checked before the payload is parsed.
    fn check_magic_byte(&self, bytes: &[u8]) -> Result<(), SignError> {
        let Some(&magic) = bytes.first() else {
            return Err(PayloadError::Empty.into());
        };
        if magic == 0x04 {
            return Err(SignError::Forbidden(
                "magic byte 0x04 (authentication request) is never signed".into(),
            ));
        }
        if !self.allowed_magic_bytes.contains(&magic) {
            return Err(SignError::Forbidden(format!(
                "magic byte 0x{magic:02X} ({}) not allowed",
                magic_byte_name(magic)
            )));
        }
        Ok(())
    }
}
