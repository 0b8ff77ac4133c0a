//! An Azure Key Vault / Managed HSM (EC keys), Entra ID and managed identity emulator, for tzkms's tests
//! (in-process, random port) and for local runs (the `kv-emulator` binary).
//!
//! ```no_run
//! # async fn demo() -> Result<(), kv_emulator::StartError> {
//! let emu = kv_emulator::Emulator::start(kv_emulator::Config { tls: true, ..Default::default() }).await?;
//! let key = emu.create_key("baker", kv_emulator::Curve::P256K).expect("create");
//! emu.faults().throttle_next(kv_emulator::Operation::Sign, 1, Some(std::time::Duration::from_secs(1)));
//! assert_eq!(emu.counters().get(kv_emulator::Operation::Sign), 0);
//! # Ok(()) }
//! ```

mod clock;
mod config;
mod control;
mod encoding;
mod error;
mod faults;
mod identity;
mod routes;
mod server;
mod state;
mod tls;
mod token;
mod vault;

pub use config::{Config, Flavour, ManagedIdentity};
pub use error::{KeyError, StartError, VaultError};
pub use faults::{Counters, Faults, OpStats, Operation, Target};
pub use vault::ec::{s_is_high, Curve};
pub use vault::API_VERSIONS;

use rand_core::{OsRng, RngCore};
use state::Shared;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vault::ec::PrivateKey;
use vault::store::{Attributes, KeyEntry, KeyVersion, Store};

/// A key as the tests see it: where it lives and its public half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub name: String,
    pub version: String,
    /// Versioned key id, `{url}/keys/{name}/{version}`.
    pub kid: String,
    pub curve: Curve,
    pub x: [u8; 32],
    pub y: [u8; 32],
}

impl KeyInfo {
    /// SEC1 compressed public key (`02|03 || x`), what Tezos `sppk`/`p2pk` encode.
    pub fn public_key_compressed(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out[0] = if self.y[31] & 1 == 1 { 0x03 } else { 0x02 };
        out[1..].copy_from_slice(&self.x);
        out
    }
}

/// A running emulator. Dropping it stops the listeners; [`Emulator::shutdown`] does the same and waits.
#[derive(Debug)]
pub struct Emulator {
    shared: Arc<Shared>,
    main_addr: SocketAddr,
    identity_addr: SocketAddr,
    ca_pem: Option<String>,
    ca_path: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    _temp_dir: Option<tempfile::TempDir>,
}

