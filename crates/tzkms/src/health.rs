//! What a component tells the operator beside its work: readiness checks (each passing or failing with a
//! sentence saying why), a vault's line in `GET /status`, its own metric families and one line for the
//! startup log. A key backend that has something to say registers an [`Observed`] beside its
//! [`crate::backend::KeyBackend`]; the readiness list itself is assembled in `status`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::HealthConfig;
use crate::metrics::Exposition;

/// What to do when no key is served, said by the startup warning, readiness and `config check`.
pub const NO_KEY_FIX: &str = "generate one with `tzkms keys generate --curve p256` (or `tzkms keys import` \
     an existing one, or point keys.octez_base_dir at an octez-client wallet), or name vault keys under \
     [azure] keys (and let the identity read them)";

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

    pub(crate) fn from_result(name: impl Into<String>, result: Result<String, String>) -> Self {
        match result {
            Ok(detail) => Self::pass(name, detail),
            Err(detail) => Self::fail(name, detail),
        }
    }
}

/// A remote key backend (a Key Vault or Managed HSM).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VaultStatus {
    /// The vault's host name.
    pub vault: String,
    pub healthy: bool,
    /// The readiness sentence: when it last answered, or why it is failing.
    pub detail: String,
    /// Mean time of one HTTP attempt, by operation (`sign`, `list_keys`…).
    pub latency_ms: BTreeMap<String, f64>,
    /// Calls that succeeded (what Azure bills).
    pub billable_operations: u64,
    pub price_per_10k_usd: f64,
    pub estimated_cost_usd: f64,
}

/// The operator's view of a component (a remote key backend): everything but its work.
pub trait Observed: Send + Sync + std::fmt::Debug {
    /// One line for the startup summary: where the keys are.
    fn describe(&self) -> String;
    /// Readiness checks (a remote backend: did it answer lately, is its token valid).
    fn health(&self, _config: &HealthConfig) -> Vec<Check> {
        Vec::new()
    }
    /// For `GET /status`: a remote backend's health, latency and estimated cost.
    fn vault_status(&self, _config: &HealthConfig) -> Option<VaultStatus> {
        None
    }
    /// Its own metric families (calls, retries, tokens, cost).
    fn write_metrics(&self, _out: &mut Exposition) {}
}

/// The components registered for observation, each beside the key backend of a kind (`azure`), in
/// registration order.
#[derive(Debug, Default, Clone)]
pub struct Observers(Vec<(&'static str, Arc<dyn Observed>)>);

impl Observers {
    /// Registers `observed` beside the key backend of kind `backend`.
    pub fn add(&mut self, backend: &'static str, observed: Arc<dyn Observed>) {
        self.0.push((backend, observed));
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Observed>> {
        self.0.iter().map(|(_, o)| o)
    }

    /// The startup line of the key backend of kind `backend`: its observer's description, else the kind.
    pub fn describe(&self, backend: &'static str) -> String {
        self.0
            .iter()
            .find(|(kind, _)| *kind == backend)
            .map_or_else(|| backend.to_owned(), |(_, o)| o.describe())
    }
}
