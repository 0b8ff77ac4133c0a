//! `tzkms config check` and the security summary that `serve` and reloads print too.

use anyhow::{bail, Context};
use clap::Subcommand;
use tzkms::config::Config;
use tzkms::startup;
use tzkms::watermark;

use super::block_on;

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Load the configuration, keys, authorized keys and TLS files, and print the effective policy of
    /// every key. Exits non-zero on any error.
    Check,
}

/// What a baker should know about who may sign what, one line each.
pub(crate) fn security_summary(
    config: &Config,
    keyring: &tzkms::backend::Keyring,
    auth: &tzkms::auth::Authenticator,
    policy: &tzkms::policy::Policy,
) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(format!(
        "policy.allowed_magic_bytes: [{}]",
        policy
            .allowed_magic_bytes()
            .iter()
            .map(|b| format!("0x{b:02X}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for (pkh, _) in keyring.sorted() {
        lines.push(format!("key {pkh}: {}", policy.for_key(&pkh).describe()));
    }
    for pkh in policy.configured_keys() {
        if keyring.get(pkh).is_none() {
            lines.push(format!(
                "warning: policy.keys.{pkh} names a key this signer does not serve"
            ));
        }
    }
    if auth.required() {
        for key in auth.keys() {
            let bound = auth.binding(&key.hash).map_or_else(
                || "any key".to_string(),
                |keys| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", "),
            );
            lines.push(format!(
                "auth: authorized key {} ({}) may ask for {bound}",
                key.hash, key.name
            ));
        }
    } else {
        lines.push("auth: requests are not authenticated (auth.required = false)".into());
    }
    for addr in &config.server.listen {
        lines.push(format!("listener http://{addr}"));
    }
    if let Some(tls) = &config.server.tls {
        for addr in &tls.listen {
            let mtls = if tls.client_ca.is_some() {
                "client certificates required"
            } else {
                "no client certificates"
            };
            lines.push(format!("listener https://{addr} ({mtls})"));
        }
    }
    lines
}

pub(crate) fn config_check(mut config: Config) -> anyhow::Result<()> {
    let would_generate = config.keys.generate_if_empty;
    config.keys.generate_if_empty = false;
    block_on(async {
        // Loading the keyring reaches every backend: a vault is asked for its token audience, a token
        // and its key list, exactly as `serve` would.
        let (keyring, report) = startup::load_keyring(&config).await?;
        for (backend, n) in keyring.keys_per_backend() {
            outln!(
                "backend: {} ({n} key(s))",
                report.observers.describe(backend.kind())
            );
        }
        if keyring.is_empty() {
            for s in &report.skipped {
                eprintln!("not served: {s}");
            }
            let generated = if would_generate {
                " (serve would generate a P-256 key file on its first start, as keys.generate_if_empty is \
                 on; a key of your choosing is better)"
            } else {
                ""
            };
            bail!(
                "no key is served from {}{generated}: {}",
                config.data_dir().display(),
                startup::NO_KEY_FIX
            );
        }
        let auth = tzkms::auth::Authenticator::from_config(&config.auth)?;
        let policy = tzkms::policy::Policy::from_config(&config.policy).map_err(anyhow::Error::msg)?;
        if let Some(tls) = &config.server.tls {
            let loaded = tzkms::server::tls::Tls::load(tls)?;
            outln!("tls: certificate sha256:{}", loaded.fingerprint());
        }
        let data_dir = config.data_dir();
        let marks = watermark::file::read(&data_dir)?;
        watermark::file::probe_write(&data_dir)
            .with_context(|| format!("watermark store: {} is not writable", data_dir.display()))?;
        outln!(
            "watermark: file {} and {} ({} mark(s), writable; {})",
            data_dir.join(watermark::file::STORE_FILE).display(),
            watermark::file::LOG_FILE,
            marks.len(),
            watermark::file::describe_chains(
                &watermark::file::chains_of(&marks),
                config.watermark.max_chains
            )
        );
        if let Some(table) = &config.watermark.table {
            use tzkms::watermark::WatermarkStore as _;
            let store = startup::table_store(&config, table).await?;
            for check in store.probe().await {
                if !check.ok {
                    bail!("{}: {}", check.name, check.detail);
                }
            }
            outln!("watermark: {} (writable)", store.describe());
        }
        if let Some(addr) = config.metrics.listen {
            outln!("operations: http://{addr}/metrics, /healthz, /readyz");
        }
        for s in &report.skipped {
            outln!("not served: {s}");
        }
        for line in security_summary(&config, &keyring, &auth, &policy) {
            outln!("{line}");
        }
        outln!("configuration OK");
        anyhow::Ok(())
    })
}
