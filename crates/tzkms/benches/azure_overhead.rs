//! What tzkms adds on top of Key Vault: the emulator is set to a fixed 20 ms sign latency; the same
//! number of signatures is made (1) directly against the emulator's sign endpoint and (2) through tzkms
//! (HTTP to tzkms, then Key Vault), at the same concurrency. Prints p50/p99 of both, the difference, and
//! Key Vault calls per signature. `cargo bench -p tzkms --bench azure_overhead`
//! (env AZ_CONCURRENCY, default 200; AZ_ROUNDS, default 10; AZ_LATENCY_MS, default 20).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_emulator::{Curve as EmuCurve, Emulator, Operation};
use tezos::PublicKey;
use tzkms::app::Application;
use tzkms::config::{AzureConfig, Config, CredentialConfig, CredentialKind};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

async fn measure<F, Fut>(concurrency: usize, rounds: usize, f: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut all = Vec::new();
    for round in 0..rounds + 1 {
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| {
                let f = f.clone();
                tokio::spawn(async move {
                    let t = Instant::now();
                    f(round * concurrency + i).await;
                    t.elapsed()
                })
            })
            .collect();
        let mut lat = Vec::new();
        for t in tasks {
            lat.push(t.await.expect("task"));
        }
        if round > 0 {
            all.extend(lat); // round 0 warms connections
        }
    }
    all.sort();
    all
}

fn main() {
    let concurrency = env_or("AZ_CONCURRENCY", 200) as usize;
    let rounds = env_or("AZ_ROUNDS", 10) as usize;
    let latency = Duration::from_millis(env_or("AZ_LATENCY_MS", 20));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let emu = Emulator::start(kv_emulator::Config { tls: true, ..Default::default() }).await.expect("emulator");
        let info = emu.create_key("bench", EmuCurve::P256).expect("key");
        let pk = PublicKey::from_bytes(tezos::Curve::P256, &info.public_key_compressed()).expect("pk");
        let pkh = pk.hash();
        emu.faults().set_latency(Operation::Sign, latency, Duration::ZERO);

        // (1) Directly against the emulator, with a pooled rustls client like tzkms's.
        let http = tzkms::azure::http_client(emu.ca_pem_path()).expect("client");
        let token = Arc::new(emu.issue_token());
        let url = Arc::new(format!("{}/keys/bench/{}/sign?api-version=2025-07-01", emu.url(), info.version));
        let direct = measure(concurrency, rounds, {
            let (http, token, url) = (http.clone(), token.clone(), url.clone());
            move |_| {
                let (http, token, url) = (http.clone(), token.clone(), url.clone());
                async move {
                    let r = http
                        .post(url.as_str())
                        .bearer_auth(token.as_str())
                        .json(&serde_json::json!({"alg": "ES256", "value": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}))
                        .send()
                        .await
                        .expect("sign");
                    assert!(r.status().is_success());
                    r.bytes().await.expect("body");
                }
            }
        })
        .await;

        // (2) Through tzkms.
        let dir = tempfile::tempdir().expect("dir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, emu.client_secret()).expect("secret");
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
        let mut config = Config {
            data_dir: Some(dir.path().join("data")),
            azure: Some(AzureConfig {
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
            }),
            ..Default::default()
        };
        config.server.listen = vec!["127.0.0.1:0".parse().expect("addr")];
        // Measuring throughput: no rate limits.
        config.limits.generic_per_key = None;
        config.limits.per_client = None;
        config.keys.generate_if_empty = false;
        // The bench signs arbitrary 0x03 bytes; the default policy signs consensus payloads only.
        config.policy.default.allow = vec!["generic_unchecked".parse().expect("kind")];
        let app = Application::build(&config).await.expect("application");
        let addr = app.local_addrs()[0];
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().expect("client");
        emu.counters().reset();
        let via = measure(concurrency, rounds, {
            let client = client.clone();
            move |i| {
                let client = client.clone();
                async move {
                    let body = format!("\"03{:016x}\"", i);
                    let r = client
                        .post(format!("http://{addr}/keys/{pkh}?version=3"))
                        .body(body)
                        .send()
                        .await
                        .expect("sign");
                    assert_eq!(r.status().as_u16(), 200);
                    r.bytes().await.expect("body");
                }
            }
        })
        .await;
        let signatures = (rounds + 1) * concurrency;
        let calls = emu.counters().get(Operation::Sign);
        let all_calls: u64 = emu.counters().snapshot().values().map(|s| s.received).sum();
        println!("emulator sign latency {} ms, concurrency {concurrency}, {} signatures measured", latency.as_millis(), via.len());
        println!("direct to emulator:  p50 {:>7.2} ms  p99 {:>7.2} ms", pct(&direct, 0.5), pct(&direct, 0.99));
        println!("through tzkms:       p50 {:>7.2} ms  p99 {:>7.2} ms", pct(&via, 0.5), pct(&via, 0.99));
        println!(
            "added by tzkms:      p50 {:>7.2} ms  p99 {:>7.2} ms",
            pct(&via, 0.5) - pct(&direct, 0.5),
            pct(&via, 0.99) - pct(&direct, 0.99)
        );
        println!(
            "key vault calls per signature: sign {:.3}, all operations {:.3}",
            calls as f64 / signatures as f64,
            all_calls as f64 / signatures as f64
        );
    });
}
