//! EC key material: P-256 and secp256k1 private keys, randomised ECDSA over a caller-supplied digest, raw r||s.
//! P-256 signs through OpenSSL: the emulator runs beside tzkms in the load tool, and pure-Rust P-256 signing
//! (8x slower) took CPU from the signer it measures.

use k256::elliptic_curve::ff::PrimeField;
use k256::elliptic_curve::scalar::IsHigh;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::Private;
use p256::ecdsa::signature::hazmat::{PrehashVerifier, RandomizedPrehashSigner};
use rand_core::{OsRng, RngCore};

/// The curves the emulator supports (the ones Tezos uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Curve {
    /// NIST P-256, `ES256`, Tezos tz3.
    #[serde(rename = "P-256")]
    P256,
    /// secp256k1, `ES256K`, Tezos tz2.
    #[serde(rename = "P-256K")]
    P256K,
}

impl Curve {
    /// JWK `crv` name as Key Vault returns it.
    pub fn jwk_name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P256K => "P-256K",
        }
    }

    /// Parse a JWK `crv`; the legacy `SECP256K1` name is an alias of `P-256K`.
    pub fn from_jwk_name(name: &str) -> Option<Curve> {
        match name {
            "P-256" => Some(Curve::P256),
            "P-256K" | "SECP256K1" => Some(Curve::P256K),
            _ => None,
        }
    }

    /// The signature algorithm that goes with the curve.
    pub fn algorithm(self) -> &'static str {
        match self {
            Curve::P256 => "ES256",
            Curve::P256K => "ES256K",
        }
    }
}

/// How the `s` half of a signature is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SPolicy {
    /// Either half at random, as Azure does (it does not normalise).
    Natural,
    /// Always the high half (`s > n/2`), to exercise a client's normalisation.
    ForceHigh,
}

/// A private key on one of the supported curves. A P-256 key is held twice: `p256` for the scalar and the
/// public point, OpenSSL for signing.
#[derive(Clone)]
pub(crate) enum PrivateKey {
    P256(p256::ecdsa::SigningKey, EcKey<Private>),
    P256K(k256::ecdsa::SigningKey),
}

/// OpenSSL's copy of a P-256 key (it checks that the scalar and the point agree).
fn openssl_p256(key: &p256::ecdsa::SigningKey) -> Result<EcKey<Private>, openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let mut ctx = BigNumContext::new()?;
    let sec1 = key.verifying_key().to_encoded_point(false);
    let point = EcPoint::from_bytes(&group, sec1.as_bytes(), &mut ctx)?;
    let mut d = BigNum::from_slice(&key.to_bytes())?;
    let ec = EcKey::from_private_components(&group, &d, &point);
    d.clear();
    let ec = ec?;
    ec.check_key()?;
    Ok(ec)
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({:?}, [REDACTED])", self.curve())
    }
}

/// Why key material was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyMaterialError {
    #[error("the private scalar d is not a valid {0} scalar")]
    InvalidScalar(&'static str),
}

impl PrivateKey {
    pub(crate) fn generate(curve: Curve) -> PrivateKey {
        match curve {
            Curve::P256 => {
                let key = p256::ecdsa::SigningKey::random(&mut OsRng);
                let fast = openssl_p256(&key).expect("OpenSSL takes a valid P-256 key");
                PrivateKey::P256(key, fast)
            }
            Curve::P256K => PrivateKey::P256K(k256::ecdsa::SigningKey::random(&mut OsRng)),
        }
    }

    /// From a big-endian private scalar (left-padded to 32 bytes if shorter).
    pub(crate) fn from_scalar(curve: Curve, d: &[u8]) -> Result<PrivateKey, KeyMaterialError> {
        let invalid = KeyMaterialError::InvalidScalar(curve.jwk_name());
        if d.is_empty() || d.len() > 32 {
            return Err(invalid);
        }
        let mut padded = [0u8; 32];
        padded[32 - d.len()..].copy_from_slice(d);
        match curve {
            Curve::P256 => {
                let key = p256::ecdsa::SigningKey::from_slice(&padded).map_err(|_| invalid.clone())?;
                let fast = openssl_p256(&key).map_err(|_| invalid)?;
                Ok(PrivateKey::P256(key, fast))
            }
            Curve::P256K => k256::ecdsa::SigningKey::from_slice(&padded)
                .map(PrivateKey::P256K)
                .map_err(|_| invalid),
        }
    }

    pub(crate) fn curve(&self) -> Curve {
        match self {
            PrivateKey::P256(..) => Curve::P256,
            PrivateKey::P256K(_) => Curve::P256K,
        }
    }

    /// The private scalar, big-endian, 32 bytes.
    pub(crate) fn scalar_bytes(&self) -> [u8; 32] {
        match self {
            PrivateKey::P256(k, _) => k.to_bytes().into(),
            PrivateKey::P256K(k) => k.to_bytes().into(),
        }
    }

    /// Affine public coordinates (x, y), 32 bytes each.
    pub(crate) fn public_xy(&self) -> ([u8; 32], [u8; 32]) {
        let point = match self {
            PrivateKey::P256(k, _) => k.verifying_key().to_encoded_point(false).as_bytes().to_vec(),
            PrivateKey::P256K(k) => k.verifying_key().to_encoded_point(false).as_bytes().to_vec(),
        };
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        // Uncompressed SEC1: 0x04 || x || y.
        if point.len() == 65 {
            x.copy_from_slice(&point[1..33]);
            y.copy_from_slice(&point[33..65]);
        }
        (x, y)
    }

