//! From a configuration to a ready signer: the data directory, passwords, key backends, first-start key
//! generation.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tezos::{Curve, PublicKeyHash, SecretKey};
use zeroize::Zeroizing;

use crate::auth::Authenticator;
use crate::backend::file::{self, FileBackend};
use crate::backend::{KeyBackend, Keyring};
use std::time::Duration;

use crate::azure::credential::{self, TokenCache};
use crate::azure::keyvault::KeyVaultClient;
use crate::azure::table::{TableAuth, TableClient};
use crate::backend::azure::{AzureBackend, KeySelection};
use crate::config::{AzureConfig, Config, HealthConfig, TableConfig, PASSWORD_ENV};
use crate::health::Observers;
use crate::policy::Policy;
use crate::signer::Signer;
use crate::watermark::azure_table::{BothStores, TableStore};
use crate::watermark::file::{FileStore, Opened};
use crate::watermark::Watermarks;

/// The file older versions locked instead of the directory. A file can be unlinked under a running server
/// (after which a second server would lock a new file of the same name), so the directory itself is locked
/// now; a leftover `tzkms.lock` is harmless and may be deleted.
pub const LEGACY_LOCK_FILE: &str = "tzkms.lock";

/// Holds an exclusive `flock` on the data directory itself until dropped. A directory cannot be replaced
/// under a running server the way a lock file can be deleted, so two tzkms processes (or a server and a
/// watermark-changing command) never use one data directory at once.
#[derive(Debug)]
pub struct DataDirLock {
    _dir: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock or says who holds it.
    pub fn acquire(data_dir: &Path) -> anyhow::Result<Self> {
        // A directory opens read-only; flock does not care about the open mode.
        let dir = std::fs::File::open(data_dir)
            .with_context(|| format!("opening data directory {} to lock it", data_dir.display()))?;
        match dir.try_lock() {
            Ok(()) => Ok(Self { _dir: dir }),
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = lock_holder(&dir).map_or_else(String::new, |pid| format!(" (pid {pid})"));
                anyhow::bail!(
                    "{} is in use by another tzkms process{holder} that holds its lock; stop it first",
                    data_dir.display()
                )
            }
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking data directory {}", data_dir.display()))
            }
        }
    }
}

/// The process holding a `flock` on `file`, from `/proc/locks` (Linux; None elsewhere or if hidden).
fn lock_holder(file: &std::fs::File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    // /proc/locks names a file `MAJOR:MINOR:INODE`, the device numbers in hex.
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    let id = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&id.as_str()))
            .then(|| fields.get(4)?.parse().ok())
            .flatten()
    })
}

pub use crate::health::NO_KEY_FIX;

/// What startup did that the operator should hear about.
#[derive(Debug, Default)]
pub struct StartupReport {
    /// A key generated because none was configured.
    pub generated: Option<PublicKeyHash>,
    /// Keys or entries not served, with the reason.
    pub skipped: Vec<String>,
    /// Whether the watermark store was created now or loaded.
    pub watermarks: Option<Opened>,
    /// The vault backend, asked to re-list its keys on reload.
    pub azure: Option<Arc<AzureBackend>>,
    /// What the backends report to the operator (readiness, status, metrics), registered beside them.
    pub observers: Observers,
}

/// The password for encrypted file keys: `keys.password_file`, else `TZKMS_KEY_PASSWORD`.
pub fn key_password(config: &Config) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
    let password = crate::secret::read(
        config.keys.password_file.as_deref(),
        PASSWORD_ENV,
        crate::secret::Trim::LineEnd,
    )
    .map_err(|e| anyhow::anyhow!("password file: {e}"))?;
    Ok(password.map(|p| Zeroizing::new(p.expose().as_bytes().to_vec())))
}

/// Creates the data directory (0700) if it does not exist yet.
pub fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    crate::secret::create_private_dir(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))
}

/// Writes the key file of a key made here, with an open floor: it signed nothing anywhere else, so it may
/// sign consensus at once (see [`crate::watermark::floor`]).
pub fn write_new_key(data_dir: &Path, name: &str, key: &SecretKey) -> anyhow::Result<std::path::PathBuf> {
    let path = file::write_key_file(data_dir, name, &key.to_b58())?;
    crate::watermark::floor::raise(data_dir, &key.public_key().hash(), None, "generated here")?;
    Ok(path)
}

