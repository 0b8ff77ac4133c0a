//! What a Key Vault / Managed HSM client tells the operator: readiness (did the vault answer lately, is
//! the token fresh), its line in `GET /status`, its metric families and its startup line. Registered
//! beside the Azure key backend, which itself only lists keys and signs.

use std::time::Duration;

use super::keyvault::KeyVaultClient;
use crate::config::HealthConfig;
use crate::health::{Check, Observed, VaultStatus};
use crate::metrics::Exposition;

impl Observed for KeyVaultClient {
    fn health(&self, config: &HealthConfig) -> Vec<Check> {
        let stats = self.stats();
        let vault = stats.vault();
        let mut checks = vec![Check::from_result(
            format!("azure:{vault}"),
            stats.check(Duration::from_millis(config.max_silence_ms)),
        )];
        let margin = config.token_margin_s as i64;
        let source = self.tokens().source_name();
        checks.push(match self.tokens().stats().seconds_left() {
            Some(left) if left > margin => Check::pass(
                format!("azure-token:{vault}"),
                format!("{source} token valid for {left}s more"),
            ),
            Some(left) => Check::fail(
                format!("azure-token:{vault}"),
                format!(
                    "{source} token expires in {left}s (margin {margin}s): refreshing it keeps failing, \
                     see the log for the credential error"
                ),
            ),
            None => Check::fail(format!("azure-token:{vault}"), format!("no {source} token yet")),
        });
        checks
    }

    fn vault_status(&self, config: &HealthConfig) -> Option<VaultStatus> {
        let stats = self.stats();
        let check = stats.check(Duration::from_millis(config.max_silence_ms));
        let billable = stats.billable();
        let price = stats.price_per_10k();
        Some(VaultStatus {
            vault: stats.vault().to_owned(),
            healthy: check.is_ok(),
            detail: check.unwrap_or_else(|why| why),
            latency_ms: stats.mean_latency_ms(),
            billable_operations: billable,
            price_per_10k_usd: price,
            estimated_cost_usd: billable as f64 * price / 10_000.0,
        })
    }

    fn write_metrics(&self, out: &mut Exposition) {
        let vault = self.stats().vault();
        self.stats().write_metrics(out);
        let tokens = self.tokens().stats();
        out.family(
            "tzkms_azure_token_fetches_total",
            "counter",
            "Entra ID token fetches (refreshes included), by result.",
        );
        for (result, counter) in [("ok", &tokens.fetched), ("failed", &tokens.failed)] {
            out.sample(
                "tzkms_azure_token_fetches_total",
                &[("vault", vault), ("result", result)],
                counter.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
        out.family(
            "tzkms_azure_token_expiry_seconds",
            "gauge",
            "Seconds until the current token expires (refreshed ahead of time; negative: expired).",
        );
        if let Some(left) = tokens.seconds_left() {
            out.sample("tzkms_azure_token_expiry_seconds", &[("vault", vault)], left);
        }
    }

    fn describe(&self) -> String {
        format!(
            "azure {} ({} credential)",
            self.base_url(),
            self.tokens().source_name()
        )
    }
}
