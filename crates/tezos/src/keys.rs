//! Key types for the four curves a signer serves: public key hashes, public keys and secret keys, with
//! their base58check and binary forms, key generation and signing. ML-DSA-44 (tz5) addresses are
//! recognised too, so that operations naming them decode; tzkms holds no tz5 keys.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use ed25519_dalek::Signer as _;
use k256::ecdsa::signature::hazmat::PrehashSigner;
use rand_core::{OsRng, RngCore};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use crate::base58::{self, Base58Error, Prefix};
use crate::hash::{blake2b_160, blake2b_256};
use crate::signature::{BlsScheme, Signature, BLS_DST_POP_PROOF};

/// The signature schemes of Tezos implicit accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Curve {
    /// tz1
    Ed25519,
    /// tz2
    Secp256k1,
    /// tz3
    P256,
    /// tz4
    Bls,
    /// tz5 (protocol 025's signature V3): only as an address or a public key inside an operation. No
    /// public key, secret key or signature of this scheme can be constructed.
    MlDsa44,
}

impl Curve {
    /// The curves tzkms holds, generates and signs with keys on.
    pub const ALL: [Curve; 4] = [Curve::Ed25519, Curve::Secp256k1, Curve::P256, Curve::Bls];
    /// Every scheme a public key hash may name (`tz1…`–`tz5…`).
    pub const ADDRESSES: [Curve; 5] = [
        Curve::Ed25519,
        Curve::Secp256k1,
        Curve::P256,
        Curve::Bls,
        Curve::MlDsa44,
    ];

    /// The name used in configuration and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Curve::Ed25519 => "ed25519",
            Curve::Secp256k1 => "secp256k1",
            Curve::P256 => "p256",
            Curve::Bls => "bls",
            Curve::MlDsa44 => "ml-dsa-44",
        }
    }

    /// The tag byte of binary public key hashes and public keys.
    pub fn tag(self) -> u8 {
        match self {
            Curve::Ed25519 => 0,
            Curve::Secp256k1 => 1,
            Curve::P256 => 2,
            Curve::Bls => 3,
            Curve::MlDsa44 => 4,
        }
    }

    fn pkh_prefix(self) -> Prefix {
        match self {
            Curve::Ed25519 => base58::TZ1,
            Curve::Secp256k1 => base58::TZ2,
            Curve::P256 => base58::TZ3,
            Curve::Bls => base58::TZ4,
            Curve::MlDsa44 => base58::TZ5,
        }
    }

    /// `None` for ML-DSA-44, whose public keys tzkms does not represent.
    fn pk_prefix(self) -> Option<Prefix> {
        Some(match self {
            Curve::Ed25519 => base58::EDPK,
            Curve::Secp256k1 => base58::SPPK,
            Curve::P256 => base58::P2PK,
            Curve::Bls => base58::BLPK,
            Curve::MlDsa44 => return None,
        })
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Curve {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" | "tz1" => Ok(Curve::Ed25519),
            "secp256k1" | "tz2" | "p-256k" | "p256k" => Ok(Curve::Secp256k1),
            "p256" | "p-256" | "tz3" => Ok(Curve::P256),
            "bls" | "bls12-381" | "tz4" => Ok(Curve::Bls),
            _ => Err(KeyError::UnknownCurve(s.to_string())),
        }
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("{0}")]
    Base58(#[from] Base58Error),
    #[error("unknown curve {0:?} (expected ed25519, secp256k1, p256 or bls)")]
    UnknownCurve(String),
    #[error("not a valid {curve} public key")]
    InvalidPublicKey { curve: Curve },
    #[error("not a valid {curve} secret key")]
    InvalidSecretKey { curve: Curve },
    #[error("the ed25519 secret key's embedded public key does not match its seed")]
    InconsistentEd25519Key,
    #[error("this secret key is encrypted: a password is needed")]
    Encrypted,
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("tzkms holds no ML-DSA-44 (tz5) keys: use an ed25519, secp256k1, P-256 or BLS key")]
    UnsupportedMlDsa44,
}

