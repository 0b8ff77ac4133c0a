//! Signatures: typed (`edsig`, `spsig1`, `p2sig`, `BLsig`) and generic (`sig`) forms, the BLS scheme a
//! request asks for, and verification as Octez does it.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::Verifier as _;
use k256::ecdsa::signature::hazmat::PrehashVerifier;

use crate::base58;
use crate::hash::blake2b_256;
use crate::keys::{Curve, KeyError, PublicKey};

pub(crate) const BLS_DST_POP: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
pub(crate) const BLS_DST_AUG: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_AUG_";
pub(crate) const BLS_DST_POP_PROOF: &[u8] = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// Which BLS ciphersuite a tz4 signature uses. Chosen by the `version` query parameter: 0 and 1 mean
/// message augmentation, 2, 3 or none mean proof of possession.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlsScheme {
    #[default]
    ProofOfPossession,
    Augmented,
}

impl BlsScheme {
    /// The scheme for a request's signature `version` (`None` when the client sent none).
    pub fn for_version(version: Option<SignatureVersion>) -> Self {
        match version {
            Some(SignatureVersion::V0 | SignatureVersion::V1) => BlsScheme::Augmented,
            _ => BlsScheme::ProofOfPossession,
        }
    }

    pub(crate) fn dst(self) -> &'static [u8] {
        match self {
            BlsScheme::ProofOfPossession => BLS_DST_POP,
            BlsScheme::Augmented => BLS_DST_AUG,
        }
    }
}

/// The `version` query parameter octez-client sends with each signing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVersion {
    V0,
    V1,
    V2,
    V3,
}

impl FromStr for SignatureVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "0" => Ok(Self::V0),
            "1" => Ok(Self::V1),
            "2" => Ok(Self::V2),
            "3" => Ok(Self::V3),
            _ => Err(format!(
                "unsupported signature version {s:?} (expected 0, 1, 2 or 3)"
            )),
        }
    }
}

impl SignatureVersion {
    /// Whether a key on `curve` can sign under this version. Octez's version 0 predates BLS: a tz4
    /// request with `version=0` cannot come from Octez, and its scheme would be a guess.
    pub fn check_curve(self, curve: Curve) -> Result<(), String> {
        if self == Self::V0 && curve == Curve::Bls {
            return Err(
                "signature version 0 has no BLS: a tz4 key signs with version 1 (augmented \
                        scheme, protocols 021/022), 2 (proof of possession, 023/024) or 3 (025 and later); \
                        check the octez-client or baker that sent version=0"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A signature in raw bytes: ECDSA as 64-byte `r‖s`, ed25519 as 64 bytes, BLS as a 96-byte compressed G2
/// point. `Generic` is a 64-byte signature whose curve is not stated (the `sig…` form).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    Ed25519([u8; 64]),
    Secp256k1([u8; 64]),
    P256([u8; 64]),
    Bls([u8; 96]),
    Generic([u8; 64]),
}

impl Signature {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Signature::Ed25519(b) | Signature::Secp256k1(b) | Signature::P256(b) | Signature::Generic(b) => b,
            Signature::Bls(b) => b,
        }
    }

    /// The curve the signature was made on, if its form says so.
    pub fn curve(&self) -> Option<Curve> {
        match self {
            Signature::Ed25519(_) => Some(Curve::Ed25519),
            Signature::Secp256k1(_) => Some(Curve::Secp256k1),
            Signature::P256(_) => Some(Curve::P256),
            Signature::Bls(_) => Some(Curve::Bls),
            Signature::Generic(_) => None,
        }
    }

    /// The generic `sig…` form (not defined for BLS signatures, which keep `BLsig…`).
    pub fn to_generic_b58(&self) -> String {
        match self {
            Signature::Bls(b) => base58::encode(base58::BLSIG, b),
            Signature::Ed25519(b) | Signature::Secp256k1(b) | Signature::P256(b) | Signature::Generic(b) => {
                base58::encode(base58::SIG, b)
            }
        }
    }
}

impl fmt::Display for Signature {
    /// The typed base58 form, as octez-signer returns it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Signature::Ed25519(b) => base58::encode(base58::EDSIG, b),
            Signature::Secp256k1(b) => base58::encode(base58::SPSIG, b),
            Signature::P256(b) => base58::encode(base58::P2SIG, b),
            Signature::Bls(b) => base58::encode(base58::BLSIG, b),
            Signature::Generic(b) => base58::encode(base58::SIG, b),
        };
        f.write_str(&text)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl FromStr for Signature {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        use base58::*;
        let (prefix, payload) =
            decode_one_of(&[EDSIG, SPSIG, P2SIG, BLSIG, SIG], s).map_err(|e| match e {
                Base58Error::UnknownPrefix => Base58Error::WrongPrefix {
                    expected: "edsig, spsig1, p2sig, BLsig or sig",
                },
                other => other,
            })?;
        if prefix == BLSIG {
            let mut b = [0u8; 96];
            b.copy_from_slice(&payload);
            return Ok(Signature::Bls(b));
        }
        let mut b = [0u8; 64];
        b.copy_from_slice(&payload);
        Ok(match prefix {
            p if p == EDSIG => Signature::Ed25519(b),
            p if p == SPSIG => Signature::Secp256k1(b),
            p if p == P2SIG => Signature::P256(b),
            _ => Signature::Generic(b),
        })
    }
}

