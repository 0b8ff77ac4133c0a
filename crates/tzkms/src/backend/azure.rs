//! Keys in Azure Key Vault (Premium, HSM-protected) or Managed HSM: P-256 keys serve as tz3, P-256K
//! (secp256k1) keys as tz2, every enabled version of a key under its own address. The vault signs the BLAKE2b-256 digest; the raw `r‖s` it returns is brought to
//! low S (Octez rejects high-S secp256k1 signatures) and verified locally by the signer before release.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tezos::{blake2b_256, BlsScheme, PublicKey, PublicKeyHash, Signature};
use tokio::sync::Mutex;

use super::{BackendError, BoxFuture, KeyBackend, KeyInfo};
use crate::azure::keyvault::{KeyBundle, KeyVaultClient, KvCurve, KvError};

/// At most one refresh for an unknown key in this interval, so a stream of unknown addresses cannot hammer
/// the vault.
const UNKNOWN_KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Budget for listing and reading keys.
const READ_BUDGET: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct VaultKey {
    name: String,
    version: String,
    curve: KvCurve,
    public_key: PublicKey,
}

/// Which keys of the vault to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySelection {
    pub name: String,
    /// A pinned version, else every enabled version.
    pub version: Option<String>,
}

impl KeySelection {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, version) = match text.split_once('/') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (text, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("{text:?}: a key name is letters, digits and '-'"));
        }
        if version
            .as_ref()
            .is_some_and(|v| v.len() != 32 || !v.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(format!("{text:?}: a pinned version is 32 hex characters"));
        }
        Ok(Self {
            name: name.to_owned(),
            version,
        })
    }
}

#[derive(Debug)]
pub struct AzureBackend {
    client: Arc<KeyVaultClient>,
    selection: Vec<KeySelection>,
    sign_budget: Duration,
    keys: RwLock<HashMap<PublicKeyHash, VaultKey>>,
    /// When an unknown address last made us re-list the vault.
    last_unknown_refresh: Mutex<Option<Instant>>,
}

/// The result of looking at one key of the vault.
fn key_from_bundle(bundle: &KeyBundle) -> Result<(KvCurve, PublicKey), String> {
    if !bundle.kty.starts_with("EC") {
        return Err(format!("key type {} is not EC", bundle.kty));
    }
    let crv = bundle.crv.as_deref().unwrap_or("");
    let curve = KvCurve::from_crv(crv).ok_or_else(|| format!("curve {crv} is not P-256 or P-256K"))?;
    bundle.usable_now()?;
    let pk = PublicKey::from_affine(curve.tezos(), &bundle.x, &bundle.y).map_err(|e| e.to_string())?;
    Ok((curve, pk))
}

impl AzureBackend {
    /// Lists the vault's keys once (which also warms the connection and the token).
    pub async fn start(
        client: Arc<KeyVaultClient>,
        selection: Vec<KeySelection>,
        sign_budget: Duration,
    ) -> Result<Arc<Self>, KvError> {
        let backend = Arc::new(Self {
            client,
            selection,
            sign_budget,
            keys: RwLock::new(HashMap::new()),
            last_unknown_refresh: Mutex::new(None),
        });
        backend.reload().await?;
        Ok(backend)
    }

