//! P-256 ECDSA with the system's OpenSSL (libcrypto) doing the point arithmetic: its assembly verifies in
//! about 40 µs where the pure-Rust `p256` crate takes about 155 µs, and computes the k·G of a signature for
//! a fraction of p256's 105 µs; the signer signs and then verifies every P-256 signature it returns
//! (benches/formats.rs, docs/performance.md). OpenSSL 3.0 has no deterministic ECDSA, so signatures take
//! their RFC 6979 nonce and scalar arithmetic from the RustCrypto crates: see [`sign_digest_rfc6979`].

use std::sync::OnceLock;

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkey::Public;

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

/// RFC 6979 ECDSA over a 32-byte digest: the signature the pure-Rust `p256` crate's `sign_prehash` makes
/// (same nonce, same `r‖s`, `s` not yet brought to low S), with its one costly step, k·G, done by OpenSSL.
///
/// - k: `rfc6979::generate_k` with HMAC-SHA-256 over the secret scalar and the digest, exactly as `ecdsa`
///   0.16 calls it for p256 (the digest is passed as is, not reduced mod n).
/// - k·G: OpenSSL's P-256 assembly (`ecp_nistz256`), constant time for the generator, on a secure-heap
///   BIGNUM flagged constant-time and cleared after use. OpenSSL 3.0 reads k's bytes with `BN_bin2bn`,
///   whose loop skips leading zero bytes: the same residual leak as OpenSSL 3.0's own nonce path (which
///   also reduces its nonce with a variable-time `BN_mod`), and nothing else varies with k.
/// - s = k⁻¹(z + r·d) mod n: p256's `Scalar`, whose inversion is a fixed exponentiation (constant time).
pub(crate) fn sign_digest_rfc6979(
    key: &p256::ecdsa::SigningKey,
    digest: &[u8; 32],
) -> Result<p256::ecdsa::Signature, SignError> {
    use p256::elliptic_curve::ff::PrimeField;
    use p256::elliptic_curve::ops::Reduce;
    use p256::elliptic_curve::{Curve, FieldBytesEncoding};
    use p256::{FieldBytes, NistP256, Scalar, U256};
    use zeroize::Zeroizing;

    let d: &Scalar = key.as_nonzero_scalar().as_ref();
    let z = FieldBytes::from(*digest);
    let order: FieldBytes = FieldBytesEncoding::<NistP256>::encode_field_bytes(&NistP256::ORDER);
    let k_bytes = Zeroizing::new(rfc6979::generate_k::<sha2::Sha256, _>(
        &Zeroizing::new(d.to_repr()),
        &order,
        &z,
        &[],
    ));
    // generate_k returns 0 < k < n, so the conversion always succeeds.
    let k = Option::<Scalar>::from(Scalar::from_repr(*k_bytes)).ok_or(SignError::Nonce)?;

    let x = {
        let group = group()?;
        let mut ctx = BigNumContext::new_secure()?;
        let mut k_bn = BigNum::new_secure()?;
        k_bn.set_const_time();
        k_bn.copy_from_slice(k_bytes.as_slice())?;
        k_bn.set_const_time();
        let mut point = EcPoint::new(group)?;
        let multiplied = point.mul_generator2(group, &k_bn, &mut ctx);
        k_bn.clear();
        multiplied?;
        let (mut x, mut y) = (BigNum::new()?, BigNum::new()?);
        point.affine_coordinates(group, &mut x, &mut y, &mut ctx)?;
        FieldBytes::clone_from_slice(&x.to_vec_padded(32)?)
    };
    let r = <Scalar as Reduce<U256>>::reduce_bytes(&x);
    let z = <Scalar as Reduce<U256>>::reduce_bytes(&z);
    let k_inv = Option::<Scalar>::from(k.invert()).ok_or(SignError::Nonce)?;
    let s = k_inv * (z + r * d);
    // from_scalars refuses r = 0 or s = 0 (probability about 2^-256 each), as p256 does.
    p256::ecdsa::Signature::from_scalars(r, s).map_err(|_| SignError::Nonce)
}

/// Why [`sign_digest_rfc6979`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignError {
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] ErrorStack),
    #[error("the RFC 6979 nonce gave r = 0 or s = 0")]
    Nonce,
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn rfc6979_signatures_are_exactly_p256s_on_random_keys_and_digests(
            scalar in proptest::array::uniform32(1u8..),
            digest in proptest::array::uniform32(proptest::num::u8::ANY),
        ) {
            let k = SigningKey::from_slice(&scalar).unwrap();
            let theirs: Signature = k.sign_prehash(&digest).unwrap();
            let ours = sign_digest_rfc6979(&k, &digest).unwrap();
            proptest::prop_assert_eq!(ours, theirs);
            proptest::prop_assert_eq!(sign_digest_rfc6979(&k, &digest).unwrap(), ours);
        }
    }

    #[test]
    fn rfc6979_signatures_match_p256_at_the_edges_of_the_digest_and_the_scalar() {
        let n_minus_1 =
            hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632550").unwrap();
        let scalars = [
            vec![0u8; 31].into_iter().chain([1]).collect::<Vec<u8>>(),
            n_minus_1.clone(),
        ];
        // Digests at and above the group order are reduced in s but passed whole to the nonce, as p256 does.
        let digests = [[0u8; 32], [0xff; 32], n_minus_1.clone().try_into().unwrap(), {
            let mut n: [u8; 32] = n_minus_1.clone().try_into().unwrap();
            n[31] = 0x51;
            n
        }];
        for scalar in &scalars {
            let k = SigningKey::from_slice(scalar).unwrap();
            for digest in &digests {
                let theirs: Signature = k.sign_prehash(digest).unwrap();
                assert_eq!(
                    sign_digest_rfc6979(&k, digest).unwrap(),
                    theirs,
                    "{}",
                    hex::encode(digest)
                );
            }
        }
    }

    /// RFC 6979 appendix A.2.5 (P-256, SHA-256): the published r and s, before any low-S step.
    #[test]
    fn rfc6979_appendix_a25_vectors_reproduce() {
        use sha2::Digest as _;
        let x = hex::decode("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721").unwrap();
        let k = SigningKey::from_slice(&x).unwrap();
        for (message, expected) in [
            (
                "sample",
                "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716\
                 f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8",
            ),
            (
                "test",
                "f1abb023518351cd71d881567b1ea663ed3efcf6c5132b354f28d3b0b7d38367\
                 019f4113742a2b14bd25926b49c649155f267e60d3814b4c0cc84250e46f0083",
            ),
        ] {
            let digest: [u8; 32] = sha2::Sha256::digest(message.as_bytes()).into();
            let sig = sign_digest_rfc6979(&k, &digest).unwrap();
            assert_eq!(
                hex::encode(sig.to_bytes()),
                expected.replace(' ', ""),
                "{message}"
            );
        }
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
