//! A tzkms started by the load tool itself, in process but on its own runtime (as a separate process would
//! have its own threads): file keys in a fresh data directory, or Azure keys in a Key Vault emulator with a
//! fixed sign latency; durable watermark on or off.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kv_emulator::{Emulator, Operation};
use tezos::{Curve, PublicKey, PublicKeyHash, SecretKey};
use tzkms::app::Application;
use tzkms::config::{AzureConfig, Config, CredentialConfig, CredentialKind};

use crate::report::Latency;

/// Where the local signer's keys live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Key files in the data directory.
    File,
    /// Keys in an in-process Key Vault emulator, reached over HTTPS.
    Azure,
}

#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub curve: Curve,
    pub keys: usize,
    pub backend: Backend,
    pub watermark: bool,
    pub azure_latency: Duration,
    pub threads: usize,
    /// Where to create the data directory (default: the system's temporary directory).
    pub parent_dir: Option<PathBuf>,
    /// Require authentication by this key.
    pub authorized_key: Option<PublicKey>,
}

/// A running tzkms and, for the Azure backend, its emulator.
#[derive(Debug)]
pub struct LocalSigner {
    pub url: String,
    pub pkhs: Vec<PublicKeyHash>,
    data_dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
    emulator: Option<(Emulator, tokio::runtime::Runtime)>,
}

fn runtime(name: &str, threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()?)
}

impl LocalSigner {
    pub async fn start(options: &LocalOptions) -> anyhow::Result<Self> {
        let data_dir = match &options.parent_dir {
            Some(p) => tempfile::Builder::new().prefix("tzkms-load.").tempdir_in(p)?,
            None => tempfile::Builder::new().prefix("tzkms-load.").tempdir()?,
        };
        let mut config = Config {
            data_dir: Some(data_dir.path().join("data")),
            ..Config::default()
        };
        config.server.listen = vec!["127.0.0.1:0".parse()?];
        config.keys.generate_if_empty = false;
        let mut pkhs = Vec::with_capacity(options.keys);
        let mut emulator = None;
        match options.backend {
            Backend::File => {
                tzkms::startup::ensure_data_dir(&data_dir.path().join("data"))?;
                for _ in 0..options.keys {
                    let key = SecretKey::generate(options.curve);
                    let pkh = key.public_key().hash();
                    tzkms::startup::write_new_key(&data_dir.path().join("data"), &pkh.to_string(), &key)?;
                    pkhs.push(pkh);
                }
            }
            Backend::Azure => {
                let curve = match options.curve {
                    Curve::P256 => kv_emulator::Curve::P256,
                    Curve::Secp256k1 => kv_emulator::Curve::P256K,
                    other => anyhow::bail!("Key Vault has no {other} keys: use --curve p256 or secp256k1"),
                };
                let rt = runtime("kv-emulator", 1)?;
                let emu = rt
                    .spawn(Emulator::start(kv_emulator::Config {
                        tls: true,
                        ..Default::default()
                    }))
                    .await??;
                let dir = data_dir.path().join("data");
                tzkms::startup::ensure_data_dir(&dir)?;
                for i in 0..options.keys {
                    let info = emu.create_key(&format!("delegate-{i}"), curve)?;
                    let pk = PublicKey::from_bytes(options.curve, &info.public_key_compressed())?;
                    // Created for this run: vouched for, as `tzkms azure keys create` does.
                    tzkms::watermark::floor::raise(&dir, &pk.hash(), None, "created by tzkms-load")?;
                    pkhs.push(pk.hash());
                }
                emu.faults()
                    .set_latency(Operation::Sign, options.azure_latency, Duration::ZERO);
                let secret = data_dir.path().join("client-secret");
                std::fs::write(&secret, emu.client_secret())?;
                std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
                config.azure = Some(AzureConfig {
                    ca_file: emu.ca_pem_path().map(Into::into),
                    credential: CredentialConfig {
                        kind: CredentialKind::ClientSecret,
                        tenant_id: Some(emu.tenant_id().into()),
                        client_id: Some(emu.client_id().into()),
                        client_secret_file: Some(secret),
                        authority_host: Some(emu.authority_host().into()),
                        ..Default::default()
                    },
                    ..AzureConfig::new(emu.url())
                });
                emulator = Some((emu, rt));
            }
        }
        if !options.watermark {
            config.watermark.unprotected_keys = pkhs.clone();
        }
        // Transactions are what open- and closed-loop modes sign by default; consensus stays allowed.
        for kind in ["block", "preattestation", "attestation", "transaction"] {
            let kind = kind.parse().map_err(anyhow::Error::msg)?;
            if !config.policy.default.allow.contains(&kind) {
                config.policy.default.allow.push(kind);
            }
        }
        // Measuring throughput and latency, not the abuse limits: one loopback client sends everything,
        // and bursts of thousands of delegates need as many connections.
        config.limits.per_client = None;
        config.limits.generic_per_key = None;
        config.limits.generic_share = 1.0;
        config.server.max_connections = config.server.max_connections.max(2 * options.keys + 64);
        if let Some(pk) = &options.authorized_key {
            config.auth.required = true;
            config.auth.authorized_keys = vec![pk.clone()];
        }
        let rt = runtime("tzkms", options.threads)?;
        // Built on the signer's runtime with `block_on` (from a blocking thread): `Application::build`'s
        // future is not `Send` for every lifetime, so it cannot be spawned.
        let handle = rt.handle().clone();
        let addr = tokio::task::spawn_blocking(move || {
            handle.block_on(async move {
                let app = Application::build(&config).await?;
                let addr = app.local_addrs()[0];
                tokio::spawn(app.run_until_stopped(std::future::pending()));
                anyhow::Ok(addr)
            })
        })
        .await??;
        Ok(Self {
            url: format!("http://{addr}"),
            pkhs,
            data_dir,
            runtime: Some(rt),
            emulator,
        })
    }