/// Where the data directory comes from, in the order tzkms looks (for messages about a wrong one).
pub const DATA_DIR_SOURCES: &str = "--data-dir, else TZKMS_DATA_DIR, else data_dir in the --config file \
     (relative to the file), else ./tzkms-data";

/// Fails unless `dir` exists: commands that read or serve what is there never create it, so a mistyped
/// path is an error instead of an empty directory that looks like a fresh start.
pub fn existing_data_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    anyhow::bail!(
        "data directory {} does not exist. Is it the one the signer uses? It comes from {DATA_DIR_SOURCES}. \
         Fix the path, or create it for a new signer (`install -d -m 700 {}`, or `tzkms keys generate`)",
        dir.display(),
        dir.display()
    )
}

/// A key backend made of the file backend: tests wrap it to count or fail its calls.
pub type WrapFiles = Box<dyn FnOnce(FileBackend) -> Arc<dyn KeyBackend> + Send>;

/// The watermark store of `config`: the file store in the data directory, joined with the shared table
/// when `[watermark.table]` is set; and whether the file store was created now or loaded.
pub(crate) async fn open_watermarks(
    config: &Config,
) -> anyhow::Result<(Arc<dyn Watermarks>, Option<Opened>)> {
    let data_dir = config.data_dir();
    existing_data_dir(&data_dir)?;
    let (store, opened) = FileStore::open_with(&data_dir, config.watermark.max_chains)?;
    let local = Arc::new(store);
    let store: Arc<dyn Watermarks> = match &config.watermark.table {
        Some(table) => {
            let shared = Arc::new(table_store(config, table).await?);
            let (both, raised) = BothStores::new(local, shared)
                .await
                .context("raising the shared watermark table to this instance's local marks")?;
            if raised > 0 {
                tracing::info!(
                    raised,
                    "shared watermark table raised to this instance's local marks"
                );
            }
            Arc::new(both)
        }
        None => local,
    };
    Ok((store, Some(opened)))
}

/// The signer of `config` over `watermarks`: every configured key backend loaded (the file backend
/// wrapped by `wrap` if given), authentication, policy, limits, metrics at zero and the watermark gauges.
/// Must run inside a tokio runtime. [`crate::app::Application::build`] is the way in; this is its step.
pub(crate) async fn build_signer_from(
    config: &Config,
    (watermarks, opened): (Arc<dyn Watermarks>, Option<Opened>),
    wrap: Option<WrapFiles>,
) -> anyhow::Result<(Arc<Signer>, StartupReport)> {
    let (keyring, mut report) = load_keyring_wrapped(config, wrap).await?;
    report.watermarks = opened;
    let auth = Authenticator::from_config(&config.auth)?;
    let policy = Policy::from_config(&config.policy).map_err(anyhow::Error::msg)?;
    let signer = Signer::new(
        keyring,
        auth,
        policy,
        watermarks,
        config.watermark.unprotected_keys.iter().copied().collect(),
        Arc::new(crate::limits::Limits::new(&config.limits)),
    );
    signer.init_metrics();
    if let Err(e) = signer.load_watermark_gauges().await {
        tracing::warn!(error = %e, "watermark gauges start empty: the store could not be listed");
    }
    Ok((signer, report))
}

