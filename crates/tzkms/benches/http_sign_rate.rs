//! Closed-loop signing rate per curve through HTTP on loopback (keep-alive, generic 0x03 payloads, no
//! watermark involved), next to the in-process rate of the same work (BLAKE2b + sign + verify).
//! `cargo bench -p tzkms --bench http_sign_rate` (env RATE_SECONDS, default 3; RATE_CLIENTS, default 32).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tezos::{BlsScheme, Curve, SecretKey};
use tzkms::app::Application;
use tzkms::config::Config;

fn main() {
    let seconds: u64 = std::env::var("RATE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let clients: usize = std::env::var("RATE_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("dir");
        let secrets: Vec<SecretKey> = Curve::ALL.into_iter().map(SecretKey::generate).collect();
        for sk in &secrets {
            tzkms::startup::write_new_key(dir.path(), &sk.public_key().hash().to_string(), sk).expect("key");
        }
        let mut config = Config {
            data_dir: Some(dir.path().to_owned()),
            ..Config::default()
        };
        config.server.listen = vec!["127.0.0.1:0".parse().expect("addr")];
        // Measuring throughput: no rate limits.
        config.limits.generic_per_key = None;
        config.limits.per_client = None;
        // The bench signs arbitrary 0x03 bytes; the default policy signs consensus payloads only.
        config.policy.default.allow = vec!["generic_unchecked".parse().expect("kind")];
        let app = Application::build(&config).await.expect("application");
        let addr = app.local_addrs()[0];
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        println!(
            "{:<10} {:>14} {:>22}",
            "curve", "HTTP sig/s", "in-process sig/s (1 core)"
        );
        for sk in &secrets {
            let pkh = sk.public_key().hash();
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(clients)
                .build()
                .expect("client");
            let done = Arc::new(AtomicU64::new(0));
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let tasks: Vec<_> = (0..clients)
                .map(|c| {
                    let (client, done) = (client.clone(), done.clone());
                    tokio::spawn(async move {
                        let mut i = 0u64;
                        while Instant::now() < deadline {
                            i += 1;
                            let body = format!("\"03{c:04x}{i:016x}\"");
                            let r = client
                                .post(format!("http://{addr}/keys/{pkh}?version=3"))
                                .body(body)
                                .send()
                                .await
                                .expect("send");
                            assert_eq!(r.status().as_u16(), 200);
                            r.bytes().await.expect("body");
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            let started = Instant::now();
            for t in tasks {
                t.await.expect("task");
            }
            let http_rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
            // The same work in process, on one thread: sign, then verify before release.
            let started = Instant::now();
            let mut n = 0u64;
            while started.elapsed() < Duration::from_secs(1) {
                n += 1;
                let msg = [3u8, (n % 256) as u8, (n / 256 % 256) as u8];
                let sig = sk.sign(&msg, BlsScheme::default()).expect("sign");
                assert!(sk.public_key().verify(&msg, &sig, BlsScheme::default()));
            }
            let local_rate = n as f64 / started.elapsed().as_secs_f64();
            println!(
                "{:<10} {:>14.0} {:>22.0}",
                sk.curve().name(),
                http_rate,
                local_rate
            );
        }
    });
}