    /// Re-lists the vault every `interval` in the background, while the backend lives.
    pub(crate) fn spawn_refresher(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(backend) = weak.upgrade() else { return };
                if let Err(e) = backend.reload().await {
                    tracing::warn!(error = %e, "azure: re-listing keys failed; serving the keys known so far");
                }
            }
        });
    }

    pub fn client(&self) -> &Arc<KeyVaultClient> {
        &self.client
    }

    /// Asks the vault for one cheap read whenever it has not answered for `interval` (or its last call
    /// failed), so readiness knows about a vault that stopped answering before a signature needs it. A
    /// baker signing every few seconds never triggers a probe; an idle one pays one read per interval.
    pub(crate) fn spawn_prober(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        let tick = (interval / 4).max(Duration::from_millis(20));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(backend) = weak.upgrade() else { return };
                let stats = backend.client.stats();
                let stale = stats.last_answer().is_none_or(|t| t.elapsed() >= interval);
                if stale || stats.failing() {
                    // Read a key it serves: a role scoped to single keys may not list the vault.
                    let served = backend
                        .keys
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .values()
                        .next()
                        .map(|k| (k.name.clone(), k.version.clone()));
                    let budget = READ_BUDGET.min(interval.max(Duration::from_secs(1)));
                    let probed = match served {
                        Some((name, version)) => backend.client.probe_key(&name, &version, budget).await,
                        None => backend.client.probe(budget).await,
                    };
                    if let Err(e) = probed {
                        tracing::warn!(vault = stats.vault(), error = %e, "azure: the vault does not answer");
                    }
                }
            }
        });
    }

    /// Reads the selected keys (or all keys) from the vault and replaces the served set: every enabled
    /// version of each key (a pinned selection: that version only), so a rotation adds an address and never
    /// silently swaps one. A version that cannot be used is skipped with one log line; a key the vault could
    /// not be asked about keeps the versions served so far; neither aborts the reload. Addresses that stop
    /// being served, and new versions of a served key, are logged as warnings.
    pub async fn reload(&self) -> Result<usize, KvError> {
        let wanted: Vec<KeySelection> = if self.selection.is_empty() {
            self.client
                .list_keys(READ_BUDGET)
                .await?
                .into_iter()
                .map(|item| KeySelection {
                    name: item.name,
                    version: None,
                })
                .collect()
        } else {
            self.selection.clone()
        };
        let previous = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut keys = HashMap::new();
        let mut dropped: HashMap<(String, String), String> = HashMap::new();
        for sel in wanted {
            let read = match &sel.version {
                Some(version) => self.read_version(&sel.name, version, &mut keys).await,
                None => {
                    self.read_enabled_versions(&sel.name, &previous, &mut keys, &mut dropped)
                        .await
                }
            };
            if let Err(e) = read {
                let kept: Vec<_> = previous
                    .iter()
                    .filter(|(_, k)| k.name.eq_ignore_ascii_case(&sel.name))
                    .map(|(pkh, k)| (*pkh, k.clone()))
                    .collect();
                // 404: the key (or the pinned version) is gone; report_changes names what stops being served.
                if kept.is_empty() || e.status() == Some(404) {
                    tracing::warn!(key = %sel.name, error = %e, "azure: key not served");
                } else {
                    tracing::warn!(
                        key = %sel.name, error = %e,
                        "azure: reading the key failed; serving the versions known so far"
                    );
                    keys.extend(kept);
                }
            }
        }
        report_changes(&previous, &keys, &dropped);
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(n)
    }

    /// One pinned version. Unusable (disabled, expired, not EC): skipped with a log line.
    async fn read_version(
        &self,
        name: &str,
        version: &str,
        keys: &mut HashMap<PublicKeyHash, VaultKey>,
    ) -> Result<(), KvError> {
        let bundle = self.client.get_key(name, version, READ_BUDGET).await?;
        match key_from_bundle(&bundle) {
            Ok((curve, public_key)) => {
                keys.insert(
                    public_key.hash(),
                    VaultKey {
                        name: bundle.name.clone(),
                        version: bundle.version.clone(),
                        curve,
                        public_key,
                    },
                );
            }
            Err(why) => tracing::info!(key = %name, version, "azure: key not served: {why}"),
        }
        Ok(())
    }

    /// Every enabled version of `name`. A version's public key never changes, so only versions not served
    /// yet are read (one list per key and refresh, plus one read per new version).
    async fn read_enabled_versions(
        &self,
        name: &str,
        previous: &HashMap<PublicKeyHash, VaultKey>,
        keys: &mut HashMap<PublicKeyHash, VaultKey>,
        dropped: &mut HashMap<(String, String), String>,
    ) -> Result<(), KvError> {
        let versions = match self.client.list_versions(name, READ_BUDGET).await {
            Ok(versions) => versions,
            Err(e) if e.status() == Some(403) => {
                // A role that may read the key but not list its versions: the latest version, and the
                // versions served so far while a read says they are still usable.
                tracing::warn!(
                    key = %name, error = %e,
                    "azure: cannot list the key's versions; serving its latest version and the versions \
                     served so far only (grant keys/read on the key to find every enabled version)"
                );
                let known: Vec<String> = previous
                    .values()
                    .filter(|k| k.name.eq_ignore_ascii_case(name))
                    .map(|k| k.version.clone())
                    .collect();
                for version in known {
                    self.read_version(name, &version, keys).await?;
                }
                return self.read_version(name, "", keys).await;
            }
            Err(e) => return Err(e),
        };
        for item in versions {
            if let Err(why) = item.usable_now() {
                dropped.insert((name.to_ascii_lowercase(), item.version.clone()), why.to_owned());
                tracing::debug!(key = %name, version = %item.version, "azure: version not served: {why}");
                continue;
            }
            let known = previous
                .iter()
                .find(|(_, k)| k.name.eq_ignore_ascii_case(name) && k.version == item.version);
            match known {
                Some((pkh, key)) => {
                    keys.insert(*pkh, key.clone());
                }
                None => self.read_version(name, &item.version, keys).await?,
            }
        }
        Ok(())
    }
}

