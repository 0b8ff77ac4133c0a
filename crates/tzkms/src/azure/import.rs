//! Private keys to import into a vault: a Tezos secret key (`p2sk`, `spsk`, or encrypted `p2esk`/`spesk`)
//! or an EC private key PEM as OpenSSL writes it (SEC1 `EC PRIVATE KEY`, possibly encrypted with a
//! passphrase in OpenSSL's legacy `Proc-Type: 4,ENCRYPTED` form, or PKCS#8, possibly encrypted).

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use md5::{Digest, Md5};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use pkcs8::DecodePrivateKey;
use tezos::{encrypted, Curve, SecretKey};
use zeroize::Zeroizing;

use super::keyvault::KvCurve;

/// An EC private key ready for the import call: the curve, the scalar and the public point.
pub struct ImportKey {
    pub curve: KvCurve,
    pub d: Zeroizing<[u8; 32]>,
    pub x: [u8; 32],
    pub y: [u8; 32],
}

impl std::fmt::Debug for ImportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportKey")
            .field("curve", &self.curve)
            .finish_non_exhaustive()
    }
}

impl ImportKey {
    /// The Tezos public key this will be once imported.
    pub fn public_key(&self) -> Result<tezos::PublicKey, String> {
        tezos::PublicKey::from_affine(self.curve.tezos(), &self.x, &self.y).map_err(|e| e.to_string())
    }
}

/// An import from a scalar and the uncompressed SEC1 point (`04 ‖ x ‖ y`) the curve crates give.
fn from_parts(curve: KvCurve, d: [u8; 32], uncompressed: &[u8]) -> ImportKey {
    let mut key = ImportKey {
        curve,
        d: Zeroizing::new(d),
        x: [0; 32],
        y: [0; 32],
    };
    if uncompressed.len() == 65 {
        key.x.copy_from_slice(&uncompressed[1..33]);
        key.y.copy_from_slice(&uncompressed[33..]);
    }
    key
}

fn from_p256(sk: &p256::SecretKey) -> ImportKey {
    let point = sk.public_key().to_encoded_point(false);
    from_parts(KvCurve::P256, sk.to_bytes().into(), point.as_bytes())
}

fn from_k256(sk: &k256::SecretKey) -> ImportKey {
    let point = sk.public_key().to_encoded_point(false);
    from_parts(KvCurve::P256K, sk.to_bytes().into(), point.as_bytes())
}

/// Parses `text` (a Tezos key or a PEM). Encrypted Tezos keys need `password`, encrypted PEMs
/// `passphrase`.
pub fn parse(text: &str, password: Option<&[u8]>, passphrase: Option<&[u8]>) -> Result<ImportKey, String> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return parse_pem(text, passphrase);
    }
    let b58 = text
        .strip_prefix("unencrypted:")
        .or_else(|| text.strip_prefix("encrypted:"))
        .unwrap_or(text);
    let sk: SecretKey = if encrypted::is_encrypted(b58) {
        let password = password.ok_or("this Tezos key is encrypted: set TZKMS_KEY_PASSWORD")?;
        encrypted::decrypt(b58, password).map_err(|e| e.to_string())?
    } else {
        b58.parse().map_err(|e: tezos::KeyError| e.to_string())?
    };
    let raw = sk.to_raw();
    match sk.curve() {
        Curve::P256 => Ok(from_p256(
            &p256::SecretKey::from_slice(raw.as_ref()).map_err(|e| e.to_string())?,
        )),
        Curve::Secp256k1 => Ok(from_k256(
            &k256::SecretKey::from_slice(raw.as_ref()).map_err(|e| e.to_string())?,
        )),
        other => Err(format!(
            "{other} keys cannot live in Azure Key Vault: only P-256 (tz3) and secp256k1 (tz2)"
        )),
    }
}

fn parse_pem(text: &str, passphrase: Option<&[u8]>) -> Result<ImportKey, String> {
    let need_passphrase = || "this PEM is encrypted: set TZKMS_PEM_PASSPHRASE".to_string();
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let pass = passphrase.ok_or_else(need_passphrase)?;
        if let Ok(k) = p256::SecretKey::from_pkcs8_encrypted_pem(text, pass) {
            return Ok(from_p256(&k));
        }
        return k256::SecretKey::from_pkcs8_encrypted_pem(text, pass)
            .map(|k| from_k256(&k))
            .map_err(|e| {
                format!("cannot decrypt the PKCS#8 key (wrong passphrase, or not P-256/secp256k1): {e}")
            });
    }
    if text.contains("-----BEGIN PRIVATE KEY-----") {
        if let Ok(k) = p256::SecretKey::from_pkcs8_pem(text) {
            return Ok(from_p256(&k));
        }
        return k256::SecretKey::from_pkcs8_pem(text)
            .map(|k| from_k256(&k))
            .map_err(|e| format!("not a P-256 or secp256k1 PKCS#8 key: {e}"));
    }
    let block =
        pem_block(text, "EC PRIVATE KEY").ok_or("no EC PRIVATE KEY or PRIVATE KEY block in the PEM")?;
    let der = match block.dek_info {
        Some((cipher, iv)) => {
            let pass = passphrase.ok_or_else(need_passphrase)?;
            decrypt_legacy(&cipher, &iv, pass, &block.der)?
        }
        None => Zeroizing::new(block.der),
    };
    if let Ok(k) = p256::SecretKey::from_sec1_der(&der) {
        return Ok(from_p256(&k));
    }
    k256::SecretKey::from_sec1_der(&der)
        .map(|k| from_k256(&k))
        .map_err(|_| "not a P-256 or secp256k1 EC key (or a wrong passphrase)".to_string())
}

