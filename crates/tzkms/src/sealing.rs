//! Sealing and unsealing key-file secrets with a vault key (`keys generate|import --seal-with`, and once
//! per start for every sealed file). The text form is `backend::sealed`; this module makes the vault calls,
//! so it sits at the edge with `startup`, never inside the backend.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::azure::keyvault::{b64url, b64url_decode, parse_kid, KeyVaultClient, KvError};
use crate::backend::sealed::{FormatError, SealedSecret, Unsealed};
use crate::config::{AzureConfig, Config};

/// The vault role that allows exactly what unsealing needs (keys/read, wrap, unwrap).
pub const VAULT_ROLE: &str = "Key Vault Crypto Service Encryption User";
/// The Managed HSM local role with the same rights.
pub const MHSM_ROLE: &str = "Managed HSM Crypto Service Encryption User";

/// Why a secret could not be sealed or unsealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{0}")]
    Config(String),
    #[error(
        "the vault refused to {op} with {kid} (HTTP {status} {code}): {hint}. The vault said: {message}"
    )]
    Refused {
        op: &'static str,
        kid: String,
        status: u16,
        code: String,
        hint: String,
        message: String,
    },
    #[error(
        "the vault key {kid} cannot be reached to {op}: {cause}. tzkms does not serve without the key: fix the \
         network path or the vault, then start again"
    )]
    Unreachable {
        op: &'static str,
        kid: String,
        cause: String,
    },
    #[error("{kid}: {message}")]
    Invalid { kid: String, message: String },
}

/// The vault key named by `--seal-with`: a key URL (`https://v.vault.azure.net/keys/name[/version]`) or a key
/// name (`name[/version]`) in the configured `azure.vault_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealingKey {
    pub vault: String,
    pub name: String,
    /// Empty: the latest version (the sealed file records the version used).
    pub version: String,
}

impl SealingKey {
    pub fn parse(text: &str, config: &Config) -> Result<Self, SealError> {
        let text = text.trim();
        if text.starts_with("https://") || text.starts_with("http://") {
            let (vault, _) = text.split_once("/keys/").ok_or_else(|| {
                SealError::Config(format!(
                    "{text}: a key URL looks like https://<vault>/keys/<name>"
                ))
            })?;
            let (name, version) = parse_kid(text).unwrap_or_default();
            return Self::checked(vault, name, version, text);
        }
        let vault = config.azure.as_ref().map(|a| a.vault_url.clone()).ok_or_else(|| {
            SealError::Config(format!(
                "--seal-with {text}: give the key's full URL (https://<vault>.vault.azure.net/keys/{text}) or \
                 configure [azure] vault_url"
            ))
        })?;
        let (name, version) = text.split_once('/').unwrap_or((text, ""));
        Self::checked(&vault, name.to_owned(), version.to_owned(), text)
    }

    fn checked(vault: &str, name: String, version: String, text: &str) -> Result<Self, SealError> {
        let ok = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if name.is_empty() || !ok(&name) || !ok(&version) {
            return Err(SealError::Config(format!(
                "{text}: not a vault key name (letters, digits and '-', optionally /<version>)"
            )));
        }
        Ok(Self {
            vault: vault.trim_end_matches('/').to_owned(),
            name,
            version,
        })
    }

    fn kid(&self) -> String {
        format!("{}/keys/{}/{}", self.vault, self.name, self.version)
    }
}