impl KeyBackend for AzureBackend {
    fn kind(&self) -> &'static str {
        "azure"
    }

    /// By hash: the default lists and hashes every key, per request.
    fn key(&self, pkh: &PublicKeyHash) -> Option<KeyInfo> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(pkh)
            .map(|k| KeyInfo {
                public_key: k.public_key.clone(),
                name: format!("{}/{}", k.name, k.version),
            })
    }

    fn keys(&self) -> Vec<KeyInfo> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|k| KeyInfo {
                public_key: k.public_key.clone(),
                name: format!("{}/{}", k.name, k.version),
            })
            .collect()
    }

    fn sign<'a>(
        &'a self,
        pkh: &'a PublicKeyHash,
        message: &'a [u8],
        _scheme: BlsScheme,
    ) -> BoxFuture<'a, Result<Signature, BackendError>> {
        Box::pin(async move {
            let key = self
                .keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(pkh)
                .cloned()
                .ok_or(BackendError::UnknownKey(*pkh))?;
            let digest = blake2b_256(message);
            let raw = self
                .client
                .sign(&key.name, &key.version, key.curve, &digest, self.sign_budget)
                .await
                .map_err(|e| BackendError::Failed(e.to_string()))?;
            normalise(key.curve, &raw)
                .ok_or_else(|| BackendError::Failed("key vault returned an invalid r‖s".into()))
        })
    }

    fn refresh_for_unknown(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            {
                let mut last = self.last_unknown_refresh.lock().await;
                if last.is_some_and(|t| t.elapsed() < UNKNOWN_KEY_REFRESH_INTERVAL) {
                    return false;
                }
                *last = Some(Instant::now());
            }
            match self.reload().await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "azure: re-listing keys for an unknown address failed");
                    false
                }
            }
        })
    }
}