    /// The signer's data directory (its watermark store lives there).
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.path().join("data")
    }

    pub fn emulator(&self) -> Option<&Emulator> {
        self.emulator.as_ref().map(|(e, _)| e)
    }
}

impl Drop for LocalSigner {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        if let Some((emu, rt)) = self.emulator.take() {
            drop(emu);
            rt.shutdown_background();
        }
    }
}

/// How the emulator is measured directly: in the shape of the load it is compared with.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// `concurrency` clients, each sending its next request when the last is answered, `requests` in all.
    Closed { concurrency: usize, requests: u64 },
    /// `rounds` bursts of `size` requests sent at the same instant, as baker mode does.
    Bursts { size: usize, rounds: usize },
}

/// The emulator's own sign latency, measured the way tzkms calls it (pooled HTTPS client, bearer token).
pub async fn emulator_direct(emu: &Emulator, shape: Shape) -> anyhow::Result<Latency> {
    let info = emu.create_key("direct-probe", kv_emulator::Curve::P256)?;
    let http = tzkms::azure::http_client(emu.ca_pem_path()).map_err(anyhow::Error::msg)?;
    let token = Arc::new(emu.issue_token());
    let url = Arc::new(format!(
        "{}/keys/direct-probe/{}/sign?api-version=2025-07-01",
        emu.url(),
        info.version
    ));
    let sign = move || {
        let (http, token, url) = (http.clone(), token.clone(), url.clone());
        async move {
            let t = Instant::now();
            let r = http
                .post(url.as_str())
                .bearer_auth(token.as_str())
                .json(&serde_json::json!({"alg": "ES256", "value": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}))
                .send()
                .await
                .context("emulator sign")?;
            anyhow::ensure!(r.status().is_success(), "emulator sign: {}", r.status());
            r.bytes().await?;
            anyhow::Ok(t.elapsed().as_micros() as u64)
        }
    };
    let mut all = Vec::new();
    match shape {
        Shape::Closed {
            concurrency,
            requests,
        } => {
            let issued = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let tasks: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (sign, issued) = (sign.clone(), issued.clone());
                    tokio::spawn(async move {
                        let mut samples = Vec::new();
                        while issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                            samples.push(sign().await?);
                        }
                        anyhow::Ok(samples)
                    })
                })
                .collect();
            for t in tasks {
                all.extend(t.await??);
            }
        }
        Shape::Bursts { size, rounds } => {
            for _ in 0..rounds {
                let tasks: Vec<_> = (0..size).map(|_| tokio::spawn(sign())).collect();
                for t in tasks {
                    all.push(t.await??);
                }
            }
        }
    }
    Ok(Latency::of(&all))
}

/// Sign calls and all calls the emulator received.
pub fn emulator_calls(emu: &Emulator) -> (u64, u64) {
    let sign = emu.counters().get(Operation::Sign);
    let all = emu.counters().snapshot().values().map(|s| s.received).sum();
    (sign, all)
}

pub fn reset_emulator_counters(emu: &Emulator) {
    emu.counters().reset();
}
