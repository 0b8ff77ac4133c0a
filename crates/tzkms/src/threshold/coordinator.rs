//! The coordinator's backend: a threshold key served to the baker like any key. The signer has already
//! applied this machine's policy and watermark when `sign` is called; the coordinator then asks every
//! cosigner (and its own share) at once, checks each partial signature against its share's key, combines
//! the first M valid ones; the signer checks the result under the group key, as it checks every backend's
//! signature. Cosigners not needed by then finish in the background (so their watermarks advance too)
//! until the deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tezos::threshold::{self, ShareId};
use tezos::{BlsScheme, PublicKey, PublicKeyHash, Signature};
use tokio::sync::mpsc;

use super::shares::ShareFile;
use crate::backend::{BackendError, BoxFuture, KeyBackend, KeyInfo};
use crate::config::threshold::{ClientConfig, GroupConfig};
use crate::health::Observed;

/// The HTTPS client that presents `[threshold.client]`'s certificate and trusts only its `server_ca`.
pub fn client(config: &ClientConfig) -> anyhow::Result<reqwest::Client> {
    let read = |what: &str, path: &std::path::Path| -> anyhow::Result<Vec<u8>> {
        std::fs::read(path).with_context(|| {
            format!(
                "threshold.client.{what} {}: cannot read it; the coordinator presents this client \
                 certificate to its cosigners (set the path of a PEM file)",
                path.display()
            )
        })
    };
    crate::secret::check_private(&config.private_key)
        .map_err(|e| anyhow::anyhow!("threshold.client.private_key: {e}"))?;
    let mut identity = read("certificate", &config.certificate)?;
    identity.push(b'\n');
    identity.extend_from_slice(&read("private_key", &config.private_key)?);
    let identity = reqwest::Identity::from_pem(&identity).map_err(|e| {
        anyhow::anyhow!(
            "threshold.client: {} and {} are not a PEM certificate and its private key: {e}",
            config.certificate.display(),
            config.private_key.display()
        )
    })?;
    let ca = read("server_ca", &config.server_ca)?;
    let roots = reqwest::Certificate::from_pem_bundle(&ca)
        .map_err(|e| anyhow::anyhow!("threshold.client.server_ca {}: {e}", config.server_ca.display()))?;
    if roots.is_empty() {
        anyhow::bail!(
            "threshold.client.server_ca {} holds no certificate: give the CA that issued the cosigners' \
             server certificates",
            config.server_ca.display()
        );
    }
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .identity(identity)
        .https_only(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .user_agent(concat!(
            "tzkms/",
            env!("CARGO_PKG_VERSION"),
            " threshold coordinator"
        ));
    for root in roots {
        builder = builder.add_root_certificate(root);
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("threshold.client: {e}"))
}

/// One cosigner of a group.
#[derive(Debug, Clone)]
struct Cosigner {
    id: ShareId,
    /// `<url>/cosign/<group>`.
    endpoint: String,
    url: String,
    share_public_key: PublicKey,
}

/// One threshold key this machine coordinates.
#[derive(Debug)]
pub struct Group {
    public_key: PublicKey,
    threshold: u8,
    shares: u8,
    deadline: Duration,
    cosigners: Vec<Cosigner>,
    /// This machine's own share of the key, if its data directory holds one.
    own: Option<ShareFile>,
}

impl Group {
    /// Checks the group's safety rules (M > N/2, distinct ids, enough shares, share keys that
    /// interpolate to the group key) and builds it.
    pub fn new(config: &GroupConfig, own: Option<ShareFile>) -> anyhow::Result<Self> {
        let pkh = config.public_key.hash();
        let mut participants: Vec<(ShareId, PublicKey)> = Vec::new();
        let mut cosigners = Vec::new();
        for c in &config.cosigners {
            let id = ShareId::new(c.id).map_err(|e| anyhow::anyhow!("threshold group {pkh}: {e}"))?;
            participants.push((id, c.share_public_key.clone()));
            cosigners.push(Cosigner {
                id,
                endpoint: format!("{}/cosign/{pkh}", c.url.trim_end_matches('/')),
                url: c.url.clone(),
                share_public_key: c.share_public_key.clone(),
            });
        }
        if let Some(own) = &own {
            participants.push((own.share.id, own.public_key.clone()));
            if own.threshold != config.threshold {
                anyhow::bail!(
                    "threshold group {pkh}: threshold = {} but this machine's share file {} says {}: the \
                     threshold is fixed by the split; correct the configuration",
                    config.threshold,
                    own.path.display(),
                    own.threshold
                );
            }
        }
        let shares = config
            .shares
            .or(own.as_ref().map(|o| o.shares))
            .unwrap_or(u8::try_from(participants.len()).unwrap_or(u8::MAX));
        check_group(&config.public_key, config.threshold, shares, &participants)
            .map_err(|e| anyhow::anyhow!("threshold group {pkh} ({}-of-{shares}): {e}", config.threshold))?;
        Ok(Self {
            public_key: config.public_key.clone(),
            threshold: config.threshold,
            shares,
            deadline: Duration::from_millis(config.deadline_ms),
            cosigners,
            own,
        })
    }
}

/// Why one participant gave no partial signature.
#[derive(Debug)]
struct Failure {
    why: String,
    /// It refused by its own high watermark (409): it signed something else at that position or above.
    watermark: bool,
}

impl From<String> for Failure {
    fn from(why: String) -> Self {
        Self {
            why,
            watermark: false,
        }
    }
}

/// What one participant answered.
type Answer = (ShareId, String, Result<Signature, Failure>);

/// The coordinator backend.
#[derive(Debug)]
pub struct Coordinator {
    http: reqwest::Client,
    groups: HashMap<PublicKeyHash, Arc<Group>>,
}

impl Coordinator {
    pub fn new(http: reqwest::Client, groups: Vec<Group>) -> Self {
        Self {
            http,
            groups: groups
                .into_iter()
                .map(|g| (g.public_key.hash(), Arc::new(g)))
                .collect(),
        }
    }

    fn info(group: &Group) -> KeyInfo {
        KeyInfo {
            public_key: group.public_key.clone(),
            name: format!(
                "threshold {}-of-{} ({} cosigners{})",
                group.threshold,
                group.shares,
                group.cosigners.len(),
                if group.own.is_some() {
                    " and this machine's share"
                } else {
                    ""
                }
            ),
        }
    }

    async fn coordinate(
        &self,
        group: &Arc<Group>,
        message: &[u8],
        scheme: BlsScheme,
    ) -> Result<Signature, BackendError> {
        let pkh = group.public_key.hash();
        let (tx, mut rx) = mpsc::channel::<Answer>(group.cosigners.len() + 1);
        let mut pending: HashMap<ShareId, String> = group
            .cosigners
            .iter()
            .map(|c| (c.id, format!("cosigner {} at {}", c.id, c.url)))
            .collect();
        // The version only selects the BLS scheme for a tz4 key: 1 is AUG, 2 is POP.
        let version = match scheme {
            BlsScheme::Augmented => 1,
            BlsScheme::ProofOfPossession => 2,
        };
        let body = serde_json::Value::String(hex::encode(message)).to_string();
        for cosigner in &group.cosigners {
            let (tx, http, body, cosigner, deadline) = (
                tx.clone(),
                self.http.clone(),
                body.clone(),
                cosigner.clone(),
                group.deadline,
            );
            let (group, message) = (group.clone(), message.to_vec());
            tokio::spawn(async move {
                let asked = ask(&http, &cosigner, version, body, deadline)
                    .await
                    .and_then(|sig| {
                        if threshold::verify_partial(
                            &cosigner.share_public_key,
                            &group.public_key,
                            &message,
                            scheme,
                            &sig,
                        ) {
                            Ok(sig)
                        } else {
                            Err(Failure::from(format!(
                                "its partial signature does not verify under its share key {}",
                                cosigner.share_public_key
                            )))
                        }
                    });
                let _ = tx
                    .send((
                        cosigner.id,
                        format!("cosigner {} at {}", cosigner.id, cosigner.url),
                        asked,
                    ))
                    .await;
            });
        }
        if let Some(own) = &group.own {
            let sig = own.share.sign_partial(&group.public_key, message, scheme);
            let _ = tx
                .send((
                    own.share.id,
                    format!("share {} on this machine", own.share.id),
                    Ok(sig),
                ))
                .await;
        }
        drop(tx);
        let mut partials: Vec<(ShareId, Signature)> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let mut watermark_refusals = 0;
        let deadline = tokio::time::Instant::now() + group.deadline;
        let needed = usize::from(group.threshold);
        while partials.len() < needed {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((id, _, Ok(sig)))) => {
                    pending.remove(&id);
                    partials.push((id, sig));
                }
                Ok(Some((id, who, Err(failure)))) => {
                    pending.remove(&id);
                    watermark_refusals += usize::from(failure.watermark);
                    failures.push(format!("{who}: {}", failure.why));
                }
                Ok(None) => break,
                Err(_) => {
                    failures.extend(pending.values().map(|who| {
                        format!(
                            "{who}: no answer within deadline_ms = {}",
                            group.deadline.as_millis()
                        )
                    }));
                    break;
                }
            }
        }
        if partials.len() < needed {
            failures.sort();
            let message = format!(
                "threshold key {pkh}: {} of the {needed} partial signatures needed ({}-of-{}): {}",
                partials.len(),
                group.threshold,
                group.shares,
                failures.join("; ")
            );
            // So many refused by their watermarks that the threshold could not be reached even with every
            // other participant answering: a double-signing refusal, not an outage.
            let participants = group.cosigners.len() + usize::from(group.own.is_some());
            return Err(if watermark_refusals > participants.saturating_sub(needed) {
                BackendError::WatermarkRefused(message)
            } else {
                BackendError::Failed(message)
            });
        }
        // Checked under the group key by the signer, as every backend's signature is, before release.
        threshold::combine(&partials, group.threshold)
            .map_err(|e| BackendError::Failed(format!("threshold key {pkh}: {e}")))
    }
}