pub(crate) fn verify(pk: &PublicKey, message: &[u8], sig: &Signature, scheme: BlsScheme) -> bool {
    if sig.curve().is_some_and(|c| c != pk.curve()) {
        return false;
    }
    match pk.curve() {
        Curve::Ed25519 => {
            let (Ok(key_bytes), Ok(sig_bytes)) = (
                <[u8; 32]>::try_from(pk.as_bytes()),
                <[u8; 64]>::try_from(sig.as_bytes()),
            ) else {
                return false;
            };
            let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes) else {
                return false;
            };
            key.verify(
                &blake2b_256(message),
                &ed25519_dalek::Signature::from_bytes(&sig_bytes),
            )
            .is_ok()
        }
        Curve::Secp256k1 => {
            let (Ok(key), Ok(s)) = (
                k256::ecdsa::VerifyingKey::from_sec1_bytes(pk.as_bytes()),
                k256::ecdsa::Signature::from_slice(sig.as_bytes()),
            ) else {
                return false;
            };
            // libsecp256k1, which Octez verifies with, rejects high-S signatures; so do we.
            s.normalize_s().is_none() && key.verify_prehash(&blake2b_256(message), &s).is_ok()
        }
        Curve::P256 => pk
            .p256_openssl()
            .is_some_and(|key| key.verify(&blake2b_256(message), sig.as_bytes())),
        Curve::Bls => {
            let (Ok(key), Ok(s)) = (
                blst::min_pk::PublicKey::from_bytes(pk.as_bytes()),
                blst::min_pk::Signature::from_bytes(sig.as_bytes()),
            ) else {
                return false;
            };
            let aug: &[u8] = match scheme {
                BlsScheme::ProofOfPossession => &[],
                BlsScheme::Augmented => pk.as_bytes(),
            };
            s.verify(true, message, scheme.dst(), aug, &key, true) == blst::BLST_ERROR::BLST_SUCCESS
        }
        // No ML-DSA-44 public key is ever constructed; nothing verifies under one.
        Curve::MlDsa44 => false,
    }
}

/// Verifies a BLS proof of possession of `proven` (a BLS public key) made by `signer`.
pub fn verify_bls_proof_of_possession(signer: &PublicKey, proven: &PublicKey, proof: &Signature) -> bool {
    let (Ok(key), Signature::Bls(bytes)) = (blst::min_pk::PublicKey::from_bytes(signer.as_bytes()), proof)
    else {
        return false;
    };
    let Ok(s) = blst::min_pk::Signature::from_bytes(bytes) else {
        return false;
    };
    s.verify(true, proven.as_bytes(), BLS_DST_POP_PROOF, &[], &key, true) == blst::BLST_ERROR::BLST_SUCCESS
}

#[cfg(test)]
mod tests {
    use k256::ecdsa::signature::hazmat::PrehashSigner;

    use super::*;
    use crate::keys::{Curve, SecretKey};

    /// libsecp256k1, which Octez verifies with, refuses high S: a valid ECDSA signature with the other half of
    /// S is refused, its low-S twin accepted.
    #[test]
    fn a_high_s_secp256k1_signature_is_refused_and_its_low_s_twin_accepted() {
        for i in 0..32u8 {
            let sk = SecretKey::generate(Curve::Secp256k1);
            let msg = [0x03, i, 0x42];
            let k = k256::ecdsa::SigningKey::from_slice(sk.to_raw().as_ref()).unwrap();
            let sig: k256::ecdsa::Signature = k.sign_prehash(&blake2b_256(&msg)).unwrap();
            let low = sig.normalize_s().unwrap_or(sig);
            let (r, s) = low.split_scalars();
            let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
            assert!(high.normalize_s().is_some(), "high S");
            // (r, n - s) is as valid an ECDSA signature as (r, s): only the low-S rule tells them apart.
            let scheme = BlsScheme::default();
            let low = Signature::Secp256k1(low.to_bytes().into());
            let high_bytes: [u8; 64] = high.to_bytes().into();
            assert!(sk.public_key().verify(&msg, &low, scheme));
            assert!(!sk
                .public_key()
                .verify(&msg, &Signature::Secp256k1(high_bytes), scheme));
            assert!(!sk
                .public_key()
                .verify(&msg, &Signature::Generic(high_bytes), scheme));
        }
    }

    #[test]
    fn each_version_keeps_its_bls_scheme_and_version_0_has_no_bls() {
        use SignatureVersion::*;
        let table = [
            ("0", V0, None),
            ("1", V1, Some(BlsScheme::Augmented)),
            ("2", V2, Some(BlsScheme::ProofOfPossession)),
            ("3", V3, Some(BlsScheme::ProofOfPossession)),
        ];
        for (text, version, scheme) in table {
            assert_eq!(text.parse::<SignatureVersion>(), Ok(version));
            assert_eq!(
                version.check_curve(Curve::Bls).is_ok(),
                scheme.is_some(),
                "{text}"
            );
            if let Some(scheme) = scheme {
                assert_eq!(BlsScheme::for_version(Some(version)), scheme, "{text}");
            }
            for curve in [Curve::Ed25519, Curve::Secp256k1, Curve::P256] {
                assert!(version.check_curve(curve).is_ok(), "{text} {curve}");
            }
        }
        assert_eq!(BlsScheme::for_version(None), BlsScheme::ProofOfPossession);
        let e = V0.check_curve(Curve::Bls).unwrap_err();
        assert!(e.starts_with("signature version 0 has no BLS"), "{e}");
    }

    #[test]
    fn unknown_versions_are_errors_that_list_the_known_ones() {
        for text in ["4", "-1", "v3", "", "3.0", "03 "] {
            let e = text.parse::<SignatureVersion>().unwrap_err();
            assert!(e.contains("expected 0, 1, 2 or 3"), "{text}: {e}");
        }
    }
}