/// A public key hash (`tz1…`/`tz2…`/`tz3…`/`tz4…`): BLAKE2b-160 of the public key, tagged by curve.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKeyHash {
    curve: Curve,
    hash: [u8; 20],
}

impl PublicKeyHash {
    pub fn new(curve: Curve, hash: [u8; 20]) -> Self {
        Self { curve, hash }
    }
    pub fn curve(&self) -> Curve {
        self.curve
    }
    pub fn hash(&self) -> &[u8; 20] {
        &self.hash
    }
    /// The 21-byte binary form: curve tag then hash.
    pub fn to_binary(&self) -> [u8; 21] {
        let mut out = [0u8; 21];
        out[0] = self.curve.tag();
        out[1..].copy_from_slice(&self.hash);
        out
    }
}

impl FromStr for PublicKeyHash {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let candidates = Curve::ADDRESSES.map(Curve::pkh_prefix);
        let (prefix, payload) = base58::decode_one_of(&candidates, s).map_err(|e| match e {
            Base58Error::UnknownPrefix => Base58Error::WrongPrefix {
                expected: "tz1, tz2, tz3, tz4 or tz5",
            },
            other => other,
        })?;
        let curve = Curve::ADDRESSES
            .into_iter()
            .find(|c| c.pkh_prefix() == prefix)
            .ok_or(Base58Error::UnknownPrefix)?;
        let mut hash = [0u8; 20];
        hash.copy_from_slice(&payload);
        Ok(Self { curve, hash })
    }
}

impl fmt::Display for PublicKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base58::encode(self.curve.pkh_prefix(), &self.hash))
    }
}

impl fmt::Debug for PublicKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKeyHash({self})")
    }
}

/// A public key, stored in its canonical Tezos byte form (ed25519 32 bytes, ECDSA compressed SEC1
/// 33 bytes, BLS compressed G1 48 bytes) and validated on construction.
#[derive(Clone)]
pub struct PublicKey {
    curve: Curve,
    bytes: Vec<u8>,
    /// A P-256 key as OpenSSL verifies with it, parsed once and shared by clones: decompressing the
    /// point is a fifth of a verification.
    p256: Option<Arc<crate::p256_openssl::VerifyingKey>>,
}

/// Equal when the curve and canonical bytes are (the parsed form follows from them).
impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.curve == other.curve && self.bytes == other.bytes
    }
}

impl Eq for PublicKey {}

impl Hash for PublicKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.curve.hash(state);
        self.bytes.hash(state);
    }
}