/// One cosigner's partial signature, within `deadline`.
async fn ask(
    http: &reqwest::Client,
    cosigner: &Cosigner,
    version: u8,
    body: String,
    deadline: Duration,
) -> Result<Signature, Failure> {
    let request = http
        .post(format!("{}?version={version}", cosigner.endpoint))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(deadline)
        .send();
    let response = match request.await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Err(format!("no answer within {} ms", deadline.as_millis()).into())
        }
        Err(e) => return Err(format!("unreachable: {}", error_chain(&e)).into()),
    };
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("answer cut short: {}", error_chain(&e)))?;
    if !status.is_success() {
        // Octez error list: `[{"msg": …}]`.
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v[0]["msg"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(200).collect());
        return Err(Failure {
            why: format!("refused ({}): {msg}", status.as_u16()),
            watermark: status == reqwest::StatusCode::CONFLICT,
        });
    }
    #[derive(serde::Deserialize)]
    struct Partial {
        signature: String,
        share_id: u8,
    }
    let partial: Partial =
        serde_json::from_str(&text).map_err(|e| format!("not a partial signature answer: {e}"))?;
    if partial.share_id != cosigner.id.get() {
        return Err(format!(
            "answered for share {} instead of share {}: check its url",
            partial.share_id, cosigner.id
        )
        .into());
    }
    partial
        .signature
        .parse()
        .map_err(|e| format!("not a signature: {e}").into())
}