/// What a refusal means and what to grant, from the vault's error code.
fn refusal_hint(e: &KvError, kid: &str, op: &str, key: &str) -> Option<(u16, String, String, String)> {
    let KvError::Azure {
        status,
        code,
        message,
        ..
    } = e
    else {
        return None;
    };
    let identity = caller_of(message).unwrap_or_else(|| "tzkms's identity".to_owned());
    let role = if message.contains("managedHsm") || kid.contains(".managedhsm.") {
        MHSM_ROLE
    } else {
        VAULT_ROLE
    };
    let op_name = if op == "seal" { "wrapKey" } else { "unwrapKey" };
    let hint = match (*status, code.as_str()) {
        (403, _) if message.contains("KeyDisabled") || message.contains("disabled") => {
            format!("the key {key} is disabled: enable it (az keyvault key set-attributes --enabled true)")
        }
        (403, _) if message.contains("key_ops") || message.contains("not permitted") => format!(
            "the key {key} does not permit {op_name} (key_ops): add it with az keyvault key set-attributes \
             --ops wrapKey unwrapKey"
        ),
        (403, _) => {
            format!("{identity} lacks wrap/unwrap on key {key}: grant it the '{role}' role on that key")
        }
        (401, _) => {
            format!("{identity} was not accepted by the vault (token rejected): check [azure.credential]")
        }
        (404, _) => format!(
            "the key {key} (or this version of it) does not exist: a deleted key can be recovered within its \
             retention period (az keyvault key recover); a purged key cannot, and neither can what it sealed"
        ),
        (400, _) => {
            format!("the vault could not {op} with {key}: the file is corrupt or was sealed by another key")
        }
        _ => format!("the vault answered HTTP {status}"),
    };
    // The vault's message spans lines (RBAC denials): one line, so it reads as one log entry.
    let message = message
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    Some((*status, code.clone(), hint, message))
}

/// `appid=…;oid=…` from a ForbiddenByRbac message, to name the identity that lacks the role.
fn caller_of(message: &str) -> Option<String> {
    let start = message.find("appid=")?;
    let rest = &message[start..];
    let end = rest.find(['\r', '\n', ' ']).unwrap_or(rest.len());
    let caller = rest[..end].trim_end_matches(';');
    let oid_end = caller.find(";iss=").unwrap_or(caller.len());
    Some(format!("the identity {}", &caller[..oid_end]))
}

fn classify(e: KvError, op: &'static str, kid: &str, key: &str) -> SealError {
    if let Some((status, code, hint, message)) = refusal_hint(&e, kid, op, key) {
        return SealError::Refused {
            op,
            kid: kid.to_owned(),
            status,
            code,
            hint,
            message,
        };
    }
    SealError::Unreachable {
        op,
        kid: kid.to_owned(),
        cause: e.to_string(),
    }
}

/// Key Vault clients by vault URL, built on demand with the configured credential.
#[derive(Debug)]
pub struct Vaults<'a> {
    config: &'a Config,
    clients: HashMap<String, Arc<KeyVaultClient>>,
}

impl<'a> Vaults<'a> {
    pub fn new(config: &'a Config) -> Self {
        Self {
            config,
            clients: HashMap::new(),
        }
    }

    fn azure_config(&self, vault: &str) -> AzureConfig {
        match &self.config.azure {
            Some(a) => AzureConfig {
                vault_url: vault.to_owned(),
                ..a.clone()
            },
            None => AzureConfig::new(vault),
        }
    }

    fn budget(&self) -> Duration {
        Duration::from_millis(self.azure_config("").request_timeout_ms)
    }

    async fn client(
        &mut self,
        vault: &str,
        op: &'static str,
        kid: &str,
    ) -> Result<Arc<KeyVaultClient>, SealError> {
        if let Some(c) = self.clients.get(vault) {
            return Ok(c.clone());
        }
        let client = crate::azure::connect(&self.azure_config(vault))
            .await
            .map_err(|e| SealError::Unreachable {
                op,
                kid: kid.to_owned(),
                cause: format!("{e:#}"),
            })?;
        self.clients.insert(vault.to_owned(), client.clone());
        Ok(client)
    }

