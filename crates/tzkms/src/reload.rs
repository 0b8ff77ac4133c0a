//! Reloading a running signer (SIGHUP): re-read the configuration file and put in force, all at once, the
//! served keys (key files, the octez wallet, the vault's key list), the authorized keys, the policy and the
//! TLS files. Everything is read and checked first; one failure and nothing changes. The watermark store,
//! the limits, the listeners and the data directory are never swapped: a change to them in the file is
//! reported as needing a restart.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context;
use tezos::PublicKeyHash;

use crate::auth::Authenticator;
use crate::backend::azure::AzureBackend;
use crate::backend::file::FileBackend;
use crate::backend::{KeyBackend, Keyring};
use crate::config::Config;
use crate::policy::Policy;
use crate::server::tls::Tls;
use crate::signer::{Rules, Signer};

/// What a reload changed, for the log.
#[derive(Debug, Default)]
pub struct Reloaded {
    pub added: Vec<PublicKeyHash>,
    pub removed: Vec<PublicKeyHash>,
    /// Keys or wallet entries not served, with the reason.
    pub skipped: Vec<String>,
    /// Settings changed in the file that only a restart applies (the running values are kept).
    pub needs_restart: Vec<&'static str>,
    /// The fingerprint of the TLS certificate now served.
    pub tls_certificate: Option<String>,
    /// Keys served after the reload.
    pub keys: usize,
}

/// What the running signer holds and a reload may ask to re-read in place.
#[derive(Debug, Clone, Default)]
pub struct Running {
    pub azure: Option<Arc<AzureBackend>>,
    pub tls: Option<Arc<Tls>>,
}

/// The settings a reload does not apply, each as text to compare.
fn fixed_settings(c: &Config) -> Vec<(&'static str, String)> {
    let mut server = c.server.clone();
    let tls_listen = server.tls.take().map(|t| t.listen);
    vec![
        ("data_dir", format!("{:?}", c.data_dir())),
        ("server", format!("{server:?}")),
        ("server.tls (on/off, listen)", format!("{tls_listen:?}")),
        ("watermark", format!("{:?}", c.watermark)),
        ("limits", format!("{:?}", c.limits)),
        ("metrics", format!("{:?}", c.metrics)),
        ("health", format!("{:?}", c.health)),
        ("azure", format!("{:?}", c.azure)),
    ]
}

/// Applies `new` over `running_config` to `signer`, or changes nothing and says why.
pub async fn reload(
    signer: &Signer,
    running_config: &Config,
    new: &Config,
    running: &Running,
) -> anyhow::Result<Reloaded> {
    let mut report = Reloaded::default();
    // Before the vault re-lists its keys: its backend is shared with the running rules.
    let old: BTreeSet<PublicKeyHash> = signer
        .rules()
        .keyring
        .sorted()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let before = fixed_settings(running_config);
    for ((name, old), (_, now)) in before.iter().zip(fixed_settings(new)) {
        if *old != now {
            report.needs_restart.push(name);
        }
    }
    // Key files come from the running data directory (a new data_dir needs a restart), under the same
    // checks as at startup: private modes, readable, decryptable.
    let data_dir = running_config.data_dir();
    let password = crate::startup::key_password(new)?;
    // Sealed files are unsealed again (one vault call each): a reload may bring new ones.
    let unsealed = crate::sealing::key_files(new, &data_dir)
        .await
        .context("key files")?;
    let (files, load) = FileBackend::load(
        &data_dir,
        new.keys.octez_base_dir.as_deref(),
        password.as_ref(),
        &unsealed,
    )
    .context("key files")?;
    report.skipped.extend(load.skipped);
    let threshold =
        crate::threshold::load(new, &data_dir, password.as_ref(), &unsealed).context("threshold keys")?;
    let auth = Authenticator::from_config(&new.auth).context("auth")?;
    let policy = Policy::from_config(&new.policy)
        .map_err(anyhow::Error::msg)
        .context("policy")?;
    let tls = match (&running.tls, &new.server.tls) {
        (Some(_), Some(settings)) => Some(Tls::prepare(settings)?),
        _ => None,
    };
    // Last, as it is the one step that changes something in place (the vault's key list; it is also
    // re-read on a timer) and it leaves the old list on error.
    if let Some(azure) = &running.azure {
        azure
            .reload()
            .await
            .map_err(|e| anyhow::anyhow!("azure: re-listing the vault's keys failed: {e}"))?;
    }
    let mut keyring = Keyring::default();
    if let Some(azure) = &running.azure {
        keyring.add_backend(azure.clone());
    }
    // In the order startup adds them.
    for loaded in threshold {
        keyring.add_backend(loaded.backend);
    }
    let files: Arc<dyn KeyBackend> = Arc::new(files);
    for dup in keyring.add_backend(files) {
        report.skipped.push(format!(
            "{} ({}): served twice; the first one is used",
            dup.public_key.hash(),
            dup.name
        ));
    }
    // Nothing can fail from here on.
    let now: BTreeSet<PublicKeyHash> = keyring.sorted().into_iter().map(|(p, _)| p).collect();
    report.added = now.difference(&old).copied().collect();
    report.removed = old.difference(&now).copied().collect();
    report.keys = now.len();
    if let (Some(served), Some(loaded)) = (&running.tls, tls) {
        report.tls_certificate = Some(served.install(loaded));
    }
    signer.replace_rules(Rules {
        keyring,
        auth,
        policy,
    });
    signer.init_metrics();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tezos::{Curve, SecretKey};

    fn config(dir: &std::path::Path) -> Config {
        let mut config = Config {
            data_dir: Some(dir.to_owned()),
            ..Config::default()
        };
        config.keys.generate_if_empty = false;
        config
    }

    #[tokio::test]
    async fn a_failed_reload_leaves_the_rules_untouched_and_a_good_one_swaps_them_whole() {
        let dir = tempfile::tempdir().unwrap();
        let sk = SecretKey::generate(Curve::P256);
        crate::backend::file::write_key_file(dir.path(), "a", &sk.to_b58()).unwrap();
        let running_config = config(dir.path());
        let store = crate::startup::open_watermarks(&running_config).await.unwrap();
        let (signer, _) = crate::startup::build_signer_from(&running_config, store, None)
            .await
            .unwrap();
        let before = signer.rules();

        let added = SecretKey::generate(Curve::Ed25519);
        let path = crate::backend::file::write_key_file(dir.path(), "b", &added.to_b58()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = reload(&signer, &running_config, &running_config, &Running::default())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("chmod 600"), "{err:#}");
        assert!(
            Arc::ptr_eq(&before, &signer.rules()),
            "a failed reload swapped the rules"
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut new = running_config.clone();
        new.limits.backend_concurrency = 3;
        new.server.max_body_bytes += 1;
        let report = reload(&signer, &running_config, &new, &Running::default())
            .await
            .unwrap();
        assert_eq!(report.added, vec![added.public_key().hash()]);
        assert!(report.removed.is_empty());
        assert_eq!(report.needs_restart, vec!["server", "limits"]);
        assert_eq!(signer.rules().keyring.len(), 2);
        // The old snapshot, still held by a request in flight, is unchanged.
        assert_eq!(before.keyring.len(), 1);
    }
}
