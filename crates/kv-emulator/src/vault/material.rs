//! Key material of every type the emulator holds: EC keys (see `ec`), RSA keys (`RSA`/`RSA-HSM`, 2048, 3072
//! or 4096 bits) and AES keys (`oct-HSM`, Managed HSM only), with the key wrap algorithms each type allows:
//! RSA-OAEP-256, RSA-OAEP and RSA1_5 for RSA; A128KW/A192KW/A256KW (RFC 3394) for AES. All through OpenSSL,
//! which the emulator already links for P-256.

use super::ec::{Curve, PrivateKey};
use openssl::encrypt::{Decrypter, Encrypter};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use rand_core::{OsRng, RngCore};

/// RSA modulus sizes Key Vault creates.
pub(crate) const RSA_SIZES: &[u32] = &[2048, 3072, 4096];
/// AES key sizes Managed HSM creates (`oct-HSM`).
pub(crate) const OCT_SIZES: &[u32] = &[128, 192, 256];

/// What a key version holds.
#[derive(Clone)]
pub(crate) enum KeyMaterial {
    Ec(PrivateKey),
    Rsa(PKey<Private>),
    /// Raw AES key bytes (16, 24 or 32).
    Oct(Vec<u8>),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyMaterial::Ec(k) => k.fmt(f),
            KeyMaterial::Rsa(k) => write!(f, "Rsa({} bits, [REDACTED])", k.bits()),
            KeyMaterial::Oct(k) => write!(f, "Oct({} bits, [REDACTED])", k.len() * 8),
        }
    }
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        if let KeyMaterial::Oct(bytes) = self {
            bytes.iter_mut().for_each(|b| *b = 0);
        }
    }
}

/// A key wrap algorithm (the `alg` of `wrapkey` / `unwrapkey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WrapAlg {
    RsaOaep256,
    RsaOaep,
    Rsa15,
    A128Kw,
    A192Kw,
    A256Kw,
}

impl WrapAlg {
    /// Every `alg` the REST spec's `JsonWebKeyEncryptionAlgorithm` names for wrap/unwrap that the emulator knows.
    pub(crate) fn parse(alg: &str) -> Option<WrapAlg> {
        Some(match alg {
            "RSA-OAEP-256" => WrapAlg::RsaOaep256,
            "RSA-OAEP" => WrapAlg::RsaOaep,
            "RSA1_5" => WrapAlg::Rsa15,
            "A128KW" => WrapAlg::A128Kw,
            "A192KW" => WrapAlg::A192Kw,
            "A256KW" => WrapAlg::A256Kw,
            _ => return None,
        })
    }

    fn aes_bytes(self) -> Option<usize> {
        match self {
            WrapAlg::A128Kw => Some(16),
            WrapAlg::A192Kw => Some(24),
            WrapAlg::A256Kw => Some(32),
            _ => None,
        }
    }
}

/// Why a wrap or unwrap did not happen (the handler maps each to a 400 `BadParameter`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WrapError {
    #[error("Key and encryption algorithm are incompatible: a {kty} key cannot be used with {alg}.")]
    Incompatible { kty: &'static str, alg: String },
    #[error("Invalid length of 'value': {len} bytes. {alg} with this key accepts {allowed}.")]
    Length {
        len: usize,
        alg: String,
        allowed: String,
    },
    #[error("The wrapped key could not be unwrapped with this key and algorithm (integrity check failed).")]
    Unwrap,
    #[error("The cryptographic operation failed.")]
    Internal,
}

impl KeyMaterial {
    pub(crate) fn generate_rsa(bits: u32) -> Result<KeyMaterial, WrapError> {
        let rsa = Rsa::generate(bits).map_err(|_| WrapError::Internal)?;
        PKey::from_rsa(rsa)
            .map(KeyMaterial::Rsa)
            .map_err(|_| WrapError::Internal)
    }