    /// Seals `secret_text` (`unencrypted:…` or `encrypted:…`) with `key`.
    pub async fn seal(
        &mut self,
        key: &SealingKey,
        secret_text: &Zeroizing<String>,
    ) -> Result<SealedSecret, SealError> {
        let kid = key.kid();
        let client = self.client(&key.vault, "seal", &kid).await?;
        let budget = self.budget();
        let bundle = client
            .get_key(&key.name, &key.version, budget)
            .await
            .map_err(|e| classify(e, "seal", &kid, &key.name))?;
        let alg = if bundle.kty.starts_with("RSA") {
            "RSA-OAEP-256"
        } else if bundle.kty.starts_with("oct") {
            "A256KW"
        } else {
            return Err(SealError::Invalid {
                kid,
                message: format!(
                    "a {} key cannot seal: use an RSA-HSM key (Key Vault) or an oct-HSM key (Managed HSM) with \
                     the wrapKey and unwrapKey operations",
                    bundle.kty
                ),
            });
        };
        let plain = padded(secret_text, alg);
        let (used, wrapped) = client
            .wrap_key(&key.name, &bundle.version, alg, &plain, budget)
            .await
            .map_err(|e| classify(e, "seal", &kid, &key.name))?;
        let version = parse_kid(&used)
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty())
            .unwrap_or(bundle.version);
        Ok(SealedSecret {
            vault: key.vault.clone(),
            key: key.name.clone(),
            version,
            alg: alg.to_owned(),
            value: b64url(&wrapped),
        })
    }

    /// Unseals one sealed secret into its inner text (`unencrypted:…` or `encrypted:…`).
    pub async fn unseal(&mut self, sealed: &SealedSecret) -> Result<Zeroizing<String>, SealError> {
        let kid = sealed.kid();
        let wrapped = b64url_decode(&sealed.value).map_err(|e| SealError::Invalid {
            kid: kid.clone(),
            message: format!("the sealed value is not base64url: {e}"),
        })?;
        let client = self.client(&sealed.vault, "unseal", &kid).await?;
        let plain = client
            .unwrap_key(&sealed.key, &sealed.version, &sealed.alg, &wrapped, self.budget())
            .await
            .map_err(|e| classify(e, "unseal", &kid, &sealed.key))?;
        let text = std::str::from_utf8(&plain).map_err(|_| SealError::Invalid {
            kid: kid.clone(),
            message: "the unsealed secret is not text: the file was not written by tzkms".into(),
        })?;
        let text = Zeroizing::new(text.trim_end_matches(' ').to_owned());
        if SealedSecret::is_sealed(&text) {
            return Err(SealError::Invalid {
                kid,
                message: "a sealed secret holds another sealed secret: refused".into(),
            });
        }
        Ok(text)
    }
}

/// AES key wrap (RFC 3394) takes whole 8-byte blocks: pad with spaces, which parsing trims.
fn padded(text: &Zeroizing<String>, alg: &str) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(text.as_bytes().to_vec());
    if alg.starts_with('A') {
        while bytes.len() < 16 || !bytes.len().is_multiple_of(8) {
            bytes.push(b' ');
        }
    }
    bytes
}

/// Unseals every sealed text among `(source, text)` (the source, e.g. a key file's path, names it in
/// errors); each distinct sealed text once. Any failure is an error naming the source, the vault key and
/// what to grant or fix.
pub async fn unseal_all(
    config: &Config,
    texts: impl IntoIterator<Item = (PathBuf, Zeroizing<String>)>,
) -> anyhow::Result<Unsealed> {
    let mut out = Unsealed::default();
    let mut vaults = Vaults::new(config);
    for (source, text) in texts {
        let text = text.trim();
        if !SealedSecret::is_sealed(text) || out.contains(text) {
            continue;
        }
        let sealed = SealedSecret::parse(text).map_err(|e| anyhow::anyhow!("{}: {e}", source.display()))?;
        let inner = vaults
            .unseal(&sealed)
            .await
            .map_err(|e| anyhow::anyhow!("{}: cannot unseal: {e}", source.display()))?;
        tracing::info!(file = %source.display(), key = %sealed.kid(), "unsealed a key file");
        out.insert(text, inner);
    }
    Ok(out)
}

