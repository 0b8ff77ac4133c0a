//! Password-encrypted secret keys (`edesk`, `spesk`, `p2esk`, `BLesk`) as octez-client writes them:
//! salt(8) ‖ XSalsa20-Poly1305(key = PBKDF2-HMAC-SHA512(password, salt, 32768, 32), nonce = 0, sk).

use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use rand_core::{OsRng, RngCore};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::base58::{self, Base58Error, Prefix};
use crate::keys::{Curve, KeyError, SecretKey};

const PBKDF2_ROUNDS: u32 = 32_768;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecryptError {
    #[error("{0}")]
    Base58(#[from] Base58Error),
    #[error("wrong password (or corrupted encrypted key)")]
    WrongPassword,
    #[error("{0}")]
    Key(#[from] KeyError),
}

/// `None` for ML-DSA-44: tzkms holds no tz5 keys, encrypted or not.
fn prefix(curve: Curve) -> Option<Prefix> {
    Some(match curve {
        Curve::Ed25519 => base58::EDESK,
        Curve::Secp256k1 => base58::SPESK,
        Curve::P256 => base58::P2ESK,
        Curve::Bls => base58::BLESK,
        Curve::MlDsa44 => return None,
    })
}

fn derive_key(password: &[u8], salt: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, PBKDF2_ROUNDS, key.as_mut());
    key
}

/// Whether `text` looks like an encrypted secret key (by its base58 prefix).
pub fn is_encrypted(text: &str) -> bool {
    ["edesk", "spesk", "p2esk", "BLesk"]
        .iter()
        .any(|p| text.starts_with(p))
}

/// Decrypts an `…esk…` key with `password`.
pub fn decrypt(text: &str, password: &[u8]) -> Result<SecretKey, DecryptError> {
    let candidates: Vec<Prefix> = Curve::ALL.into_iter().filter_map(prefix).collect();
    let (found, payload) = base58::decode_one_of(&candidates, text).map_err(|e| match e {
        Base58Error::UnknownPrefix => Base58Error::WrongPrefix {
            expected: "edesk, spesk, p2esk or BLesk",
        },
        other => other,
    })?;
    let curve = Curve::ALL
        .into_iter()
        .find(|c| prefix(*c) == Some(found))
        .ok_or(Base58Error::UnknownPrefix)?;
    let (salt, sealed) = payload.split_at(8);
    let key = derive_key(password, salt);
    let cipher = XSalsa20Poly1305::new(key.as_ref().into());
    let raw = Zeroizing::new(
        cipher
            .decrypt(&Default::default(), sealed)
            .map_err(|_| DecryptError::WrongPassword)?,
    );
    Ok(SecretKey::from_raw(curve, &raw)?)
}

/// Encrypts `key` under `password` with a fresh random salt.
pub fn encrypt(key: &SecretKey, password: &[u8]) -> String {
    let mut salt = [0u8; 8];
    OsRng.fill_bytes(&mut salt);
    let derived = derive_key(password, &salt);
    let cipher = XSalsa20Poly1305::new(derived.as_ref().into());
    let sealed = cipher
        .encrypt(&Default::default(), key.to_raw().as_ref())
        .expect("XSalsa20Poly1305 encryption of 32 bytes cannot fail");
    let mut payload = Vec::with_capacity(56);
    payload.extend_from_slice(&salt);
    payload.extend_from_slice(&sealed);
    let prefix = prefix(key.curve()).expect("every secret key tzkms holds is on a curve of Curve::ALL");
    base58::encode(prefix, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_then_decrypt_returns_the_same_key() {
        for curve in Curve::ALL {
            let sk = SecretKey::generate(curve);
            let text = encrypt(&sk, b"correct horse");
            assert!(is_encrypted(&text));
            let back = decrypt(&text, b"correct horse").unwrap();
            assert_eq!(back.public_key(), sk.public_key());
            assert_eq!(decrypt(&text, b"wrong").unwrap_err(), DecryptError::WrongPassword);
        }
    }
}
