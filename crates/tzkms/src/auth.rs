//! Authentication of signing requests, Octez's scheme (octez-signer `--require-authentication`): the
//! caller signs `0x04 0x01 ‖ pkh (21 bytes) ‖ payload` with an authorized key and passes the signature
//! as `?authentication=`. Optionally an authorized key is bound to the keys it may ask for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tezos::{BlsScheme, PublicKey, PublicKeyHash, Signature};

use crate::config::AuthConfig;

/// The two bytes before the pkh in an authenticated request (Octez `signer_messages.ml`).
const AUTH_PREFIX: [u8; 2] = [0x04, 0x01];

/// The bytes an authentication signature covers.
pub fn authenticated_bytes(pkh: &PublicKeyHash, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 21 + payload.len());
    out.extend_from_slice(&AUTH_PREFIX);
    out.extend_from_slice(&pkh.to_binary());
    out.extend_from_slice(payload);
    out
}

pub use crate::peer::ClientCertificate;

#[derive(Debug, Clone)]
pub struct AuthorizedKey {
    /// Where it was configured: `auth.authorized_keys` or the alias in the authorized_keys file.
    pub name: String,
    pub public_key: PublicKey,
    pub hash: PublicKeyHash,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// HTTP 401.
    #[error(
        "authentication required: sign 0x04 0x01 ‖ pkh ‖ payload with an authorized key and pass it as ?authentication="
    )]
    Missing,
    /// HTTP 403.
    #[error("authentication: {0:?} is not a signature")]
    Malformed(String),
    /// HTTP 403.
    #[error("authentication: the signature does not verify against any authorized key")]
    NotAuthorized,
    /// HTTP 403.
    #[error("authentication: authorized key {auth} may not ask for signatures by {pkh} (auth.may_sign)")]
    NotBound { auth: PublicKeyHash, pkh: PublicKeyHash },
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read authorized keys file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("authorized keys file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("auth.required is set but no authorized key is configured (auth.authorized_keys or auth.authorized_keys_file)")]
    NoKeys,
    #[error("auth.may_sign names {0}, which is not an authorized key")]
    UnknownBinding(PublicKeyHash),
}

/// The configured authorized keys and whether requests must be authenticated.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    required: bool,
    keys: Vec<AuthorizedKey>,
    may_sign: BTreeMap<PublicKeyHash, BTreeSet<PublicKeyHash>>,
}

impl Authenticator {
    pub fn from_config(c: &AuthConfig) -> Result<Self, AuthConfigError> {
        let mut keys: Vec<AuthorizedKey> = c
            .authorized_keys
            .iter()
            .map(|pk| AuthorizedKey {
                name: "auth.authorized_keys".into(),
                hash: pk.hash(),
                public_key: pk.clone(),
            })
            .collect();
        if let Some(path) = &c.authorized_keys_file {
            keys.extend(read_octez_file(path)?);
        }
        keys.sort_by_key(|k| k.hash);
        keys.dedup_by_key(|k| k.hash);
        if c.required && keys.is_empty() {
            return Err(AuthConfigError::NoKeys);
        }
        let mut may_sign = BTreeMap::new();
        for (auth, list) in &c.may_sign {
            if !keys.iter().any(|k| k.hash == *auth) {
                return Err(AuthConfigError::UnknownBinding(*auth));
            }
            may_sign.insert(*auth, list.0.iter().copied().collect());
        }
        Ok(Self {
            required: c.required,
            keys,
            may_sign,
        })
    }

    pub fn required(&self) -> bool {
        self.required
    }

    pub fn keys(&self) -> &[AuthorizedKey] {
        &self.keys
    }

    /// The keys a bound authorized key may ask for; None when it may ask for any.
    pub fn binding(&self, auth: &PublicKeyHash) -> Option<&BTreeSet<PublicKeyHash>> {
        self.may_sign.get(auth)
    }