    /// Randomised ECDSA over a 32-byte digest, returned as raw `r || s`: two signatures of the same digest
    /// differ. The nonce is hedged: OpenSSL hashes the key, the digest and fresh randomness for P-256; RFC 6979
    /// with added randomness (k256) for secp256k1.
    pub(crate) fn sign_digest(&self, digest: &[u8; 32], policy: SPolicy) -> Result<[u8; 64], SignError> {
        let want_high = match policy {
            SPolicy::Natural => OsRng.next_u32() & 1 == 1,
            SPolicy::ForceHigh => true,
        };
        let mut out = [0u8; 64];
        match self {
            PrivateKey::P256(_, fast) => {
                let sig = EcdsaSig::sign(digest, fast).map_err(|_| SignError)?;
                let (Ok(r), Ok(s)) = (sig.r().to_vec_padded(32), sig.s().to_vec_padded(32)) else {
                    return Err(SignError);
                };
                let sig = p256::ecdsa::Signature::from_scalars(
                    p256::FieldBytes::clone_from_slice(&r),
                    p256::FieldBytes::clone_from_slice(&s),
                )
                .map_err(|_| SignError)?;
                let (r, s) = sig.split_scalars();
                let s_high: bool = s.is_high().into();
                let s = if s_high == want_high { *s } else { -*s };
                out[..32].copy_from_slice(&r.to_repr());
                out[32..].copy_from_slice(&s.to_repr());
            }
            PrivateKey::P256K(k) => {
                let sig: k256::ecdsa::Signature = k
                    .sign_prehash_with_rng(&mut OsRng, digest)
                    .map_err(|_| SignError)?;
                let (r, s) = sig.split_scalars();
                let s_high: bool = s.is_high().into();
                let s = if s_high == want_high { *s } else { -*s };
                out[..32].copy_from_slice(&r.to_repr());
                out[32..].copy_from_slice(&s.to_repr());
            }
        }
        Ok(out)
    }

    /// ECDSA verification of raw `r || s` over a digest; either half of `s` is accepted, as Azure does.
    pub(crate) fn verify_digest(&self, digest: &[u8], signature: &[u8]) -> bool {
        match self {
            PrivateKey::P256(k, _) => match p256::ecdsa::Signature::from_slice(signature) {
                Ok(sig) => {
                    let sig = sig.normalize_s().unwrap_or(sig);
                    k.verifying_key().verify_prehash(digest, &sig).is_ok()
                }
                Err(_) => false,
            },
            PrivateKey::P256K(k) => match k256::ecdsa::Signature::from_slice(signature) {
                Ok(sig) => {
                    let sig = sig.normalize_s().unwrap_or(sig);
                    k.verifying_key().verify_prehash(digest, &sig).is_ok()
                }
                Err(_) => false,
            },
        }
    }
}

/// The ECDSA primitive failed (practically unreachable for a 32-byte digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ECDSA signing failed")]
pub(crate) struct SignError;

/// Is `s` (the second half of raw `r || s`) above n/2 for this curve?
pub fn s_is_high(curve: Curve, signature: &[u8; 64]) -> bool {
    match curve {
        Curve::P256 => p256::ecdsa::Signature::from_slice(signature)
            .map(|s| s.normalize_s().is_some())
            .unwrap_or(false),
        Curve::P256K => k256::ecdsa::Signature::from_slice(signature)
            .map(|s| s.normalize_s().is_some())
            .unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_on_both_curves_and_differ_each_time() {
        for curve in [Curve::P256, Curve::P256K] {
            let key = PrivateKey::generate(curve);
            let digest = [7u8; 32];
            let a = key.sign_digest(&digest, SPolicy::Natural).expect("sign");
            let b = key.sign_digest(&digest, SPolicy::Natural).expect("sign");
            assert_ne!(a, b);
            assert!(key.verify_digest(&digest, &a));
            assert!(key.verify_digest(&digest, &b));
            assert!(!key.verify_digest(&[8u8; 32], &a));
        }
    }

    #[test]
    fn forced_high_s_is_high_and_still_verifies() {
        for curve in [Curve::P256, Curve::P256K] {
            let key = PrivateKey::generate(curve);
            for _ in 0..8 {
                let sig = key.sign_digest(&[1u8; 32], SPolicy::ForceHigh).expect("sign");
                assert!(s_is_high(curve, &sig));
                assert!(key.verify_digest(&[1u8; 32], &sig));
            }
        }
    }

    #[test]
    fn scalar_round_trips_and_short_scalars_are_padded() {
        let key = PrivateKey::generate(Curve::P256K);
        let again = PrivateKey::from_scalar(Curve::P256K, &key.scalar_bytes()).expect("valid");
        assert_eq!(key.public_xy(), again.public_xy());
        assert!(PrivateKey::from_scalar(Curve::P256, &[1]).is_ok());
        assert!(PrivateKey::from_scalar(Curve::P256, &[0u8; 32]).is_err());
        assert!(PrivateKey::from_scalar(Curve::P256, &[1u8; 33]).is_err());
    }

    #[test]
    fn legacy_secp256k1_name_is_an_alias() {
        assert_eq!(Curve::from_jwk_name("SECP256K1"), Some(Curve::P256K));
        assert_eq!(Curve::from_jwk_name("P-384"), None);
    }
}