/// An error with its causes (reqwest's top-level message alone hides "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The ids and keys of every participant of a group, checked: M > N/2, distinct ids, enough shares to
/// sign, and share keys that interpolate to the group key.
fn check_group(
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

impl KeyBackend for Coordinator {
    fn kind(&self) -> &'static str {
        "threshold"
    }

    fn keys(&self) -> Vec<KeyInfo> {
        self.groups.values().map(|g| Self::info(g)).collect()
    }

    fn key(&self, pkh: &PublicKeyHash) -> Option<KeyInfo> {
        self.groups.get(pkh).map(|g| Self::info(g))
    }

    fn sign<'a>(
        &'a self,
        pkh: &'a PublicKeyHash,
        message: &'a [u8],
        scheme: BlsScheme,
    ) -> BoxFuture<'a, Result<Signature, BackendError>> {
        Box::pin(async move {
            let group = self.groups.get(pkh).ok_or(BackendError::UnknownKey(*pkh))?;
            self.coordinate(group, message, scheme).await
        })
    }
}

impl Observed for Coordinator {
    fn describe(&self) -> String {
        let mut list: Vec<String> = self
            .groups
            .values()
            .map(|g| format!("{} {}-of-{}", g.public_key.hash(), g.threshold, g.shares))
            .collect();
        list.sort();
        format!("threshold coordinator ({})", list.join(", "))
    }
}
