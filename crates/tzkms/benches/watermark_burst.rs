//! A baker's burst: one preattestation per delegate at the same instant, 500 delegates, over HTTP on
//! loopback, with the durable file watermark versus with watermarking off for every key.
//! `cargo bench -p tzkms --bench watermark_burst` (env BURST_KEYS, BURST_LEVELS to change the size).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tezos::{Curve, PublicKeyHash, SecretKey};
use tzkms::app::Application;
use tzkms::config::Config;

fn preattestation(level: u32) -> String {
    let mut p = vec![0x12, 0x7a, 0x06, 0xa7, 0x70];
    p.extend_from_slice(&[0x42; 32]);
    p.push(20);
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&level.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&[0x17; 32]);
    format!("\"{}\"", hex::encode(p))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn run(keys: &[PublicKeyHash], secrets: &[SecretKey], protected: bool, levels: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    for sk in secrets {
        tzkms::startup::write_new_key(dir.path(), &sk.public_key().hash().to_string(), sk).expect("key file");
    }
    let mut config = Config {
        data_dir: Some(dir.path().to_owned()),
        ..Config::default()
    };
    config.server.listen = vec!["127.0.0.1:0".parse().expect("addr")];
    if !protected {
        config.watermark.unprotected_keys = keys.to_vec();
    }
    let app = Application::build(&config).await.expect("application");
    let addr = app.local_addrs()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(keys.len())
        .build()
        .expect("client");
    let mut latencies = Vec::new();
    let mut bursts = Vec::new();
    // Level 1 warms the connection pool and is not counted.
    for level in 1..=levels + 1 {
        let body = Arc::new(preattestation(level));
        let started = Instant::now();
        let tasks: Vec<_> = keys
            .iter()
            .map(|pkh| {
                let client = client.clone();
                let url = format!("http://{addr}/keys/{pkh}?version=3");
                let body = body.clone();
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = client
                        .post(url)
                        .body(body.as_str().to_owned())
                        .send()
                        .await
                        .expect("send");
                    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
                    r.bytes().await.expect("body");
                    t.elapsed()
                })
            })
            .collect();
        let mut burst = Vec::new();
        for t in tasks {
            burst.push(t.await.expect("task"));
        }
        if level > 1 {
            bursts.push(started.elapsed());
            latencies.extend(burst);
        }
    }
    latencies.sort();
    bursts.sort();
    let total: Duration = bursts.iter().sum();
    println!(
        "{:<22} keys={} bursts={} p50={:>7.2}ms p99={:>7.2}ms max={:>7.2}ms burst p50={:>7.2}ms throughput={:>6.0} sig/s",
        if protected { "durable watermark" } else { "watermark off" },
        keys.len(),
        bursts.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        percentile(&bursts, 0.5).as_secs_f64() * 1e3,
        latencies.len() as f64 / total.as_secs_f64(),
    );
    let _ = stop.send(());
    server.await.expect("server").expect("serve");
}

fn main() {
    let n: usize = std::env::var("BURST_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let levels: u32 = std::env::var("BURST_LEVELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let secrets: Vec<SecretKey> = (0..n).map(|_| SecretKey::generate(Curve::P256)).collect();
    let keys: Vec<PublicKeyHash> = secrets.iter().map(|s| s.public_key().hash()).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        run(&keys, &secrets, true, levels).await;
        run(&keys, &secrets, false, levels).await;
    });
}
