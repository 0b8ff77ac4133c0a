//! Added latency of the shared watermark: sequential consensus signatures (P-256 file key) with the local
//! file store alone, then with the file store and an Azure Table (Azurite on loopback) that must both
//! agree; p50/p99 per signature through HTTP and table requests per signature.
//! `cargo bench -p tzkms --bench table_latency` (env TABLE_SIGNATURES, default 300).

#[path = "../tests/api/azurite.rs"]
mod azurite;

use std::time::{Duration, Instant};

use std::sync::Arc;
use tezos::{Curve, SecretKey};
use tzkms::config::{Config, TableConfig};

use tzkms::app::Application;
use tzkms::watermark::azure_table::BothStores;
use tzkms::watermark::file::FileStore;
use tzkms::watermark::Watermarks;

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

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

async fn run(table: Option<TableConfig>, n: u32) -> (Vec<Duration>, Option<u64>) {
    let dir = tempfile::tempdir().expect("dir");
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    tzkms::startup::write_new_key(dir.path(), &pkh.to_string(), &sk).expect("key");
    let mut config = Config {
        data_dir: Some(dir.path().to_owned()),
        ..Config::default()
    };
    config.server.listen = vec!["127.0.0.1:0".parse().expect("addr")];
    let (file, _) = FileStore::open(dir.path()).expect("file store");
    let local = Arc::new(file);
    let mut shared_handle = None;
    let store: Arc<dyn Watermarks> = match &table {
        Some(t) => {
            let shared = Arc::new(tzkms::startup::table_store(&config, t).await.expect("table"));
            shared_handle = Some(shared.clone());
            Arc::new(BothStores::new(local, shared).await.expect("stores").0)
        }
        None => local,
    };
    let app = Application::builder(&config)
        .watermarks(store)
        .build()
        .await
        .expect("application");
    let addr = app.local_addrs()[0];
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let client = reqwest::Client::new();
    let mut lat = Vec::new();
    let mut requests_before = 0;
    for level in 1..=n + 10 {
        if level == 11 {
            requests_before = shared_handle.as_ref().map_or(0, |s| s.client().requests());
        }
        let t = Instant::now();
        let r = client
            .post(format!("http://{addr}/keys/{pkh}?version=3"))
            .body(preattestation(level))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 200);
        r.bytes().await.expect("body");
        if level > 10 {
            lat.push(t.elapsed());
        }
    }
    lat.sort();
    (
        lat,
        shared_handle.map(|s| s.client().requests() - requests_before),
    )
}

fn main() {
    let n: u32 = std::env::var("TABLE_SIGNATURES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let az = azurite::Azurite::start().await;
        let dir = tempfile::tempdir().expect("dir");
        let key = dir.path().join("key");
        std::fs::write(&key, azurite::KEY).expect("key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
        let table = TableConfig {
            endpoint: az.endpoint.clone(),
            table: "tzkmsbench".into(),
            account: None,
            account_key_file: Some(key),
            credential: None,
            budget_ms: 2000,
            ca_file: None,
        };
        let (file, _) = run(None, n).await;
        let (both, requests) = run(Some(table.clone()), n).await;
        println!("{n} sequential preattestations, one key, HTTP on loopback");
        println!(
            "file store:          p50 {:>6.2} ms  p99 {:>6.2} ms",
            pct(&file, 0.5),
            pct(&file, 0.99)
        );
        println!(
            "file + Azure Table:  p50 {:>6.2} ms  p99 {:>6.2} ms",
            pct(&both, 0.5),
            pct(&both, 0.99)
        );
        println!(
            "added by the table:  p50 {:>6.2} ms  p99 {:>6.2} ms",
            pct(&both, 0.5) - pct(&file, 0.5),
            pct(&both, 0.99) - pct(&file, 0.99)
        );
        println!(
            "table requests per signature: {:.2}",
            requests.unwrap_or(0) as f64 / f64::from(n)
        );
        az.stop().await;
    });
}
