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
    config: Option<&ThresholdConfig>,
    data_dir: &Path,
    password: Option<&Zeroizing<Vec<u8>>>,
    unsealed: &Unsealed,
) -> anyhow::Result<Vec<Loaded>> {
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
    if !shares.is_empty() {
        let cosigner = Arc::new(cosigner::ShareBackend::new(shares));
        backends.push(Loaded {
            backend: cosigner.clone(),
            observed: cosigner,
        });
    }
    Ok(backends)
}
