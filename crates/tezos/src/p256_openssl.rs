//! P-256 ECDSA through the system's OpenSSL (libcrypto), whose assembly signs in about 13 µs and verifies
//! in about 40 µs where the pure-Rust `p256` crate takes about 105 µs and 155 µs; the signer signs and then
//! verifies every P-256 signature it returns (benches/formats.rs, docs/performance.md). OpenSSL 3.0 has no
//! deterministic ECDSA, so its signatures take a fresh nonce each time: see [`SigningKey::sign_digest`].

use std::sync::OnceLock;

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkey::{Private, Public};

fn group() -> Result<&'static EcGroup, ErrorStack> {
    static GROUP: OnceLock<EcGroup> = OnceLock::new();
    if let Some(group) = GROUP.get() {
        return Ok(group);
    }
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok(GROUP.get_or_init(|| group))
}

/// A P-256 public key in OpenSSL's form.
pub(crate) struct VerifyingKey(EcKey<Public>);

impl VerifyingKey {
    /// From a SEC1 point (compressed or not), which OpenSSL checks is on the curve (P-256's cofactor is
    /// 1, so that is the whole check).
    pub(crate) fn from_sec1(point: &[u8]) -> Result<Self, ErrorStack> {
        let group = group()?;
        let mut ctx = BigNumContext::new()?;
        let point = EcPoint::from_bytes(group, point, &mut ctx)?;
        Ok(Self(EcKey::from_public_key(group, &point)?))
    }

    /// Verifies the 64-byte `r‖s` over a 32-byte digest. Accepts what `p256` accepts: `r` and `s` in
    /// [1, n-1], either half of `s` (Octez does not require low S for P-256).
    pub(crate) fn verify(&self, digest: &[u8; 32], signature: &[u8]) -> bool {
        // p256's own range checks, so the accepted set is exactly the one it defines (OpenSSL makes the
        // same checks; this keeps the rule in one place we already trust).
        let Ok(parsed) = p256::ecdsa::Signature::from_slice(signature) else {
            return false;
        };
        let (r, s) = parsed.split_bytes();
        let checked = || -> Result<bool, ErrorStack> {
            let sig = EcdsaSig::from_private_components(BigNum::from_slice(&r)?, BigNum::from_slice(&s)?)?;
            sig.verify(digest, &self.0)
        };
        checked().unwrap_or(false)
    }
}

/// A P-256 private key in OpenSSL's form, made from the same scalar as the `p256` key beside it. OpenSSL
/// clears the scalar when the key is freed.
pub(crate) struct SigningKey(EcKey<Private>);

impl SigningKey {
    /// From the big-endian scalar and the SEC1 public point already derived from it; OpenSSL checks
    /// that the two agree.
    pub(crate) fn new(scalar: &[u8; 32], public_sec1: &[u8]) -> Result<Self, ErrorStack> {
        let group = group()?;
        let mut ctx = BigNumContext::new()?;
        let point = EcPoint::from_bytes(group, public_sec1, &mut ctx)?;
        let mut d = BigNum::from_slice(scalar)?;
        let key = EcKey::from_private_components(group, &d, &point);
        // EC_KEY keeps its own copy; this one is only freed, not cleared, on drop.
        d.clear();
        let key = key?;
        key.check_key()?;
        Ok(Self(key))
    }

