//! `tzkms azure keys …`: create, import, list, back up and restore keys in Key Vault / Managed HSM.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use tezos::{Curve, PublicKeyHash};
use tzkms::azure::keyvault::KvCurve;
use tzkms::config::Config;
use tzkms::startup;
use tzkms::watermark;
use zeroize::Zeroizing;

use super::{history_note, print_import_line};

#[derive(Debug, Subcommand)]
pub(crate) enum AzureCommand {
    #[command(subcommand)]
    Keys(AzureKeysCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum AzureKeysCommand {
    /// Every version of every key of the vault: name, version, curve, Tezos address, enabled, created.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create a non-exportable EC-HSM key. Refused if the name exists, unless --new-version.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = parse_azure_curve)]
        curve: KvCurve,
        /// Add a new version (a new key pair, so a new Tezos address) to an existing key: a rotation.
        #[arg(long)]
        new_version: bool,
    },
    /// Import a private key read from standard input: a Tezos p2sk/spsk (or encrypted p2esk/spesk, password in
    /// TZKMS_KEY_PASSWORD) or an EC private key PEM (passphrase in TZKMS_PEM_PASSPHRASE). Refused if the
    /// name exists, unless --new-version.
    Import {
        #[arg(long)]
        name: String,
        /// Import as a new version (a new Tezos address) of an existing key.
        #[arg(long)]
        new_version: bool,
    },
    /// Write a key's backup blob (all versions; restorable only in the same subscription and geography).
    Backup { name: String, file: PathBuf },
    /// Restore a backup blob written by `backup`.
    Restore { file: PathBuf },
}

pub(crate) fn parse_azure_curve(s: &str) -> Result<KvCurve, String> {
    match s.parse::<Curve>().map_err(|e| e.to_string())? {
        Curve::P256 => Ok(KvCurve::P256),
        Curve::Secp256k1 => Ok(KvCurve::P256K),
        other => Err(format!(
            "{other} keys cannot live in Azure Key Vault: use p256 or secp256k1"
        )),
    }
}

/// Budget for one-off management calls.
pub(crate) const MANAGEMENT_BUDGET: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) async fn azure_keys(config: Config, cmd: &AzureKeysCommand) -> anyhow::Result<()> {
    let azure = config
        .azure
        .as_ref()
        .context("no [azure] section in the configuration (see docs/azure.md)")?;
    let client = tzkms::azure::connect(azure).await?;
    let report = |b: &tzkms::azure::keyvault::KeyBundle| -> anyhow::Result<()> {
        let curve = b
            .crv
            .as_deref()
            .and_then(KvCurve::from_crv)
            .context("not a P-256/P-256K key")?;
        let pk = tezos::PublicKey::from_affine(curve.tezos(), &b.x, &b.y)?;
        outln!("{}", pk.hash());
        outln!("key:        {}/{}", b.name, b.version);
        outln!("public key: {pk}");
        print_import_line(&pk.hash(), &config);
        Ok(())
    };
    match cmd {
        AzureKeysCommand::List { json } => {
            let rows = vault_key_versions(&client).await?;
            if *json {
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                outln!(
                    "{:<24} {:<32} {:<7} {:<36} {:<7} {:<20} usable",
                    "NAME",
                    "VERSION",
                    "CURVE",
                    "ADDRESS",
                    "ENABLED",
                    "CREATED (UTC)"
                );
                for r in rows {
                    outln!(
                        "{:<24} {:<32} {:<7} {:<36} {:<7} {:<20} {}",
                        r["name"].as_str().unwrap_or(""),
                        r["version"].as_str().unwrap_or("-"),
                        r["curve"].as_str().unwrap_or("-"),
                        r["address"].as_str().unwrap_or("-"),
                        r["enabled"].as_bool().map_or("-".into(), |e| e.to_string()),
                        r["created"].as_u64().map_or("-".into(), utc_text),
                        r["error"].as_str().or(r["usable"].as_str()).unwrap_or("")
                    );
                }
            }
        }
        AzureKeysCommand::Create {
            name,
            curve,
            new_version,
        } => {
            let existing = existing_versions(&client, name, *new_version).await?;
            let bundle = client.create_key(name, *curve, MANAGEMENT_BUDGET).await?;
            report(&bundle)?;
            warn_new_version(&existing, &bundle);
            // A key created in the HSM now signed nothing anywhere: this data directory vouches for it.
            let pk = tezos::PublicKey::from_affine(curve.tezos(), &bundle.x, &bundle.y)?;
            let data_dir = config.data_dir();
            startup::ensure_data_dir(&data_dir)?;
            watermark::floor::raise(&data_dir, &pk.hash(), None, "tzkms azure keys create")?;
            outln!(
                "consensus: vouched for in {} (a new key has no past); another data directory serving it needs \
                 the shared table, its marks, or `tzkms watermark floor`",
                data_dir.display()
            );
        }
        AzureKeysCommand::Import { name, new_version } => {
            let mut text = Zeroizing::new(String::new());
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading the private key from standard input")?;
            let password = startup::key_password(&config)?;
            let passphrase = std::env::var("TZKMS_PEM_PASSPHRASE")
                .ok()
                .map(|p| Zeroizing::new(p.into_bytes()));
            let key = tzkms::azure::import::parse(
                &text,
                password.as_ref().map(|p| p.as_slice()),
                passphrase.as_ref().map(|p| p.as_slice()),
            )
            .map_err(anyhow::Error::msg)?;
            let expected = key.public_key().map_err(anyhow::Error::msg)?;
            let existing = existing_versions(&client, name, *new_version).await?;
            let bundle = client
                .import_key(name, key.curve, &key.d, &key.x, &key.y, MANAGEMENT_BUDGET)
                .await?;
            let got = tezos::PublicKey::from_affine(key.curve.tezos(), &bundle.x, &bundle.y)?;
            if got != expected {
                bail!("the vault reports public key {got}, expected {expected}: check the vault");
            }
            report(&bundle)?;
            warn_new_version(&existing, &bundle);
            history_note(&got.hash());
        }
        AzureKeysCommand::Backup { name, file } => {
            let blob = client.backup_key(name, MANAGEMENT_BUDGET).await?;
            std::fs::write(file, blob).with_context(|| format!("writing {}", file.display()))?;
            outln!("backup of {name} written to {}", file.display());
        }
        AzureKeysCommand::Restore { file } => {
            let blob =
                std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            report(&client.restore_key(blob.trim(), MANAGEMENT_BUDGET).await?)?;
        }
    }
    Ok(())
}

