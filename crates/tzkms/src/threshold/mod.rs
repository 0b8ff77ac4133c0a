//! Threshold BLS: a tz4 key that exists only as Shamir shares on separate machines. A machine with a
//! share file is a cosigner: it serves partial signatures on `POST /cosign/<group>` under its own policy
//! and watermark ([`cosigner`]). The machine the baker talks to is the coordinator: it asks the cosigners
//! (and its own share, if it holds one), checks and combines their partial signatures ([`coordinator`]).
//! Share files and their checks are in [`shares`]; the crypto is `tezos::threshold`.

pub mod coordinator;
pub mod cosigner;
pub mod shares;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Deserializer};
use tezos::threshold::{self, ShareId};
use tezos::{Curve, PublicKey};
use zeroize::Zeroizing;

use crate::backend::KeyBackend;

/// `[threshold]`: this machine coordinates threshold keys (`[[threshold.groups]]`) with the client
/// certificate of `[threshold.client]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// The mTLS identity the coordinator presents to its cosigners.
    pub client: Option<ClientConfig>,
    /// The threshold keys this machine serves to its baker.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
}

/// `[threshold.client]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// PEM file: the coordinator's client certificate (and its intermediates).
    pub certificate: PathBuf,
    /// PEM file: its private key. Must be mode 0600.
    pub private_key: PathBuf,
    /// PEM file: the CA(s) that issued the cosigners' server certificates (the only roots trusted).
    pub server_ca: PathBuf,
}

/// `[[threshold.groups]]`: one threshold key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The group tz4 public key (`BLpk…`) served to the baker.
    #[serde(deserialize_with = "parsed")]
    pub public_key: PublicKey,
    /// M: partial signatures needed.
    pub threshold: u8,
    /// N: the shares the key was split into. Default: the cosigners listed plus this machine's own share.
    pub shares: Option<u8>,
    /// How long the coordinator waits for partial signatures (milliseconds).
    #[serde(default = "default_deadline")]
    pub deadline_ms: u64,
    #[serde(default)]
    pub cosigners: Vec<CosignerConfig>,
}

/// `[[threshold.groups.cosigners]]`: a machine that holds one share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignerConfig {
    /// The share id (1..=127) the cosigner holds.
    pub id: u8,
    /// `https://host:port` of the cosigner's signing listener.
    pub url: String,
    /// The share's public key (`BLpk…`), against which its partial signatures are checked.
    #[serde(deserialize_with = "parsed")]
    pub share_public_key: PublicKey,
}

fn default_deadline() -> u64 {
    1500
}

fn parsed<'de, D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}

impl ThresholdConfig {
    /// What can be checked without reading files: tz4 keys, https URLs, distinct ids, a client identity.
    pub fn validate(&self) -> Result<(), String> {
        if !self.groups.is_empty() && self.client.is_none() {
            return Err(
                "[[threshold.groups]] is set but [threshold.client] is missing: the coordinator \
                 presents a client certificate to its cosigners; set certificate, private_key and server_ca \
                 under [threshold.client]"
                    .into(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for group in &self.groups {
            let name = format!("threshold group {}", group.public_key.hash());
            if group.public_key.curve() != Curve::Bls {
                return Err(format!(
                    "{name}: public_key is a {} key; a threshold key is a tz4 (BLS) key (BLpk…)",
                    group.public_key.curve()
                ));
            }
            if !seen.insert(group.public_key.hash()) {
                return Err(format!(
                    "{name} is configured twice: keep one [[threshold.groups]] entry"
                ));
            }
            if group.deadline_ms == 0 {
                return Err(format!(
                    "{name}: deadline_ms = 0; give the cosigners some time (e.g. 1500)"
                ));
            }
            let mut ids = std::collections::BTreeSet::new();
            for c in &group.cosigners {
                ShareId::new(c.id).map_err(|e| format!("{name}: cosigner id {}: {e}", c.id))?;
                if !ids.insert(c.id) {
                    return Err(format!(
                        "{name}: share id {} is listed twice; each cosigner holds its own share id",
                        c.id
                    ));
                }
                if !c.url.starts_with("https://") {
                    return Err(format!(
                        "{name}: cosigner {} url {:?} is not https: cosigners are asked over mTLS only; \
                         write https://host:port and serve the cosigner's [server.tls] with client_ca",
                        c.id, c.url
                    ));
                }
                reqwest::Url::parse(&c.url)
                    .map_err(|e| format!("{name}: cosigner {} url {:?}: {e}", c.id, c.url))?;
                if c.share_public_key.curve() != Curve::Bls {
                    return Err(format!(
                        "{name}: cosigner {} share_public_key is not a BLS key (BLpk…)",
                        c.id
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The threshold backends of a data directory and configuration: one coordinator for the configured
/// groups (holding this machine's share of a group, if any), and a cosigner backend for the other share
/// files. Checks every safety rule (majority threshold, distinct ids, share keys that interpolate to the
/// group key) and fails with what to fix.
pub fn load(
    config: Option<&ThresholdConfig>,
    data_dir: &Path,
    password: Option<&Zeroizing<Vec<u8>>>,
) -> anyhow::Result<Vec<Arc<dyn KeyBackend>>> {
    let mut shares = shares::load_all(data_dir, password)?;
    let mut backends: Vec<Arc<dyn KeyBackend>> = Vec::new();
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
        backends.push(Arc::new(coordinator::Coordinator::new(http, coordinated)));
    }
    if !shares.is_empty() {
        backends.push(Arc::new(cosigner::ShareBackend::new(shares)));
    }
    Ok(backends)
}

/// The ids and keys of every participant of a group, checked: M > N/2, distinct ids, enough shares to
/// sign, and share keys that interpolate to the group key.
pub(crate) fn check_group(
    group: &PublicKey,
    threshold_m: u8,
    share_count: u8,
    participants: &[(ShareId, PublicKey)],
) -> Result<(), String> {
    threshold::check_parameters(threshold_m, share_count).map_err(|e| e.to_string())?;
    let mut ids = std::collections::BTreeSet::new();
    for (id, _) in participants {
        if !ids.insert(*id) {
            return Err(format!(
                "share id {id} appears twice (a cosigner and this machine's share file?): each share has its \
                 own id"
            ));
        }
    }
    if participants.len() > usize::from(share_count) {
        return Err(format!(
            "{} shares are configured but the key was split into {share_count}: set `shares` to the number of \
             shares of the split",
            participants.len()
        ));
    }
    if participants.len() < usize::from(threshold_m) {
        return Err(format!(
            "only {} shares are configured but {threshold_m} are needed to sign: list at least {threshold_m} \
             cosigners (with this machine's own share, if it holds one)",
            participants.len()
        ));
    }
    threshold::check_share_keys(group, participants, threshold_m).map_err(|e| e.to_string())
}
