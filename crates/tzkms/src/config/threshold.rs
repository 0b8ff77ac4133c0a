//! `[threshold]`: the threshold keys this machine coordinates and the client identity it presents to their
//! cosigners (the backends themselves are `crate::threshold`).

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use tezos::threshold::ShareId;
use tezos::{Curve, PublicKey};

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