/// Connects to the configured vault: discovers the token audience from the vault's 401 challenge, starts
/// the token cache and its refresher, lists the keys, and keeps them fresh in the background.
pub(crate) async fn connect_azure(
    azure: &AzureConfig,
    health: &HealthConfig,
) -> anyhow::Result<(Arc<AzureBackend>, Arc<KeyVaultClient>)> {
    let selection = azure
        .keys
        .iter()
        .map(|k| KeySelection::parse(k).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client = crate::azure::connect(azure).await?;
    let backend = AzureBackend::start(
        client.clone(),
        selection,
        Duration::from_millis(azure.sign_budget_ms),
    )
    .await
    .with_context(|| format!("azure: listing the keys of {}", azure.vault_url))?;
    backend.spawn_refresher(Duration::from_secs(azure.refresh_interval_s.max(10)));
    backend.spawn_prober(Duration::from_millis(health.probe_interval_ms.max(10)));
    Ok((backend, client))
}

/// The shared watermark store of `[watermark.table]`, with its table created if missing.
pub async fn table_store(config: &Config, table: &TableConfig) -> anyhow::Result<TableStore> {
    let http = crate::azure::http_client(table.ca_file.as_deref()).map_err(anyhow::Error::msg)?;
    let key = crate::secret::read(
        table.account_key_file.as_deref(),
        "TZKMS_TABLE_ACCOUNT_KEY",
        crate::secret::Trim::Whitespace,
    )
    .map_err(|e| anyhow::anyhow!("storage account key: {e}"))?;
    let auth = match key {
        Some(text) => {
            use base64::Engine as _;
            let key = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .context("the storage account key is not base64")?;
            TableAuth::SharedKey {
                account: table.account_name(),
                key: crate::secret::Secret::new(key),
            }
        }
        None => {
            let credential = table
                .credential
                .clone()
                .or_else(|| config.azure.as_ref().map(|a| a.credential.clone()))
                .unwrap_or_default();
            let tokens = TokenCache::new(
                credential::from_config(&credential, http.clone())?,
                crate::azure::table::STORAGE_RESOURCE.into(),
            );
            tokens.get().await.context("table storage: first token")?;
            tokens.spawn_refresher();
            TableAuth::Bearer(tokens)
        }
    };
    let budget = Duration::from_millis(table.budget_ms);
    let client = TableClient::new(http, &table.endpoint, &table.table, auth)?;
    client
        .ensure_table(budget * 5)
        .await
        .with_context(|| format!("table storage: {} at {}", table.table, table.endpoint))?;
    let writer = format!(
        "{}:{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim(),
        std::process::id()
    );
    Ok(TableStore::new(Arc::new(client), budget, writer))
}

/// Loads every configured key backend (generating a first key file if configured and no key exists).
pub async fn load_keyring(config: &Config) -> anyhow::Result<(Keyring, StartupReport)> {
    load_keyring_wrapped(config, None).await
}

/// Like [`load_keyring`], the file backend served through `wrap` if given.
pub(crate) async fn load_keyring_wrapped(
    config: &Config,
    wrap: Option<WrapFiles>,
) -> anyhow::Result<(Keyring, StartupReport)> {
    let data_dir = config.data_dir();
    existing_data_dir(&data_dir)?;
    let password = key_password(config)?;
    let mut report = StartupReport::default();
    let mut keyring = Keyring::default();
    let mut any_key = false;
    // Sealed key files: unsealed once here (a vault call each), before anything else may fail for another
    // reason and before the synchronous file loading.
    let unsealed = crate::sealing::key_files(config, &data_dir).await?;
    if let Some(azure) = &config.azure {
        let (backend, client) = connect_azure(azure, &config.health).await?;
        any_key |= !backend.keys().is_empty();
        report.observers.add(backend.kind(), client);
        report.azure = Some(backend.clone());
        keyring.add_backend(backend);
    }
    let threshold = crate::threshold::load(config, &data_dir, password.as_ref(), &unsealed)?;
    any_key |= !threshold.is_empty();
    for loaded in threshold {
        report.observers.add(loaded.backend.kind(), loaded.observed);
        keyring.add_backend(loaded.backend);
    }
    let (mut files, load) = FileBackend::load(
        &data_dir,
        config.keys.octez_base_dir.as_deref(),
        password.as_ref(),
        &unsealed,
    )?;
    report.skipped.extend(load.skipped);
    if files.is_empty() && !any_key && config.keys.generate_if_empty {
        let key = SecretKey::generate(Curve::P256);
        let pkh = key.public_key().hash();
        write_new_key(&data_dir, &pkh.to_string(), &key)?;
        report.generated = Some(pkh);
        (files, _) = FileBackend::load(
            &data_dir,
            config.keys.octez_base_dir.as_deref(),
            password.as_ref(),
            &unsealed,
        )?;
    }
    let backend: Arc<dyn KeyBackend> = match wrap {
        Some(wrap) => wrap(files),
        None => Arc::new(files),
    };
    for dup in keyring.add_backend(backend) {
        report.skipped.push(format!(
            "{} ({}): served twice; the first one is used",
            dup.public_key.hash(),
            dup.name
        ));
    }
    Ok((keyring, report))
}