/// Unseals the sealed files among `<data_dir>/keys/*.key` and the threshold share files
/// `<data_dir>/shares/*.share` (whose `secret_key` may be sealed).
pub async fn key_files(config: &Config, data_dir: &Path) -> anyhow::Result<Unsealed> {
    let mut texts = Vec::new();
    for path in crate::backend::file::key_file_paths(data_dir)? {
        crate::secret::check_private(&path)?;
        let text = Zeroizing::new(
            std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        );
        if SealedSecret::is_sealed(&text) {
            texts.push((path, text));
        }
    }
    for path in crate::threshold::shares::share_file_paths(data_dir)? {
        let text = crate::threshold::shares::secret_text(&path)?;
        if SealedSecret::is_sealed(&text) {
            texts.push((path, text));
        }
    }
    if texts.is_empty() {
        return Ok(Unsealed::default());
    }
    unseal_all(config, texts).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_with_takes_a_key_url_or_a_name_in_the_configured_vault() {
        let mut config: Config = toml::from_str("").unwrap();
        let url = SealingKey::parse("https://v.vault.azure.net/keys/seal/abc", &config).unwrap();
        assert_eq!(
            (url.vault.as_str(), url.name.as_str(), url.version.as_str()),
            ("https://v.vault.azure.net", "seal", "abc")
        );
        let latest = SealingKey::parse("https://v.vault.azure.net/keys/seal", &config).unwrap();
        assert_eq!(latest.version, "");
        let err = SealingKey::parse("seal", &config).unwrap_err().to_string();
        assert!(err.contains("vault_url"), "{err}");
        config.azure = Some(AzureConfig::new("https://w.vault.azure.net/"));
        let named = SealingKey::parse("seal/v1", &config).unwrap();
        assert_eq!(
            (named.vault.as_str(), named.name.as_str(), named.version.as_str()),
            ("https://w.vault.azure.net", "seal", "v1")
        );
        assert!(SealingKey::parse("bad_name", &config).is_err());
    }

    #[test]
    fn refusals_name_the_identity_the_key_and_the_role() {
        let forbidden = KvError::Azure {
            operation: "unwrap key",
            status: 403,
            code: "Forbidden".into(),
            message: "Caller is not authorized to perform action on resource.\r\nCaller: appid=app-1;oid=obj-2;iss=https://sts\r\nAction: 'Microsoft.KeyVault/vaults/keys/unwrap/action'".into(),
        };
        let text = classify(forbidden, "unseal", "https://v/keys/seal/1", "seal").to_string();
        assert!(
            text.contains("the identity appid=app-1;oid=obj-2 lacks wrap/unwrap on key seal"),
            "{text}"
        );
        assert!(
            text.contains("'Key Vault Crypto Service Encryption User'"),
            "{text}"
        );
        let hsm = KvError::Azure {
            operation: "unwrap key",
            status: 403,
            code: "Forbidden".into(),
            message: "Action: 'Microsoft.KeyVault/managedHsm/keys/unwrap/action'".into(),
        };
        assert!(classify(hsm, "unseal", "k", "seal")
            .to_string()
            .contains(MHSM_ROLE));
        let timeout = KvError::Timeout {
            operation: "unwrap key",
            budget: Duration::from_secs(1),
            last: "connection refused".into(),
        };
        let text = classify(timeout, "unseal", "https://v/keys/seal/1", "seal").to_string();
        assert!(
            text.contains("cannot be reached") && text.contains("connection refused"),
            "{text}"
        );
    }

    #[test]
    fn aes_wrap_input_is_padded_to_whole_blocks() {
        let text = Zeroizing::new("unencrypted:x".to_owned());
        assert_eq!(padded(&text, "RSA-OAEP-256").len(), 13);
        let p = padded(&text, "A256KW");
        assert_eq!(p.len(), 16);
        assert!(p.ends_with(b"   "));
    }
}