/// A version of a vault key as `azure keys` shows it.
pub(crate) struct VersionRow {
    version: String,
    address: Option<PublicKeyHash>,
    enabled: bool,
}

/// The Tezos address of a vault key version, if it is a P-256 or P-256K key.
pub(crate) fn address_of(b: &tzkms::azure::keyvault::KeyBundle) -> Option<PublicKeyHash> {
    let curve = b.crv.as_deref().and_then(KvCurve::from_crv)?;
    tezos::PublicKey::from_affine(curve.tezos(), &b.x, &b.y)
        .ok()
        .map(|pk| pk.hash())
}

/// The versions of `name` already in the vault (empty if the name is new). An existing name is refused
/// unless `new_version`: a new version is a new key pair, so a new address, and the chain keeps expecting
/// the old one.
pub(crate) async fn existing_versions(
    client: &tzkms::azure::keyvault::KeyVaultClient,
    name: &str,
    new_version: bool,
) -> anyhow::Result<Vec<VersionRow>> {
    let versions = match client.list_versions(name, MANAGEMENT_BUDGET).await {
        Ok(versions) => versions,
        Err(e) if e.status() == Some(404) => return Ok(Vec::new()),
        Err(e) => return Err(e).context(format!("checking whether the key {name} already exists")),
    };
    let mut rows = Vec::new();
    for item in versions {
        let bundle = client.get_key(name, &item.version, MANAGEMENT_BUDGET).await?;
        rows.push(VersionRow {
            address: address_of(&bundle),
            version: item.version,
            enabled: item.enabled,
        });
    }
    if !rows.is_empty() && !new_version {
        let listed: Vec<String> = rows
            .iter()
            .map(|r| {
                let address = r.address.map_or("no Tezos address".into(), |a| a.to_string());
                format!("{address} (version {}, enabled={})", r.version, r.enabled)
            })
            .collect();
        bail!(
            "the vault already has a key named {name}: {}. Creating or importing it again would add a new \
             version with a new address, which the chain does not expect for this baker. Nothing was changed. \
             Choose another --name, or pass --new-version to rotate on purpose",
            listed.join(", ")
        );
    }
    Ok(rows)
}

/// After a new version of an existing key: the address tzkms serves for it changes, say so loudly.
pub(crate) fn warn_new_version(existing: &[VersionRow], bundle: &tzkms::azure::keyvault::KeyBundle) {
    if existing.is_empty() {
        return;
    }
    let new = address_of(bundle).map_or("?".into(), |a| a.to_string());
    let old: Vec<String> = existing
        .iter()
        .filter(|r| r.enabled)
        .map(|r| r.address.map_or("?".into(), |a| a.to_string()))
        .collect();
    eprintln!(
        "WARNING: {name} now has a new version {version} with a NEW ADDRESS {new}.\n\
         The chain still expects {old} for this baker. tzkms serves every enabled version, so both addresses \
         are served after its next key refresh (unless [azure] keys pins a version: then add the new one).\n\
         Next: register {new} as the consensus key (octez-client set consensus key for <baker> to <{new}>), \
         and keep the old version enabled until the change is active; only then disable it \
         (az keyvault key set-attributes --name {name} --version <old> --enabled false).",
        name = bundle.name,
        version = bundle.version,
        old = if old.is_empty() {
            "the old address".into()
        } else {
            old.join(", ")
        },
    );
}

/// Every version of every key of the vault, for `azure keys list`.
pub(crate) async fn vault_key_versions(
    client: &tzkms::azure::keyvault::KeyVaultClient,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    for item in client.list_keys(MANAGEMENT_BUDGET).await? {
        let mut versions = match client.list_versions(&item.name, MANAGEMENT_BUDGET).await {
            Ok(v) => v,
            Err(e) => {
                rows.push(serde_json::json!({ "name": item.name, "error": e.to_string() }));
                continue;
            }
        };
        versions.sort_by_key(|v| v.created);
        for v in versions {
            let row = match client.get_key(&item.name, &v.version, MANAGEMENT_BUDGET).await {
                Ok(b) => serde_json::json!({
                    "name": b.name, "version": b.version, "kty": b.kty, "curve": b.crv,
                    "address": address_of(&b).map(|a| a.to_string()), "enabled": b.enabled,
                    "created": b.created, "usable": b.usable_now().err().unwrap_or("yes"),
                }),
                Err(e) => serde_json::json!({
                    "name": item.name, "version": v.version, "enabled": v.enabled, "created": v.created,
                    "error": e.to_string(),
                }),
            };
            rows.push(row);
        }
    }
    Ok(rows)
}

/// `2026-12-05T13:07:44Z` for seconds since the Unix epoch (proleptic Gregorian calendar, UTC).
pub(crate) fn utc_text(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date, counting in 400-year eras from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}