    pub(crate) fn generate_oct(bits: u32) -> KeyMaterial {
        let mut bytes = vec![0u8; (bits / 8) as usize];
        OsRng.fill_bytes(&mut bytes);
        KeyMaterial::Oct(bytes)
    }

    /// The EC key, if this is one.
    pub(crate) fn ec(&self) -> Option<&PrivateKey> {
        match self {
            KeyMaterial::Ec(k) => Some(k),
            _ => None,
        }
    }

    /// The JWK `kty` (software flavour; the caller appends `-HSM`).
    pub(crate) fn kty(&self) -> &'static str {
        match self {
            KeyMaterial::Ec(_) => "EC",
            KeyMaterial::Rsa(_) => "RSA",
            KeyMaterial::Oct(_) => "oct",
        }
    }

    /// RSA public modulus and exponent, big-endian.
    pub(crate) fn rsa_public(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match self {
            KeyMaterial::Rsa(k) => {
                let rsa = k.rsa().ok()?;
                Some((rsa.n().to_vec(), rsa.e().to_vec()))
            }
            _ => None,
        }
    }

    /// Key size in bits (RSA modulus, AES key), for `key_size`.
    pub(crate) fn size_bits(&self) -> Option<u32> {
        match self {
            KeyMaterial::Ec(_) => None,
            KeyMaterial::Rsa(k) => Some(k.bits()),
            KeyMaterial::Oct(k) => u32::try_from(k.len() * 8).ok(),
        }
    }

    /// The private part as stored in the emulator's state file: EC scalar, RSA PKCS#1 DER, AES bytes.
    pub(crate) fn private_bytes(&self) -> Vec<u8> {
        match self {
            KeyMaterial::Ec(k) => k.scalar_bytes().to_vec(),
            KeyMaterial::Rsa(k) => k.rsa().and_then(|r| r.private_key_to_der()).unwrap_or_default(),
            KeyMaterial::Oct(k) => k.clone(),
        }
    }

    /// The inverse of [`KeyMaterial::private_bytes`].
    pub(crate) fn from_private_bytes(
        kty: &str,
        curve: Option<Curve>,
        bytes: &[u8],
    ) -> Result<KeyMaterial, String> {
        match kty {
            "EC" => {
                let curve = curve.ok_or("an EC key needs crv")?;
                PrivateKey::from_scalar(curve, bytes)
                    .map(KeyMaterial::Ec)
                    .map_err(|e| e.to_string())
            }
            "RSA" => Rsa::private_key_from_der(bytes)
                .and_then(PKey::from_rsa)
                .map(KeyMaterial::Rsa)
                .map_err(|e| format!("RSA key: {e}")),
            "oct" if [16, 24, 32].contains(&bytes.len()) => Ok(KeyMaterial::Oct(bytes.to_vec())),
            other => Err(format!("unknown key type {other} or bad key length")),
        }
    }

    fn incompatible(&self, name: &str) -> WrapError {
        WrapError::Incompatible {
            kty: self.kty(),
            alg: name.to_owned(),
        }
    }

    /// Wraps `plain` (the key to protect) with this key.
    pub(crate) fn wrap(&self, alg: WrapAlg, alg_name: &str, plain: &[u8]) -> Result<Vec<u8>, WrapError> {
        match (self, alg.aes_bytes()) {
            (KeyMaterial::Rsa(k), None) => {
                let max = rsa_max_plaintext(k.size(), alg);
                if plain.is_empty() || plain.len() > max {
                    return Err(WrapError::Length {
                        len: plain.len(),
                        alg: alg_name.to_owned(),
                        allowed: format!("1 to {max} bytes"),
                    });
                }
                let mut enc = Encrypter::new(k).map_err(|_| WrapError::Internal)?;
                let (padding, md) = rsa_padding(alg);
                enc.set_rsa_padding(padding).map_err(|_| WrapError::Internal)?;
                if let Some(md) = md {
                    enc.set_rsa_oaep_md(md).map_err(|_| WrapError::Internal)?;
                    enc.set_rsa_mgf1_md(md).map_err(|_| WrapError::Internal)?;
                }
                let len = enc.encrypt_len(plain).map_err(|_| WrapError::Internal)?;
                let mut out = vec![0u8; len];
                let n = enc.encrypt(plain, &mut out).map_err(|_| WrapError::Internal)?;
                out.truncate(n);
                Ok(out)
            }
            (KeyMaterial::Oct(k), Some(bytes)) if k.len() == bytes => {
                if plain.len() < 16 || !plain.len().is_multiple_of(8) {
                    return Err(WrapError::Length {
                        len: plain.len(),
                        alg: alg_name.to_owned(),
                        allowed: "a multiple of 8 bytes, at least 16 (RFC 3394)".to_owned(),
                    });
                }
                let key = openssl::aes::AesKey::new_encrypt(k).map_err(|_| WrapError::Internal)?;
                let mut out = vec![0u8; plain.len() + 8];
                let n =
                    openssl::aes::wrap_key(&key, None, &mut out, plain).map_err(|_| WrapError::Internal)?;
                out.truncate(n);
                Ok(out)
            }
            _ => Err(self.incompatible(alg_name)),
        }
    }

    /// Unwraps `wrapped` with this key.
    pub(crate) fn unwrap(&self, alg: WrapAlg, alg_name: &str, wrapped: &[u8]) -> Result<Vec<u8>, WrapError> {
        match (self, alg.aes_bytes()) {
            (KeyMaterial::Rsa(k), None) => {
                let size = k.size();
                if wrapped.len() != size {
                    return Err(WrapError::Length {
                        len: wrapped.len(),
                        alg: alg_name.to_owned(),
                        allowed: format!("exactly {size} bytes (the modulus size)"),
                    });
                }
                let mut dec = Decrypter::new(k).map_err(|_| WrapError::Internal)?;
                let (padding, md) = rsa_padding(alg);
                dec.set_rsa_padding(padding).map_err(|_| WrapError::Internal)?;
                if let Some(md) = md {
                    dec.set_rsa_oaep_md(md).map_err(|_| WrapError::Internal)?;
                    dec.set_rsa_mgf1_md(md).map_err(|_| WrapError::Internal)?;
                }
                let len = dec.decrypt_len(wrapped).map_err(|_| WrapError::Internal)?;
                let mut out = vec![0u8; len];
                let n = dec.decrypt(wrapped, &mut out).map_err(|_| WrapError::Unwrap)?;
                out.truncate(n);
                Ok(out)
            }
            (KeyMaterial::Oct(k), Some(bytes)) if k.len() == bytes => {
                if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
                    return Err(WrapError::Length {
                        len: wrapped.len(),
                        alg: alg_name.to_owned(),
                        allowed: "a multiple of 8 bytes, at least 24 (RFC 3394)".to_owned(),
                    });
                }
                let key = openssl::aes::AesKey::new_decrypt(k).map_err(|_| WrapError::Internal)?;
                let mut out = vec![0u8; wrapped.len() - 8];
                let n =
                    openssl::aes::unwrap_key(&key, None, &mut out, wrapped).map_err(|_| WrapError::Unwrap)?;
                out.truncate(n);
                Ok(out)
            }
            _ => Err(self.incompatible(alg_name)),
        }
    }
}

