//! Liveness and readiness. Readiness is a list of named checks, each passing or failing with a
//! sentence saying why: keys are served, each remote backend answered lately and holds a token valid for
//! longer than a margin, and each watermark store takes a durable write now. A baker's monitoring alerts on
//! it before a signature fails.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::HealthConfig;
use crate::signer::Signer;

/// One readiness check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Check {
    /// `keys`, `azure:<vault host>`, `azure-token:<vault host>`, `watermark:file`, `watermark:table`.
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok: true,
            detail: detail.into(),
        }
    }

    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok: false,
            detail: detail.into(),
        }
    }

    pub fn from_result(name: impl Into<String>, result: Result<String, String>) -> Self {
        match result {
            Ok(detail) => Self::pass(name, detail),
            Err(detail) => Self::fail(name, detail),
        }
    }
}

/// Every readiness check, now. Store probes write (durably) and are bounded by `probe_timeout_ms`.
pub async fn readiness(signer: &Signer, config: &HealthConfig) -> Vec<Check> {
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
                crate::startup::NO_KEY_FIX
            ),
        )
    });
    for backend in rules.keyring.backends() {
        checks.extend(backend.health(config));
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
