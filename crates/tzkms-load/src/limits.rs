//! What the machine allows, measured in the same run as the load: the in-process signing rate per curve
//! (BLAKE2b + sign + verify, the work a signer cannot skip), a trivial HTTP signer to run the same load
//! against (the cost of HTTP on loopback), and the fsync latency of the data directory's disk.

use std::io::{Seek, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tezos::{Curve, PublicKey, SecretKey, Signature};

use crate::client::SCHEME;
use crate::payloads;
use crate::report::Latency;

/// Signatures per second, each one BLAKE2b + sign + verify of a 100-byte payload, on `threads` threads.
#[derive(Debug, Clone, Serialize)]
pub struct SignRate {
    pub curve: &'static str,
    pub threads: usize,
    pub per_second: f64,
    pub per_second_one_thread: f64,
}

fn sign_loop(key: &SecretKey, for_how_long: Duration) -> u64 {
    let pkh = key.public_key().hash();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < for_how_long {
        let msg = payloads::transaction(&pkh, n);
        let Ok(signature) = key.sign(&msg, SCHEME) else {
            return n;
        };
        if !key.public_key().verify(&msg, &signature, SCHEME) {
            return n;
        }
        n += 1;
    }
    n
}

/// Measures [`SignRate`] for `curve`: `seconds` on one thread, then `seconds` on `threads` threads.
pub fn sign_rate(curve: Curve, threads: usize, seconds: f64) -> SignRate {
    let key = SecretKey::generate(curve);
    let d = Duration::from_secs_f64(seconds);
    let one = sign_loop(&key, d) as f64 / seconds;
    let started = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| sign_loop(&key, d))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    SignRate {
        curve: curve.name(),
        threads,
        per_second: total as f64 / started.elapsed().as_secs_f64(),
        per_second_one_thread: one,
    }
}

/// fsync latency of a directory's disk: a 4 KiB write plus `fsync`, and the durable replace the watermark
/// store does for each batch (write a temporary file, fsync, rename, fsync the directory).
#[derive(Debug, Clone, Serialize)]
pub struct Fsync {
    pub directory: String,
    pub samples: usize,
    pub write_fsync_ms: Latency,
    pub durable_replace_ms: Latency,
}

pub fn fsync(dir: &Path, samples: usize) -> std::io::Result<Fsync> {
    let probe = dir.join(".tzkms-load-fsync");
    let tmp = dir.join(".tzkms-load-fsync.tmp");
    let block = [0x5au8; 4096];
    let mut file = std::fs::File::create(&probe)?;
    let mut write_fsync = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        file.rewind()?;
        file.write_all(&block)?;
        file.sync_all()?;
        write_fsync.push(t.elapsed().as_micros() as u64);
    }
    drop(file);
    let mut replace = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&block)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &probe)?;
        std::fs::File::open(dir)?.sync_all()?;
        replace.push(t.elapsed().as_micros() as u64);
    }
    std::fs::remove_file(&probe)?;
    Ok(Fsync {
        directory: dir.display().to_string(),
        samples,
        write_fsync_ms: Latency::of(&write_fsync),
        durable_replace_ms: Latency::of(&replace),
    })
}

/// A signer that does no work: `GET /authorized_keys` answers `{}`, `GET /keys/<pkh>` the public key given
/// for it, and every `POST /keys/<pkh>` the same fixed signature. The same load run against it measures
/// what HTTP on loopback costs; with a signature from another key, it is a signer that answers wrongly.
#[derive(Debug)]
pub struct TrivialSigner {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TrivialSigner {
    /// Serves on 127.0.0.1:0 on its own runtime of `threads` threads (like a separate signer process).
    pub fn start(threads: usize, public_keys: Vec<PublicKey>, signature: Signature) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("trivial-signer")
            .enable_all()
            .build()?;
        let keys = Arc::new(public_keys);
        let answer = Arc::new(json!({ "signature": signature.to_string() }));
        let router = Router::new()
            .route("/authorized_keys", get(|| async { Json(json!({})) }))
            .route(
                "/keys/{pkh}",
                get({
                    let keys = keys.clone();
                    move |UrlPath(pkh): UrlPath<String>| {
                        let found = keys
                            .iter()
                            .find(|k| k.hash().to_string() == pkh)
                            .map(|k| k.to_string());
                        async move {
                            match found {
                                Some(pk) => Ok(Json(json!({ "public_key": pk }))),
                                None => Err(axum::http::StatusCode::NOT_FOUND),
                            }
                        }
                    }
                })
                .merge(post(move || {
                    let answer = answer.clone();
                    async move { Json((*answer).clone()) }
                })),
            );
        // Bound here, served there: `block_on` is not allowed when the caller is itself async.
        // The same listen backlog as tzkms's, so a burst of new connections is not dropped here alone.
        // Entered (not blocked on) so the listener registers with this runtime's reactor.
        let listener = {
            let _context = runtime.enter();
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            socket.listen(4096)?
        };
        let addr = listener.local_addr()?;
        runtime.spawn(async move { axum::serve(listener, router).await });
        Ok(Self {
            addr,
            runtime: Some(runtime),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TrivialSigner {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
