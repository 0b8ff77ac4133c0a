//! The signing path, one step per line: find the key, classify the payload, apply the policy, sign with
//! the key's backend, verify the signature locally, answer. The HTTP server is a thin shell around this.

use std::collections::BTreeSet;
use std::sync::Arc;

use tezos::payload::magic_byte_name;
use tezos::{
    blake2b_256, classify, BlsScheme, ConsensusKind, Payload, PayloadError, PublicKey, PublicKeyHash, Round,
    Signature,
};

use crate::backend::{Keyring, ServedKey};
use crate::watermark::{Begin, MarkKey, MarkRequest, WatermarkError, WatermarkStore};

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
    #[error("{0}")]
    Watermark(#[from] WatermarkError),
    #[error(
        "watermark: identical bytes were signed before with another signature version; refusing to sign them again"
    )]
    ReplayVersionMismatch,
}

impl SignError {
    pub fn status(&self) -> u16 {
        match self {
            SignError::BadRequest(_) | SignError::Payload(_) => 400,
            SignError::Forbidden(_) => 403,
            SignError::UnknownKey(_) => 404,
            SignError::Watermark(WatermarkError::Refused { .. }) | SignError::ReplayVersionMismatch => 409,
            SignError::Backend { .. } | SignError::VerificationFailed(_) | SignError::Watermark(_) => 500,
        }
    }
}

/// A signature and how it was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signed {
    pub signature: Signature,
    /// The stored signature of an identical earlier request; the backend was not called.
    pub replayed: bool,
    pub consensus: Option<(MarkKey, MarkRequest)>,
}

/// Signs requests for the keys of a keyring under a policy and the high watermark.
#[derive(Debug)]
pub struct Signer {
    keyring: Keyring,
    allowed_magic_bytes: BTreeSet<u8>,
    watermarks: Arc<dyn WatermarkStore>,
    unprotected: BTreeSet<PublicKeyHash>,
}

impl Signer {
    /// `unprotected` lists keys whose consensus payloads are signed without a watermark check.
    pub fn new(
        keyring: Keyring,
        allowed_magic_bytes: BTreeSet<u8>,
        watermarks: Arc<dyn WatermarkStore>,
        unprotected: BTreeSet<PublicKeyHash>,
    ) -> Arc<Self> {
        Arc::new(Self {
            keyring,
            allowed_magic_bytes,
            watermarks,
            unprotected,
        })
    }

    pub fn watermarks(&self) -> &Arc<dyn WatermarkStore> {
        &self.watermarks
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub async fn public_key(&self, pkh: &PublicKeyHash) -> Result<PublicKey, SignError> {
        Ok(self.key(pkh).await?.info.public_key)
    }

    async fn key(&self, pkh: &PublicKeyHash) -> Result<ServedKey, SignError> {
        self.keyring.find(pkh).await.ok_or(SignError::UnknownKey(*pkh))
    }

    pub async fn sign(&self, request: &SignRequest) -> Result<Signed, SignError> {
        let key = self.key(&request.pkh).await?;
        self.check_magic_byte(&request.payload)?;
        let payload = classify(&request.payload)?;
        let consensus = watermark_position(request, &payload);
        let protected = consensus.filter(|_| !self.unprotected.contains(&request.pkh));
        let Some((mark_key, mark_request)) = protected else {
            let signature = self.sign_and_verify(&key, request).await?;
            return Ok(Signed {
                signature,
                replayed: false,
                consensus,
            });
        };
        match self.watermarks.begin(mark_key, mark_request).await? {
            Begin::Replay(signature) => {
                // The stored signature answers identical bytes, but only under the same BLS scheme.
                if !key
                    .info
                    .public_key
                    .verify(&request.payload, &signature, request.scheme)
                {
                    return Err(SignError::ReplayVersionMismatch);
                }
                Ok(Signed {
                    signature,
                    replayed: true,
                    consensus,
                })
            }
            Begin::Sign(ticket) => {
                let signature = self.sign_and_verify(&key, request).await?;
                self.watermarks.finish(ticket, signature).await?;
                Ok(Signed {
                    signature,
                    replayed: false,
                    consensus,
                })
            }
        }
    }

    async fn sign_and_verify(&self, key: &ServedKey, request: &SignRequest) -> Result<Signature, SignError> {
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

/// Where a payload sits for the watermark: consensus payloads by kind, legacy (Emmy) blocks and
/// endorsements, when allowed at all, under the block and attestation marks at round 0.
fn watermark_position(request: &SignRequest, payload: &Payload) -> Option<(MarkKey, MarkRequest)> {
    let (chain, kind, level, round) = match *payload {
        Payload::Consensus(c) => (c.chain_id, c.kind, c.level, c.round),
        Payload::LegacyBlock { chain_id, level } => (chain_id, ConsensusKind::Block, level, Round(0)),
        Payload::LegacyEndorsement { chain_id, level } => {
            (chain_id, ConsensusKind::Attestation, level, Round(0))
        }
        _ => return None,
    };
    Some((
        MarkKey {
            chain,
            pkh: request.pkh,
            kind,
        },
        MarkRequest {
            level,
            round,
            hash: blake2b_256(&request.payload),
        },
    ))
}