    /// What `GET /authorized_keys` lists: None (`{}`) when authentication is not required.
    pub(crate) fn advertised(&self) -> Option<Vec<PublicKeyHash>> {
        self.required.then(|| self.keys.iter().map(|k| k.hash).collect())
    }

    /// Checks a request's `authentication`. Returns the authorized key that signed it, or None when
    /// authentication is not required (a signature sent anyway is then ignored, as Octez does).
    pub fn authenticate(
        &self,
        pkh: &PublicKeyHash,
        payload: &[u8],
        authentication: Option<&str>,
        scheme: BlsScheme,
    ) -> Result<Option<PublicKeyHash>, AuthError> {
        if !self.required {
            return Ok(None);
        }
        let text = authentication.ok_or(AuthError::Missing)?;
        let signature: Signature = text.parse().map_err(|_| AuthError::Malformed(truncate(text)))?;
        let message = authenticated_bytes(pkh, payload);
        let key = self
            .keys
            .iter()
            .find(|k| k.public_key.verify(&message, &signature, scheme))
            .ok_or(AuthError::NotAuthorized)?;
        if let Some(allowed) = self.may_sign.get(&key.hash) {
            if !allowed.contains(pkh) {
                return Err(AuthError::NotBound {
                    auth: key.hash,
                    pkh: *pkh,
                });
            }
        }
        Ok(Some(key.hash))
    }
}

/// Echoes at most a few dozen characters of what a caller sent.
fn truncate(text: &str) -> String {
    text.chars().take(40).collect()
}