/// Largest key RSA can wrap in one block: OAEP leaves `k - 2·hLen - 2` bytes, PKCS#1 v1.5 `k - 11`.
fn rsa_max_plaintext(k: usize, alg: WrapAlg) -> usize {
    match alg {
        WrapAlg::RsaOaep256 => k.saturating_sub(2 * 32 + 2),
        WrapAlg::RsaOaep => k.saturating_sub(2 * 20 + 2),
        _ => k.saturating_sub(11),
    }
}

/// RSA-OAEP-256: OAEP with SHA-256 and MGF1-SHA-256 (RFC 7518 §4.3); RSA-OAEP: SHA-1 for both; RSA1_5:
/// PKCS#1 v1.5 (no digest).
fn rsa_padding(alg: WrapAlg) -> (Padding, Option<MessageDigest>) {
    match alg {
        WrapAlg::RsaOaep256 => (Padding::PKCS1_OAEP, Some(MessageDigest::sha256())),
        WrapAlg::RsaOaep => (Padding::PKCS1_OAEP, Some(MessageDigest::sha1())),
        _ => (Padding::PKCS1, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_wraps_round_trip_under_every_rsa_algorithm_and_reject_other_keys_ciphertexts() {
        let key = KeyMaterial::generate_rsa(2048).unwrap();
        let other = KeyMaterial::generate_rsa(2048).unwrap();
        let secret = [7u8; 32];
        for (alg, name) in [
            (WrapAlg::RsaOaep256, "RSA-OAEP-256"),
            (WrapAlg::RsaOaep, "RSA-OAEP"),
            (WrapAlg::Rsa15, "RSA1_5"),
        ] {
            let wrapped = key.wrap(alg, name, &secret).unwrap();
            assert_eq!(wrapped.len(), 256);
            assert_eq!(key.unwrap(alg, name, &wrapped).unwrap(), secret);
            assert!(other.unwrap(alg, name, &wrapped).is_err(), "{name}");
        }
        // OAEP-256 on a 2048-bit key takes at most 190 bytes.
        assert!(key.wrap(WrapAlg::RsaOaep256, "RSA-OAEP-256", &[1u8; 190]).is_ok());
        assert!(matches!(
            key.wrap(WrapAlg::RsaOaep256, "RSA-OAEP-256", &[1u8; 191]),
            Err(WrapError::Length { len: 191, .. })
        ));
        assert!(matches!(
            key.wrap(WrapAlg::A256Kw, "A256KW", &secret),
            Err(WrapError::Incompatible { kty: "RSA", .. })
        ));
    }

    #[test]
    fn oaep_256_uses_sha256_for_both_hashes() {
        // A ciphertext made with OpenSSL's default OAEP (SHA-1) does not open as RSA-OAEP-256.
        let key = KeyMaterial::generate_rsa(2048).unwrap();
        let wrapped = key
            .wrap(WrapAlg::RsaOaep, "RSA-OAEP", b"0123456789abcdef")
            .unwrap();
        assert_eq!(
            key.unwrap(WrapAlg::RsaOaep256, "RSA-OAEP-256", &wrapped),
            Err(WrapError::Unwrap)
        );
    }

    #[test]
    fn aes_key_wrap_matches_the_rfc_3394_vector() {
        // RFC 3394 §4.6: 256 bits of key data with a 256-bit KEK.
        let kek = hex::decode("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F").unwrap();
        let data = hex::decode("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F").unwrap();
        let expected =
            hex::decode("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
                .unwrap();
        let key = KeyMaterial::Oct(kek);
        assert_eq!(key.wrap(WrapAlg::A256Kw, "A256KW", &data).unwrap(), expected);
        assert_eq!(key.unwrap(WrapAlg::A256Kw, "A256KW", &expected).unwrap(), data);
        let mut tampered = expected.clone();
        tampered[5] ^= 1;
        assert_eq!(
            key.unwrap(WrapAlg::A256Kw, "A256KW", &tampered),
            Err(WrapError::Unwrap)
        );
        assert!(matches!(
            key.wrap(WrapAlg::A128Kw, "A128KW", &data),
            Err(WrapError::Incompatible { .. })
        ));
        assert!(matches!(
            key.wrap(WrapAlg::A256Kw, "A256KW", &data[..12]),
            Err(WrapError::Length { .. })
        ));
    }

    #[test]
    fn stored_material_reloads() {
        for key in [
            KeyMaterial::generate_rsa(2048).unwrap(),
            KeyMaterial::generate_oct(256),
        ] {
            let again = KeyMaterial::from_private_bytes(key.kty(), None, &key.private_bytes()).unwrap();
            assert_eq!(again.private_bytes(), key.private_bytes());
        }
    }
}
