//! Threshold BLS: a tz4 key that exists only as Shamir shares on separate machines. A machine with a
//! share file is a cosigner: it serves partial signatures on `POST /cosign/<group>` under its own policy
//! and watermark ([`cosigner`]). The machine the baker talks to is the coordinator: it asks the cosigners
//! (and its own share, if it holds one), checks and combines their partial signatures ([`coordinator`]).
//! Share files and their checks are in [`shares`]; the crypto is `tezos::threshold`.

pub mod coordinator;
pub mod cosigner;
pub mod shares;

use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::backend::sealed::Unsealed;
use crate::backend::KeyBackend;
pub use crate::config::threshold::{ClientConfig, CosignerConfig, GroupConfig, ThresholdConfig};
use crate::config::{Config, PolicyConfig};
use crate::health::Observed;

/// A threshold backend and what it tells the operator (its startup line).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub backend: Arc<dyn KeyBackend>,
    pub observed: Arc<dyn Observed>,
}

/// The threshold backends of a data directory and configuration: one coordinator for the configured
/// groups (holding this machine's share of a group, if any), and a cosigner backend for the other share
/// files. Checks every safety rule (majority threshold, distinct ids, share keys that interpolate to the
/// group key) and fails with what to fix.
pub fn load(
    config: &Config,
    data_dir: &Path,
    password: Option<&Zeroizing<Vec<u8>>>,
    unsealed: &Unsealed,
) -> anyhow::Result<Vec<Loaded>> {
    let policy = &config.policy;
    let config = config.threshold.as_ref();
    let mut shares = shares::load_all(data_dir, password, unsealed)?;
    let mut backends = Vec::new();
    let groups = config.map(|c| c.groups.as_slice()).unwrap_or_default();
    if !groups.is_empty() {
        let client = config.and_then(|c| c.client.as_ref()).ok_or_else(|| {
            anyhow::anyhow!("[threshold.client] is missing: the coordinator needs a client certificate")
        })?;
        let http = coordinator::client(client)?;
        let mut coordinated = Vec::new();
        for group in groups {
            let pkh = group.public_key.hash();
            let own = shares
                .iter()
                .position(|s| s.group.hash() == pkh)
                .map(|i| shares.remove(i));
            coordinated.push(coordinator::Group::new(group, own)?);
        }
        let coordinator = Arc::new(coordinator::Coordinator::new(http, coordinated));
        backends.push(Loaded {
            backend: coordinator.clone(),
            observed: coordinator,
        });
    }
    for share in &shares {
        served_only_to_listed_clients(share, policy)?;
    }
    if !shares.is_empty() {
        let cosigner = Arc::new(cosigner::ShareBackend::new(shares));
        backends.push(Loaded {
            backend: cosigner.clone(),
            observed: cosigner,
        });
    }
    Ok(backends)
}

/// A share served on `/cosign` answers any client the key's policy lets through: without `tls_clients`,
/// any certificate the listener's `client_ca` accepts (another machine of the same CA, a stolen test
/// certificate) could ask for partial signatures and walk the cosigners' watermarks forward. A cosigner
/// therefore names its coordinator(s) or does not start.
fn served_only_to_listed_clients(share: &shares::ShareFile, policy: &PolicyConfig) -> anyhow::Result<()> {
    let pkh = share.group.hash();
    let (section, key_policy) = match policy.keys.get(&pkh) {
        Some(p) => (format!("[policy.keys.{pkh}]"), p),
        None => ("[policy.default]".to_owned(), &policy.default),
    };
    if key_policy.tls_clients.is_none() {
        anyhow::bail!(
            "{}: share {} of threshold key {pkh} would be served on /cosign to any client certificate that \
             [server.tls] client_ca accepts, because {section} has no tls_clients: name the coordinator's \
             certificate, e.g. [policy.keys.{pkh}] tls_clients = [\"cn:<coordinator certificate CN>\"] (or \
             \"sha256:<fingerprint>\")",
            share.path.display(),
            share.share.id,
        );
    }
    Ok(())
}
