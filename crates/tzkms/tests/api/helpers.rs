//! A test signer: a temporary data directory with one key per curve, served on 127.0.0.1:0.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::Value;
use tezos::{Curve, PublicKey, PublicKeyHash, SecretKey};
use tokio::sync::oneshot;
use tzkms::app::Application;
use tzkms::backend::file::FileBackend;
use tzkms::backend::{BackendError, KeyBackend, KeyInfo};
use tzkms::config::Config;
use tzkms::futures::BoxFuture;
use tzkms::startup::WrapFiles;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A real file backend whose sign calls are counted.
#[derive(Debug)]
struct Counting {
    inner: FileBackend,
    calls: Arc<AtomicUsize>,
}

impl KeyBackend for Counting {
    fn kind(&self) -> &'static str {
        "counting-file"
    }
    fn keys(&self) -> Vec<KeyInfo> {
        self.inner.keys()
    }
    fn sign<'a>(
        &'a self,
        pkh: &'a PublicKeyHash,
        message: &'a [u8],
        scheme: tezos::BlsScheme,
    ) -> BoxFuture<'a, Result<tezos::Signature, BackendError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.sign(pkh, message, scheme)
    }
}

pub(crate) struct TestSigner {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served.
    pub metrics_addr: SocketAddr,
    /// Every listener, `("http" | "https", address)`.
    pub endpoints: Vec<(&'static str, SocketAddr)>,
    pub tls: Option<Arc<tzkms::server::tls::Tls>>,
    pub client: reqwest::Client,
    pub keys: Vec<(Curve, PublicKeyHash, PublicKey)>,
    pub _data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tzkms::server::ServerError>>>,
}

/// For tests of something else than the policy that sign arbitrary 0x03 bytes: the default policy
/// signs consensus payloads only, so they allow undecoded generic operations explicitly.
pub(crate) fn allow_generic_unchecked(config: &mut Config) {
    config.policy.default.allow = ["block", "preattestation", "attestation", "generic_unchecked"]
        .map(|k| k.parse().unwrap())
        .to_vec();
}

/// The same, as TOML for config files given to the binary.
pub(crate) const GENERIC_UNCHECKED_TOML: &str =
    "[policy.default]\nallow = [\"block\", \"preattestation\", \"attestation\", \"generic_unchecked\"]\n";

pub(crate) fn vectors(name: &str) -> Value {
    let path = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../../shared/vectors")
    .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

impl TestSigner {
    /// One fresh key per curve.
    pub(crate) async fn start() -> Self {
        let keys: Vec<SecretKey> = Curve::ALL.into_iter().map(SecretKey::generate).collect();
        Self::start_with(&keys, |_| {}).await
    }

    /// One fresh key per curve, all under a default policy allowing `kinds`.
    pub(crate) async fn start_allowing(kinds: &[&str]) -> Self {
        let keys: Vec<SecretKey> = Curve::ALL.into_iter().map(SecretKey::generate).collect();
        Self::start_with(&keys, |c| {
            c.policy.default.allow = kinds.iter().map(|k| k.parse().unwrap()).collect();
        })
        .await
    }

    pub(crate) async fn start_with(secrets: &[SecretKey], tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_built(secrets, tweak, None).await
    }

    /// Like `start_with`, with every backend call counted.
    pub(crate) async fn start_counting(secrets: &[SecretKey]) -> (Self, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let signer = Self::start_with_backend(secrets, |files| {
            Arc::new(Counting {
                inner: files,
                calls: counted,
            })
        })
        .await;
        (signer, calls)
    }

    /// The keys in files, served through the backend `wrap` makes of the file backend.
    pub(crate) async fn start_with_backend(
        secrets: &[SecretKey],
        wrap: impl FnOnce(FileBackend) -> Arc<dyn KeyBackend> + Send + 'static,
    ) -> Self {
        Self::start_built(secrets, |_| {}, Some(Box::new(wrap))).await
    }

    /// The one way a test signer starts: key files in a fresh data directory, a configuration serving
    /// them on 127.0.0.1:0 (signing and operations listeners), built by `Application`.
    async fn start_built(
        secrets: &[SecretKey],
        tweak: impl FnOnce(&mut Config),
        wrap: Option<WrapFiles>,
    ) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let mut keys = Vec::new();
        for sk in secrets {
            let pkh = sk.public_key().hash();
            if keys.iter().any(|(_, known, _)| *known == pkh) {
                continue;
            }
            tzkms::startup::write_new_key(data_dir.path(), &pkh.to_string(), sk).unwrap();
            keys.push((sk.curve(), pkh, sk.public_key().clone()));
        }
        let mut config = Config {
            data_dir: Some(data_dir.path().to_owned()),
            ..Config::default()
        };
        config.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
        config.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        config.keys.generate_if_empty = false;
        tweak(&mut config);
        let mut builder = Application::builder(&config);
        if let Some(wrap) = wrap {
            builder = builder.wrap_file_backend(wrap);
        }
        let app = builder.build().await.unwrap();
        // Every key here, vault keys included, was made for the test: vouched for as `keys generate` and
        // `azure keys create` do. Keys without history have tests of their own (operator.rs).
        for (pkh, _) in app.signer().rules().keyring.sorted() {
            tzkms::watermark::floor::raise(data_dir.path(), &pkh, None, "made for the test").unwrap();
        }
        let addr = app.local_addrs()[0];
        let endpoints = app.endpoints();
        let metrics_addr = app.ops_addr().unwrap();
        let tls = app.tls();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            metrics_addr,
            endpoints,
            tls,
            client: reqwest::Client::new(),
            keys,
            _data_dir: data_dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `https://127.0.0.1:<port><path>` of the first HTTPS listener.
    /// The Prometheus text of `GET /metrics`.
    pub(crate) async fn metrics(&self) -> String {
        let r = self
            .client
            .get(format!("http://{}/metrics", self.metrics_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        r.text().await.unwrap()
    }

    /// `GET` on the operations listener (`/healthz`, `/readyz`): status and JSON body.
    pub(crate) async fn ops(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("http://{}{path}", self.metrics_addr))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// Polls `/readyz` until its status is `want` (a condition, not a sleep: each poll re-runs the checks),
    /// for at most 20 s; returns the body.
    pub(crate) async fn wait_ready(&self, want: u16) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (status, body) = self.ops("/readyz").await;
            if status == want {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "/readyz stayed {status}, wanted {want}: {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// The marks of the file watermark store, as on disk.
    pub(crate) async fn watermark_marks(&self) -> tzkms::watermark::interchange::Marks {
        tzkms::watermark::file::read(self._data_dir.path()).unwrap()
    }

    pub(crate) fn https_url(&self, path: &str) -> String {
        let (_, addr) = self.endpoints.iter().find(|(s, _)| *s == "https").unwrap();
        format!("https://{addr}{path}")
    }

    pub(crate) fn key(&self, curve: Curve) -> &(Curve, PublicKeyHash, PublicKey) {
        self.keys.iter().find(|k| k.0 == curve).unwrap()
    }

    /// POSTs `body` verbatim to `/keys/<pkh><query>`.
    pub(crate) async fn post_raw(
        &self,
        pkh: &str,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/keys/{pkh}{query}")))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text:?}"));
        (status, json)
    }

    /// Signs `payload` (bytes) for `pkh`.
    pub(crate) async fn sign(&self, pkh: &PublicKeyHash, query: &str, payload: &[u8]) -> (u16, Value) {
        self.post_raw(&pkh.to_string(), query, format!("\"{}\"", hex::encode(payload)))
            .await
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// The bytes of the payload vector `id` in `../shared/vectors/payloads.json`.
pub(crate) fn vector_payload(id: &str) -> Vec<u8> {
    let v = vectors("payloads.json");
    let p = v["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no payload vector {id}"));
    hex::decode(p["hex"].as_str().unwrap()).unwrap()
}

/// A Tenderbake attestation (magic 0x13, tag 21) on mainnet at `level`, round 0; `variant` fills the
/// block payload hash, so two variants at one level are two different attestations.
pub(crate) fn attestation(level: u32, variant: u8) -> Vec<u8> {
    let mut p = vec![0x13, 0x7a, 0x06, 0xa7, 0x70];
    p.extend_from_slice(&[0x11; 32]);
    p.push(21);
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&level.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&[variant; 32]);
    p
}

/// An unlocked Tenderbake block header (0x11) on mainnet at `level`/`round`; `variant` fills its payload
/// hash, so two variants at one position are two different blocks.
pub(crate) fn block(level: u32, round: u32, variant: u8) -> Vec<u8> {
    let mut b = vec![0x11, 0x7a, 0x06, 0xa7, 0x70];
    b.extend_from_slice(&level.to_be_bytes());
    b.push(1);
    b.extend_from_slice(&[0x21; 32]);
    b.extend_from_slice(&1_700_000_000i64.to_be_bytes());
    b.push(4);
    b.extend_from_slice(&[0x22; 32]);
    let mut fitness = vec![0, 0, 0, 1, 2, 0, 0, 0, 4];
    fitness.extend_from_slice(&level.to_be_bytes());
    fitness.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 4]);
    fitness.extend_from_slice(&round.to_be_bytes());
    b.extend_from_slice(&(fitness.len() as u32).to_be_bytes());
    b.extend_from_slice(&fitness);
    b.extend_from_slice(&[0x23; 32]);
    b.extend_from_slice(&[variant; 32]);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&[0; 8]);
    b.push(0);
    b.push(0x02);
    b
}

/// A preattestation (0x12, tag 20) on mainnet at `level`/`round`.
pub(crate) fn preattestation(level: u32, round: u32, variant: u8) -> Vec<u8> {
    let mut p = vec![0x12, 0x7a, 0x06, 0xa7, 0x70];
    p.extend_from_slice(&[0x11; 32]);
    p.push(20);
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&level.to_be_bytes());
    p.extend_from_slice(&round.to_be_bytes());
    p.extend_from_slice(&[variant; 32]);
    p
}

/// Asserts an Octez error list with a message containing `needle`.
pub(crate) fn assert_octez_error(body: &Value, needle: &str) {
    let list = body
        .as_array()
        .unwrap_or_else(|| panic!("not an error list: {body}"));
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(list[0]["kind"], "temporary");
    assert_eq!(list[0]["id"], "failure");
    let msg = list[0]["msg"].as_str().unwrap();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
}