    /// ECDSA over a 32-byte digest, `r‖s` as OpenSSL makes it (either half of `s`). The nonce is
    /// OpenSSL 3.0's: a hash of the private key, the digest and fresh random bytes, so signing the same
    /// digest twice gives two different valid signatures, and a weak random source alone does not expose
    /// the key.
    pub(crate) fn sign_digest(&self, digest: &[u8; 32]) -> Result<[u8; 64], ErrorStack> {
        let sig = EcdsaSig::sign(digest, &self.0)?;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&sig.r().to_vec_padded(32)?);
        out[32..].copy_from_slice(&sig.s().to_vec_padded(32)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
    use p256::ecdsa::{Signature, SigningKey};

    use super::*;

    /// Verification from the key's bytes, as a caller holding only the bytes would do it.
    fn verify(public_key: &[u8], digest: &[u8; 32], signature: &[u8]) -> bool {
        VerifyingKey::from_sec1(public_key).is_ok_and(|key| key.verify(digest, signature))
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn compressed(k: &SigningKey) -> Vec<u8> {
        k.verifying_key().to_encoded_point(true).as_bytes().to_vec()
    }

    /// Whatever the two implementations are given, they answer the same.
    fn agree(k: &SigningKey, digest: &[u8; 32], raw: &[u8]) -> bool {
        let ours = verify(&compressed(k), digest, raw);
        let theirs = Signature::from_slice(raw)
            .map(|s| k.verifying_key().verify_prehash(digest, &s).is_ok())
            .unwrap_or(false);
        assert_eq!(ours, theirs, "OpenSSL and p256 disagree on {}", hex::encode(raw));
        ours
    }

    #[test]
    fn accepts_what_p256_accepts_and_rejects_what_it_rejects() {
        for seed in 1..=16u8 {
            let k = key(seed);
            let digest = [seed.wrapping_mul(37); 32];
            let sig: Signature = k.sign_prehash(&digest).unwrap();
            let low: [u8; 64] = sig.to_bytes().into();
            assert!(agree(&k, &digest, &low));

            let (r, s) = sig.split_scalars();
            let high: [u8; 64] = Signature::from_scalars(r, -*s).unwrap().to_bytes().into();
            assert!(
                agree(&k, &digest, &high),
                "high S is accepted, as p256 and Octez do"
            );

            let mut other = digest;
            other[31] ^= 1;
            assert!(!agree(&k, &other, &low));
            assert!(!agree(&key(seed.wrapping_add(100)), &digest, &low));
            for byte in [0, 31, 32, 63] {
                let mut flipped = low;
                flipped[byte] ^= 0x80;
                assert!(!agree(&k, &digest, &flipped));
            }
        }
    }

    #[test]
    fn out_of_range_and_malformed_signatures_are_rejected() {
        let k = key(7);
        let digest = [3u8; 32];
        let sig: [u8; 64] = Signature::to_bytes(&k.sign_prehash(&digest).unwrap()).into();
        let n = hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551").unwrap();
        for (r, s) in [
            (vec![0u8; 32], sig[32..].to_vec()),
            (sig[..32].to_vec(), vec![0u8; 32]),
            (n.clone(), sig[32..].to_vec()),
            (sig[..32].to_vec(), n.clone()),
            (vec![0xff; 32], sig[32..].to_vec()),
        ] {
            let raw = [r, s].concat();
            assert!(!agree(&k, &digest, &raw));
        }
        assert!(!verify(&compressed(&k), &digest, &sig[..63]));
        assert!(!verify(
            &compressed(&k),
            &digest,
            &[sig.as_slice(), &[0]].concat()
        ));
        let beyond_p = [[2u8].as_slice(), &[0xff; 32]].concat();
        assert!(!verify(&beyond_p, &digest, &sig), "x is not a field element");
        assert!(!verify(&[5u8; 33], &digest, &sig), "not a SEC1 tag");
        assert!(!verify(&[], &digest, &sig));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn agrees_with_p256_on_random_keys_digests_and_corruptions(
            scalar in proptest::array::uniform32(1u8..),
            digest in proptest::array::uniform32(proptest::num::u8::ANY),
            flip in 0usize..64 * 8,
            negate_s: bool,
        ) {
            let k = SigningKey::from_slice(&scalar).unwrap();
            let sig: Signature = k.sign_prehash(&digest).unwrap();
            let sig = if negate_s {
                let (r, s) = sig.split_scalars();
                Signature::from_scalars(r, -*s).unwrap()
            } else {
                sig
            };
            let raw: [u8; 64] = sig.to_bytes().into();
            proptest::prop_assert!(agree(&k, &digest, &raw));
            let mut corrupted = raw;
            corrupted[flip / 8] ^= 1 << (flip % 8);
            proptest::prop_assert!(!agree(&k, &digest, &corrupted));
        }
    }

    #[test]
    fn openssl_signatures_verify_with_p256_and_differ_each_time() {
        for seed in 1..=8u8 {
            let k = key(seed);
            let ours = super::SigningKey::new(&[seed; 32], &compressed(&k)).unwrap();
            let digest = [seed; 32];
            let a = ours.sign_digest(&digest).unwrap();
            let b = ours.sign_digest(&digest).unwrap();
            assert_ne!(a, b, "a fresh nonce each time");
            assert!(agree(&k, &digest, &a));
            assert!(agree(&k, &digest, &b));
        }
    }

    #[test]
    fn an_openssl_key_must_match_its_public_point() {
        assert!(super::SigningKey::new(&[1; 32], &compressed(&key(2))).is_err());
        assert!(super::SigningKey::new(&[1; 32], &[5; 33]).is_err());
    }

    #[test]
    fn uncompressed_public_keys_verify_too() {
        let k = key(9);
        let digest = [5u8; 32];
        let sig: [u8; 64] = Signature::to_bytes(&k.sign_prehash(&digest).unwrap()).into();
        let uncompressed = k.verifying_key().to_encoded_point(false);
        assert!(verify(uncompressed.as_bytes(), &digest, &sig));
    }
}