/// Warns about every address that stops being served and every new version of a key already served: a
/// baker whose consensus key is the old address must not lose it without a word, and the new address must
/// be registered (as consensus key) before the old version is disabled.
fn report_changes(
    previous: &HashMap<PublicKeyHash, VaultKey>,
    now: &HashMap<PublicKeyHash, VaultKey>,
    dropped: &HashMap<(String, String), String>,
) {
    if previous.is_empty() {
        return;
    }
    for (pkh, old) in previous {
        if now.contains_key(pkh) {
            continue;
        }
        let why = dropped
            .get(&(old.name.to_ascii_lowercase(), old.version.clone()))
            .map(String::as_str)
            .unwrap_or("no longer in the vault or not readable");
        tracing::warn!(
            key = %old.name, version = %old.version, address = %pkh,
            "azure: {pkh} ({}/{}) is no longer served: {why}; requests for it now fail with 404",
            old.name, old.version
        );
    }
    let mut added: Vec<(&PublicKeyHash, &VaultKey)> = now
        .iter()
        .filter(|(pkh, _)| !previous.contains_key(pkh))
        .collect();
    added.sort_by_key(|(pkh, _)| pkh.to_string());
    for (pkh, new) in added {
        let mut older: Vec<String> = previous
            .iter()
            .filter(|(_, k)| k.name.eq_ignore_ascii_case(&new.name))
            .map(|(p, k)| format!("{p} ({}/{})", k.name, k.version))
            .collect();
        if older.is_empty() {
            continue;
        }
        older.sort();
        tracing::warn!(
            key = %new.name, version = %new.version, address = %pkh,
            "azure: key {} has a new version {} with a new address {pkh}; still serving {} while enabled. \
             Register {pkh} as the consensus key (octez-client set consensus key) and keep the old version \
             enabled until it takes effect",
            new.name, new.version, older.join(", ")
        );
    }
}

/// Low-S form of an ECDSA `r‖s` (mandatory for secp256k1, harmless for P-256).
fn normalise(curve: KvCurve, raw: &[u8; 64]) -> Option<Signature> {
    Some(match curve {
        KvCurve::P256K => {
            let sig = k256::ecdsa::Signature::from_slice(raw).ok()?;
            let sig = sig.normalize_s().unwrap_or(sig);
            Signature::Secp256k1(sig.to_bytes().into())
        }
        KvCurve::P256 => {
            let sig = p256::ecdsa::Signature::from_slice(raw).ok()?;
            let sig = sig.normalize_s().unwrap_or(sig);
            Signature::P256(sig.to_bytes().into())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_parse_names_and_pinned_versions() {
        assert_eq!(
            KeySelection::parse("baker").unwrap(),
            KeySelection {
                name: "baker".into(),
                version: None
            }
        );
        let pinned = KeySelection::parse("baker-2/0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(
            pinned.version.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert!(KeySelection::parse("bad name").is_err());
        assert!(KeySelection::parse("baker/123").is_err());
    }

    #[test]
    fn high_s_is_normalised() {
        let sk = tezos::SecretKey::generate(tezos::Curve::Secp256k1);
        let sig = sk.sign(b"\x03x", BlsScheme::default()).unwrap();
        let low = k256::ecdsa::Signature::from_slice(sig.as_bytes()).unwrap();
        let (r, s) = low.split_scalars();
        let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        let raw: [u8; 64] = high.to_bytes().into();
        let fixed = normalise(KvCurve::P256K, &raw).unwrap();
        assert_eq!(fixed.as_bytes(), sig.as_bytes());
        assert!(sk.public_key().verify(b"\x03x", &fixed, BlsScheme::default()));
    }

    /// Normalisation is not the only guard: the vault's raw high-S answer, released as is, fails the check
    /// the signer makes before release (`PublicKey::verify`, as strict as the chain).
    #[test]
    fn a_vault_signature_that_skipped_normalisation_fails_the_release_check() {
        let sk = tezos::SecretKey::generate(tezos::Curve::Secp256k1);
        for i in 0..16u8 {
            let msg = [0x03, i];
            let low =
                k256::ecdsa::Signature::from_slice(sk.sign(&msg, BlsScheme::default()).unwrap().as_bytes())
                    .unwrap();
            let (r, s) = low.split_scalars();
            let raw: [u8; 64] = k256::ecdsa::Signature::from_scalars(r, -*s)
                .unwrap()
                .to_bytes()
                .into();
            let skipped = Signature::Secp256k1(raw);
            assert!(!sk.public_key().verify(&msg, &skipped, BlsScheme::default()));
            let normalised = normalise(KvCurve::P256K, &raw).unwrap();
            assert!(sk.public_key().verify(&msg, &normalised, BlsScheme::default()));
        }
    }
}
