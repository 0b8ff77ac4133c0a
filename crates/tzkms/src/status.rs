//! `GET /status` on the operations listener, and what `tzkms status` reads from it: the keys served, their
//! marks, readiness with reasons, each vault's health, latency and estimated cost, and the signatures so far.
//! Nothing secret is in it: addresses, key names, positions, counters and the readiness sentences.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::HealthConfig;
use crate::health::{Check, Observers};
use crate::signer::Signer;

/// The whole answer of `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub version: String,
    pub ready: bool,
    /// Names of the failing readiness checks.
    pub failed: Vec<String>,
    pub checks: Vec<Check>,
    pub keys: Vec<KeyStatus>,
    /// Why `keys[].marks` is empty, when the watermark store could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marks_error: Option<String>,
    /// Signatures returned (signed or replayed) since the start, all keys.
    pub signatures: u64,
    pub vaults: Vec<VaultStatus>,
    /// Sum of the vaults' estimated cost (USD) since the start.
    pub estimated_cost_usd: f64,
}

/// One key the signer serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyStatus {
    pub pkh: String,
    /// The backend holding it (`file`, `azure`).
    pub backend: String,
    /// Its file or vault key name.
    pub name: String,
    /// Signatures returned for it since the start, by payload kind.
    pub signatures: BTreeMap<String, u64>,
    /// Its high watermarks, one per chain and consensus kind.
    pub marks: Vec<MarkStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MarkStatus {
    pub chain: String,
    pub kind: String,
    pub level: u32,
    /// `any` for a mark that covers its whole level (imported from octez-signer).
    pub round: String,
}

pub use crate::health::VaultStatus;

/// Everything `GET /status` answers, now.
pub async fn collect(signer: &Signer, observers: &Observers, health: &HealthConfig) -> Status {
    let checks = readiness(signer, observers, health).await;
    let rules = signer.rules();
    let served = rules.keyring.sorted();
    let signatures = signer.metrics().signatures();
    let timeout = Duration::from_millis(health.probe_timeout_ms);
    let (marks, marks_error) = match tokio::time::timeout(timeout, signer.watermarks().snapshot()).await {
        Ok(Ok(marks)) => (marks, None),
        Ok(Err(e)) => (
            Vec::new(),
            Some(format!("the watermark store could not be read: {e}")),
        ),
        Err(_) => (
            Vec::new(),
            Some(format!(
                "the watermark store did not answer within {} ms",
                timeout.as_millis()
            )),
        ),
    };
    let keys: Vec<KeyStatus> = served
        .iter()
        .map(|(pkh, key)| {
            let id = pkh.to_string();
            let mut key_marks: Vec<MarkStatus> = marks
                .iter()
                .filter(|(k, _)| k.pkh == *pkh)
                .map(|(k, m)| MarkStatus {
                    chain: k.chain.to_string(),
                    kind: k.kind.name().to_owned(),
                    level: m.level.0,
                    round: crate::watermark::round_text(m.round),
                })
                .collect();
            key_marks.sort_by(|a, b| (&a.chain, &a.kind).cmp(&(&b.chain, &b.kind)));
            KeyStatus {
                signatures: signatures
                    .iter()
                    .filter(|((k, _), n)| *k == id && **n > 0)
                    .map(|((_, kind), n)| ((*kind).to_owned(), *n))
                    .collect(),
                pkh: id,
                backend: key.backend.kind().to_owned(),
                name: key.info.name.clone(),
                marks: key_marks,
            }
        })
        .collect();
    let vaults: Vec<VaultStatus> = observers.iter().filter_map(|o| o.vault_status(health)).collect();
    let failed = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.clone())
        .collect::<Vec<_>>();
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ready: failed.is_empty(),
        failed,
        checks,
        keys,
        marks_error,
        signatures: signatures.values().sum(),
        estimated_cost_usd: vaults.iter().map(|v| v.estimated_cost_usd).sum(),
        vaults,
    }
}

/// Every readiness check, now: keys are served, each observed backend answered lately and holds a token
/// valid for longer than a margin, and the watermark store takes a durable write now. A baker's monitoring
/// alerts on it before a signature fails. Store probes write (durably) and are bounded by
/// `probe_timeout_ms`.
pub async fn readiness(signer: &Signer, observers: &Observers, config: &HealthConfig) -> Vec<Check> {
    let mut checks = Vec::new();
    if signer.draining() {
        checks.push(Check::fail(
            "shutdown",
            "shutting down: finishing the requests in flight, accepting no new connection",
        ));
    }
    let rules = signer.rules();
    let n = rules.keyring.len();
    checks.push(if n > 0 {
        Check::pass("keys", format!("{n} key(s) served"))
    } else {
        Check::fail(
            "keys",
            format!(
                "no key is served, so every signing request gets 404: {}; then reload (SIGHUP)",
                crate::health::NO_KEY_FIX
            ),
        )
    });
    for observed in observers.iter() {
        checks.extend(observed.health(config));
    }
    let timeout = Duration::from_millis(config.probe_timeout_ms);
    match tokio::time::timeout(timeout, signer.watermarks().probe()).await {
        Ok(store_checks) => checks.extend(store_checks),
        Err(_) => checks.push(Check::fail(
            "watermark",
            format!(
                "the watermark store did not take a probe write within {} ms",
                timeout.as_millis()
            ),
        )),
    }
    checks
}