impl Emulator {
    /// Bind the listeners, generate the certificates (if TLS), load the state and start serving.
    pub async fn start(config: Config) -> Result<Emulator, StartError> {
        let store = Store::open(config.persist_dir.as_deref())?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let main = bind(config.listen).await?;
        let main_addr = main.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let (identity, identity_addr) = if config.tls {
            let l = bind(config.identity_listen).await?;
            let a = l.local_addr().map_err(|source| StartError::Bind {
                addr: config.identity_listen,
                source,
            })?;
            (Some(l), a)
        } else {
            (None, main_addr)
        };

        let (certs, ca_path, temp_dir) = if config.tls {
            let certs = tls::generate(config.persist_dir.as_deref())?;
            let (path, temp) = match (&config.ca_pem_path, &config.persist_dir) {
                (Some(p), _) => (p.clone(), None),
                (None, Some(dir)) => (dir.join("ca.pem"), None),
                (None, None) => {
                    let temp = tempfile::Builder::new()
                        .prefix("kv-emulator-")
                        .tempdir()
                        .map_err(|source| StartError::Persist {
                            path: std::env::temp_dir(),
                            source,
                        })?;
                    (temp.path().join("ca.pem"), Some(temp))
                }
            };
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| StartError::Persist {
                    path: parent.to_owned(),
                    source,
                })?;
            }
            std::fs::write(&path, &certs.ca_pem).map_err(|source| StartError::Persist {
                path: path.clone(),
                source,
            })?;
            (Some(certs), Some(path), temp)
        } else {
            (None, None, None)
        };

        let scheme = if config.tls { "https" } else { "http" };
        let identity_header = config.identity_header.clone().unwrap_or_else(|| {
            let mut b = [0u8; 16];
            OsRng.fill_bytes(&mut b);
            hex::encode(b)
        });
        let token_secret = store.read(|s| s.token_secret);
        let shared = Arc::new(Shared {
            tokens: token::TokenAuthority::new(token_secret, config.tenant_id.clone(), config.token_lifetime),
            store,
            faults: Mutex::new(Default::default()),
            counters: Counters::default(),
            identity_header,
            main_base: format!("{scheme}://{main_addr}"),
            identity_base: format!("http://{identity_addr}"),
            config,
        });

        let (shutdown, shutdown_rx) = watch::channel(false);
        let router = server::router(shared.clone());
        let ca_pem = certs.as_ref().map(|c| c.ca_pem.clone());
        let acceptor = certs.map(|c| tokio_rustls::TlsAcceptor::from(c.server_config));
        let mut tasks = vec![tokio::spawn(server::accept_loop(
            main,
            acceptor,
            router.clone(),
            shutdown_rx.clone(),
        ))];
        if let Some(l) = identity {
            tasks.push(tokio::spawn(server::accept_loop(l, None, router, shutdown_rx)));
        }
        Ok(Emulator {
            shared,
            main_addr,
            identity_addr,
            ca_pem,
            ca_path,
            shutdown,
            tasks: Mutex::new(tasks),
            _temp_dir: temp_dir,
        })
    }

    /// Vault base URL, e.g. `https://127.0.0.1:54321` (what `kid`s start with).
    pub fn url(&self) -> &str {
        &self.shared.main_base
    }

    /// Address of the main listener.
    pub fn addr(&self) -> SocketAddr {
        self.main_addr
    }

    /// Entra authority host (`AZURE_AUTHORITY_HOST`); the same listener as the vault.
    pub fn authority_host(&self) -> &str {
        &self.shared.main_base
    }

    /// v2.0 token endpoint for the configured tenant.
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.shared.main_base, self.shared.config.tenant_id
        )
    }

    /// v1 token endpoint (`resource=` form) for the configured tenant.
    pub fn token_url_v1(&self) -> String {
        format!(
            "{}/{}/oauth2/token",
            self.shared.main_base, self.shared.config.tenant_id
        )
    }

    /// Plain-HTTP base standing in for `http://169.254.169.254` (Python's `AZURE_POD_IDENTITY_AUTHORITY_HOST`).
    pub fn imds_authority(&self) -> &str {
        &self.shared.identity_base
    }

    /// Full IMDS token URL, `http://127.0.0.1:PORT/metadata/identity/oauth2/token`.
    pub fn imds_endpoint(&self) -> String {
        format!("{}/metadata/identity/oauth2/token", self.shared.identity_base)
    }

    /// App Service / Container Apps `IDENTITY_ENDPOINT`.
    pub fn identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.shared.identity_base)
    }

    /// App Service `IDENTITY_HEADER` (sent back as `X-IDENTITY-HEADER`).
    pub fn identity_header(&self) -> &str {
        &self.shared.identity_header
    }

    /// Address of the plain-HTTP identity listener (the main listener when TLS is off).
    pub fn identity_addr(&self) -> SocketAddr {
        self.identity_addr
    }

    /// CA certificate (PEM) clients must trust; `None` without TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Where the CA certificate was written; `None` without TLS.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    pub fn tenant_id(&self) -> &str {
        &self.shared.config.tenant_id
    }

    pub fn client_id(&self) -> &str {
        &self.shared.config.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.shared.config.client_secret
    }

    /// The exact `WWW-Authenticate` value of the 401 challenge.
    pub fn challenge(&self) -> String {
        vault::challenge(&self.shared)
    }

    /// Fault injection handle.
    pub fn faults(&self) -> Faults {
        Faults {
            shared: self.shared.clone(),
        }
    }

    /// Per-operation call counters.
    pub fn counters(&self) -> Counters {
        self.shared.counters.clone()
    }

    /// A valid access token for the data plane (as the service principal), bypassing the token endpoints.
    pub fn issue_token(&self) -> String {
        let config = &self.shared.config;
        self.shared
            .tokens
            .mint(
                config.flavour.resource(),
                &token::Subject {
                    app_id: config.client_id.clone(),
                    object_id: format!("{}-sp", config.client_id),
                },
            )
            .access_token
    }

    /// Create a new key (or a new version of an existing key) directly, as `POST /keys/{name}/create` with
    /// `kty` EC-HSM would.
    pub fn create_key(&self, name: &str, curve: Curve) -> Result<KeyInfo, KeyError> {
        self.insert_version(name, PrivateKey::generate(curve))
    }

    /// Create an `RSA-HSM` key of `bits` (2048, 3072, 4096) with the key operations `key_ops` (e.g. `wrapKey`,
    /// `unwrapKey`), as `POST /keys/{name}/create` would; returns its versioned kid.
    pub fn create_rsa_key(&self, name: &str, bits: u32, key_ops: &[&str]) -> Result<String, KeyError> {
        let material = vault::material::KeyMaterial::generate_rsa(bits)
            .map_err(|e| VaultError::bad_parameter(e.to_string()))?;
        let ops = key_ops.iter().map(|o| (*o).to_owned()).collect();
        self.insert_material(name, material, ops)
    }

    /// Create an `oct-HSM` (AES) key of `bits` (128, 192, 256) with `key_ops`, as `POST /keys/{name}/create`
    /// on a Managed HSM would; returns its versioned kid. (The HTTP API refuses oct keys on a vault.)
    pub fn create_oct_key(&self, name: &str, bits: u32, key_ops: &[&str]) -> Result<String, KeyError> {
        if !vault::material::OCT_SIZES.contains(&bits) {
            return Err(
                VaultError::bad_parameter(format!("Invalid key size {bits} for an oct-HSM key.")).into(),
            );
        }
        let ops = key_ops.iter().map(|o| (*o).to_owned()).collect();
        self.insert_material(name, vault::material::KeyMaterial::generate_oct(bits), ops)
    }

    /// Import a private scalar (big-endian) as a new key version, as `PUT /keys/{name}` with `Hsm: true` would.
    pub fn import_key(&self, name: &str, curve: Curve, d: &[u8]) -> Result<KeyInfo, KeyError> {
        let key = PrivateKey::from_scalar(curve, d).map_err(|e| VaultError::bad_parameter(e.to_string()))?;
        self.insert_version(name, key)
    }

    /// The latest version of an EC key (`None` for RSA and AES keys).
    pub fn key(&self, name: &str) -> Option<KeyInfo> {
        self.shared.store.read(|s| {
            let entry = s.key(name)?;
            entry.latest().and_then(|v| self.key_info(&entry.name, v))
        })
    }

    /// Verify a raw `r || s` signature with a stored key version (`None` = latest), either `s` half accepted.
    pub fn verify(&self, name: &str, version: Option<&str>, digest: &[u8; 32], signature: &[u8]) -> bool {
        self.shared.store.read(|s| {
            s.key(name)
                .and_then(|e| e.version(version))
                .and_then(|v| v.key.ec())
                .is_some_and(|k| k.verify_digest(digest, signature))
        })
    }

    /// Stop accepting, close connections and wait for the listener tasks to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }

    fn insert_version(&self, name: &str, key: PrivateKey) -> Result<KeyInfo, KeyError> {
        let kid = self.insert_material(
            name,
            vault::material::KeyMaterial::Ec(key),
            vec!["sign".to_owned(), "verify".to_owned()],
        )?;
        let version = kid.rsplit('/').next().unwrap_or_default().to_owned();
        self.shared
            .store
            .read(|s| {
                let entry = s.key(name)?;
                entry
                    .version(Some(&version))
                    .and_then(|v| self.key_info(&entry.name, v))
            })
            .ok_or_else(|| VaultError::key_not_found(name, Some(&version)).into())
    }

    fn insert_material(
        &self,
        name: &str,
        key: vault::material::KeyMaterial,
        key_ops: Vec<String>,
    ) -> Result<String, KeyError> {
        if !vault::valid_name(name) {
            return Err(VaultError::bad_parameter(format!(
                "The request URI contains an invalid name: {name}"
            ))
            .into());
        }
        let now = clock::now();
        let version = KeyVersion {
            version: clock::key_version(),
            key,
            hsm: true,
            key_ops,
            attributes: Attributes {
                enabled: true,
                nbf: None,
                exp: None,
                created: now,
                updated: now,
            },
            tags: Default::default(),
        };
        let info = self.shared.store.mutate(|s| {
            let lower = name.to_ascii_lowercase();
            if s.deleted.contains_key(&lower) {
                return Err(VaultError::conflict(format!(
                    "Key {name} is in a deleted but recoverable state."
                )));
            }
            let entry = s.keys.entry(lower).or_insert_with(|| KeyEntry {
                name: name.to_owned(),
                versions: Vec::new(),
            });
            let kid = format!(
                "{}/keys/{}/{}",
                self.shared.main_base, entry.name, version.version
            );
            entry.versions.push(version);
            Ok(kid)
        })?;
        Ok(info)
    }

    /// The EC view of a key version (`None` for RSA and AES keys).
    fn key_info(&self, name: &str, v: &KeyVersion) -> Option<KeyInfo> {
        let ec = v.key.ec()?;
        let (x, y) = ec.public_xy();
        Some(KeyInfo {
            name: name.to_owned(),
            version: v.version.clone(),
            kid: format!("{}/keys/{name}/{}", self.shared.main_base, v.version),
            curve: ec.curve(),
            x,
            y,
        })
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }
}
