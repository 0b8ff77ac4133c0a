//! `tzkms init`: a new signer in one command. Writes a commented configuration for the chosen setup,
//! creates the data directory, creates or imports the first key (or names a vault key), checks the result
//! as `config check` does, and prints the `octez-client import` line.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use tezos::{Curve, PublicKeyHash, SecretKey};
use tzkms::azure::keyvault::KvCurve;
use tzkms::config::{Config, DEFAULT_DATA_DIR, DEFAULT_LISTEN};
use tzkms::startup;
use tzkms::watermark;
use zeroize::Zeroizing;

use super::keys::{import_key_text, parse_curve, store_key};
use super::{block_on, print_import_line};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Backend {
    /// Key files in the data directory.
    File,
    /// Azure Key Vault (Premium): https://<vault>.vault.azure.net.
    AzureVault,
    /// Azure Managed HSM: https://<hsm>.managedhsm.azure.net.
    ManagedHsm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Credential {
    Auto,
    ManagedIdentity,
    WorkloadIdentity,
    ClientSecret,
    AzureCli,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::File => "file",
            Backend::AzureVault => "azure-vault",
            Backend::ManagedHsm => "managed-hsm",
        }
    }
}

impl Credential {
    fn config_name(self) -> &'static str {
        match self {
            Credential::Auto => "auto",
            Credential::ManagedIdentity => "managed_identity",
            Credential::WorkloadIdentity => "workload_identity",
            Credential::ClientSecret => "client_secret",
            Credential::AzureCli => "azure_cli",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Where the keys live.
    #[arg(long, value_enum, default_value = "file")]
    backend: Backend,
    /// Address the signer listens on (plain HTTP).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Operations listener (/metrics, /healthz, /readyz). Default: none.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Curve of the key to generate (file: p256 (tz3), ed25519, secp256k1, bls; vault: p256, secp256k1).
    #[arg(long, value_parser = parse_curve, default_value = "p256")]
    curve: Curve,
    /// File backend: import this secret key (p2sk/edsk/spsk/BLsk, or encrypted with TZKMS_KEY_PASSWORD)
    /// instead of generating one; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    import: Option<PathBuf>,
    /// File backend: name of the key file (default: the key's address).
    #[arg(long)]
    alias: Option<String>,
    /// Azure: the vault or Managed HSM URL.
    #[arg(long)]
    vault_url: Option<String>,
    /// Azure: name of the vault key to serve.
    #[arg(long)]
    key_name: Option<String>,
    /// Azure: create --key-name in the vault (non-exportable, --curve) instead of using an existing key.
    #[arg(long)]
    create_key: bool,
    /// Azure: how tzkms gets its Entra ID token.
    #[arg(long, value_enum, default_value = "managed-identity")]
    credential: Credential,
    /// Azure: Entra tenant id (client_secret, workload_identity).
    #[arg(long)]
    tenant_id: Option<String>,
    /// Azure: application (client) id, or the user-assigned managed identity's client id.
    #[arg(long)]
    client_id: Option<String>,
    /// Azure: file holding the client secret (mode 0600).
    #[arg(long)]
    client_secret_file: Option<PathBuf>,
    /// Azure: Entra authority (default https://login.microsoftonline.com).
    #[arg(long)]
    authority_host: Option<String>,
    /// Azure: an extra root CA (PEM) for the vault and the table (e.g. an emulator's).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// A watermark shared by several instances in Azure Table Storage: the table endpoint,
    /// https://<account>.table.core.windows.net.
    #[arg(long, value_name = "ENDPOINT")]
    shared_table: Option<String>,
    /// Name of the shared table.
    #[arg(long, default_value = "tzkmswatermarks")]
    table_name: String,
    /// File holding the storage account key (Shared Key); without it, Entra ID tokens.
    #[arg(long)]
    table_account_key_file: Option<PathBuf>,
}

/// The paths `init` writes: the configuration file and the data directory.
pub(crate) fn init(
    config_path: Option<&Path>,
    data_dir: Option<&Path>,
    args: &InitArgs,
) -> anyhow::Result<()> {
    let config_path = config_path.unwrap_or(Path::new("tzkms.toml"));
    let data_dir = absolute(data_dir.unwrap_or(Path::new(DEFAULT_DATA_DIR)))?;
    check_args(args)?;
    if config_path.exists() {
        bail!(
            "refusing to overwrite {}: it exists. Move it aside, or give another path with --config",
            config_path.display()
        );
    }
    if data_dir.exists() {
        let mut entries = std::fs::read_dir(&data_dir)
            .with_context(|| format!("reading data directory {}", data_dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "refusing to initialise {}: the data directory is not empty (it may hold another signer's keys \
                 and watermarks). Give an empty or new directory with --data-dir, or keep using this one with \
                 `tzkms keys …` and your existing configuration",
                data_dir.display()
            );
        }
    }
    let authorized_keys = data_dir.join("authorized_keys");
    let text = config_text(args, &data_dir, &authorized_keys);
    // Parsed before anything is written: what is written is what tzkms reads.
    let config = Config::parse(&text).map_err(|e| anyhow::anyhow!("the generated configuration: {e}"))?;

    let existed = data_dir.exists();
    startup::ensure_data_dir(&data_dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode 0700 on {}", data_dir.display()))?;
    }
    std::fs::write(&authorized_keys, "[]\n")
        .with_context(|| format!("writing {}", authorized_keys.display()))?;

    let pkh = match args.backend {
        Backend::File => file_key(&config, &data_dir, args),
        Backend::AzureVault | Backend::ManagedHsm => block_on(vault_key(&config, &data_dir, args)),
    };
    let pkh = match pkh {
        Ok(pkh) => pkh,
        Err(e) => {
            // Nothing was stored: leave the directory as it was, so init can simply run again.
            let _ = std::fs::remove_file(&authorized_keys);
            for sub in ["keys", "floors"] {
                let _ = std::fs::remove_dir(data_dir.join(sub));
            }
            if !existed {
                let _ = std::fs::remove_dir(&data_dir);
            }
            return Err(e);
        }
    };

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(config_path)
        .with_context(|| format!("creating {}", config_path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", config_path.display()))?;
    outln!("configuration: {}", config_path.display());
    outln!("data directory: {}", data_dir.display());

    outln!("--- config check");
    let loaded = Config::load(config_path)?;
    super::config::config_check(loaded.clone())?;
    outln!("---");
    outln!(
        "Next: start the signer with `tzkms --config {} serve`, then on the baker host:",
        config_path.display()
    );
    if let Some(pkh) = pkh {
        print_import_line(&pkh, &loaded);
    }
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    Ok(std::env::current_dir()
        .context("the current directory")?
        .join(path.strip_prefix(".").unwrap_or(path)))
}

/// Flags that do not fit the chosen setup are errors, not silently ignored.
fn check_args(a: &InitArgs) -> anyhow::Result<()> {
    match a.backend {
        Backend::File => {
            for (given, flag) in [
                (a.vault_url.is_some(), "--vault-url"),
                (a.key_name.is_some(), "--key-name"),
                (a.create_key, "--create-key"),
            ] {
                if given {
                    bail!("{flag} is for a vault (--backend azure-vault or managed-hsm), not for --backend file");
                }
            }
        }
        Backend::AzureVault | Backend::ManagedHsm => {
            if a.import.is_some() || a.alias.is_some() {
                bail!(
                    "--import and --alias are for --backend file; to put a key into the vault use \
                     `tzkms azure keys import --name <name>` after init"
                );
            }
            let Some(url) = &a.vault_url else {
                bail!(
                    "--backend {} needs --vault-url https://<name>.vault.azure.net (or .managedhsm.azure.net)",
                    a.backend.name()
                );
            };
            let (other, expected) = match a.backend {
                Backend::AzureVault => (".managedhsm.azure.net", "https://<vault>.vault.azure.net"),
                _ => (".vault.azure.net", "https://<hsm>.managedhsm.azure.net"),
            };
            if url.trim_end_matches('/').ends_with(other) || !url.starts_with("https://") {
                bail!(
                    "--vault-url {url}: a {} URL looks like {expected}",
                    a.backend.name()
                );
            }
            if a.key_name.is_none() {
                bail!(
                    "--key-name is needed: the vault key to serve (an existing one, or a new one with --create-key)"
                );
            }
            if a.create_key {
                parse_vault_curve(a.curve)?;
            }
            if a.credential == Credential::ClientSecret
                && (a.tenant_id.is_none() || a.client_id.is_none() || a.client_secret_file.is_none())
            {
                bail!("--credential client-secret needs --tenant-id, --client-id and --client-secret-file");
            }
        }
    }
    Ok(())
}

fn parse_vault_curve(curve: Curve) -> anyhow::Result<KvCurve> {
    match curve {
        Curve::P256 => Ok(KvCurve::P256),
        Curve::Secp256k1 => Ok(KvCurve::P256K),
        other => bail!("--curve {other}: a vault key is p256 (tz3) or secp256k1 (tz2)"),
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn toml_path(p: &Path) -> String {
    toml_str(&p.display().to_string())
}

/// The configuration, every setting with a comment saying what it does.
fn config_text(a: &InitArgs, data_dir: &Path, authorized_keys: &Path) -> String {
    let setup = match a.backend {
        Backend::File => "key files",
        Backend::AzureVault => "Azure Key Vault",
        Backend::ManagedHsm => "Azure Managed HSM",
    };
    let shared = if a.shared_table.is_some() {
        ", shared watermark table"
    } else {
        ""
    };
    let mut t = format!(
        r#"# tzkms configuration written by `tzkms init` ({setup}{shared}).
# docs/configuration.md explains every setting; `tzkms --config <this file> config check` checks it, and
# `systemctl reload tzkms` (SIGHUP) applies changes to keys, [auth] and [policy] without a restart.

# Key files, the watermark store (double-signing protection) and the lock file. Keep it on a local disk,
# mode 0700, and back it up (docs/watermark.md): losing it loses the record of what was signed.
data_dir = {data_dir}

[server]
# Where octez-client and the baker reach the signer (plain HTTP). Keep it on loopback or a private
# network; for other hosts add a [server.tls] section (HTTPS, optionally client certificates).
listen = [{listen}]

[keys]
# Never invent a key on start: a missing key is an error you see, not a new address nobody expects.
generate_if_empty = false
"#,
        data_dir = toml_path(data_dir),
        listen = toml_str(&a.listen.to_string()),
    );
    t.push_str(
        r#"
[policy]
# Which payloads may be signed at all, by magic byte: 0x11 blocks, 0x12 preattestations, 0x13
# attestations. Add "0x03" (operations) only for a key that must also sign transactions or votes.
allowed_magic_bytes = ["0x11", "0x12", "0x13"]

# Keys without a [policy.keys.<tz…>] section of their own: consensus only.
[policy.default]
allow = ["block", "preattestation", "attestation"]

[watermark]
# Double-signing protection is on for every key; a key listed here is NOT protected (test setups only).
unprotected_keys = []
# Most distinct chains the store keeps marks on; a request on one more chain is refused.
max_chains = 8
"#,
    );
    if let Some(endpoint) = &a.shared_table {
        t.push_str(&format!(
            r#"
# The watermark shared by every instance serving the same keys, in Azure Table Storage
# (docs/high-availability.md). The local store stays on: both must agree before anything is signed.
[watermark.table]
endpoint = {endpoint}
table = {table}
"#,
            endpoint = toml_str(endpoint),
            table = toml_str(&a.table_name),
        ));
        match &a.table_account_key_file {
            Some(f) => t.push_str(&format!(
                "# Storage account key (Shared Key), mode 0600. Without it: Entra ID tokens ([azure.credential]).\naccount_key_file = {}\n",
                toml_path(f)
            )),
            None => t.push_str(
                "# No account key file: TZKMS_TABLE_ACCOUNT_KEY if set, else Entra ID tokens ([azure.credential]).\n",
            ),
        }
        if let Some(ca) = &a.ca_file {
            t.push_str(&format!(
                "# An extra root CA (PEM) for the endpoint.\nca_file = {}\n",
                toml_path(ca)
            ));
        }
    }
    t.push_str(&format!(
        r#"
[auth]
# Require octez-client's authentication signature on every signing request. Authorize the baker host's
# key with `tzkms --config <this file> auth add <edpk…>` (it edits the file below), then set this to true
# and reload.
required = false
authorized_keys_file = {}
"#,
        toml_path(authorized_keys)
    ));
    match a.metrics_listen {
        Some(addr) => t.push_str(&format!(
            "\n# The operations listener: /metrics (Prometheus), /healthz, /readyz. Never the signing port.\n[metrics]\nlisten = {}\n",
            toml_str(&addr.to_string())
        )),
        None => t.push_str(
            "\n# The operations listener: /metrics (Prometheus), /healthz, /readyz. Off; to enable:\n# [metrics]\n# listen = \"127.0.0.1:9732\"\n",
        ),
    }
    if let (Some(url), Some(name)) = (&a.vault_url, &a.key_name) {
        let (what, price) = match a.backend {
            Backend::ManagedHsm => (
                "Azure Managed HSM",
                "# Billed by the hour, not per operation: the cost metric counts 0.\nprice_per_10k_operations = 0.0\n",
            ),
            _ => (
                "Azure Key Vault (Premium, HSM-protected keys)",
                "# USD per 10,000 operations for the tzkms_azure_estimated_cost_usd_total metric (EC-HSM keys).\nprice_per_10k_operations = 0.15\n",
            ),
        };
        t.push_str(&format!(
            r#"
# {what} (docs/azure.md). The identity needs the keys get, list and sign permissions
# (role "Key Vault Crypto User" or the Managed HSM "Crypto User").
[azure]
vault_url = {url}
# The keys to serve (pin a version with "name/<version>"); [] would serve every EC P-256/P-256K key.
keys = [{name}]
# Total time one signature may take at the vault, retries included (milliseconds).
sign_budget_ms = 1500
# Re-list the vault's keys this often (seconds): new versions appear, disabled ones go.
refresh_interval_s = 300
{price}"#,
            url = toml_str(url),
            name = toml_str(name),
        ));
        if let Some(ca) = &a.ca_file {
            t.push_str(&format!(
                "# An extra root CA (PEM) to trust for Azure endpoints.\nca_file = {}\n",
                toml_path(ca)
            ));
        }
        t.push_str(&format!(
            "\n# How tzkms gets its Entra ID token: managed_identity (a VM's or App Service's identity),\n\
             # workload_identity (Kubernetes), client_secret (a service principal), azure_cli, or auto.\n\
             [azure.credential]\nkind = {}\n",
            toml_str(a.credential.config_name())
        ));
        for (value, key, comment) in [
            (a.tenant_id.as_deref().map(toml_str), "tenant_id", "Entra tenant"),
            (
                a.client_id.as_deref().map(toml_str),
                "client_id",
                "application (client) id",
            ),
            (
                a.client_secret_file.as_deref().map(toml_path),
                "client_secret_file",
                "file holding the client secret, mode 0600",
            ),
            (
                a.authority_host.as_deref().map(toml_str),
                "authority_host",
                "Entra authority",
            ),
        ] {
            if let Some(value) = value {
                t.push_str(&format!("# {comment}\n{key} = {value}\n"));
            }
        }
    }
    t
}

/// The file backend's first key: imported from --import, else generated (and vouched for: it signed
/// nothing anywhere else).
fn file_key(config: &Config, data_dir: &Path, a: &InitArgs) -> anyhow::Result<Option<PublicKeyHash>> {
    if let Some(source) = &a.import {
        let mut text = Zeroizing::new(String::new());
        if source.as_os_str() == "-" {
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the secret key from standard input")?;
        } else {
            std::fs::File::open(source)
                .and_then(|mut f| f.read_to_string(&mut text))
                .with_context(|| format!("reading the secret key from {}", source.display()))?;
        }
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return import_key_text(config, data_dir, first, a.alias.as_deref(), None).map(Some);
    }
    let key = SecretKey::generate(a.curve);
    store_key(config, data_dir, &key, false, a.alias.as_deref(), None)?;
    let pkh = key.public_key().hash();
    watermark::floor::raise(data_dir, &pkh, None, "tzkms init")?;
    Ok(Some(pkh))
}

/// A vault setup's key: created with --create-key (and vouched for), else the existing key, read to give
/// its address.
async fn vault_key(config: &Config, data_dir: &Path, a: &InitArgs) -> anyhow::Result<Option<PublicKeyHash>> {
    let azure = config.azure.as_ref().context("no [azure] section")?;
    let name = a.key_name.as_deref().context("--key-name")?;
    let client = tzkms::azure::connect(azure).await?;
    let budget = super::azure::MANAGEMENT_BUDGET;
    if a.create_key {
        let curve = parse_vault_curve(a.curve)?;
        super::azure::existing_versions(&client, name, false).await?;
        let bundle = client.create_key(name, curve, budget).await?;
        let pk = tezos::PublicKey::from_affine(curve.tezos(), &bundle.x, &bundle.y)?;
        watermark::floor::raise(data_dir, &pk.hash(), None, "tzkms init --create-key")?;
        outln!("{}", pk.hash());
        outln!(
            "key:        {}/{} (created in the vault)",
            bundle.name,
            bundle.version
        );
        outln!("public key: {pk}");
        return Ok(Some(pk.hash()));
    }
    let versions = match client.list_versions(name, budget).await {
        Ok(v) => v,
        Err(e) if e.status() == Some(404) => bail!(
            "the vault {} has no key named {name}: check --key-name, or pass --create-key to create it",
            azure.vault_url
        ),
        Err(e) => return Err(e).context(format!("reading the key {name} from the vault")),
    };
    let mut addresses = Vec::new();
    for v in versions.iter().filter(|v| v.enabled) {
        let bundle = client.get_key(name, &v.version, budget).await?;
        if let Some(pkh) = super::azure::address_of(&bundle) {
            addresses.push(pkh);
        }
    }
    let Some(pkh) = addresses.last().copied() else {
        bail!("the vault key {name} has no enabled EC P-256 or P-256K version tzkms could serve");
    };
    for pkh in &addresses {
        outln!("{pkh}");
        outln!("key:        {name} (existing vault key)");
    }
    super::history_note(&pkh);
    Ok(Some(pkh))
}