struct PemBlock {
    der: Vec<u8>,
    dek_info: Option<(String, Vec<u8>)>,
}

/// The first `label` block: its headers (`DEK-Info`) and base64 body.
fn pem_block(text: &str, label: &str) -> Option<PemBlock> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text.split(&begin).nth(1)?.split(&end).next()?;
    let mut dek_info = None;
    let mut b64 = String::new();
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim() == "DEK-Info" {
                let (cipher, iv) = value.trim().split_once(',')?;
                dek_info = Some((cipher.trim().to_owned(), hex::decode(iv.trim()).ok()?));
            }
            continue;
        }
        b64.push_str(line);
    }
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(PemBlock { der, dek_info })
}

/// OpenSSL's legacy PEM encryption: key = EVP_BytesToKey(MD5, passphrase, salt = first 8 bytes of the
/// IV), AES-CBC with PKCS#7 padding.
fn decrypt_legacy(cipher: &str, iv: &[u8], pass: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let key_len = match cipher {
        "AES-128-CBC" => 16,
        "AES-256-CBC" => 32,
        other => {
            return Err(format!(
                "PEM cipher {other} is not supported (AES-128-CBC, AES-256-CBC are)"
            ))
        }
    };
    if iv.len() != 16 {
        return Err("PEM DEK-Info IV is not 16 bytes".into());
    }
    let mut key = Zeroizing::new(Vec::with_capacity(32));
    let mut previous: Vec<u8> = Vec::new();
    while key.len() < key_len {
        let mut h = Md5::new();
        h.update(&previous);
        h.update(pass);
        h.update(&iv[..8]);
        previous = h.finalize().to_vec();
        key.extend_from_slice(&previous);
    }
    key.truncate(key_len);
    let mut buf = Zeroizing::new(data.to_vec());
    let plain_len = match key_len {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, iv)
            .map_err(|e| e.to_string())?
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| "wrong passphrase".to_string())?
            .len(),
        _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, iv)
            .map_err(|e| e.to_string())?
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| "wrong passphrase".to_string())?
            .len(),
    };
    buf.truncate(plain_len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tezos_keys_give_the_same_public_key() {
        for curve in [Curve::P256, Curve::Secp256k1] {
            let sk = SecretKey::generate(curve);
            let k = parse(&sk.to_b58(), None, None).unwrap();
            assert_eq!(&k.public_key().unwrap(), sk.public_key());
            let esk = encrypted::encrypt(&sk, b"pw");
            let k = parse(&esk, Some(b"pw"), None).unwrap();
            assert_eq!(&k.public_key().unwrap(), sk.public_key());
            assert!(parse(&esk, None, None).is_err());
        }
        assert!(parse(&SecretKey::generate(Curve::Ed25519).to_b58(), None, None).is_err());
    }

    #[test]
    fn pkcs8_and_sec1_pems_parse() {
        use pkcs8::EncodePrivateKey;
        let sk = p256::SecretKey::random(&mut rand_core::OsRng);
        let pem = sk.to_pkcs8_pem(pkcs8::LineEnding::LF).unwrap();
        assert_eq!(
            parse(&pem, None, None).unwrap().d.as_ref(),
            &<[u8; 32]>::from(sk.to_bytes())
        );
        let sec1 = sk.to_sec1_pem(pkcs8::LineEnding::LF).unwrap();
        assert_eq!(parse(&sec1, None, None).unwrap().x, from_p256(&sk).x);
        let k = k256::SecretKey::random(&mut rand_core::OsRng);
        let enc = k
            .to_pkcs8_encrypted_pem(&mut rand_core::OsRng, b"pass", pkcs8::LineEnding::LF)
            .unwrap();
        let parsed = parse(&enc, None, Some(b"pass")).unwrap();
        assert_eq!(parsed.curve, KvCurve::P256K);
        assert!(parse(&enc, None, Some(b"wrong")).is_err());
        assert!(parse(&enc, None, None).is_err());
    }
}
