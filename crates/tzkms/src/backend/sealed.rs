//! Key-file secrets sealed by a vault key: the third secret form beside `unencrypted:` and `encrypted:`.
//!
//! `sealed:<base64url of JSON {"vault", "key", "version", "alg", "value"}>`: `value` (base64url) is the
//! secret text (`unencrypted:…`, or `encrypted:…` when a password protects it too) wrapped by the key
//! `{vault}/keys/{key}/{version}` with `alg` (RSA-OAEP-256 for Key Vault RSA keys, A256KW/A192KW/A128KW for
//! Managed HSM oct-HSM keys). The disk holds only that ciphertext; an identity the vault trusts with
//! `unwrapKey` on that key unseals it, once per start, before the key files are parsed.
//!
//! This module is the data only (the text form, and the secrets unsealed at start); the vault calls that
//! seal and unseal are `crate::sealing`, at the edge, so the backend never talks to a vault for it.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The prefix of a sealed secret.
pub const PREFIX: &str = "sealed:";

/// A sealed secret as stored in a key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedSecret {
    /// The vault or Managed HSM URL, `https://<name>.vault.azure.net`.
    pub vault: String,
    /// The key's name.
    pub key: String,
    /// The key version that wrapped the secret (a rotation keeps old versions able to unwrap).
    pub version: String,
    /// The wrap algorithm.
    pub alg: String,
    /// The wrapped secret, base64url.
    pub value: String,
}

/// Why a text is not a sealed secret.
#[derive(Debug, thiserror::Error)]
#[error("not a sealed secret: {0}")]
pub struct FormatError(String);

impl SealedSecret {
    /// Whether a secret's text is in the sealed form.
    pub fn is_sealed(text: &str) -> bool {
        text.trim_start().starts_with(PREFIX)
    }

    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let body = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| FormatError(format!("it does not start with {PREFIX}")))?;
        let json = URL_SAFE_NO_PAD
            .decode(body.trim_end_matches('='))
            .map_err(|e| FormatError(format!("the text after {PREFIX} is not base64url: {e}")))?;
        serde_json::from_slice(&json).map_err(|e| FormatError(format!("bad sealed JSON: {e}")))
    }

    /// The `sealed:…` text.
    pub fn to_text(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// The versioned key id that sealed it.
    pub fn kid(&self) -> String {
        format!("{}/keys/{}/{}", self.vault, self.key, self.version)
    }
}

/// Secrets unsealed at start, by their sealed text, so parsing (synchronous) finds them.
#[derive(Default)]
pub struct Unsealed {
    secrets: BTreeMap<String, Zeroizing<String>>,
}

impl std::fmt::Debug for Unsealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Unsealed({} secrets, [REDACTED])", self.secrets.len())
    }
}

impl Unsealed {
    /// The inner text of a sealed secret unsealed earlier.
    pub fn get(&self, sealed_text: &str) -> Option<&Zeroizing<String>> {
        self.secrets.get(sealed_text.trim())
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Whether this sealed text was unsealed already.
    pub(crate) fn contains(&self, sealed_text: &str) -> bool {
        self.secrets.contains_key(sealed_text.trim())
    }

    /// Records the inner text of a sealed text (`crate::sealing` unseals).
    pub(crate) fn insert(&mut self, sealed_text: &str, inner: Zeroizing<String>) {
        self.secrets.insert(sealed_text.trim().to_owned(), inner);
    }

    #[cfg(test)]
    pub(crate) fn insert_for_test(&mut self, sealed_text: &str, inner: &str) {
        self.insert(sealed_text, Zeroizing::new(inner.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64url(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn sample() -> SealedSecret {
        SealedSecret {
            vault: "https://v.vault.azure.net".into(),
            key: "seal".into(),
            version: "0123abcd".into(),
            alg: "RSA-OAEP-256".into(),
            value: b64url(&[1, 2, 3]),
        }
    }

    #[test]
    fn sealed_text_round_trips_and_bad_text_is_named() {
        let s = sample();
        let text = s.to_text();
        assert!(text.starts_with("sealed:") && !text.contains('='));
        assert!(SealedSecret::is_sealed(&text));
        assert_eq!(SealedSecret::parse(&format!("{text}\n")).unwrap(), s);
        assert_eq!(s.kid(), "https://v.vault.azure.net/keys/seal/0123abcd");
        for bad in ["sealed:!!", "sealed:e30", "unencrypted:edsk", "sealed:eyJ4IjoxfQ"] {
            assert!(matches!(SealedSecret::parse(bad), Err(FormatError(_))), "{bad}");
        }
    }
}