/// octez-signer's `<base_dir>/authorized_keys`: `[{"name": "...", "value": "<public key>"}, …]`. Octez
/// may also write the value as `unencrypted:<pk>`; both are read.
fn read_octez_file(path: &Path) -> Result<Vec<AuthorizedKey>, AuthConfigError> {
    #[derive(serde::Deserialize)]
    struct Alias {
        name: String,
        value: String,
    }
    let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |message: String| AuthConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let aliases: Vec<Alias> = serde_json::from_str(&text)
        .map_err(|e| invalid(format!("not an octez-signer authorized_keys file: {e}")))?;
    aliases
        .into_iter()
        .map(|a| {
            let value = a.value.strip_prefix("unencrypted:").unwrap_or(&a.value);
            let public_key: PublicKey = value.parse().map_err(|e| invalid(format!("{:?}: {e}", a.name)))?;
            Ok(AuthorizedKey {
                name: a.name,
                hash: public_key.hash(),
                public_key,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn vector() -> serde_json::Value {
        let path = std::path::PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../../shared/vectors/signatures.json");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v["authentication"][0].clone()
    }

    fn authenticator(toml: &str) -> Result<Authenticator, AuthConfigError> {
        Authenticator::from_config(&Config::parse(toml).unwrap().auth)
    }

    #[test]
    fn the_shared_vector_authenticates_and_every_alteration_fails() {
        let v = vector();
        let auth = authenticator(&format!(
            "[auth]\nrequired = true\nauthorized_keys = [\"{}\"]\n",
            v["authorized_key"]["pk"].as_str().unwrap()
        ))
        .unwrap();
        let pkh: PublicKeyHash = v["signer_pkh"].as_str().unwrap().parse().unwrap();
        let data = hex::decode(v["data_hex"].as_str().unwrap()).unwrap();
        assert_eq!(
            hex::encode(authenticated_bytes(&pkh, &data)),
            v["auth_bytes_hex"].as_str().unwrap()
        );
        let scheme = BlsScheme::default();
        for sig in [&v["signature"], &v["signature_generic"]] {
            assert_eq!(
                auth.authenticate(&pkh, &data, sig.as_str(), scheme),
                Ok(Some(
                    v["authorized_key"]["pkh"].as_str().unwrap().parse().unwrap()
                ))
            );
        }
        let mut other_data = data.clone();
        *other_data.last_mut().unwrap() ^= 1;
        assert_eq!(
            auth.authenticate(&pkh, &other_data, v["signature"].as_str(), scheme),
            Err(AuthError::NotAuthorized)
        );
        let other_pkh: PublicKeyHash = v["authorized_key"]["pkh"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            auth.authenticate(&other_pkh, &data, v["signature"].as_str(), scheme),
            Err(AuthError::NotAuthorized)
        );
        assert_eq!(
            auth.authenticate(&pkh, &data, None, scheme),
            Err(AuthError::Missing)
        );
        assert!(matches!(
            auth.authenticate(&pkh, &data, Some("edsigNOPE"), scheme),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn a_key_not_in_the_list_is_not_authorized() {
        let v = vector();
        let stranger = tezos::SecretKey::generate(tezos::Curve::P256);
        let auth = authenticator(&format!(
            "[auth]\nrequired = true\nauthorized_keys = [\"{}\"]\n",
            stranger.public_key()
        ))
        .unwrap();
        let pkh: PublicKeyHash = v["signer_pkh"].as_str().unwrap().parse().unwrap();
        let data = hex::decode(v["data_hex"].as_str().unwrap()).unwrap();
        assert_eq!(
            auth.authenticate(&pkh, &data, v["signature"].as_str(), BlsScheme::default()),
            Err(AuthError::NotAuthorized)
        );
    }

    #[test]
    fn bound_keys_may_only_ask_for_their_keys() {
        let v = vector();
        let auth_pkh = v["authorized_key"]["pkh"].as_str().unwrap();
        let other = tezos::SecretKey::generate(tezos::Curve::Ed25519)
            .public_key()
            .hash();
        let auth = authenticator(&format!(
            "[auth]\nrequired = true\nauthorized_keys = [\"{}\"]\n[auth.may_sign]\n{auth_pkh} = [\"{other}\"]\n",
            v["authorized_key"]["pk"].as_str().unwrap()
        ))
        .unwrap();
        let pkh: PublicKeyHash = v["signer_pkh"].as_str().unwrap().parse().unwrap();
        let data = hex::decode(v["data_hex"].as_str().unwrap()).unwrap();
        let err = auth
            .authenticate(&pkh, &data, v["signature"].as_str(), BlsScheme::default())
            .unwrap_err();
        assert!(matches!(err, AuthError::NotBound { .. }), "{err}");
        assert!(err.to_string().contains("auth.may_sign"));
    }

    #[test]
    fn octez_authorized_keys_files_are_read_and_advertised_by_hash() {
        let v = vector();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorized_keys");
        let pk = v["authorized_key"]["pk"].as_str().unwrap();
        std::fs::write(&path, format!(r#"[{{"name":"baker-host","value":"{pk}"}}]"#)).unwrap();
        let auth = authenticator(&format!(
            "[auth]\nrequired = true\nauthorized_keys_file = \"{}\"\n",
            path.display()
        ))
        .unwrap();
        assert_eq!(auth.keys()[0].name, "baker-host");
        assert_eq!(
            auth.advertised().unwrap()[0].to_string(),
            v["authorized_key"]["pkh"].as_str().unwrap()
        );
        assert_eq!(authenticator("").unwrap().advertised(), None);
    }

    #[test]
    fn misconfigurations_are_errors() {
        assert!(matches!(
            authenticator("[auth]\nrequired = true\n"),
            Err(AuthConfigError::NoKeys)
        ));
        let pk = tezos::SecretKey::generate(tezos::Curve::Ed25519)
            .public_key()
            .clone();
        let stranger = tezos::SecretKey::generate(tezos::Curve::Ed25519)
            .public_key()
            .hash();
        assert!(matches!(
            authenticator(&format!(
                "[auth]\nrequired = true\nauthorized_keys = [\"{pk}\"]\n[auth.may_sign]\n{stranger} = []\n"
            )),
            Err(AuthConfigError::UnknownBinding(_))
        ));
    }
}