impl PublicKey {
    /// Parses and validates the canonical bytes of a public key.
    pub fn from_bytes(curve: Curve, bytes: &[u8]) -> Result<Self, KeyError> {
        let invalid = KeyError::InvalidPublicKey { curve };
        let mut p256 = None;
        let bytes = match curve {
            Curve::Ed25519 => {
                let arr: [u8; 32] = bytes.try_into().map_err(|_| invalid.clone())?;
                ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(|_| invalid)?;
                arr.to_vec()
            }
            Curve::Secp256k1 => {
                let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map_err(|_| invalid)?;
                key.to_encoded_point(true).as_bytes().to_vec()
            }
            Curve::P256 => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map_err(|_| invalid.clone())?;
                // OpenSSL parses the uncompressed point without a square root.
                let parsed =
                    crate::p256_openssl::VerifyingKey::from_sec1(key.to_encoded_point(false).as_bytes())
                        .map_err(|_| invalid)?;
                p256 = Some(Arc::new(parsed));
                key.to_encoded_point(true).as_bytes().to_vec()
            }
            Curve::Bls => {
                let key = blst::min_pk::PublicKey::key_validate(bytes).map_err(|_| invalid)?;
                key.compress().to_vec()
            }
            Curve::MlDsa44 => return Err(KeyError::UnsupportedMlDsa44),
        };
        Ok(Self { curve, bytes, p256 })
    }

    /// An EC public key from its affine coordinates (as Azure Key Vault's JWK `x` and `y` give them).
    pub fn from_affine(curve: Curve, x: &[u8], y: &[u8]) -> Result<Self, KeyError> {
        if x.len() > 32 || y.len() > 32 || !matches!(curve, Curve::Secp256k1 | Curve::P256) {
            return Err(KeyError::InvalidPublicKey { curve });
        }
        let mut sec1 = [0u8; 65];
        sec1[0] = 4;
        sec1[1 + 32 - x.len()..33].copy_from_slice(x);
        sec1[33 + 32 - y.len()..].copy_from_slice(y);
        Self::from_bytes(curve, &sec1)
    }

    pub fn curve(&self) -> Curve {
        self.curve
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn hash(&self) -> PublicKeyHash {
        PublicKeyHash::new(self.curve, blake2b_160(&self.bytes))
    }

    /// Verifies `signature` over `message` as Tezos does: ECDSA and ed25519 over BLAKE2b-256(message),
    /// BLS over the message itself under `scheme`. secp256k1 signatures must be low-S.
    pub fn verify(&self, message: &[u8], signature: &Signature, scheme: BlsScheme) -> bool {
        crate::signature::verify(self, message, signature, scheme)
    }

    /// OpenSSL's form of a P-256 key (`None` for the other curves).
    pub(crate) fn p256_openssl(&self) -> Option<&crate::p256_openssl::VerifyingKey> {
        self.p256.as_deref()
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let candidates = Curve::ALL
            .map(Curve::pk_prefix)
            .map(|p| p.unwrap_or(base58::EDPK));
        let (prefix, payload) = base58::decode_one_of(&candidates, s).map_err(|e| match e {
            Base58Error::UnknownPrefix => Base58Error::WrongPrefix {
                expected: "edpk, sppk, p2pk or BLpk",
            },
            other => other,
        })?;
        let curve = Curve::ALL
            .into_iter()
            .find(|c| c.pk_prefix() == Some(prefix))
            .ok_or(Base58Error::UnknownPrefix)?;
        Self::from_bytes(curve, &payload)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.curve.pk_prefix() {
            Some(prefix) => f.write_str(&base58::encode(prefix, &self.bytes)),
            // Not constructible (`from_bytes` refuses ML-DSA-44); printed plainly rather than guessed.
            None => write!(f, "{}:{}", self.curve, hex::encode(&self.bytes)),
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A secret key held in memory. Its bytes are zeroed on drop and it never prints them.
pub struct SecretKey {
    inner: SecretInner,
    public: PublicKey,
}

enum SecretInner {
    Ed25519(ed25519_dalek::SigningKey),
    Secp256k1(k256::ecdsa::SigningKey),
    /// Signed by [`crate::p256_openssl::sign_digest_rfc6979`]: p256's RFC 6979 signatures, with OpenSSL
    /// computing k·G.
    P256(p256::ecdsa::SigningKey),
    Bls(blst::min_pk::SecretKey),
}

impl Drop for SecretInner {
    fn drop(&mut self) {
        // ed25519-dalek, k256 and p256 zeroize their keys on drop; blst's secret key does too
        // (it implements Zeroize on drop). Nothing else to clear here.
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, [REDACTED])", self.public.hash())
    }
}

/// The raw secret scalar or seed of a key, to write it to a file or encrypt it.
pub type SecretBytes = Zeroizing<[u8; 32]>;

impl SecretKey {
    /// A fresh random key on `curve`. Panics for ML-DSA-44, which is not one of [`Curve::ALL`] and
    /// cannot be named on the command line.
    pub fn generate(curve: Curve) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        loop {
            OsRng.fill_bytes(seed.as_mut());
            if curve == Curve::Bls {
                // KeyGen (draft-irtf-cfrg-bls-signature) maps any 32-byte IKM to a valid scalar.
                let sk = blst::min_pk::SecretKey::key_gen(seed.as_ref(), &[])
                    .expect("key_gen accepts 32 bytes of IKM");
                return Self::from_inner(SecretInner::Bls(sk)).expect("a BLS key has a public key");
            }
            match Self::from_raw(curve, seed.as_ref()) {
                Ok(key) => return key,
                // A scalar out of range (about 2^-32 for P-256): draw again.
                Err(KeyError::InvalidSecretKey { .. }) => continue,
                // OpenSSL failing on a valid key would fail on every draw.
                Err(e) => panic!("generating a {curve} key: {e}"),
            }
        }
    }

    /// A key from its raw 32-byte secret: the ed25519 seed, the big-endian ECDSA scalar, or the
    /// little-endian BLS scalar (Tezos's `BLsk` byte order).
    pub fn from_raw(curve: Curve, raw: &[u8]) -> Result<Self, KeyError> {
        let invalid = KeyError::InvalidSecretKey { curve };
        let arr: Zeroizing<[u8; 32]> = Zeroizing::new(raw.try_into().map_err(|_| invalid.clone())?);
        let inner = match curve {
            Curve::Ed25519 => SecretInner::Ed25519(ed25519_dalek::SigningKey::from_bytes(&arr)),
            Curve::Secp256k1 => SecretInner::Secp256k1(
                k256::ecdsa::SigningKey::from_slice(arr.as_ref()).map_err(|_| invalid)?,
            ),
            Curve::P256 => {
                SecretInner::P256(p256::ecdsa::SigningKey::from_slice(arr.as_ref()).map_err(|_| invalid)?)
            }
            Curve::Bls => {
                let mut be = Zeroizing::new(*arr);
                be.reverse();
                SecretInner::Bls(blst::min_pk::SecretKey::from_bytes(be.as_ref()).map_err(|_| invalid)?)
            }
            Curve::MlDsa44 => return Err(KeyError::UnsupportedMlDsa44),
        };
        Self::from_inner(inner)
    }

    fn from_inner(inner: SecretInner) -> Result<Self, KeyError> {
        let public = match &inner {
            SecretInner::Ed25519(k) => PublicKey {
                curve: Curve::Ed25519,
                bytes: k.verifying_key().to_bytes().to_vec(),
                p256: None,
            },
            SecretInner::Secp256k1(k) => PublicKey {
                curve: Curve::Secp256k1,
                bytes: k.verifying_key().to_encoded_point(true).as_bytes().to_vec(),
                p256: None,
            },
            SecretInner::P256(k) => {
                PublicKey::from_bytes(Curve::P256, k.verifying_key().to_encoded_point(false).as_bytes())?
            }
            SecretInner::Bls(k) => PublicKey {
                curve: Curve::Bls,
                bytes: k.sk_to_pk().compress().to_vec(),
                p256: None,
            },
        };
        Ok(Self { inner, public })
    }

    pub fn curve(&self) -> Curve {
        self.public.curve
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The raw 32-byte secret in Tezos byte order (see [`SecretKey::from_raw`]).
    pub fn to_raw(&self) -> SecretBytes {
        let mut out = Zeroizing::new([0u8; 32]);
        match &self.inner {
            SecretInner::Ed25519(k) => out.copy_from_slice(k.as_bytes()),
            SecretInner::Secp256k1(k) => out.copy_from_slice(&k.to_bytes()),
            SecretInner::P256(k) => out.copy_from_slice(&k.to_bytes()),
            SecretInner::Bls(k) => {
                let mut be = k.to_bytes();
                out.copy_from_slice(&be);
                be.zeroize();
                out.reverse();
            }
        }
        out
    }

    /// The unencrypted base58 form (`edsk…` seed form, `spsk…`, `p2sk…`, `BLsk…`).
    pub fn to_b58(&self) -> Zeroizing<String> {
        let prefix = match &self.inner {
            SecretInner::Ed25519(_) => base58::EDSK_SEED,
            SecretInner::Secp256k1(_) => base58::SPSK,
            SecretInner::P256(..) => base58::P2SK,
            SecretInner::Bls(_) => base58::BLSK,
        };
        Zeroizing::new(base58::encode(prefix, self.to_raw().as_ref()))
    }

    /// Signs `message` the way Tezos does (see [`PublicKey::verify`]). Every signature is a function of
    /// the key and the message: ed25519 and BLS by their definition, secp256k1 and P-256 with RFC 6979
    /// nonces (P-256's are exactly the `p256` crate's, computed faster: see
    /// `p256_openssl::sign_digest_rfc6979`). ECDSA signatures are low-S. Signing the same bytes
    /// twice therefore releases one signature, not two, even where a stored signature was lost.
    pub fn sign(&self, message: &[u8], scheme: BlsScheme) -> Result<Signature, KeyError> {
        let signing = |e: String| KeyError::Signing(e);
        Ok(match &self.inner {
            SecretInner::Ed25519(k) => Signature::Ed25519(k.sign(&blake2b_256(message)).to_bytes()),
            SecretInner::Secp256k1(k) => {
                let sig: k256::ecdsa::Signature = k
                    .sign_prehash(&blake2b_256(message))
                    .map_err(|e| signing(e.to_string()))?;
                let sig = sig.normalize_s().unwrap_or(sig);
                Signature::Secp256k1(sig.to_bytes().into())
            }
            SecretInner::P256(k) => {
                let sig = crate::p256_openssl::sign_digest_rfc6979(k, &blake2b_256(message))
                    .map_err(|e| signing(e.to_string()))?;
                let sig = sig.normalize_s().unwrap_or(sig);
                Signature::P256(sig.to_bytes().into())
            }
            SecretInner::Bls(k) => {
                let sig = match scheme {
                    BlsScheme::ProofOfPossession => k.sign(message, scheme.dst(), &[]),
                    BlsScheme::Augmented => k.sign(message, scheme.dst(), self.public.as_bytes()),
                };
                Signature::Bls(sig.compress())
            }
        })
    }

    /// The blst key of a BLS secret key (`None` for the other curves): threshold signing prepends the
    /// GROUP key, not this key's own, under the AUG scheme, which [`SecretKey::sign`] cannot express.
    pub(crate) fn bls_inner(&self) -> Option<&blst::min_pk::SecretKey> {
        match &self.inner {
            SecretInner::Bls(k) => Some(k),
            _ => None,
        }
    }

    /// A BLS proof of possession of `public_key` (this key's own unless overridden), as
    /// `GET /bls_prove_possession` returns it. `None` for non-BLS keys.
    pub fn bls_prove_possession(&self, override_pk: Option<&PublicKey>) -> Option<Signature> {
        let SecretInner::Bls(k) = &self.inner else {
            return None;
        };
        let msg = override_pk.unwrap_or(&self.public).as_bytes();
        Some(Signature::Bls(k.sign(msg, BLS_DST_POP_PROOF, &[]).compress()))
    }
}

impl FromStr for SecretKey {
    type Err = KeyError;
    /// Parses an unencrypted secret key (`edsk…` in both forms, `spsk…`, `p2sk…`, `BLsk…`).
    fn from_str(s: &str) -> Result<Self, KeyError> {
        use base58::*;
        let candidates = [EDSK_SEED, EDSK_64, SPSK, P2SK, BLSK, EDESK, SPESK, P2ESK, BLESK];
        let (prefix, payload) = decode_one_of(&candidates, s)?;
        let payload = Zeroizing::new(payload);
        match prefix {
            p if p == EDSK_SEED => Self::from_raw(Curve::Ed25519, &payload),
            p if p == EDSK_64 => {
                let key = Self::from_raw(Curve::Ed25519, &payload[..32])?;
                if key.public.as_bytes() != &payload[32..] {
                    return Err(KeyError::InconsistentEd25519Key);
                }
                Ok(key)
            }
            p if p == SPSK => Self::from_raw(Curve::Secp256k1, &payload),
            p if p == P2SK => Self::from_raw(Curve::P256, &payload),
            p if p == BLSK => Self::from_raw(Curve::Bls, &payload),
            _ => Err(KeyError::Encrypted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify_on_every_curve() {
        for curve in Curve::ALL {
            let sk = SecretKey::generate(curve);
            let msg = b"\x03hello";
            let sig = sk.sign(msg, BlsScheme::ProofOfPossession).unwrap();
            assert!(
                sk.public_key().verify(msg, &sig, BlsScheme::ProofOfPossession),
                "{curve}"
            );
            assert!(!sk
                .public_key()
                .verify(b"\x03hellO", &sig, BlsScheme::ProofOfPossession));
            let again: SecretKey = sk.to_b58().parse().unwrap();
            assert_eq!(again.public_key(), sk.public_key());
        }
    }

    #[test]
    fn ecdsa_signatures_are_low_s_and_the_same_for_the_same_message() {
        let scheme = BlsScheme::default();
        for curve in [Curve::P256, Curve::Secp256k1] {
            let sk = SecretKey::generate(curve);
            let mut distinct = std::collections::HashSet::new();
            for i in 0..32u8 {
                let msg = [0x03, i];
                let sig = sk.sign(&msg, scheme).unwrap();
                assert!(sk.public_key().verify(&msg, &sig, scheme), "{curve}");
                let low = match curve {
                    Curve::P256 => p256::ecdsa::Signature::from_slice(sig.as_bytes())
                        .unwrap()
                        .normalize_s()
                        .is_none(),
                    _ => k256::ecdsa::Signature::from_slice(sig.as_bytes())
                        .unwrap()
                        .normalize_s()
                        .is_none(),
                };
                assert!(low, "{curve}: low S");
                assert_eq!(sk.sign(&msg, scheme).unwrap(), sig, "{curve}: signing again");
                distinct.insert(sig.as_bytes().to_vec());
            }
            assert_eq!(distinct.len(), 32, "{curve}: one signature per message");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// P-256 file keys sign as p256's RFC 6979 signer does, then bring S low.
        #[test]
        fn p256_signatures_are_p256s_rfc6979_signatures_brought_to_low_s(
            scalar in proptest::array::uniform32(1u8..),
            message in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let ours = SecretKey::from_raw(Curve::P256, &scalar).unwrap();
            let theirs = p256::ecdsa::SigningKey::from_slice(&scalar).unwrap();
            let expected: p256::ecdsa::Signature = theirs.sign_prehash(&blake2b_256(&message)).unwrap();
            let expected = expected.normalize_s().unwrap_or(expected);
            let sig = ours.sign(&message, BlsScheme::default()).unwrap();
            proptest::prop_assert_eq!(sig, Signature::P256(expected.to_bytes().into()));
        }
    }

    #[test]
    fn a_p256_public_key_is_the_same_key_from_either_sec1_form() {
        let sk = SecretKey::generate(Curve::P256);
        let sig = sk.sign(b"\x03same", BlsScheme::default()).unwrap();
        let p = p256::ecdsa::VerifyingKey::from_sec1_bytes(sk.public_key().as_bytes()).unwrap();
        let compressed = PublicKey::from_bytes(Curve::P256, p.to_encoded_point(true).as_bytes()).unwrap();
        let uncompressed = PublicKey::from_bytes(Curve::P256, p.to_encoded_point(false).as_bytes()).unwrap();
        assert_eq!(compressed, uncompressed);
        assert_eq!(&compressed, sk.public_key());
        let set: std::collections::HashSet<PublicKey> = [compressed.clone(), uncompressed.clone()].into();
        assert_eq!(set.len(), 1);
        for pk in [
            compressed.clone(),
            uncompressed,
            compressed.to_string().parse().unwrap(),
        ] {
            assert!(pk.verify(b"\x03same", &sig, BlsScheme::default()));
            assert!(!pk.verify(b"\x03other", &sig, BlsScheme::default()));
        }
        let other = SecretKey::generate(Curve::P256);
        assert!(!other.public_key().verify(b"\x03same", &sig, BlsScheme::default()));
    }

    #[test]
    fn secret_keys_never_print_their_bytes() {
        let sk = SecretKey::generate(Curve::P256);
        let printed = format!("{sk:?}");
        assert!(printed.contains("REDACTED"));
        assert!(!printed.contains(sk.to_b58().as_str()));
    }

    #[test]
    fn curve_names_parse() {
        assert_eq!("P256".parse::<Curve>().unwrap(), Curve::P256);
        assert!("rsa".parse::<Curve>().is_err());
    }
}
